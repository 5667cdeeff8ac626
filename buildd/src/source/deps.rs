//! Dependencies of a build, fetched before BuildKit runs: in the checkout's fetch sandbox (its
//! own network namespace), by npm, through an egress proxy that serves the package registry's
//! host and nothing else, into a cache folder kept per app and keyed by the lock file's digest.
//! BuildKit's `RUN` steps keep network `none`: the generated Dockerfile mounts that folder and
//! installs from it offline (install scripts run there, without a network).
//!
//! Before anything is fetched the lock file is read here: every package must come from the
//! registry (or a `file:` path inside the repository) and the lock file must match
//! `package.json`; packages for other platforms (another OS, CPU or libc) are left out. A
//! rebuild with an unchanged lock file downloads nothing: the folder is there already. A new
//! lock file starts from a copy of the app's previous folder, so only new packages are
//! downloaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest as _;

use super::Sandbox;
use super::egress::EgressEvent;

/// The package registry dependencies come from (and the only host a fetch may reach).
pub const NPM_REGISTRY: &str = "https://registry.npmjs.org/";
/// The registry's host.
pub const NPM_REGISTRY_HOST: &str = "registry.npmjs.org";

/// The folder of the build node's work dir the dependency cache lives in (kept across
/// restarts).
pub const DEPS_DIR: &str = "dependencies";

/// Specs per `npm cache add` (the sandbox's spec is one command-line argument: < 128 KiB).
const CHUNK_BYTES: usize = 48 * 1024;
/// Bumped when what a cache folder holds changes, so old folders are not reused.
const FORMAT: &str = "npm-cache-v2";

/// Why dependencies could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error(
        "package.json has dependencies but there is no lock file: run `npm install` and commit \
         package-lock.json, so builds install exactly what you tested"
    )]
    NoLockFile,
    #[error("{file} is not valid: {reason}")]
    InvalidLock { file: String, reason: String },
    #[error(
        "package-lock.json has lockfileVersion {version}: only versions 2 and 3 are supported \
         (npm 7 or later writes them; run `npm install` with a recent npm and commit the lock file)"
    )]
    LockVersion { version: u64 },
    #[error(
        "lock file mismatch: package.json and package-lock.json do not agree ({detail}); run \
         `npm install` and commit package-lock.json"
    )]
    LockMismatch { detail: String },
    #[error(
        "package-lock.json: {package} comes from {resolved}, which is not the package registry \
         ({NPM_REGISTRY}); builds fetch dependencies from the registry only (or file: paths \
         inside the repository)"
    )]
    ForeignSource { package: String, resolved: String },
    #[error(
        "{manager} projects cannot fetch dependencies yet: only npm (package-lock.json) is \
         supported; use npm, or add a Dockerfile"
    )]
    Unsupported { manager: String },
    #[error("fetching dependencies from {NPM_REGISTRY} failed: {detail}")]
    Fetch { detail: String },
    #[error("fetching dependencies took longer than {seconds}s: stopped")]
    TimedOut { seconds: u64 },
    #[error("the dependency cache could not {what}: {source}")]
    Cache {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sandbox(#[from] super::SourceError),
}

/// One package of a lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
struct LockedPackage {
    name: Option<String>,
    version: Option<String>,
    resolved: Option<String>,
    link: bool,
    /// Shipped inside its parent's tarball (`bundleDependencies`): nothing to fetch.
    #[serde(rename = "inBundle")]
    in_bundle: bool,
    os: Vec<String>,
    cpu: Vec<String>,
    libc: Vec<String>,
    dependencies: BTreeMap<String, String>,
    #[serde(rename = "devDependencies")]
    dev_dependencies: BTreeMap<String, String>,
    #[serde(rename = "optionalDependencies")]
    optional_dependencies: BTreeMap<String, String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Lock {
    #[serde(rename = "lockfileVersion")]
    lockfile_version: u64,
    packages: BTreeMap<String, LockedPackage>,
}

/// The dependency sections of `package.json` the lock file's root must repeat.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Manifest {
    dependencies: BTreeMap<String, String>,
    #[serde(rename = "devDependencies")]
    dev_dependencies: BTreeMap<String, String>,
    #[serde(rename = "optionalDependencies")]
    optional_dependencies: BTreeMap<String, String>,
}

/// The platform packages are installed for (the build node's; images run where they are built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: &'static str,
    pub cpu: &'static str,
    pub libc: &'static str,
}

impl Platform {
    /// This machine, as npm names it (the base images are glibc builds).
    pub fn host() -> Self {
        let cpu = match std::env::consts::ARCH {
            "x86_64" => "x64",
            "aarch64" => "arm64",
            "x86" => "ia32",
            "arm" => "arm",
            other => other,
        };
        Self {
            os: "linux",
            cpu,
            libc: "glibc",
        }
    }

    /// npm's rule: a list allows a value when it names it, or when it holds only negations
    /// (`!win32`) none of which names it; an empty list allows everything.
    fn allows(list: &[String], value: &str) -> bool {
        if list.is_empty() {
            return true;
        }
        if list.iter().any(|v| v == value) {
            return true;
        }
        list.iter().all(|v| v.starts_with('!')) && !list.iter().any(|v| v[1..] == *value)
    }

    fn installs(&self, p: &LockedPackage) -> bool {
        Self::allows(&p.os, self.os)
            && Self::allows(&p.cpu, self.cpu)
            && Self::allows(&p.libc, self.libc)
    }
}

/// What a lock file asks to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPlan {
    /// `npm cache add` specs: the registry tarball URL, or `name@version` when the lock file
    /// leaves `resolved` out.
    pub specs: Vec<String>,
    /// Packages left out because they are for another platform.
    pub skipped: usize,
}

/// Whether `package_json` lists any dependency (of any kind).
pub fn declares_dependencies(package_json: &str) -> bool {
    serde_json::from_str::<Manifest>(package_json).is_ok_and(|m| {
        !(m.dependencies.is_empty()
            && m.dev_dependencies.is_empty()
            && m.optional_dependencies.is_empty())
    })
}

/// Reads `package-lock.json` against `package.json` and says what to fetch.
pub fn plan_npm(
    package_json: &str,
    lock_text: &str,
    platform: &Platform,
) -> Result<FetchPlan, DepsError> {
    let invalid = |file: &str, e: serde_json::Error| DepsError::InvalidLock {
        file: file.to_owned(),
        reason: e.to_string(),
    };
    let manifest: Manifest =
        serde_json::from_str(package_json).map_err(|e| invalid("package.json", e))?;
    let lock: Lock =
        serde_json::from_str(lock_text).map_err(|e| invalid("package-lock.json", e))?;
    if !(2..=3).contains(&lock.lockfile_version) {
        return Err(DepsError::LockVersion {
            version: lock.lockfile_version,
        });
    }
    let root = lock.packages.get("").cloned().unwrap_or_default();
    for (section, wanted, locked) in [
        ("dependencies", &manifest.dependencies, &root.dependencies),
        (
            "devDependencies",
            &manifest.dev_dependencies,
            &root.dev_dependencies,
        ),
        (
            "optionalDependencies",
            &manifest.optional_dependencies,
            &root.optional_dependencies,
        ),
    ] {
        if let Some(detail) = mismatch(section, wanted, locked) {
            return Err(DepsError::LockMismatch { detail });
        }
    }
    let mut specs = Vec::new();
    let mut skipped = 0;
    for (path, p) in &lock.packages {
        if path.is_empty() || p.link || p.in_bundle {
            continue;
        }
        // Workspace members are listed by their folder (no node_modules in the key).
        let Some(name_from_path) = path.rsplit_once("node_modules/").map(|(_, n)| n) else {
            continue;
        };
        let name = p.name.as_deref().unwrap_or(name_from_path);
        if !platform.installs(p) {
            skipped += 1;
            continue;
        }
        match p.resolved.as_deref() {
            Some(r) if r.starts_with("file:") => continue,
            Some(r) if r.starts_with(NPM_REGISTRY) => {
                if r.contains(char::is_whitespace) {
                    return Err(DepsError::ForeignSource {
                        package: name.to_owned(),
                        resolved: r.to_owned(),
                    });
                }
                specs.push(r.to_owned());
            }
            Some(r) => {
                return Err(DepsError::ForeignSource {
                    package: name.to_owned(),
                    resolved: r.to_owned(),
                });
            }
            None => {
                let Some(version) = &p.version else {
                    return Err(DepsError::InvalidLock {
                        file: "package-lock.json".into(),
                        reason: format!("{path} has neither \"resolved\" nor \"version\""),
                    });
                };
                let spec = format!("{name}@{version}");
                let plain_name = name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@/._-".contains(c))
                    && !name.starts_with(['-', '.']);
                let plain_version = version.starts_with(|c: char| c.is_ascii_digit())
                    && version
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".+-".contains(c));
                if !plain_name || !plain_version {
                    return Err(DepsError::InvalidLock {
                        file: "package-lock.json".into(),
                        reason: format!("{path} has an unusable name or version: {spec:?}"),
                    });
                }
                specs.push(spec);
            }
        }
    }
    specs.sort();
    specs.dedup();
    Ok(FetchPlan { specs, skipped })
}

/// How `wanted` (package.json) and `locked` (the lock file's root) differ, if they do.
fn mismatch(
    section: &str,
    wanted: &BTreeMap<String, String>,
    locked: &BTreeMap<String, String>,
) -> Option<String> {
    for (name, range) in wanted {
        match locked.get(name) {
            None => {
                return Some(format!(
                    "{name}@{range} is in package.json's {section} but not in the lock file"
                ));
            }
            Some(l) if l != range => {
                return Some(format!(
                    "package.json's {section} want {name}@{range}, the lock file has {name}@{l}"
                ));
            }
            _ => {}
        }
    }
    locked
        .keys()
        .find(|n| !wanted.contains_key(*n))
        .map(|name| {
            format!("the lock file's {section} have {name}, which package.json no longer lists")
        })
}

/// The per-app folders fetched dependencies are kept in.
#[derive(Debug, Clone)]
pub struct DepsCache {
    /// `<root>/<app key>/<lock digest>/npm/...`
    pub root: PathBuf,
    pub timeout: Duration,
    /// The platform packages are fetched for (part of the folder's key).
    pub platform: Platform,
    /// The sandbox's uid and gid (npm writes the folder as them).
    pub owner: (u32, u32),
}

/// A fetched dependency folder, ready to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub dir: PathBuf,
    /// Whether the folder was there already (nothing downloaded).
    pub reused: bool,
    pub packages: usize,
}

fn cache_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DepsError {
    let what = what.into();
    move |source| DepsError::Cache { what, source }
}

impl DepsCache {
    /// Fetches what `plan` names into the app's folder for `lock_text` (or finds it there).
    /// `app_key` is the app's cache key ([`crate::dockerfile::cache_key`]).
    pub async fn fetch_npm(
        &self,
        sandbox: &Sandbox,
        app_key: &str,
        lock_text: &str,
        plan: &FetchPlan,
        log: &mut (dyn FnMut(String) + Send),
    ) -> Result<Fetched, DepsError> {
        let (platform, (uid, gid)) = (&self.platform, self.owner);
        let mut digest = sha2::Sha256::new();
        for part in [FORMAT, platform.os, platform.cpu, platform.libc, lock_text] {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        let key = hex::encode(digest.finalize());
        let app_dir = self.root.join(app_key);
        let dir = app_dir.join(&key);
        if dir.join("complete").exists() {
            log(format!(
                "lock file unchanged: {} packages from the dependency cache, nothing downloaded",
                plan.specs.len()
            ));
            return Ok(Fetched {
                dir,
                reused: true,
                packages: plan.specs.len(),
            });
        }
        std::fs::create_dir_all(&app_dir)
            .map_err(cache_err(format!("create {}", app_dir.display())))?;
        let tmp = app_dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let guard = Remove(tmp.clone());
        std::fs::create_dir_all(tmp.join("npm"))
            .map_err(cache_err(format!("create {}", tmp.display())))?;
        // Start from the app's previous folder: its tarballs (content-addressed, never
        // rewritten) are linked, its index copied.
        if let Some(previous) = previous_folder(&app_dir, &key) {
            let from = previous.join("npm").join("_cacache");
            if from.is_dir() {
                let to = tmp.join("npm").join("_cacache");
                std::fs::create_dir_all(&to)
                    .map_err(cache_err(format!("create {}", to.display())))?;
                copy_tree(&from.join("content-v2"), &to.join("content-v2"), true)?;
                copy_tree(&from.join("index-v5"), &to.join("index-v5"), false)?;
                log(format!(
                    "lock file changed: starting from the previous dependency cache ({})",
                    previous.file_name().and_then(|n| n.to_str()).unwrap_or("?")
                ));
            }
        }
        chown_tree(&tmp, uid, gid)?;
        log(format!(
            "fetching {} packages from {NPM_REGISTRY} in the fetch sandbox ({} for other platforms left out)",
            plan.specs.len(),
            plan.skipped
        ));
        let started = std::time::Instant::now();
        for chunk in chunks(&plan.specs) {
            let mut args: Vec<String> = vec![
                "cache".into(),
                "add".into(),
                "--prefer-offline".into(),
                format!("--registry={NPM_REGISTRY}"),
                // The specs come from the lock file: validated already, and never options.
                "--".into(),
            ];
            args.extend(chunk.iter().cloned());
            let hosts = [NPM_REGISTRY_HOST.to_owned()];
            let run = sandbox.npm(&args, &tmp, &hosts);
            let (out, events) = tokio::time::timeout(self.timeout, run)
                .await
                .map_err(|_| DepsError::TimedOut {
                    seconds: self.timeout.as_secs(),
                })??;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let mut detail: Vec<String> =
                    events.iter().filter_map(EgressEvent::explain).collect();
                let tail: Vec<&str> = stderr
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !l.contains("A complete log of this run"))
                    .collect();
                let tail = &tail[tail.len().saturating_sub(8)..];
                detail.extend(tail.iter().map(|l| (*l).to_owned()));
                for line in &detail {
                    log(line.clone());
                }
                return Err(DepsError::Fetch {
                    detail: if detail.is_empty() {
                        format!("npm exited with {}", out.status)
                    } else {
                        detail.join("; ")
                    },
                });
            }
        }
        let _ = std::fs::remove_dir_all(tmp.join("npm").join("_logs"));
        // The tarball BuildKit fetches: the same bytes for the same folder (sorted, fixed
        // times and owners), so its cache key stays.
        let out = std::process::Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-cf",
            ])
            .arg(tmp.join(crate::dockerfile::DEPS_TAR))
            .arg("-C")
            .arg(&tmp)
            .arg("npm")
            .output()
            .map_err(cache_err("run tar"))?;
        if !out.status.success() {
            return Err(DepsError::Cache {
                what: "archive the fetched packages".into(),
                source: std::io::Error::other(
                    String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                ),
            });
        }
        std::fs::write(tmp.join("complete"), "")
            .map_err(cache_err(format!("write {}", tmp.display())))?;
        // A build that fetched the same lock file at the same time may have won: keep its.
        if std::fs::rename(&tmp, &dir).is_err() && !dir.join("complete").exists() {
            return Err(DepsError::Cache {
                what: format!("move the fetched folder to {}", dir.display()),
                source: std::io::Error::other("rename failed"),
            });
        }
        drop(guard);
        // The app keeps one folder: the one for its latest lock file.
        if let Ok(entries) = std::fs::read_dir(&app_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name != key.as_str() && !name.to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        log(format!(
            "fetched {} packages in {:.1}s",
            plan.specs.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(Fetched {
            dir,
            reused: false,
            packages: plan.specs.len(),
        })
    }
}

/// The app's complete folder other than `key`, if any.
fn previous_folder(app_dir: &Path, key: &str) -> Option<PathBuf> {
    std::fs::read_dir(app_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n != key) && p.join("complete").exists())
}

/// Copies `from` to `to` (`cp -a`, or hard links with `link`); a missing `from` is nothing.
fn copy_tree(from: &Path, to: &Path, link: bool) -> Result<(), DepsError> {
    if !from.exists() {
        return Ok(());
    }
    let out = std::process::Command::new("cp")
        .arg(if link { "-al" } else { "-a" })
        .arg(from)
        .arg(to)
        .output()
        .map_err(cache_err("run cp"))?;
    if !out.status.success() {
        return Err(DepsError::Cache {
            what: format!("copy {}", from.display()),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        });
    }
    Ok(())
}

/// Gives the folder to the sandbox's uid (npm runs as it).
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), DepsError> {
    let out = std::process::Command::new("chown")
        .args(["-R", "-h", &format!("{uid}:{gid}")])
        .arg(dir)
        .output()
        .map_err(cache_err("run chown"))?;
    if !out.status.success() {
        return Err(DepsError::Cache {
            what: format!("chown {}", dir.display()),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        });
    }
    Ok(())
}

/// `specs` in groups whose total length stays under [`CHUNK_BYTES`].
fn chunks(specs: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut len) = (0, 0);
    for (i, s) in specs.iter().enumerate() {
        if len + s.len() > CHUNK_BYTES && i > start {
            out.push(&specs[start..i]);
            (start, len) = (i, 0);
        }
        len += s.len() + 4;
    }
    if start < specs.len() {
        out.push(&specs[start..]);
    }
    out
}

#[cfg(test)]
mod tests;
