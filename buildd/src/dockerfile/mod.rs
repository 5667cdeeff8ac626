//! Dockerfile generation for detected apps (pure).
//!
//! Shape: a `deps` stage whose install step is keyed only by the manifest, the lock file and
//! local `file:` dependencies (so a source change reuses it), with a cache mount for the package
//! manager's store; a `build` stage when the app has a build script, with cache mounts for the
//! framework's build caches (`.next/cache`, ...); a small runtime stage running as uid 1000 with
//! `NODE_ENV=production`. No `# syntax=` line: the engine's built-in Dockerfile frontend must
//! do, since build nodes need not reach Docker Hub.

use std::fmt::Write as _;

use crate::detect::{Detection, Framework, PackageManager};

/// Base images of generated Dockerfiles.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaseImages {
    /// Image with node and npm, used for every Node stage.
    pub node: String,
    /// Image with busybox `httpd`, used to serve static sites.
    pub static_server: String,
    /// Other Node.js majors there is an image of: the node image's repository tagged with the
    /// major (`127.0.0.1:5000/stackpad/node:22`, as `scripts/base-images` publishes them). An
    /// app whose `.nvmrc`, `.node-version` or `engines.node` the node image's major does not
    /// meet builds on the newest of these that does.
    pub node_majors: Vec<u64>,
}

impl Default for BaseImages {
    fn default() -> Self {
        Self {
            node: "node:20-bookworm-slim".to_owned(),
            static_server: "busybox:1".to_owned(),
            node_majors: Vec::new(),
        }
    }
}

/// The Node an app builds with (see [`BaseImages::for_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChoice {
    /// The node image: nothing asked, the request met, or a request not understood.
    Default,
    /// Another major's image.
    Major { major: u64, image: String },
    /// No image meets the request: the majors offered, for the message ("20, 22 or 24").
    Unmet { offered: String },
}

impl BaseImages {
    /// The Node.js major of the node image, from its tag (`node:20-bookworm-slim` -> 20).
    pub fn node_major(&self) -> Option<u64> {
        let last = self.node.rsplit('/').next()?;
        let tag = last.split('@').next()?.split_once(':')?.1;
        let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// Every major offered, ascending: the node image's and `node_majors`.
    pub fn offered_majors(&self) -> Vec<u64> {
        let mut all = self.node_majors.clone();
        all.extend(self.node_major());
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The node image's repository tagged with `major`.
    fn node_image_of(&self, major: u64) -> String {
        let repository = match self.node.rsplit_once('/') {
            Some((head, last)) => {
                format!("{head}/{}", last.split([':', '@']).next().unwrap_or(last))
            }
            None => self
                .node
                .split([':', '@'])
                .next()
                .unwrap_or(&self.node)
                .to_owned(),
        };
        format!("{repository}:{major}")
    }

    /// Which Node builds an app asking for `spec` (a `.nvmrc`, `.node-version` or
    /// `engines.node` value).
    pub fn for_request(&self, spec: &str) -> NodeChoice {
        use crate::detect::node_version::satisfies;
        let Some(default) = self.node_major() else {
            return NodeChoice::Default;
        };
        if satisfies(spec, default) != Some(false) {
            return NodeChoice::Default;
        }
        let offered = self.offered_majors();
        match offered
            .iter()
            .rev()
            .find(|m| satisfies(spec, **m) == Some(true))
        {
            Some(&major) => NodeChoice::Major {
                major,
                image: self.node_image_of(major),
            },
            None => {
                let names: Vec<String> = offered.iter().map(u64::to_string).collect();
                let offered = match names.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} or {last}", rest.join(", "))
                    }
                    _ => names.join(""),
                };
                NodeChoice::Unmet { offered }
            }
        }
    }

    /// The Node an app that asks for none builds with when its dependencies declare versions
    /// (`Detection::dependency_node`): `None` for the node image, when it meets them all (or
    /// they cannot be told) or when no major offered does (the build goes on with the node
    /// image); else the newest major offered that meets them all, its image, and the first
    /// request the node image does not meet.
    pub fn for_dependencies<'a>(
        &self,
        requests: &'a [crate::detect::NodeRequest],
    ) -> Option<(u64, String, &'a crate::detect::NodeRequest)> {
        use crate::detect::node_version::satisfies;
        let meets = |major: u64| {
            requests
                .iter()
                .all(|r| satisfies(&r.spec, major) != Some(false))
        };
        let default = self.node_major()?;
        let unmet = requests
            .iter()
            .find(|r| satisfies(&r.spec, default) == Some(false))?;
        let major = *self.offered_majors().iter().rev().find(|m| meets(**m))?;
        Some((major, self.node_image_of(major), unmet))
    }
}

/// Name of the generated Dockerfile inside the build context.
pub const GENERATED_NAME: &str = "Dockerfile.stackpad";

/// The static file server of single-page apps (`buildd/static-server/main.rs`, linked
/// statically by the build script): its file name, its place in the image, and the binary.
pub const STATIC_SERVER: &str = "static-server";
pub use detect::STATIC_SERVER_PATH;
pub const STATIC_SERVER_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/static-server"));
/// The file name of the dependency cache's tarball.
pub const DEPS_TAR: &str = "deps.tar";

/// What buildd serves a build beside its context, on its loopback context listener (URLs the
/// Dockerfile `ADD`s: BuildKit fetches them itself, so `RUN` steps keep network `none`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served<'a> {
    /// The dependencies buildd fetched (`source::deps`), a tarball of npm's cache: the install
    /// step unpacks it on a tmpfs and installs from it offline.
    pub deps: Option<&'a str>,
    /// The static server of single-page apps ([`STATIC_SERVER_BINARY`]).
    pub static_server: Option<&'a str>,
    /// pnpm or yarn at the app's version (`pnpm@10.34.9`), in the fetched npm cache: the
    /// install step installs it from there, then installs the app's packages offline from the
    /// store fetched beside it (see `source::deps`).
    pub tool: Option<&'a str>,
}

/// The uid:gid the app runs as (the official node images' `node` user).
const APP_USER: &str = "1000:1000";
/// Where the build stage copies the app's files other than node_modules, for the image.
const APP_FILES: &str = "/app-files";
/// Touched in the build stage before the build: files in node_modules newer than it were
/// written by the build script.
const INSTALLED_MARK: &str = "/tmp/.stackpad-installed";
/// Build tools' caches in node_modules, never copied into the image.
const MODULE_CACHES: &[&str] = &[".cache", ".vite", ".vite-temp", ".astro"];

/// The caches a framework's build keeps between builds, relative to the app: each is a cache
/// mount of the build script's step, named by the app's cache key like the package manager's
/// store (so apps and tenants never share one). The next build of the same app starts from what
/// the last one left there, and none of it is in a layer, so none of it is in the image.
/// `sharing=locked`: two builds of one app at once take turns over the build step rather than
/// write one cache (Turbopack's database has one writer).
fn build_caches(framework: Framework) -> &'static [&'static str] {
    match framework {
        // Turbopack's file-system cache for `next build` (`.next/cache/turbopack`, on by default
        // since Next 16: `experimental.turbopackFileSystemCacheForBuild`), the type check's
        // `.tsbuildinfo`, webpack's cache for `next build --webpack`, fetch and image caches.
        Framework::NextJs { .. } => &[".next/cache"],
        // Astro's `cacheDir` (content layer store, optimized images).
        Framework::Astro { .. } => &["node_modules/.astro"],
        // Nuxt's `buildCache` and its Vite's cache.
        Framework::Nuxt => &["node_modules/.cache"],
        // Vite's `cacheDir` (what plugins keep; `vite build` itself keeps no cache), and
        // create-vite's `tsBuildInfoFile`s for the `tsc -b` of its build script.
        Framework::ViteStatic => &["node_modules/.vite", "node_modules/.tmp"],
        Framework::ReactRouter | Framework::Remix | Framework::SvelteKit { .. } => {
            &["node_modules/.vite"]
        }
        _ => &[],
    }
}

/// The `--mount` options of the build step for `framework`'s caches ([`build_caches`]), each
/// followed by a space; empty when it keeps none.
fn build_cache_mounts(framework: Framework, cache_key: &str) -> String {
    build_caches(framework)
        .iter()
        .map(|dir| {
            format!(
                "--mount=type=cache,id=stackpad-build-{cache_key}-{},target=/app/{dir},sharing=locked ",
                dir.replace('/', "-")
            )
        })
        .collect()
}

struct Install {
    cache: &'static str,
    all: String,
    prod: String,
    prune: Option<&'static str>,
    run_build: &'static str,
    /// What every form of the install command contains (`npm ci`, `pnpm install`), for
    /// naming a failed step.
    verb: String,
}

/// The install commands of `pm`. `fetched`: installed offline from the mounted folder of
/// fetched dependencies (`/deps`); `tool`: the pnpm or yarn spec installed from it first.
fn install(pm: PackageManager, locked: bool, fetched: bool, tool: Option<&str>) -> Install {
    // pnpm and yarn come from the fetched npm cache, at the app's version.
    let setup = tool
        .filter(|_| fetched)
        .map(|spec| {
            format!(
                "npm install -g --offline --cache /deps/npm --no-audit --no-fund \
                 --loglevel=error {spec} && "
            )
        })
        .unwrap_or_default();
    let frozen = if locked { " --frozen-lockfile" } else { "" };
    match pm {
        PackageManager::Npm => {
            let verb = if locked { "ci" } else { "install" };
            // Fetched dependencies: installed offline from the mounted cache.
            let from = if fetched {
                " --offline --cache /deps/npm"
            } else {
                ""
            };
            Install {
                cache: "/root/.npm",
                all: format!("npm {verb}{from} --no-audit --no-fund"),
                prod: format!("npm {verb}{from} --omit=dev --no-audit --no-fund"),
                prune: Some("npm prune --omit=dev --no-audit --no-fund"),
                run_build: "npm run build",
                verb: format!("npm {verb}"),
            }
        }
        PackageManager::Pnpm => {
            let from = if fetched {
                " --offline --store-dir /deps/pnpm"
            } else {
                " --store-dir /pnpm/store"
            };
            let head = if fetched {
                setup
            } else {
                "corepack enable && ".into()
            };
            Install {
                cache: "/pnpm/store",
                all: format!("{head}pnpm install{frozen}{from}"),
                prod: format!("{head}pnpm install --prod{frozen}{from}"),
                // Pruning needs the store (pnpm reinstalls): a stage of its own installs the
                // production dependencies instead (see `prod_stage`).
                prune: None,
                run_build: "pnpm run build",
                verb: "pnpm install".into(),
            }
        }
        PackageManager::Yarn => {
            let from = if fetched {
                " --offline --non-interactive --cache-folder /deps/yarn"
            } else {
                " --non-interactive"
            };
            let head = if fetched {
                setup
            } else {
                "corepack enable && ".into()
            };
            Install {
                cache: "/usr/local/share/.cache/yarn",
                all: format!("{head}yarn install{frozen}{from}"),
                prod: format!("{head}yarn install --production{frozen}{from}"),
                prune: None,
                run_build: "yarn run build",
                verb: "yarn install".into(),
            }
        }
        PackageManager::Bun => Install {
            cache: "/root/.bun/install/cache",
            all: "npm install -g bun@1 && bun install --frozen-lockfile".into(),
            prod: "npm install -g bun@1 && bun install --production --frozen-lockfile".into(),
            prune: None,
            run_build: "bun run build",
            verb: "bun install".into(),
        },
    }
}

/// Generates the Dockerfile for a detected app; `None` for a repository with its own Dockerfile.
/// `build_args` are declared in the build stage so `--build-arg` values reach the build script.
/// `cache_key` (see [`cache_key`]) names the package manager's cache mount and the framework's
/// build caches ([`build_caches`]), so that apps (and tenants) never share a cache. `served`: what buildd serves the build.
pub fn generate(
    d: &Detection,
    base: &BaseImages,
    build_args: &[String],
    cache_key: &str,
    served: Served<'_>,
) -> Option<String> {
    let pm = d.package_manager?;
    if d.framework == Framework::Dockerfile {
        return None;
    }
    let inst = install(
        pm,
        d.lock_file.is_some(),
        served.deps.is_some(),
        served.tool,
    );
    let needs_build = d.has_build_script
        || !matches!(
            d.framework,
            Framework::Express | Framework::Fastify | Framework::Node
        );
    let mut f = String::new();
    let _ = writeln!(
        f,
        "# generated by stackpad-buildd: {} ({})",
        d.framework.name(),
        pm.name()
    );
    if let Some(url) = served.deps {
        // Fetched by BuildKit itself; its cache key is the tarball's content.
        let _ = writeln!(f, "FROM scratch AS fetched\nADD {url} /{DEPS_TAR}\n");
    }
    // deps: keyed only by the manifest, the lock file and local file: dependencies.
    let _ = writeln!(f, "FROM {} AS deps\nWORKDIR /app", base.node);
    let mut manifests = vec!["package.json".to_owned()];
    manifests.extend(d.lock_file.iter().cloned());
    let _ = writeln!(f, "COPY {} ./", manifests.join(" "));
    for dep in &d.local_dependencies {
        // JSON form: a path with spaces or quotes stays one path (detection refused control
        // characters already).
        let _ = writeln!(f, "COPY [{}, {}]", json(dep), json(&format!("./{dep}")));
    }
    let cmd = if needs_build { &inst.all } else { &inst.prod };
    let install_run = |f: &mut String, cmd: &str| {
        // `mkdir -p`: an app without dependencies gets no node_modules from the install, and
        // the runtime stage copies it.
        if served.deps.is_some() {
            let _ = writeln!(
                f,
                "RUN --mount=type=bind,from=fetched,target=/fetched --mount=type=tmpfs,target=/deps \
                 tar -xf /fetched/{DEPS_TAR} -C /deps && {cmd} && mkdir -p node_modules"
            );
        } else {
            let _ = writeln!(
                f,
                "RUN --mount=type=cache,id=stackpad-{}-{cache_key},target={} {cmd} && mkdir -p node_modules",
                pm.name(),
                inst.cache
            );
        }
    };
    install_run(&mut f, cmd);
    let prod = needs_build && prod_stage(d, pm);
    if prod {
        // The production dependencies in a stage of their own, cached while the lock file is
        // unchanged: a source change neither prunes nor exports them again. npm prunes the
        // full install; pnpm and yarn 1 cannot prune offline, so they install them on their
        // own from the same manifests.
        match inst.prune {
            Some(prune) => {
                let _ = writeln!(f, "\nFROM deps AS prod-deps\nRUN {prune}");
            }
            None => {
                let _ = writeln!(f, "\nFROM {} AS prod-deps\nWORKDIR /app", base.node);
                let _ = writeln!(f, "COPY {} ./", manifests.join(" "));
                for dep in &d.local_dependencies {
                    let _ = writeln!(f, "COPY [{}, {}]", json(dep), json(&format!("./{dep}")));
                }
                install_run(&mut f, &inst.prod);
            }
        }
    }
    if needs_build {
        let _ = writeln!(f, "\nFROM deps AS build");
        if prod {
            // Older than anything the build script writes into node_modules (see below), newer
            // than the install; cached with the install.
            let _ = writeln!(f, "RUN touch {INSTALLED_MARK}");
        }
        for arg in build_args {
            let _ = writeln!(f, "ARG {arg}");
        }
        let _ = writeln!(f, "ENV NODE_ENV=production");
        // Build steps have no network; the frameworks that would report telemetry are told
        // not to try.
        let telemetry = match d.framework {
            Framework::NextJs { .. } => Some("NEXT_TELEMETRY_DISABLED"),
            Framework::Astro { .. } => Some("ASTRO_TELEMETRY_DISABLED"),
            Framework::Nuxt => Some("NUXT_TELEMETRY_DISABLED"),
            _ => None,
        };
        if let Some(name) = telemetry {
            let _ = writeln!(f, "ENV {name}=1");
        }
        let _ = writeln!(f, "COPY . .");
        // node_modules goes into the image on its own, from prod-deps: unchanged dependencies
        // are a cached layer (not exported or pushed again) when only the sources changed. The
        // app's other files are set aside for the image, by the build step itself (one
        // container start fewer); moving node_modules instead copied all of it (a rename
        // across overlay layers), deleting it wrote a whiteout per file.
        let set_aside = prod.then(|| set_aside(d.framework));
        if d.has_build_script {
            let _ = writeln!(
                f,
                "RUN {}{}{}",
                build_cache_mounts(d.framework, cache_key),
                inst.run_build,
                set_aside
                    .as_ref()
                    .map(|s| format!(" && {s}"))
                    .unwrap_or_default()
            );
        } else if let Some(set_aside) = &set_aside {
            let _ = writeln!(f, "RUN {set_aside}");
        }
        // The build's own cache has no place in the image (a cache mount leaves its mount
        // point behind).
        if !prod && d.framework == (Framework::NextJs { standalone: false }) {
            let _ = writeln!(f, "RUN rm -rf .next/cache");
        }
    }
    let modules = prod.then(|| format!("--from=prod-deps --chown={APP_USER} /app/node_modules"));
    runtime_stage(&mut f, d, base, needs_build, modules.as_deref(), served);
    Some(f)
}

/// The command that copies the app's files other than node_modules to [`APP_FILES`], with what
/// the build script wrote into node_modules (a generated client, say). It runs in the build
/// step, where the framework's build caches are mounted: their folders are left out (contents
/// and mount points; `.next/cache` as one level under a folder copied entry by entry, its time
/// kept), and so are the build tools' caches in node_modules ([`MODULE_CACHES`]).
fn set_aside(framework: Framework) -> String {
    let outside: Vec<&str> = build_caches(framework)
        .iter()
        .copied()
        .filter(|dir| !dir.starts_with("node_modules/"))
        .collect();
    let mut cmd =
        format!("mkdir {APP_FILES} && find . -mindepth 1 -maxdepth 1 ! -name node_modules");
    for dir in &outside {
        let _ = write!(cmd, " ! -name {}", dir.split('/').next().unwrap_or(dir));
    }
    let _ = write!(cmd, " -exec cp -a -t {APP_FILES} {{}} +");
    for (parent, cache) in outside.iter().filter_map(|d| d.split_once('/')) {
        let _ = write!(
            cmd,
            " && if [ -d {parent} ]; then mkdir {APP_FILES}/{parent} && find {parent} -mindepth 1 \
             -maxdepth 1 ! -name {cache} -exec cp -a -t {APP_FILES}/{parent} {{}} + && \
             touch -r {parent} {APP_FILES}/{parent}; fi"
        );
    }
    let caches: Vec<String> = MODULE_CACHES
        .iter()
        .map(|c| format!("-path node_modules/{c}"))
        .collect();
    let _ = write!(
        cmd,
        " && if [ -d node_modules ]; then find node_modules \\( {} \\) -prune -o ! -type d \
         -newer {INSTALLED_MARK} -print0 | xargs -0 -r cp -a --parents -t {APP_FILES}; fi",
        caches.join(" -o ")
    );
    cmd
}

/// What a failed step of a generated Dockerfile was for, named for the user: the install, the
/// app's build script, the prune of dev dependencies. `step` is BuildKit's name of the step
/// (`[build 5/6] RUN npm run build`); `None` for steps that are not the app's commands.
pub fn failure_cause(d: &Detection, step: &str) -> Option<String> {
    let pm = d.package_manager?;
    let mut command = step.split_once("] RUN ").map(|(_, c)| c)?;
    // The mounts (a build cache's, say) are not the command.
    while let Some((_, rest)) = command
        .strip_prefix("--mount=")
        .and_then(|m| m.split_once(' '))
    {
        command = rest;
    }
    // Whether the install was from fetched dependencies does not change the commands' names.
    let inst = install(pm, d.lock_file.is_some(), false, None);
    // The build step of an app with a production dependencies stage also sets its files aside.
    if command == inst.run_build
        || command.starts_with(&format!("{} && mkdir {APP_FILES} ", inst.run_build))
    {
        Some(format!(
            "the app's build script failed (`{}`, the \"build\" script of package.json; \
             its output is in the build log)",
            inst.run_build
        ))
    } else if command.contains(&format!("{} ", inst.verb)) {
        Some(format!(
            "installing the dependencies failed (`{}`): the lock file may not match \
             package.json, or a package's install script failed",
            inst.verb
        ))
    } else if inst.prune.is_some_and(|p| command == p) {
        Some("removing the dev dependencies from the image failed".to_owned())
    } else {
        None
    }
}

/// Whether an app with a build step gets its production dependencies from a stage of their own
/// (npm's prune of the full install, pnpm's and yarn 1's install of them): every app whose
/// image runs from its node_modules (not static sites, Next.js standalone output or Nuxt's
/// Nitro output). Bun's are not told apart.
fn prod_stage(d: &Detection, pm: PackageManager) -> bool {
    pm != PackageManager::Bun
        && !d.framework.is_static()
        && !matches!(
            d.framework,
            Framework::NextJs { standalone: true } | Framework::Nuxt
        )
}

fn runtime_stage(
    f: &mut String,
    d: &Detection,
    base: &BaseImages,
    needs_build: bool,
    modules: Option<&str>,
    served: Served<'_>,
) {
    let port = d.port;
    if let (true, Some(url)) = (d.framework.is_static(), served.static_server) {
        // buildd's static server alone with the files (with the SPA fallback to index.html a
        // router needs, for single-page apps only). ADD of a URL makes a 0600 file: made
        // executable in a stage of its own (the static server base has a shell), so the image
        // holds only the server and the site. The files stay root's, read-only to the app.
        let _ = writeln!(
            f,
            "\nFROM {} AS server\nADD {url} {STATIC_SERVER_PATH}\nRUN chmod 755 {STATIC_SERVER_PATH}",
            base.static_server
        );
        let _ = writeln!(
            f,
            "\nFROM scratch\nENV PORT={port} STATIC_ROOT=/www{}\n\
             COPY --from=server {STATIC_SERVER_PATH} {STATIC_SERVER_PATH}\n\
             COPY --from=build /app/{} /www",
            if d.framework.serves_spa() {
                ""
            } else {
                " STATIC_SPA=0"
            },
            d.framework.static_dir()
        );
    } else if d.framework.is_static() {
        let _ = writeln!(f, "\nFROM {}", base.static_server);
        let _ = writeln!(
            f,
            "COPY --from=build --chown={APP_USER} /app/{} /www",
            d.framework.static_dir()
        );
    } else {
        let _ = writeln!(f, "\nFROM {}\nWORKDIR /app", base.node);
        let _ = writeln!(
            f,
            "ENV NODE_ENV=production PORT={port} HOSTNAME=0.0.0.0 HOST=0.0.0.0"
        );
        if d.framework == Framework::Fastify {
            // fastify-cli's `fastify start` listens on localhost unless told (or in Docker).
            let _ = writeln!(f, "ENV FASTIFY_ADDRESS=0.0.0.0");
        }
        match d.framework {
            Framework::NextJs { standalone: true } => {
                let _ = writeln!(
                    f,
                    "COPY --from=build --chown={APP_USER} /app/.next/standalone ./\n\
                     COPY --from=build --chown={APP_USER} /app/.next/static ./.next/static"
                );
                if d.has_public_dir {
                    let _ = writeln!(
                        f,
                        "COPY --from=build --chown={APP_USER} /app/public ./public"
                    );
                }
            }
            Framework::Nuxt => {
                let _ = writeln!(
                    f,
                    "COPY --from=build --chown={APP_USER} /app/.output ./.output"
                );
            }
            _ if needs_build => match modules {
                Some(from) => {
                    let _ = writeln!(
                        f,
                        "COPY {from} ./node_modules\n\
                         COPY --from=build --chown={APP_USER} {APP_FILES} ./"
                    );
                }
                None => {
                    let _ = writeln!(f, "COPY --from=build --chown={APP_USER} /app ./");
                }
            },
            _ => {
                let _ = writeln!(
                    f,
                    "COPY --from=deps --chown={APP_USER} /app/node_modules ./node_modules\n\
                     COPY --chown={APP_USER} . ."
                );
            }
        }
    }
    let httpd;
    let start = if d.framework.is_static() && served.static_server.is_none() {
        // Without buildd's static server (not served to this build): busybox httpd.
        httpd = [
            "httpd".to_owned(),
            "-f".to_owned(),
            "-v".to_owned(),
            "-p".to_owned(),
            port.to_string(),
            "-h".to_owned(),
            "/www".to_owned(),
        ];
        &httpd[..]
    } else {
        &d.start[..]
    };
    let cmd: Vec<String> = start.iter().map(|w| json(w)).collect();
    let _ = writeln!(
        f,
        "USER {APP_USER}\nEXPOSE {port}\nCMD [{}]",
        cmd.join(", ")
    );
}

/// The cache key of the image repository `image` (`<registry>/<org>/<service>[:tag]`, the tag
/// dropped): one key per repository, so one per organization's app. Escaped injectively into
/// `[a-z0-9.]` and `_xx` (hex), which is safe inside a `--mount` option list.
pub fn cache_key(image: &str) -> String {
    let repository = match image.rsplit_once('/') {
        Some((head, last)) => {
            let last = last.split(['@', ':']).next().unwrap_or(last);
            format!("{head}/{last}")
        }
        None => image.split(['@', ':']).next().unwrap_or(image).to_owned(),
    };
    let mut key = String::with_capacity(repository.len());
    for b in repository.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' {
            key.push(char::from(b));
        } else {
            let _ = write!(key, "_{b:02x}");
        }
    }
    key
}

/// `value` as a JSON string (the quoting of Dockerfile exec and JSON forms).
fn json(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

#[cfg(test)]
mod tests;
