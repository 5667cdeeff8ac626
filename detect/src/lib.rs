//! Framework detection: what kind of app a checkout holds, which package manager installs it,
//! how it starts and which port it listens on.
//!
//! Pure: [`detect`] looks at a [`RepoSnapshot`] (the files that matter, read once by
//! [`RepoSnapshot::read`]) and decides. A repository with its own `Dockerfile` uses it.
#![forbid(unsafe_code)]

pub mod files;
mod framework;
pub mod node_version;
mod snapshot;
#[cfg(test)]
mod tests;

pub use framework::{Framework, PackageManager};
pub use node_version::NodeRequest;
pub use snapshot::RepoSnapshot;

use std::collections::BTreeMap;

/// Where the generated image keeps the static file server that serves single-page apps (the
/// start command of a SPA; buildd's Dockerfile generation copies the server there).
pub const STATIC_SERVER_PATH: &str = "/static-server";

/// What [`detect`] decided about a checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub framework: Framework,
    /// `None` for a repository with its own Dockerfile.
    pub package_manager: Option<PackageManager>,
    /// The port the app listens on.
    pub port: u16,
    /// The command that starts the app in the image (exec form).
    pub start: Vec<String>,
    /// Whether `package.json` has a `build` script that must run before the app starts.
    pub has_build_script: bool,
    /// Paths of `file:` dependencies (local tarballs or folders) the install step needs.
    pub local_dependencies: Vec<String>,
    /// Whether a `public/` folder exists (Next.js copies it next to the standalone server).
    pub has_public_dir: bool,
    /// The lock file the install step is keyed by, if the repository has one.
    pub lock_file: Option<String>,
    /// The Node.js version the app asks for, if it says.
    pub node: Option<NodeRequest>,
    /// The Node.js versions the app's own dependencies declare (their `engines.node` in the
    /// lock file): what builds the app when it asks for nothing itself (astro 7 needs Node 22).
    pub dependency_node: Vec<NodeRequest>,
}

/// Why a checkout could not be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    #[error(
        "cannot detect how to build {dir}: no Dockerfile and no package.json \
         (looked for Dockerfile, package.json with a framework dependency \
         (next, nuxt, @remix-run/*, astro, @sveltejs/kit, vite, @nestjs/core, express, fastify), \
         a start script, a \"main\" entry, server.js or index.js)"
    )]
    NothingToBuild { dir: String },
    #[error("package.json in {dir} is not valid JSON: {reason}")]
    InvalidPackageJson { dir: String, reason: String },
    #[error(
        "cannot detect how to start the Node app in {dir}: package.json has no framework \
         dependency, no \"start\" script, no \"main\" entry, and there is no server.js or index.js"
    )]
    NoStartCommand { dir: String },
    #[error("cannot read {file} in {dir}: {reason}")]
    Unreadable {
        dir: String,
        file: String,
        reason: String,
    },
    #[error(
        "the app asks for Node.js {spec:?} ({file}) and this platform builds with Node.js \
         {offered}: change {file} to accept {offered}"
    )]
    NodeVersion {
        file: String,
        spec: String,
        /// The majors offered: `20`, or `20, 22 or 24`.
        offered: String,
    },
    #[error(
        "package.json in {dir}: {what} {value:?} holds a control character \
         (newline, tab, escape...), which is not allowed in a generated Dockerfile"
    )]
    ControlCharacter {
        dir: String,
        what: String,
        value: String,
    },
}

/// Refuses a value read from the repository that would reach the generated Dockerfile's text
/// holding a control character (a newline there would add Dockerfile instructions).
fn refuse_control(dir: &str, what: &str, value: &str) -> Result<(), DetectError> {
    if value.chars().any(char::is_control) {
        return Err(DetectError::ControlCharacter {
            dir: dir.to_owned(),
            what: what.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// The parts of `package.json` detection reads.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct PackageJson {
    dependencies: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "devDependencies")]
    dev_dependencies: BTreeMap<String, serde_json::Value>,
    scripts: BTreeMap<String, serde_json::Value>,
    main: Option<String>,
    #[serde(rename = "packageManager")]
    package_manager: Option<String>,
    engines: BTreeMap<String, serde_json::Value>,
}

impl PackageJson {
    fn has(&self, name: &str) -> bool {
        self.dependencies.contains_key(name) || self.dev_dependencies.contains_key(name)
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.dependencies
            .keys()
            .chain(self.dev_dependencies.keys())
            .any(|k| k.starts_with(prefix))
    }

    fn script(&self, name: &str) -> Option<&str> {
        self.scripts.get(name).and_then(|v| v.as_str())
    }
}

/// Decides how to build the checkout described by `repo`.
pub fn detect(repo: &RepoSnapshot) -> Result<Detection, DetectError> {
    if let Some(dockerfile) = &repo.dockerfile {
        return Ok(Detection {
            framework: Framework::Dockerfile,
            package_manager: None,
            port: exposed_port(dockerfile).unwrap_or(framework::DEFAULT_PORT),
            start: Vec::new(),
            has_build_script: false,
            local_dependencies: Vec::new(),
            has_public_dir: false,
            lock_file: None,
            node: None,
            dependency_node: Vec::new(),
        });
    }
    let Some(raw) = &repo.package_json else {
        return Err(DetectError::NothingToBuild {
            dir: repo.dir.clone(),
        });
    };
    let pkg: PackageJson =
        serde_json::from_str(raw).map_err(|e| DetectError::InvalidPackageJson {
            dir: repo.dir.clone(),
            reason: e.to_string(),
        })?;
    let framework = framework::classify(&pkg, repo);
    let package_manager = PackageManager::from_repo(repo, pkg.package_manager.as_deref());
    let start = match framework::start_command(framework, &pkg, repo) {
        Some(start) => start,
        None => {
            return Err(DetectError::NoStartCommand {
                dir: repo.dir.clone(),
            });
        }
    };
    let mut local_dependencies = Vec::new();
    for (name, value) in pkg.dependencies.iter().chain(pkg.dev_dependencies.iter()) {
        if let Some(path) = value.as_str().and_then(|v| v.strip_prefix("file:")) {
            refuse_control(&repo.dir, &format!("dependency {name:?}"), path)?;
            local_dependencies.push(path.trim_start_matches("./").to_owned());
        }
    }
    for word in &start {
        refuse_control(&repo.dir, "start command", word)?;
    }
    Ok(Detection {
        framework,
        package_manager: Some(package_manager),
        port: framework.default_port(),
        start,
        has_build_script: pkg.script("build").is_some(),
        local_dependencies,
        has_public_dir: repo.files.contains("public"),
        lock_file: PackageManager::LOCK_FILES
            .iter()
            .find(|(file, pm)| *pm == package_manager && repo.files.contains(*file))
            .map(|(file, _)| (*file).to_owned()),
        node: node_version::requested(
            repo.nvmrc.as_deref(),
            repo.node_version.as_deref(),
            pkg.engines.get("node").and_then(|v| v.as_str()),
        ),
        dependency_node: match (package_manager, &repo.package_lock) {
            (PackageManager::Npm, Some(lock)) => node_version::of_dependencies(
                lock,
                pkg.dependencies.keys().chain(pkg.dev_dependencies.keys()),
            ),
            _ => Vec::new(),
        },
    })
}

/// The first `EXPOSE` port of a Dockerfile, if any.
fn exposed_port(dockerfile: &str) -> Option<u16> {
    dockerfile.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if !words.next()?.eq_ignore_ascii_case("EXPOSE") {
            return None;
        }
        words.next()?.split('/').next()?.parse().ok()
    })
}
