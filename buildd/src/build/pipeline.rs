//! The real build: clone, detect, generate the Dockerfile, solve with BuildKit, push.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{self, UnboundedSender};

use super::{
    BuildError, BuildOutcome, BuildRequest, BuildRunner, BuildState, LogLine, LogStream, Progress,
    now_nanos,
};
use crate::buildkit::{Endpoint, ProgressEvent, ProgressTracker, SolveSpec, session, solve};
use crate::context::{ArchiveSpec, ContextServer, FileReady, archive};
use crate::detect::Detection;
use crate::detect::{Framework, PackageManager, RepoSnapshot, detect};
use crate::dockerfile::{
    BaseImages, DEPS_TAR, GENERATED_NAME, NodeChoice, STATIC_SERVER, STATIC_SERVER_BINARY, Served,
    cache_key, failure_cause, generate,
};
use crate::engine::Engine;
use crate::source::deps::{self, DepsCache, DepsError, Platform};
use crate::source::files::read_checkout_file;
use crate::source::{Checkout, FetchSettings, checkout};

/// Everything a build needs from the node.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub buildkit: Endpoint,
    /// dockerd, where the `moby` exporter leaves the image and the push happens.
    pub engine: Engine,
    pub contexts: ContextServer,
    pub bases: BaseImages,
    /// Checkouts live under here while a build runs.
    pub work_dir: PathBuf,
    /// Network of `RUN` steps: `none` keeps builds off the network.
    pub network_mode: String,
    /// How the context reaches BuildKit.
    pub context_transport: ContextTransport,
    /// How sources are fetched (sandbox, egress policy, local roots).
    pub fetch: Arc<FetchSettings>,
}

/// How a build's context reaches BuildKit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextTransport {
    /// BuildKit's session on dockerd (`POST /session`): file sync straight from the checkout.
    Session,
    /// A tarball on buildd's loopback HTTP listener (works with any BuildKit on this node).
    Http,
}

/// Removes a build's work folder when the build ends, however it ends.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The detect step's line naming the Node major chosen and what asked for it.
fn log_node(events: &UnboundedSender<Progress>, major: u64, request: &crate::detect::NodeRequest) {
    log(
        events,
        "detect",
        format!(
            "node {major} ({} asks for {:?})",
            request.source, request.spec
        ),
    );
}

fn log(events: &UnboundedSender<Progress>, step: &str, line: impl Into<String>) {
    let _ = events.send(Progress::Log(LogLine {
        timestamp_nanos: now_nanos(),
        step: step.to_owned(),
        line: line.into(),
        stream: LogStream::Stdout,
    }));
}

/// For an app in a subdirectory without a lock file of its own: the subdirectory and the lock
/// file of the nearest folder above it in the repository that has one (a workspace root), as
/// `dir/package-lock.json` from the repository's root. The folders between the root and the
/// app are real folders (the checkout refused symlinks there); the lock file's name is only
/// looked at, never followed.
fn workspace_lock(co: &Checkout) -> Option<(String, String)> {
    let sub = co.app_dir.strip_prefix(&co.repo).ok()?;
    if sub.as_os_str().is_empty() {
        return None;
    }
    sub.ancestors().skip(1).find_map(|dir| {
        PackageManager::LOCK_FILES.iter().find_map(|(name, _)| {
            let rel = dir.join(name);
            std::fs::symlink_metadata(co.repo.join(&rel))
                .is_ok()
                .then(|| (sub.display().to_string(), rel.display().to_string()))
        })
    })
}

/// Largest lock file read.
const MAX_LOCK_FILE: u64 = 64 * 1024 * 1024;

/// What a build fetches into its dependency cache before the install step: the plan, and the
/// lock file it came from.
struct Planned {
    plan: deps::FetchPlan,
    lock: String,
}

impl Pipeline {
    /// What to fetch of the app's registry dependencies into its dependency cache (see
    /// [`crate::source::deps`]); `None` when there is nothing to fetch.
    fn plan_dependencies(
        &self,
        co: &Checkout,
        snapshot: &RepoSnapshot,
        detection: &Detection,
    ) -> Result<Option<Planned>, DepsError> {
        let (Some(pm), Some(package_json)) = (detection.package_manager, &snapshot.package_json)
        else {
            return Ok(None);
        };
        if detection.framework == Framework::Dockerfile {
            return Ok(None);
        }
        if pm == PackageManager::Bun {
            return Err(DepsError::Unsupported {
                manager: pm.name().to_owned(),
            });
        }
        let Some(lock_file) = &detection.lock_file else {
            return if deps::declares_dependencies(package_json) {
                Err(match workspace_lock(co) {
                    Some((subdirectory, lock_file)) => DepsError::WorkspaceMember {
                        subdirectory,
                        lock_file,
                    },
                    None => DepsError::NoLockFile {
                        manager: pm.name(),
                        lock_file: deps::lock_file_of(pm),
                    },
                })
            } else if pm == PackageManager::Npm {
                Ok(None)
            } else {
                // No dependencies, but the app's scripts may call its package manager.
                Ok(Some(Planned {
                    plan: deps::plan_tool_only(pm, package_json)?,
                    lock: String::new(),
                }))
            };
        };
        let lock = read_checkout_file(&co.app_dir, std::path::Path::new(lock_file), MAX_LOCK_FILE)
            .map_err(|source| DepsError::Cache {
                what: format!("read {lock_file}"),
                source,
            })?
            .unwrap_or_default();
        let lock = String::from_utf8(lock).map_err(|_| DepsError::InvalidLock {
            file: lock_file.clone(),
            reason: "it is not UTF-8".into(),
        })?;
        let plan = match pm {
            PackageManager::Pnpm => deps::plan_pnpm(package_json, &lock)?,
            PackageManager::Yarn => deps::plan_yarn(package_json, &lock)?,
            _ => deps::plan_npm(package_json, &lock, &Platform::host())?,
        };
        if plan.specs.is_empty() {
            return Ok(None);
        }
        Ok(Some(Planned { plan, lock }))
    }

    /// The node's dependency cache.
    fn deps_cache(&self) -> DepsCache {
        DepsCache {
            root: self.work_dir.join(deps::DEPS_DIR),
            timeout: self.fetch.timeout,
            platform: Platform::host(),
            owner: (self.fetch.uid, self.fetch.gid),
        }
    }
}

impl BuildRunner for Pipeline {
    async fn run(
        &self,
        req: BuildRequest,
        events: UnboundedSender<Progress>,
    ) -> Result<BuildOutcome, BuildError> {
        let id = req.id.clone();
        let dir = self
            .work_dir
            .join(format!("{id}-{}", uuid::Uuid::new_v4().simple()));
        let work = WorkDir(dir.clone());
        let work_err = |source| BuildError::WorkDir {
            id: id.clone(),
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(work_err)?;

        let _ = events.send(Progress::State(BuildState::Cloning));
        let clone_events = events.clone();
        let co = checkout(&self.fetch, &req.source, &work.0.join("src"), &mut |l| {
            log(&clone_events, "clone", l)
        })
        .await
        .map_err(|source| BuildError::Source {
            id: id.clone(),
            source,
        })?;

        // Report the commit before detection, so a failed detection still says what it read.
        let _ = events.send(Progress::Detected {
            commit: co.commit.clone(),
            framework: String::new(),
            port: 0,
        });
        let snapshot = RepoSnapshot::read(&co.app_dir).map_err(|source| BuildError::Detect {
            id: id.clone(),
            source,
        })?;
        let detection = detect(&snapshot).map_err(|source| BuildError::Detect {
            id: id.clone(),
            source,
        })?;
        // The Node the app asks for: the node image's, or another major's image that meets it.
        let mut bases = self.bases.clone();
        if let (Some(request), Some(default)) = (&detection.node, self.bases.node_major())
            && detection.framework != Framework::Dockerfile
        {
            let major = match self.bases.for_request(&request.spec) {
                NodeChoice::Default => default,
                NodeChoice::Major { major, image } => {
                    bases.node = image;
                    major
                }
                NodeChoice::Unmet { offered } => {
                    return Err(BuildError::Detect {
                        id: id.clone(),
                        source: crate::detect::DetectError::NodeVersion {
                            file: request.source.clone(),
                            spec: request.spec.clone(),
                            offered,
                        },
                    });
                }
            };
            log_node(&events, major, request);
        } else if detection.node.is_none()
            && let Some((major, image, request)) =
                self.bases.for_dependencies(&detection.dependency_node)
        {
            // The app asks for nothing, but a dependency of its own needs a newer Node.
            bases.node = image;
            log_node(&events, major, request);
        }
        let framework = detection.framework.name().to_owned();
        let _ = events.send(Progress::Detected {
            commit: co.commit.clone(),
            framework: framework.clone(),
            port: detection.port,
        });
        log(
            &events,
            "detect",
            format!(
                "detected {framework}{}, port {}",
                detection
                    .package_manager
                    .map(|p| format!(" ({})", p.name()))
                    .unwrap_or_default(),
                detection.port
            ),
        );

        let mut build_args = req.build_args.clone();
        if req.memory_limit_bytes > 0 && detection.framework != Framework::Dockerfile {
            // Node's heap is what runs small build machines out of memory; cap it below the limit.
            let heap_mib = req.memory_limit_bytes / (1024 * 1024) * 3 / 4;
            build_args.push((
                "NODE_OPTIONS".into(),
                format!("--max-old-space-size={heap_mib}"),
            ));
        }
        let deps_error = |source| BuildError::Dependencies {
            id: id.clone(),
            source,
        };
        let planned = self
            .plan_dependencies(&co, &snapshot, &detection)
            .map_err(deps_error)?;
        // Served on the context listener while this build runs; BuildKit fetches them itself.
        // The dependencies' URL is handed out before they are fetched: the solve starts beside
        // the fetch, and BuildKit's request for the tarball waits for it (`FileReady`).
        let deps_cache = self.deps_cache();
        let app_key = cache_key(&req.image);
        let package_json = snapshot.package_json.as_deref().unwrap_or_default();
        let (deps_served, deps_ready): (_, Option<FileReady>) = match &planned {
            Some(p) => {
                let dir = deps_cache.folder(&app_key, package_json, &p.lock, &p.plan);
                let (served, ready) = self.contexts.serve_file(
                    &format!("deps:{}", dir.display()),
                    dir.join(DEPS_TAR),
                    DEPS_TAR,
                );
                (Some(served), Some(ready))
            }
            None => (None, None),
        };
        let static_served = detection.framework.is_static().then(|| {
            self.contexts.serve_bytes(
                STATIC_SERVER,
                bytes::Bytes::from_static(STATIC_SERVER_BINARY),
                STATIC_SERVER,
            )
        });
        let tool_spec = planned
            .as_ref()
            .and_then(|p| p.plan.tool.as_ref())
            .map(deps::Tool::spec);
        let arg_names: Vec<String> = build_args.iter().map(|(k, _)| k.clone()).collect();
        let generated = generate(
            &detection,
            &bases,
            &arg_names,
            &app_key,
            Served {
                deps: deps_served.as_ref().map(|s| s.url.as_str()),
                static_server: static_served.as_ref().map(|s| s.url.as_str()),
                tool: tool_spec.as_deref(),
            },
        );
        if let Some(text) = &generated {
            for line in text.lines() {
                log(&events, "dockerfile", line);
            }
        }
        let dockerfile = if generated.is_some() {
            GENERATED_NAME
        } else {
            "Dockerfile"
        };
        let image = format!("{}:{}", req.image, co.commit);
        let cache_ref = if req.cache_ref.is_empty() {
            format!("{}:buildcache", req.image)
        } else {
            req.cache_ref.clone()
        };
        // buildkitd pushes from its `image` exporter; dockerd's embedded BuildKit only has
        // `moby` (the image lands in dockerd), so the push goes through dockerd's API.
        let exporter = match self.buildkit {
            Endpoint::Buildkitd(_) => "image",
            Endpoint::Dockerd(_) => "moby",
        };
        let push = exporter == "image";
        let tracker = Arc::new(Mutex::new(ProgressTracker::default()));
        // The context, the session and the solve, up to the step that installs the fetched
        // dependencies, run beside the fetch.
        let solving = async {
            let (served, session) = match (self.context_transport, &self.buildkit) {
                (ContextTransport::Session, Endpoint::Dockerd(socket)) => {
                    // The generated Dockerfile goes to a folder of buildd's own beside the checkout,
                    // never into the checkout: a name there may be a tenant's symlink to a host file.
                    let dockerfile_dir = match &generated {
                        Some(text) => {
                            let gen_dir = work.0.join("generated");
                            std::fs::create_dir_all(&gen_dir).map_err(work_err)?;
                            std::fs::write(gen_dir.join(GENERATED_NAME), text).map_err(work_err)?;
                            gen_dir
                        }
                        None => co.app_dir.clone(),
                    };
                    let dirs = HashMap::from([
                        ("context".to_owned(), co.app_dir.clone()),
                        ("dockerfile".to_owned(), dockerfile_dir),
                    ]);
                    // One key per app: BuildKit keeps what it copied under it for the next build.
                    let shared_key = format!("stackpad-{}", req.image);
                    let secrets = req
                        .secrets
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                        .collect();
                    let session =
                        session::open(socket, &shared_key, dirs, secrets, self.engine.auth.clone())
                            .await
                            .map_err(|e| BuildError::BuildKit {
                                id: id.clone(),
                                detail: format!("cannot open a session on dockerd: {e}"),
                            })?;
                    (None, Some(session))
                }
                _ => {
                    let spec = ArchiveSpec {
                        repo: &co.repo,
                        subdirectory: &req.source.subdirectory,
                        generated: generated.as_deref().map(|t| (GENERATED_NAME, t)),
                        submodules: req.source.submodules,
                        sandbox: &co.sandbox,
                    };
                    let tar =
                        archive(spec, &work.0)
                            .await
                            .map_err(|source| BuildError::Context {
                                id: id.clone(),
                                source,
                            })?;
                    (Some(self.contexts.serve(tar)), None)
                }
            };

            let _ = events.send(Progress::State(BuildState::Building));
            let client = self
                .buildkit
                .connect()
                .await
                .map_err(|e| BuildError::BuildKit {
                    id: id.clone(),
                    detail: e.to_string(),
                })?;
            let spec = SolveSpec {
                reference: format!(
                    "stackpad-{id}-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ),
                context_url: served.as_ref().map(|c| c.url.clone()).unwrap_or_default(),
                session: session.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
                dockerfile: dockerfile.to_owned(),
                build_args,
                image_names: vec![image.clone(), cache_ref.clone()],
                cache_imports: vec![cache_ref.clone()],
                inline_cache: true,
                network_mode: self.network_mode.clone(),
                exporter: exporter.into(),
                push,
            };
            let (status_tx, mut status_rx) = mpsc::channel(256);
            let forward = {
                let tracker = tracker.clone();
                let events = events.clone();
                tokio::spawn(async move {
                    while let Some(msg) = status_rx.recv().await {
                        let batch = match tracker.lock() {
                            Ok(mut t) => t.apply(&msg),
                            Err(_) => return,
                        };
                        for ev in batch {
                            let _ = events.send(match ev {
                                ProgressEvent::Step(s) => Progress::Step(s),
                                ProgressEvent::Log {
                                    timestamp_nanos,
                                    step,
                                    line,
                                    stderr,
                                } => Progress::Log(LogLine {
                                    timestamp_nanos,
                                    step,
                                    line,
                                    stream: if stderr {
                                        LogStream::Stderr
                                    } else {
                                        LogStream::Stdout
                                    },
                                }),
                            });
                        }
                    }
                })
            };
            let solved = solve(&client, &spec, status_tx).await;
            let _ = forward.await;
            drop(served);
            drop(session);
            Ok::<_, BuildError>(solved)
        };
        let fetch = async {
            let Some(p) = &planned else {
                return Ok(None);
            };
            let log_events = events.clone();
            let mut log_line = move |l: String| log(&log_events, "dependencies", l);
            deps_cache
                .fetch(
                    &co.sandbox,
                    &app_key,
                    package_json,
                    &p.lock,
                    &p.plan,
                    &mut log_line,
                )
                .await
                .map(Some)
        };
        let solved = {
            let mut solving = std::pin::pin!(solving);
            tokio::select! {
                biased;
                fetched = fetch => {
                    // A failed fetch ends the build with its own error; dropping the solve cancels
                    // it, and BuildKit's request for the tarball is answered 503.
                    fetched.map_err(deps_error)?;
                    if let Some(ready) = deps_ready {
                        ready.ready();
                    }
                    solving.await
                }
                // The solve ended before the fetch: it failed before the install step.
                solved = &mut solving => solved,
            }
        }?;
        let (failed, (cached_steps, total_steps)) = match tracker.lock() {
            Ok(t) => (t.failed_step().cloned(), t.cache_counts()),
            Err(_) => (None, (0, 0)),
        };
        let exporter_response = match solved {
            Ok(response) => response,
            Err(crate::buildkit::SolveError::Failed { message, .. }) => {
                return Err(match failed {
                    Some(step) => BuildError::Step {
                        id,
                        cause: generated
                            .as_ref()
                            .and_then(|_| failure_cause(&detection, &step.name)),
                        step: step.name,
                        message: step.error.unwrap_or(message),
                    },
                    None => BuildError::Solve { id, message },
                });
            }
        };
        if push {
            let digest = exporter_response
                .get("containerimage.digest")
                .cloned()
                .unwrap_or_default();
            log(
                &events,
                "push",
                format!("pushed {image}@{digest} (by BuildKit)"),
            );
            return Ok(BuildOutcome {
                commit: co.commit,
                framework,
                port: detection.port,
                image,
                digest,
                cached_steps,
                total_steps,
            });
        }

        let _ = events.send(Progress::State(BuildState::Pushing));
        log(&events, "push", format!("pushing {image}"));
        let digest = self
            .engine
            .push(&image)
            .await
            .map_err(|source| BuildError::Push {
                id: id.clone(),
                source,
            })?;
        log(&events, "push", format!("pushed {image}@{digest}"));
        // The cache tag (same image, so only a manifest put) carries the inline cache for the
        // next build of this app on any node. It is pushed after the build reports success:
        // a build never waits for, or fails because of, its cache export. The commit tag is
        // then dropped locally (the layers stay in BuildKit's cache); the cache tag stays, so
        // dockerd holds one image per app and a newer build's tag is never removed under it.
        log(
            &events,
            "push",
            format!("exporting cache to {cache_ref} in the background"),
        );
        let engine = self.engine.clone();
        let build_id = id.clone();
        let commit_tag = image.clone();
        tokio::spawn(async move {
            if let Err(e) = engine.push(&cache_ref).await {
                tracing::warn!(build = %build_id, cache = %cache_ref, error = %e, "cache export failed");
            }
            if let Err(e) = engine.remove_image(&commit_tag).await {
                tracing::warn!(build = %build_id, image = %commit_tag, error = %e, "cannot untag local image");
            }
        });
        Ok(BuildOutcome {
            commit: co.commit,
            framework,
            port: detection.port,
            image,
            digest,
            cached_steps,
            total_steps,
        })
    }
}
