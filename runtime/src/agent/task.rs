//! containerd operations on one container: snapshot, container record, task create/start,
//! signals, wait, delete. Each names the container in its error.

use std::collections::HashMap;
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetRequest, KillRequest, StartRequest, UpdateContainerRequest, WaitRequest,
};
use containerd_client::types::Mount;
use containerd_client::types::v1::Status as TaskStatus;

use crate::containerd::Containerd;
use crate::error::{Result, RuntimeError};
use crate::logs::TaskIo;
use crate::userns::IdMap;

/// What containerd says about a container's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Missing,
    Created,
    Running { pid: u32 },
    Stopped { exit_code: u32 },
    Other,
}

pub async fn task_state(c: &Containerd, id: &str) -> Result<TaskState> {
    let r = c
        .tasks()
        .get(c.req(GetRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        }))
        .await;
    match r {
        Err(s) if s.code() == tonic::Code::NotFound => Ok(TaskState::Missing),
        Err(s) => Err(RuntimeError::containerd("Tasks.Get", id, s)),
        Ok(r) => {
            let p = r.into_inner().process.unwrap_or_default();
            Ok(
                match TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown) {
                    TaskStatus::Created => TaskState::Created,
                    TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing => {
                        TaskState::Running { pid: p.pid }
                    }
                    TaskStatus::Stopped => TaskState::Stopped {
                        exit_code: p.exit_status,
                    },
                    TaskStatus::Unknown => TaskState::Other,
                },
            )
        }
    }
}

/// The rootfs snapshot of the container on top of the image's chain id (idempotent).
pub async fn prepare_rootfs(
    c: &Containerd,
    snapshotter: &str,
    id: &str,
    chain_id: &str,
) -> Result<Vec<Mount>> {
    let r = c
        .snapshots()
        .prepare(c.req(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: id.to_owned(),
            parent: chain_id.to_owned(),
            labels: HashMap::new(),
        }))
        .await;
    match r {
        Ok(r) => Ok(r.into_inner().mounts),
        Err(s) if s.code() == tonic::Code::AlreadyExists => rootfs_mounts(c, snapshotter, id).await,
        Err(s) => Err(RuntimeError::containerd("Snapshots.Prepare", id, s)),
    }
}

pub async fn rootfs_mounts(c: &Containerd, snapshotter: &str, id: &str) -> Result<Vec<Mount>> {
    c.snapshots()
        .mounts(c.req(MountsRequest {
            snapshotter: snapshotter.to_owned(),
            key: id.to_owned(),
        }))
        .await
        .map(|r| r.into_inner().mounts)
        .map_err(|s| RuntimeError::containerd("Snapshots.Mounts", id, s))
}

pub async fn remove_rootfs(c: &Containerd, snapshotter: &str, id: &str) -> Result<()> {
    let r = c
        .snapshots()
        .remove(c.req(RemoveSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: id.to_owned(),
        }))
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(RuntimeError::containerd("Snapshots.Remove", id, s)),
    }
}

/// Creates the container record; an existing one with the same id is replaced.
pub async fn create_container(c: &Containerd, container: Container) -> Result<()> {
    let id = container.id.clone();
    for attempt in 0..2 {
        let r = c
            .containers()
            .create(c.req(CreateContainerRequest {
                container: Some(container.clone()),
            }))
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists && attempt == 0 => {
                delete_container(c, &id).await?;
            }
            Err(s) => return Err(RuntimeError::containerd("Containers.Create", &id, s)),
        }
    }
    unreachable!("the loop returns")
}

pub async fn delete_container(c: &Containerd, id: &str) -> Result<()> {
    let r = c
        .containers()
        .delete(c.req(DeleteContainerRequest { id: id.to_owned() }))
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(RuntimeError::containerd("Containers.Delete", id, s)),
    }
}

/// Sets some labels of the container record.
pub async fn set_labels(c: &Containerd, id: &str, labels: &[(&str, String)]) -> Result<()> {
    let container = Container {
        id: id.to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        ..Default::default()
    };
    let paths = labels.iter().map(|(k, _)| format!("labels.{k}")).collect();
    c.containers()
        .update(c.req(UpdateContainerRequest {
            container: Some(container),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .map(|_| ())
        .map_err(|s| RuntimeError::containerd("Containers.Update", id, s))
}

/// The runc shim's task options (`containerd.runc.v1.Options`), only the fields the agent
/// sets: who owns the stdio pipes the shim makes.
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    #[prost(uint32, tag = "4")]
    io_uid: u32,
    #[prost(uint32, tag = "5")]
    io_gid: u32,
}

/// Task options giving the stdio pipes to the container's root (the range's base), so a
/// process that reopens `/dev/stdout` (`/proc/self/fd/1`) may.
fn task_options(id_map: Option<IdMap>) -> Option<prost_types::Any> {
    let map = id_map?;
    Some(prost_types::Any {
        type_url: "containerd.runc.v1.Options".to_owned(),
        value: prost::Message::encode_to_vec(&RuncOptions {
            io_uid: map.base,
            io_gid: map.base,
        }),
    })
}

/// Creates the task (the shim and the container's processes, not yet started); returns its pid.
pub async fn create_task(
    c: &Containerd,
    id: &str,
    rootfs: Vec<Mount>,
    io: &TaskIo,
    id_map: Option<IdMap>,
) -> Result<u32> {
    let req = CreateTaskRequest {
        container_id: id.to_owned(),
        rootfs,
        stdin: String::new(),
        stdout: io.stdout.display().to_string(),
        stderr: io.stderr.display().to_string(),
        terminal: false,
        checkpoint: None,
        options: task_options(id_map),
        runtime_path: String::new(),
    };
    let mut attempt = 0;
    loop {
        match c.tasks().create(c.req(req.clone())).await {
            Ok(r) => return Ok(r.into_inner().pid),
            // The previous task's bundle is still being removed: containerd forgets a deleted
            // task before its shim has removed the bundle directory, so when a stop and the
            // exit waiter delete the same task, one returns early and a new task created at
            // once finds the old directory ("file exists") or has its own new one removed
            // under it ("options.json: no such file", the shim's "getwd: no such file").
            Err(s) if attempt < 40 && bundle_race(&s) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(s) => return Err(RuntimeError::containerd("Tasks.Create", id, s)),
        }
    }
}

fn bundle_race(s: &tonic::Status) -> bool {
    let m = s.message();
    m.contains("file exists")
        || (s.code() == tonic::Code::NotFound && m.contains("options.json"))
        || m.contains("getwd: no such file")
}

pub async fn start_task(c: &Containerd, id: &str) -> Result<u32> {
    c.tasks()
        .start(c.req(StartRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        }))
        .await
        .map(|r| r.into_inner().pid)
        .map_err(|s| RuntimeError::containerd("Tasks.Start", id, s))
}

/// Sends a signal to every process of the container; a missing task is fine.
pub async fn kill(c: &Containerd, id: &str, signal: u32) -> Result<()> {
    let r = c
        .tasks()
        .kill(c.req(KillRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
            signal,
            all: true,
        }))
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::NotFound | tonic::Code::FailedPrecondition
            ) =>
        {
            Ok(())
        }
        Err(s) => Err(RuntimeError::containerd("Tasks.Kill", id, s)),
    }
}

/// Blocks until the task exits; returns its exit status.
pub async fn wait(c: &Containerd, id: &str) -> Result<u32> {
    c.tasks()
        .wait(c.req(WaitRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        }))
        .await
        .map(|r| r.into_inner().exit_status)
        .map_err(|s| RuntimeError::containerd("Tasks.Wait", id, s))
}

/// Deletes a stopped (or created) task; a missing one is fine. Retries briefly while the
/// task is still stopping.
pub async fn delete_task(c: &Containerd, id: &str) -> Result<()> {
    let mut last = None;
    for _ in 0..40 {
        let r = c
            .tasks()
            .delete(c.req(DeleteTaskRequest {
                container_id: id.to_owned(),
            }))
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                last = Some(s);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(s) => {
                // A concurrent delete (the exit waiter and a stop racing) closes the shim
                // under us: fine if the task is gone now.
                tokio::time::sleep(Duration::from_millis(10)).await;
                if matches!(task_state(c, id).await, Ok(TaskState::Missing)) {
                    return Ok(());
                }
                last = Some(s);
            }
        }
    }
    Err(RuntimeError::containerd(
        "Tasks.Delete",
        id,
        last.unwrap_or_else(|| tonic::Status::deadline_exceeded("task did not stop")),
    ))
}

/// Kills whatever runs and deletes the task.
pub async fn kill_and_delete(c: &Containerd, id: &str) -> Result<()> {
    if matches!(
        task_state(c, id).await?,
        TaskState::Running { .. } | TaskState::Created
    ) {
        kill(c, id, 9).await?;
    }
    delete_task(c, id).await
}

/// Whether the memory cgroup (v1) of the container recorded an OOM kill.
pub fn oom_killed(namespace: &str, id: &str) -> bool {
    let path = format!("/sys/fs/cgroup/memory/{namespace}/{id}/memory.oom_control");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
        })
        .is_some_and(|n| n > 0)
}

/// The runtime record of a new container.
pub fn runtime(name: &str) -> Option<Runtime> {
    Some(Runtime {
        name: name.to_owned(),
        options: None,
    })
}
