//! The frameworks and package managers buildd knows, and the rules that recognise them.

use super::{PackageJson, RepoSnapshot};

/// Port used when nothing says otherwise (Node servers' common default).
pub(super) const DEFAULT_PORT: u16 = 3000;

/// Port of the static file server in images of static sites.
pub const STATIC_PORT: u16 = 8080;

/// What a checkout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    /// The repository brings its own Dockerfile.
    Dockerfile,
    /// Next.js; built with `output: "standalone"` when its config asks for it.
    NextJs {
        standalone: bool,
    },
    Nuxt,
    Remix,
    /// React Router 7 framework mode (`@react-router/dev`, Remix's successor), served by
    /// `react-router-serve`.
    ReactRouter,
    /// Astro; `server` when the Node adapter is installed, otherwise a static site.
    Astro {
        server: bool,
    },
    /// SvelteKit; `server` with adapter-node, otherwise a static site (adapter-static).
    SvelteKit {
        server: bool,
    },
    /// A Vite app built to static files.
    ViteStatic,
    NestJs,
    Express,
    Fastify,
    /// Any other Node server with a start script, a `main` entry or server.js/index.js.
    Node,
}

impl Framework {
    /// The name reported in `BuildStatus.framework`.
    pub fn name(self) -> &'static str {
        match self {
            Framework::Dockerfile => "dockerfile",
            Framework::NextJs { .. } => "nextjs",
            Framework::Nuxt => "nuxt",
            Framework::Remix => "remix",
            Framework::ReactRouter => "react-router",
            Framework::Astro { .. } => "astro",
            Framework::SvelteKit { .. } => "sveltekit",
            Framework::ViteStatic => "vite",
            Framework::NestJs => "nestjs",
            Framework::Express => "express",
            Framework::Fastify => "fastify",
            Framework::Node => "node",
        }
    }

    /// Whether the image serves static files (no app server at run time).
    pub fn is_static(self) -> bool {
        matches!(
            self,
            Framework::ViteStatic
                | Framework::Astro { server: false }
                | Framework::SvelteKit { server: false }
        )
    }

    /// Whether the static files are a single-page app: buildd's static server, which serves
    /// every static site, falls back to `index.html` for a path that names no file (other
    /// static sites get a 404, with their `404.html` when they have one).
    pub fn serves_spa(self) -> bool {
        self == Framework::ViteStatic
    }

    /// Folder the build writes the static files to.
    pub fn static_dir(self) -> &'static str {
        match self {
            Framework::SvelteKit { .. } => "build",
            _ => "dist",
        }
    }

    pub(super) fn default_port(self) -> u16 {
        match self {
            _ if self.is_static() => STATIC_PORT,
            Framework::Astro { .. } => 4321,
            _ => DEFAULT_PORT,
        }
    }
}

/// How dependencies are installed, chosen from the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    Npm,
    Pnpm,
    Yarn,
    Bun,
}

impl PackageManager {
    /// Lock files in order of preference, with the manager each one means.
    pub const LOCK_FILES: [(&'static str, PackageManager); 5] = [
        ("pnpm-lock.yaml", PackageManager::Pnpm),
        ("yarn.lock", PackageManager::Yarn),
        ("bun.lockb", PackageManager::Bun),
        ("bun.lock", PackageManager::Bun),
        ("package-lock.json", PackageManager::Npm),
    ];

    pub(super) fn from_repo(repo: &RepoSnapshot, declared: Option<&str>) -> Self {
        if let Some((_, pm)) = Self::LOCK_FILES
            .iter()
            .find(|(file, _)| repo.files.contains(*file))
        {
            return *pm;
        }
        match declared.and_then(|d| d.split('@').next()) {
            Some("pnpm") => PackageManager::Pnpm,
            Some("yarn") => PackageManager::Yarn,
            Some("bun") => PackageManager::Bun,
            _ => PackageManager::Npm,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PackageManager::Npm => "npm",
            PackageManager::Pnpm => "pnpm",
            PackageManager::Yarn => "yarn",
            PackageManager::Bun => "bun",
        }
    }
}

pub(super) fn classify(pkg: &PackageJson, repo: &RepoSnapshot) -> Framework {
    if pkg.has("next") {
        let standalone = repo
            .next_config
            .as_deref()
            .is_some_and(|c| c.contains("standalone"));
        Framework::NextJs { standalone }
    } else if pkg.has("nuxt") || pkg.has("nuxt3") {
        Framework::Nuxt
    } else if pkg.has_prefix("@remix-run/") {
        Framework::Remix
    } else if pkg.has("@react-router/dev") {
        Framework::ReactRouter
    } else if pkg.has("astro") {
        Framework::Astro {
            server: pkg.has("@astrojs/node"),
        }
    } else if pkg.has("@sveltejs/kit") {
        Framework::SvelteKit {
            server: pkg.has("@sveltejs/adapter-node"),
        }
    } else if pkg.has("@nestjs/core") {
        Framework::NestJs
    } else if pkg.has("vite") && !pkg.has("express") && !pkg.has("fastify") {
        Framework::ViteStatic
    } else if pkg.has("express") {
        Framework::Express
    } else if pkg.has("fastify") {
        Framework::Fastify
    } else {
        Framework::Node
    }
}

fn exec(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// The command that starts the app; `None` when a plain Node app gives no hint.
pub(super) fn start_command(
    framework: Framework,
    pkg: &PackageJson,
    repo: &RepoSnapshot,
) -> Option<Vec<String>> {
    if framework.is_static() {
        return Some(exec(&[crate::STATIC_SERVER_PATH]));
    }
    let start = match framework {
        // Static sites returned above; a Dockerfile brings its own CMD.
        Framework::Dockerfile | Framework::ViteStatic => Vec::new(),
        Framework::NextJs { standalone: true } => exec(&["node", "server.js"]),
        Framework::NextJs { standalone: false } => exec(&["node_modules/.bin/next", "start"]),
        Framework::Nuxt => exec(&["node", ".output/server/index.mjs"]),
        Framework::Remix => match pkg.script("start") {
            Some(script) => script_command(script, pkg),
            None => exec(&["node_modules/.bin/remix-serve", "./build/server/index.js"]),
        },
        Framework::ReactRouter => match pkg.script("start") {
            Some(script) => script_command(script, pkg),
            None => exec(&[
                "node_modules/.bin/react-router-serve",
                "./build/server/index.js",
            ]),
        },
        Framework::Astro { .. } => exec(&["node", "./dist/server/entry.mjs"]),
        Framework::SvelteKit { .. } => exec(&["node", "build"]),
        Framework::NestJs => exec(&["node", "dist/main"]),
        Framework::Express | Framework::Fastify | Framework::Node => {
            if let Some(script) = pkg.script("start") {
                script_command(script, pkg)
            } else if let Some(main) = &pkg.main {
                exec(&["node", main])
            } else if let Some(file) = ["server.js", "index.js", "app.js"]
                .into_iter()
                .find(|f| repo.files.contains(*f))
            {
                exec(&["node", file])
            } else {
                return None;
            }
        }
    };
    Some(start)
}

/// The servers frameworks start through a package's command (`<command> [args]` in the
/// generators' start scripts), with the package that installs it in `node_modules/.bin`.
const SERVER_COMMANDS: [(&str, &str); 3] = [
    ("fastify", "fastify-cli"),
    ("react-router-serve", "@react-router/serve"),
    ("remix-serve", "@remix-run/serve"),
];

/// How a start script runs: `node <file> [args]` directly, and the frameworks' server commands
/// from `node_modules/.bin` when their package is a production dependency (signals reach the
/// server, no npm in between); anything else through `npm start`.
fn script_command(script: &str, pkg: &PackageJson) -> Vec<String> {
    let words: Vec<&str> = script.split_whitespace().collect();
    let simple = words.len() >= 2
        && words
            .iter()
            .all(|w| !w.contains(['&', '|', ';', '$', '>', '<', '=', '`']));
    match words.first() {
        Some(&"node") if simple => exec(&words),
        Some(first) if simple => match SERVER_COMMANDS.iter().find(|(c, _)| c == first) {
            Some((command, package)) if pkg.dependencies.contains_key(*package) => {
                let mut all = vec![format!("node_modules/.bin/{command}")];
                all.extend(words[1..].iter().map(|w| (*w).to_owned()));
                all
            }
            _ => exec(&["npm", "start"]),
        },
        _ => exec(&["npm", "start"]),
    }
}
