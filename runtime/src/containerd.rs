//! The connection to containerd: one channel, one namespace, typed service clients.

use containerd_client::services::v1::{
    DeleteContainerRequest, DeleteImageRequest, DeleteNamespaceRequest, DeleteTaskRequest,
    KillRequest, ListContainersRequest, ListImagesRequest,
};
use containerd_client::services::v1::{
    DeleteRequest as DeleteLeaseRequest, ListRequest as ListLeasesRequest,
};
use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    images_client::ImagesClient, introspection_client::IntrospectionClient,
    leases_client::LeasesClient, snapshots::snapshots_client::SnapshotsClient,
    tasks_client::TasksClient, version_client::VersionClient,
};
use tonic::Request;
use tonic::transport::Channel;

use crate::error::{Result, RuntimeError};

/// containerd, seen through one namespace.
#[derive(Debug, Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
}

impl Containerd {
    pub async fn connect(socket: &std::path::Path, namespace: &str) -> Result<Self> {
        let channel =
            containerd_client::connect(socket)
                .await
                .map_err(|e| RuntimeError::Connect {
                    socket: socket.display().to_string(),
                    reason: format!("{e} (is containerd running? scripts/services up)"),
                })?;
        Ok(Self {
            channel,
            namespace: namespace.to_owned(),
        })
    }

    /// Kills and deletes every task, container and image of this namespace, then the namespace
    /// itself (best effort, each step ignoring what is already gone). For tests and test harnesses
    /// that own a namespace; the agent itself never calls it.
    pub async fn purge_namespace(&self) {
        let c = self;
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
        // Leases an agent killed in the middle of a pull left (they would keep their content
        // and snapshots, and with them the namespace, for their hour).
        let leases = c
            .leases()
            .list(c.req(ListLeasesRequest { filters: vec![] }))
            .await
            .map(|r| r.into_inner().leases)
            .unwrap_or_default();
        for lease in leases {
            let _ = c
                .leases()
                .delete(c.req(DeleteLeaseRequest {
                    id: lease.id,
                    sync: true,
                }))
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
        // The namespace empties once the garbage collector has taken its blobs and snapshots.
        for _ in 0..40 {
            let deleted = c
                .namespaces()
                .delete(DeleteNamespaceRequest {
                    name: c.namespace().to_owned(),
                })
                .await;
            if deleted.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A request in this namespace.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert(
            "containerd-namespace",
            self.namespace
                .parse()
                .expect("namespace validated as ascii"),
        );
        req
    }

    /// A request in this namespace under a lease (objects it creates are kept until the lease
    /// is deleted, whatever the garbage collector thinks).
    pub fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut req = self.req(msg);
        req.metadata_mut().insert(
            "containerd-lease",
            lease.parse().expect("lease id is ascii"),
        );
        req
    }

    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }
    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    pub fn introspection(&self) -> IntrospectionClient<Channel> {
        IntrospectionClient::new(self.channel.clone())
    }
    pub fn namespaces(
        &self,
    ) -> containerd_client::services::v1::namespaces_client::NamespacesClient<Channel> {
        containerd_client::services::v1::namespaces_client::NamespacesClient::new(
            self.channel.clone(),
        )
    }
    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }
    pub fn version(&self) -> VersionClient<Channel> {
        VersionClient::new(self.channel.clone())
    }

    /// The server's version string, e.g. `1.6.20~ds1`.
    pub async fn server_version(&self) -> Result<String> {
        let v = self
            .version()
            .version(())
            .await
            .map_err(|e| RuntimeError::containerd("Version", "-", e))?;
        Ok(v.into_inner().version)
    }

    /// Whether the server offers the Transfer service (containerd 1.7+).
    pub async fn has_transfer(&self) -> bool {
        let resp = self
            .introspection()
            .plugins(containerd_client::services::v1::PluginsRequest {
                filters: vec!["type==io.containerd.transfer.v1".into()],
            })
            .await;
        matches!(resp, Ok(r) if !r.get_ref().plugins.is_empty())
    }
}
