//! `stackpad deploy`, `deployments`, `cancel` and `rollback`: queue a deployment and follow
//! it (its build log live, then its timeline: steps with the time each took, ending with the
//! service's URLs), list and show deployments, and print a deployment's build log
//! (`deployments logs ID [--follow]`).

use std::io::Write;
use std::time::Duration;

use api::DeploymentState;
use serde_json::{Value, json};

use crate::commands::{Context, str_of};
use crate::output::Printer;
use crate::resolve::ServiceArgs;
use crate::{ApiClient, CliError, exit};

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
    if !p.json {
        live_build_log(ctx.api, &id, p).await?;
    }
    follow(ctx.api, &id, p).await
}

/// Prints the build log as it is written until the build is over. A control plane without a
/// build log store (503) shows none; the timeline follows either way.
async fn live_build_log(
    api: &ApiClient,
    id: &str,
    p: &mut Printer<'_, impl Write>,
) -> Result<(), CliError> {
    let mut last_step = String::new();
    match api
        .events(&format!("/deployments/{id}/build-logs?follow=true"), |l| {
            if is_end(&l) {
                return false;
            }
            build_line(&l, &mut last_step, p);
            true
        })
        .await
    {
        Err(CliError::Api { status: 503, .. }) => Ok(()),
        other => other,
    }
}

/// The `end` event of a build log follow (`{"state": ...}`), not a line.
fn is_end(event: &Value) -> bool {
    event.get("line_number").is_none() && event.get("state").is_some()
}

/// One build log line for people: the step's name when it changes, then the line indented;
/// with `--json`, the line's object on one line.
fn build_line(l: &Value, last_step: &mut String, p: &mut Printer<'_, impl Write>) {
    if p.json {
        p.compact(l);
        return;
    }
    let step = str_of(l, "step");
    if step != last_step {
        p.line(p.bold(&format!("==> {step}")));
        *last_step = step.to_owned();
    }
    p.line(format!("    {}", str_of(l, "line")));
}

/// `stackpad deployments logs ID [--follow]`: the whole build log, oldest line first; with
/// `--follow`, then the lines as they are written until the build is over, and then the
/// deployment's end (exit 5 unless it ends ready).
pub async fn build_logs(
    ctx: &Context<'_>,
    id: &str,
    follow_it: bool,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let mut after = 0u64;
    let mut last_step = String::new();
    loop {
        let page: Value = ctx
            .api
            .get(&format!(
                "/deployments/{id}/build-logs?after={after}&limit=1000"
            ))
            .await?;
        let lines = page["lines"].as_array().cloned().unwrap_or_default();
        for l in &lines {
            build_line(l, &mut last_step, p);
        }
        after = lines
            .last()
            .and_then(|l| l["line_number"].as_u64())
            .unwrap_or(after);
        if page["next_cursor"].is_null() {
            break;
        }
    }
    if !follow_it {
        return Ok(exit::OK);
    }
    ctx.api
        .events(
            &format!("/deployments/{id}/build-logs?follow=true&after={after}"),
            |l| {
                if is_end(&l) {
                    return false;
                }
                build_line(&l, &mut last_step, p);
                true
            },
        )
        .await?;
    // The build is over; the deployment may still be starting its container.
    loop {
        let d: Value = ctx.api.get(&format!("/deployments/{id}")).await?;
        let state: DeploymentState = str_of(&d, "state")
            .parse()
            .map_err(|e| CliError::Http(format!("deployment {id}: {e}")))?;
        match state {
            DeploymentState::Queued | DeploymentState::Building | DeploymentState::Deploying => {
                tokio::time::sleep(Duration::from_millis(300)).await
            }
            DeploymentState::Ready => {
                p.line(format!("deployment {id} is {}", p.state(state.as_str())));
                return Ok(exit::OK);
            }
            DeploymentState::Failed | DeploymentState::Cancelled | DeploymentState::Superseded => {
                p.line(format!(
                    "deployment {id} {}: {}",
                    p.state(state.as_str()),
                    str_of(&d, "failure_reason")
                ));
                return Ok(exit::DEPLOYMENT_FAILED);
            }
        }
    }
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
    deployment_list(&items, p);
    p.object(&json!(items));
    Ok(exit::OK)
}

/// The human lines of a list of deployments: id, state, created, failure.
pub fn deployment_list(items: &[Value], p: &mut Printer<'_, impl Write>) {
    for d in items {
        let state = str_of(d, "state");
        let line = format!(
            "{}  {}{}  {}  {}",
            str_of(d, "id"),
            p.state(state),
            " ".repeat(10usize.saturating_sub(state.len())),
            str_of(d, "created_at"),
            str_of(d, "failure_reason")
        );
        p.line(line.trim_end());
    }
}

/// One deployment: its state, timeline and failure.
pub fn show_deployment(d: &Value, p: &mut Printer<'_, impl Write>) {
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

/// Prints each new step of the timeline until the deployment ends (with `--json`, only the
/// deployment as it ended); `exit::DEPLOYMENT_FAILED` unless it ends ready.
pub(crate) async fn follow(
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
        let state: DeploymentState = str_of(&d, "state")
            .parse()
            .map_err(|e| CliError::Http(format!("deployment {id}: {e}")))?;
        match state {
            DeploymentState::Ready => {
                p.line(format!("deployment {id} is {}", p.state(state.as_str())));
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
            DeploymentState::Failed | DeploymentState::Cancelled | DeploymentState::Superseded => {
                p.line(format!(
                    "deployment {id} {}: {}",
                    p.state(state.as_str()),
                    str_of(&d, "failure_reason")
                ));
                p.object(&d);
                return Ok(exit::DEPLOYMENT_FAILED);
            }
            DeploymentState::Queued | DeploymentState::Building | DeploymentState::Deploying => {
                tokio::time::sleep(Duration::from_millis(300)).await
            }
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
