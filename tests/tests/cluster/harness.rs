//! A cluster of the test's own (`scripts/cluster up --name <unique>`, torn down by `Drop` with
//! `scripts/cluster down`, also when the test fails) and the host side of the platform: the real
//! `stackpad-control` and `stackpad-proxy` binaries on loopback with a PostgreSQL database of the
//! test's own. The script joins each compute node to this control plane as an operator's machine
//! would (join token, CSR, certificate of the platform CA); the agents serve mTLS on their
//! WireGuard addresses.
#![allow(dead_code, reason = "each test file uses a subset")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use stackpad_tests::acme::{cargo_binaries, free_port};
use stackpad_tests::daemon::Daemon;
use stackpad_tests::db::PostgresDb;
use stackpad_tests::registry::{PushedImages, Registry};
use stackpad_tests::rest::Rest;
use stackpad_tests::{Services, service_down, unique_name};

/// The daemons' binaries, built once per test binary (debug, the workspace's target dir).
pub struct Binaries {
    pub control: PathBuf,
    pub proxy: PathBuf,
    pub node: PathBuf,
    /// In the same folder as `node`: scripts/cluster runs it on the build node.
    pub buildd: PathBuf,
}

impl Binaries {
    pub fn get() -> anyhow::Result<&'static Binaries> {
        static BINARIES: std::sync::OnceLock<Result<Binaries, String>> = std::sync::OnceLock::new();
        BINARIES
            .get_or_init(|| {
                let build = || -> anyhow::Result<Binaries> {
                    let mut paths = cargo_binaries(&[
                        ("stackpad-control", "stackpad-control"),
                        ("stackpad-proxy", "stackpad-proxy"),
                        ("stackpad-runtime", "stackpad-node"),
                        ("stackpad-buildd", "stackpad-buildd"),
                    ])?
                    .into_iter();
                    let mut next = || paths.next().expect("one path per binary");
                    Ok(Binaries {
                        control: next(),
                        proxy: next(),
                        node: next(),
                        buildd: next(),
                    })
                };
                build().map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("building the daemons: {e}"))
    }
}

/// One compute node of a cluster, as `scripts/cluster env` describes it.
#[derive(Debug, Clone)]
pub struct ComputeNode {
    /// `compute-1`, ...
    pub name: String,
    /// The agent's gRPC address over WireGuard, `http://10.77.K.n:7100`.
    pub agent: String,
    /// Its container pool.
    pub pool: String,
    /// Its network namespace.
    pub netns: String,
    /// Its id in control (from the join).
    pub id: String,
}

/// The build node of a cluster (`build-1`: buildd on its own dockerd's BuildKit).
#[derive(Debug, Clone)]
pub struct BuildNode {
    /// Its network namespace.
    pub netns: String,
    /// Its id in control (from the join).
    pub id: String,
    /// The folder its buildd accepts local sources from.
    pub sources: PathBuf,
}

/// A cluster made by `scripts/cluster` for one test; `Drop` removes it.
pub struct Cluster {
    pub name: String,
    pub compute: Vec<ComputeNode>,
    pub build: Option<BuildNode>,
    /// The host's WireGuard address (what the proxy connects from).
    pub host_wg: String,
    /// Its index (`spk<index>*` interfaces on the host).
    pub index: String,
    /// The arguments of its `up`, to run it again.
    up_args: Vec<String>,
    /// Set once `down` ran.
    down: bool,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster")
}

fn run_script(args: &[&str], bin_dir: &Path) -> anyhow::Result<String> {
    let out = Command::new(script())
        .args(args)
        .env("STACKPAD_BIN", bin_dir)
        .output()
        .with_context(|| format!("running scripts/cluster {args:?}"))?;
    ensure!(
        out.status.success(),
        "scripts/cluster {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cluster {
    /// `scripts/cluster up --name <unique> --compute <compute>` with the freshly built node
    /// agent, joining `platform`'s control. The guard exists before `up` runs, so a half-made
    /// cluster is removed too.
    pub fn up(compute: u32, platform: &HostPlatform) -> anyhow::Result<Self> {
        ensure!(
            is_root(),
            "the cluster tests need root (network namespaces, WireGuard, containerd, eBPF)"
        );
        let bins = Binaries::get()?;
        let bin_dir = bins.node.parent().context("node binary has no folder")?;
        let name = unique_name("t");
        let token_file = platform.dir.path().join("operator-token");
        std::fs::write(&token_file, &platform.operator_token)?;
        let up_args: Vec<String> = [
            "up",
            "--name",
            &name,
            "--compute",
            &compute.to_string(),
            "--control",
            platform.rest.base(),
            "--token-file",
            &token_file.to_string_lossy(),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        let mut cluster = Self {
            name,
            compute: Vec::new(),
            build: None,
            host_wg: String::new(),
            index: String::new(),
            up_args,
            down: false,
        };
        cluster.run(&cluster.up_args)?;
        let env = run_script(&["env", "--name", &cluster.name], bin_dir)?;
        let vars: std::collections::HashMap<&str, &str> = env
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .collect();
        let get = |key: &str| -> anyhow::Result<String> {
            Ok(vars
                .get(key)
                .with_context(|| format!("scripts/cluster env: no {key}"))?
                .to_string())
        };
        cluster.host_wg = get("STACKPAD_CLUSTER_HOST_WG")?;
        cluster.build = Some(BuildNode {
            netns: get("STACKPAD_CLUSTER_BUILD_1_NETNS")?,
            id: get("STACKPAD_CLUSTER_BUILD_1_ID")?,
            sources: get("STACKPAD_CLUSTER_BUILD_1_SOURCES")?.into(),
        });
        cluster.index = get("STACKPAD_CLUSTER_INDEX")?;
        for n in 1..=compute {
            let var = |what: &str| -> anyhow::Result<String> {
                let key = format!("STACKPAD_CLUSTER_COMPUTE_{n}_{what}");
                Ok(vars
                    .get(key.as_str())
                    .with_context(|| format!("scripts/cluster env: no {key}"))?
                    .to_string())
            };
            cluster.compute.push(ComputeNode {
                name: format!("compute-{n}"),
                agent: var("AGENT")?,
                pool: var("POOL")?,
                netns: var("NETNS")?,
                id: var("ID")?,
            });
        }
        Ok(cluster)
    }

    fn run(&self, args: &[String]) -> anyhow::Result<String> {
        let bins = Binaries::get()?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_script(
            &args,
            bins.node.parent().context("node binary has no folder")?,
        )
    }

    /// `scripts/cluster status` of this cluster: one line per node.
    pub fn status(&self) -> anyhow::Result<String> {
        self.run(&["status".into(), "--name".into(), self.name.clone()])
    }

    /// `scripts/cluster up` again with the same arguments (it must find everything up).
    pub fn up_again(&self) -> anyhow::Result<String> {
        self.run(&self.up_args)
    }

    /// `scripts/cluster down`, then what of the cluster is still on the machine (namespaces,
    /// interfaces, folders, BPF pins, containerd namespaces on the host's containerd).
    pub fn down(mut self) -> anyhow::Result<Vec<String>> {
        self.down = true;
        self.run(&["down".into(), "--name".into(), self.name.clone()])?;
        let mut left = Vec::new();
        let prefixed = |dir: &str, prefix: &str| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
                        .filter(|p| p.starts_with(&format!("{dir}/{prefix}")))
                        .collect()
                })
                .unwrap_or_default()
        };
        left.extend(prefixed("/run/netns", &format!("spk-{}-", self.name)));
        left.extend(prefixed("/sys/class/net", &format!("spk{}", self.index)));
        left.extend(prefixed(
            "/sys/fs/bpf",
            &format!("stackpad-cluster-{}-", self.name),
        ));
        left.extend(prefixed("/var/lib/stackpad/cluster", &self.name));
        left.extend(prefixed("/run/stackpad/cluster", &self.name));
        let namespaces = Command::new("ctr")
            .args(["namespaces", "ls", "-q"])
            .output()?;
        left.extend(
            String::from_utf8_lossy(&namespaces.stdout)
                .lines()
                .filter(|n| n.starts_with(&format!("cluster-{}-", self.name)))
                .map(|n| format!("containerd namespace {n}")),
        );
        Ok(left)
    }

    /// Waits until control holds every compute node of the cluster up (answering its
    /// heartbeats): `up` registers a node before its agent serves, and with a short
    /// `node_down_after_ms` control may mark it down meanwhile, until its next heartbeat.
    pub async fn wait_up(&self, platform: &HostPlatform, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let listed = platform
                .expect(200, "GET", "/nodes", &platform.operator_token, None)
                .await?;
            let up = |id: &str| {
                listed["items"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|n| n["id"] == id && n["status"].as_str() == Some("up"))
                })
            };
            if self.compute.iter().all(|n| up(&n.id)) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the compute nodes are not all up {within:?} after scripts/cluster up: {listed}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The containers of a compute node, from that node's own containerd.
    pub fn containers(&self, node: &str) -> anyhow::Result<Vec<String>> {
        let socket = format!("/run/stackpad/cluster/{}/{node}/containerd.sock", self.name);
        let namespace = format!("cluster-{}-{node}", self.name);
        let out = Command::new("ctr")
            .args([
                "--address",
                &socket,
                "-n",
                &namespace,
                "containers",
                "ls",
                "-q",
            ])
            .output()
            .context("running ctr")?;
        ensure!(
            out.status.success(),
            "ctr containers ls on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }

    /// The end of a compute node's agent log.
    pub fn agent_log(&self, node: &str, lines: usize) -> String {
        let path = format!(
            "/var/lib/stackpad/cluster/{}/{node}-agent/{node}-agent.log",
            self.name
        );
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        let out = Command::new(script())
            .args(["down", "--name", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "scripts/cluster down --name {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("scripts/cluster down --name {}: {e}", self.name),
        }
    }
}

/// busybox httpd serving a copy of the image's /www plus `/id`: the deployment, the replica
/// and a value drawn at the container's start (two containers never share it), so a client
/// tells which set and which replica answered.
pub const ID_COMMAND: &str = "mkdir -p /tmp/www && cp -r /www/. /tmp/www/ && \
    echo \"$STACKPAD_DEPLOYMENT_ID $STACKPAD_REPLICA $(cat /proc/sys/kernel/random/uuid)\" \
    > /tmp/www/id && exec httpd -f -p 8080 -h /tmp/www";

/// Control and the proxy on the host, for one test.
pub struct HostPlatform {
    pub dir: tempfile::TempDir,
    pub operator_token: String,
    pub apps_domain: String,
    /// The proxy's plain HTTP listener.
    pub http: SocketAddr,
    pub rest: Rest,
    control: Option<Daemon>,
    proxy: Option<Daemon>,
    pushed: Option<PushedImages>,
    database: Option<PostgresDb>,
}

/// A tenant: an organization and its owner token.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub token: String,
}

impl HostPlatform {
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_with(name, "").await
    }

    /// `start` with `extra` appended to control's configuration (top-level TOML keys).
    pub async fn start_with(name: &str, extra: &str) -> anyhow::Result<Self> {
        let services = Services::from_env();
        tokio::net::TcpStream::connect(&services.registry)
            .await
            .map_err(|e| service_down("the registry", &services.registry, e))?;
        let bins = Binaries::get()?;
        let id = unique_name(name);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{id}-"))
            .tempdir()?;
        let home = dir.path().to_owned();
        let database = PostgresDb::create("cluster").await?;
        let database_url = database.url().to_owned();

        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin = format!("127.0.0.1:{}", free_port());
        let proxy_token = unique_name("proxy-token");
        std::fs::write(home.join("proxy-token"), &proxy_token)?;
        let proxy_json = json!({
            "http_listen": http.to_string(),
            "admin_listen": admin,
            "admin_token_file": home.join("proxy-token"),
            "state_file": home.join("proxy-state.json"),
            "upgrade_sock": home.join("proxy-upgrade.sock"),
            "pid_file": home.join("proxy.pid"),
        });
        std::fs::write(home.join("proxy.json"), proxy_json.to_string())?;
        let mut proxy = Daemon::spawn(
            "stackpad-proxy",
            &bins.proxy,
            &["serve", "--config", "proxy.json"],
            &home,
        )?;
        proxy.wait_for_tcp(&admin, Duration::from_secs(30)).await?;

        let api_addr = format!("127.0.0.1:{}", free_port());
        let operator_token = unique_name("operator");
        let apps_domain = format!("{}.cluster.stackpad.test", &id[id.len() - 12..]);
        let key: String = (0..2)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let control_toml = format!(
            "listen = \"{api_addr}\"\ndatabase_url = \"{database_url}\"\n\
             encryption_key = \"{key}\"\nadmin_token = \"{operator_token}\"\n\
             proxy_address = \"http://{admin}\"\nproxy_token = \"{proxy_token}\"\n\
             registry = \"{}\"\napps_domain = \"{apps_domain}\"\n{extra}\n",
            services.registry,
        );
        std::fs::write(home.join("control.toml"), control_toml)?;
        let mut control = Daemon::spawn(
            "stackpad-control",
            &bins.control,
            &["--config", "control.toml"],
            &home,
        )?;
        control
            .wait_for_tcp(&api_addr, Duration::from_secs(60))
            .await?;
        Ok(Self {
            dir,
            operator_token,
            apps_domain,
            http,
            rest: Rest::with_client(
                &format!("http://{api_addr}"),
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()?,
            ),
            control: Some(control),
            proxy: Some(proxy),
            pushed: Some(PushedImages::new()),
            database: Some(database),
        })
    }

    /// A REST call that must answer `expected`.
    pub async fn expect(
        &self,
        expected: u16,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.rest.expect(expected, method, path, token, body).await
    }

    /// A new organization and its owner token; its images are deleted with the platform.
    pub async fn organization(&self, name: &str) -> anyhow::Result<Tenant> {
        let created = self
            .expect(
                201,
                "POST",
                "/organizations",
                &self.operator_token,
                Some(json!({ "name": name })),
            )
            .await?;
        let id = created["organization"]["id"]
            .as_str()
            .context("organization id")?
            .to_owned();
        if let Some(pushed) = &self.pushed {
            pushed.track_prefix(&format!("{id}/"));
        }
        Ok(Tenant {
            id,
            token: created["token"]["secret"]
                .as_str()
                .context("token secret")?
                .to_owned(),
        })
    }

    /// `stackpad/busybox:1` (httpd, /www) copied under the organization's own repository.
    pub async fn busybox_image(&self, tenant: &Tenant) -> anyhow::Result<String> {
        let registry = Registry::platform();
        let services = Services::from_env();
        let repository = format!("{}/web", tenant.id);
        registry
            .copy("stackpad/busybox", "1", &repository, "1")
            .await?;
        Ok(format!("{}/{repository}:1", services.registry))
    }

    /// A project and its web service `web` of `replicas` busybox httpd replicas on 8080 from
    /// `image` ([`ID_COMMAND`]: /www and `/id`), health-checked every 100 ms; its id and its
    /// platform host (as the API shows it). Not deployed yet.
    pub async fn web_service(
        &self,
        tenant: &Tenant,
        project: &str,
        image: &str,
        replicas: u32,
    ) -> anyhow::Result<(String, String)> {
        let p = self
            .expect(
                201,
                "POST",
                "/projects",
                &tenant.token,
                Some(json!({ "name": project })),
            )
            .await?;
        let project_id = p["id"].as_str().context("project id")?;
        let s = self
            .expect(
                201,
                "POST",
                &format!("/projects/{project_id}/services"),
                &tenant.token,
                Some(json!({
                    "name": "web", "kind": "web", "image": image, "port": 8080,
                    "replicas": replicas,
                    "command": ["sh", "-c", ID_COMMAND],
                    "health_check": { "path": "/", "interval_ms": 100 },
                })),
            )
            .await?;
        Ok((
            s["id"].as_str().context("service id")?.to_owned(),
            s["hosts"][0]
                .as_str()
                .context("a web service shows its platform host")?
                .to_owned(),
        ))
    }

    /// Deploys the service's image; the deployment once it ended (ready, or the error).
    pub async fn deploy(
        &self,
        tenant: &Tenant,
        service: &str,
        within: Duration,
    ) -> anyhow::Result<Value> {
        let created = self
            .expect(
                201,
                "POST",
                &format!("/services/{service}/deployments"),
                &tenant.token,
                Some(json!({})),
            )
            .await?;
        let id = created["id"].as_str().context("deployment id")?;
        self.wait_ready(tenant, id, within).await
    }

    /// Deployment `id` once it ended: ready, or the error (failed, cancelled, superseded, or
    /// still on its way after `within`).
    pub async fn wait_ready(
        &self,
        tenant: &Tenant,
        id: &str,
        within: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let d = self
                .expect(
                    200,
                    "GET",
                    &format!("/deployments/{id}"),
                    &tenant.token,
                    None,
                )
                .await?;
            match d["state"].as_str().unwrap_or_default() {
                "ready" => return Ok(d),
                s @ ("failed" | "cancelled" | "superseded") => bail!("deployment {id} {s}: {d}"),
                s => ensure!(
                    Instant::now() < deadline,
                    "deployment {id} still {s} after {within:?}: {d}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The service as the API shows it, and the deployment serving it (its instances
    /// included) when that is another than `before` (a redeploy or a reschedule switched in).
    pub async fn serving_other_than(
        &self,
        tenant: &Tenant,
        service: &str,
        before: &str,
    ) -> anyhow::Result<(Value, Option<Value>)> {
        let s = self
            .expect(
                200,
                "GET",
                &format!("/services/{service}"),
                &tenant.token,
                None,
            )
            .await?;
        let current = s["current_deployment_id"].as_str().unwrap_or_default();
        if current.is_empty() || current == before {
            return Ok((s, None));
        }
        let d = self
            .expect(
                200,
                "GET",
                &format!("/deployments/{current}"),
                &tenant.token,
                None,
            )
            .await?;
        Ok((s, Some(d)))
    }

    /// GET `http://host/path` through the proxy.
    pub async fn get(&self, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self.client(host).get(self.url(host, path)).send().await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// A client (keep-alive, 10 s timeout) that reaches `host` at the proxy's plain HTTP port.
    pub fn client(&self, host: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .resolve(host, self.http)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a reqwest client with a resolve entry builds")
    }

    /// `http://host:<proxy port>/path`.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.http.port())
    }

    /// The test's database (both control instances of a failover test use it).
    pub fn database_url(&self) -> &str {
        self.database
            .as_ref()
            .map(PostgresDb::url)
            .unwrap_or_default()
    }

    /// A second `stackpad-control` on the same database and configuration (its own API port),
    /// as a second instance of the control plane (#15 item 9); its API's base URL.
    pub async fn second_control(&self) -> anyhow::Result<(Daemon, String)> {
        let home = self.dir.path();
        let config = std::fs::read_to_string(home.join("control.toml"))?;
        let api_addr = format!("127.0.0.1:{}", free_port());
        let config: String = config
            .lines()
            .map(|l| {
                if l.starts_with("listen = ") {
                    format!("listen = \"{api_addr}\"\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(home.join("control-b.toml"), config)?;
        let bins = Binaries::get()?;
        let mut control = Daemon::spawn(
            "stackpad-control-b",
            &bins.control,
            &["--config", "control-b.toml"],
            home,
        )?;
        control
            .wait_for_tcp(&api_addr, Duration::from_secs(60))
            .await?;
        Ok((control, format!("http://{api_addr}")))
    }

    /// SIGKILL to the first control instance (no shutdown code runs: its leases stay until
    /// they expire).
    pub fn kill_control(&mut self) -> anyhow::Result<()> {
        self.control
            .as_mut()
            .context("control is not running")?
            .kill9()
    }

    /// The tail of control's and the proxy's logs, for a failed scenario.
    pub fn logs(&self) -> String {
        [&self.control, &self.proxy]
            .into_iter()
            .flatten()
            .map(|d| format!("---- {} ({})\n{}", d.name, d.log.display(), d.tail(40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for HostPlatform {
    fn drop(&mut self) {
        // Control first, so nothing acts while the proxy goes.
        drop(self.control.take());
        drop(self.proxy.take());
        drop(self.pushed.take());
        drop(self.database.take());
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
