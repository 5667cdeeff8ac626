//! Compiles the C programs under `programs/` with clang (`-target bpf`, BTF from `-g`) into
//! OUT_DIR; `src/programs.rs` embeds the objects.

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: &[&str] = &["isolation", "bad_for_tests"];

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src_dir = Path::new("programs");
    println!("cargo:rerun-if-changed=programs");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    for name in PROGRAMS {
        let src = src_dir.join(format!("{name}.c"));
        let obj = out_dir.join(format!("{name}.o"));
        let output = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-I")
            .arg(src_dir)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output();
        match output {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`{clang}` not found: the eBPF programs need clang with the bpf target; \
                 install the package `clang` (Debian: apt-get install clang llvm libbpf-dev)"
            ),
            Err(e) => panic!("cannot run `{clang}` for {}: {e}", src.display()),
            Ok(out) if !out.status.success() => panic!(
                "clang failed to compile {} ({}):\n{}",
                src.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Ok(_) => {}
        }
    }
}
