//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand and kept in sync with
//! [`super::ROUTES`] by a test.

use ::api::{MemberRole, NodeRole, ServiceKind, TokenRole};
use axum::Json;
use serde_json::{Value, json};

use super::service_spec as spec;

pub async fn serve() -> Json<Value> {
    Json(document())
}

/// The spellings of a closed set (the `api` crate's), for a schema's `enum`.
fn spellings<T: Copy + std::fmt::Display>(all: &[T]) -> Vec<String> {
    all.iter().map(T::to_string).collect()
}

fn op(summary: &str, body: Option<&str>, ok: &str) -> Value {
    let mut v = json!({
        "summary": summary,
        "responses": {
            ok: { "description": "success" },
            "401": { "$ref": "#/components/responses/Error" },
            "404": { "$ref": "#/components/responses/Error" },
            "422": { "$ref": "#/components/responses/Error" }
        }
    });
    if let Some(schema) = body {
        v["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
        });
    }
    v
}

/// An integer schema bounded by `range`, with its default.
fn int<T: Into<u64> + Copy>(range: std::ops::RangeInclusive<T>, default: Option<u64>) -> Value {
    let mut v = json!({ "type": "integer", "minimum": (*range.start()).into(), "maximum": (*range.end()).into() });
    if let Some(d) = default {
        v["default"] = json!(d);
    }
    v
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": required, "properties": props })
}

pub fn document() -> Value {
    let s = json!({"type": "string"});
    let i = json!({"type": "integer"});
    // Most rights first, as the document always listed them.
    let token_roles: Vec<String> = spellings(TokenRole::ALL).into_iter().rev().collect();
    let uuid = json!({"type": "string", "format": "uuid"});
    let name =
        json!({"type": "string", "pattern": "^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$", "maxLength": 40});
    let volume = obj(
        &["name", "mount_path", "size_bytes"],
        json!({
            "name": name,
            "mount_path": { "type": "string", "description": "absolute plain path, not under /proc, /sys, /dev or /etc/hosts" },
            "size_bytes": { "type": "integer", "minimum": spec::VOLUME_SIZE_BYTES.start(), "maximum": spec::VOLUME_SIZE_BYTES.end() }
        }),
    );
    let git_ref = json!({"type": "string", "maxLength": tenant::git::MAX_REF_LEN,
        "description": "a branch or tag by git's check-ref-format rules; no part may start with '-'"});
    let image = json!({"type": "string", "maxLength": 512,
        "description": "an OCI image reference: [registry[:port]/]path[:tag][@sha256:hex], lower-case path, never starting with '-'; in the platform's registry only the organization's own builds (<registry>/<organization id>/...), any other registry must be a public host (422 on image otherwise, also when a stored image is deployed or rolled back to)"});
    let git = obj(
        &["url"],
        json!({
            "url": { "type": "string", "maxLength": tenant::source::MAX_URL_LEN,
                "description": "https://host[:port]/path on a host resolving to public addresses only; file:// and absolute paths only for the organizations named in the operator's local_sources_organizations" },
            "subdirectory": { "type": "string", "maxLength": 255, "description": "a relative folder inside the repository, without '..'" }
        }),
    );
    let build = obj(
        &[],
        json!({
            "build_args": { "type": "object", "maxProperties": spec::MAX_BUILD_ARGS,
                "additionalProperties": { "type": "string", "maxLength": spec::MAX_ENV_VALUE },
                "description": "passed to the Dockerfile as build arguments (ARG); visible in the image's history: never put a secret here" },
            "secrets": { "type": "array", "maxItems": spec::MAX_BUILD_ARGS, "items": { "type": "string" },
                "description": "names of the service's secrets the build gets as BuildKit secrets (RUN --mount=type=secret,id=NAME reads /run/secrets/NAME): never in the image, its history or the build log" },
            "timeout_seconds": { "type": "integer", "minimum": spec::BUILD_TIMEOUT_SECONDS.start(), "maximum": spec::BUILD_TIMEOUT_SECONDS.end(),
                "description": "the build time limit; default: the operator's build_timeout_s. A build that reaches it is cancelled and the deployment fails naming the limit" }
        }),
    );
    let resources = obj(
        &[],
        json!({
            "cpu_millis": int(spec::CPU_MILLIS, Some(u64::from(spec::DEFAULT_CPU_MILLIS))),
            "memory_bytes": { "type": "integer", "minimum": spec::MEMORY_BYTES.start(), "maximum": spec::MEMORY_BYTES.end(),
                "description": "default: the node's (256 MiB)" }
        }),
    );
    let health = obj(
        &[],
        json!({
            "path": { "type": "string", "pattern": "^/[\\x21-\\x7e]*$", "maxLength": 1024,
                "description": "HTTP GET path: starts with '/', printable ASCII without spaces; absent = TCP connect" },
            "interval_ms": int(spec::HEALTH_INTERVAL_MS, None),
            "deadline_ms": int(spec::HEALTH_DEADLINE_MS, None)
        }),
    );
    let argv = json!({ "type": "array", "maxItems": spec::MAX_ARGV_ITEMS,
        "items": { "type": "string", "maxLength": spec::MAX_ARGV_ITEM } });
    let env = json!({ "type": "object", "maxProperties": spec::MAX_ENV_VARS,
        "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": super::validate::MAX_ENV_NAME },
        "additionalProperties": { "type": "string", "maxLength": spec::MAX_ENV_VALUE } });
    let webhook_answers = json!({
        "202": { "description": "queued or ignored" },
        "200": { "description": "duplicate delivery id or ping" },
        "401": { "description": "bad or missing signature, unknown service, or the service has no usable secret (not audited)" },
        "409": { "description": "the same body was already delivered under another delivery id within 24 h (a replay)" },
        "422": { "description": "the push names a ref or commit that is not valid (field ref or after)" },
        "413": { "description": "a body over 1 MiB (counted against the source like a bad signature)" },
        "429": { "description": "too many unauthenticated calls from this address (checked before the body is read) or, once a signature failed, for this service (a correctly signed call is never refused for the service); see Retry-After" }
    });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Stackpad control plane", "version": env!("CARGO_PKG_VERSION") },
        "security": [{ "token": [] }],
        "paths": {
            "/openapi.json": { "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI" } } } },
            "/session": {
                "get": { "summary": "The dashboard session of the cookie: its kind (organization or operator), organization, role, expiry and CSRF token (401 without a live session)", "security": [], "responses": { "200": { "description": "the session" }, "401": { "$ref": "#/components/responses/Error" } } },
                "post": { "summary": "Sign in to the dashboard: exchanges an API token (or the operator token) for a session cookie (HttpOnly, Secure, SameSite=Strict; at most 12 h and never past the token's expiry; revoking the token ends it). Calls with the cookie act as that token; every change also needs the session's CSRF token in X-CSRF-Token (403 without it)", "security": [],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SignIn" } } } },
                    "responses": { "201": { "description": "the session, and its cookie" }, "401": { "$ref": "#/components/responses/Error" } } },
                "delete": { "summary": "Sign out (needs X-CSRF-Token); the cookie is cleared", "security": [], "responses": { "204": { "description": "signed out" }, "401": { "$ref": "#/components/responses/Error" }, "403": { "$ref": "#/components/responses/Error" } } }
            },
            "/organizations": { "post": op("Create an organization and its first token (operator token)", Some("CreateOrganization"), "201") },
            "/organization": { "get": op("The caller's organization", None, "200") },
            "/tokens": {
                "get": op("List the organization's tokens that are not revoked (items: id, name, role, created_at, expires_at, last_used_at, expired); never a secret", None, "200"),
                "post": op("Create an API token (owner; its secret is shown once) with a role (default and at most the caller's) and an optional expiry (at most 366 days, never after the caller's)", Some("CreateToken"), "201")
            },
            "/tokens/{id}": { "delete": op("Revoke a token", None, "204") },
            "/members": {
                "get": op("List members", None, "200"),
                "post": op("Add a member", Some("AddMember"), "201")
            },
            "/members/{id}": {
                "patch": op("Give a member another role (owner); the organization's last owner cannot be demoted (409)", Some("SetMemberRole"), "200"),
                "delete": op("Remove a member; the organization's last owner stays (409)", None, "204")
            },
            "/audit": { "get": op("The last 200 mutating calls", None, "200") },
            "/projects": {
                "get": op("List projects (limit, after)", None, "200"),
                "post": op("Create a project (with a production environment on main); Idempotency-Key", Some("CreateProject"), "201")
            },
            "/projects/{id}": {
                "get": op("Get a project", None, "200"),
                "delete": op("Delete a project and everything in it: every service of every environment is taken off the proxy and the nodes first (409 while a deployment of one is on its way, 503 naming the daemon that did not answer: nothing is deleted then)", None, "204")
            },
            "/projects/{id}/environments": {
                "get": op("List environments, with their variables (secrets masked); a preview also with preview (number, head_sha, urls, status)", None, "200"),
                "post": op("Create an environment; Idempotency-Key. With from (an environment of the project, by id or name) a copy: its services with their settings, variables and secrets, and its variables, env and secrets applied over them; never custom domains, deployments or hosts. A copy queues a deployment of each of its services at once (git services the new branch; answered in deployments)", Some("CreateEnvironment"), "201")
            },
            "/projects/{id}/webhook": { "patch": op("Rotate the project's repository webhook secret (owner; one per project, for POST /webhooks/github/projects/{id}): a generated one, or the one given (32 to 256 printable ASCII characters, 8 different at least); the old one stops working at once; shown only in this answer", Some("RotateWebhookSecret"), "200") },
            "/projects/{id}/previews": {
                "get": op("The project's pull-request preview settings (enabled, template_id, max_previews, allow_forks, idle_seconds), webhook_url, has_webhook_secret, git_username, and its open previews (items: environments with preview number, head_sha, urls, status)", None, "200"),
                "put": op(&format!("Set the preview settings (owner): enabled, template (the environment previews copy, by id or name; required when enabled), max_previews (0..={}, default 5), allow_forks (default false), idle_seconds (a preview without a request that long is stopped and woken by its next request, which the proxy holds; absent = never). A pull request opened, reopened or pushed to opens or updates the environment pr-<n> (a copy of the template with fresh databases, the repository's services at the head commit); closed or merged tears it down", super::previews::MAX_PREVIEWS_LIMIT), Some("PutPreviews"), "200")
            },
            "/projects/{id}/git-credentials": {
                "put": op("Set the credentials the project's private repositories are fetched with (owner): token (HTTPS basic auth password, 8..=1024 printable characters) and username (default x-access-token). Sealed at rest, sent to the build node only inside the build request, never shown again", Some("PutGitCredentials"), "200"),
                "delete": op("Remove the project's git credentials", None, "204")
            },
            "/projects/{id}/deploy-key": {
                "get": op("The project's SSH deploy key: public_key (an OpenSSH ed25519 line whose comment names the project: add it to the repository as a read-only deploy key), fingerprint (SHA256:...), created_at, known_hosts. 404 when it has none. The private half is sealed at rest and sent only to the build node fetching an ssh:// or git@host:path repository of the project", None, "200"),
                "post": op("Make the project's deploy key (owner): a new ed25519 pair; 201 for the first, 200 for a rotation (the key before stops working at once: add the new public half to the repository)", None, "201"),
                "delete": op("Remove the project's deploy key (owner): its SSH sources can no longer be fetched", None, "204")
            },
            "/projects/{id}/deploy-key/known-hosts": {
                "put": op("Set the SSH host keys the project trusts (owner): known_hosts lines `host key-type key` (host or [host]:port), besides the build nodes' own ssh_known_hosts file; a host key found in neither fails the fetch (never accepted on first use). Empty = none", Some("PutKnownHosts"), "200")
            },
            "/projects/{id}/github-token": {
                "put": op("Set the project's GitHub token (owner; 8..=1024 printable characters, allowed to write deployments): each preview's progress is then sent to GitHub as a deployment of the pull request's head for environment pr-<n> with statuses in_progress, success (with the preview's URL), failure, and inactive once closed; a call GitHub refuses is shown on the webhook delivery (github_status) and never fails the deploy. Sealed at rest, never shown again", Some("PutGitHubToken"), "200"),
                "delete": op("Remove the project's GitHub token: statuses are no longer sent", None, "204")
            },
            "/projects/{id}/webhook-deliveries": {
                "get": op(&format!("The project's recent webhook deliveries (the newest {keep} are kept), newest first: service, delivery id, event, outcome ({}), reason (why), the HTTP status answered and the deployment queued. Query: service (an id), limit (1..={keep}, default 50)", spellings(::api::WebhookOutcome::ALL).join(", "), keep = crate::store::DELIVERY_LOG_KEEP), None, "200")
            },
            "/environments/{id}": {
                "get": op("Get an environment", None, "200"),
                "patch": op("Change an environment's branch or variables (env and secrets set those names, unset removes names; the others are kept). Its variables go to every service in it, over the service's own of the same name, from the next deployment", Some("UpdateEnvironment"), "200"),
                "delete": op("Delete an environment: every service is taken off the proxy and the nodes first, as a service delete does (409 while a deployment is on its way, and for the production environment)", None, "204")
            },
            "/projects/{id}/services": {
                "get": op("List services (limit, after)", None, "200"),
                "post": op("Create a service; Idempotency-Key. A git service given no webhook_secret gets a generated one, shown once in this answer (webhook_secret) and never again (a replay of the Idempotency-Key does not show it; rotate with PATCH /services/{id}/webhook). A given webhook_secret must be 32 to 256 printable ASCII characters with 8 different at least", Some("CreateService"), "201")
            },
            "/services/{id}": {
                "get": op("Get a service (secrets masked). down_with_node: the node ({id, name}) a service with volumes is down with, when the node it runs on was marked down (its volumes live there, so it is not moved elsewhere); null otherwise. waiting_for_room: when its replicas must move off a lost or drained node and no node up has room for its set ({node_id, cause: lost|drained, reason, since}; control places it once room frees); null otherwise. scheduling_events: its last 10 scheduling events, newest first ({step: waiting_for_room|placed_again|room_wait_ended, detail, at})", None, "200"),
                "patch": op("Change a service", Some("UpdateService"), "200"),
                "delete": op("Delete a service: its route, certificate permission and containers go first (409 while a deployment is in progress, 503 naming the daemon that did not answer; the service is then kept)", None, "204")
            },
            "/services/{id}/webhook": { "patch": op("Rotate a git service's webhook secret (owner): a generated one, or the one given (32 to 256 printable ASCII characters, 8 different at least); the old one stops working at once; the answer shows the secret, nothing shows it again", Some("RotateWebhookSecret"), "200") },
            "/services/{id}/credentials/rotate": { "post": op("Rotate a managed database's or cache's generated password (owner): sealed at once, a deployment of the engine is queued (its entrypoint applies the new password at start); services referencing its variables (`${{ db.DATABASE_URL }}`) get it on their next deploy. 409 for a service without an engine", None, "200") },
            "/services/{id}/backups": {
                "get": op("A managed service's backups, newest first (at most 200): state (running, completed, failed; only completed ones are whole), trigger, verification (pending, verified, failed) with its detail, stored size, dump size, sha256, duration", None, "200"),
                "post": op("Back the managed service up now (deployer): 202 with the running backup; the engine's consistent dump is compressed, encrypted with the organization's key and stored, then verified by a restore into a throwaway container. 409 for a service without an engine, not running, or with a backup running", None, "202")
            },
            "/services/{id}/backups/{backup}": { "get": op("One backup with its timeline (events: step, detail, at)", None, "200") },
            "/services/{id}/backups/{backup}/restore": { "post": op("Restore a completed backup (deployer): into the backup's own service (its current data is backed up first, trigger pre_restore) or, with into_service, another running managed service of the same engine, or, with new_service {name, environment_id?, resources?}, a new managed service made for it (its own credentials and volume; deployed, then restored; the source untouched); 202 with the restore (GET /restores/{id} for its progress; new_service answers the new service and its first deployment); 409 for a base backup (restored to a time)", Some("RestoreBackup"), "202") },
            "/services/{id}/backups/restore": { "post": op("Restore a managed PostgreSQL to a point in time (deployer): to_time (RFC 3339) inside the service's recovery window (GET /services/{id}/backups answers it: from its oldest base backup's end to its newest archived WAL; the WAL is switched and shipped first, so a running service's window reaches the present); into the service itself (its current data is backed up first) or, with into_service, another running managed PostgreSQL, or, with new_service {name, environment_id?, resources?}, a new managed PostgreSQL made for it (deployed, then recovered; the source untouched). 202 with the restore (to_time, the base backup as backup_id); 422 naming to_time outside the window", Some("RestoreToTime"), "202") },
            "/services/{id}/backup-policy": {
                "get": op("The managed service's backup schedule and retention (defaults: daily, keep 7) and its next run", None, "200"),
                "put": op("Set the schedule (interval_seconds, 60..=31622400) and retention (keep, 1..=1000); the next run is one interval from now", Some("PutBackupPolicy"), "200")
            },
            "/restores/{id}": { "get": op("A restore: state (running, completed, failed), error, the pre-restore backup, and its timeline", None, "200") },
            "/services/{id}/deployments": {
                "get": op("List deployments, newest first (limit, after)", None, "200"),
                "post": op("Queue a deployment from a git ref/commit or an image; Idempotency-Key", Some("CreateDeployment"), "201")
            },
            "/services/{id}/domains": {
                "get": op("List the service's custom domains with their status and the DNS records to create", None, "200"),
                "post": op("Add a custom domain; answers the DNS record to create (CNAME to the service's platform host, or A/AAAA to the ingress addresses). Routed and given a certificate once verified; 409 when another service has it", Some("AddDomain"), "201")
            },
            "/services/{id}/domains/{domain}": { "delete": op("Remove a custom domain (its routing and certificate permission go with it)", None, "204") },
            "/services/{id}/domains/{domain}/verify": { "post": op("Check the domain's DNS now: 200 once verified, 422 naming the record seen and the record expected, 503 when DNS did not answer", None, "200") },
            "/services/{id}/logs": { "get": op("Search the service's container logs, newest first (q, since, until, stream, deployment, limit, cursor); one line per line id", None, "200") },
            "/services/{id}/logs/follow": { "get": op("Follow new log lines as server-sent events from a cursor (same filters)", None, "200") },
            "/services/{id}/access-logs": { "get": op("Search the proxy's access log of the service, newest first (since, until, status as 5xx | 404 | 500-599 | a comma list, min_duration_ms, q = path text, deployment, limit, cursor)", None, "200") },
            "/services/{id}/metrics": { "get": op("CPU (cores), memory (bytes) and network (bytes/s in and out) of the service's containers over time, from the node agents' samples: since, until (RFC 3339 or ns; default the last hour), step_seconds (10..=86400); points oldest first, empty buckets left out", None, "200") },
            "/services/{id}/volumes": { "get": op("The service's volumes (name, mount_path, size_bytes) with used_bytes, node and mounted as the node agent holding them reports; used_bytes is null before the first deployment, or with error when the node did not answer", None, "200") },
            "/deployments/{id}": { "get": op("Get a deployment with its step timeline", None, "200") },
            "/deployments/{id}/build-logs": { "get": op("The deployment's build log, oldest line first (after = a line_number or next_cursor, limit 1..=1000 default 500, tail = the last limit lines); follow=true: server-sent events of the lines after `after`, then an `end` event with the deployment's state once the build is over. Known secret values read [redacted]", None, "200") },
            "/deployments/{id}/rollback": { "post": op("Queue a deployment of the image an earlier ready deployment ran", None, "201") },
            "/deployments/{id}/cancel": { "post": op("Cancel a deployment before its traffic switch", None, "200") },
            "/nodes": {
                "get": op("List nodes (operator token): each with its role, address, capacity, status (up, down), last heartbeat and drained_at (when it was drained, null otherwise)", None, "200"),
                "post": op("Register or update a node (operator token)", Some("RegisterNode"), "201")
            },
            "/nodes/{id}": { "delete": op("Remove a node (operator token): 409 while it runs containers of live deployments and was not drained; its registration and the identity control accepts at its address go (control refuses its certificate from then on; it joins again only with a new join token); answers the node and the containers it still ran (abandoned)", None, "200") },
            "/nodes/{id}/drain": { "post": op("Drain a node (operator token): nothing new is placed on it (deployments, builds), and each stateless service serving there is moved at once by a deployment of the image it runs (no build) placing its replicas on the other nodes up (moving: service_id and deployment_id, null when a deployment of it was already on its way). A service with volumes stays and keeps serving there (staying: service_id and reason), for the operator to move by hand. A service whose set has no room on the other nodes now keeps serving there and waits for room (waiting: service_id and reason); control moves it once room frees. Answers the node, drained_at, moving, staying and the containers it still runs for live deployments (remaining: the moving ones until their new set is switched in)", None, "200") },
            "/nodes/{id}/heartbeat": { "post": op("Record a heartbeat (operator token)", None, "200") },
            "/nodes/join-tokens": { "post": op("Issue a one-time join token for a node of a role (operator token): role (build, compute, proxy), ttl_seconds (default 3600, at most 7 days); the token is shown once", Some("CreateJoinToken"), "201") },
            "/nodes/join": { "post": {
                "summary": "A new node joins with its join token (no API token): name, address (https://), csr (PEM), cpu_millis, memory_bytes, container_subnet, wireguard_public_key, wireguard_endpoint. Answers the node, its certificate from the platform CA (naming node id and role), the CA certificate and its WireGuard peers; 403 for a wrong, used or expired token",
                "security": [],
                "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/JoinNode" } } } },
                "responses": { "201": { "description": "joined" }, "403": { "description": "join token refused" } }
            } },
            "/webhooks/github/{id}": { "post": {
                "summary": "GitHub push webhook for a service, signed with X-Hub-Signature-256",
                "security": [],
                "responses": webhook_answers.clone()
            } },
            "/webhooks/github/projects/{id}": { "post": {
                "summary": "GitHub repository webhook for a project, signed with X-Hub-Signature-256 (the project's secret): push deploys the repository's services in each environment deploying the pushed branch; pull_request (opened, reopened, synchronize, closed) drives the pr-<n> preview. 403 for a repository no service of the project is built from, 409 for a replay or a preview over max_previews",
                "security": [],
                "responses": webhook_answers
            } }
        },
        "components": {
            "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } },
            "responses": { "Error": { "description": "`{\"error\": {\"status\", \"message\", \"field\"?}}`: every error, including bad path and query values (422 naming the parameter), JSON syntax (400), bodies over 1 MiB (413) and a NUL in any string (422). Messages quote at most 64 characters of a refused value; a 500 shows only a request id" } },
            "schemas": {
                "SignIn": obj(&["token"], json!({ "token": s })),
                "CreateOrganization": obj(&["name"], json!({ "name": s })),
                "RestoreBackup": obj(&[], json!({ "into_service": { "type": "string", "format": "uuid" }, "new_service": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string" }, "environment_id": { "type": "string", "format": "uuid" }, "resources": { "type": "object", "properties": { "cpu_millis": { "type": "integer" }, "memory_bytes": { "type": "integer" } } } } } })),
                "RestoreToTime": obj(&["to_time"], json!({ "to_time": { "type": "string", "format": "date-time" }, "into_service": { "type": "string", "format": "uuid" }, "new_service": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string" }, "environment_id": { "type": "string", "format": "uuid" }, "resources": { "type": "object", "properties": { "cpu_millis": { "type": "integer" }, "memory_bytes": { "type": "integer" } } } } } })),
                "PutBackupPolicy": obj(&[], json!({ "interval_seconds": { "type": "integer", "minimum": 60 }, "keep": { "type": "integer", "minimum": 1, "maximum": 1000 } })),
                "CreateToken": obj(&["name"], json!({ "name": s, "role": { "enum": token_roles }, "expires_at": { "type": "string", "format": "date-time" } })),
                "RotateWebhookSecret": obj(&[], json!({ "secret": s })),
                "PutPreviews": obj(&["enabled"], json!({ "enabled": { "type": "boolean" }, "template": s, "max_previews": { "type": "integer" }, "allow_forks": { "type": "boolean" }, "idle_seconds": { "type": "integer" } })),
                "PutGitCredentials": obj(&["token"], json!({ "username": s, "token": s })),
                "PutKnownHosts": obj(&["known_hosts"], json!({ "known_hosts": s })),
                "PutGitHubToken": obj(&["token"], json!({ "token": s })),
                "AddMember": obj(&["email", "role"], json!({ "email": s, "role": { "enum": spellings(MemberRole::ALL) } })),
                "SetMemberRole": obj(&["role"], json!({ "role": { "enum": spellings(MemberRole::ALL) } })),
                "CreateProject": obj(&["name"], json!({ "name": name })),
                "CreateEnvironment": obj(&["name", "branch"], json!({
                    "name": name, "branch": git_ref,
                    "from": { "type": "string", "description": "the environment to copy: an id or a name in the same project" },
                    "env": env, "secrets": env
                })),
                "UpdateEnvironment": obj(&[], json!({
                    "branch": git_ref, "env": env, "secrets": env,
                    "unset": { "type": "array", "items": { "type": "string" } }
                })),
                "CreateService": obj(&["name"], json!({
                    "name": name, "environment_id": uuid, "kind": { "enum": spellings(ServiceKind::ALL), "default": ServiceKind::default() },
                    "engine": { "enum": spellings(::api::Engine::ALL), "description": "a managed service: postgres (15) or mariadb (10.11) for kind database, redis (7) for kind cache. Stackpad picks the image, port, probe and credentials (no image, git, command, args, port, health_check or domains); other services of the environment reach it at <service>.<environment>.internal and take its variables by reference: an env value `${{ <service>.DATABASE_URL }}` (postgres/mariadb: DATABASE_URL, PGHOST.. / MYSQL_HOST..; redis: REDIS_URL, REDIS_HOST, REDIS_PORT, REDIS_PASSWORD) is resolved at each deploy" },
                    "image": image, "git": git,
                    "build": build, "resources": resources, "health_check": health,
                    "port": int(spec::PORTS, Some(8080)), "replicas": int(spec::REPLICAS, Some(1)),
                    "command": argv, "args": argv,
                    "env": env, "secrets": env,
                    "webhook_secret": { "type": "string", "minLength": super::webhooks::MIN_SECRET_LEN, "maxLength": super::webhooks::MAX_SECRET_LEN },
                    "volumes": {
                        "type": "array", "maxItems": spec::MAX_VOLUMES,
                        "description": "persistent volumes: each on the node that runs the service, size enforced (writes past it fail with ENOSPC), kept across deploys; a service with volumes deploys stop-old-then-start-new; a deleted service's volumes are removed after a grace period",
                        "items": volume
                    }
                })),
                "UpdateService": obj(&[], json!({
                    "image": image, "resources": resources, "health_check": health,
                    "port": int(spec::PORTS, None), "replicas": int(spec::REPLICAS, None),
                    "command": argv, "args": argv,
                    "env": env, "secrets": env,
                    "env_set": env, "secrets_set": env,
                    "unset": { "type": "array", "items": s, "description": "variables or secrets to remove; with env_set and secrets_set the merge form (the others kept), not with env or secrets (they replace all)" },
                    "volumes": {
                        "type": "array", "maxItems": spec::MAX_VOLUMES,
                        "description": "the service's volumes from now on, applied at the next deployment (a service with volumes runs one replica, stop-old-then-start-new); a kept volume keeps its path and size; one left out is removed with its data only with purge_volumes",
                        "items": volume
                    },
                    "purge_volumes": { "type": "boolean", "description": "with volumes: the volumes left out are deleted with their data (once no container mounts them)" },
                    "kind": { "type": "string", "description": "fixed at create: accepted unchanged, a change is refused (create a new service and restore a backup into it)" },
                    "engine": { "type": "string", "description": "fixed at create, as kind" }
                })),
                "AddDomain": obj(&["domain"], json!({ "domain": s })),
                "CreateDeployment": obj(&[], json!({
                    "git_ref": git_ref,
                    "git_commit": { "type": "string", "pattern": "^([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$", "description": "a full commit id (40 or 64 hex digits); wins over git_ref" },
                    "image": image
                })),
                "RegisterNode": obj(&["name", "role", "address"], json!({
                    "name": s, "role": { "enum": spellings(NodeRole::ALL) }, "address": s, "cpu_millis": i, "memory_bytes": i
                })),
                "CreateJoinToken": obj(&["role"], json!({
                    "role": { "enum": spellings(NodeRole::ALL) }, "ttl_seconds": i
                })),
                "JoinNode": obj(&["token", "name", "address", "csr"], json!({
                    "token": s, "name": s, "address": s, "csr": s, "cpu_millis": i, "memory_bytes": i,
                    "container_subnet": s, "wireguard_public_key": s, "wireguard_endpoint": s
                }))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sets_are_listed_with_todays_spellings_in_todays_order() {
        let doc = document();
        let schema = |name: &str, field: &str| {
            doc["components"]["schemas"][name]["properties"][field].clone()
        };
        assert_eq!(
            schema("CreateToken", "role"),
            json!({ "enum": ["owner", "deployer", "read_only"] })
        );
        assert_eq!(
            schema("AddMember", "role"),
            json!({ "enum": ["owner", "admin", "developer", "viewer"] })
        );
        assert_eq!(
            schema("CreateService", "kind"),
            json!({ "enum": ["web", "database", "cache", "worker"], "default": "web" })
        );
        assert_eq!(
            schema("RegisterNode", "role"),
            json!({ "enum": ["build", "compute", "proxy"] })
        );
    }

    #[test]
    fn document_lists_exactly_the_routes() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = vec![];
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        let mut routes: Vec<(String, String)> = super::super::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
        for (_, ops) in paths {
            for op in ops.as_object().unwrap().values() {
                if let Some(r) =
                    op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
                {
                    let name = r.rsplit('/').next().unwrap();
                    assert!(
                        doc["components"]["schemas"][name].is_object(),
                        "{name} missing"
                    );
                }
            }
        }
    }
}
