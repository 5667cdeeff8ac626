//! `stackpad services list|show|create|set|delete` and `stackpad scale`: a project's services
//! and their settings (kind, engine, source, port, replicas, resources, health check,
//! volumes). The API validates every value; its refusal names the field, which is shown with
//! the flag that set it.

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use super::commands::{Context, confirm, str_of};
use super::output::{Printer, table};
use super::resolve::{ProjectArgs, ServiceArgs, ServiceRef};
use super::{CliError, exit};

#[derive(Debug, Subcommand)]
pub enum Services {
    /// A project's services (of one environment with --environment or a linked one).
    #[command(after_help = "Examples:\n  stackpad services list --project shop\n  \
                            stackpad services list --project shop --environment staging --json")]
    List {
        #[command(flatten)]
        target: ProjectArgs,
    },
    /// One service's settings: kind, source, port, replicas, resources, health check,
    /// volumes, hosts.
    #[command(
        after_help = "Examples:\n  stackpad services show --service shop/web\n  \
                            stackpad services show --json   # the linked service"
    )]
    Show {
        #[command(flatten)]
        target: ServiceArgs,
    },
    /// Create a service from an image, a git repository, or a managed engine.
    #[command(
        after_help = "Examples:\n  stackpad services create --project shop --name web --image nginx:1.27 --port 80\n  \
                      stackpad services create --name api --git https://github.com/acme/api --env MODE=prod\n  \
                      stackpad services create --name db --kind database --engine postgres\n  \
                      stackpad services create --name files --image minio/minio --volume data:/data:10Gi"
    )]
    Create {
        #[command(flatten)]
        target: ProjectArgs,
        /// The service's name, e.g. `--name web`.
        #[arg(long)]
        name: String,
        /// web (public, default), worker (no route), database or cache (with --engine), e.g.
        /// `--kind worker`.
        #[arg(long)]
        kind: Option<String>,
        /// A managed engine for a database or cache: postgres, mariadb or redis, e.g.
        /// `--engine postgres`.
        #[arg(long)]
        engine: Option<String>,
        /// The image to run, e.g. `--image nginx:1.27`.
        #[arg(long, conflicts_with = "git")]
        image: Option<String>,
        /// A git repository to build, e.g. `--git https://github.com/acme/shop`.
        #[arg(long)]
        git: Option<String>,
        /// The app's folder inside the repository, e.g. `--subdirectory apps/web`.
        #[arg(long, requires = "git")]
        subdirectory: Option<String>,
        /// The port the app listens on (default 8080, or what the build detects), e.g.
        /// `--port 3000`.
        #[arg(long)]
        port: Option<u32>,
        #[command(flatten)]
        settings: Settings,
        /// A persistent volume NAME:PATH:SIZE, repeatable, e.g. `--volume data:/data:1Gi`.
        #[arg(long = "volume", value_name = "NAME:PATH:SIZE")]
        volumes: Vec<String>,
        /// NAME=VALUE, repeatable, e.g. `--env MODE=prod --env LOG=info`.
        #[arg(long = "env")]
        env: Vec<String>,
        /// The secret GitHub signs webhooks with (default: a generated one), e.g.
        /// `--webhook-secret "$SECRET"`.
        #[arg(long)]
        webhook_secret: Option<String>,
    },
    /// Change a service's settings (the others are kept); replicas apply at once, the rest
    /// (volumes too) from the next deployment.
    #[command(
        after_help = "Examples:\n  stackpad services set --replicas 3 --cpu 0.5 --memory 512Mi\n  \
                      stackpad services set --service shop/web --health-path /healthz --health-deadline-ms 60000\n  \
                      stackpad services set --image registry.example/shop:v2 --port 3000\n  \
                      stackpad services set --volume /var/lib/data:1Gi --replicas 1\n  \
                      stackpad services set --remove-volume /var/lib/data --purge"
    )]
    Set {
        #[command(flatten)]
        target: ServiceArgs,
        /// The image to run from now on, e.g. `--image shop:v2`.
        #[arg(long)]
        image: Option<String>,
        /// The port the app listens on, e.g. `--port 3000`.
        #[arg(long)]
        port: Option<u32>,
        #[command(flatten)]
        settings: Settings,
        /// Add a persistent volume [NAME:]PATH:SIZE (named after the path's last part unless
        /// NAME is given), created at the next deployment; a service with volumes runs one
        /// replica. Repeatable, e.g. `--volume /var/lib/data:1Gi`.
        #[arg(long = "volume", value_name = "[NAME:]PATH:SIZE")]
        volumes: Vec<String>,
        /// Remove the volume mounted at PATH (or named so) and delete its data (with --purge),
        /// e.g. `--remove-volume /var/lib/data --purge`.
        #[arg(long = "remove-volume", value_name = "PATH")]
        remove_volumes: Vec<String>,
        /// Confirms that the volumes --remove-volume names are deleted with their data.
        #[arg(long)]
        purge: bool,
        /// A service's kind is fixed at create: a change is refused, saying what to do instead
        /// (a new service and `stackpad backups restore --into` it), e.g. `--kind worker`.
        #[arg(long)]
        kind: Option<String>,
        /// A managed service's engine is fixed at create, as --kind, e.g. `--engine mariadb`.
        #[arg(long)]
        engine: Option<String>,
    },
    /// Delete a service: its containers stop, its routes and domains go. Its volumes and
    /// backups are kept for a grace period (7 days by default) unless --purge. Asks to type its name
    /// unless --yes.
    #[command(
        after_help = "Examples:\n  stackpad services delete --service shop/web\n  \
                            stackpad services delete --yes   # the linked service\n  \
                            stackpad services delete --service shop/db --purge"
    )]
    Delete {
        #[command(flatten)]
        target: ServiceArgs,
        /// Delete its volumes' data and its backups now instead of after the grace period.
        #[arg(long)]
        purge: bool,
        /// Do not ask (for scripts; without a terminal --yes is required).
        #[arg(long)]
        yes: bool,
    },
}

/// The settings both `create` and `set` take.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Settings {
    /// How many containers serve it (1 to 20), e.g. `--replicas 3`.
    #[arg(long)]
    pub replicas: Option<u32>,
    /// CPU limit in cores (`0.5`) or thousandths (`500m`), e.g. `--cpu 0.5`.
    #[arg(long, value_parser = parse_cpu)]
    pub cpu: Option<u64>,
    /// Memory limit in bytes or with a unit (Ki, Mi, Gi, K, M, G), e.g. `--memory 512Mi`.
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// HTTP health check path (otherwise a TCP connect), e.g. `--health-path /healthz`.
    #[arg(long)]
    pub health_path: Option<String>,
    /// Time between health checks in milliseconds, e.g. `--health-interval-ms 2000`.
    #[arg(long)]
    pub health_interval_ms: Option<u64>,
    /// How long a new version may take to become healthy, in milliseconds, e.g.
    /// `--health-deadline-ms 60000`.
    #[arg(long)]
    pub health_deadline_ms: Option<u64>,
}

impl Settings {
    fn is_empty(&self) -> bool {
        self.replicas.is_none()
            && self.cpu.is_none()
            && self.memory.is_none()
            && !self.health_given()
    }

    fn health_given(&self) -> bool {
        self.health_path.is_some()
            || self.health_interval_ms.is_some()
            || self.health_deadline_ms.is_some()
    }

    /// Adds the settings given to `body`; `current` is the service as it is (a health check
    /// or resources given in part keep the rest of it).
    fn apply(&self, body: &mut Value, current: Option<&Value>) {
        if let Some(r) = self.replicas {
            body["replicas"] = json!(r);
        }
        if self.cpu.is_some() || self.memory.is_some() {
            let now = current.map(|s| &s["resources"]);
            let keep = |k: &str| now.and_then(|r| r[k].as_u64());
            let mut resources = json!({});
            if let Some(c) = self.cpu.or_else(|| keep("cpu_millis")) {
                resources["cpu_millis"] = json!(c);
            }
            // 0 = the node's default: not a value to send back.
            if let Some(m) = self
                .memory
                .or_else(|| keep("memory_bytes").filter(|m| *m > 0))
            {
                resources["memory_bytes"] = json!(m);
            }
            body["resources"] = resources;
        }
        if self.health_given() {
            let now = current.map(|s| &s["health_check"]);
            let mut health = json!({});
            let path = self
                .health_path
                .clone()
                .or_else(|| now.and_then(|h| h["path"].as_str()).map(str::to_owned));
            if let Some(p) = path {
                health["path"] = json!(p);
            }
            for (key, given) in [
                ("interval_ms", self.health_interval_ms),
                ("deadline_ms", self.health_deadline_ms),
            ] {
                if let Some(v) = given.or_else(|| now.and_then(|h| h[key].as_u64())) {
                    health[key] = json!(v);
                }
            }
            body["health_check"] = health;
        }
    }
}

/// `0.5` cores or `500m` as thousandths of a core.
pub fn parse_cpu(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?}: expected cores (`0.5`, `2`) or thousandths (`500m`)");
    if let Some(m) = text.strip_suffix('m') {
        return m.parse().map_err(|_| bad());
    }
    let cores: f64 = text.parse().map_err(|_| bad())?;
    if !cores.is_finite() || cores <= 0.0 {
        return Err(bad());
    }
    Ok((cores * 1000.0).round() as u64)
}

/// Bytes, or a number with a unit: `Ki`, `Mi`, `Gi`, `Ti` (1024s), `K`, `M`, `G`, `T` (1000s).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let bad = || format!("{text:?}: expected bytes or a size such as `512Mi` or `1G`");
    let (number, unit) = units
        .iter()
        .find_map(|(u, n)| text.strip_suffix(u).map(|rest| (rest, *n)))
        .unwrap_or((text, 1));
    let n: u64 = number.parse().map_err(|_| bad())?;
    n.checked_mul(unit).ok_or_else(bad)
}

/// `NAME:PATH:SIZE` (or `PATH:SIZE`, named after the path's last part) as the API's volume
/// object.
pub fn parse_volume(text: &str) -> Result<Value, CliError> {
    let bad = |why: String| CliError::Usage(format!("--volume {text:?}: {why}"));
    let parts: Vec<&str> = text.splitn(3, ':').collect();
    let (name, path, size) = match parts.as_slice() {
        [path, size] if path.starts_with('/') => (volume_name_of(path), *path, *size),
        [name, path, size] => (Some((*name).to_owned()), *path, *size),
        _ => {
            return Err(bad(
                "expected [NAME:]PATH:SIZE, e.g. /data:1Gi or data:/data:1Gi".into(),
            ));
        }
    };
    let Some(name) = name else {
        return Err(bad(format!(
            "no volume name follows from {path:?}: name it, NAME:{path}:{size}"
        )));
    };
    let size = parse_size(size).map_err(bad)?;
    Ok(json!({ "name": name, "mount_path": path, "size_bytes": size }))
}

/// A volume's name from its path's last part (`/var/lib/data` -> `data`): lower case, other
/// characters as `-`; `None` when nothing usable is left.
fn volume_name_of(path: &str) -> Option<String> {
    let last = path.rsplit('/').find(|p| !p.is_empty())?;
    let name: String = last
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let name = name.trim_matches('-').to_owned();
    (name.starts_with(|c: char| c.is_ascii_lowercase()) && name.len() <= 40).then_some(name)
}

/// The service's volumes after `add` and `remove` (paths or names), as `PATCH` takes them.
fn volumes_after(current: &Value, add: &[String], remove: &[String]) -> Result<Value, CliError> {
    let mut volumes: Vec<Value> = current["volumes"].as_array().cloned().unwrap_or_default();
    for r in remove {
        let before = volumes.len();
        volumes.retain(|v| v["mount_path"] != r.as_str() && v["name"] != r.as_str());
        if volumes.len() == before {
            let there: Vec<String> = current["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| str_of(v, "mount_path").to_owned())
                .collect();
            return Err(CliError::NotFound {
                what: "volume",
                name: r.clone(),
                suggestions: there,
                listed: true,
            });
        }
    }
    for a in add {
        volumes.push(parse_volume(a)?);
    }
    Ok(json!(volumes))
}

/// The flag that sets an API field, to name it beside the API's refusal.
fn flag_of(field: &str) -> Option<&'static str> {
    Some(match field.split('[').next()? {
        "replicas" => "--replicas",
        "resources.cpu_millis" => "--cpu",
        "resources.memory_bytes" => "--memory",
        "health_check.path" => "--health-path",
        "health_check.interval_ms" => "--health-interval-ms",
        "health_check.deadline_ms" => "--health-deadline-ms",
        "port" => "--port",
        "image" => "--image",
        "kind" => "--kind",
        "engine" => "--engine",
        "volumes" => "--volume",
        "name" => "--name",
        "git.url" => "--git",
        "git.subdirectory" => "--subdirectory",
        "env" => "--env",
        _ => return None,
    })
}

/// A 422 from the API with the flag of its field added (`resources.cpu_millis: ... (--cpu)`).
fn with_flag(e: CliError) -> CliError {
    match e {
        CliError::Api { status, message } if status == 422 => {
            let field = message.split(':').next().unwrap_or_default();
            let message = match flag_of(field) {
                Some(flag) => format!("{message} ({flag})"),
                None => message,
            };
            CliError::Api { status, message }
        }
        other => other,
    }
}

/// The human table of services: id, name, kind, source.
pub fn services_table(items: &[Value]) -> Vec<String> {
    let rows = items
        .iter()
        .map(|s| {
            vec![
                str_of(s, "id").to_owned(),
                str_of(s, "name").to_owned(),
                str_of(s, "kind").to_owned(),
                source_of(s),
            ]
        })
        .collect::<Vec<_>>();
    table(&rows)
}

fn source_of(s: &Value) -> String {
    if let Some(engine) = s["engine"].as_str() {
        return format!("{engine} (managed)");
    }
    match (s["image"].as_str(), s["git_url"].as_str()) {
        (_, Some(git)) => match str_of(s, "git_subdirectory") {
            "" => git.to_owned(),
            sub => format!("{git} ({sub})"),
        },
        (Some(image), None) => image.to_owned(),
        (None, None) => String::new(),
    }
}

/// A size in the largest binary unit that divides it (`512Mi`), else bytes.
pub fn size(bytes: u64) -> String {
    for (unit, n) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= n && bytes.is_multiple_of(n) {
            return format!("{}{unit}", bytes / n);
        }
    }
    format!("{bytes}")
}

/// The human lines of one service's settings.
pub fn describe(s: &Value, path: &str) -> Vec<String> {
    let mut lines = vec![format!("service {path}  ({})", str_of(s, "id"))];
    let mut row = |k: &str, v: String| lines.push(format!("  {k:<14}{v}"));
    row("kind", str_of(s, "kind").to_owned());
    row("source", source_of(s));
    row("port", s["port"].to_string());
    row("replicas", s["replicas"].to_string());
    let cpu = s["resources"]["cpu_millis"].as_u64().unwrap_or(0);
    let memory = s["resources"]["memory_bytes"].as_u64().unwrap_or(0);
    row(
        "resources",
        format!(
            "cpu {}, memory {}",
            match cpu {
                0 => "no limit".to_owned(),
                c => format!("{}m", c),
            },
            match memory {
                0 => "node default".to_owned(),
                m => size(m),
            }
        ),
    );
    let h = &s["health_check"];
    let health = if h.is_null() {
        "tcp connect".to_owned()
    } else {
        let mut text = match (h["path"].as_str(), h["exec"].as_array()) {
            (Some(p), _) => format!("GET {p}"),
            (None, Some(cmd)) => format!(
                "exec {}",
                cmd.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            (None, None) => "tcp connect".to_owned(),
        };
        if let Some(i) = h["interval_ms"].as_u64() {
            text.push_str(&format!(", every {i} ms"));
        }
        if let Some(d) = h["deadline_ms"].as_u64() {
            text.push_str(&format!(", deadline {d} ms"));
        }
        text
    };
    row("health check", health);
    for v in s["volumes"].as_array().into_iter().flatten() {
        row(
            "volume",
            format!(
                "{} at {} ({})",
                str_of(v, "name"),
                str_of(v, "mount_path"),
                size(v["size_bytes"].as_u64().unwrap_or(0))
            ),
        );
    }
    for h in s["hosts"].as_array().into_iter().flatten() {
        row("url", format!("https://{}", h.as_str().unwrap_or("")));
    }
    if let Some(host) = s["internal_host"].as_str() {
        row("internal", host.to_owned());
    }
    let env = s["env"].as_object().map(|e| e.len()).unwrap_or(0);
    row("env", format!("{env} variables (`stackpad env list`)"));
    lines
}

fn service_json(s: &ServiceRef) -> Value {
    json!({
        "id": s.service.id,
        "name": s.service.name,
        "project": s.project,
        "environment": s.environment,
    })
}

pub async fn run(
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
            for l in services_table(&items) {
                p.line(l);
            }
            p.object(&json!(items));
        }
        Services::Show { target } => {
            let s = ctx.names.service(&target).await?;
            let v: Value = ctx.api.get(&format!("/services/{}", s.service.id)).await?;
            for l in describe(&v, &s.path()) {
                p.line(l);
            }
            p.object(&v);
        }
        Services::Create {
            target,
            name,
            kind,
            engine,
            image,
            git,
            subdirectory,
            port,
            settings,
            volumes,
            env,
            webhook_secret,
        } => {
            let project = ctx.names.project(&target).await?;
            let environment = ctx
                .names
                .environment(&project, target.environment.as_deref())
                .await?;
            let mut body = json!({ "name": name, "env": super::env::pairs(&env)? });
            if let Some(e) = environment {
                body["environment_id"] = json!(e.id);
            }
            if let Some(k) = kind {
                body["kind"] = json!(k);
            }
            if let Some(e) = engine {
                body["engine"] = json!(e);
            }
            if let Some(i) = image {
                body["image"] = json!(i);
            }
            if let Some(g) = git {
                body["git"] = json!({ "url": g });
                if let Some(sub) = subdirectory {
                    body["git"]["subdirectory"] = json!(sub);
                }
            }
            if let Some(port) = port {
                body["port"] = json!(port);
            }
            settings.apply(&mut body, None);
            if !volumes.is_empty() {
                let volumes: Result<Vec<Value>, CliError> =
                    volumes.iter().map(|v| parse_volume(v)).collect();
                body["volumes"] = json!(volumes?);
            }
            if let Some(s) = webhook_secret {
                body["webhook_secret"] = json!(s);
            }
            let s = ctx
                .api
                .post(&format!("/projects/{}/services", project.id), &body)
                .await
                .map_err(with_flag)?;
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
        Services::Set {
            target,
            image,
            port,
            settings,
            volumes,
            remove_volumes,
            purge,
            kind,
            engine,
        } => {
            if image.is_none()
                && port.is_none()
                && settings.is_empty()
                && volumes.is_empty()
                && remove_volumes.is_empty()
                && kind.is_none()
                && engine.is_none()
            {
                return Err(CliError::Usage(
                    "nothing to change: give --replicas, --cpu, --memory, --health-path, \
                     --health-interval-ms, --health-deadline-ms, --image, --port, --volume or \
                     --remove-volume"
                        .into(),
                ));
            }
            if !remove_volumes.is_empty() && !purge {
                return Err(CliError::Usage(format!(
                    "--remove-volume {} deletes the volume's data: add --purge to confirm",
                    remove_volumes.join(", ")
                )));
            }
            let s = ctx.names.service(&target).await?;
            let current: Value = ctx.api.get(&format!("/services/{}", s.service.id)).await?;
            let mut body = json!({});
            if let Some(i) = image {
                body["image"] = json!(i);
            }
            if let Some(port) = port {
                body["port"] = json!(port);
            }
            if let Some(k) = kind {
                body["kind"] = json!(k);
            }
            if let Some(e) = engine {
                body["engine"] = json!(e);
            }
            if !volumes.is_empty() || !remove_volumes.is_empty() {
                body["volumes"] = volumes_after(&current, &volumes, &remove_volumes)?;
                if !remove_volumes.is_empty() {
                    body["purge_volumes"] = json!(true);
                }
            }
            settings.apply(&mut body, Some(&current));
            let v = patch(ctx, &s, &body).await?;
            for l in describe(&v, &s.path()) {
                p.line(l);
            }
            if let Some(note) = v["note"].as_str() {
                p.line(format!("  note: {note}"));
            }
            if let Some(d) = v["deployment"].as_object() {
                p.line(format!(
                    "deployment {} queued with the new replica count",
                    d.get("id").and_then(Value::as_str).unwrap_or("")
                ));
            }
            p.object(&v);
        }
        Services::Delete { target, purge, yes } => {
            let s = ctx.names.service(&target).await?;
            let what = if purge {
                format!(
                    "service {} with its volumes' data and backups, now (--purge)",
                    s.path()
                )
            } else {
                format!("service {}", s.path())
            };
            confirm(ctx, yes, &what, &s.service.name)?;
            let query = if purge { "?purge=true" } else { "" };
            ctx.api
                .delete(&format!("/services/{}{query}", s.service.id))
                .await?;
            p.line(format!("deleted service {} ({})", s.path(), s.service.id));
            if purge {
                p.line("its volumes' data and backups are deleted now (--purge)");
            } else {
                p.line("its volumes and backups are kept for a grace period (--purge deletes them now)");
            }
            p.object(&json!({ "deleted": service_json(&s), "purged": purge }));
        }
    }
    Ok(exit::OK)
}

async fn patch(ctx: &Context<'_>, s: &ServiceRef, body: &Value) -> Result<Value, CliError> {
    ctx.api
        .patch(&format!("/services/{}", s.service.id), body)
        .await
        .map_err(with_flag)
}

/// `stackpad scale N`: the service's replica count, applied at once (a deployment of the
/// running version with the new count, followed unless `no_wait`).
pub async fn scale(
    ctx: &Context<'_>,
    target: ServiceArgs,
    replicas: u32,
    no_wait: bool,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let s = ctx.names.service(&target).await?;
    let v = patch(ctx, &s, &json!({ "replicas": replicas })).await?;
    p.line(format!("{} scaled to {replicas} replicas", s.path()));
    match v["deployment"]["id"].as_str() {
        Some(id) if !no_wait => {
            p.line(format!("deployment {id} queued with {replicas} replicas"));
            super::deployments::follow(ctx.api, id, p).await
        }
        Some(id) => {
            p.line(format!("deployment {id} queued with {replicas} replicas"));
            p.object(&v);
            Ok(exit::OK)
        }
        None => {
            p.line("  (no running deployment: the next one starts with it)");
            p.object(&v);
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_sizes_and_volumes_parse_with_their_units() {
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("250m"), Ok(250));
        assert!(parse_cpu("-1").is_err() && parse_cpu("half").is_err());
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1Qi").is_err());
        assert!(parse_size("99999999999Ti").is_err(), "overflow is refused");
        assert_eq!(
            parse_volume("data:/var/lib/data:1Gi").unwrap(),
            json!({ "name": "data", "mount_path": "/var/lib/data", "size_bytes": 1u64 << 30 })
        );
        let e = parse_volume("data:/data").unwrap_err().to_string();
        assert!(e.contains("[NAME:]PATH:SIZE"), "{e}");
        assert_eq!(
            parse_volume("/var/lib/Pg_Data:16Mi").unwrap(),
            json!({ "name": "pg-data", "mount_path": "/var/lib/Pg_Data", "size_bytes": 16u64 << 20 })
        );
        let e = parse_volume("/9:1Gi").unwrap_err().to_string();
        assert!(e.contains("name it, NAME:/9:1Gi"), "{e}");
        assert_eq!(size(512 << 20), "512Mi");
        assert_eq!(size(1000), "1000");
    }

    #[test]
    fn volumes_are_added_and_removed_by_path_or_name() {
        let current = json!({ "volumes": [
            { "name": "data", "mount_path": "/data", "size_bytes": 1 << 30 },
            { "name": "logs", "mount_path": "/var/log/app", "size_bytes": 1 << 30 },
        ] });
        let v = volumes_after(&current, &["/cache:64Mi".into()], &["/data".into()]).unwrap();
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|v| str_of(v, "name"))
            .collect();
        assert_eq!(names, ["logs", "cache"]);
        let v = volumes_after(&current, &[], &["logs".into()]).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        let e = volumes_after(&current, &[], &["/nope".into()]).unwrap_err();
        assert_eq!(e.exit_code(), exit::NOT_FOUND);
        assert!(e.to_string().contains("/var/log/app"), "{e}");
    }

    #[test]
    fn a_partial_health_check_or_resources_keep_the_rest() {
        let current = json!({
            "resources": { "cpu_millis": 500, "memory_bytes": 0 },
            "health_check": { "path": "/healthz", "interval_ms": 1000 }
        });
        let settings = Settings {
            memory: Some(256 << 20),
            health_deadline_ms: Some(60_000),
            ..Settings::default()
        };
        let mut body = json!({});
        settings.apply(&mut body, Some(&current));
        assert_eq!(
            body,
            json!({
                "resources": { "cpu_millis": 500, "memory_bytes": 256u64 << 20 },
                "health_check": { "path": "/healthz", "interval_ms": 1000, "deadline_ms": 60_000 }
            })
        );
    }

    #[test]
    fn an_api_refusal_names_the_flag_of_its_field() {
        let e = with_flag(CliError::Api {
            status: 422,
            message: "resources.cpu_millis: must be between 10 and 64000".into(),
        });
        assert_eq!(
            e.to_string(),
            "the API answered 422: resources.cpu_millis: must be between 10 and 64000 (--cpu)"
        );
        let e = with_flag(CliError::Api {
            status: 422,
            message: "volumes[1].mount_path: overlaps".into(),
        });
        assert!(e.to_string().ends_with("(--volume)"), "{e}");
    }
}
