//! The `stackpad.build.v1.Builder` gRPC service: parses requests into [`BuildRequest`]s at the
//! edge and answers from [`Builds`].

mod convert;

use std::pin::Pin;

use futures::Stream;
use proto::build::v1 as pb;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::build::BuildRunner;
use crate::manager::Builds;

pub use convert::parse_start;

/// The gRPC face of the node's builds.
#[derive(Debug)]
pub struct BuilderService<R> {
    builds: Builds<R>,
}

impl<R: BuildRunner> BuilderService<R> {
    pub fn new(builds: Builds<R>) -> Self {
        Self { builds }
    }

    pub fn into_server(self) -> pb::builder_server::BuilderServer<Self> {
        pb::builder_server::BuilderServer::new(self)
    }
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!("no build {id:?} on this node"))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::BuildEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<R: BuildRunner> pb::builder_server::Builder for BuilderService<R> {
    async fn start_build(
        &self,
        request: Request<pb::StartBuildRequest>,
    ) -> Result<Response<pb::BuildStatus>, Status> {
        let req = parse_start(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let status = self.builds.start(req);
        Ok(Response::new(convert::status(&status)))
    }

    type WatchBuildStream = EventStream;

    async fn watch_build(
        &self,
        request: Request<pb::WatchBuildRequest>,
    ) -> Result<Response<Self::WatchBuildStream>, Status> {
        let id = request.into_inner().build_id;
        let rx = self.builds.watch(&id).ok_or_else(|| not_found(&id))?;
        let stream = ReceiverStream::new(rx).map(|ev| Ok(convert::event(&ev)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_build(
        &self,
        request: Request<pb::CancelBuildRequest>,
    ) -> Result<Response<pb::BuildStatus>, Status> {
        let id = request.into_inner().build_id;
        let status = self
            .builds
            .cancel(&id)
            .await
            .ok_or_else(|| not_found(&id))?;
        Ok(Response::new(convert::status(&status)))
    }

    async fn get_build(
        &self,
        request: Request<pb::GetBuildRequest>,
    ) -> Result<Response<pb::BuildStatus>, Status> {
        let id = request.into_inner().build_id;
        let status = self.builds.get(&id).ok_or_else(|| not_found(&id))?;
        Ok(Response::new(convert::status(&status)))
    }
}
