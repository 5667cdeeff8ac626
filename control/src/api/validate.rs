//! Field checks shared by the handlers; each error names its field and quotes at most
//! [`tenant::ECHO_LIMIT`] characters of the value it refuses.

use tenant::echo;

use super::error::{ApiResult, invalid, refused};

/// A value parsed by the `tenant` crate, its error naming `field`.
pub fn parsed<T>(field: &str, result: Result<T, tenant::Invalid>) -> ApiResult<T> {
    result.map_err(|e| refused(field, e))
}

/// Free text (env values, command arguments, secrets): at most `max` bytes, no NUL.
pub fn text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.len() > max {
        return Err(invalid(
            field,
            format!("{} is longer than {max} bytes", echo(value)),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(field, "holds a NUL character"));
    }
    Ok(())
}

/// A number within `range`, or the message naming the bounds.
pub fn within<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> ApiResult<T> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!(
                "{value} is out of range: must be between {} and {}",
                range.start(),
                range.end()
            ),
        ))
    }
}

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
                "{} must be 1 to 40 lower-case letters, digits or '-', starting with a letter",
                echo(value)
            ),
        ))
    }
}

/// The longest env var name accepted.
pub const MAX_ENV_NAME: usize = 255;

/// Env var names: `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_ENV_NAME`] bytes.
pub fn env_name(field: &str, value: &str) -> ApiResult<()> {
    let ok = value.len() <= MAX_ENV_NAME
        && value.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{} is not a valid variable name", echo(value)),
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
            format!("{} is not a lower-case domain name", echo(value)),
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
        assert!(env_name("env", &"A".repeat(MAX_ENV_NAME + 1)).is_err());
    }

    #[test]
    fn a_huge_value_is_echoed_short() {
        let huge = "N".repeat(1 << 20);
        for err in [
            name("name", &huge),
            env_name("env", &huge),
            domain("domain", &huge),
            text("args", &huge, 4096),
        ] {
            let err = err.unwrap_err().to_string();
            assert!(err.len() < 200, "{}", err.len());
        }
        assert_eq!(
            within("port", 0u32, 1..=65535).unwrap_err().to_string(),
            "port: 0 is out of range: must be between 1 and 65535"
        );
    }
}
