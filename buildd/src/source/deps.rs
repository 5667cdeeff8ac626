//! Dependencies of a build, fetched before BuildKit runs: in the checkout's fetch sandbox (its
//! own network namespace), by npm (the lock file's registry tarballs streamed into npm's cache
//! by npm's own pacote, see `inside::Program::NpmTarballs`; other specs by `npm cache add`),
//! through an egress proxy that serves the package registry's host and nothing else, into a
//! cache folder kept per app and keyed by the lock file's digest.
//! BuildKit's `RUN` steps keep network `none`: the generated Dockerfile mounts that folder and
//! installs from it offline (install scripts run there, without a network).
//!
//! pnpm and yarn 1 projects: the package manager at the version the project pins
//! (`packageManager`, else one chosen by the lock file's format) is fetched into npm's cache
//! too, and runs in the sandbox (`npm exec`) to install the lock file with `--frozen-lockfile`
//! and scripts off into a scratch project: that fills its store (pnpm) or cache (yarn) in the
//! folder, and a lock file that does not match `package.json` fails there, named as such. The
//! build installs the same version from npm's cache and installs offline from that store.
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
use super::inside::Program;
use crate::detect::PackageManager;

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

/// The pnpm used when `packageManager` does not name one, by the lock file's `lockfileVersion`
/// (pnpm 9 and 10 write `9.0`, pnpm 8 `6.0`, pnpm 7 `5.4`).
const PNPM_BY_LOCK: [(&str, &str); 3] = [("9.", "10.34.9"), ("6.", "8.15.9"), ("5.", "7.33.7")];
/// The yarn used when `packageManager` does not name one (yarn 1's last release).
const YARN_1: &str = "1.22.22";
/// yarn 1 writes its own registry's host into `yarn.lock`; it serves the npm registry's
/// packages at the same paths, and the fetch asks the npm registry for them.
const YARN_REGISTRY: &str = "https://registry.yarnpkg.com/";

/// Why dependencies could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error(
        "package.json has dependencies but there is no lock file: run `{manager} install` and \
         commit {lock_file}, so builds install exactly what you tested"
    )]
    NoLockFile {
        manager: &'static str,
        lock_file: &'static str,
    },
    #[error(
        "the app in {subdirectory} is a member of a workspace (monorepo): its lock file is the \
         workspace's {lock_file}, not one of its own in {subdirectory}; building a workspace \
         member from the workspace's lock file is not supported yet: build from the repository \
         root with a Dockerfile there (git.subdirectory empty), or commit a lock file of the \
         app's own in {subdirectory}"
    )]
    WorkspaceMember {
        subdirectory: String,
        lock_file: String,
    },
    #[error("{file} is not valid: {reason}")]
    InvalidLock { file: String, reason: String },
    #[error(
        "package-lock.json has lockfileVersion {version}: only versions 2 and 3 are supported \
         (npm 7 or later writes them; run `npm install` with a recent npm and commit the lock file)"
    )]
    LockVersion { version: u64 },
    #[error(
        "lock file mismatch: package.json and {lock_file} do not agree ({detail}); run \
         `{manager} install` and commit {lock_file}"
    )]
    LockMismatch {
        manager: &'static str,
        lock_file: &'static str,
        detail: String,
    },
    #[error(
        "{lock_file}: {package} comes from {resolved}, which is not the package registry \
         ({NPM_REGISTRY}); builds fetch dependencies from the registry only (or file: paths \
         inside the repository)"
    )]
    ForeignSource {
        lock_file: &'static str,
        package: String,
        resolved: String,
    },
    #[error(
        "{manager} projects cannot fetch dependencies yet: npm (package-lock.json), pnpm \
         (pnpm-lock.yaml) and yarn 1 (yarn.lock) are supported; use one of them, or add a \
         Dockerfile"
    )]
    Unsupported { manager: String },
    #[error(
        "yarn 2 and later (Berry) projects cannot build yet, neither with Plug'n'Play (Berry's \
         default: no node_modules folder, packages loaded from zip archives through .pnp.cjs) \
         nor with nodeLinker: node-modules: npm (package-lock.json), pnpm (pnpm-lock.yaml) and \
         yarn 1 (yarn.lock) are supported; use one of them, or add a Dockerfile"
    )]
    YarnBerry,
    #[error(
        "package.json's packageManager {value:?} is not `pnpm@<version>` or `yarn@<version>` \
         with a plain version (like pnpm@10.34.9)"
    )]
    PackageManagerField { value: String },
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
    /// pnpm or yarn: the package manager that installs the lock file (its own spec is in
    /// `specs`); `None` for npm.
    pub tool: Option<Tool>,
}

/// A package manager other than npm, at the version a project's build uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub manager: PackageManager,
    /// A plain version (`10.34.9`), checked.
    pub version: String,
    /// Where the version came from (`packageManager`, or the lock file's format).
    pub from: &'static str,
    /// Packages the lock file lists (for the log).
    pub packages: usize,
    /// Whether there is a lock file to install in the sandbox (else only the tool is fetched).
    pub locked: bool,
}

impl Tool {
    /// `pnpm@10.34.9`: the npm spec of the tool itself.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.manager.name(), self.version)
    }

    /// The lock file it installs.
    pub fn lock_file(&self) -> &'static str {
        match self.manager {
            PackageManager::Yarn => "yarn.lock",
            _ => "pnpm-lock.yaml",
        }
    }

    /// The folder of the fetched tree its store (pnpm) or cache (yarn) is in.
    pub fn store(&self) -> &'static str {
        match self.manager {
            PackageManager::Yarn => "yarn",
            _ => "pnpm",
        }
    }
}

/// The lock file a manager writes, for messages.
pub fn lock_file_of(pm: PackageManager) -> &'static str {
    match pm {
        PackageManager::Pnpm => "pnpm-lock.yaml",
        PackageManager::Yarn => "yarn.lock",
        PackageManager::Bun => "bun.lock",
        PackageManager::Npm => "package-lock.json",
    }
}

/// `packageManager` of `package.json` (`pnpm@10.34.9+sha512.abc...`): the manager's name and
/// its plain version, corepack's hash dropped; `None` when the field is absent.
fn declared_manager(package_json: &str) -> Result<Option<(String, String)>, DepsError> {
    #[derive(serde::Deserialize)]
    struct Declared {
        #[serde(rename = "packageManager")]
        package_manager: Option<serde_json::Value>,
    }
    let declared: Declared =
        serde_json::from_str(package_json).map_err(|e| DepsError::InvalidLock {
            file: "package.json".into(),
            reason: e.to_string(),
        })?;
    let Some(value) = declared.package_manager else {
        return Ok(None);
    };
    let bad = || DepsError::PackageManagerField {
        value: value.to_string().trim_matches('"').to_owned(),
    };
    let text = value.as_str().ok_or_else(bad)?;
    let (name, rest) = text.split_once('@').ok_or_else(bad)?;
    let version = rest.split('+').next().unwrap_or_default();
    if !plain_version(version) {
        return Err(bad());
    }
    Ok(Some((name.to_owned(), version.to_owned())))
}

/// `1.2.3` or `1.2.3-rc.1`: digits first, then only what versions hold.
fn plain_version(version: &str) -> bool {
    version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-".contains(c))
}

/// The version of `manager` the project pins in `packageManager`, if it names that manager.
fn pinned(package_json: &str, manager: &str) -> Result<Option<String>, DepsError> {
    Ok(declared_manager(package_json)?
        .filter(|(name, _)| name == manager)
        .map(|(_, version)| version))
}

/// Reads `pnpm-lock.yaml` and says what to fetch: pnpm itself (the project's own version),
/// which then installs the lock file in the sandbox. Packages from anywhere but the registry
/// (tarball URLs, git) are refused here; pnpm's `--frozen-lockfile` checks the lock file
/// against `package.json` in the sandbox.
pub fn plan_pnpm(package_json: &str, lock_text: &str) -> Result<FetchPlan, DepsError> {
    let invalid = |reason: String| DepsError::InvalidLock {
        file: "pnpm-lock.yaml".into(),
        reason,
    };
    let lock_version = lock_text
        .lines()
        .find_map(|l| l.strip_prefix("lockfileVersion:"))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_owned())
        .ok_or_else(|| invalid("it has no lockfileVersion".into()))?;
    let (version, from) = match pinned(package_json, "pnpm")? {
        Some(v) => (v, "packageManager"),
        None => {
            let v = PNPM_BY_LOCK
                .iter()
                .find(|(prefix, _)| lock_version.starts_with(prefix))
                .map(|(_, v)| (*v).to_owned())
                .ok_or_else(|| {
                    invalid(format!(
                        "lockfileVersion {lock_version} is not one pnpm 7 to 10 writes; set \
                         packageManager in package.json (like \"pnpm@10.34.9\")"
                    ))
                })?;
            (v, "the lock file's format")
        }
    };
    let mut packages = 0;
    let mut current = String::new();
    let mut in_packages = false;
    for line in lock_text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_packages = line.trim_end() == "packages:";
            continue;
        }
        if in_packages && line.starts_with("  ") && !line.starts_with("   ") {
            current = line
                .trim()
                .trim_end_matches(':')
                .trim_matches('\'')
                .to_owned();
            packages += 1;
        }
        let t = line.trim();
        let foreign = if let Some(i) = t.find("tarball: ") {
            let url = t[i + 9..]
                .trim_end_matches(['}', ',', ' '])
                .split([',', ' '])
                .next()
                .unwrap_or_default();
            (!url.starts_with(NPM_REGISTRY)).then(|| url.to_owned())
        } else if t.contains("type: git") || t.contains("repo: ") {
            Some(t.to_owned())
        } else {
            None
        };
        if let Some(resolved) = foreign {
            return Err(DepsError::ForeignSource {
                lock_file: "pnpm-lock.yaml",
                package: current,
                resolved,
            });
        }
    }
    let tool = Tool {
        manager: PackageManager::Pnpm,
        version,
        from,
        packages,
        locked: true,
    };
    Ok(FetchPlan {
        specs: vec![tool.spec()],
        skipped: 0,
        tool: Some(tool),
    })
}

/// Reads `yarn.lock` (yarn 1's format) and says what to fetch: yarn itself, which then
/// installs the lock file in the sandbox (its `resolved` URLs on the npm registry's host).
/// yarn 2 and later (Berry) are not supported.
pub fn plan_yarn(package_json: &str, lock_text: &str) -> Result<FetchPlan, DepsError> {
    if lock_text.lines().any(|l| l.starts_with("__metadata:")) {
        return Err(DepsError::YarnBerry);
    }
    let (version, from) = match pinned(package_json, "yarn")? {
        Some(v) if v.starts_with("1.") => (v, "packageManager"),
        Some(_) => return Err(DepsError::YarnBerry),
        None => (YARN_1.to_owned(), "yarn 1's lock file"),
    };
    let mut packages = 0;
    let mut current = String::new();
    for line in lock_text.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && line.ends_with(':') {
            current = line.trim_end_matches(':').trim_matches('"').to_owned();
            packages += 1;
        }
        let Some(url) = line.trim().strip_prefix("resolved ") else {
            continue;
        };
        let url = url.trim_matches('"');
        if !(url.starts_with(NPM_REGISTRY) || url.starts_with(YARN_REGISTRY))
            || url.contains(char::is_whitespace)
        {
            return Err(DepsError::ForeignSource {
                lock_file: "yarn.lock",
                package: current,
                resolved: url.to_owned(),
            });
        }
    }
    let tool = Tool {
        manager: PackageManager::Yarn,
        version,
        from,
        packages,
        locked: true,
    };
    Ok(FetchPlan {
        specs: vec![tool.spec()],
        skipped: 0,
        tool: Some(tool),
    })
}

/// A lock file without its manager's lock (the tool installs without `--frozen-lockfile`):
/// for a project with no dependencies, the manager only (its scripts may call it).
pub fn plan_tool_only(pm: PackageManager, package_json: &str) -> Result<FetchPlan, DepsError> {
    let (version, from) = match (pm, pinned(package_json, pm.name())?) {
        (PackageManager::Yarn, Some(v)) if !v.starts_with("1.") => {
            return Err(DepsError::YarnBerry);
        }
        (_, Some(v)) => (v, "packageManager"),
        (PackageManager::Yarn, None) => (YARN_1.to_owned(), "the default"),
        (_, None) => (PNPM_BY_LOCK[0].1.to_owned(), "the default"),
    };
    let tool = Tool {
        manager: pm,
        version,
        from,
        packages: 0,
        locked: false,
    };
    Ok(FetchPlan {
        specs: vec![tool.spec()],
        skipped: 0,
        tool: Some(tool),
    })
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
            return Err(DepsError::LockMismatch {
                manager: "npm",
                lock_file: "package-lock.json",
                detail,
            });
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
                        lock_file: "package-lock.json",
                        package: name.to_owned(),
                        resolved: r.to_owned(),
                    });
                }
                specs.push(r.to_owned());
            }
            Some(r) => {
                return Err(DepsError::ForeignSource {
                    lock_file: "package-lock.json",
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
    Ok(FetchPlan {
        specs,
        skipped,
        tool: None,
    })
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
    /// pnpm or yarn, which the build installs from npm's cache in the folder and then uses.
    pub tool: Option<Tool>,
}

fn cache_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DepsError {
    let what = what.into();
    move |source| DepsError::Cache { what, source }
}

/// The lock file's part of a dependency folder's path.
fn lock_key(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl DepsCache {
    /// The folder `fetch` fills for this app and lock file (known before it runs: the build
    /// hands its tarball's URL to BuildKit while the fetch runs).
    pub fn folder(
        &self,
        app_key: &str,
        package_json: &str,
        lock_text: &str,
        plan: &FetchPlan,
    ) -> PathBuf {
        let platform = &self.platform;
        let tool_spec = plan.tool.as_ref().map(Tool::spec).unwrap_or_default();
        let manifest = if plan.tool.is_some() {
            package_json
        } else {
            ""
        };
        let mut digest = sha2::Sha256::new();
        for part in [
            FORMAT,
            platform.os,
            platform.cpu,
            platform.libc,
            &tool_spec,
            manifest,
            lock_text,
        ] {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        self.root.join(app_key).join(hex::encode(digest.finalize()))
    }

    /// Fetches what `plan` names into the app's folder for `lock_text` (or finds it there).
    /// `app_key` is the app's cache key ([`crate::dockerfile::cache_key`]); `package_json` is
    /// the project's (a pnpm or yarn install in the sandbox reads it beside the lock file).
    pub async fn fetch(
        &self,
        sandbox: &Sandbox,
        app_key: &str,
        package_json: &str,
        lock_text: &str,
        plan: &FetchPlan,
        log: &mut (dyn FnMut(String) + Send),
    ) -> Result<Fetched, DepsError> {
        let (uid, gid) = self.owner;
        let dir = self.folder(app_key, package_json, lock_text, plan);
        let (app_dir, key) = (self.root.join(app_key), lock_key(&dir));
        let packages = plan.tool.as_ref().map_or(plan.specs.len(), |t| t.packages);
        if dir.join("complete").exists() {
            log(format!(
                "lock file unchanged: {packages} packages from the dependency cache, nothing downloaded"
            ));
            return Ok(Fetched {
                dir,
                reused: true,
                packages,
                tool: plan.tool.clone(),
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
            // pnpm's store and yarn's cache: content-addressed or per package version, so
            // linked too; the tool adds what the new lock file needs.
            if let Some(tool) = plan.tool.as_ref().filter(|t| t.locked) {
                copy_tree(&previous.join(tool.store()), &tmp.join(tool.store()), true)?;
            }
        }
        chown_tree(&tmp, uid, gid)?;
        let started = std::time::Instant::now();
        if let Some(tool) = &plan.tool {
            log(format!(
                "fetching {} (the version {}) from {NPM_REGISTRY} in the fetch sandbox",
                tool.spec(),
                tool.from
            ));
        } else {
            log(format!(
                "fetching {} packages from {NPM_REGISTRY} in the fetch sandbox ({} for other platforms left out)",
                plan.specs.len(),
                plan.skipped
            ));
        }
        // Registry tarball URLs are streamed into npm's cache as they are (what an offline
        // install reads); `name@version` specs (lock files without `resolved`) and the tools
        // go through `npm cache add`, which resolves them.
        let (urls, named): (Vec<String>, Vec<String>) = plan
            .specs
            .iter()
            .cloned()
            .partition(|s| s.starts_with(NPM_REGISTRY));
        for chunk in chunks(&urls) {
            self.run_npm(sandbox, Program::NpmTarballs, chunk, &tmp, "npm", log)
                .await?;
        }
        for chunk in chunks(&named) {
            let mut args: Vec<String> = vec![
                "cache".into(),
                "add".into(),
                "--prefer-offline".into(),
                format!("--registry={NPM_REGISTRY}"),
                // The specs come from the lock file: validated already, and never options.
                "--".into(),
            ];
            args.extend(chunk.iter().cloned());
            self.run_npm(sandbox, Program::Npm, &args, &tmp, "npm", log)
                .await?;
        }
        if let Some(tool) = plan.tool.as_ref().filter(|t| t.locked) {
            self.install_with_tool(sandbox, tool, package_json, lock_text, &tmp, log)
                .await?;
        }
        let _ = std::fs::remove_dir_all(tmp.join("npm").join("_logs"));
        // The tool as npm exec unpacked it: the build installs it from the cache itself.
        let _ = std::fs::remove_dir_all(tmp.join("npm").join("_npx"));
        // The tarball BuildKit fetches: the same bytes for the same folder (sorted, fixed
        // times and owners), so its cache key stays.
        let out = tokio::process::Command::new("tar")
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
            .args(plan.tool.iter().filter(|t| t.locked).map(Tool::store))
            .output()
            .await
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
            "fetched {packages} packages in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        Ok(Fetched {
            dir,
            reused: false,
            packages,
            tool: plan.tool.clone(),
        })
    }

    /// Runs `npm args` in the sandbox with `tmp` at `/deps`; a failure's detail is what the
    /// egress proxy refused and the last lines of stderr (`who` names the failing program).
    async fn run_npm(
        &self,
        sandbox: &Sandbox,
        program: Program,
        args: &[String],
        tmp: &Path,
        who: &str,
        log: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), DepsError> {
        let hosts = [NPM_REGISTRY_HOST.to_owned()];
        let run = sandbox.fetch_deps(program, args, tmp, &hosts);
        let (out, events) = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| DepsError::TimedOut {
                seconds: self.timeout.as_secs(),
            })??;
        if out.status.success() {
            return Ok(());
        }
        let mut detail: Vec<String> = events.iter().filter_map(EgressEvent::explain).collect();
        // pnpm and yarn print their errors on stdout.
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tail: Vec<&str> = text
            .lines()
            .filter(|l| {
                let l = l.trim();
                !l.is_empty()
                    && !l.contains("A complete log of this run")
                    && !l.starts_with("Progress:")
                    && !l.starts_with("info ")
                    && !l.starts_with('[')
            })
            .collect();
        let tail = &tail[tail.len().saturating_sub(8)..];
        detail.extend(tail.iter().map(|l| (*l).to_owned()));
        for line in &detail {
            log(line.clone());
        }
        Err(DepsError::Fetch {
            detail: if detail.is_empty() {
                format!("{who} exited with {}", out.status)
            } else {
                detail.join("; ")
            },
        })
    }

    /// pnpm or yarn installs the lock file in the sandbox (scripts off, `--frozen-lockfile`)
    /// into a scratch project beside its store; the project is removed, the store kept.
    async fn install_with_tool(
        &self,
        sandbox: &Sandbox,
        tool: &Tool,
        package_json: &str,
        lock_text: &str,
        tmp: &Path,
        log: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), DepsError> {
        use super::inside::DEPS;
        let project = tmp.join("project");
        std::fs::create_dir_all(&project)
            .map_err(cache_err(format!("create {}", project.display())))?;
        // yarn 1 asks the host its lock file names: the npm registry's, which serves the
        // same paths (the build's offline install finds them in the cache by name either way).
        let lock = match tool.manager {
            PackageManager::Yarn => lock_text.replace(YARN_REGISTRY, NPM_REGISTRY),
            _ => lock_text.to_owned(),
        };
        for (name, text) in [("package.json", package_json), (tool.lock_file(), &lock)] {
            std::fs::write(project.join(name), text).map_err(cache_err(format!("write {name}")))?;
        }
        chown_tree(&project, self.owner.0, self.owner.1)?;
        let dir = format!("{DEPS}/project");
        let store = format!("{DEPS}/{}", tool.store());
        let mut args: Vec<String> = vec![
            "exec".into(),
            "--yes".into(),
            format!("--package={}", tool.spec()),
            "--".into(),
            tool.manager.name().into(),
            "install".into(),
            "--frozen-lockfile".into(),
            "--ignore-scripts".into(),
        ];
        match tool.manager {
            PackageManager::Yarn => args.extend([
                "--non-interactive".into(),
                "--no-progress".into(),
                format!("--registry={NPM_REGISTRY}"),
                format!("--cache-folder={store}"),
                format!("--cwd={dir}"),
            ]),
            _ => args.extend([
                format!("--registry={NPM_REGISTRY}"),
                format!("--store-dir={store}"),
                format!("--dir={dir}"),
                "--reporter=append-only".into(),
            ]),
        }
        log(format!(
            "{} installs {} ({} packages) in the fetch sandbox, scripts off",
            tool.spec(),
            tool.lock_file(),
            tool.packages
        ));
        let result = self
            .run_npm(sandbox, Program::Npm, &args, tmp, tool.manager.name(), log)
            .await;
        let _ = std::fs::remove_dir_all(&project);
        match result {
            Err(DepsError::Fetch { detail }) if lock_out_of_date(&detail) => {
                Err(DepsError::LockMismatch {
                    manager: tool.manager.name(),
                    lock_file: tool.lock_file(),
                    detail,
                })
            }
            other => other,
        }
    }
}

/// Whether a pnpm or yarn failure says the lock file does not match `package.json`.
fn lock_out_of_date(detail: &str) -> bool {
    detail.contains("ERR_PNPM_OUTDATED_LOCKFILE")
        || detail.contains("ERR_PNPM_LOCKFILE_CONFIG_MISMATCH")
        || detail.contains("lockfile needs to be updated")
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
