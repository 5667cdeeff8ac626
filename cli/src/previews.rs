//! `stackpad previews list|enable|disable`: a project's pull-request previews (#17's API:
//! `GET|PUT /projects/{id}/previews`). Each open pull request of the project's repository gets
//! an environment `pr-<n>` copied from the template; the list shows its pull request, status,
//! head and URLs.

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use super::commands::{Context, str_of};
use super::output::{Printer, table};
use super::resolve::ProjectArgs;
use super::{CliError, exit};

#[derive(Debug, Subcommand)]
pub enum Previews {
    /// The project's preview settings and its open previews: pull request, environment,
    /// status, head commit and URLs.
    #[command(after_help = "Examples:\n  stackpad previews list --project shop\n  \
                      stackpad previews list --json | jq -r '.items[].preview.urls[]'")]
    List {
        /// The project, by name or id (default: the linked directory's), e.g. `--project shop`.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
    /// Turn previews on: each pull request opened on the project's repository gets a copy of
    /// the template environment, deployed at the pull request's head.
    #[command(
        after_help = "Examples:\n  stackpad previews enable --template production --project shop\n  \
                      stackpad previews enable --template staging --max 3 --idle-seconds 900"
    )]
    Enable {
        /// The environment each preview copies, by name or id, e.g. `--template production`.
        #[arg(long, value_name = "ENVIRONMENT")]
        template: String,
        /// At most this many previews at once (default 5), e.g. `--max 3`.
        #[arg(long, value_name = "N")]
        max: Option<i32>,
        /// Build pull requests from forks too (their code is not the project's).
        #[arg(long)]
        allow_forks: bool,
        /// Stop a preview after this long without a request and wake it on the next one
        /// (default: previews never sleep), e.g. `--idle-seconds 900`.
        #[arg(long, value_name = "SECONDS")]
        idle_seconds: Option<i32>,
        /// The project, by name or id (default: the linked directory's), e.g. `--project shop`.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
    /// Turn previews off: no new preview is made (the open ones stay until their pull request
    /// closes); the other settings are kept.
    #[command(after_help = "Example:\n  stackpad previews disable --project shop")]
    Disable {
        /// The project, by name or id (default: the linked directory's), e.g. `--project shop`.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
}

/// One preview environment's line: `#<n>  <env>  <status>  <head>  <urls>`.
pub fn preview_row(e: &Value) -> Vec<String> {
    let p = &e["preview"];
    let head = str_of(p, "head_sha");
    let mut status = str_of(p, "status").to_owned();
    if p["sleeping_since"].is_string() {
        status.push_str(" (sleeping)");
    }
    let urls: Vec<&str> = p["urls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    vec![
        format!("#{}", p["number"]),
        str_of(e, "name").to_owned(),
        status,
        head.get(..7).unwrap_or(head).to_owned(),
        if urls.is_empty() {
            "-".to_owned()
        } else {
            urls.join(" ")
        },
    ]
}

/// The human lines of a project's previews: the settings, then one line per open preview.
pub fn previews_lines(v: &Value, template: Option<&str>) -> Vec<String> {
    let mut out = vec![];
    if v["enabled"].as_bool().unwrap_or(false) {
        let mut line = format!(
            "previews on: copies {}, at most {}",
            template.unwrap_or("?"),
            v["max_previews"]
        );
        if v["allow_forks"].as_bool().unwrap_or(false) {
            line.push_str(", forks too");
        }
        if let Some(s) = v["idle_seconds"].as_i64() {
            line.push_str(&format!(", sleep after {s}s idle"));
        }
        out.push(line);
    } else {
        out.push("previews off (stackpad previews enable --template production)".to_owned());
    }
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        out.push("no open previews".to_owned());
    }
    let rows: Vec<Vec<String>> = items.iter().map(preview_row).collect();
    out.extend(table(&rows));
    out
}

pub async fn run(
    ctx: &Context<'_>,
    cmd: Previews,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let given = match &cmd {
        Previews::List { project } | Previews::Disable { project } => project.clone(),
        Previews::Enable { project, .. } => project.clone(),
    };
    let project = ctx
        .names
        .project(&ProjectArgs {
            project: given,
            environment: None,
        })
        .await?;
    let path = format!("/projects/{}/previews", project.id);
    let v = match cmd {
        Previews::List { .. } => ctx.api.get(&path).await?,
        Previews::Enable {
            template,
            max,
            allow_forks,
            idle_seconds,
            ..
        } => {
            // Resolved here so a wrong name gets the close matches.
            let env = ctx.names.environment_named(&project, &template).await?;
            let body = json!({ "enabled": true, "template": env.id, "max_previews": max,
                "allow_forks": allow_forks, "idle_seconds": idle_seconds });
            ctx.api.put(&path, &body).await?
        }
        Previews::Disable { .. } => {
            let now: Value = ctx.api.get(&path).await?;
            let body = json!({ "enabled": false, "template": now["template_id"],
                "max_previews": now["max_previews"], "allow_forks": now["allow_forks"],
                "idle_seconds": now["idle_seconds"] });
            ctx.api.put(&path, &body).await?
        }
    };
    let template = match v["template_id"].as_str() {
        Some(id) => ctx
            .names
            .environments_of(&project)
            .await?
            .into_iter()
            .find(|e| e["id"] == id)
            .map(|e| str_of(&e, "name").to_owned()),
        None => None,
    };
    for l in previews_lines(&v, template.as_deref()) {
        p.line(l);
    }
    p.object(&v);
    Ok(exit::OK)
}
