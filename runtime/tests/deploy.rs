//! Deploys against the real containerd, runc, kernel and registry.

mod common;

use common::{TestNode, http_get};
use runtime::agent::State;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_httpd_deploys_healthy_and_answers_on_its_ip() -> anyhow::Result<()> {
    let node = TestNode::start("deploy").await?;
    let project = stackpad_tests::unique_name("p");
    let spec = node.web(&project, "web");
    let status = node.agent.deploy(spec.clone()).await?;
    assert_eq!(status.state, State::Healthy, "{status:?}");
    let ip = status.ip.expect("an address");
    assert!(
        ip.octets()[0] == 10 && ip.octets()[1] == 200,
        "address {ip} outside 10.200/16"
    );
    let (code, body) = http_get(ip, 8080, "/").await?;
    assert_eq!(code, 200, "{body}");

    // A retried deploy of the same deployment finds the same container.
    let again = node.agent.deploy(spec.clone()).await?;
    assert_eq!(again.container_id, status.container_id);
    assert_eq!(
        again.pid, status.pid,
        "retry must not start a second process"
    );
    assert_eq!(node.agent.list(Some(&project), None).len(), 1);

    // Stop then remove releases everything.
    let stopped = node.agent.stop(&status.container_id, None).await?;
    assert_eq!(stopped.state, State::Stopped);
    assert!(node.agent.remove(&status.container_id, false).await?);
    assert!(
        !node.agent.remove(&status.container_id, false).await?,
        "second remove is a no-op"
    );
    assert!(
        node.leases().is_empty(),
        "address not released: {:?}",
        node.leases()
    );
    assert!(!std::path::Path::new(&format!("/run/netns/{}", status.container_id)).exists());
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&status.bridge)
            .exists(),
        "bridge left behind"
    );
    Ok(())
}
