//! Hardening visible from the host and from inside the container.

mod common;

use std::time::Duration;

use common::TestNode;
use runtime::agent::State;
use runtime::spec::RestartMode;

const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;

fn proc_status_field(pid: u32, field: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))
}

/// Waits until the container's log holds a line containing `needle`.
async fn wait_for_log(node: &TestNode, id: &str, needle: &str) -> anyhow::Result<Vec<String>> {
    for _ in 0..100 {
        let (lines, _) = node.agent.logs(id, 100, false)?;
        let text: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.line).into_owned())
            .collect();
        if text.iter().any(|l| l.contains(needle)) {
            return Ok(text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (lines, _) = node.agent.logs(id, 100, false)?;
    anyhow::bail!(
        "{needle:?} never appeared in the log: {:?}",
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.line).into_owned())
            .collect::<Vec<_>>()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_is_confined_and_mount_unshare_are_refused() -> anyhow::Result<()> {
    let node = TestNode::start("harden").await?;
    let project = stackpad_tests::unique_name("p");
    // Each refusal is checked by its own error message, next to a positive control showing the
    // tool itself works (so a missing binary or a broken shell cannot pass for a refusal).
    let script = "mkdir -p /mnt/x; mount >/dev/null; echo mount_list_rc=$?; \
                  mount -t tmpfs none /mnt/x 2>&1; echo mount_rc=$?; \
                  command -v unshare >/dev/null; echo unshare_present=$?; \
                  unshare -n true 2>&1; echo unshare_rc=$?; echo done; exec sleep 3600";
    let status = node
        .agent
        .deploy(node.shell(&project, "probe", script))
        .await?;
    let lines = wait_for_log(&node, &status.container_id, "done").await?;
    let has = |wanted: &str| lines.iter().any(|l| l == wanted);
    assert!(
        has("mount_list_rc=0") && has("unshare_present=0"),
        "positive controls failed: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("mount_rc=") && l != "mount_rc=0"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("mount:")
            && (l.contains("permission denied") || l.contains("not permitted"))),
        "mount failed for another reason than a refusal: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("unshare_rc=") && l != "unshare_rc=0"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("unshare:") && l.contains("not permitted")),
        "unshare failed for another reason than a refusal: {lines:?}"
    );

    // The container's process as the host sees it (pid 1 inside = the task pid).
    let pid = node.agent.status(&status.container_id)?.pid;
    assert_eq!(proc_status_field(pid, "Seccomp")?, "2");
    assert_eq!(proc_status_field(pid, "NoNewPrivs")?, "1");
    let cap_eff = u64::from_str_radix(&proc_status_field(pid, "CapEff")?, 16)?;
    assert_eq!(
        cap_eff & (1 << CAP_NET_RAW),
        0,
        "CAP_NET_RAW in CapEff {cap_eff:x}"
    );
    assert_eq!(
        cap_eff & (1 << CAP_SYS_ADMIN),
        0,
        "CAP_SYS_ADMIN in CapEff {cap_eff:x}"
    );
    let hostname =
        std::fs::read_to_string(format!("/proc/{pid}/root/etc/hostname")).unwrap_or_default();
    let _ = hostname; // the image's file; the UTS name is what counts:
    let uts = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-u", "hostname"])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&uts.stdout).trim(), "probe");
    assert!(node.agent.remove(&status.container_id, true).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_enforced_and_oom_reported() -> anyhow::Result<()> {
    let node = TestNode::start("oom").await?;
    let project = stackpad_tests::unique_name("p");
    // dd's 64 MiB buffer cannot fit in 8 MiB.
    let mut spec = node.shell(
        &project,
        "hog",
        "echo start; exec dd if=/dev/zero of=/dev/null bs=64M count=4",
    );
    spec.resources.memory_bytes = 8 << 20;
    spec.restart.mode = RestartMode::Never;
    let status = node.agent.deploy(spec).await?;
    let mut last = None;
    for _ in 0..100 {
        let s = node.agent.status(&status.container_id)?;
        if s.state == State::Failed {
            last = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = last.ok_or_else(|| {
        anyhow::anyhow!(
            "container never failed: {:?}",
            node.agent.status(&status.container_id)
        )
    })?;
    assert!(s.oom_killed, "not reported as OOM-killed: {s:?}");
    assert!(s.message.contains("out of memory"), "{}", s.message);
    assert!(node.agent.remove(&status.container_id, false).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_root_keeps_tmp_writable() -> anyhow::Result<()> {
    let node = TestNode::start("rofs").await?;
    let project = stackpad_tests::unique_name("p");
    let mut spec = node.shell(
        &project,
        "ro",
        "touch /etc/x 2>&1; echo etc_rc=$?; touch /tmp/x; echo tmp_rc=$?; echo done; exec sleep 3600",
    );
    spec.read_only_rootfs = true;
    let status = node.agent.deploy(spec).await?;
    let lines = wait_for_log(&node, &status.container_id, "done").await?;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("etc_rc=") && l != "etc_rc=0"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("touch:") && l.contains("Read-only file system")),
        "/etc/x was refused for another reason than the read-only root: {lines:?}"
    );
    assert!(lines.iter().any(|l| l == "tmp_rc=0"), "{lines:?}");
    assert!(node.agent.remove(&status.container_id, true).await?);
    Ok(())
}
