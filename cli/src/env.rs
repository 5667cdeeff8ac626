//! `stackpad env list|set|unset`: a service's environment variables and secrets. The API
//! (`PATCH /services/{id}`) replaces env vars and secrets together and never returns a
//! secret's value, so a change that would have to resend a secret the CLI cannot read is
//! refused, naming those secrets, instead of dropping them. Changes apply from the next
//! deployment.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use super::commands::Context;
use super::output::Printer;
use super::resolve::ServiceArgs;
use super::{CliError, exit};

#[derive(Debug, Subcommand)]
pub enum Env {
    /// The service's variables; secrets are masked.
    #[command(
        after_help = "Examples:\n  stackpad env list --service shop/web\n  stackpad env list --json"
    )]
    List {
        #[command(flatten)]
        target: ServiceArgs,
    },
    /// Set variables (or, with --secret, secrets); applies from the next deployment.
    #[command(
        after_help = "Examples:\n  stackpad env set MODE=prod LOG=info --service shop/web\n  \
                            stackpad env set --secret DATABASE_URL=postgres://..."
    )]
    Set {
        #[command(flatten)]
        target: ServiceArgs,
        /// NAME=VALUE pairs, e.g. `MODE=prod`.
        #[arg(required = true, value_name = "NAME=VALUE")]
        pairs: Vec<String>,
        /// Store them as secrets: kept encrypted, never shown again.
        #[arg(long)]
        secret: bool,
    },
    /// Remove variables or secrets; applies from the next deployment.
    #[command(after_help = "Example:\n  stackpad env unset LOG --service shop/web")]
    Unset {
        #[command(flatten)]
        target: ServiceArgs,
        /// Variable names, e.g. `LOG`.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// Variable names and values.
pub type Vars = BTreeMap<String, String>;

/// The masked form of a secret's value in human output.
pub const MASK: &str = "********";

/// The env and secrets to send after a change, from the service's current `env` view
/// (`{NAME: {value, secret}}`); refused when a secret the change keeps would have to be resent.
pub fn plan(
    current: &Value,
    set: &Vars,
    set_secret: bool,
    unset: &[String],
) -> Result<(Vars, Vars), CliError> {
    let mut env = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let mut unreadable = vec![];
    for (name, v) in current.as_object().into_iter().flatten() {
        if set.contains_key(name) || unset.contains(name) {
            continue;
        }
        if v["secret"].as_bool().unwrap_or(false) {
            unreadable.push(name.clone());
        } else {
            env.insert(name.clone(), v["value"].as_str().unwrap_or("").to_owned());
        }
    }
    if !unreadable.is_empty() {
        return Err(CliError::Usage(format!(
            "the API replaces env vars and secrets together and never shows a secret's value, \
             so this change would drop the secrets {}; set them again in the same command \
             (`stackpad env set --secret NAME=VALUE ...`)",
            unreadable.join(", ")
        )));
    }
    let target = if set_secret { &mut secrets } else { &mut env };
    target.extend(set.clone());
    Ok((env, secrets))
}

/// `NAME=VALUE` items as a map; an item without `=` is a usage error naming it.
pub(crate) fn pairs(items: &[String]) -> Result<Vars, CliError> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| CliError::Usage(format!("{kv:?}: expected NAME=VALUE")))
        })
        .collect()
}

fn show(env: &Value, p: &mut Printer<'_, impl Write>) {
    for (name, v) in env.as_object().into_iter().flatten() {
        if v["secret"].as_bool().unwrap_or(false) {
            p.line(format!("{name}={MASK}  (secret)"));
        } else {
            p.line(format!("{name}={}", v["value"].as_str().unwrap_or("")));
        }
    }
    p.object(env);
}

pub async fn run(
    ctx: &Context<'_>,
    cmd: Env,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let (target, change) = match cmd {
        Env::List { target } => {
            let s = ctx.names.service(&target).await?;
            let v: Value = ctx.api.get(&format!("/services/{}", s.service.id)).await?;
            show(&v["env"], p);
            return Ok(exit::OK);
        }
        Env::Set {
            target,
            pairs: items,
            secret,
        } => (target, (pairs(&items)?, secret, vec![])),
        Env::Unset { target, names } => (target, (BTreeMap::new(), false, names)),
    };
    let (set, secret, unset) = change;
    let s = ctx.names.service(&target).await?;
    let v: Value = ctx.api.get(&format!("/services/{}", s.service.id)).await?;
    let missing: Vec<&String> = unset
        .iter()
        .filter(|n| v["env"].get(n.as_str()).is_none())
        .collect();
    if !missing.is_empty() {
        let known: Vec<&str> = v["env"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        return Err(CliError::NotFound {
            what: "variable",
            name: missing[0].clone(),
            suggestions: crate::resolve::close_matches(missing[0], known.iter().copied()),
            listed: false,
        });
    }
    let (env, secrets) = plan(&v["env"], &set, secret, &unset)?;
    let updated = ctx
        .api
        .patch(
            &format!("/services/{}", s.service.id),
            &json!({ "env": env, "secrets": secrets }),
        )
        .await?;
    show(&updated["env"], p);
    p.line(format!(
        "{} updated; it applies from the next deployment (`stackpad deploy`)",
        s.path()
    ));
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn plain_vars_are_kept_and_a_secret_is_never_dropped_silently() {
        let current = json!({
            "MODE": { "value": "prod", "secret": false },
            "TOKEN": { "value": null, "secret": true },
        });
        let e = plan(&current, &map(&[("LOG", "info")]), false, &[]).unwrap_err();
        assert!(e.to_string().contains("drop the secrets TOKEN"), "{e}");
        let (env, secrets) = plan(&current, &map(&[("TOKEN", "t2")]), true, &[]).unwrap();
        assert_eq!(env, map(&[("MODE", "prod")]));
        assert_eq!(secrets, map(&[("TOKEN", "t2")]));
        let (env, secrets) = plan(&current, &BTreeMap::new(), false, &["TOKEN".into()]).unwrap();
        assert_eq!(env, map(&[("MODE", "prod")]));
        assert!(secrets.is_empty());
        let plain = json!({ "MODE": { "value": "prod", "secret": false } });
        let (env, _) = plan(
            &plain,
            &map(&[("MODE", "dev"), ("LOG", "info")]),
            false,
            &[],
        )
        .unwrap();
        assert_eq!(env, map(&[("LOG", "info"), ("MODE", "dev")]));
    }
}
