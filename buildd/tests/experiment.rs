mod common;

use buildd::buildkit::{Endpoint, ProgressTracker, SolveSpec, solve};
use buildd::context::{ContextServer, archive};

#[tokio::test]
async fn experiment() {
    let (repo, _sha) = common::fixture_repo("dockerfile");
    let scratch = tempfile::tempdir().unwrap();
    let tar = archive(repo.path(), "", None, scratch.path())
        .await
        .unwrap();
    let server = ContextServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let ctx = server.serve(tar);
    let client = Endpoint::Dockerd(common::docker_socket())
        .connect()
        .await
        .unwrap();
    let name = format!("{}/tests/{}:v1", common::registry(), common::unique("exp"));
    let exporter = std::env::var("EXP").unwrap_or("moby".into());
    let spec = SolveSpec {
        reference: common::unique("ref"),
        context_url: ctx.url.clone(),
        dockerfile: "Dockerfile".into(),
        build_args: vec![(
            "BASE".into(),
            format!("{}/stackpad/busybox:1", common::registry()),
        )],
        image_names: vec![name.clone()],
        cache_imports: vec![],
        inline_cache: true,
        network_mode: "none".into(),
        exporter,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let printer = tokio::spawn(async move {
        let mut t = ProgressTracker::default();
        while let Some(m) = rx.recv().await {
            for e in t.apply(&m) {
                eprintln!("{e:?}");
            }
        }
    });
    let r = solve(&client, &spec, tx).await;
    printer.await.unwrap();
    eprintln!("result: {r:?}");
    let engine = buildd::engine::Engine::new(common::docker_socket());
    eprintln!("push: {:?}", engine.push(&name).await);
}
