//! The `stackpad-node` binary: configuration from a file, flags and environment, serving
//! NodeAgent and /metrics, and a clean exit on SIGTERM.

mod common;

use std::time::Duration;

use proto::node::v1 as pb;
use proto::node::v1::node_agent_client::NodeAgentClient;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_with_file_env_and_flags_and_stops_on_sigterm() -> anyhow::Result<()> {
    let ns = common::Namespace::new("daemon").await?;
    let dir = tempfile::tempdir()?;
    let (grpc, metrics) = (free_port()?, free_port()?);
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"test-node\"\nisolation = \"disabled\"\nstate_dir = \"{}\"\nrun_dir = \"{}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n",
            dir.path().join("state").display(),
            dir.path().join("run").display()
        ),
    )?;
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_stackpad-node"))
        .args([
            "--config",
            &config.display().to_string(),
            "--namespace",
            &ns.name,
        ])
        .env("STACKPAD_NODE_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("CONTAINERD_ADDRESS", &ns.services.containerd_socket)
        .spawn()?;
    let mut daemon = Daemon(child);
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = NodeAgentClient::connect(format!("http://127.0.0.1:{grpc}")).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client =
        client.ok_or_else(|| anyhow::anyhow!("stackpad-node never listened on {grpc}"))?;
    let info = client.node_info(pb::NodeInfoRequest {}).await?.into_inner();
    assert_eq!(info.node_id, "test-node");
    assert!(
        info.cpu_millis_total >= 1000 && info.memory_bytes_total > 0,
        "{info:?}"
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", metrics)).await?;
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut text).await?;
    assert!(
        text.contains("stackpad_node_containers{state=\"healthy\"} 0"),
        "{text}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = daemon.0.try_wait()? {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.ok_or_else(|| anyhow::anyhow!("stackpad-node ignored SIGTERM"))?;
    assert!(status.success(), "{status:?}");

    // Bad configuration is refused with the key named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stackpad-node"))
        .args(["--listen", "not-an-address"])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    Ok(())
}
