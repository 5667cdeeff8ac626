//! `stackpad backups list|create|restore`: a managed database's or cache's backups (#14's API:
//! `GET|POST /services/{id}/backups`, `POST /services/{id}/backups/{backup}/restore`,
//! `POST /services/{id}/backups/restore` (PostgreSQL to a point in time), `GET /restores/{id}`).
//! The service is named as everywhere; a backup by `latest` (the newest completed one), its id,
//! or the first characters of its id as the list shows them; a point in time by `--to`. Create
//! and restore follow their timeline until they end (exit 5 unless they succeed).

use std::io::Write;
use std::time::Duration;

use api::{BackupState, RestoreState};
use clap::Subcommand;
use serde_json::{Value, json};

use super::commands::{Context, confirm_to, str_of};
use super::output::{Printer, table};
use super::resolve::{ServiceArgs, ServiceRef, is_id};
use super::{CliError, exit};

/// How many characters of a backup's id the list shows (and a prefix must at least have).
const SHORT_ID: usize = 8;

#[derive(Debug, Subcommand)]
pub enum Backups {
    /// A managed service's backups, newest first: id, state, verification, why, size, when.
    #[command(
        after_help = "Examples:\n  stackpad backups list --service shop/db\n  \
                      stackpad backups list --json | jq -r '.[0].id'"
    )]
    List {
        #[command(flatten)]
        target: ServiceArgs,
    },
    /// Take a backup now and follow it until it is stored and verified (exit 5 if it fails).
    #[command(
        after_help = "Examples:\n  stackpad backups create --service shop/db\n  \
                      stackpad backups create --no-wait"
    )]
    Create {
        #[command(flatten)]
        target: ServiceArgs,
        /// Return once started instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Restore a backup, or a PostgreSQL service as it was at a time (--to), into its service
    /// (whose current data is backed up first) or, with --into, into another managed service
    /// of the same engine; follows it until it ends (exit 5 unless it completes). Asks to type
    /// the target service's name unless --yes.
    #[command(
        after_help = "Examples:\n  stackpad backups restore latest --service shop/db\n  \
                      stackpad backups restore 1b2c3d4e --service shop/db --into db-copy --yes\n  \
                      stackpad backups restore --to 2026-12-07T09:30:00Z --service shop/db --into db-copy"
    )]
    Restore {
        /// The backup: `latest` (the newest completed), its id or its id's first 8 or more
        /// characters (`stackpad backups list` shows them), e.g. `latest`.
        #[arg(required_unless_present = "to", conflicts_with = "to")]
        backup: Option<String>,
        /// Instead of a backup, a time (RFC 3339) inside the service's recovery window
        /// (`stackpad backups list` shows it; PostgreSQL only), e.g.
        /// `--to 2026-12-07T09:30:00Z`.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        #[command(flatten)]
        target: ServiceArgs,
        /// Restore into this managed service (same engine; by name or id, in the backup's
        /// project unless a path names another) instead of the backup's own, e.g.
        /// `--into db-copy`.
        #[arg(long, value_name = "SERVICE")]
        into: Option<String>,
        /// Do not ask (for scripts; without a terminal --yes is required).
        #[arg(long)]
        yes: bool,
        /// Return once started instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
}

/// A time as RFC 3339 (`2026-12-07T09:30:00Z`, `2026-12-07T10:30:00+01:00`).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-12-07T09:30:00Z ({e})"))
}

/// The first characters of an id, as the list shows it.
fn short(id: &str) -> &str {
    id.get(..SHORT_ID).unwrap_or(id)
}

fn size(bytes: Option<i64>) -> String {
    match bytes {
        None => "-".to_owned(),
        Some(b) if b < 1024 => format!("{b} B"),
        Some(b) if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) if b < 1024 * 1024 * 1024 => format!("{:.1} MiB", b as f64 / 1048576.0),
        Some(b) => format!("{:.1} GiB", b as f64 / 1073741824.0),
    }
}

/// The human table of backups: short id, state, verification, trigger, size, started, took.
pub fn backups_table(items: &[Value]) -> Vec<String> {
    let rows = items
        .iter()
        .map(|b| {
            let state = match b["error"].as_str() {
                Some(e) if !e.is_empty() => format!("{}: {e}", str_of(b, "state")),
                _ => str_of(b, "state").to_owned(),
            };
            vec![
                short(str_of(b, "id")).to_owned(),
                state,
                str_of(b, "verification").to_owned(),
                str_of(b, "trigger").to_owned(),
                size(b["size_bytes"].as_i64()),
                format!("started {}", str_of(b, "started_at")),
                match b["duration_ms"].as_i64() {
                    Some(ms) => format!("took {}.{:01}s", ms / 1000, ms % 1000 / 100),
                    None => "-".to_owned(),
                },
            ]
        })
        .collect::<Vec<_>>();
    table(&rows)
}

/// The backup `given` names among `items` (newest first): `latest`, an id, or an id prefix.
pub fn pick_backup<'v>(given: &str, items: &'v [Value]) -> Result<&'v Value, CliError> {
    let not_found = |suggestions: Vec<String>| CliError::NotFound {
        what: "backup",
        name: given.to_owned(),
        listed: true,
        suggestions,
    };
    let completed = |b: &&Value| b["state"] == BackupState::Completed.as_str();
    if given == "latest" {
        return items
            .iter()
            .find(completed)
            .ok_or_else(|| not_found(vec![]));
    }
    let given_lower = given.to_ascii_lowercase();
    if is_id(given) {
        return items
            .iter()
            .find(|b| str_of(b, "id") == given_lower)
            .ok_or_else(|| not_found(vec![]));
    }
    if given.len() < SHORT_ID || !given.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(CliError::Usage(format!(
            "backup {given:?}: name it `latest`, by its id, or by at least its first \
             {SHORT_ID} characters (`stackpad backups list` shows them)"
        )));
    }
    let matches: Vec<&Value> = items
        .iter()
        .filter(|b| str_of(b, "id").starts_with(&given_lower))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(not_found(
            items
                .iter()
                .take(5)
                .map(|b| short(str_of(b, "id")).to_owned())
                .collect(),
        )),
        many => Err(CliError::Ambiguous {
            what: "backup",
            name: given.to_owned(),
            candidates: many.iter().map(|b| str_of(b, "id").to_owned()).collect(),
        }),
    }
}

/// `GET /services/{id}/backups`: the backups (`items`) and the recovery window.
async fn list_answer(ctx: &Context<'_>, service: &ServiceRef) -> Result<Value, CliError> {
    ctx.api
        .get(&format!("/services/{}/backups", service.service.id))
        .await
}

async fn list_of(ctx: &Context<'_>, service: &ServiceRef) -> Result<Vec<Value>, CliError> {
    let v = list_answer(ctx, service).await?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

/// Prints the timeline's events from `shown` on; returns how many there are now.
fn print_events(v: &Value, shown: usize, p: &mut Printer<'_, impl Write>) -> usize {
    let events = v["events"].as_array().cloned().unwrap_or_default();
    for e in events.iter().skip(shown) {
        let detail = str_of(e, "detail");
        let mut line = format!("  {}  {}", str_of(e, "at"), str_of(e, "step"));
        if !detail.is_empty() {
            line.push_str(": ");
            line.push_str(detail);
        }
        p.line(line);
    }
    shown.max(events.len())
}

const POLL: Duration = Duration::from_millis(300);

/// Follows a backup until it is stored and its verification is known (or it failed).
async fn follow_backup(
    ctx: &Context<'_>,
    path: &str,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let mut shown = 0;
    let mut said_completed = false;
    loop {
        let b: Value = ctx.api.get(path).await?;
        shown = print_events(&b, shown, p);
        let id = short(str_of(&b, "id")).to_owned();
        let state: BackupState = str_of(&b, "state")
            .parse()
            .map_err(|e| CliError::Http(format!("backup {id}: {e}")))?;
        match state {
            BackupState::Failed => {
                p.line(format!(
                    "backup {id} {}: {}",
                    p.state("failed"),
                    str_of(&b, "error")
                ));
                p.object(&b);
                return Ok(exit::DEPLOYMENT_FAILED);
            }
            BackupState::Completed => {
                if !said_completed {
                    p.line(format!(
                        "backup {id} stored ({})",
                        size(b["size_bytes"].as_i64())
                    ));
                    said_completed = true;
                }
                match str_of(&b, "verification") {
                    "pending" => {}
                    "verified" => {
                        p.line(format!(
                            "backup {id} verified: {}",
                            str_of(&b, "verification_detail")
                        ));
                        p.object(&b);
                        return Ok(exit::OK);
                    }
                    other => {
                        p.line(format!(
                            "backup {id} verification {other}: {}",
                            str_of(&b, "verification_detail")
                        ));
                        p.object(&b);
                        return Ok(exit::DEPLOYMENT_FAILED);
                    }
                }
            }
            BackupState::Running => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Follows a restore until it ends.
async fn follow_restore(
    ctx: &Context<'_>,
    id: &str,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let mut shown = 0;
    loop {
        let r: Value = ctx.api.get(&format!("/restores/{id}")).await?;
        shown = print_events(&r, shown, p);
        let state: RestoreState = str_of(&r, "state")
            .parse()
            .map_err(|e| CliError::Http(format!("restore {id}: {e}")))?;
        match state {
            RestoreState::Running => tokio::time::sleep(POLL).await,
            RestoreState::Completed => {
                p.line(format!("restore {id} {}", p.state("completed")));
                p.object(&r);
                return Ok(exit::OK);
            }
            RestoreState::Failed => {
                p.line(format!(
                    "restore {id} {}: {}",
                    p.state("failed"),
                    str_of(&r, "error")
                ));
                p.object(&r);
                return Ok(exit::DEPLOYMENT_FAILED);
            }
        }
    }
}

pub async fn run(
    ctx: &Context<'_>,
    cmd: Backups,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    match cmd {
        Backups::List { target } => {
            let service = ctx.names.service(&target).await?;
            let v = list_answer(ctx, &service).await?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                p.line(format!("no backups of {}", service.path()));
            }
            for l in backups_table(&items) {
                p.line(l);
            }
            let window = &v["recovery_window"];
            if let (Some(from), Some(until)) = (window["from"].as_str(), window["until"].as_str()) {
                p.line(format!(
                    "restorable to any time from {from} to {until} (`backups restore --to`)"
                ));
            }
            p.object(&json!(items));
            Ok(exit::OK)
        }
        Backups::Create { target, no_wait } => {
            let service = ctx.names.service(&target).await?;
            let b = ctx
                .api
                .post(
                    &format!("/services/{}/backups", service.service.id),
                    &json!({}),
                )
                .await?;
            let id = str_of(&b, "id").to_owned();
            p.line(format!(
                "backup {} of {} started ({id})",
                short(&id),
                service.path()
            ));
            if no_wait {
                p.object(&b);
                return Ok(exit::OK);
            }
            follow_backup(
                ctx,
                &format!("/services/{}/backups/{id}", service.service.id),
                p,
            )
            .await
        }
        Backups::Restore {
            backup,
            to,
            target,
            into,
            yes,
            no_wait,
        } => {
            let service = ctx.names.service(&target).await?;
            // What is restored: a backup (its path and name) or the service at a time.
            let (path, source) = match (&backup, to) {
                (Some(backup), _) => {
                    let items = list_of(ctx, &service).await?;
                    let id = str_of(pick_backup(backup, &items)?, "id").to_owned();
                    (
                        format!("/services/{}/backups/{id}/restore", service.service.id),
                        format!("backup {}", short(&id)),
                    )
                }
                (None, Some(to)) => (
                    format!("/services/{}/backups/restore", service.service.id),
                    format!("{} as of {}", service.path(), to.to_rfc3339()),
                ),
                (None, None) => {
                    return Err(CliError::Usage(
                        "name a backup (e.g. `latest`) or a time with --to".into(),
                    ));
                }
            };
            let into = match into {
                Some(given) => {
                    // A bare name is looked for in the backup's project.
                    let project = (!given.contains('/') && !is_id(&given))
                        .then(|| service.project.id.clone());
                    Some(
                        ctx.names
                            .service(&ServiceArgs {
                                service: Some(given),
                                project,
                                environment: None,
                            })
                            .await?,
                    )
                }
                None => None,
            };
            let dest = into.as_ref().unwrap_or(&service);
            let of = if backup.is_some() {
                format!(" of {}", service.path())
            } else {
                String::new()
            };
            let what = match &into {
                Some(_) => format!("{source}{of} into {} (its data is replaced)", dest.path()),
                None => format!(
                    "{source} into {} (its current data is backed up first, then replaced)",
                    service.path()
                ),
            };
            confirm_to(ctx, yes, "restore", &what, &dest.service.name)?;
            let mut body = json!({});
            if let Some(to) = to {
                body["to_time"] = json!(to.to_rfc3339());
            }
            if let Some(i) = &into {
                body["into_service"] = json!(i.service.id);
            }
            let r = ctx.api.post(&path, &body).await?;
            let rid = str_of(&r, "id").to_owned();
            p.line(format!("restoring {what}: restore {rid}"));
            if no_wait {
                p.object(&r);
                return Ok(exit::OK);
            }
            follow_restore(ctx, &rid, p).await
        }
    }
}
