//! References between services' variables: an env value (or secret) may contain
//! `${{ <service>.<VAR> }}` (spaces inside the braces optional), replaced at deploy time by
//! the variable VAR of service `<service>` in the same project and environment. A managed
//! service offers its connection variables (`DATABASE_URL`, `REDIS_URL`, ...; see
//! [`super::exports`]); any other service its own env vars and secrets. Nothing else in a
//! value is touched; `${{` without its closing `}}` is an error, so is an unknown name.

use std::collections::BTreeMap;

const OPEN: &str = "${{";
const CLOSE: &str = "}}";

/// A variable of another service, named in a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub service: String,
    pub var: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("env {name}: `${{{{` without its closing `}}}}`")]
    Unclosed { name: String },
    #[error("env {name}: reference {text:?} is not `${{{{ service.VARIABLE }}}}`")]
    Malformed { name: String, text: String },
    #[error("env {name}: no service {service} in this environment")]
    NoService { name: String, service: String },
    #[error("env {name}: service {service} has no variable {var}")]
    NoVariable {
        name: String,
        service: String,
        var: String,
    },
}

/// Every reference in `value` with its byte range, in order.
pub fn references(
    name: &str,
    value: &str,
) -> Result<Vec<(std::ops::Range<usize>, Reference)>, RefError> {
    let mut out = vec![];
    let mut at = 0;
    while let Some(i) = value[at..].find(OPEN) {
        let start = at + i;
        let inner_start = start + OPEN.len();
        let Some(j) = value[inner_start..].find(CLOSE) else {
            return Err(RefError::Unclosed { name: name.into() });
        };
        let end = inner_start + j + CLOSE.len();
        let inner = value[inner_start..inner_start + j].trim();
        let malformed = || RefError::Malformed {
            name: name.into(),
            text: value[start..end].chars().take(64).collect(),
        };
        let (service, var) = inner.split_once('.').ok_or_else(malformed)?;
        let service_ok = !service.is_empty()
            && service
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let var_ok = var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !service_ok || !var_ok {
            return Err(malformed());
        }
        out.push((
            start..end,
            Reference {
                service: service.into(),
                var: var.into(),
            },
        ));
        at = end;
    }
    Ok(out)
}

/// `value` with every reference replaced from `exports` (service name -> its variables).
pub fn resolve(
    name: &str,
    value: &str,
    exports: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<String, RefError> {
    let refs = references(name, value)?;
    if refs.is_empty() {
        return Ok(value.to_owned());
    }
    let mut out = String::with_capacity(value.len());
    let mut at = 0;
    for (range, r) in refs {
        let vars = exports.get(&r.service).ok_or_else(|| RefError::NoService {
            name: name.into(),
            service: r.service.clone(),
        })?;
        let v = vars.get(&r.var).ok_or_else(|| RefError::NoVariable {
            name: name.into(),
            service: r.service.clone(),
            var: r.var.clone(),
        })?;
        out.push_str(&value[at..range.start]);
        out.push_str(v);
        at = range.end;
    }
    out.push_str(&value[at..]);
    Ok(out)
}

/// Resolves every value of a container's environment in place.
pub fn resolve_env(
    env: &mut BTreeMap<String, String>,
    exports: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<(), RefError> {
    for (name, value) in env.iter_mut() {
        if value.contains(OPEN) {
            *value = resolve(name, value, exports)?;
        }
    }
    Ok(())
}

/// The service names `env` refers to (for the API's view of what a service uses).
pub fn referenced_services<'a>(
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<Vec<String>, RefError> {
    let mut names = std::collections::BTreeSet::new();
    for (name, value) in env {
        for (_, r) in references(name, value)? {
            names.insert(r.service);
        }
    }
    Ok(names.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports() -> BTreeMap<String, BTreeMap<String, String>> {
        BTreeMap::from([(
            "db".to_owned(),
            BTreeMap::from([
                (
                    "DATABASE_URL".to_owned(),
                    "postgres://app:pw@db:5432/app".to_owned(),
                ),
                ("PGHOST".to_owned(), "db.production.internal".to_owned()),
            ]),
        )])
    }

    #[test]
    fn references_are_replaced_with_and_without_spaces() {
        let x = exports();
        assert_eq!(
            resolve("A", "${{ db.DATABASE_URL }}", &x).unwrap(),
            "postgres://app:pw@db:5432/app"
        );
        assert_eq!(
            resolve("A", "host=${{db.PGHOST}};x=${{  db.PGHOST }}!", &x).unwrap(),
            "host=db.production.internal;x=db.production.internal!"
        );
        assert_eq!(
            resolve("A", "plain $ {{ text", &x).unwrap(),
            "plain $ {{ text"
        );
    }

    #[test]
    fn bad_references_name_the_variable_and_what_is_wrong() {
        let x = exports();
        assert_eq!(
            resolve("A", "${{ db.DATABASE_URL", &x).unwrap_err(),
            RefError::Unclosed { name: "A".into() }
        );
        let e = resolve("B", "${{ DATABASE_URL }}", &x).unwrap_err();
        assert!(matches!(e, RefError::Malformed { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "env B: reference \"${{ DATABASE_URL }}\" is not `${{ service.VARIABLE }}`"
        );
        assert_eq!(
            resolve("C", "${{ cache.REDIS_URL }}", &x)
                .unwrap_err()
                .to_string(),
            "env C: no service cache in this environment"
        );
        assert_eq!(
            resolve("D", "${{ db.NOPE }}", &x).unwrap_err().to_string(),
            "env D: service db has no variable NOPE"
        );
    }

    #[test]
    fn a_whole_environment_resolves_and_names_the_services_it_uses() {
        let mut env = BTreeMap::from([
            (
                "DATABASE_URL".to_owned(),
                "${{ db.DATABASE_URL }}".to_owned(),
            ),
            ("MODE".to_owned(), "prod".to_owned()),
        ]);
        assert_eq!(referenced_services(&env).unwrap(), ["db"]);
        resolve_env(&mut env, &exports()).unwrap();
        assert_eq!(env["DATABASE_URL"], "postgres://app:pw@db:5432/app");
        assert_eq!(env["MODE"], "prod");
    }
}
