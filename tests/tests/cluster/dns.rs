//! Service discovery across nodes (#15): each node agent answers its containers'
//! `<service>.<environment>.internal` questions on their bridge's gateway from control's pushed
//! endpoint set. From a container on one compute node, the name of a service of its project
//! that runs on the other node resolves (busybox `nslookup`, asking the container's own
//! resolv.conf) and the address it gave connects; the same name in another project gives that
//! project's container only; another project's name does not exist; public names are refused
//! (nothing is forwarded). A real glibc resolver (the Debian-based `stackpad/node:20` image's
//! `getaddrinfo`, which sends A and AAAA at once on one socket) gets both answers on its first
//! try, over UDP, over TCP (`use-vc`) and with EDNS (`edns0`).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use stackpad_tests::Services;
use stackpad_tests::registry::Registry;

use crate::harness::{Cluster, HostPlatform};
use crate::isolation::{Placed, placed, service_project};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_across_nodes_within_the_project_only() -> anyhow::Result<()> {
    crate::harness::Binaries::get()?;
    let started = Instant::now();
    let platform = HostPlatform::start("cluster-dns").await?;
    let cluster = Cluster::up(2, &platform)?;
    let outcome = scenario(&platform, &cluster).await;
    if outcome.is_err() {
        eprintln!("{}", platform.logs());
        for node in &cluster.compute {
            eprintln!(
                "---- {} agent\n{}",
                node.name,
                cluster.agent_log(&node.name, 40)
            );
        }
    }
    eprintln!("cross-node dns scenario in {:?}", started.elapsed());
    outcome
}

async fn scenario(platform: &HostPlatform, cluster: &Cluster) -> anyhow::Result<()> {
    let a = platform.organization("dns-a").await?;
    let b = platform.organization("dns-b").await?;
    let image_a = platform.busybox_image(&a).await?;
    let image_b = platform.busybox_image(&b).await?;
    let (web_a, _) = platform.web_service(&a, "shop", &image_a, 1).await?;
    // A volume keeps web of shop on its node when that node is drained (a drain moves the
    // stateless services, #15): the names below are asked across the two nodes.
    platform
        .expect(
            200,
            "PATCH",
            &format!("/services/{web_a}"),
            &a.token,
            Some(
                json!({ "volumes": [{ "name": "data", "mount_path": "/data", "size_bytes": 16 << 20 }] }),
            ),
        )
        .await?;
    let project_a = service_project(platform, &a, &web_a).await?;
    // api of shop runs a Debian-based image: its glibc resolver is asked below.
    let api_service = node_service(platform, &a, &project_a, "api").await?;
    let (web_b, _) = platform.web_service(&b, "other", &image_b, 1).await?;

    // web of shop on one node; drained, that node takes nothing new: api of shop and the other
    // project's web land on the other one.
    let d = platform.deploy(&a, &web_a, Duration::from_secs(60)).await?;
    let first = d["node_id"]
        .as_str()
        .context("placed on a node")?
        .to_owned();
    platform
        .expect(
            200,
            "POST",
            &format!("/nodes/{first}/drain"),
            &platform.operator_token,
            None,
        )
        .await?;
    let d_api = platform
        .deploy(&a, &api_service, Duration::from_secs(60))
        .await?;
    let d_b = platform.deploy(&b, &web_b, Duration::from_secs(60)).await?;
    let web_a = placed(cluster, &d).await?;
    let api_a = placed(cluster, &d_api).await?;
    let web_b = placed(cluster, &d_b).await?;
    ensure!(
        web_a.node != api_a.node && api_a.node == web_b.node,
        "web of shop on {}, api of shop on {}, other on {}",
        web_a.node,
        api_a.node,
        web_b.node
    );

    // The other node's service of the same project, by its full name and by its bare name
    // (the environment's search domain), once the push reached the asking node.
    let answer = eventually_resolves(&web_a, "api.production.internal", &api_a.ip).await?;
    eprintln!("api.production.internal from {}: {answer}", web_a.node);
    let (ok, answer) = nslookup(&web_a, "api").await?;
    ensure!(
        ok && answer.contains(&api_a.ip),
        "the bare name api: {answer}"
    );
    // And the address the name gave connects across nodes (busybox's static wget cannot resolve
    // names itself: its glibc has no NSS; the probe is bash's /dev/tcp in the container's
    // network namespace).
    let resolved = answered_address(&answer).context("an address in the answer")?;
    let (code, _, err) = in_container_netns(&web_a, &resolved, "8080").await?;
    ensure!(
        code == 0,
        "{resolved}:8080 (api.production.internal) from {}: exit {code}: {err}",
        web_a.node
    );

    // The same name in each project is that project's container only.
    let (ok, answer) = nslookup(&web_a, "web.production.internal").await?;
    ensure!(
        ok && answer.contains(&web_a.ip) && !answer.contains(&web_b.ip),
        "web of shop asked for web.production.internal: {answer}"
    );
    let (ok, answer) = eventually(&web_b, "web.production.internal", &web_b.ip).await?;
    ensure!(
        ok && !answer.contains(&web_a.ip),
        "web of other asked for web.production.internal: {answer}"
    );
    // Another project's name does not exist for it, though api runs beside it on its node.
    let (ok, answer) = nslookup(&web_b, "api.production.internal").await?;
    ensure!(
        !ok && !answer.contains(&api_a.ip),
        "api of shop resolved for another project: {answer}"
    );
    ensure!(
        answer.to_ascii_uppercase().contains("NXDOMAIN") || answer.contains("can't find"),
        "api of shop from another project is not NXDOMAIN: {answer}"
    );
    // Public names are not forwarded.
    let (ok, answer) = nslookup(&web_a, "example.com").await?;
    ensure!(!ok, "example.com answered: {answer}");

    glibc_resolves(&api_a, &web_a).await?;

    // Teardown: a removed service's name goes from the other node's answers.
    platform
        .expect(
            204,
            "DELETE",
            &format!("/services/{api_service}"),
            &a.token,
            None,
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, answer) = nslookup(&web_a, "api.production.internal").await?;
        if !ok {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "api.production.internal still answered after its service was deleted: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// A web service `name` of `stackpad/node:20` (Debian's glibc, nsswitch `files dns`, node)
/// answering on 8080, in the project's production environment.
async fn node_service(
    platform: &HostPlatform,
    tenant: &crate::harness::Tenant,
    project: &str,
    name: &str,
) -> anyhow::Result<String> {
    let repository = format!("{}/node", tenant.id);
    Registry::platform()
        .copy("stackpad/node", "20", &repository, "20")
        .await?;
    let image = format!("{}/{repository}:20", Services::from_env().registry);
    let s = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project}/services"),
            &tenant.token,
            Some(json!({
                "name": name, "kind": "web", "image": image, "port": 8080,
                "command": ["node", "-e",
                    "require('http').createServer((q, s) => s.end('ok')).listen(8080)"],
                "health_check": { "path": "/", "interval_ms": 100 },
            })),
        )
        .await?;
    Ok(s["id"].as_str().context("service id")?.to_owned())
}

/// busybox nslookup is not what applications use: glibc's `getaddrinfo` asks A and AAAA at once
/// on one UDP socket and gives up on an answer after the resolv.conf `timeout` (2 s). From the
/// Debian-based container `from`, web of shop (on the other node, so not in its hosts file)
/// resolves through its own resolv.conf: every answer arrives on the first try (well under
/// the 2 s timeout), over UDP, over TCP (`use-vc`) and with an EDNS option in the queries
/// (`edns0`); a name that does not exist fails at once as not found.
async fn glibc_resolves(from: &Placed, web: &Placed) -> anyhow::Result<()> {
    ensure!(
        from.node != web.node,
        "the glibc container and web of shop are both on {}",
        from.node
    );
    let (code, hosts, _) = in_container(from, &["cat", "/etc/hosts"]).await?;
    ensure!(
        code == 0 && !hosts.contains(&web.ip),
        "web of shop ({}) is in the glibc container's hosts file, so DNS would not be asked: {hosts}",
        web.ip
    );
    for options in ["", "use-vc", "edns0"] {
        for name in ["web.production.internal", "web"] {
            let started = Instant::now();
            let (code, out, err) = getaddrinfo(from, name, options).await?;
            let took = started.elapsed();
            ensure!(
                code == 0 && out.contains(&format!("\"{}\"", web.ip)),
                "glibc getaddrinfo({name}) with RES_OPTIONS='{options}' from {}: exit {code}, \
                 wanted web of shop's {}: {out}{err}",
                from.node,
                web.ip
            );
            // A lost A or AAAA answer costs glibc its 2 s timeout before the retry.
            ensure!(
                took < Duration::from_millis(1500),
                "glibc getaddrinfo({name}) with RES_OPTIONS='{options}' took {took:?}: an answer \
                 was lost and retried ({out})"
            );
            eprintln!("glibc getaddrinfo({name}) RES_OPTIONS='{options}': {took:?} {out}");
        }
    }
    let started = Instant::now();
    let (code, out, err) = getaddrinfo(from, "nothing.production.internal", "").await?;
    ensure!(
        code == 2 && out.trim() == "ENOTFOUND" && started.elapsed() < Duration::from_millis(1500),
        "a name that does not exist: exit {code} after {:?}: {out}{err}",
        started.elapsed()
    );
    Ok(())
}

/// `getaddrinfo(name)` by the container's own glibc (node's `dns.lookup`, AF_UNSPEC: A and
/// AAAA together), with `RES_OPTIONS` added to its resolv.conf's: exit 0 and the addresses as
/// JSON, or exit 2 and the error code.
async fn getaddrinfo(
    from: &Placed,
    name: &str,
    options: &str,
) -> anyhow::Result<(i32, String, String)> {
    let script = "require('dns').lookup(process.argv[1], { all: true }, (e, a) => { \
        if (e) { console.log(e.code); process.exit(2); } \
        console.log(JSON.stringify(a.map((x) => x.address))); })";
    let (pid, env) = (from.pid.to_string(), format!("RES_OPTIONS={options}"));
    let args: Vec<String> = [
        "env", &env, "timeout", "10", "nsenter", "-t", &pid, "-m", "-n", "--", "node", "-e",
        script, name,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)
    })
    .await?
}

/// Runs a program of the container's own image in its mount and network namespaces (its
/// /etc/resolv.conf, its address): exit code, stdout, stderr.
async fn in_container(from: &Placed, cmd: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let pid = from.pid.to_string();
    let mut args: Vec<String> = ["timeout", "10", "nsenter", "-t", &pid, "-m", "-n", "--"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(cmd.iter().map(|s| (*s).to_owned()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)
    })
    .await?
}

/// Runs a whole command line on the host: exit code, stdout, stderr.
fn run(cmd: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .with_context(|| format!("running {}", cmd.join(" ")))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The last `Address:` of a busybox nslookup answer (the first is the server's).
fn answered_address(answer: &str) -> Option<String> {
    answer
        .lines()
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(str::trim)
        .rfind(|a| !a.contains(':'))
        .map(str::to_owned)
}

/// Connects to `ip:port` from the container's network namespace (bash's /dev/tcp).
async fn in_container_netns(
    from: &Placed,
    ip: &str,
    port: &str,
) -> anyhow::Result<(i32, String, String)> {
    let pid = from.pid.to_string();
    let args: Vec<String> = [
        "timeout",
        "5",
        "nsenter",
        "-t",
        &pid,
        "-n",
        "--",
        "bash",
        "-c",
        "exec 3<>/dev/tcp/$0/$1",
        ip,
        port,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)
    })
    .await?
}

/// busybox nslookup of `name` from inside the container: whether it succeeded, and its output.
async fn nslookup(from: &Placed, name: &str) -> anyhow::Result<(bool, String)> {
    let (code, out, err) = in_container(from, &["nslookup", name]).await?;
    Ok((code == 0, format!("{out}{err}")))
}

/// nslookup until the answer names `ip` (the push reaches a node at the switch or at the
/// next monitor tick), for at most 15 s.
async fn eventually(from: &Placed, name: &str, ip: &str) -> anyhow::Result<(bool, String)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, answer) = nslookup(from, name).await?;
        if ok && answer.contains(ip) {
            return Ok((ok, answer));
        }
        ensure!(
            Instant::now() < deadline,
            "{name} from {} ({}) never answered {ip}: {answer}",
            from.node,
            from.ip
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn eventually_resolves(from: &Placed, name: &str, ip: &str) -> anyhow::Result<String> {
    Ok(eventually(from, name, ip).await?.1)
}
