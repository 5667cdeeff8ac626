use std::path::PathBuf;

use super::*;

fn fixture(name: &str) -> Detection {
    // The sample apps live with the build node, whose build tests build them too.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../buildd/fixtures")
        .join(name);
    let snapshot = RepoSnapshot::read(&dir).expect("read fixture");
    detect(&snapshot).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn snapshot(package_json: &str, files: &[&str]) -> RepoSnapshot {
    RepoSnapshot {
        dir: "/src/app".into(),
        files: files.iter().map(|f| (*f).to_owned()).collect(),
        package_json: Some(package_json.into()),
        dockerfile: None,
        next_config: None,
        ..RepoSnapshot::default()
    }
}

#[test]
fn express_fixture_is_express_with_npm_and_its_start_script() {
    let d = fixture("express");
    assert_eq!(d.framework, Framework::Express);
    assert_eq!(d.package_manager, Some(PackageManager::Npm));
    assert_eq!(d.lock_file.as_deref(), Some("package-lock.json"));
    assert_eq!(d.start, ["node", "server.js"]);
    assert_eq!(d.port, 3000);
    assert!(!d.has_build_script);
    assert_eq!(d.local_dependencies, ["vendor/express-4.21.2.tgz"]);
}

#[test]
fn nextjs_fixture_is_standalone() {
    let d = fixture("nextjs-standalone");
    assert_eq!(d.framework, Framework::NextJs { standalone: true });
    assert_eq!(d.start, ["node", "server.js"]);
    assert!(d.has_public_dir);
    assert_eq!(d.lock_file, None);
    assert_eq!(d.package_manager, Some(PackageManager::Npm));
}

#[test]
fn vite_fixture_is_a_static_site_installed_with_pnpm() {
    let d = fixture("vite-static");
    assert_eq!(d.framework, Framework::ViteStatic);
    assert_eq!(d.package_manager, Some(PackageManager::Pnpm));
    assert_eq!(d.port, 8080);
    assert_eq!(d.start, ["/static-server"]);
}

#[test]
fn dockerfile_fixture_uses_its_own_dockerfile_and_exposed_port() {
    let d = fixture("dockerfile");
    assert_eq!(d.framework, Framework::Dockerfile);
    assert_eq!(d.package_manager, None);
    assert_eq!(d.port, 8080);
}

#[test]
fn other_framework_fixtures() {
    let cases = [
        ("nuxt", Framework::Nuxt, Some(PackageManager::Yarn), 3000),
        ("remix", Framework::Remix, Some(PackageManager::Npm), 3000),
        (
            "astro",
            Framework::Astro { server: true },
            Some(PackageManager::Bun),
            4321,
        ),
        (
            "sveltekit",
            Framework::SvelteKit { server: false },
            Some(PackageManager::Npm),
            8080,
        ),
        ("nestjs", Framework::NestJs, Some(PackageManager::Npm), 3000),
        (
            "fastify",
            Framework::Fastify,
            Some(PackageManager::Npm),
            3000,
        ),
    ];
    for (name, framework, pm, port) in cases {
        let d = fixture(name);
        assert_eq!(
            (d.framework, d.package_manager, d.port),
            (framework, pm, port),
            "{name}"
        );
    }
    assert_eq!(fixture("nestjs").start, ["node", "dist/main"]);
    assert_eq!(fixture("fastify").start, ["node", "app.js"]);
    // remix-serve from @remix-run/serve, a production dependency: run without npm.
    assert_eq!(
        fixture("remix").start,
        ["node_modules/.bin/remix-serve", "./build/server/index.js"]
    );
}

#[test]
fn react_router_framework_mode_runs_react_router_serve() {
    let pkg = r#"{"dependencies": {"react-router": "7", "@react-router/serve": "7"},
        "devDependencies": {"@react-router/dev": "7", "vite": "8"},
        "scripts": {"build": "react-router build", "start": "react-router-serve ./build/server/index.js"}}"#;
    let d = detect(&snapshot(pkg, &["package.json"])).unwrap();
    assert_eq!(d.framework, Framework::ReactRouter);
    assert_eq!(d.framework.name(), "react-router");
    assert_eq!(
        d.start,
        [
            "node_modules/.bin/react-router-serve",
            "./build/server/index.js"
        ]
    );
    assert_eq!(d.port, 3000);
}

#[test]
fn a_framework_server_command_runs_directly_only_from_a_production_dependency() {
    // fastify-cli's generator: `fastify start` from fastify-cli in dependencies.
    let pkg = r#"{"dependencies": {"fastify": "5", "fastify-cli": "8"},
        "scripts": {"start": "fastify start -l info app.js"}, "main": "app.js"}"#;
    let d = detect(&snapshot(pkg, &["package.json"])).unwrap();
    assert_eq!(d.framework, Framework::Fastify);
    assert_eq!(
        d.start,
        ["node_modules/.bin/fastify", "start", "-l", "info", "app.js"]
    );
    // As a dev dependency it is pruned from the image: npm start says what is missing.
    let pkg = r#"{"dependencies": {"fastify": "5"}, "devDependencies": {"fastify-cli": "8"},
        "scripts": {"start": "fastify start app.js"}}"#;
    assert_eq!(
        detect(&snapshot(pkg, &["package.json"])).unwrap().start,
        ["npm", "start"]
    );
    // Not a command this knows, or not simple: npm start.
    for script in ["serve -s build", "fastify start app.js > log"] {
        let pkg = format!(
            r#"{{"dependencies": {{"fastify": "5", "fastify-cli": "8", "serve": "1"}}, "scripts": {{"start": "{script}"}}}}"#
        );
        assert_eq!(
            detect(&snapshot(&pkg, &["package.json"])).unwrap().start,
            ["npm", "start"],
            "{script}"
        );
    }
}

#[test]
fn static_sites_are_served_by_the_static_server() {
    let pkg = r#"{"dependencies": {"astro": "7"}, "scripts": {"build": "astro build"}}"#;
    let d = detect(&snapshot(pkg, &["package.json"])).unwrap();
    assert_eq!(d.framework, Framework::Astro { server: false });
    assert_eq!(
        (d.port, d.start.as_slice()),
        (8080, &["/static-server".to_owned()][..])
    );
    assert!(!d.framework.serves_spa());
}

#[test]
fn an_npm_app_that_asks_for_no_node_gets_its_dependencies_engines() {
    let pkg = r#"{"dependencies": {"astro": "^7.4.8"}, "scripts": {"build": "astro build"}}"#;
    let mut repo = snapshot(pkg, &["package.json", "package-lock.json"]);
    repo.package_lock = Some(
        r#"{"lockfileVersion": 3, "packages": {"node_modules/astro": {"version": "7.4.8", "engines": {"node": ">=22.23.4"}}}}"#
            .into(),
    );
    let d = detect(&repo).unwrap();
    assert_eq!(d.node, None);
    assert_eq!(d.dependency_node.len(), 1);
    assert_eq!(d.dependency_node[0].spec, ">=22.23.4");
    assert!(d.dependency_node[0].source.starts_with("astro@7.4.8 "));
}

#[test]
fn nothing_to_build_says_what_was_looked_for() {
    let repo = RepoSnapshot {
        dir: "/src/empty".into(),
        files: ["README.md".to_owned()].into(),
        ..RepoSnapshot::default()
    };
    let err = detect(&repo).unwrap_err().to_string();
    assert!(err.contains("/src/empty"), "{err}");
    assert!(err.contains("no Dockerfile and no package.json"), "{err}");
    assert!(err.contains("next"), "{err}");
}

#[test]
fn plain_node_without_any_entry_point_is_an_error() {
    let err = detect(&snapshot(r#"{"name":"x"}"#, &["package.json"])).unwrap_err();
    assert!(matches!(err, DetectError::NoStartCommand { .. }), "{err}");
    assert!(err.to_string().contains("server.js"));
}

#[test]
fn plain_node_falls_back_to_server_js() {
    let d = detect(&snapshot(r#"{"name":"x"}"#, &["package.json", "server.js"])).unwrap();
    assert_eq!(d.framework, Framework::Node);
    assert_eq!(d.start, ["node", "server.js"]);
}

#[test]
fn invalid_package_json_names_the_dir() {
    let err = detect(&snapshot("{not json", &["package.json"])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("package.json in /src/app is not valid JSON"),
        "{err}"
    );
}

#[test]
fn complex_start_scripts_go_through_the_package_manager() {
    let pkg = r#"{"dependencies":{"express":"4"},"scripts":{"start":"PORT=1 node a.js && x"}}"#;
    let d = detect(&snapshot(pkg, &["package.json"])).unwrap();
    assert_eq!(d.start, ["npm", "start"]);
}

#[test]
fn package_manager_field_is_used_without_a_lock_file() {
    let pkg = r#"{"main":"a.js","packageManager":"pnpm@9.1.0"}"#;
    let d = detect(&snapshot(pkg, &["package.json"])).unwrap();
    assert_eq!(d.package_manager, Some(PackageManager::Pnpm));
    assert_eq!(d.lock_file, None);
}

#[test]
fn next_without_standalone_output_runs_next_start() {
    let mut repo = snapshot(r#"{"dependencies":{"next":"15"}}"#, &["package.json"]);
    repo.next_config = Some("module.exports = {}".into());
    let d = detect(&repo).unwrap();
    assert_eq!(d.framework, Framework::NextJs { standalone: false });
}

#[test]
fn a_file_dependency_with_a_newline_is_refused_naming_the_dependency() {
    let pkg = r#"{"dependencies": {"evil": "file:x\nRUN touch /pwned"}, "main": "server.js"}"#;
    let err = detect(&snapshot(pkg, &["package.json"])).unwrap_err();
    assert!(
        matches!(err, DetectError::ControlCharacter { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("dependency \"evil\""), "{text}");
    assert!(text.contains("control character"), "{text}");
}

#[test]
fn a_start_command_with_a_control_character_is_refused() {
    let pkg = r#"{"main": "server.js\nUSER root"}"#;
    let err = detect(&snapshot(pkg, &["package.json"])).unwrap_err();
    assert!(err.to_string().contains("start command"), "{err}");
    let pkg = r#"{"scripts": {"start": "node a.js\u001b[2J"}}"#;
    let err = detect(&snapshot(pkg, &["package.json"])).unwrap_err();
    assert!(err.to_string().contains("start command"), "{err}");
}

#[test]
fn the_node_version_asked_for_is_read_from_nvmrc_before_engines() {
    let mut repo = snapshot(
        r#"{"engines": {"node": ">=18"}, "scripts": {"start": "node s.js"}}"#,
        &["package.json", ".nvmrc"],
    );
    let d = detect(&repo).unwrap();
    assert_eq!(d.node.unwrap().spec, ">=18");
    repo.nvmrc = Some("v22.1.0\n".into());
    let node = detect(&repo).unwrap().node.unwrap();
    assert_eq!(
        (node.source.as_str(), node.spec.as_str()),
        (".nvmrc", "v22.1.0")
    );
}
