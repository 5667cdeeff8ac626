//! Container logs: stdout/stderr read from FIFOs the agent owns, written to rotated files with
//! a size cap per container, fanned out to live followers, and handed to a [`LogSink`] (the
//! ClickHouse shipper of issue #9 plugs in there).

pub mod fifo;
pub mod file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::error::{Result, RuntimeError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp_nanos: i64,
    pub stream: Stream,
    pub line: Vec<u8>,
    pub truncated: bool,
}

/// Who a log line belongs to, for shipping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogLabels {
    pub container_id: String,
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    pub deployment_id: String,
}

/// Where lines go besides the node's files. Must not block: buffer and ship elsewhere.
pub trait LogSink: Send + Sync + std::fmt::Debug {
    fn ship(&self, labels: &LogLabels, line: &LogLine);

    /// The lines of one read from a container's stream (a sink may share work across them).
    fn ship_lines(&self, labels: &LogLabels, lines: &[LogLine]) {
        for line in lines {
            self.ship(labels, line);
        }
    }

    /// Appends the sink's own series to the node's `/metrics` text (none by default).
    fn render_metrics(&self, _out: &mut String) {}
}

/// No shipping: logs stay on the node (files and the `Logs` stream).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoShipping;

impl LogSink for NoShipping {
    fn ship(&self, _labels: &LogLabels, _line: &LogLine) {}
}

#[derive(Debug)]
struct ContainerLog {
    live: broadcast::Sender<LogLine>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ContainerLog {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// The logs of every container on the node.
#[derive(Debug)]
pub struct Logs {
    fifo_dir: PathBuf,
    log_dir: PathBuf,
    file_bytes: u64,
    files: u32,
    line_bytes: usize,
    sink: Arc<dyn LogSink>,
    open: Mutex<HashMap<String, ContainerLog>>,
}

/// FIFO paths to give containerd for a task.
#[derive(Debug, Clone)]
pub struct TaskIo {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Logs {
    pub fn new(
        run_dir: &Path,
        state_dir: &Path,
        file_bytes: u64,
        files: u32,
        line_bytes: usize,
        sink: Arc<dyn LogSink>,
    ) -> Self {
        Self {
            fifo_dir: run_dir.join("io"),
            log_dir: state_dir.join("logs"),
            file_bytes,
            files,
            line_bytes,
            sink,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn dir(&self, container_id: &str) -> PathBuf {
        self.log_dir.join(container_id)
    }

    /// Makes the FIFOs and starts reading them (once per container; again after an agent
    /// restart, when the task's shim still holds the write ends).
    pub fn open(&self, labels: &LogLabels) -> Result<TaskIo> {
        let id = &labels.container_id;
        let fifo_dir = self.fifo_dir.join(id);
        std::fs::create_dir_all(&fifo_dir).map_err(|e| RuntimeError::io(&fifo_dir, e))?;
        let io = TaskIo {
            stdout: fifo_dir.join("stdout"),
            stderr: fifo_dir.join("stderr"),
        };
        for p in [&io.stdout, &io.stderr] {
            fifo::ensure_fifo(p).map_err(|e| RuntimeError::io(p, e))?;
        }
        let mut open = self.open.lock().expect("logs lock");
        if open.contains_key(id) {
            return Ok(io);
        }
        let dir = self.dir(id);
        let writer = Arc::new(Mutex::new(
            file::RotatingFile::open(&dir, self.file_bytes, self.files)
                .map_err(|e| RuntimeError::io(&dir, e))?,
        ));
        let (live, _) = broadcast::channel(1024);
        let mut readers = Vec::new();
        for (path, stream) in [
            (io.stdout.clone(), Stream::Stdout),
            (io.stderr.clone(), Stream::Stderr),
        ] {
            let writer = writer.clone();
            let live = live.clone();
            let sink = self.sink.clone();
            let labels = labels.clone();
            let max = self.line_bytes;
            readers.push(tokio::spawn(async move {
                let shown = path.display().to_string();
                let result = fifo::pump(path, stream, max, move |lines| {
                    {
                        let mut file = writer.lock().expect("log writer");
                        let written = lines
                            .iter()
                            .try_for_each(|line| file.append(line))
                            .and_then(|()| file.flush());
                        if let Err(e) = written {
                            tracing::warn!(container_id = %labels.container_id, error = %e, "cannot write log file");
                        }
                    }
                    sink.ship_lines(&labels, &lines);
                    for line in lines {
                        let _ = live.send(line);
                    }
                })
                .await;
                if let Err(e) = result {
                    tracing::warn!(fifo = %shown, error = %e, "log reader stopped");
                }
            }));
        }
        open.insert(id.clone(), ContainerLog { live, readers });
        Ok(io)
    }

    /// Stops reading but leaves the FIFOs (the task's shim keeps writing into them; a later
    /// [`Logs::open`] picks up again).
    pub fn close_readers(&self, container_id: &str) {
        self.open.lock().expect("logs lock").remove(container_id);
    }

    /// Stops reading and removes the FIFOs (the files stay until [`Logs::remove`]).
    pub fn close(&self, container_id: &str) {
        self.open.lock().expect("logs lock").remove(container_id);
        let _ = std::fs::remove_dir_all(self.fifo_dir.join(container_id));
    }

    /// Removes everything of the container's logs.
    pub fn remove(&self, container_id: &str) {
        self.close(container_id);
        let _ = std::fs::remove_dir_all(self.dir(container_id));
    }

    /// The sink's series for `/metrics`.
    pub fn sink_metrics(&self) -> String {
        let mut out = String::new();
        self.sink.render_metrics(&mut out);
        out
    }

    /// The last `n` lines on disk.
    pub fn tail(&self, container_id: &str, n: usize) -> Vec<LogLine> {
        file::tail(&self.dir(container_id), self.files, n)
    }

    /// New lines as they are read, if the container's logs are open.
    pub fn follow(&self, container_id: &str) -> Option<broadcast::Receiver<LogLine>> {
        self.open
            .lock()
            .expect("logs lock")
            .get(container_id)
            .map(|l| l.live.subscribe())
    }

    pub fn has_files(&self, container_id: &str) -> bool {
        self.dir(container_id).exists()
    }

    /// Containers with log directories (for orphan clean-up).
    pub fn known(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.log_dir) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}
