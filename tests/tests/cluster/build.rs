//! Builds on the cluster's build node (#15 item 8): a git repository with a Dockerfile is built
//! by buildd in the build node's namespace on that node's own dockerd/BuildKit, which pulls the
//! base image from and pushes the app to the platform registry over WireGuard with the node's
//! own credentials; both compute nodes pull the app the same way (each with its own) and serve
//! it through the host's proxy. Anonymous requests to the registry from a node's namespace
//! (its relay at 127.0.0.1:5000 or the registry's WireGuard address) are refused.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use stackpad_tests::unique_name;

use crate::harness::{Cluster, HostPlatform};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_on_the_build_node_pulled_by_compute_nodes_with_credentials() -> anyhow::Result<()> {
    let started = Instant::now();
    let org = unique_name("bld");
    // The repository is on the build node's disk: local sources are an operator setting, open
    // to this organization only.
    let platform = HostPlatform::start_with(
        "cluster-build",
        &format!("local_sources_organizations = [\"{org}\"]"),
    )
    .await?;
    let cluster = Cluster::up(2, &platform)?;
    let up = started.elapsed();
    let outcome = scenario(&platform, &cluster, &org).await;
    if outcome.is_err() {
        eprintln!("{}", platform.logs());
        eprintln!(
            "---- build-1 buildd\n{}",
            log_tail(&cluster, "build-1-buildd", 40)
        );
        eprintln!(
            "---- build-1 dockerd\n{}",
            log_tail(&cluster, "build-1-dockerd", 20)
        );
        for node in &cluster.compute {
            eprintln!(
                "---- {} agent\n{}",
                node.name,
                cluster.agent_log(&node.name, 20)
            );
        }
    }
    outcome?;
    println!(
        "cluster with a build node up in {up:?}; whole test {:?}",
        started.elapsed()
    );
    Ok(())
}

/// The end of one of the cluster's daemon logs (`<node>-<daemon>`).
fn log_tail(cluster: &Cluster, process: &str, lines: usize) -> String {
    let path = format!(
        "/var/lib/stackpad/cluster/{}/{process}/{process}.log",
        cluster.name
    );
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The HTTP status of a GET of `url` made from inside network namespace `netns`, with Basic
/// credentials when given.
fn status_from(netns: &str, url: &str, credentials: Option<&str>) -> anyhow::Result<u16> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}")).args([
        "curl",
        "-s",
        "-m",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
    ]);
    if let Some(c) = credentials {
        cmd.args(["-u", c]);
    }
    let out = cmd.arg(url).output().context("running nsenter curl")?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    code.parse()
        .with_context(|| format!("curl {url} in {netns} printed {code:?}"))
}

/// A git repository with one commit of `files` at `dir`; its commit.
fn git_repository(dir: &Path, files: &[(&str, String)]) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=Stackpad",
                "-c",
                "user.email=t@stackpad.test",
            ])
            .args(args)
            .output()
            .context("running git")?;
        ensure!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    git(&["init", "-q", "-b", "main"])?;
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    git(&["add", "-A"])?;
    git(&["commit", "-qm", "an app with its Dockerfile"])?;
    git(&["rev-parse", "HEAD"])
}

async fn scenario(platform: &HostPlatform, cluster: &Cluster, org: &str) -> anyhow::Result<()> {
    let build = cluster
        .build
        .as_ref()
        .context("the cluster has no build node")?;

    // 1. The registry refuses anonymous requests from the nodes' namespaces, through the relay
    //    the node daemons use and at its WireGuard address; the node's own credentials pass.
    let registry_wg = format!("{}:5000", cluster.host_wg);
    let manifest = "/v2/stackpad/busybox/manifests/1";
    let password_of = |node: &str| -> anyhow::Result<String> {
        let path = format!(
            "/var/lib/stackpad/cluster/{}/keys/{node}.registry",
            cluster.name
        );
        std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
    };
    let compute_1 = &cluster.compute[0];
    for (netns, who) in [(&compute_1.netns, "compute-1"), (&build.netns, "build-1")] {
        for base in ["127.0.0.1:5000", registry_wg.as_str()] {
            let url = format!("http://{base}{manifest}");
            let anonymous = status_from(netns, &url, None)?;
            ensure!(
                anonymous == 401,
                "an anonymous GET {url} from {who}'s namespace answered {anonymous}, not 401"
            );
            let wrong = status_from(netns, &url, Some(&format!("node-{who}:not-the-password")))?;
            ensure!(
                wrong == 401,
                "a wrong password for GET {url} from {who} answered {wrong}, not 401"
            );
        }
        let own = format!("node-{who}:{}", password_of(who)?);
        let url = format!("http://127.0.0.1:5000{manifest}");
        let with = status_from(netns, &url, Some(&own))?;
        ensure!(
            with == 200,
            "GET {url} from {who} with its credentials answered {with}"
        );
    }
    println!("anonymous and wrong-password registry requests from the nodes: 401");

    // 2. A repository with a Dockerfile on the build node's disk.
    let marker = unique_name("built-on-build-1");
    let registry = stackpad_tests::Services::from_env().registry;
    let repo = build.sources.join(unique_name("app"));
    let commit = git_repository(
        &repo,
        &[
            (
                "Dockerfile",
                format!(
                    "FROM {registry}/stackpad/busybox:1\n\
                     COPY index.html /www/index.html\n\
                     CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
                ),
            ),
            ("index.html", format!("{marker}\n")),
        ],
    )?;

    // The organization's images are deleted from the registry with the platform.
    let tenant = platform.organization(org).await?;
    let (token, org_id) = (tenant.token.clone(), tenant.id.clone());
    let project = platform
        .expect(
            201,
            "POST",
            "/projects",
            &token,
            Some(json!({ "name": "built" })),
        )
        .await?;
    let project_id = project["id"].as_str().context("project id")?;
    let service = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project_id}/services"),
            &token,
            Some(json!({
                "name": "web", "kind": "web", "port": 8080, "replicas": 2,
                "git": { "url": format!("file://{}", repo.display()) },
                "health_check": { "path": "/", "interval_ms": 100 },
            })),
        )
        .await?;
    let service_id = service["id"].as_str().context("service id")?;
    let host = service["hosts"][0]
        .as_str()
        .context("a web service shows its platform host")?
        .to_owned();

    // 3. Deploy: built on build-1, one replica on each compute node.
    let deploy_started = Instant::now();
    let d = platform
        .expect(
            201,
            "POST",
            &format!("/services/{service_id}/deployments"),
            &token,
            Some(json!({ "git_commit": commit })),
        )
        .await?;
    let id = d["id"].as_str().context("deployment id")?;
    let ready = platform
        .wait_ready(&tenant, id, Duration::from_secs(180))
        .await?;
    let deploy_time = deploy_started.elapsed();
    ensure!(
        ready["build_node_id"].as_str() == Some(build.id.as_str()),
        "the build did not run on the cluster's build node {}: {ready}",
        build.id
    );
    let image = ready["image"].as_str().unwrap_or_default().to_owned();
    ensure!(
        image.starts_with(&format!("{registry}/{org_id}/")),
        "the image is not the organization's in the platform registry: {ready}"
    );
    let mut nodes: Vec<&str> = ready["instances"]
        .as_array()
        .context("instances")?
        .iter()
        .filter_map(|i| i["node_id"].as_str())
        .collect();
    nodes.sort_unstable();
    let mut compute: Vec<&str> = cluster.compute.iter().map(|n| n.id.as_str()).collect();
    compute.sort_unstable();
    ensure!(
        nodes == compute,
        "the 2 replicas are not one on each compute node: {nodes:?} vs {compute:?}"
    );
    for node in &cluster.compute {
        let containers = cluster.containers(&node.name)?;
        ensure!(
            containers.len() == 1,
            "{} runs {containers:?}, not the one replica",
            node.name
        );
    }

    // 4. Both replicas serve the built page through the proxy.
    for _ in 0..6 {
        let (status, body) = platform.get(&host, "/").await?;
        ensure!(
            status == 200 && body.trim() == marker,
            "the proxy answered {status}: {body:?}"
        );
    }
    println!(
        "built on build-1 and ready on both compute nodes in {deploy_time:?} ({image}); \
         6 requests through the proxy answered the built page"
    );
    Ok(())
}
