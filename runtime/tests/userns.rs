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
                  && echo chown_rc=$?; echo reopened > /dev/stdout; echo bpf=$(ls -A /sys/fs/bpf | wc -l); \
                  echo net=$(ls /sys/class/net | wc -l); echo done; exec sleep 3600";
    let a = node.agent.deploy(node.shell(&p1, "a", script)).await?;
    let b = node.agent.deploy(node.shell(&p2, "b", script)).await?;
    let log = log_text(&node, &a.container_id, "done").await?;
    assert!(log.contains("uid=0 gid=0"), "{log}");
    assert!(
        log.contains("chown_rc=0"),
        "root inside chowns its files: {log}"
    );
    assert!(log.contains("reopened"), "{log}");
    assert!(log.contains("bpf=0"), "bpffs is masked: {log}");
    assert!(!log.contains("net=0"), "/sys is there: {log}");

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

/// A two-layer image in the local registry: stackpad/busybox:1's layer plus one layer holding
/// `home/f` owned by 1000:1000. Same bytes every run (a fixed name, nothing piles up).
async fn push_layered_image(registry: &str) -> anyhow::Result<(String, Vec<String>)> {
    use sha2::{Digest, Sha256};
    let digest = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let http = reqwest::Client::new();
    let base = format!("http://{registry}/v2");
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    let manifest: serde_json::Value = http
        .get(format!("{base}/stackpad/busybox/manifests/1"))
        .header("Accept", oci_manifest)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let mut config: serde_json::Value = http
        .get(format!("{base}/stackpad/busybox/blobs/{config_digest}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let layer = tar(&[
        ("home/", b"".as_slice(), 0o755, b'5'),
        ("home/f", b"hello\n".as_slice(), 0o644, b'0'),
    ]);
    let layer_digest = digest(&layer);
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("diff ids")
        .push(layer_digest.clone().into());
    let config_bytes = serde_json::to_vec(&config)?;
    let repo = "stackpad/test-userns-layers";
    let upload = |bytes: Vec<u8>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let d = digest(&bytes);
            let start = http
                .post(format!("{base}/{repo}/blobs/uploads/"))
                .send()
                .await?
                .error_for_status()?;
            let location = start
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| anyhow::anyhow!("upload without a location"))?
                .to_owned();
            let url = if location.starts_with("http") {
                location
            } else {
                format!("http://{registry}{location}")
            };
            let sep = if url.contains('?') { '&' } else { '?' };
            http.put(format!("{url}{sep}digest={d}"))
                .body(bytes)
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(d)
        }
    };
    let bottom = &manifest["layers"][0];
    http.post(format!(
        "{base}/{repo}/blobs/uploads/?mount={}&from=stackpad/busybox",
        bottom["digest"].as_str().expect("layer digest")
    ))
    .send()
    .await?
    .error_for_status()?;
    upload(layer.clone()).await?;
    let config_digest = upload(config_bytes.clone()).await?;
    let new_manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci_manifest,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_bytes.len()},
        "layers": [bottom, {"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": layer_digest, "size": layer.len()}],
    });
    http.put(format!("{base}/{repo}/manifests/1"))
        .header("Content-Type", oci_manifest)
        .body(serde_json::to_vec(&new_manifest)?)
        .send()
        .await?
        .error_for_status()?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff ids")
        .iter()
        .map(|d| d.as_str().unwrap_or_default().to_owned())
        .collect();
    Ok((format!("{registry}/{repo}:1"), diff_ids))
}

/// A ustar archive of `(path, content, mode, type)` entries owned by 1000:1000, mtime 0.
fn tar(entries: &[(&str, &[u8], u32, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, content, mode, kind) in entries {
        let mut h = [0u8; 512];
        let mut field = |at: usize, len: usize, v: &[u8]| {
            h[at..at + v.len().min(len)].copy_from_slice(&v[..v.len().min(len)])
        };
        field(0, 100, path.as_bytes());
        field(100, 8, format!("{mode:07o}\0").as_bytes());
        field(108, 8, b"0001750\0");
        field(116, 8, b"0001750\0");
        field(124, 12, format!("{:011o}\0", content.len()).as_bytes());
        field(136, 12, b"00000000000\0");
        field(148, 8, b"        ");
        field(156, 1, &[*kind]);
        field(257, 8, b"ustar\x0000");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layered_image_is_remapped_layer_by_layer() -> anyhow::Result<()> {
    let node = TestNode::start("usernsl").await?;
    let (image, diff_ids) = push_layered_image(&node.ns.services.registry).await?;
    let project = stackpad_tests::unique_name("p");
    let mut spec = node.shell(&project, "l", "ls -ln /home/f; echo done; exec sleep 3600");
    spec.image = image;
    let status = node.agent.deploy(spec).await?;
    let log = log_text(&node, &status.container_id, "done").await?;
    assert!(log.contains(" 1000 ") && log.contains("/home/f"), "{log}");
    let map = status.id_map.expect("user namespace");
    let pid = node.agent.status(&status.container_id)?.pid;
    let f = std::fs::metadata(format!("/proc/{pid}/root/home/f"))?;
    assert_eq!((f.uid(), f.gid()), (map.base + 1000, map.base + 1000));
    let bin = std::fs::symlink_metadata(format!("/proc/{pid}/root/bin"))?;
    assert_eq!(bin.uid(), map.base, "the lower layer is shifted too");

    // One remapped snapshot per layer, each on the one below.
    let c = node.agent.containerd();
    let chains = runtime::image::chain_ids(&diff_ids);
    let mut parent = String::new();
    for chain in &chains {
        let key = runtime::userns::snapshot::remapped_key(chain, map);
        let info = c
            .snapshots()
            .stat(c.req(
                containerd_client::services::v1::snapshots::StatSnapshotRequest {
                    snapshotter: node.config.snapshotter.clone(),
                    key: key.clone(),
                },
            ))
            .await?
            .into_inner()
            .info
            .expect("snapshot info");
        assert_eq!(info.parent, parent, "{key}");
        parent = key;
    }
    Ok(())
}
