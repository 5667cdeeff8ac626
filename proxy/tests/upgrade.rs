//! Graceful restart: a new binary takes the listening sockets over through Pingora's fd
//! handover while a client keeps requesting; no request fails and routes survive.

mod common;

use std::time::Duration;

use common::{Backend, ProxyProcess, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_upgrade_loses_no_request() -> anyhow::Result<()> {
    let app = Backend::start("app").await;
    let dir = std::env::temp_dir().join(stackpad_tests::unique_name("proxy-upgrade-cfg"));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, r#"{"grace_period_secs": 2}"#)?;
    let result = async {
        let mut proxy = ProxyProcess::start_with(&["--config", cfg.to_str().unwrap()]).await?;
        let mut admin = proxy.admin().await?;
        admin.route("app", &["upgrade.test"], "", "svc").await?;
        admin.switch("svc", &[&app], 0).await?;
        drop(admin);

        // New connection per request, as many clients would: each must be accepted by one
        // of the two processes.
        let http = proxy.http;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let load = {
            let (stop, done) = (stop.clone(), done.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let req = b"GET / HTTP/1.1\r\nHost: upgrade.test\r\nConnection: close\r\n\r\n";
                    let outcome = common::raw(http, req, Duration::from_secs(5)).await;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    match outcome {
                        Ok(r) if r.starts_with("HTTP/1.1 200") => ok += 1,
                        Ok(r) => {
                            failed.push(r.lines().next().unwrap_or("empty response").to_owned())
                        }
                        Err(e) => failed.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (ok, failed)
            })
        };
        // Requests flow before, during and after the hand-over.
        let more = |n: u32| {
            let done = done.clone();
            async move {
                let want = done.load(std::sync::atomic::Ordering::SeqCst) + n;
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while done.load(std::sync::atomic::Ordering::SeqCst) < want {
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "the load made no progress in 10 s"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                anyhow::Ok(())
            }
        };
        more(30).await?;
        proxy.graceful_upgrade().await?;
        more(30).await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed) = load.await?;
        assert!(
            failed.is_empty(),
            "{} of {} requests failed: {:?}",
            failed.len(),
            ok as usize + failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(ok > 50, "only {ok} requests");
        // The new process serves the routes from the state file, and its admin API answers.
        assert_eq!(get(&proxy, "upgrade.test", "/").await?, (200, "app".into()));
        let mut admin = proxy.admin().await?;
        let list = admin
            .client
            .list_routes(common::authed(proto::proxy::v1::ListRoutesRequest {}))
            .await?;
        assert_eq!(list.into_inner().routes.len(), 1);
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
