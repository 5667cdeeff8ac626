use std::path::PathBuf;

use super::*;
use crate::detect::{RepoSnapshot, detect};

fn generated(fixture: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(fixture);
    let d = detect(&RepoSnapshot::read(&dir).unwrap()).unwrap();
    let base = BaseImages {
        node: "reg/node:20".into(),
        static_server: "reg/busybox:1".into(),
        node_majors: Vec::new(),
    };
    generate(
        &d,
        &base,
        &["API_URL".into()],
        &cache_key("reg:5000/acme/web:v1"),
        Served {
            deps: None,
            static_server: Some("http://127.0.0.1:9/contexts/t/static-server"),
            tool: None,
        },
    )
    .expect("a generated Dockerfile")
}

/// Line index of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
}

#[test]
fn express_installs_prod_deps_from_manifest_and_lock_only_before_the_source() {
    let f = generated("express");
    let copy_manifests = line_of(&f, "COPY package.json package-lock.json ./");
    let vendored = line_of(
        &f,
        r#"COPY ["vendor/express-4.21.2.tgz", "./vendor/express-4.21.2.tgz"]"#,
    );
    let install = line_of(
        &f,
        "RUN --mount=type=cache,id=stackpad-npm-reg_3a5000_2facme_2fweb,target=/root/.npm npm ci --omit=dev",
    );
    let source = line_of(&f, "COPY --chown=1000:1000 . .");
    assert!(
        copy_manifests < vendored && vendored < install && install < source,
        "{f}"
    );
    // The deps stage copies nothing but the manifests before installing.
    let deps_stage: Vec<&str> = f.lines().take(install).collect();
    assert!(!deps_stage.iter().any(|l| l.contains("COPY . .")), "{f}");
    assert!(f.contains("FROM reg/node:20 AS deps"), "{f}");
    assert!(f.contains("ENV NODE_ENV=production PORT=3000"), "{f}");
    assert!(f.contains("USER 1000:1000"), "{f}");
    assert!(f.contains("EXPOSE 3000"), "{f}");
    assert!(
        f.trim_end().ends_with(r#"CMD ["node", "server.js"]"#),
        "{f}"
    );
    assert!(
        !f.contains("AS build"),
        "no build script, no build stage:\n{f}"
    );
    assert!(!f.contains("# syntax"), "{f}");
}

#[test]
fn nextjs_standalone_copies_only_the_standalone_output() {
    let f = generated("nextjs-standalone");
    assert!(
        f.contains("npm install --no-audit --no-fund"),
        "no lock file: npm install\n{f}"
    );
    assert!(
        f.contains(
            "FROM deps AS build\nARG API_URL\nENV NODE_ENV=production\nENV NEXT_TELEMETRY_DISABLED=1\nCOPY . .\n\
             RUN --mount=type=cache,id=stackpad-build-reg_3a5000_2facme_2fweb-.next-cache,\
             target=/app/.next/cache,sharing=locked npm run build\n"
        ),
        "{f}"
    );
    assert!(
        f.contains("COPY --from=build --chown=1000:1000 /app/.next/standalone ./"),
        "{f}"
    );
    assert!(f.contains("/app/.next/static ./.next/static"), "{f}");
    assert!(f.contains("/app/public ./public"), "{f}");
    assert!(f.contains(r#"CMD ["node", "server.js"]"#), "{f}");
}

#[test]
fn vite_single_page_app_is_served_by_the_static_server_alone_from_root_owned_files() {
    let f = generated("vite-static");
    assert!(f.contains("RUN --mount=type=cache,id=stackpad-pnpm-reg_3a5000_2facme_2fweb,target=/pnpm/store corepack enable && pnpm install --frozen-lockfile"), "{f}");
    assert!(f.contains("COPY package.json pnpm-lock.yaml ./"), "{f}");
    assert!(
        f.contains(
            "FROM reg/busybox:1 AS server\n\
             ADD http://127.0.0.1:9/contexts/t/static-server /static-server\n\
             RUN chmod 755 /static-server\n\n\
             FROM scratch\nENV PORT=8080 STATIC_ROOT=/www\n\
             COPY --from=server /static-server /static-server\n\
             COPY --from=build /app/dist /www\nUSER 1000:1000\nEXPOSE 8080\n\
             CMD [\"/static-server\"]"
        ),
        "{f}"
    );
    assert!(!f.contains("prune"), "{f}");
    // Vite's cache and create-vite's tsbuildinfo kept across builds of this app only.
    assert!(
        f.contains(
            "RUN --mount=type=cache,id=stackpad-build-reg_3a5000_2facme_2fweb-node_modules-.vite,\
             target=/app/node_modules/.vite,sharing=locked \
             --mount=type=cache,id=stackpad-build-reg_3a5000_2facme_2fweb-node_modules-.tmp,\
             target=/app/node_modules/.tmp,sharing=locked pnpm run build\n"
        ),
        "{f}"
    );
}

/// The generator-made Next.js example (`examples/nextjs`), its dependencies fetched by buildd.
#[test]
fn fetched_dependencies_are_installed_offline_from_the_mounted_cache() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/nextjs");
    let d = detect(&RepoSnapshot::read(&dir).unwrap()).unwrap();
    assert_eq!(d.framework, Framework::NextJs { standalone: false });
    let served = Served {
        deps: Some("http://127.0.0.1:9/contexts/t/deps.tar"),
        static_server: None,
        tool: None,
    };
    let f = generate(&d, &BaseImages::default(), &[], "k", served).unwrap();
    assert!(
        f.contains(
            "FROM scratch AS fetched\nADD http://127.0.0.1:9/contexts/t/deps.tar /deps.tar\n"
        ),
        "{f}"
    );
    let install = line_of(
        &f,
        "RUN --mount=type=bind,from=fetched,target=/fetched --mount=type=tmpfs,target=/deps \
         tar -xf /fetched/deps.tar -C /deps && npm ci --offline --cache /deps/npm --no-audit --no-fund",
    );
    // The dev dependencies are pruned in a stage of their own, from the install alone: a
    // source change reuses it (and the image's node_modules layer).
    let prod_stage = line_of(&f, "FROM deps AS prod-deps");
    let prune = line_of(&f, "RUN npm prune --omit=dev");
    let build_stage = line_of(&f, "FROM deps AS build");
    let mark = line_of(&f, "RUN touch /tmp/.stackpad-installed");
    // Next's build cache (Turbopack's, the type check's) kept across builds of this app, in a
    // cache mount of its own: in no layer.
    // The build step then sets the app's files aside, and what the build wrote into
    // node_modules (build caches apart: the mount's contents are not copied).
    let build = line_of(
        &f,
        "RUN --mount=type=cache,id=stackpad-build-k-.next-cache,target=/app/.next/cache,\
         sharing=locked npm run build && mkdir /app-files && find . -mindepth 1 -maxdepth 1 \
         ! -name node_modules ! -name .next -exec cp -a -t /app-files {} + && if [ -d .next ]; \
         then mkdir /app-files/.next && find .next -mindepth 1 -maxdepth 1 ! -name cache \
         -exec cp -a -t /app-files/.next {} + && touch -r .next /app-files/.next; fi && \
         if [ -d node_modules ]; then find node_modules \\( -path node_modules/.cache -o \
         -path node_modules/.vite -o -path node_modules/.vite-temp -o -path node_modules/.astro \\) \
         -prune -o ! -type d -newer /tmp/.stackpad-installed -print0 \
         | xargs -0 -r cp -a --parents -t /app-files; fi",
    );
    let set_aside = build;
    assert!(
        install < prod_stage
            && prod_stage + 1 == prune
            && prune < build_stage
            && build_stage + 1 == mark
            && mark < build,
        "{f}"
    );
    assert!(
        !f.contains("mv node_modules") && !f.contains("RUN rm -rf"),
        "{f}"
    );
    // Dependencies, then the app: a source change leaves the first layer as it was.
    let modules = line_of(
        &f,
        "COPY --from=prod-deps --chown=1000:1000 /app/node_modules ./node_modules",
    );
    let app = line_of(&f, "COPY --from=build --chown=1000:1000 /app-files ./");
    assert!(set_aside < modules && modules < app, "{f}");
    // Fetched dependencies need no package cache: the build's is the only cache mount.
    assert_eq!(f.matches("type=cache").count(), 1, "{f}");
    assert!(
        f.trim_end()
            .ends_with(r#"CMD ["node_modules/.bin/next", "start"]"#),
        "{f}"
    );
}

#[test]
fn nestjs_prunes_dev_dependencies_in_a_stage_of_their_own() {
    let f = generated("nestjs");
    let prune = line_of(&f, "RUN npm prune --omit=dev");
    let build = line_of(&f, "RUN npm run build");
    assert!(prune < build, "{f}");
    assert!(
        f.contains("COPY --from=prod-deps --chown=1000:1000 /app/node_modules ./node_modules"),
        "{f}"
    );
    assert!(f.contains("npm ci --no-audit --no-fund"), "{f}");
    assert!(f.contains(r#"CMD ["node", "dist/main"]"#), "{f}");
}

#[test]
fn nuxt_and_yarn() {
    let f = generated("nuxt");
    assert!(f.contains("yarn install --frozen-lockfile"), "{f}");
    assert!(
        f.contains("COPY --from=build --chown=1000:1000 /app/.output ./.output"),
        "{f}"
    );
    assert!(
        f.contains(
            "RUN --mount=type=cache,id=stackpad-build-reg_3a5000_2facme_2fweb-node_modules-.cache,\
             target=/app/node_modules/.cache,sharing=locked yarn run build\n"
        ),
        "{f}"
    );
}

#[test]
fn a_repository_dockerfile_is_not_generated() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/dockerfile");
    let d = detect(&RepoSnapshot::read(&dir).unwrap()).unwrap();
    assert_eq!(
        generate(&d, &BaseImages::default(), &[], "k", Served::default()),
        None
    );
}

#[test]
fn default_bases_are_the_official_images() {
    let b = BaseImages::default();
    assert!(b.node.starts_with("node:20"));
    assert!(b.static_server.starts_with("busybox:"));
}

#[test]
fn detected_paths_and_commands_are_json_quoted_in_the_dockerfile() {
    let snap = RepoSnapshot {
        dir: "/src/app".into(),
        files: ["package.json".to_owned()].into_iter().collect(),
        package_json: Some(
            r#"{"dependencies": {"a": "file:./we ird\"/x"}, "main": "s \"q\".js"}"#.into(),
        ),
        dockerfile: None,
        next_config: None,
        ..RepoSnapshot::default()
    };
    let d = detect(&snap).unwrap();
    let f = generate(&d, &BaseImages::default(), &[], "k", Served::default()).unwrap();
    assert!(f.contains(r#"COPY ["we ird\"/x", "./we ird\"/x"]"#), "{f}");
    assert!(f.contains(r#"CMD ["node", "s \"q\".js"]"#), "{f}");
}

#[test]
fn package_caches_are_keyed_by_image_repository() {
    assert_eq!(
        cache_key("127.0.0.1:5000/acme/web"),
        "127.0.0.1_3a5000_2facme_2fweb"
    );
    assert_eq!(cache_key("reg/acme/web:v2"), cache_key("reg/acme/web"));
    assert_eq!(
        cache_key("reg/acme/web@sha256:ab"),
        cache_key("reg/acme/web")
    );
    // Different tenants or apps never share a key, even with look-alike names.
    assert_ne!(cache_key("reg/a-b/c"), cache_key("reg/a/b-c"));
    assert_ne!(cache_key("reg/acme/web"), cache_key("reg/other/web"));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/express");
    let d = detect(&RepoSnapshot::read(&dir).unwrap()).unwrap();
    let base = BaseImages::default();
    let a = generate(
        &d,
        &base,
        &[],
        &cache_key("reg/acme/web"),
        Served::default(),
    )
    .unwrap();
    let b = generate(
        &d,
        &base,
        &[],
        &cache_key("reg/evil/web"),
        Served::default(),
    )
    .unwrap();
    assert!(a.contains("id=stackpad-npm-reg_2facme_2fweb,"), "{a}");
    assert!(b.contains("id=stackpad-npm-reg_2fevil_2fweb,"), "{b}");
}

#[test]
fn the_node_major_comes_from_the_node_image_tag() {
    let major = |node: &str| {
        BaseImages {
            node: node.into(),
            ..BaseImages::default()
        }
        .node_major()
    };
    assert_eq!(major("node:20-bookworm-slim"), Some(20));
    assert_eq!(major("127.0.0.1:5000/stackpad/node:22"), Some(22));
    assert_eq!(major("reg:5000/node:20@sha256:abc"), Some(20));
    assert_eq!(major("reg:5000/node"), None);
}

#[test]
fn a_node_request_the_image_does_not_meet_takes_the_newest_major_that_does() {
    let bases = BaseImages {
        node: "127.0.0.1:5000/stackpad/node:20".into(),
        node_majors: vec![24, 22],
        ..BaseImages::default()
    };
    assert_eq!(bases.offered_majors(), vec![20, 22, 24]);
    for spec in ["20", ">=18", "lts/hydrogen", "^20.3"] {
        assert_eq!(bases.for_request(spec), NodeChoice::Default, "{spec}");
    }
    let major = |major: u64| NodeChoice::Major {
        major,
        image: format!("127.0.0.1:5000/stackpad/node:{major}"),
    };
    assert_eq!(bases.for_request("22.x"), major(22));
    assert_eq!(bases.for_request(">=21"), major(24));
    assert_eq!(bases.for_request("v24.1.0"), major(24));
    assert_eq!(
        bases.for_request("^18.17"),
        NodeChoice::Unmet {
            offered: "20, 22 or 24".into()
        }
    );
    let only = BaseImages {
        node: "reg:5000/node:20@sha256:abc".into(),
        ..BaseImages::default()
    };
    assert_eq!(
        only.for_request("26"),
        NodeChoice::Unmet {
            offered: "20".into()
        }
    );
    let tagged = BaseImages {
        node_majors: vec![22],
        ..only
    };
    assert_eq!(
        tagged.for_request("22"),
        NodeChoice::Major {
            major: 22,
            image: "reg:5000/node:22".into()
        }
    );
}

#[test]
fn failed_steps_of_the_app_name_their_cause() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/nextjs");
    let d = detect(&RepoSnapshot::read(&dir).unwrap()).unwrap();
    let served = Served {
        deps: Some("http://127.0.0.1:9/contexts/t/deps.tar"),
        static_server: None,
        tool: None,
    };
    let dockerfile = generate(&d, &BaseImages::default(), &[], "k", served).unwrap();
    // Every RUN of the app's commands, named as BuildKit names the step.
    let causes: Vec<Option<String>> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("RUN "))
        .map(|c| failure_cause(&d, &format!("[build 3/6] RUN {c}")))
        .collect();
    assert!(
        causes[0]
            .as_deref()
            .is_some_and(|c| c.starts_with("installing the dependencies failed (`npm ci`)")),
        "{causes:?}"
    );
    assert_eq!(
        causes[1].as_deref(),
        Some("removing the dev dependencies from the image failed")
    );
    // The build stage's mark (see `generate`), then the build.
    assert_eq!(causes[2], None);
    assert!(
        causes[3]
            .as_deref()
            .is_some_and(|c| c.starts_with("the app's build script failed (`npm run build`")),
        "{causes:?}"
    );
    assert_eq!(
        failure_cause(&d, "[deps 1/4] FROM docker.io/library/node:20"),
        None
    );
    assert_eq!(failure_cause(&d, "RUN npm run build"), None);
}

/// The pnpm example (`examples/pnpm-fastify`): pnpm at the app's version comes from the fetched
/// npm cache; the build installs everything, a stage of its own the production dependencies.
#[test]
fn pnpm_installs_its_pinned_version_offline_and_production_dependencies_in_a_stage_of_their_own() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/pnpm-fastify");
    let d = detect(&RepoSnapshot::read(&dir).unwrap()).unwrap();
    assert_eq!(d.package_manager, Some(PackageManager::Pnpm));
    let served = Served {
        deps: Some("http://127.0.0.1:9/contexts/t/deps.tar"),
        static_server: None,
        tool: Some("pnpm@10.34.9"),
    };
    let f = generate(&d, &BaseImages::default(), &[], "k", served).unwrap();
    let mount = "RUN --mount=type=bind,from=fetched,target=/fetched --mount=type=tmpfs,target=/deps \
                 tar -xf /fetched/deps.tar -C /deps && npm install -g --offline --cache /deps/npm \
                 --no-audit --no-fund --loglevel=error pnpm@10.34.9 && ";
    let all = line_of(
        &f,
        &format!(
            "{mount}pnpm install --frozen-lockfile --offline --store-dir /deps/pnpm && mkdir -p node_modules"
        ),
    );
    let prod_stage = line_of(&f, "AS prod-deps");
    let prod = line_of(
        &f,
        &format!("{mount}pnpm install --prod --frozen-lockfile --offline --store-dir /deps/pnpm"),
    );
    let build = line_of(&f, "RUN pnpm run build");
    let drop_modules = line_of(
        &f,
        "RUN pnpm run build && mkdir /app-files && find . -mindepth 1 -maxdepth 1 \
         ! -name node_modules -exec cp -a -t /app-files {} + && if [ -d node_modules ]",
    );
    let copy_modules = line_of(
        &f,
        "COPY --from=prod-deps --chown=1000:1000 /app/node_modules ./node_modules",
    );
    let copy_app = line_of(&f, "COPY --from=build --chown=1000:1000 /app-files ./");
    assert!(
        all < prod_stage && prod_stage < prod && prod < build && build == drop_modules,
        "{f}"
    );
    assert!(
        drop_modules < copy_modules && copy_modules < copy_app,
        "{f}"
    );
    assert!(!f.contains("npm prune"), "{f}");
    // A failed install is named as such, whatever the tool's setup before it.
    let cause = failure_cause(&d, &format!("[deps 4/4] {}", f.lines().nth(all).unwrap())).unwrap();
    assert!(cause.contains("`pnpm install`"), "{cause}");
}

#[test]
fn dependencies_needing_a_newer_node_take_the_newest_major_meeting_them_all() {
    use crate::detect::NodeRequest;
    let bases = BaseImages {
        node: "127.0.0.1:5000/stackpad/node:20".into(),
        node_majors: vec![22, 24],
        ..BaseImages::default()
    };
    let req = |source: &str, spec: &str| NodeRequest {
        source: source.into(),
        spec: spec.into(),
    };
    // Met by the node image (or not understood): the node image.
    assert_eq!(bases.for_dependencies(&[]), None);
    assert_eq!(
        bases.for_dependencies(&[req("vite", "^20.19.0 || >=22.12.0"), req("x", "lts/x")]),
        None
    );
    // astro 7: 24, the newest that meets every request, named by the one 20 does not meet.
    let reqs = [
        req("vite", "^20.19.0 || >=22.12.0"),
        req("astro", ">=22.23.4"),
    ];
    let (major, image, why) = bases.for_dependencies(&reqs).unwrap();
    assert_eq!(
        (major, image.as_str(), why.source.as_str()),
        (24, "127.0.0.1:5000/stackpad/node:24", "astro")
    );
    // nuxt 4 beside a package capped below 24: 22.
    let reqs = [
        req("nuxt", "^22.22.3||^24.15.0||>=26.0.0"),
        req("old", "<23"),
    ];
    assert_eq!(bases.for_dependencies(&reqs).unwrap().0, 22);
    // Nothing offered meets them all: the node image (the install says what fails).
    assert_eq!(bases.for_dependencies(&[req("future", ">=26")]), None);
}

#[test]
fn static_sites_of_many_pages_get_the_static_server_without_the_spa_fallback() {
    let snap = RepoSnapshot {
        dir: "/src/app".into(),
        files: ["package.json".to_owned()].into_iter().collect(),
        package_json: Some(
            r#"{"dependencies": {"astro": "7"}, "scripts": {"build": "astro build"}}"#.into(),
        ),
        ..RepoSnapshot::default()
    };
    let d = detect(&snap).unwrap();
    let served = Served {
        static_server: Some("http://127.0.0.1:9/contexts/t/static-server"),
        ..Served::default()
    };
    let f = generate(&d, &BaseImages::default(), &[], "k", served).unwrap();
    assert!(f.contains("ENV ASTRO_TELEMETRY_DISABLED=1"), "{f}");
    assert!(
        f.contains(
            "FROM scratch\nENV PORT=8080 STATIC_ROOT=/www STATIC_SPA=0\n\
             COPY --from=server /static-server /static-server\n\
             COPY --from=build /app/dist /www\nUSER 1000:1000\nEXPOSE 8080\n\
             CMD [\"/static-server\"]"
        ),
        "{f}"
    );
    // Without the static server served to the build: busybox httpd on the same port.
    let f = generate(&d, &BaseImages::default(), &[], "k", Served::default()).unwrap();
    assert!(
        f.contains(r#"CMD ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]"#),
        "{f}"
    );
}

#[test]
fn fastify_cli_apps_listen_on_every_address() {
    let snap = RepoSnapshot {
        dir: "/src/app".into(),
        files: ["package.json".to_owned()].into_iter().collect(),
        package_json: Some(
            r#"{"dependencies": {"fastify": "5", "fastify-cli": "8"}, "scripts": {"start": "fastify start -l info app.js"}}"#.into(),
        ),
        ..RepoSnapshot::default()
    };
    let d = detect(&snap).unwrap();
    let f = generate(&d, &BaseImages::default(), &[], "k", Served::default()).unwrap();
    assert!(f.contains("ENV FASTIFY_ADDRESS=0.0.0.0\n"), "{f}");
    assert!(
        f.contains(r#"CMD ["node_modules/.bin/fastify", "start", "-l", "info", "app.js"]"#),
        "{f}"
    );
}
