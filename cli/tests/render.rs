//! The human rendering of lists, objects and timelines, with fixed ids and times, compared
//! with the checked-in `tests/render.txt` (a change shows in review; `UPDATE_SNAPSHOTS=1
//! cargo test -p stackpad-cli --test render` rewrites it). Colours off, as without a terminal.

use std::collections::BTreeSet;

use cli::output::Printer;
use cli::render;
use detect::{RepoSnapshot, detect};
use serde_json::{Value, json};

const P1: &str = "11111111-1111-4111-8111-111111111111";
const E1: &str = "22222222-2222-4222-8222-222222222222";
const S1: &str = "33333333-3333-4333-8333-333333333333";
const S2: &str = "33333333-3333-4333-8333-333333333334";
const D1: &str = "44444444-4444-4444-8444-444444444441";
const D2: &str = "44444444-4444-4444-8444-444444444442";
const T1: &str = "55555555-5555-4555-8555-555555555551";
const T2: &str = "55555555-5555-4555-8555-555555555552";
const M1: &str = "66666666-6666-4666-8666-666666666661";

fn printed(f: impl FnOnce(&mut Printer<'_, Vec<u8>>)) -> String {
    let mut buf = Vec::new();
    let mut p = Printer::new(&mut buf, false, false);
    f(&mut p);
    String::from_utf8(buf).unwrap()
}

fn lines(l: Vec<String>) -> String {
    l.into_iter().map(|l| format!("{l}\n")).collect()
}

fn web() -> Value {
    json!({
        "id": S1, "project_id": P1, "environment_id": E1, "name": "web", "kind": "web",
        "image": null, "git_url": "https://git.example/acme/shop", "git_subdirectory": "apps/web",
        "engine": null, "port": 3000, "replicas": 2,
        "resources": { "cpu_millis": 500, "memory_bytes": 536870912u64 },
        "health_check": { "path": "/healthz", "interval_ms": 1000, "deadline_ms": 60000 },
        "volumes": [], "hosts": ["web-shop-acme.apps.example"],
        "env": { "MODE": { "value": "prod", "secret": false }, "KEY": { "value": null, "secret": true } },
    })
}

fn db() -> Value {
    json!({
        "id": S2, "project_id": P1, "environment_id": E1, "name": "db", "kind": "database",
        "image": "postgres:16", "git_url": null, "git_subdirectory": "", "engine": "postgres",
        "port": 5432, "replicas": 1, "resources": { "cpu_millis": 1000, "memory_bytes": 0 },
        "health_check": { "exec": ["pg_isready", "-U", "postgres"], "interval_ms": 2000 },
        "volumes": [{ "name": "data", "mount_path": "/var/lib/postgresql/data", "size_bytes": 10737418240u64 }],
        "hosts": [], "internal_host": "db.production.internal", "env": {},
    })
}

fn deployments() -> Vec<Value> {
    vec![
        json!({ "id": D2, "state": "failed", "created_at": "2026-12-06T18:05:00Z",
                "image": null, "failure_reason": "health check failed: GET /healthz answered 500",
                "timeline": [
                    { "phase": "queued", "detail": "", "at": "2026-12-06T18:05:00.000Z" },
                    { "phase": "building", "detail": "build-1", "at": "2026-12-06T18:05:00.400Z" },
                    { "phase": "starting", "detail": "n1", "at": "2026-12-06T18:05:31.900Z" },
                    { "phase": "failed", "detail": "", "at": "2026-12-06T18:06:32.000Z" }
                ] }),
        json!({ "id": D1, "state": "ready", "created_at": "2026-12-06T18:00:00Z",
                "image": "registry.example/shop:v1", "failure_reason": null,
                "timeline": [
                    { "phase": "queued", "detail": "", "at": "2026-12-06T18:00:00.000Z" },
                    { "phase": "starting", "detail": "n1", "at": "2026-12-06T18:00:01.250Z" },
                    { "phase": "switching", "detail": "", "at": "2026-12-06T18:00:02.000Z" },
                    { "phase": "ready", "detail": "", "at": "2026-12-06T18:00:03.007Z" }
                ] }),
    ]
}

fn rendered() -> String {
    let mut text = String::new();
    let mut section = |title: &str, body: String| {
        text.push_str(&format!("=== {title}\n{body}"));
    };
    section(
        "services list",
        lines(render::services_table(&[web(), db()])),
    );
    section(
        "services show (web)",
        lines(render::describe_service(&web(), "shop/production/web")),
    );
    section(
        "services show (managed database)",
        lines(render::describe_service(&db(), "shop/production/db")),
    );
    let ds = deployments();
    section("deployments", printed(|p| render::deployment_list(&ds, p)));
    section(
        "deployments ID (ready)",
        printed(|p| render::show_deployment(&ds[1], p)),
    );
    section(
        "deployments ID (failed)",
        printed(|p| render::show_deployment(&ds[0], p)),
    );
    let tokens = [
        json!({ "id": T1, "name": "initial", "role": "owner", "created_at": "2026-12-01T09:00:00Z",
                "expires_at": null, "last_used_at": "2026-12-06T18:00:00Z", "expired": false }),
        json!({ "id": T2, "name": "ci", "role": "deployer", "created_at": "2026-12-02T10:30:00Z",
                "expires_at": "2027-01-01T00:00:00Z", "last_used_at": null, "expired": false }),
        json!({ "id": T2, "name": "old-ci", "role": "read_only", "created_at": "2026-11-02T10:30:00Z",
                "expires_at": "2026-12-01T00:00:00Z", "last_used_at": null, "expired": true }),
    ];
    section("tokens list", lines(render::tokens_table(&tokens)));
    let members = [
        json!({ "id": M1, "email": "ada@shop.example", "role": "developer",
                           "created_at": "2026-12-03T08:00:00Z" }),
    ];
    section("members list", lines(render::members_table(&members)));
    let backups = [
        json!({ "id": T1, "state": "completed", "verification": "verified", "trigger": "pre_restore",
                "size_bytes": 5_400_000, "started_at": "2026-12-06T18:00:00Z", "duration_ms": 2_350,
                "error": null }),
        json!({ "id": T2, "state": "failed", "verification": "pending", "trigger": "scheduled",
                "size_bytes": null, "started_at": "2026-12-06T03:00:00Z", "duration_ms": null,
                "error": "service db has no running container" }),
    ];
    section("backups list", lines(render::backups_table(&backups)));
    let previews = json!({ "enabled": true, "max_previews": 5, "allow_forks": false,
        "idle_seconds": 900, "items": [
            { "id": E1, "name": "pr-7", "branch": "feature/x", "preview": { "number": 7,
              "head_sha": "abcdef1234567890abcdef1234567890abcdef12", "status": "ready",
              "urls": ["https://pr-7-web-shop-acme.apps.example"], "sleeping_since": null } },
            { "id": E1, "name": "pr-12", "branch": "fix/y", "preview": { "number": 12,
              "head_sha": "1234567890abcdef1234567890abcdef12345678", "status": "deploying",
              "urls": [], "sleeping_since": "2026-12-06T18:00:00Z" } },
        ] });
    section(
        "previews list",
        lines(render::previews_lines(&previews, Some("production"))),
    );
    let env = json!({ "id": E1, "name": "staging", "branch": "develop",
        "env": { "MODE": { "value": "staging", "secret": false }, "API_KEY": { "value": null, "secret": true } } });
    section(
        "environments show",
        printed(|p| render::describe_environment(&env, p)),
    );
    let domains = [
        json!({ "domain": "www.shop.example", "status": "active" }),
        json!({ "domain": "shop.example", "status": "pending",
                "last_error": "no CNAME record for shop.example" }),
    ];
    section(
        "domains list",
        domains
            .iter()
            .map(|d| format!("{}\n", render::domain_line(d)))
            .collect(),
    );
    let repo = RepoSnapshot {
        dir: "/src/shop".into(),
        files: BTreeSet::from(["package.json".to_owned(), "pnpm-lock.yaml".to_owned(), "next.config.mjs".to_owned()]),
        package_json: Some(r#"{ "dependencies": { "next": "15.0.0" }, "scripts": { "build": "next build" }, "engines": { "node": ">=20" } }"#.into()),
        next_config: Some("export default { output: 'standalone' }".into()),
        ..RepoSnapshot::default()
    };
    section(
        "init (detection)",
        lines(render::detection_lines(&detect(&repo).unwrap())),
    );
    text
}

#[test]
fn human_rendering_matches_the_checked_in_snapshot() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/render.txt");
    let now = rendered();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let then = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    if now != then {
        let first = now
            .lines()
            .zip(then.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(now.lines().count().min(then.lines().count()));
        panic!(
            "rendering changed from {} at line {}: now {:?}, was {:?} (UPDATE_SNAPSHOTS=1 \
             rewrites it)",
            path.display(),
            first + 1,
            now.lines().nth(first),
            then.lines().nth(first)
        );
    }
}
