//! The commands: each resolves what it names (`resolve`), calls the API and prints the answer
//! for people or, with `--json`, as the API's objects (`output::Printer`). Login, link,
//! projects and webhook here; services, tokens and members, init and up, deployments, logs,
//! domains, environments and env in their own files.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::link::{self, Link};
use crate::output::Printer;
use crate::resolve::{Resolver, ServiceArgs};
use crate::{ApiClient, CliError, LinkArgs, Login, Projects, exit, files};

/// What every command after login is given.
#[derive(Debug)]
pub struct Context<'a> {
    pub api: &'a ApiClient,
    pub names: &'a Resolver<'a>,
    /// A question may be asked on stdin (`delete` without `--yes`).
    pub interactive: bool,
}

pub fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key].as_str().unwrap_or("")
}

pub async fn login(
    path: &Path,
    url: &str,
    token: &str,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let api = ApiClient::new(url, token);
    let org: Value = api.get("/organization").await?;
    let login = Login {
        url: url.to_owned(),
        token: token.to_owned(),
    };
    // The token is a secret: 0600, written atomically (an older 0644 file is replaced).
    let text = serde_json::to_string_pretty(&login).expect("login serializes");
    files::write_private(path, text.as_bytes()).map_err(|source| CliError::Io {
        path: path.display().to_string(),
        source,
    })?;
    p.line(format!(
        "logged in to {url} as organization {}",
        org["name"].as_str().unwrap_or("?")
    ));
    p.object(&json!({ "url": url, "organization": org }));
    Ok(exit::OK)
}

fn link_json(path: &Path, link: &Link) -> Value {
    let mut v = json!(link);
    v["path"] = json!(path.display().to_string());
    v
}

fn link_label(link: &Link) -> String {
    let mut label = link.project.name.clone();
    if let Some(e) = &link.environment {
        label.push('/');
        label.push_str(&e.name);
    }
    if let Some(s) = &link.service {
        label.push('/');
        label.push_str(&s.name);
    }
    label
}

pub async fn link(
    ctx: &Context<'_>,
    dir: &Path,
    linked: Option<(PathBuf, Link)>,
    args: LinkArgs,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    // Flags are read on their own: the link in force is what is being replaced.
    let fresh = Resolver::new(ctx.api, None);
    let new = match (&args.service, &args.project) {
        (Some(_), _) => {
            let s = fresh
                .service(&ServiceArgs {
                    service: args.service.clone(),
                    project: args.project.clone(),
                    environment: args.environment.clone(),
                })
                .await?;
            Link {
                project: s.project,
                environment: Some(s.environment),
                service: Some(s.service),
            }
        }
        (None, Some(project)) => {
            let project = fresh.project_named(project).await?;
            let environment = match &args.environment {
                Some(e) => Some(fresh.environment_named(&project, e).await?),
                None => None,
            };
            Link {
                project,
                environment,
                service: None,
            }
        }
        (None, None) => {
            if let Some((path, link)) = linked {
                p.line(format!(
                    "{} is linked to {}",
                    path.parent().unwrap_or(Path::new(".")).display(),
                    link_label(&link)
                ));
                p.object(&link_json(&path, &link));
                return Ok(exit::OK);
            }
            let projects = fresh.projects().await?;
            let names: Vec<&str> = projects.iter().map(|v| str_of(v, "name")).collect();
            return Err(CliError::Usage(format!(
                "{} is not linked: name the target, e.g. `stackpad link --project NAME \
                 [--service NAME]`; projects: {}",
                dir.display(),
                if names.is_empty() {
                    "none yet (`stackpad projects create NAME`)".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        }
    };
    let path = link::write(dir, &new)?;
    p.line(format!(
        "linked {} to {}",
        dir.display(),
        p.bold(&link_label(&new))
    ));
    p.object(&link_json(&path, &new));
    Ok(exit::OK)
}

pub fn unlink(dir: &Path, p: &mut Printer<'_, impl Write>) -> Result<i32, CliError> {
    let path = link::find(dir).ok_or_else(|| {
        CliError::Usage(format!(
            "{} is not linked (no {} here or above)",
            dir.display(),
            link::FILE
        ))
    })?;
    std::fs::remove_file(&path).map_err(|source| CliError::Io {
        path: path.display().to_string(),
        source,
    })?;
    p.line(format!("removed {}", path.display()));
    p.object(&json!({ "removed": path.display().to_string() }));
    Ok(exit::OK)
}

/// Asks to type `name` again unless `yes`; refuses without a terminal to ask on. `what` is
/// shown, e.g. `service shop/production/web`.
pub(crate) fn confirm(
    ctx: &Context<'_>,
    yes: bool,
    what: &str,
    name: &str,
) -> Result<(), CliError> {
    confirm_to(ctx, yes, "delete", what, name)
}

/// [`confirm`] for another irreversible `verb` (`revoke`, `remove`).
pub(crate) fn confirm_to(
    ctx: &Context<'_>,
    yes: bool,
    verb: &str,
    what: &str,
    name: &str,
) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !ctx.interactive {
        return Err(CliError::Usage(format!(
            "to {verb} {what} confirm it: pass --yes (no terminal to ask on)"
        )));
    }
    eprint!("{verb} {what}? type {name} to confirm: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|source| CliError::Io {
            path: "stdin".into(),
            source,
        })?;
    if answer.trim() == name {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{what} was not confirmed: nothing done"
        )))
    }
}

pub async fn projects(
    ctx: &Context<'_>,
    cmd: Projects,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    match cmd {
        Projects::List => {
            let items = ctx.names.projects().await?;
            for v in &items {
                p.line(format!("{}  {}", str_of(v, "id"), str_of(v, "name")));
            }
            p.object(&json!(items));
        }
        Projects::Create { name } => {
            let v = ctx.api.post("/projects", &json!({ "name": name })).await?;
            p.line(format!("created project {} ({})", name, str_of(&v, "id")));
            p.object(&v);
        }
        Projects::Delete { project, yes } => {
            let project = ctx.names.project_named(&project).await?;
            confirm(
                ctx,
                yes,
                &format!("project {}", project.name),
                &project.name,
            )?;
            // Each service is deleted through the API first, which stops its containers and
            // routes; deleting the project alone would only drop the rows.
            let services = ctx.names.services_of(&project).await?;
            for s in &services {
                ctx.api
                    .delete(&format!("/services/{}", str_of(s, "id")))
                    .await?;
                p.line(format!("deleted service {}", str_of(s, "name")));
            }
            ctx.api.delete(&format!("/projects/{}", project.id)).await?;
            p.line(format!("deleted project {} ({})", project.name, project.id));
            p.object(&json!({ "deleted": project, "services_deleted": services.len() }));
        }
        Projects::DeployKey { project, rotate } => {
            let project = ctx.names.project_named(&project).await?;
            let path = format!("/projects/{}/deploy-key", project.id);
            let existing = if rotate {
                None
            } else {
                match ctx.api.get::<Value>(&path).await {
                    Ok(v) => Some(v),
                    Err(CliError::Api { status: 404, .. }) => None,
                    Err(e) => return Err(e),
                }
            };
            let v = match existing {
                Some(v) => v,
                None => ctx.api.post(&path, &json!({})).await?,
            };
            p.line(str_of(&v, "public_key"));
            p.line(format!("fingerprint {}", str_of(&v, "fingerprint")));
            p.line(str_of(&v, "note"));
            p.object(&v);
        }
    }
    Ok(exit::OK)
}

pub async fn webhook_rotate(
    ctx: &Context<'_>,
    target: ServiceArgs,
    secret: Option<String>,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let s = ctx.names.service(&target).await?;
    let body = match secret {
        Some(s) => json!({ "secret": s }),
        None => json!({}),
    };
    let v = ctx
        .api
        .patch(&format!("/services/{}/webhook", s.service.id), &body)
        .await?;
    p.line(format!(
        "webhook secret of service {} rotated: {}",
        s.path(),
        str_of(&v, "webhook_secret")
    ));
    p.line("  shown once: set it in the repository's webhook settings now");
    p.object(&v);
    Ok(exit::OK)
}

/// The deliveries of the project (or of the service `--service` names), newest first.
pub async fn webhook_deliveries(
    ctx: &Context<'_>,
    target: ServiceArgs,
    limit: u32,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let (project, filter) = if target.service.is_some() {
        let s = ctx.names.service(&target).await?;
        (s.project, format!("&service={}", s.service.id))
    } else {
        let project = ctx
            .names
            .project(&crate::resolve::ProjectArgs {
                project: target.project,
                environment: None,
            })
            .await?;
        (project, String::new())
    };
    let v: Value = ctx
        .api
        .get(&format!(
            "/projects/{}/webhook-deliveries?limit={limit}{filter}",
            project.id
        ))
        .await?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        p.line(format!("no webhook deliveries to project {}", project.name));
    }
    for d in &items {
        p.line(format!(
            "{}  {}  {}  {}  {}",
            str_of(d, "received_at"),
            str_of(d, "service_name"),
            str_of(d, "event"),
            str_of(d, "outcome"),
            str_of(d, "reason")
        ));
    }
    p.object(&json!(items));
    Ok(exit::OK)
}
