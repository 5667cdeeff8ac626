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
