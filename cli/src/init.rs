//! `stackpad init` and `stackpad up`: from an app's directory to a deployed app.
//!
//! `init` detects the framework with the build node's own detection (`stackpad-detect`, the
//! same code the build runs, linked as a library: never a second detector), shows it, creates
//! a git service building this directory from the repository's `origin` (its folder in the
//! repository as the subdirectory), creating the project when asked, and links the directory.
//! `up` deploys the directory's git HEAD (its commit, on its branch) and follows it to the URL
//! with the same progress view as `deploy`. Nothing is uploaded: the build node fetches the
//! commit from the repository, so HEAD must have been pushed (`up` warns when no remote
//! branch it knows of holds it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use detect::{Detection, RepoSnapshot};
use serde_json::{Value, json};

use super::commands::{Context, str_of};
use super::link::{self, Link};
use super::output::Printer;
use super::resolve::{Named, ServiceArgs};
use super::{CliError, exit};

/// What `stackpad init` was given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InitArgs {
    /// The project, by name or id (default: the linked directory's), e.g. `--project shop`.
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// Create the project if there is none of that name.
    #[arg(long, requires = "project")]
    pub create_project: bool,
    /// The environment, by name or id (default: the linked one, else production), e.g.
    /// `--environment staging`.
    #[arg(long, value_name = "ENVIRONMENT")]
    pub environment: Option<String>,
    /// The service's name (default: the directory's name), e.g. `--name web`.
    #[arg(long)]
    pub name: Option<String>,
    /// The repository the build node fetches (default: the `origin` remote's URL), e.g.
    /// `--git https://github.com/acme/shop`.
    #[arg(long)]
    pub git: Option<String>,
    /// Only show what detection finds; create nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `git` in `dir`; its trimmed stdout, or `None` when it fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The repository `dir` is in: its top folder and `dir`'s path inside it.
fn repository(dir: &Path) -> Result<(PathBuf, String), CliError> {
    let top = git(dir, &["rev-parse", "--show-toplevel"]).ok_or_else(|| {
        CliError::Usage(format!(
            "{} is not in a git repository: Stackpad builds a commit of one (`git init`, \
             commit, push, then `stackpad init`)",
            dir.display()
        ))
    })?;
    let prefix = git(dir, &["rev-parse", "--show-prefix"]).unwrap_or_default();
    Ok((PathBuf::from(top), prefix.trim_end_matches('/').to_owned()))
}

/// What detection found, in a line per fact.
pub fn detection_lines(d: &Detection) -> Vec<String> {
    let mut lines = vec![format!("detected {}", d.framework.name())];
    if let Some(pm) = d.package_manager {
        let lock = d
            .lock_file
            .as_deref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        lines.push(format!("  installs with {}{lock}", pm.name()));
    }
    if d.has_build_script {
        lines.push("  builds with its `build` script".into());
    }
    if !d.start.is_empty() {
        lines.push(format!("  starts with `{}`", d.start.join(" ")));
    }
    if let Some(node) = &d.node {
        lines.push(format!(
            "  asks for Node.js {} ({})",
            node.spec, node.source
        ));
    }
    lines.push(format!("  listens on port {}", d.port));
    lines
}

fn detection_json(d: &Detection) -> Value {
    json!({
        "framework": d.framework.name(),
        "package_manager": d.package_manager.map(|p| p.name()),
        "lock_file": d.lock_file,
        "build_script": d.has_build_script,
        "start": d.start,
        "port": d.port,
    })
}

/// A service name from a directory name: lower-case letters, digits and '-', starting with a
/// letter (what the API takes), at most 40 characters.
pub fn service_name(dir_name: &str) -> Option<String> {
    let mut name = String::new();
    for c in dir_name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_start_matches(|c: char| !c.is_ascii_lowercase());
    let name: String = name.chars().take(40).collect();
    let name = name.trim_end_matches('-');
    (!name.is_empty()).then(|| name.to_owned())
}

pub async fn init(
    ctx: &Context<'_>,
    dir: &Path,
    args: InitArgs,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let dir = dir.canonicalize().map_err(|source| CliError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let detection =
        detect::detect(&RepoSnapshot::read(&dir).map_err(detect_failed)?).map_err(detect_failed)?;
    for l in detection_lines(&detection) {
        p.line(l);
    }
    let (_, subdirectory) = repository(&dir)?;
    let git_url = match args.git {
        Some(url) => url,
        None => git(&dir, &["remote", "get-url", "origin"]).ok_or_else(|| {
            CliError::Usage(
                "this repository has no `origin` remote: add one (`git remote add origin URL`) \
                 or pass --git URL"
                    .into(),
            )
        })?,
    };
    let name = match args.name {
        Some(n) => n,
        None => dir
            .file_name()
            .and_then(|n| service_name(&n.to_string_lossy()))
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "cannot make a service name from {}: pass --name",
                    dir.display()
                ))
            })?,
    };
    let source = match subdirectory.as_str() {
        "" => git_url.clone(),
        sub => format!("{git_url} ({sub})"),
    };
    if args.dry_run {
        p.line(format!("would create service {name} building {source}"));
        p.object(
            &json!({ "detected": detection_json(&detection), "name": name,
            "git": { "url": git_url, "subdirectory": subdirectory } }),
        );
        return Ok(exit::OK);
    }
    let project = match (&args.project, args.create_project) {
        (Some(given), true) => match ctx.names.project_named(given).await {
            Err(CliError::NotFound { .. }) => {
                let v = ctx.api.post("/projects", &json!({ "name": given })).await?;
                p.line(format!("created project {given} ({})", str_of(&v, "id")));
                Named {
                    id: str_of(&v, "id").to_owned(),
                    name: given.clone(),
                }
            }
            other => other?,
        },
        _ => {
            ctx.names
                .project(&super::resolve::ProjectArgs {
                    project: args.project.clone(),
                    environment: None,
                })
                .await?
        }
    };
    let mut body = json!({ "name": name, "git": { "url": git_url } });
    if !subdirectory.is_empty() {
        body["git"]["subdirectory"] = json!(subdirectory);
    }
    if let Some(e) = ctx
        .names
        .environment(&project, args.environment.as_deref())
        .await?
    {
        body["environment_id"] = json!(e.id);
    }
    let s = ctx
        .api
        .post(&format!("/projects/{}/services", project.id), &body)
        .await?;
    let environment = ctx
        .names
        .environment_named(&project, str_of(&s, "environment_id"))
        .await?;
    let service = Named {
        id: str_of(&s, "id").to_owned(),
        name: name.clone(),
    };
    p.line(format!(
        "created service {}/{}/{name} building {source} ({})",
        project.name, environment.name, service.id
    ));
    for h in s["hosts"].as_array().into_iter().flatten() {
        p.line(format!("  https://{}", h.as_str().unwrap_or("")));
    }
    if let Some(secret) = s["webhook_secret"].as_str() {
        p.line(format!(
            "  webhook: POST /webhooks/github/{} signed with secret {secret} (shown once)",
            service.id
        ));
    }
    let link = Link {
        project,
        environment: Some(environment),
        service: Some(service),
    };
    let path = link::write(&dir, &link)?;
    p.line(format!(
        "linked {} (`stackpad up` deploys its HEAD)",
        dir.display()
    ));
    p.object(
        &json!({ "detected": detection_json(&detection), "service": s,
        "link": link, "path": path.display().to_string() }),
    );
    Ok(exit::OK)
}

fn detect_failed(e: detect::DetectError) -> CliError {
    CliError::Usage(format!("{e}"))
}

/// `stackpad up`: deploys the commit at the directory's HEAD (on its branch) and follows it.
pub async fn up(
    ctx: &Context<'_>,
    dir: &Path,
    target: ServiceArgs,
    no_wait: bool,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    repository(dir)?;
    let commit = git(dir, &["rev-parse", "--verify", "HEAD"]).ok_or_else(|| {
        CliError::Usage(format!(
            "{} has no commit yet: commit (and push) the app first",
            dir.display()
        ))
    })?;
    let branch = git(dir, &["symbolic-ref", "--quiet", "--short", "HEAD"]);
    let s = ctx.names.service(&target).await?;
    let v: Value = ctx.api.get(&format!("/services/{}", s.service.id)).await?;
    if v["git_url"].is_null() {
        return Err(CliError::Usage(format!(
            "service {} runs an image, not a git repository: `stackpad deploy --image ...` \
             deploys it",
            s.path()
        )));
    }
    let dirty =
        git(dir, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        eprintln!("stackpad: uncommitted changes are not deployed (HEAD {commit} is)");
    }
    let pushed =
        git(dir, &["branch", "--remotes", "--contains", &commit]).is_some_and(|s| !s.is_empty());
    if !pushed {
        eprintln!(
            "stackpad: no remote branch known here holds {commit}: push it, or the build \
             will not find it"
        );
    }
    p.line(format!(
        "deploying {} of {} to {}",
        &commit[..commit.len().min(12)],
        branch.as_deref().unwrap_or("a detached HEAD"),
        s.path()
    ));
    super::deployments::deploy(
        ctx,
        ServiceArgs {
            service: Some(s.service.id.clone()),
            ..ServiceArgs::default()
        },
        None,
        branch,
        Some(commit),
        no_wait,
        p,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_name_is_made_from_a_directory_name() {
        assert_eq!(service_name("shop").as_deref(), Some("shop"));
        assert_eq!(service_name("My_Shop.v2").as_deref(), Some("my-shop-v2"));
        assert_eq!(service_name("2fast").as_deref(), Some("fast"));
        assert_eq!(service_name("__").as_deref(), None);
        assert_eq!(service_name(&"a".repeat(60)).unwrap().len(), 40);
    }
}
