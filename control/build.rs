//! Builds the dashboard (#18): the TypeScript front end in `../dashboard` is copied into
//! OUT_DIR, its locked dependencies installed there from the npm registry (`npm ci`, only when
//! `package-lock.json` changed), type-checked and bundled by Vite, and every built file is
//! embedded into the binary (`src/dashboard.rs` includes the generated table). Nothing is
//! written into the source tree; the same sources and lock file give the same files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the build reads from `../dashboard`.
const INPUTS: &[&str] = &[
    "package.json",
    "package-lock.json",
    "tsconfig.json",
    "vite.config.ts",
    "index.html",
    "src",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let source = manifest.join("../dashboard");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    for input in INPUTS {
        println!("cargo:rerun-if-changed=../dashboard/{input}");
    }
    let work = out.join("dashboard");
    let dist = out.join("dashboard-dist");
    fs::create_dir_all(&work).expect("creating OUT_DIR/dashboard");
    // Sources afresh each time (a deleted file must not linger); node_modules is kept.
    for input in INPUTS {
        let to = work.join(input);
        if to.is_dir() {
            fs::remove_dir_all(&to).expect("clearing an old copy");
        }
        copy(&source.join(input), &to);
    }
    let lock = fs::read(source.join("package-lock.json")).expect("dashboard/package-lock.json");
    let stamp = work.join("node_modules/.stackpad-lock");
    if fs::read(&stamp).ok().as_deref() != Some(lock.as_slice()) {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&work),
            "npm ci (the dashboard's dependencies from the npm registry)",
        );
        fs::write(&stamp, &lock).expect("writing the install stamp");
    }
    if dist.exists() {
        fs::remove_dir_all(&dist).expect("clearing the old build");
    }
    run(
        Command::new("npx")
            .args(["--no-install", "tsc", "--noEmit"])
            .current_dir(&work),
        "tsc --noEmit (type-checking the dashboard)",
    );
    run(
        Command::new("npx")
            .args([
                "--no-install",
                "vite",
                "build",
                "--logLevel",
                "warn",
                "--outDir",
            ])
            .arg(&dist)
            .current_dir(&work),
        "vite build (bundling the dashboard)",
    );
    let mut files = vec![];
    collect(&dist, &dist, &mut files);
    files.sort();
    let mut table =
        String::from("/// The dashboard's built files: (path under /dashboard/, bytes).\n");
    table.push_str("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (rel, path) in &files {
        table.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    table.push_str("];\n");
    fs::write(out.join("dashboard_assets.rs"), table).expect("writing the asset table");
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("building the dashboard needs node and npm (Debian: nodejs, npm): {what}: {e}")
    });
    assert!(
        status.success(),
        "building the dashboard failed at {what}: {status}"
    );
}

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).expect("creating a folder");
        for entry in fs::read_dir(from).expect("reading a dashboard folder") {
            let entry = entry.expect("a folder entry");
            copy(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in fs::read_dir(dir).expect("reading the built dashboard") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path.strip_prefix(root).expect("under the root");
            files.push((rel.to_string_lossy().replace('\\', "/"), path));
        }
    }
}
