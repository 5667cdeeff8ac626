//! Field checks shared by the handlers; each error names its field.

use super::error::{ApiResult, invalid};

/// DNS-safe names: lower case letters, digits and `-`, starting with a letter, 1..=40 long.
pub fn name(field: &str, value: &str) -> ApiResult<()> {
    let ok = (1..=40).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{value:?} must be 1 to 40 lower-case letters, digits or '-', starting with a letter"
            ),
        ))
    }
}

/// Env var names: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn env_name(field: &str, value: &str) -> ApiResult<()> {
    let ok = value.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not a valid variable name"),
        ))
    }
}

pub fn domain(field: &str, value: &str) -> ApiResult<()> {
    let labels: Vec<&str> = value
        .strip_prefix("*.")
        .unwrap_or(value)
        .split('.')
        .collect();
    let ok = value.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not a lower-case domain name"),
        ))
    }
}

pub fn non_empty(field: &str, value: &str) -> ApiResult<()> {
    if value.trim().is_empty() || value.len() > 1000 {
        Err(invalid(field, "must be 1 to 1000 characters"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("name", "web-1").is_ok());
        for bad in ["", "Web", "1web", "web-", "we_b", &"a".repeat(41)] {
            let err = name("name", bad).unwrap_err().to_string();
            assert!(err.starts_with("name:"), "{err}");
        }
        assert!(env_name("env", "DATABASE_URL").is_ok());
        assert!(env_name("env", "1X").is_err());
        assert!(domain("domains", "app.example.com").is_ok());
        assert!(domain("domains", "*.example.com").is_ok());
        assert!(domain("domains", "Example.com").is_err());
        assert!(domain("domains", "localhost").is_err());
    }
}
