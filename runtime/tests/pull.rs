//! Pulls from the local registry into the real containerd 1.6 (no Transfer service).

mod common;

use runtime::image::{ImageStore, RegistryClient};

#[tokio::test]
async fn pull_unpacks_layers_and_skips_what_is_present() -> anyhow::Result<()> {
    let ns = common::Namespace::new("pull").await?;
    let store = ImageStore::new(
        ns.containerd.clone(),
        RegistryClient::new(vec![])?,
        "overlayfs",
    );
    let image = format!("{}/stackpad/busybox:1", ns.services.registry);
    let first = store.pull(&image).await?;
    assert!(first.digest.starts_with("sha256:"));
    assert_eq!(first.config.diff_ids.len(), 1);
    assert!(
        first.fetched,
        "the first pull into a fresh namespace fetched nothing: the test proves nothing"
    );
    // A second store (as after an agent restart) finds everything present.
    let store2 = ImageStore::new(
        ns.containerd.clone(),
        RegistryClient::new(vec![])?,
        "overlayfs",
    );
    let second = store2.pull(&image).await?;
    assert_eq!(second.digest, first.digest);
    assert_eq!(second.chain_id, first.chain_id);
    assert!(!second.fetched, "nothing should be fetched the second time");
    Ok(())
}

#[tokio::test]
async fn pull_refuses_unknown_and_foreign_images() -> anyhow::Result<()> {
    let ns = common::Namespace::new("pullbad").await?;
    let store = ImageStore::new(
        ns.containerd.clone(),
        RegistryClient::new(vec![])?,
        "overlayfs",
    );
    let reg = &ns.services.registry;
    let err = store
        .pull(&format!("{reg}/stackpad/nope-nothing:1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    let err = store
        .pull(&format!("{reg}/stackpad/busybox-arm64:1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("arm64"), "{err}");
    Ok(())
}

/// A loopback relay in front of the registry that the test can take down.
async fn relay(target: String) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            conns.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok((addr, task))
}

#[tokio::test]
async fn pinned_images_deploy_without_the_registry_once_present() -> anyhow::Result<()> {
    let ns = common::Namespace::new("pullpin").await?;
    let (registry, relay_task) = relay(ns.services.registry.clone()).await?;
    let store = ImageStore::new(
        ns.containerd.clone(),
        RegistryClient::new(vec![])?,
        "overlayfs",
    );
    let by_tag = store
        .pull(&format!("{registry}/stackpad/busybox:1"))
        .await?;
    let pinned = format!("{registry}/stackpad/busybox@{}", by_tag.digest);
    store.pull(&pinned).await?;

    // The registry goes away; a fresh store (as after an agent restart) still has the image.
    relay_task.abort();
    let _ = relay_task.await;
    let fresh = ImageStore::new(
        ns.containerd.clone(),
        RegistryClient::new(vec![])?,
        "overlayfs",
    );
    let offline = fresh.pull(&pinned).await?;
    assert_eq!(offline.digest, by_tag.digest);
    assert_eq!(offline.chain_id, by_tag.chain_id);
    assert!(!offline.fetched);
    // A tag has to be resolved, so it fails, naming the registry.
    let err = fresh
        .pull(&format!("{registry}/stackpad/busybox:1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&registry), "{err}");
    Ok(())
}
