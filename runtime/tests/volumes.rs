//! Volumes against the real containerd and kernel: data kept across deployments and agent
//! restarts, the size enforced inside the container (ENOSPC), one running container per
//! volume, re-mounted when the mount is gone, removed with its data only when asked.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::TestNode;
use runtime::RuntimeError;
use runtime::spec::{DeploySpec, VolumeSpec};
use runtime::volume::Volumes;

const SIZE: u64 = 16 << 20;

/// A busybox shell on the service's volume `data` at /data (16 MiB), running `script`, then
/// sleeping (so it holds the volume).
fn on_volume(node: &TestNode, project: &str, service_id: &str, script: &str) -> DeploySpec {
    let mut s = node.shell(
        project,
        "db",
        &format!("{script}; echo script-done; exec sleep 3600"),
    );
    s.workload.service_id = service_id.to_owned();
    s.workload.service_type = 2;
    s.stop_grace_ms = 1_000;
    s.volumes = vec![VolumeSpec {
        name: "data".into(),
        mount_path: "/data".into(),
        size_bytes: SIZE,
    }];
    s
}

/// The container's log lines (both streams) once it printed `script-done`.
async fn script_output(node: &TestNode, id: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (lines, _) = node.agent.logs(id, 200, false)?;
        let text: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.line).into_owned())
            .collect();
        let text = text.join("\n");
        if text.contains("script-done") {
            return Ok(text);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "container {id} did not finish its script; output so far:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_mounted(path: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_keeps_its_data_enforces_its_size_and_has_one_holder() -> anyhow::Result<()> {
    let mut node = TestNode::start("vol").await?;
    let project = stackpad_tests::unique_name("p");
    let service = stackpad_tests::unique_name("svc");
    let volumes = Volumes::under_state_dir(&node.config.state_dir);
    let host_path = volumes.mount_path(&service, "data");

    // First deployment: writes a file, then tries to write 4x the volume's size.
    let first = node
        .agent
        .deploy(on_volume(
            &node,
            &project,
            &service,
            "echo one > /data/f; dd if=/dev/zero of=/data/big bs=1M count=64; echo dd-exit=$?; \
             rm -f /data/big",
        ))
        .await?;
    let out = script_output(&node, &first.container_id).await?;
    assert!(out.contains("No space left on device"), "{out}");
    assert!(out.contains("dd-exit=1"), "{out}");
    // The node is fine: the agent answers and the container still runs.
    assert!(node.agent.status(&first.container_id)?.state.is_running());
    assert!(
        is_mounted(&host_path),
        "volume mounted at {}",
        host_path.display()
    );
    let entries: Vec<String> = std::fs::read_dir(&host_path)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert_eq!(entries, ["f"], "a new volume is empty (no lost+found)");
    let owner = std::fs::metadata(host_path.join("f"))?;
    let base = first.id_map.expect("id range").base;
    assert_eq!(
        (owner.uid(), owner.gid()),
        (base, base),
        "written by the container's root"
    );
    let listed = node.agent.volumes(Some(&service))?;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].held_by.as_deref(),
        Some(first.container_id.as_str())
    );
    assert_eq!(listed[0].info.size_bytes, SIZE);

    // A second container cannot mount it while the first runs.
    let second_spec = on_volume(&node, &project, &service, "cat /data/f");
    let busy = node.agent.deploy(second_spec.clone()).await.unwrap_err();
    assert!(
        matches!(&busy, RuntimeError::VolumeBusy { container_id, .. } if *container_id == first.container_id),
        "{busy}"
    );
    // Nor can the volume be removed.
    let busy = node.agent.remove_volumes(&service, None).await.unwrap_err();
    assert!(matches!(busy, RuntimeError::VolumeBusy { .. }), "{busy}");

    // Stop the old, start the new on the same volume: the file is there.
    node.agent.stop(&first.container_id, None).await?;
    let second = node.agent.deploy(second_spec).await?;
    let out = script_output(&node, &second.container_id).await?;
    assert!(out.lines().any(|l| l == "one"), "{out}");

    // Agent restart (a new agent on the same directories): the running container is adopted
    // and still holds the volume.
    node.restart_agent().await?;
    assert_eq!(
        node.agent.volumes(Some(&service))?[0].held_by.as_deref(),
        Some(second.container_id.as_str())
    );

    // The mount gone (as after a reboot): the next container mounts it again, data intact.
    node.agent.stop(&second.container_id, None).await?;
    volumes.unmount(&service, "data")?;
    assert!(!is_mounted(&host_path));
    let third = node
        .agent
        .deploy(on_volume(
            &node,
            &project,
            &service,
            "cat /data/f; echo two >> /data/f",
        ))
        .await?;
    let out = script_output(&node, &third.container_id).await?;
    assert!(out.lines().any(|l| l == "one"), "{out}");
    assert!(is_mounted(&host_path));

    // Removal: refused while held, then unmounted and gone.
    node.agent.remove(&third.container_id, true).await?;
    let removed = node.agent.remove_volumes(&service, None).await?;
    assert_eq!(removed, vec!["data".to_owned()]);
    assert!(!is_mounted(&host_path));
    assert!(!host_path.exists());
    assert!(node.agent.volumes(Some(&service))?.is_empty());
    // Idempotent.
    assert!(node.agent.remove_volumes(&service, None).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_grows_and_refuses_to_shrink() -> anyhow::Result<()> {
    let node = TestNode::start("volgrow").await?;
    let project = stackpad_tests::unique_name("p");
    let service = stackpad_tests::unique_name("svc");
    let first = node
        .agent
        .deploy(on_volume(&node, &project, &service, "echo kept > /data/f"))
        .await?;
    script_output(&node, &first.container_id).await?;
    node.agent.stop(&first.container_id, None).await?;

    let mut bigger = on_volume(
        &node,
        &project,
        &service,
        "cat /data/f; dd if=/dev/zero of=/data/big bs=1M count=24; echo dd-exit=$?",
    );
    bigger.volumes[0].size_bytes = 32 << 20;
    let second = node.agent.deploy(bigger).await?;
    let out = script_output(&node, &second.container_id).await?;
    assert!(out.lines().any(|l| l == "kept"), "{out}");
    assert!(
        out.contains("dd-exit=0"),
        "24 MiB fit in the grown volume: {out}"
    );
    node.agent.stop(&second.container_id, None).await?;

    let smaller = on_volume(&node, &project, &service, "true");
    let err = node.agent.deploy(smaller).await.unwrap_err();
    assert!(err.to_string().contains("volumes.size_bytes"), "{err}");
    Ok(())
}
