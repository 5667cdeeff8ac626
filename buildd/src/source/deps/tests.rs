use super::*;

const PKG: &str = r#"{"dependencies": {"ms": "^2.1.3"}, "devDependencies": {"esbuild": "0.24.0"}}"#;

fn lock(extra: &str) -> String {
    format!(
        r#"{{"lockfileVersion": 3, "packages": {{
            "": {{"dependencies": {{"ms": "^2.1.3"}}, "devDependencies": {{"esbuild": "0.24.0"}}}},
            "node_modules/ms": {{"version": "2.1.3", "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz", "integrity": "sha512-x"}},
            "node_modules/esbuild": {{"version": "0.24.0", "dev": true}},
            "node_modules/@esbuild/linux-x64": {{"version": "0.24.0", "resolved": "https://registry.npmjs.org/@esbuild/linux-x64/-/linux-x64-0.24.0.tgz", "optional": true, "os": ["linux"], "cpu": ["x64"]}},
            "node_modules/@esbuild/darwin-arm64": {{"version": "0.24.0", "resolved": "https://registry.npmjs.org/@esbuild/darwin-arm64/-/darwin-arm64-0.24.0.tgz", "optional": true, "os": ["darwin"], "cpu": ["arm64"]}},
            "node_modules/@img/sharp-linuxmusl-x64": {{"version": "0.34.0", "resolved": "https://registry.npmjs.org/@img/sharp-linuxmusl-x64/-/sharp-linuxmusl-x64-0.34.0.tgz", "optional": true, "os": ["linux"], "cpu": ["x64"], "libc": ["musl"]}},
            "node_modules/not-windows": {{"version": "1.0.0", "resolved": "https://registry.npmjs.org/not-windows/-/not-windows-1.0.0.tgz", "os": ["!win32"]}},
            "node_modules/local": {{"resolved": "file:vendor/local-1.0.0.tgz"}},
            "node_modules/local/node_modules/bundled": {{"version": "1.0.0", "inBundle": true}},
            "packages/workspace-a": {{"version": "1.0.0"}},
            "node_modules/workspace-a": {{"resolved": "packages/workspace-a", "link": true}}{extra}
        }}}}"#
    )
}

fn x64() -> Platform {
    Platform {
        os: "linux",
        cpu: "x64",
        libc: "glibc",
    }
}

#[test]
fn a_lock_file_names_the_registry_tarballs_of_this_platform_only() {
    let plan = plan_npm(PKG, &lock(""), &x64()).unwrap();
    assert_eq!(
        plan.specs,
        vec![
            "esbuild@0.24.0",
            "https://registry.npmjs.org/@esbuild/linux-x64/-/linux-x64-0.24.0.tgz",
            "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
            "https://registry.npmjs.org/not-windows/-/not-windows-1.0.0.tgz",
        ]
    );
    assert_eq!(plan.skipped, 2, "darwin and musl builds are left out");
    let arm = Platform {
        cpu: "arm64",
        ..x64()
    };
    let plan = plan_npm(PKG, &lock(""), &arm).unwrap();
    assert!(
        !plan.specs.iter().any(|s| s.contains("linux-x64")),
        "{plan:?}"
    );
}

#[test]
fn a_package_from_anywhere_but_the_registry_is_refused_by_name() {
    for resolved in [
        "git+ssh://git@github.com/evil/pkg.git#abc",
        "https://evil.example/pkg.tgz",
        "http://registry.npmjs.org/pkg/-/pkg-1.0.0.tgz",
        "https://registry.npmjs.org.evil.example/pkg.tgz",
        "http://127.0.0.1:5432/x.tgz",
    ] {
        let extra =
            format!(r#", "node_modules/pkg": {{"version": "1.0.0", "resolved": "{resolved}"}}"#);
        let err = plan_npm(PKG, &lock(&extra), &x64()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, DepsError::ForeignSource { .. })
                && msg.contains("pkg comes from")
                && msg.contains(resolved),
            "{msg}"
        );
    }
}

#[test]
fn a_lock_file_that_does_not_match_package_json_is_a_mismatch_naming_the_package() {
    let pkg = r#"{"dependencies": {"ms": "^2.1.3", "left-pad": "1.3.0"}, "devDependencies": {"esbuild": "0.24.0"}}"#;
    let msg = plan_npm(pkg, &lock(""), &x64()).unwrap_err().to_string();
    assert!(
        msg.starts_with("lock file mismatch") && msg.contains("left-pad@1.3.0"),
        "{msg}"
    );
    let pkg = r#"{"dependencies": {"ms": "^3.0.0"}, "devDependencies": {"esbuild": "0.24.0"}}"#;
    let msg = plan_npm(pkg, &lock(""), &x64()).unwrap_err().to_string();
    assert!(
        msg.contains("ms@^3.0.0") && msg.contains("ms@^2.1.3"),
        "{msg}"
    );
    let pkg = r#"{"dependencies": {"ms": "^2.1.3"}}"#;
    let msg = plan_npm(pkg, &lock(""), &x64()).unwrap_err().to_string();
    assert!(msg.contains("esbuild"), "{msg}");
}

#[test]
fn old_and_broken_lock_files_are_refused() {
    let msg = plan_npm(PKG, r#"{"lockfileVersion": 1, "dependencies": {}}"#, &x64())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lockfileVersion 1"), "{msg}");
    let err = plan_npm(PKG, "{", &x64()).unwrap_err();
    assert!(matches!(err, DepsError::InvalidLock { .. }), "{err}");
    let extra = r#", "node_modules/odd": {"version": "--registry=https://evil.example"}"#;
    let err = plan_npm(PKG, &lock(extra), &x64()).unwrap_err();
    assert!(err.to_string().contains("unusable"), "{err}");
}

#[test]
fn specs_are_split_so_each_command_line_stays_small() {
    let specs: Vec<String> = (0..5000)
        .map(|i| format!("https://registry.npmjs.org/p{i}/-/p{i}-1.0.0.tgz"))
        .collect();
    let parts = chunks(&specs);
    assert!(parts.len() > 1);
    assert_eq!(parts.iter().map(|c| c.len()).sum::<usize>(), specs.len());
    for part in parts {
        assert!(part.iter().map(|s| s.len() + 4).sum::<usize>() <= CHUNK_BYTES + 200);
    }
}

const PNPM_LOCK: &str = "lockfileVersion: '9.0'

settings:
  autoInstallPeers: true

importers:

  .:
    dependencies:
      ms:
        specifier: 2.1.3
        version: 2.1.3

packages:

  ms@2.1.3:
    resolution: {integrity: sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlg==}

  '@scope/pkg@1.0.0':
    resolution: {integrity: sha512-x}

snapshots:

  ms@2.1.3: {}
";

#[test]
fn pnpm_uses_the_pinned_version_else_the_one_of_the_lock_format() {
    let pinned =
        r#"{"packageManager": "pnpm@10.34.9+sha512.0123abcd", "dependencies": {"ms": "2.1.3"}}"#;
    let plan = plan_pnpm(pinned, PNPM_LOCK).unwrap();
    let tool = plan.tool.clone().unwrap();
    assert_eq!(plan.specs, vec!["pnpm@10.34.9"]);
    assert_eq!(
        (tool.manager, tool.from, tool.packages, tool.locked),
        (PackageManager::Pnpm, "packageManager", 2, true)
    );
    let plan = plan_pnpm(r#"{"dependencies": {"ms": "2.1.3"}}"#, PNPM_LOCK).unwrap();
    assert_eq!(plan.specs, vec!["pnpm@10.34.9"]);
    let v6 = PNPM_LOCK.replace("'9.0'", "'6.0'");
    assert_eq!(plan_pnpm("{}", &v6).unwrap().specs, vec!["pnpm@8.15.9"]);
    let msg = plan_pnpm("{}", &PNPM_LOCK.replace("'9.0'", "'3.9'"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("lockfileVersion 3.9") && msg.contains("packageManager"),
        "{msg}"
    );
    for bad in [r#""pnpm@latest""#, r#""pnpm@10 && rm""#, "7", r#""pnpm""#] {
        let msg = plan_pnpm(&format!(r#"{{"packageManager": {bad}}}"#), PNPM_LOCK)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("packageManager"), "{bad}: {msg}");
    }
}

#[test]
fn pnpm_and_yarn_packages_from_elsewhere_are_refused_by_name() {
    let tarball = PNPM_LOCK.replace(
        "resolution: {integrity: sha512-x}",
        "resolution: {tarball: https://evil.example/pkg.tgz}",
    );
    let msg = plan_pnpm("{}", &tarball).unwrap_err().to_string();
    assert!(
        msg.contains("pnpm-lock.yaml: @scope/pkg@1.0.0 comes from https://evil.example/pkg.tgz"),
        "{msg}"
    );
    let git = PNPM_LOCK.replace(
        "resolution: {integrity: sha512-x}",
        "resolution: {commit: abc, repo: https://github.com/a/b, type: git}",
    );
    assert!(matches!(
        plan_pnpm("{}", &git),
        Err(DepsError::ForeignSource { .. })
    ));
    let registry_tarball = PNPM_LOCK.replace(
        "resolution: {integrity: sha512-x}",
        "resolution: {integrity: sha512-x, tarball: https://registry.npmjs.org/@scope/pkg/-/pkg-1.0.0.tgz}",
    );
    assert!(plan_pnpm("{}", &registry_tarball).is_ok());

    let yarn = |resolved: &str| {
        format!(
            "# yarn lockfile v1\n\n\nms@2.1.3:\n  version \"2.1.3\"\n  resolved \"{resolved}\"\n  integrity sha512-x\n"
        )
    };
    let plan = plan_yarn(
        "{}",
        &yarn("https://registry.yarnpkg.com/ms/-/ms-2.1.3.tgz#abc"),
    )
    .unwrap();
    assert_eq!(plan.specs, vec!["yarn@1.22.22"]);
    assert_eq!(plan.tool.unwrap().packages, 1);
    assert!(plan_yarn("{}", &yarn("https://registry.npmjs.org/ms/-/ms-2.1.3.tgz")).is_ok());
    let msg = plan_yarn("{}", &yarn("https://evil.example/ms.tgz"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("yarn.lock: ms@2.1.3 comes from https://evil.example/ms.tgz"),
        "{msg}"
    );
}

#[test]
fn yarn_berry_is_refused_and_yarn_1_is_pinned() {
    let berry = "__metadata:\n  version: 8\n";
    let msg = plan_yarn("{}", berry).unwrap_err().to_string();
    assert!(
        msg.contains("yarn 2 and later (Berry)")
            && msg.contains("Plug'n'Play")
            && msg.contains("nodeLinker: node-modules"),
        "{msg}"
    );
    let msg = plan_yarn(r#"{"packageManager": "yarn@4.5.0"}"#, "")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Berry"), "{msg}");
    let plan = plan_yarn(r#"{"packageManager": "yarn@1.22.19"}"#, "").unwrap();
    assert_eq!(plan.specs, vec!["yarn@1.22.19"]);
    // A project of another manager's packageManager keeps the default.
    let plan = plan_yarn(r#"{"packageManager": "pnpm@10.34.9"}"#, "").unwrap();
    assert_eq!(plan.specs, vec!["yarn@1.22.22"]);
    // No lock file and no dependencies: the manager alone.
    let plan =
        plan_tool_only(PackageManager::Pnpm, r#"{"packageManager": "pnpm@9.15.9"}"#).unwrap();
    assert_eq!(plan.specs, vec!["pnpm@9.15.9"]);
    assert!(!plan.tool.unwrap().locked);
}

#[test]
fn a_lock_file_out_of_date_is_recognised_from_pnpm_and_yarn() {
    assert!(lock_out_of_date(
        "ERR_PNPM_OUTDATED_LOCKFILE  Cannot install with \"frozen-lockfile\""
    ));
    assert!(lock_out_of_date(
        "error Your lockfile needs to be updated, but yarn was run with `--frozen-lockfile`."
    ));
    assert!(!lock_out_of_date(
        "ERR_PNPM_FETCH_404 GET https://registry.npmjs.org/x: Not Found"
    ));
}
