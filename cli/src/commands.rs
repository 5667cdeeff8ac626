//! The commands: each resolves what it names (`resolve`), calls the API and prints the answer
//! for people or, with `--json`, as the API's objects (`output::Printer`).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::link::{self, Link};
use crate::output::Printer;
use crate::resolve::{ProjectArgs, Resolver, ServiceArgs, ServiceRef};
use crate::{
    ApiClient, CliError, Environments, LinkArgs, Login, Projects, Services, Tokens, exit, files,
};

/// What every command after login is given.
pub struct Context<'a> {
    pub api: &'a ApiClient,
    pub names: &'a Resolver<'a>,
    /// A question may be asked on stdin (`delete` without `--yes`).
    pub interactive: bool,
}

fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
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
fn confirm(ctx: &Context<'_>, yes: bool, what: &str, name: &str) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !ctx.interactive {
        return Err(CliError::Usage(format!(
            "deleting {what} needs confirmation: pass --yes (no terminal to ask on)"
        )));
    }
    eprint!("delete {what}? type {name} to confirm: ");
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
            "not deleted: {what} was not confirmed"
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
    }
    Ok(exit::OK)
}

pub async fn environments(
    ctx: &Context<'_>,
    cmd: Environments,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    match cmd {
        Environments::List { project } => {
            let project = ctx
                .names
                .project(&ProjectArgs {
                    project,
                    environment: None,
                })
                .await?;
            let items = ctx.names.environments_of(&project).await?;
            for e in &items {
                p.line(format!(
                    "{}  {}  {}",
                    str_of(e, "id"),
                    str_of(e, "name"),
                    str_of(e, "branch")
                ));
            }
            p.object(&json!(items));
        }
        Environments::Create {
            name,
            branch,
            project,
        } => {
            let project = ctx
                .names
                .project(&ProjectArgs {
                    project,
                    environment: None,
                })
                .await?;
            let v = ctx
                .api
                .post(
                    &format!("/projects/{}/environments", project.id),
                    &json!({ "name": name, "branch": branch }),
                )
                .await?;
            p.line(format!(
                "created environment {}/{name} deploying {branch} ({})",
                project.name,
                str_of(&v, "id")
            ));
            p.object(&v);
        }
    }
    Ok(exit::OK)
}

pub async fn services(
    ctx: &Context<'_>,
    cmd: Services,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    match cmd {
        Services::List { target } => {
            let project = ctx.names.project(&target).await?;
            let environment = ctx
                .names
                .environment(&project, target.environment.as_deref())
                .await?;
            let items: Vec<Value> = ctx
                .names
                .services_of(&project)
                .await?
                .into_iter()
                .filter(|s| {
                    environment
                        .as_ref()
                        .is_none_or(|e| s["environment_id"].as_str() == Some(&e.id))
                })
                .collect();
            for s in &items {
                p.line(format!(
                    "{}  {}  {}",
                    str_of(s, "id"),
                    str_of(s, "name"),
                    s["image"].as_str().or(s["git_url"].as_str()).unwrap_or("")
                ));
            }
            p.object(&json!(items));
        }
        Services::Create {
            target,
            name,
            image,
            git,
            port,
            health_path,
            env,
            webhook_secret,
        } => {
            let project = ctx.names.project(&target).await?;
            let environment = ctx
                .names
                .environment(&project, target.environment.as_deref())
                .await?;
            let mut env_map = serde_json::Map::new();
            for kv in env {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| CliError::Usage(format!("--env {kv:?}: expected NAME=VALUE")))?;
                env_map.insert(k.to_owned(), json!(v));
            }
            let mut body = json!({ "name": name, "env": env_map });
            if let Some(e) = environment {
                body["environment_id"] = json!(e.id);
            }
            if let Some(i) = image {
                body["image"] = json!(i);
            }
            if let Some(g) = git {
                body["git"] = json!({ "url": g });
            }
            if let Some(port) = port {
                body["port"] = json!(port);
            }
            if let Some(h) = health_path {
                body["health_check"] = json!({ "path": h });
            }
            if let Some(s) = webhook_secret {
                body["webhook_secret"] = json!(s);
            }
            let s = ctx
                .api
                .post(&format!("/projects/{}/services", project.id), &body)
                .await?;
            p.line(format!("created service {name} ({})", str_of(&s, "id")));
            for h in s["hosts"].as_array().into_iter().flatten() {
                p.line(format!("  https://{}", h.as_str().unwrap_or("")));
            }
            if let Some(secret) = s["webhook_secret"].as_str() {
                p.line(format!(
                    "  webhook: POST /webhooks/github/{} signed with secret {secret} \
                     (shown once; `stackpad webhook rotate` makes a new one)",
                    str_of(&s, "id")
                ));
            }
            p.object(&s);
        }
        Services::Delete { target, yes } => {
            let s = ctx.names.service(&target).await?;
            confirm(ctx, yes, &format!("service {}", s.path()), &s.service.name)?;
            ctx.api
                .delete(&format!("/services/{}", s.service.id))
                .await?;
            p.line(format!("deleted service {} ({})", s.path(), s.service.id));
            p.object(&json!({ "deleted": service_json(&s) }));
        }
    }
    Ok(exit::OK)
}

fn service_json(s: &ServiceRef) -> Value {
    json!({
        "id": s.service.id,
        "name": s.service.name,
        "project": s.project,
        "environment": s.environment,
    })
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

pub async fn tokens(
    ctx: &Context<'_>,
    cmd: Tokens,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    match cmd {
        Tokens::Create {
            name,
            role,
            expires_at,
        } => {
            let mut body = json!({ "name": name });
            if let Some(r) = role {
                body["role"] = json!(r);
            }
            if let Some(t) = expires_at {
                body["expires_at"] = json!(t);
            }
            let v = ctx.api.post("/tokens", &body).await?;
            p.line(format!(
                "token {} ({}, role {}, expires {}): {}",
                name,
                str_of(&v["token"], "id"),
                str_of(&v["token"], "role"),
                v["token"]["expires_at"].as_str().unwrap_or("never"),
                str_of(&v, "secret")
            ));
            p.object(&v);
        }
        Tokens::Revoke { id } => {
            ctx.api.delete(&format!("/tokens/{id}")).await?;
            p.line(format!("token {id} revoked"));
            p.object(&json!({ "revoked": id }));
        }
    }
    Ok(exit::OK)
}

pub async fn deploy(
    ctx: &Context<'_>,
    target: ServiceArgs,
    image: Option<String>,
    git_ref: Option<String>,
    commit: Option<String>,
    no_wait: bool,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let s = ctx.names.service(&target).await?;
    let mut body = json!({});
    if let Some(i) = image {
        body["image"] = json!(i);
    }
    if let Some(r) = git_ref {
        body["git_ref"] = json!(r);
    }
    if let Some(c) = commit {
        body["git_commit"] = json!(c);
    }
    let d = ctx
        .api
        .post(&format!("/services/{}/deployments", s.service.id), &body)
        .await?;
    let id = str_of(&d, "id").to_owned();
    p.line(format!("deployment {id} of {} queued", s.path()));
    if no_wait {
        p.object(&d);
        return Ok(exit::OK);
    }
    follow(ctx.api, &id, p).await
}

pub async fn deployments(
    ctx: &Context<'_>,
    target: ServiceArgs,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let s = ctx.names.service(&target).await?;
    let page: Value = ctx
        .api
        .get(&format!("/services/{}/deployments?limit=50", s.service.id))
        .await?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    for d in &items {
        let state = str_of(d, "state");
        p.line(format!(
            "{}  {}{}  {}  {}",
            str_of(d, "id"),
            p.state(state),
            " ".repeat(10usize.saturating_sub(state.len())),
            str_of(d, "created_at"),
            str_of(d, "failure_reason")
        ));
    }
    p.object(&json!(items));
    Ok(exit::OK)
}

/// One deployment: its state, timeline and failure.
fn show_deployment(d: &Value, p: &mut Printer<'_, impl Write>) {
    p.line(format!(
        "deployment {}  {}  image {}",
        str_of(d, "id"),
        p.state(str_of(d, "state")),
        d["image"].as_str().unwrap_or("-")
    ));
    let timeline = d["timeline"].as_array().cloned().unwrap_or_default();
    for (i, step) in timeline.iter().enumerate() {
        let previous = i.checked_sub(1).and_then(|j| timeline[j]["at"].as_str());
        p.line(step_line(step, previous));
    }
    if let Some(reason) = d["failure_reason"].as_str() {
        p.line(format!("  failure: {reason}"));
    }
    p.object(d);
}

pub async fn deployment(
    ctx: &Context<'_>,
    id: &str,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let d: Value = ctx.api.get(&format!("/deployments/{id}")).await?;
    show_deployment(&d, p);
    Ok(exit::OK)
}

pub async fn cancel(
    ctx: &Context<'_>,
    id: &str,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let d = ctx
        .api
        .post(&format!("/deployments/{id}/cancel"), &json!({}))
        .await?;
    show_deployment(&d, p);
    Ok(exit::OK)
}

pub async fn rollback(
    ctx: &Context<'_>,
    deployment: &str,
    no_wait: bool,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let d = ctx
        .api
        .post(&format!("/deployments/{deployment}/rollback"), &json!({}))
        .await?;
    let id = str_of(&d, "id").to_owned();
    p.line(format!("rollback deployment {id} queued"));
    if no_wait {
        p.object(&d);
        return Ok(exit::OK);
    }
    follow(ctx.api, &id, p).await
}

/// What `stackpad logs` asks for.
pub struct LogQuery {
    pub grep: Option<String>,
    pub limit: u32,
    pub access: bool,
    /// New lines as they come, after the latest `limit`.
    pub follow: bool,
    pub status: Option<String>,
    pub min_duration_ms: Option<u64>,
}

pub async fn logs(
    ctx: &Context<'_>,
    target: ServiceArgs,
    q: LogQuery,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let s = ctx.names.service(&target).await?;
    let resource = if q.access { "access-logs" } else { "logs" };
    let mut path = format!("/services/{}/{resource}?limit={}", s.service.id, q.limit);
    let grep = q.grep.as_deref().map(|t| format!("&q={}", query_encode(t)));
    if let Some(g) = &grep {
        path.push_str(g);
    }
    if let Some(status) = q.status {
        path.push_str(&format!("&status={}", query_encode(&status)));
    }
    if let Some(ms) = q.min_duration_ms {
        path.push_str(&format!("&min_duration_ms={ms}"));
    }
    let page: Value = ctx.api.get(&path).await?;
    if q.access {
        p.object(&page);
        let requests = page["requests"].as_array().cloned().unwrap_or_default();
        for r in requests.iter().rev() {
            p.line(access_line(r));
        }
        return Ok(exit::OK);
    }
    let lines = page["lines"].as_array().cloned().unwrap_or_default();
    if !q.follow {
        p.object(&page);
    }
    for l in lines.iter().rev() {
        if q.follow {
            log_line(l, p);
        } else {
            p.line(format!("{} {}", str_of(l, "stream"), str_of(l, "line")));
        }
    }
    if !q.follow {
        return Ok(exit::OK);
    }
    // From the newest line shown (nothing between the search and the follow is missed), else
    // from now; the server ends the stream only when it goes away.
    let mut follow = format!(
        "/services/{}/logs/follow?{}",
        s.service.id,
        grep.unwrap_or_default().trim_start_matches('&')
    );
    if let Some(cursor) = page["follow_cursor"].as_str() {
        follow.push_str(&format!("&cursor={}", query_encode(cursor)));
    }
    ctx.api
        .events(&follow, |l| {
            log_line(&l, p);
            true
        })
        .await?;
    Err(CliError::Http(format!(
        "the log stream of {} ended: the API closed it",
        s.path()
    )))
}

/// `<stream> <line>` for people; with `--json` (following) the line's object on one line.
fn log_line(l: &Value, p: &mut Printer<'_, impl Write>) {
    if p.json {
        p.compact(l);
    } else {
        p.line(format!("{} {}", str_of(l, "stream"), str_of(l, "line")));
    }
}

/// Percent-encodes a query parameter's value.
fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `<time> <status> <method> <host><path> <ms>ms <bytes>B`, one request per line.
fn access_line(r: &Value) -> String {
    let ts = r["timestamp_ns"].as_i64().unwrap_or(0);
    let time = chrono::DateTime::from_timestamp_nanos(ts)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        "{time} {} {} {}{} {:.1}ms {}B",
        r["status"].as_u64().unwrap_or(0),
        str_of(r, "method"),
        str_of(r, "host"),
        str_of(r, "path"),
        r["duration_ms"].as_f64().unwrap_or(0.0),
        r["response_bytes"].as_u64().unwrap_or(0),
    )
}

/// Prints each new step of the timeline until the deployment ends (with `--json`, only the
/// deployment as it ended); `exit::DEPLOYMENT_FAILED` unless it ends ready.
async fn follow(
    api: &ApiClient,
    id: &str,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let mut shown = 0;
    loop {
        let d: Value = api.get(&format!("/deployments/{id}")).await?;
        let timeline = d["timeline"].as_array().cloned().unwrap_or_default();
        for (i, step) in timeline.iter().enumerate().skip(shown) {
            let previous = i.checked_sub(1).and_then(|j| timeline[j]["at"].as_str());
            p.line(step_line(step, previous));
        }
        shown = shown.max(timeline.len());
        match d["state"].as_str() {
            Some("ready") => {
                p.line(format!("deployment {id} is {}", p.state("ready")));
                if !p.json {
                    let service: Value = api
                        .get(&format!("/services/{}", str_of(&d, "service_id")))
                        .await?;
                    for h in service["hosts"].as_array().into_iter().flatten() {
                        p.line(format!("  https://{}", h.as_str().unwrap_or("")));
                    }
                }
                p.object(&d);
                return Ok(exit::OK);
            }
            Some(state @ ("failed" | "cancelled" | "superseded")) => {
                p.line(format!(
                    "deployment {id} {}: {}",
                    p.state(state),
                    str_of(&d, "failure_reason")
                ));
                p.object(&d);
                return Ok(exit::DEPLOYMENT_FAILED);
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// `  <at>  <phase>[: detail]  (+<seconds since the previous step>s)`, one timeline step.
fn step_line(step: &Value, previous_at: Option<&str>) -> String {
    let at = str_of(step, "at");
    let detail = str_of(step, "detail");
    let mut line = format!("  {at}  {}", str_of(step, "phase"));
    if !detail.is_empty() {
        line.push_str(": ");
        line.push_str(detail);
    }
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    if let (Some(now), Some(then)) = (parse(at), previous_at.and_then(parse)) {
        let ms = (now - then).num_milliseconds().max(0);
        line.push_str(&format!("  (+{}.{:02}s)", ms / 1000, ms % 1000 / 10));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_renders_each_step_with_the_time_since_the_one_before() {
        let steps = json!([
            { "phase": "queued", "detail": "", "at": "2026-12-06T18:00:00.000Z" },
            { "phase": "starting", "detail": "n1", "at": "2026-12-06T18:00:01.250Z" },
            { "phase": "ready", "detail": "", "at": "2026-12-06T18:00:03.007Z" },
        ]);
        let steps = steps.as_array().unwrap();
        let lines: Vec<String> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| step_line(s, i.checked_sub(1).and_then(|j| steps[j]["at"].as_str())))
            .collect();
        assert_eq!(
            lines,
            [
                "  2026-12-06T18:00:00.000Z  queued",
                "  2026-12-06T18:00:01.250Z  starting: n1  (+1.25s)",
                "  2026-12-06T18:00:03.007Z  ready  (+1.75s)",
            ]
        );
    }
}
