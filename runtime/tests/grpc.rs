//! The NodeAgent gRPC service and /metrics, end to end over loopback sockets.

mod common;

use std::time::Duration;

use common::TestNode;
use futures::StreamExt;
use proto::node::v1 as pb;
use proto::node::v1::node_agent_client::NodeAgentClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn metrics(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_over_grpc_deploys_logs_and_removes() -> anyhow::Result<()> {
    let node = TestNode::start("grpc").await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (grpc_addr, metrics_addr, server) = runtime::daemon::serve(node.agent.clone(), async {
        let _ = stop_rx.await;
    })
    .await?;
    let mut client = NodeAgentClient::connect(format!("http://{grpc_addr}")).await?;
    let project = stackpad_tests::unique_name("p");
    let deployment = stackpad_tests::unique_name("d");
    let request = pb::DeployRequest {
        workload: Some(pb::Workload {
            organization_id: "org".into(),
            project_id: project.clone(),
            environment_id: "production".into(),
            service_id: "svc".into(),
            service_name: "talker".into(),
            deployment_id: deployment.clone(),
            service_type: pb::ServiceType::Worker as i32,
            environment_name: "production".into(),
            replica: 0,
        }),
        image: node.image("busybox:1"),
        command: vec!["sh".into(), "-c".into()],
        args: vec![
            "echo hello-out; echo hello-err >&2; while true; do echo tick; sleep 0.2; done".into(),
        ],
        env: [("GREETING".to_owned(), "hi".to_owned())].into(),
        resources: Some(pb::Resources {
            memory_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    };
    let deployed = client
        .deploy(request.clone())
        .await?
        .into_inner()
        .container
        .expect("status");
    assert_eq!(deployed.state, pb::ContainerState::Healthy as i32);
    assert!(
        deployed.ip_address.starts_with("10.200."),
        "{}",
        deployed.ip_address
    );
    let id = deployed.container_id.clone();

    // Bad input is INVALID_ARGUMENT naming the field.
    let mut bad = request.clone();
    bad.env.insert("0BAD".into(), "x".into());
    bad.workload.as_mut().expect("workload").deployment_id = stackpad_tests::unique_name("d");
    let err = client.deploy(bad).await.expect_err("bad env");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("env"), "{}", err.message());

    // Logs: tail (once both start-up lines are in the log, so the tail has them to give), then
    // follow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = client
            .logs(pb::LogsRequest {
                container_id: id.clone(),
                tail_lines: 100,
                follow: false,
            })
            .await?
            .into_inner();
        let mut tail = Vec::new();
        while let Some(e) = stream.next().await {
            tail.push(String::from_utf8_lossy(&e?.line).into_owned());
        }
        if tail.iter().any(|l| l == "hello-out") && tail.iter().any(|l| l == "hello-err") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the start-up lines never reached the log: {tail:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut logs = client
        .logs(pb::LogsRequest {
            container_id: id.clone(),
            tail_lines: 100,
            follow: true,
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen
        .iter()
        .filter(|l: &&(i32, String)| l.1 == "tick")
        .count()
        < 8
    {
        let next = tokio::time::timeout_at(deadline, logs.next()).await?;
        let e = next.ok_or_else(|| anyhow::anyhow!("log stream ended"))??;
        seen.push((e.stream, String::from_utf8_lossy(&e.line).into_owned()));
    }
    assert!(
        seen.contains(&(pb::LogStream::Stdout as i32, "hello-out".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(pb::LogStream::Stderr as i32, "hello-err".into())),
        "{seen:?}"
    );

    let listed = client
        .list(pb::ListRequest {
            project_id: project.clone(),
            deployment_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(listed.containers.len(), 1);
    let info = client.node_info(pb::NodeInfoRequest {}).await?.into_inner();
    assert!(
        info.containers_running >= 1 && info.memory_bytes_allocated >= 32 << 20,
        "{info:?}"
    );
    assert!(info.containerd_version.starts_with('1') || info.containerd_version.starts_with('2'));

    let text = metrics(metrics_addr).await?;
    assert!(
        text.contains("stackpad_node_containers{state=\"healthy\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "stackpad_node_container_memory_bytes{{container_id=\"{id}\""
        )),
        "{text}"
    );
    assert!(
        text.contains("stackpad_node_pull_duration_seconds_count 1"),
        "{text}"
    );

    let removed = client
        .remove(pb::RemoveRequest {
            container_id: id.clone(),
            force: false,
        })
        .await;
    assert_eq!(
        removed.expect_err("running").code(),
        tonic::Code::FailedPrecondition
    );
    let stopped = client
        .stop(pb::StopRequest {
            container_id: id.clone(),
            grace_period_ms: 100,
        })
        .await?
        .into_inner();
    assert_eq!(
        stopped.container.expect("status").state,
        pb::ContainerState::Stopped as i32
    );
    assert!(
        client
            .remove(pb::RemoveRequest {
                container_id: id.clone(),
                force: false
            })
            .await?
            .into_inner()
            .removed
    );
    let err = client
        .status(pb::StatusRequest { container_id: id })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let _ = stop_tx.send(());
    server.await?;
    Ok(())
}
