//! The platform harness: the real `stackpad-control`, `stackpad-proxy`, `stackpad-node` and
//! `stackpad-buildd` binaries, started with their shipped defaults (the node's eBPF isolation
//! included) in a home directory, ports, PostgreSQL database, ClickHouse database, containerd
//! namespace, BPF pin folder and ACME CA (a Pebble of its own) that belong to one test, so tests
//! run in parallel with each other and with the platform `scripts/run` started.
//!
//! Everything is torn down on drop, also when the test fails (daemons killed, then the
//! namespace's containers, snapshots and images, the project networks, the id ranges, the BPF
//! pins and both databases), and a failing test prints the tail of every daemon's log.
//!
//! Machine-wide tables are shared on purpose, as on a real node: the address table
//! (`/var/lib/stackpad/ipam`, one /24 per project out of the shipped pool, never one another agent
//! holds) and the user-namespace id ranges (`/var/lib/stackpad/userns`), both keyed by namespace.
#![allow(dead_code, reason = "each test file uses a subset")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use stackpad_tests::acme::{cargo_binaries, free_port};
use stackpad_tests::daemon::Daemon;
use stackpad_tests::db::{ClickHouseDb, PostgresDb};
use stackpad_tests::registry::PushedImages;
use stackpad_tests::rest::Rest;
use stackpad_tests::{Services, service_down, unique_name};

/// What a scenario changes in the platform's configuration.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options {
    /// Lines added to control's `[backups]` (e.g. the scheduler's `interval_ms`).
    pub control_backups: &'static str,
}

/// The daemons of one platform, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Control,
    Buildd,
    Node,
    Proxy,
}

/// One whole Stackpad platform on this machine, owned by one test.
pub struct Platform {
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`: the REST API.
    pub api: String,
    pub operator_token: String,
    /// The apps domain: services answer at `<service>-<project>-<org>.<apps_domain>`.
    pub apps_domain: String,
    /// The proxy's HTTPS listener.
    pub https: SocketAddr,
    /// The proxy's plain HTTP listener (also Pebble's http-01 port).
    pub http: SocketAddr,
    /// The root certificate (PEM) of this platform's ACME CA.
    pub ca_root: String,
    /// The containerd namespace of the node agent.
    pub namespace: String,
    /// Folder under which local git repositories may be built (buildd `local_sources`).
    pub repos: PathBuf,
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    pub node_metrics: String,
    /// Where each daemon listens (control's API, buildd's and the node's gRPC, the proxy's
    /// admin), to wait for a restarted one.
    addresses: [(Role, String); 4],
    /// Control's REST API.
    rest: Rest,
    control: Option<Daemon>,
    buildd: Option<Daemon>,
    node: Option<Daemon>,
    proxy: Option<Daemon>,
    pebble: Option<Daemon>,
    cleanup: Cleanup,
}

/// What a platform leaves on the machine, removed on drop after the daemons are gone.
struct Cleanup {
    namespace: String,
    run_dir: PathBuf,
    pin_dir: PathBuf,
    database: Option<PostgresDb>,
    clickhouse: Option<ClickHouseDb>,
    /// The organizations' builds (`<organization id>/...` in the platform registry).
    pushed: Option<PushedImages>,
}

impl Platform {
    /// Builds the daemons (once per test binary; cargo does nothing when they are fresh) and
    /// starts a platform. Fails naming the service that is missing.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_with(name, Options::default()).await
    }

    /// [`Platform::start`] with a scenario's changes to the shipped configuration.
    pub async fn start_with(name: &str, options: Options) -> anyhow::Result<Self> {
        let services = Services::from_env();
        check_services(&services).await?;
        let bins = Binaries::get()?;
        let id = unique_name(name);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{id}-"))
            .tempdir()?;
        let home = dir.path().to_owned();
        let repos = home.join("repos");
        std::fs::create_dir_all(&repos)?;
        let namespace = format!("e2e-{}", &id[id.len() - 12..]);
        let pin_dir = PathBuf::from(&services.bpffs).join(&namespace);
        let run_dir = PathBuf::from("/run/stackpad").join(&namespace);
        let mut cleanup = Cleanup {
            namespace: namespace.clone(),
            run_dir: run_dir.clone(),
            pin_dir: pin_dir.clone(),
            database: None,
            clickhouse: None,
            pushed: Some(PushedImages::new()),
        };
        let clickhouse = ClickHouseDb::create("e2e_logs").await?;
        let clickhouse_database = clickhouse.name().to_owned();
        cleanup.clickhouse = Some(clickhouse);
        let database = PostgresDb::create("e2e").await?;
        let database_url = database.url().to_owned();
        cleanup.database = Some(database);
        let dns = "127.0.0.1:8053";
        let listener = Path::new(&services.pebble_listener_ca)
            .parent()
            .context("PEBBLE_LISTENER_CA has no folder")?
            .to_owned();

        // The platform's own ACME CA: a Pebble whose http-01 port is this proxy's HTTP port.
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let (pebble, pebble_addr, pebble_mgmt) =
            start_pebble(&home, &listener, dns, http.port()).await?;

        let buildd_addr = format!("127.0.0.1:{}", free_port());
        let buildd_toml = format!(
            "listen = \"{buildd_addr}\"\nmetrics_listen = \"127.0.0.1:{}\"\n\
             context_listen = \"127.0.0.1:0\"\nwork_dir = \"{}\"\nnetwork_mode = \"none\"\n\
             local_sources = [\"{}\"]\ndns_resolver = \"{dns}\"\n\n[base_images]\n\
             node = \"{registry}/stackpad/node:20\"\n\
             static_server = \"{registry}/stackpad/busybox:1\"\n",
            free_port(),
            home.join("buildd").display(),
            repos.display(),
            registry = services.registry,
        );
        std::fs::write(home.join("buildd.toml"), buildd_toml)?;
        let mut buildd = Daemon::spawn(
            "stackpad-buildd",
            &bins.buildd,
            &["--config", "buildd.toml"],
            &home,
        )?;

        let node_addr = format!("127.0.0.1:{}", free_port());
        let node_metrics = format!("127.0.0.1:{}", free_port());
        // Shipped defaults except what must be the test's own; `isolation` is left out on
        // purpose: the default (eBPF) is what runs.
        let node_toml = format!(
            "node_id = \"compute-1\"\nlisten = \"{node_addr}\"\nmetrics_listen = \"{node_metrics}\"\n\
             namespace = \"{namespace}\"\nstate_dir = \"{}\"\nrun_dir = \"{}\"\n\
             bpf_pin_dir = \"{}\"\nclickhouse_url = \"{}\"\nclickhouse_database = \"{clickhouse_database}\"\n\n\
             [[registries]]\nhost = \"{}\"\ninsecure = true\n",
            home.join("node").display(),
            run_dir.display(),
            pin_dir.display(),
            services.clickhouse_url,
            services.registry,
        );
        std::fs::write(home.join("node.toml"), node_toml)?;
        let mut node = Daemon::spawn(
            "stackpad-node",
            &bins.node,
            &["--config", "node.toml"],
            &home,
        )?;

        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin = format!("127.0.0.1:{}", free_port());
        let proxy_token = unique_name("proxy-token");
        std::fs::write(home.join("proxy-token"), &proxy_token)?;
        std::fs::write(home.join("store-key"), random_hex(32))?;
        let default_cert = rcgen::generate_simple_self_signed(vec!["stackpad default".into()])?;
        std::fs::write(home.join("default.pem"), default_cert.cert.pem())?;
        std::fs::write(
            home.join("default.key"),
            default_cert.signing_key.serialize_pem(),
        )?;
        let proxy_json = json!({
            "http_listen": http.to_string(),
            "tls_listen": https.to_string(),
            "tls_cert_file": home.join("default.pem"),
            "tls_key_file": home.join("default.key"),
            "admin_listen": admin,
            "admin_token_file": home.join("proxy-token"),
            "state_file": home.join("proxy-state.json"),
            "upgrade_sock": home.join("proxy-upgrade.sock"),
            "pid_file": home.join("proxy.pid"),
            "acme": {
                "database_url": database_url,
                "store_key_file": home.join("store-key"),
                "directory_url": format!("https://{pebble_addr}/dir"),
                "ca_roots_file": services.pebble_listener_ca,
                "contact_email": "ops@e2e.stackpad.test",
                "dns_provider_url": "http://127.0.0.1:8055",
                "interval_secs": 1,
            },
            "access_log_clickhouse": {
                "clickhouse_url": services.clickhouse_url,
                "database": clickhouse_database,
            },
        });
        std::fs::write(home.join("proxy.json"), proxy_json.to_string())?;
        let mut proxy = Daemon::spawn(
            "stackpad-proxy",
            &bins.proxy,
            &["serve", "--config", "proxy.json"],
            &home,
        )?;

        buildd
            .wait_for_tcp(&buildd_addr, Duration::from_secs(30))
            .await?;
        node.wait_for_tcp(&node_addr, Duration::from_secs(60))
            .await?;
        proxy.wait_for_tcp(&admin, Duration::from_secs(30)).await?;

        let api_addr = format!("127.0.0.1:{}", free_port());
        let operator_token = unique_name("operator");
        let apps_domain = format!("{}.e2e.stackpad.test", &id[id.len() - 12..]);
        let control_toml = format!(
            "listen = \"{api_addr}\"\nmetrics_listen = \"127.0.0.1:{}\"\ndatabase_url = \"{database_url}\"\n\
             encryption_key = \"{}\"\nadmin_token = \"{operator_token}\"\n\
             proxy_address = \"http://{admin}\"\nproxy_token = \"{proxy_token}\"\n\
             registry = \"{}\"\napps_domain = \"{apps_domain}\"\nclickhouse_url = \"{}\"\n\
             clickhouse_database = \"{clickhouse_database}\"\ndns_resolver = \"{dns}\"\n\
             idle_check_interval_ms = 1000\nvolume_grace_secs = 2\n\
             local_sources_organizations = [\"e2e\", \"e2e-other\"]\n\n\
             [[nodes]]\nname = \"build-1\"\nrole = \"build\"\naddress = \"http://{buildd_addr}\"\n\n\
             [[nodes]]\nname = \"compute-1\"\nrole = \"compute\"\naddress = \"http://{node_addr}\"\n\n\
             [backups]\nstore = \"{}\"\n{}",
            free_port(),
            random_hex(32),
            services.registry,
            services.clickhouse_url,
            home.join("backups").display(),
            options.control_backups,
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

        let ca_root = fetch_pebble_root(&pebble_mgmt, &services.pebble_listener_ca)
            .await
            .with_context(|| format!("Pebble's log:\n{}", pebble.tail(40)))?;
        Ok(Self {
            dir,
            api: format!("http://{api_addr}"),
            operator_token,
            apps_domain,
            https,
            http,
            ca_root,
            namespace,
            repos,
            clickhouse_url: services.clickhouse_url.clone(),
            clickhouse_database,
            node_metrics,
            addresses: [
                (Role::Control, api_addr.clone()),
                (Role::Buildd, buildd_addr),
                (Role::Node, node_addr),
                (Role::Proxy, admin),
            ],
            rest: Rest::with_client(
                &format!("http://{api_addr}"),
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()?,
            ),
            control: Some(control),
            buildd: Some(buildd),
            node: Some(node),
            proxy: Some(proxy),
            pebble: Some(pebble),
            cleanup,
        })
    }

    fn daemon(&mut self, role: Role) -> &mut Daemon {
        match role {
            Role::Control => self.control.as_mut(),
            Role::Buildd => self.buildd.as_mut(),
            Role::Node => self.node.as_mut(),
            Role::Proxy => self.proxy.as_mut(),
        }
        .expect("daemons live as long as the platform")
    }

    /// The platform's PostgreSQL database (control's state, the proxy's certificates and the
    /// names it may order them for).
    pub fn database_url(&self) -> &str {
        self.cleanup
            .database
            .as_ref()
            .map(|d| d.url())
            .expect("the database lives as long as the platform")
    }

    /// The process id of a daemon.
    pub fn pid(&mut self, role: Role) -> u32 {
        self.daemon(role).pid()
    }

    /// SIGKILL of one daemon, as a crash would.
    pub fn kill9(&mut self, role: Role) -> anyhow::Result<()> {
        self.daemon(role).kill9()
    }

    /// Starts a killed daemon again with the same configuration and waits until it listens.
    /// Its port, free since the kill, can be taken meanwhile for a moment (another test's
    /// outgoing connection given it as its source port): a start that fails on it is tried
    /// again for up to 10 s.
    pub async fn restart(&mut self, role: Role) -> anyhow::Result<()> {
        let address = self
            .addresses
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, a)| a.clone())
            .expect("every role has an address");
        let daemon = self.daemon(role);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            daemon.restart()?;
            let err = match daemon.wait_for_tcp(&address, Duration::from_secs(60)).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let taken = format!("{err:#}").contains("Address already in use");
            if !taken || Instant::now() > deadline || daemon.is_running() {
                return Err(err);
            }
            eprintln!("{} found its port taken, starting it again", daemon.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Passes a scenario's outcome through; when it failed, prints the tail of every daemon's
    /// log first (the daemons print theirs on their own only when the test panics).
    pub fn report<T>(&mut self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        if outcome.is_err() {
            for role in [Role::Control, Role::Buildd, Role::Node, Role::Proxy] {
                let daemon = self.daemon(role);
                eprintln!(
                    "---- last lines of {} ({})\n{}",
                    daemon.name,
                    daemon.log.display(),
                    daemon.tail(60)
                );
            }
        }
        outcome
    }

    /// A REST call to control: its status and body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.rest.call(method, path, token, body).await
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

    /// A new organization (`e2e` and `e2e-other` may build local repositories) and its owner
    /// token.
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
        if let Some(pushed) = &self.cleanup.pushed {
            // Its builds are deleted from the registry with the platform.
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

    /// A new project of `tenant`; its id.
    pub async fn project(&self, tenant: &Tenant, name: &str) -> anyhow::Result<String> {
        let project = self
            .expect(
                201,
                "POST",
                "/projects",
                &tenant.token,
                Some(json!({ "name": name })),
            )
            .await?;
        Ok(project["id"].as_str().context("project id")?.to_owned())
    }

    /// A web service of `project` built from `repo` (the sample app: port 3000, `/healthz`).
    pub async fn git_service(
        &self,
        tenant: &Tenant,
        (project_id, _project): (&str, &str),
        name: &str,
        repo: &AppRepo,
    ) -> anyhow::Result<Service> {
        let service = self
            .expect(
                201,
                "POST",
                &format!("/projects/{project_id}/services"),
                &tenant.token,
                Some(json!({
                    "name": name, "kind": "web", "git": { "url": repo.url() }, "port": 3000,
                    "health_check": { "path": "/healthz", "interval_ms": 100 },
                })),
            )
            .await?;
        Ok(Service {
            id: service["id"].as_str().context("service id")?.to_owned(),
            webhook_secret: service["webhook_secret"]
                .as_str()
                .context("a git service gets a webhook secret, shown once")?
                .to_owned(),
            // The platform host the API shows (`<service>-<project>-<org>.<apps_domain>`).
            host: service["hosts"][0]
                .as_str()
                .context("a web service shows its platform host")?
                .to_owned(),
        })
    }

    /// A signed push of `commit` to the service's branch; the deployment it queued.
    pub async fn push(&self, service: &Service, commit: &str) -> anyhow::Result<String> {
        let (status, queued) =
            webhook_push(self, &service.id, &service.webhook_secret, commit).await?;
        ensure!(status == 202, "webhook push of {commit}: {status} {queued}");
        Ok(queued["deployment_id"]
            .as_str()
            .context("the push queued no deployment")?
            .to_owned())
    }

    /// Waits until a deployment is in `state` (or has ended, which fails).
    pub async fn wait_state(
        &self,
        tenant: &Tenant,
        id: &str,
        state: &str,
        within: Duration,
    ) -> anyhow::Result<Value> {
        let d = self
            .poll_deployment(tenant, id, within, |now| now == state || ended(now))
            .await?;
        let now = d["state"].as_str().unwrap_or_default();
        ensure!(
            now == state,
            "deployment {id} ended ({now}) before it was {state}: {d}"
        );
        Ok(d)
    }

    /// GET `https://host/path` through the proxy, verifying the certificate against this
    /// platform's CA.
    pub async fn https_get(&self, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let client = self.https_client(host)?;
        let response = client
            .get(format!("https://{host}:{}{path}", self.https.port()))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// A client that reaches `host` at the proxy and trusts only this platform's CA.
    pub fn https_client(&self, host: &str) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_root.as_bytes())?)
            .resolve(host, self.https)
            .timeout(Duration::from_secs(10))
            .build()?)
    }

    /// Waits until `https://host/` answers 200 with `body` in it, with a certificate from this
    /// platform's CA (the first request may precede the certificate's issue).
    pub async fn wait_for_https(
        &self,
        host: &str,
        body: &str,
        within: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.https_get(host, "/").await {
                Ok((200, text)) if text.contains(body) => return Ok(text),
                Ok((status, text)) => last = format!("{status}: {text}"),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("https://{host}/ never answered {body:?} within {within:?}; last: {last}")
    }

    /// Waits until a deployment has ended (`ready`, `failed`, `cancelled`, `superseded`).
    pub async fn wait_deployment(
        &self,
        tenant: &Tenant,
        id: &str,
        within: Duration,
    ) -> anyhow::Result<Value> {
        self.poll_deployment(tenant, id, within, ended).await
    }

    /// `GET /deployments/{id}` until `done(state)` holds; fails after `within`.
    async fn poll_deployment(
        &self,
        tenant: &Tenant,
        id: &str,
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let path = format!("/deployments/{id}");
            let d = self.expect(200, "GET", &path, &tenant.token, None).await?;
            let state = d["state"].as_str().unwrap_or_default();
            if done(state) {
                return Ok(d);
            }
            ensure!(
                Instant::now() < deadline,
                "deployment {id} still {state} after {within:?}: {d}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// containerd, in this platform's namespace.
    pub async fn containerd(&self) -> anyhow::Result<runtime::containerd::Containerd> {
        let services = Services::from_env();
        Ok(runtime::containerd::Containerd::connect(
            services.containerd_socket.as_ref(),
            &self.namespace,
        )
        .await?)
    }

    /// The containers (ids) the node agent has in this platform's namespace, through
    /// containerd itself.
    pub async fn containers(&self) -> anyhow::Result<Vec<String>> {
        let c = self.containerd().await?;
        let list = c
            .containers()
            .list(c.req(containerd_client::services::v1::ListContainersRequest { filters: vec![] }))
            .await?
            .into_inner()
            .containers;
        Ok(list.into_iter().map(|c| c.id).collect())
    }

    /// The snapshot keys in this platform's namespace.
    pub async fn snapshots(&self) -> anyhow::Result<Vec<String>> {
        let c = self.containerd().await?;
        let mut stream = c
            .snapshots()
            .list(c.req(
                containerd_client::services::v1::snapshots::ListSnapshotsRequest {
                    snapshotter: "overlayfs".into(),
                    filters: vec![],
                },
            ))
            .await?
            .into_inner();
        let mut keys = Vec::new();
        while let Some(page) = stream.message().await? {
            keys.extend(page.info.into_iter().map(|i| i.name));
        }
        Ok(keys)
    }

    /// The host pid of a container's task.
    pub async fn task_pid(&self, container: &str) -> anyhow::Result<u32> {
        let c = self.containerd().await?;
        let task = c
            .tasks()
            .get(c.req(containerd_client::services::v1::GetRequest {
                container_id: container.to_owned(),
                exec_id: String::new(),
            }))
            .await?
            .into_inner()
            .process
            .context("no task")?;
        Ok(task.pid)
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // Control first, so nothing acts while the others go.
        for daemon in [
            self.control.take(),
            self.buildd.take(),
            self.proxy.take(),
            self.node.take(),
            self.pebble.take(),
        ]
        .into_iter()
        .flatten()
        {
            drop(daemon);
        }
        let cleanup = std::mem::replace(
            &mut self.cleanup,
            Cleanup {
                namespace: String::new(),
                run_dir: PathBuf::new(),
                pin_dir: PathBuf::new(),
                database: None,
                clickhouse: None,
                pushed: None,
            },
        );
        let _ = std::thread::spawn(move || cleanup.run()).join();
        // Volumes (loop-mounted files under the node's state dir) go before the folder does.
        runtime::volume::Volumes::under_state_dir(&self.dir.path().join("node")).unmount_all();
    }
}

impl Cleanup {
    fn run(self) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let services = Services::from_env();
            if let Ok(c) = runtime::containerd::Containerd::connect(
                services.containerd_socket.as_ref(),
                &self.namespace,
            )
            .await
            {
                c.purge_namespace().await;
            }
            let defaults = runtime::config::NodeConfig::default();
            if let Ok(pool) = defaults.pool()
                && let Ok(networks) = runtime::network::Networks::new(
                    &defaults.ipam_dir,
                    &self.run_dir,
                    &self.namespace,
                    pool,
                    defaults.subnet_prefix,
                )
            {
                for (bridge, id) in networks.leases().unwrap_or_default() {
                    let _ = networks.detach(&id, &bridge).await;
                }
            }
            if let Ok(table) = runtime::userns::UsernsFile::new(&defaults.userns_dir) {
                let _ = table.update(|s| {
                    s.release_namespace(&self.namespace);
                    Ok(())
                });
            }
            let _ = std::fs::remove_dir_all(&self.pin_dir);
            let _ = std::fs::remove_dir_all(&self.run_dir);
        });
        drop(self.pushed);
        drop(self.clickhouse);
        drop(self.database);
    }
}

/// Whether a deployment state is final.
fn ended(state: &str) -> bool {
    matches!(state, "ready" | "failed" | "cancelled" | "superseded")
}

/// A service made by [`Platform::git_service`].
#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub webhook_secret: String,
    /// Its platform host.
    pub host: String,
}

/// A tenant: an organization and its owner token.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub token: String,
}

/// A local git repository of the sample app (`examples/hello`) under the platform's
/// `local_sources` folder.
pub struct AppRepo {
    pub path: PathBuf,
}

impl AppRepo {
    /// A repository `name` holding `examples/hello` at `version`, committed.
    pub fn sample(platform: &Platform, name: &str, version: &str) -> anyhow::Result<Self> {
        let path = platform.repos.join(name);
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
        std::fs::create_dir_all(&path)?;
        for file in ["server.js", "package.json", "package-lock.json"] {
            std::fs::copy(example.join(file), path.join(file))?;
        }
        let repo = Self { path };
        repo.git(&["init", "-q", "-b", "main"])?;
        repo.set_version(version)?;
        Ok(repo)
    }

    /// The commit checked out.
    pub fn head(&self) -> anyhow::Result<String> {
        Ok(self.git(&["rev-parse", "HEAD"])?.trim().to_owned())
    }

    /// The repository's URL as a service's `git.url`.
    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    /// Commits the app at another version; returns the commit.
    pub fn set_version(&self, version: &str) -> anyhow::Result<String> {
        let manifest = self.path.join("package.json");
        let mut package: Value = serde_json::from_str(&std::fs::read_to_string(&manifest)?)?;
        package["version"] = json!(version);
        std::fs::write(&manifest, serde_json::to_string_pretty(&package)? + "\n")?;
        self.commit(&format!("version {version}"))
    }

    /// Writes `file` (relative to the repository) with `text` and commits it; the commit.
    pub fn write_and_commit(
        &self,
        file: &str,
        text: &str,
        message: &str,
    ) -> anyhow::Result<String> {
        std::fs::write(self.path.join(file), text)?;
        self.commit(message)
    }

    /// Commits a version whose health check answers 500.
    pub fn break_health(&self) -> anyhow::Result<String> {
        let server = self.path.join("server.js");
        let text = std::fs::read_to_string(&server)?;
        let broken = text.replace(
            "res.writeHead(200, { \"content-type\": \"text/plain\" });\n    res.end(\"ok\\n\");",
            "res.writeHead(500, { \"content-type\": \"text/plain\" });\n    res.end(\"broken\\n\");",
        );
        ensure!(
            broken != text,
            "server.js no longer has the health answer this test edits"
        );
        std::fs::write(&server, broken)?;
        self.commit("a health check that fails")
    }

    fn commit(&self, message: &str) -> anyhow::Result<String> {
        self.git(&["add", "-A"])?;
        self.git(&[
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@stackpad.test",
            "commit",
            "-qm",
            message,
        ])?;
        Ok(self.git(&["rev-parse", "HEAD"])?.trim().to_owned())
    }

    fn git(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.path)
            .output()
            .context("running git")?;
        ensure!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A GitHub push delivery for `commit` on `main`, signed with `secret`.
pub async fn webhook_push(
    platform: &Platform,
    service: &str,
    secret: &str,
    commit: &str,
) -> anyhow::Result<(u16, Value)> {
    let body = json!({ "ref": "refs/heads/main", "after": commit }).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let response = reqwest::Client::new()
        .post(format!("{}/webhooks/github/{service}", platform.api))
        .header("x-github-event", "push")
        .header("x-github-delivery", unique_name("delivery"))
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// The daemons' binaries, built once per test binary.
struct Binaries {
    control: PathBuf,
    buildd: PathBuf,
    node: PathBuf,
    proxy: PathBuf,
}

impl Binaries {
    fn get() -> anyhow::Result<&'static Binaries> {
        static BINARIES: std::sync::OnceLock<Result<Binaries, String>> = std::sync::OnceLock::new();
        BINARIES
            .get_or_init(|| {
                let build = || -> anyhow::Result<Binaries> {
                    let mut paths = cargo_binaries(&[
                        ("stackpad-control", "stackpad-control"),
                        ("stackpad-buildd", "stackpad-buildd"),
                        ("stackpad-runtime", "stackpad-node"),
                        ("stackpad-proxy", "stackpad-proxy"),
                    ])?
                    .into_iter();
                    let mut next = || paths.next().expect("one path per binary");
                    Ok(Binaries {
                        control: next(),
                        buildd: next(),
                        node: next(),
                        proxy: next(),
                    })
                };
                build().map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("building the daemons: {e}"))
    }
}

/// Every service the platform needs answers, or the test fails naming the missing one.
async fn check_services(services: &Services) -> anyhow::Result<()> {
    ensure!(
        is_root(),
        "the end-to-end tests need root (containerd, network namespaces, eBPF)"
    );
    for (name, address) in [
        ("containerd", services.containerd_socket.as_str()),
        ("dockerd (BuildKit)", services.docker_socket.as_str()),
    ] {
        tokio::net::UnixStream::connect(address)
            .await
            .map_err(|e| service_down(name, address, e))?;
    }
    for (name, address) in [
        ("the registry", services.registry.as_str()),
        ("ClickHouse", "127.0.0.1:8123"),
        ("pebble-challtestsrv", "127.0.0.1:8055"),
    ] {
        tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| service_down(name, address, e))?;
    }
    ensure!(
        Path::new("/usr/bin/pebble").exists(),
        "Pebble is not installed at /usr/bin/pebble: run scripts/services up"
    );
    Ok(())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Starts the platform's own Pebble (its http-01 port is the proxy's `http_port`) and waits
/// for both its ACME and its management listener. The ports are picked free but another test
/// may bind one first, and Pebble then exits: it is started again on new ports (three tries).
async fn start_pebble(
    home: &Path,
    listener: &Path,
    dns: &str,
    http_port: u16,
) -> anyhow::Result<(Daemon, String, String)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let address = format!("127.0.0.1:{}", free_port());
        let management = format!("127.0.0.1:{}", free_port());
        let config = json!({ "pebble": {
            "listenAddress": address,
            "managementListenAddress": management,
            "certificate": listener.join("listener.pem"),
            "privateKey": listener.join("listener.key"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(home.join("pebble.json"), config.to_string())?;
        let mut pebble = Daemon::spawn_with_env(
            "pebble",
            Path::new("/usr/bin/pebble"),
            &["-config", "pebble.json", "-dnsserver", dns],
            &[("PEBBLE_VA_NOSLEEP", "1")],
            home,
        )?;
        let listening = async {
            pebble
                .wait_for_tcp(&address, Duration::from_secs(20))
                .await?;
            pebble
                .wait_for_tcp(&management, Duration::from_secs(20))
                .await?;
            // Pebble exits when one of its two listeners cannot bind, which may come just
            // after the other accepted a connection.
            tokio::time::sleep(Duration::from_millis(200)).await;
            pebble.ensure_running()
        }
        .await;
        match listening {
            Ok(()) => return Ok((pebble, address, management)),
            Err(e) if tries < 3 && !pebble.is_running() => {
                eprintln!("Pebble did not start (try {tries} of 3), again on new ports: {e:#}");
            }
            Err(e) => return Err(e),
        }
    }
}

async fn fetch_pebble_root(management: &str, listener_ca: &str) -> anyhow::Result<String> {
    let ca = std::fs::read(listener_ca).with_context(|| format!("reading {listener_ca}"))?;
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .get(format!("https://{management}/roots/0"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(r.text().await?),
            Ok(r) if Instant::now() > deadline => bail!("Pebble's roots/0: {}", r.status()),
            Err(e) if Instant::now() > deadline => bail!("Pebble's roots/0: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand_byte())).collect()
}

fn rand_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

/// Requests one after another on two connections' worth of clients until stopped (at most
/// 20 000 requests, at most 10 minutes).
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the load on `https://host/` (answers must come from the sample app).
    pub fn start(platform: &Platform, host: &str) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let client = platform.https_client(host)?;
            let url = format!("https://{host}:{}/", platform.https.port());
            let (stop, ok, failed, errors) =
                (stop.clone(), ok.clone(), failed.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst)
                    && ok.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < 20_000
                    && started.elapsed() < Duration::from_secs(600)
                {
                    let outcome = match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => match r.text().await {
                            Ok(body) if body.contains("Hello from Stackpad") => Ok(()),
                            Ok(body) => Err(format!("200 with {body:?}")),
                            Err(e) => Err(format!("body: {e}")),
                        },
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(format!("{e:#}")),
                    };
                    match outcome {
                        Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            errors.lock().expect("errors").push(e);
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        Ok(Self {
            stop,
            ok,
            failed,
            errors,
            tasks,
        })
    }

    /// Stops it: requests answered 200 by the app, requests failed, and why each failed.
    pub async fn stop(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        let errors = self.errors.lock().expect("errors").clone();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}
