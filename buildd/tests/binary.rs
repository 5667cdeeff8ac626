//! The `stackpad-buildd` binary: reads its config file, refuses a bad one naming the key, and
//! serves the Builder API on the configured address.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use proto::build::v1 as pb;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("buildd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_bad_config_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "max_concurrent_builds = 0\n");
    let out = Command::new(env!("CARGO_BIN_EXE_stackpad-buildd"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_concurrent_builds"), "{err}");
}

#[tokio::test]
async fn the_binary_serves_the_builder_api() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let metrics = common::free_port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\nwork_dir = \"{}\"\n\
         [buildkit]\nsocket = \"{sock}\"\ndocker_socket = \"{sock}\"\n",
        dir.path().join("work").display(),
        sock = common::docker_socket().display()
    );
    let path = write_config(dir.path(), &config);
    // A checkout left behind by a previous run is cleared at start.
    let stale = dir.path().join("work/old-build-1234");
    std::fs::create_dir_all(stale.join("src")).unwrap();
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_stackpad-buildd"))
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        match pb::builder_client::BuilderClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("stackpad-buildd did not listen: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let err = client
        .get_build(pb::GetBuildRequest {
            build_id: "unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(!stale.exists(), "stale checkout not removed");
    assert!(err.message().contains("unknown"), "{}", err.message());
}
