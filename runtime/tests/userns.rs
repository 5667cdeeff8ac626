//! User namespaces: a container's root is an unprivileged host uid of its project's range,
//! ranges are disjoint per project and survive an agent restart, host-owned files stay out
//! of reach, and root inside still owns its rootfs.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::{TestNode, log_text};
use containerd_client::services::v1::{Container, GetContainerRequest, UpdateContainerRequest};
use runtime::userns::{RANGE_SIZE, UsernsFile};

/// The `Uid:`/`Gid:` line of a host pid: real, effective, saved, filesystem ids.
fn host_ids(pid: u32, field: &str) -> anyhow::Result<Vec<u32>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .map(|v| v.parse())
        .collect::<Result<_, _>>()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_inside_is_an_unprivileged_uid_of_the_projects_range() -> anyhow::Result<()> {
    let node = TestNode::start("userns").await?;
    let (p1, p2) = (
        stackpad_tests::unique_name("p"),
        stackpad_tests::unique_name("p"),
    );
    // stackpad/busybox:1 has no USER: it runs as root inside.
    // Reopening /dev/stdout (/proc/self/fd/1) needs the log pipe to belong to root inside.
    let script = "echo uid=$(id -u) gid=$(id -g); mkdir /data && chown 1000:1000 /data \
                  && echo chown_rc=$?; echo reopened > /dev/stdout; echo done; exec sleep 3600";
    let a = node.agent.deploy(node.shell(&p1, "a", script)).await?;
    let b = node.agent.deploy(node.shell(&p2, "b", script)).await?;
    let log = log_text(&node, &a.container_id, "done").await?;
    assert!(log.contains("uid=0 gid=0"), "{log}");
    assert!(
        log.contains("chown_rc=0"),
        "root inside chowns its files: {log}"
    );
    assert!(log.contains("reopened"), "{log}");

    let map_a = a.id_map.expect("container a has a user namespace");
    let map_b = b.id_map.expect("container b has a user namespace");
    assert!(map_a.base >= 100_000, "{map_a:?}");
    assert!(
        map_a.base.abs_diff(map_b.base) >= RANGE_SIZE,
        "two projects, overlapping ranges: {map_a:?} {map_b:?}"
    );
    let pid = node.agent.status(&a.container_id)?.pid;
    assert_eq!(host_ids(pid, "Uid")?, vec![map_a.base; 4]);
    assert_eq!(host_ids(pid, "Gid")?, vec![map_a.base; 4]);
    let pid_b = node.agent.status(&b.container_id)?.pid;
    assert_eq!(host_ids(pid_b, "Uid")?, vec![map_b.base; 4]);

    // What root inside made belongs to the range on the host.
    let data = std::fs::metadata(format!("/proc/{pid}/root/data"))?;
    assert_eq!(
        (data.uid(), data.gid()),
        (map_a.base + 1000, map_a.base + 1000)
    );
    let bin = std::fs::symlink_metadata(format!("/proc/{pid}/root/bin"))?;
    assert_eq!(bin.uid(), map_a.base, "the image's files are shifted");

    // A second container of the project shares the range.
    let a2 = node
        .agent
        .deploy(node.shell(&p1, "a2", "exec sleep 3600"))
        .await?;
    assert_eq!(a2.id_map, Some(map_a));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_owned_bind_target_is_not_writable_by_root_inside() -> anyhow::Result<()> {
    let node = TestNode::start("usernsw").await?;
    let project = stackpad_tests::unique_name("p");
    let mut spec = node.shell(&project, "w", "exec sleep 3600");
    spec.restart.mode = runtime::spec::RestartMode::Never;
    let first = node.agent.deploy(spec.clone()).await?;
    let id = first.container_id.clone();

    // A host directory owned by root, mode 0755, bound read-write into the container.
    let host = tempfile::tempdir()?;
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755))?;
    let c = node.agent.containerd();
    let record = c
        .containers()
        .get(c.req(GetContainerRequest { id: id.clone() }))
        .await?
        .into_inner()
        .container
        .expect("container record");
    let any = record.spec.expect("oci spec");
    let mut oci: serde_json::Value = serde_json::from_slice(&any.value)?;
    oci["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/host", "type": "bind",
            "source": host.path().display().to_string(), "options": ["rbind", "rw"],
        }));
    oci["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "touch /host/planted; echo host_rc=$?; echo x > /own; echo own_rc=$?; \
         echo y > /tmp/t; echo tmp_rc=$?; echo probed; exec sleep 3600"
    ]);
    c.containers()
        .update(c.req(UpdateContainerRequest {
            container: Some(Container {
                id: id.clone(),
                spec: Some(prost_types::Any {
                    type_url: any.type_url.clone(),
                    value: serde_json::to_vec(&oci)?,
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["spec".into()],
            }),
        }))
        .await?;
    // A new task of the container reads the updated spec.
    node.agent
        .stop(&id, Some(Duration::from_millis(100)))
        .await?;
    node.agent.deploy(spec).await?;
    let log = log_text(&node, &id, "probed").await?;
    assert!(
        log.contains("own_rc=0"),
        "root inside writes its rootfs: {log}"
    );
    assert!(log.contains("tmp_rc=0"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("host_rc=") && l != "host_rc=0"),
        "root inside wrote a host-owned directory: {log}"
    );
    assert!(
        log.contains("Permission denied") || log.contains("Operation not permitted"),
        "the refusal is EACCES/EPERM: {log}"
    );
    assert!(!host.path().join("planted").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_range_survives_an_agent_restart() -> anyhow::Result<()> {
    let mut node = TestNode::start("usernsr").await?;
    let project = stackpad_tests::unique_name("p");
    let other = stackpad_tests::unique_name("p");
    let first = node
        .agent
        .deploy(node.shell(&project, "r", "exec sleep 3600"))
        .await?;
    let map = first.id_map.expect("user namespace");
    // A project whose containers are gone loses its range at the next start.
    let gone = node
        .agent
        .deploy(node.shell(&other, "g", "exec sleep 3600"))
        .await?;
    node.agent.remove(&gone.container_id, true).await?;

    node.restart_agent().await?;
    let adopted = node.agent.status(&first.container_id)?;
    assert_eq!(adopted.id_map, Some(map), "adopted with its range");
    assert_eq!(
        host_ids(adopted.pid, "Uid")?[0],
        map.base,
        "still running in the range"
    );
    let second = node
        .agent
        .deploy(node.shell(&project, "r2", "exec sleep 3600"))
        .await?;
    assert_eq!(
        second.id_map,
        Some(map),
        "same project, same range after a restart"
    );
    let table = UsernsFile::new(&node.config.userns_dir)?;
    let held = table.update(|s| Ok(s.ranges.clone()))?;
    assert!(held.iter().any(|a| a.namespace == node.config.namespace
        && a.project == project
        && a.base == map.base));
    assert!(
        !held
            .iter()
            .any(|a| a.namespace == node.config.namespace && a.project == other),
        "{held:?}"
    );
    Ok(())
}
