//! A command run inside a running container: the health check of managed engines
//! (`pg_isready`, `mariadb-admin ping`, `redis-cli ping`; #14). Exit status 0 passes; past
//! its timeout the process is killed.
//!
//! Why not containerd's exec: runc 1.1 (this machine's 1.1.5) joins the container's user
//! namespace before its network namespace, and the agent makes the network namespace in the
//! host's user namespace (iproute2), so `setns` into it fails with EPERM ("error executing
//! setns process"; runc#4390, fixed in runc 1.2). The agent instead runs `nsenter` as host
//! root into the task's namespaces (user, mount, uts, ipc, net; root and working directory):
//! nsenter joins the network namespace before giving up its host rights, then enters the user
//! namespace as the container's user, with the container's environment, and execs the command
//! from the container's filesystem. Not joined: the pid and cgroup namespaces (nsenter would
//! fork and a timeout could not kill the command), so the probe is not charged to the
//! container's cgroup, and it runs without the container's seccomp filter and capability
//! bounding set. Only Stackpad's fixed engine probes use it: tenants cannot set exec probes
//! (the API's health check has no such field).

use std::process::Stdio;
use std::time::Duration;

use containerd_client::services::v1::GetContainerRequest;

use crate::containerd::Containerd;

/// Runs `argv` in container `id` (its task's pid `pid`); `Err` says what was seen.
pub async fn probe(
    c: &Containerd,
    id: &str,
    pid: u32,
    argv: &[String],
    timeout: Duration,
) -> Result<(), String> {
    if argv.is_empty() {
        return Err("the exec probe has no command".into());
    }
    let mut cmd = nsenter(c, id, pid, argv).await?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run nsenter: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "{} did not finish within {} ms",
            argv[0],
            timeout.as_millis()
        )),
        Ok(Err(e)) => Err(format!("waiting for {}: {e}", argv[0])),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or("").trim();
            let mut what = format!("{} exited with {}", argv[0], out.status);
            if !last.is_empty() {
                what.push_str(": ");
                what.extend(last.chars().take(200));
            }
            Err(what)
        }
    }
}

/// `argv` as a command that runs inside container `id` (its task's pid `pid`): `nsenter` into
/// its namespaces as the container's user, with the container's environment only, killed when
/// dropped. The caller sets stdio. Also used by the engines' dump and load (`agent::dump`).
pub async fn nsenter(
    c: &Containerd,
    id: &str,
    pid: u32,
    argv: &[String],
) -> Result<tokio::process::Command, String> {
    let process = process_spec(c, id).await?;
    let uid = process["user"]["uid"].as_u64().unwrap_or(0);
    let gid = process["user"]["gid"].as_u64().unwrap_or(0);
    let mut cmd = tokio::process::Command::new(nsenter_program());
    cmd.arg(format!("--target={pid}"))
        .args(["--user", "--mount", "--uts", "--ipc", "--net"])
        .args(["--root", "--wd"])
        .arg(format!("--setuid={uid}"))
        .arg(format!("--setgid={gid}"))
        .arg("--")
        .args(argv)
        .env_clear()
        .kill_on_drop(true);
    for pair in process["env"].as_array().into_iter().flatten() {
        if let Some((k, v)) = pair.as_str().and_then(|p| p.split_once('=')) {
            cmd.env(k, v);
        }
    }
    Ok(cmd)
}

/// `nsenter` by its absolute path (found once in the agent's PATH; the bare name when it is
/// not found, as before). A command named by a bare name whose
/// environment sets PATH (the container's does) cannot be started with posix_spawn: Rust's std
/// then forks the whole agent, copying its page tables, and each page either side writes next
/// is copied once more. Every probe (4 a second per database) and every dump paid that: in
/// bench/backup's perf profile of the agent, fork's copy_page_range and the copy-on-write
/// faults after it were ~0.5 s of the ~7 s the agent spent in a 1 GB dump.
fn nsenter_program() -> &'static std::path::Path {
    static PROGRAM: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("nsenter"))
                    .find(|p| p.is_absolute() && p.is_file())
            })
            .unwrap_or_else(|| "nsenter".into())
    })
}

/// The container's OCI process spec (user, env).
async fn process_spec(c: &Containerd, id: &str) -> Result<serde_json::Value, String> {
    let container = c
        .containers()
        .get(c.req(GetContainerRequest { id: id.to_owned() }))
        .await
        .map_err(|s| format!("containerd Containers.Get: {}", s.message()))?
        .into_inner()
        .container
        .ok_or("containerd returned no container")?;
    let spec = container.spec.ok_or("the container has no OCI spec")?;
    let spec: serde_json::Value = serde_json::from_slice(&spec.value)
        .map_err(|e| format!("the container's OCI spec is not JSON: {e}"))?;
    spec.get("process")
        .cloned()
        .ok_or_else(|| "the container's OCI spec has no process".into())
}
