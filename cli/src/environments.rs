//! `stackpad environments list|show|create|set|delete`: a project's environments. `create
//! --from production` copies an environment's services, settings, variables and secrets;
//! `set` changes the branch and the environment's variables (given to every service in it,
//! over the service's own of the same name, from the next deployment); `delete` takes every
//! service of the environment off the platform first.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use super::commands::{Context, confirm, str_of};
use super::env::pairs;
use super::output::Printer;
use super::resolve::{Named, ProjectArgs};
use super::{CliError, exit};

#[derive(Debug, Subcommand)]
pub enum Environments {
    /// The project's environments.
    #[command(after_help = "Example:\n  stackpad environments list --project shop")]
    List {
        /// The project, by name or id (default: the linked directory's), e.g. `--project shop`.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
    /// One environment: its branch and variables (secrets masked).
    #[command(after_help = "Example:\n  stackpad environments show staging --project shop")]
    Show {
        /// The environment, by name or id, e.g. `staging`.
        environment: String,
        /// The project, by name or id (default: the linked directory's), e.g. `--project shop`.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
    /// Create an environment that deploys a branch; with --from, a copy of another one (its
    /// services, settings, variables and secrets; not its custom domains or deployments).
    #[command(
        after_help = "Examples:\n  stackpad environments create staging --branch develop --project shop\n  \
                      stackpad environments create staging --branch develop --from production \
                      --env DATABASE_URL=postgres://staging-db/shop"
    )]
    Create {
        /// Lower-case letters, digits and '-', starting with a letter, e.g. `staging`.
        name: String,
        /// The git branch it deploys, e.g. `--branch develop`.
        #[arg(long)]
        branch: String,
        /// The environment to copy, by name or id, e.g. `--from production`.
        #[arg(long, value_name = "ENVIRONMENT")]
        from: Option<String>,
        /// A variable of the new environment (over a copied one), e.g. `--env MODE=staging`.
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// A secret of the new environment: kept encrypted, never shown again, e.g.
        /// `--secret API_KEY=...`.
        #[arg(long = "secret", value_name = "NAME=VALUE")]
        secrets: Vec<String>,
        /// The project, by name or id (default: the linked directory's), e.g. `--project shop`.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
    /// Change the branch or the variables of an environment (the others are kept); applies
    /// from the next deployment.
    #[command(
        after_help = "Examples:\n  stackpad environments set staging MODE=staging LOG=debug\n  \
                      stackpad environments set staging --secret API_KEY=...\n  \
                      stackpad environments set staging --branch release --unset LOG"
    )]
    Set {
        /// The environment, by name or id, e.g. `staging`.
        environment: String,
        /// NAME=VALUE pairs, e.g. `MODE=staging`.
        #[arg(value_name = "NAME=VALUE")]
        pairs: Vec<String>,
        /// Store the pairs as secrets: kept encrypted, never shown again.
        #[arg(long)]
        secret: bool,
        /// Remove a variable or secret, e.g. `--unset LOG`.
        #[arg(long, value_name = "NAME")]
        unset: Vec<String>,
        /// Deploy this branch from now on, e.g. `--branch release`.
        #[arg(long)]
        branch: Option<String>,
        /// The project, by name or id (default: the linked directory's), e.g. `--project shop`.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
    /// Delete an environment: every service in it is taken off the platform (routes,
    /// certificates, containers) first. Asks to type the name unless --yes.
    #[command(after_help = "Example:\n  stackpad environments delete staging --project shop --yes")]
    Delete {
        /// The environment, by name or id, e.g. `staging`.
        environment: String,
        /// The project, by name or id (default: the linked directory's), e.g. `--project shop`.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
        /// Do not ask (for scripts; without a terminal --yes is required).
        #[arg(long)]
        yes: bool,
    },
}

/// `  preview of pull request #7: ready at aaaaaaa  https://...`, for a preview environment.
fn preview_line(e: &Value) -> Option<String> {
    if e["preview"].is_null() {
        return None;
    }
    let [number, _, status, head, urls] = <[String; 5]>::try_from(super::previews::preview_row(e))
        .expect("a preview row has five columns");
    Some(format!(
        "  preview of pull request {number}: {status} at {head}  {urls}"
    ))
}

/// The human lines of an environment: name, branch, its pull request if it is a preview, then
/// each variable.
pub fn describe(e: &Value, p: &mut Printer<'_, impl Write>) {
    p.line(format!(
        "{}  {}  branch {}",
        str_of(e, "id"),
        str_of(e, "name"),
        str_of(e, "branch")
    ));
    if let Some(l) = preview_line(e) {
        p.line(l);
    }
    for (name, v) in e["env"].as_object().into_iter().flatten() {
        if v["secret"].as_bool().unwrap_or(false) {
            p.line(format!("  {name}={}  (secret)", super::env::MASK));
        } else {
            p.line(format!("  {name}={}", v["value"].as_str().unwrap_or("")));
        }
    }
}

async fn project(ctx: &Context<'_>, project: Option<String>) -> Result<Named, CliError> {
    ctx.names
        .project(&ProjectArgs {
            project,
            environment: None,
        })
        .await
}

pub async fn run(
    ctx: &Context<'_>,
    cmd: Environments,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    match cmd {
        Environments::List { project: given } => {
            let project = project(ctx, given).await?;
            let items = ctx.names.environments_of(&project).await?;
            for e in &items {
                p.line(format!(
                    "{}  {}  {}",
                    str_of(e, "id"),
                    str_of(e, "name"),
                    str_of(e, "branch")
                ));
                if let Some(l) = preview_line(e) {
                    p.line(l);
                }
            }
            p.object(&json!(items));
        }
        Environments::Show {
            environment,
            project: given,
        } => {
            let project = project(ctx, given).await?;
            let env = ctx.names.environment_named(&project, &environment).await?;
            let v: Value = ctx.api.get(&format!("/environments/{}", env.id)).await?;
            describe(&v, p);
            p.object(&v);
        }
        Environments::Create {
            name,
            branch,
            from,
            env,
            secrets,
            project: given,
        } => {
            let project = project(ctx, given).await?;
            let mut body = json!({ "name": name, "branch": branch,
                "env": pairs(&env)?, "secrets": pairs(&secrets)? });
            if let Some(from) = &from {
                // Resolved here so a wrong name fails before anything is created.
                body["from"] = json!(ctx.names.environment_named(&project, from).await?.id);
            }
            let v = ctx
                .api
                .post(&format!("/projects/{}/environments", project.id), &body)
                .await?;
            let copied = from.map(|f| format!(", a copy of {f}")).unwrap_or_default();
            p.line(format!(
                "created environment {}/{name} deploying {branch}{copied} ({})",
                project.name,
                str_of(&v, "id")
            ));
            p.object(&v);
        }
        Environments::Set {
            environment,
            pairs: given,
            secret,
            unset,
            branch,
            project: project_given,
        } => {
            if given.is_empty() && unset.is_empty() && branch.is_none() {
                return Err(CliError::Usage(
                    "nothing to change: give NAME=VALUE pairs, --unset NAME or --branch".into(),
                ));
            }
            let project = project(ctx, project_given).await?;
            let env = ctx.names.environment_named(&project, &environment).await?;
            let set = pairs(&given)?;
            let (vars, secrets) = if secret {
                (BTreeMap::new(), set)
            } else {
                (set, BTreeMap::new())
            };
            let mut body = json!({ "env": vars, "secrets": secrets, "unset": unset });
            if let Some(branch) = branch {
                body["branch"] = json!(branch);
            }
            let v = ctx
                .api
                .patch(&format!("/environments/{}", env.id), &body)
                .await?;
            describe(&v, p);
            p.object(&v);
        }
        Environments::Delete {
            environment,
            project: given,
            yes,
        } => {
            let project = project(ctx, given).await?;
            let env = ctx.names.environment_named(&project, &environment).await?;
            let what = format!("environment {}/{}", project.name, env.name);
            confirm(ctx, yes, &what, &env.name)?;
            ctx.api.delete(&format!("/environments/{}", env.id)).await?;
            p.line(format!("deleted {what} ({})", env.id));
            p.object(&json!({ "deleted": env }));
        }
    }
    Ok(exit::OK)
}
