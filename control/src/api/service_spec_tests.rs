use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::api::error::ApiError;

fn create(body: serde_json::Value) -> ApiResult<ServiceSpec> {
    let req: CreateService = crate::api::extract::parse_json(body.to_string().as_bytes())?;
    req.parse()
}

fn field_of(e: ApiError) -> String {
    match e {
        ApiError::Invalid { field, .. } => field,
        other => panic!("not a field error: {other}"),
    }
}

#[test]
fn defaults_give_every_container_a_cpu_limit() {
    let spec = create(json!({ "name": "web", "image": "127.0.0.1:5000/o/app:v1" })).unwrap();
    assert_eq!(spec.resources.cpu_millis, DEFAULT_CPU_MILLIS);
    assert_eq!(spec.resources.memory_bytes, 0, "the node's default");
    assert_eq!(
        (spec.port, spec.replicas, spec.kind.as_str()),
        (8080, 1, "web")
    );
    let new = spec.into_new_service(Uuid::nil());
    assert_eq!(
        new.image.map(|i| i.to_string()).as_deref(),
        Some("127.0.0.1:5000/o/app:v1")
    );
}

#[test]
fn local_sources_are_stored_as_file_urls() {
    let spec = create(
        json!({ "name": "web", "git": { "url": "/srv/app.git", "subdirectory": "apps/web/" } }),
    )
    .unwrap();
    let new = spec.into_new_service(Uuid::nil());
    let url = new.git_url.as_ref().map(crate::store::source_text);
    assert_eq!(url.as_deref(), Some("file:///srv/app.git"));
    assert_eq!(new.git_subdirectory.as_str(), "apps/web");
}

#[test]
fn every_refused_field_is_named() {
    let cases = [
        (json!({ "name": "web", "image": "--help" }), "image"),
        (
            json!({ "name": "web", "git": { "url": "git://h.example.com/r" } }),
            "git.url",
        ),
        (
            json!({ "name": "web", "git": { "url": "https://h.example.com/r", "subdirectory": "../../etc" } }),
            "git.subdirectory",
        ),
        (
            json!({ "name": "web", "image": "i", "health_check": { "path": "/a\r\nb" } }),
            "health_check.path",
        ),
        (
            json!({ "name": "web", "image": "i", "health_check": { "interval_ms": 0 } }),
            "health_check.interval_ms",
        ),
        (
            json!({ "name": "web", "image": "i", "health_check": { "deadline_ms": 99_999_999u64 } }),
            "health_check.deadline_ms",
        ),
        (
            json!({ "name": "web", "image": "i", "resources": { "cpu_millis": 4e9 } }),
            "resources.cpu_millis",
        ),
        (
            json!({ "name": "web", "image": "i", "resources": { "cpu_millis": 9 } }),
            "resources.cpu_millis",
        ),
        (
            json!({ "name": "web", "image": "i", "resources": { "memory_bytes": 1 } }),
            "resources.memory_bytes",
        ),
        (
            json!({ "name": "web", "image": "i", "build": { "timeout_seconds": 0 } }),
            "build.timeout_seconds",
        ),
        (
            json!({ "name": "web", "image": "i", "build": { "build_args": { "-X": "1" } } }),
            "build.build_args",
        ),
        (
            json!({ "name": "web", "image": "i", "replicas": 21 }),
            "replicas",
        ),
        (
            json!({ "name": "web", "image": "i", "port": 65536 }),
            "port",
        ),
        (
            json!({ "name": "web", "image": "i", "args": ["x".repeat(5000)] }),
            "args[0]",
        ),
        (
            json!({ "name": "web", "image": "i", "command": vec!["x"; 65] }),
            "command",
        ),
        (
            json!({ "name": "web", "image": "i", "env": { "A": "1" }, "secrets": { "A": "2" } }),
            "secrets",
        ),
        (
            json!({ "name": "web", "image": "i", "webhook_secret": "s".repeat(2000) }),
            "webhook_secret",
        ),
    ];
    for (body, field) in cases {
        let err = create(body.clone()).expect_err(&body.to_string());
        assert_eq!(field_of(err), field, "{body}");
    }
}

#[test]
fn updates_are_parsed_the_same_way() {
    let patch = |body: serde_json::Value| -> ApiResult<ServicePatch> {
        let req: UpdateService = crate::api::extract::parse_json(body.to_string().as_bytes())?;
        req.parse()
    };
    assert_eq!(
        field_of(patch(json!({ "image": "--help" })).unwrap_err()),
        "image"
    );
    assert_eq!(
        field_of(patch(json!({ "resources": { "memory_bytes": 1 } })).unwrap_err()),
        "resources.memory_bytes"
    );
    let p = patch(json!({ "resources": { "memory_bytes": 64u64 << 20 } })).unwrap();
    assert_eq!(
        p.resources,
        Some(Resources {
            cpu_millis: DEFAULT_CPU_MILLIS,
            memory_bytes: 64 << 20
        })
    );
}

proptest! {
    /// Whatever a body holds, a refusal is a 422 naming a field (or a 400 for JSON syntax),
    /// and its message is bounded.
    #[test]
    fn every_refusal_names_its_field(
        name in "\\PC{0,50}",
        image in "\\PC{0,50}",
        path in "\\PC{0,20}",
        cpu in any::<u64>(),
        memory in any::<u64>(),
        port in any::<u32>(),
    ) {
        let body = json!({
            "name": name, "image": image,
            "health_check": { "path": path },
            "resources": { "cpu_millis": cpu, "memory_bytes": memory },
            "port": port,
        });
        match create(body) {
            Ok(spec) => {
                prop_assert!(CPU_MILLIS.contains(&u64::from(spec.resources.cpu_millis)));
                prop_assert!(MEMORY_BYTES.contains(&spec.resources.memory_bytes));
                prop_assert!(!image.starts_with('-'));
            }
            Err(ApiError::Invalid { field, message }) => {
                prop_assert!(
                    ["name", "image", "health_check.path", "resources.cpu_millis",
                     "resources.memory_bytes", "port"].contains(&field.as_str()),
                    "{field}: {message}"
                );
                prop_assert!(message.len() < 400, "{}", message.len());
            }
            Err(other) => prop_assert!(false, "{other}"),
        }
    }
}
