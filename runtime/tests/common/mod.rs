//! Test helpers: a containerd namespace of the test's own, emptied and deleted on drop.
#![allow(dead_code, reason = "each test file uses a subset")]

use containerd_client::services::v1::{
    DeleteContainerRequest, DeleteImageRequest, DeleteNamespaceRequest, DeleteTaskRequest,
    KillRequest, ListContainersRequest, ListImagesRequest,
};
use runtime::containerd::Containerd;
use stackpad_tests::{Services, service_down, unique_name};

pub struct Namespace {
    pub name: String,
    pub services: Services,
    pub containerd: Containerd,
}

impl Namespace {
    pub async fn new(prefix: &str) -> anyhow::Result<Self> {
        let services = Services::from_env();
        let name = unique_name(&format!("t-{prefix}"));
        let containerd = Containerd::connect(services.containerd_socket.as_ref(), &name)
            .await
            .map_err(|e| service_down("containerd", &services.containerd_socket, e))?;
        containerd
            .server_version()
            .await
            .map_err(|e| service_down("containerd", &services.containerd_socket, e))?;
        Ok(Self {
            name,
            services,
            containerd,
        })
    }
}

/// Kills and deletes every task, container and image of the namespace, then the namespace.
pub async fn purge(c: &Containerd) {
    let containers = c
        .containers()
        .list(c.req(ListContainersRequest { filters: vec![] }))
        .await
        .map(|r| r.into_inner().containers)
        .unwrap_or_default();
    for ct in containers {
        let _ = c
            .tasks()
            .kill(c.req(KillRequest {
                container_id: ct.id.clone(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            }))
            .await;
        for _ in 0..50 {
            let r = c
                .tasks()
                .delete(c.req(DeleteTaskRequest {
                    container_id: ct.id.clone(),
                }))
                .await;
            match r {
                Ok(_) => break,
                Err(s) if s.code() == tonic::Code::NotFound => break,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
        let _ = c
            .containers()
            .delete(c.req(DeleteContainerRequest { id: ct.id.clone() }))
            .await;
        let _ = c
            .snapshots()
            .remove(c.req(
                containerd_client::services::v1::snapshots::RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: ct.snapshot_key.clone(),
                },
            ))
            .await;
    }
    let images = c
        .images()
        .list(c.req(ListImagesRequest { filters: vec![] }))
        .await
        .map(|r| r.into_inner().images)
        .unwrap_or_default();
    for img in images {
        let _ = c
            .images()
            .delete(c.req(DeleteImageRequest {
                name: img.name,
                sync: true,
                target: None,
            }))
            .await;
    }
    let _ = c
        .namespaces()
        .delete(DeleteNamespaceRequest {
            name: c.namespace().to_owned(),
        })
        .await;
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let c = self.containerd.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async move {
                // A fresh channel: the test's runtime (and its connections) may be gone.
                if let Ok(fresh) = Containerd::connect(
                    std::path::Path::new(&Services::from_env().containerd_socket),
                    c.namespace(),
                )
                .await
                {
                    purge(&fresh).await;
                }
            });
        })
        .join();
    }
}
