//! The previews benchmark (#17), run by `bench/previews/run`: on a platform of its own (the
//! e2e harness: the real control, proxy, node agent and buildd), `RUNS` pull requests of the
//! e2e previews scenario one after another (web app + managed PostgreSQL; each opened,
//! synchronized under load, left idle until it sleeps, woken by a request, closed). The first
//! builds from nothing; the later ones build trees BuildKit has cached. Prints each run and
//! the medians of the cached runs:
//! - PR opened -> preview serving over HTTPS (delivery to the head's answer);
//! - idle wake-up: the first request's latency (target < 1 s for the sample app);
//! - PR closed -> everything removed (containers, route, certificate permission).
//!
//! Env: RUNS (default 4, at most 20).

#[path = "../tests/e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/e2e/previews.rs"]
mod previews;

use std::time::Duration;

use harness::Platform;
use previews::{Figures, Shop};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: u32 = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
        .clamp(2, 20);
    let mut platform = Platform::start("bench-previews").await?;
    let outcome = async {
        let shop = Shop::new(&platform).await?;
        let mut all: Vec<Figures> = vec![];
        println!("| run | PR opened -> serving | wake-up first request | PR closed -> removed |");
        println!("|---|---|---|---|");
        for n in 1..=runs {
            let f = shop.pull_request(&platform, n).await?;
            println!(
                "| {n}{} | {:.2} s | {} ms | {} ms |",
                if n == 1 { " (cold build)" } else { "" },
                f.opened_to_serving.as_secs_f64(),
                f.wake_first_request.as_millis(),
                f.closed_to_removed.as_millis(),
            );
            all.push(f);
        }
        let cached = &all[1..];
        let opened = median(cached.iter().map(|f| f.opened_to_serving).collect());
        let wake = median(all.iter().map(|f| f.wake_first_request).collect());
        let closed = median(all.iter().map(|f| f.closed_to_removed).collect());
        println!(
            "| median ({} cached runs; wake and close over all {runs}) | {:.2} s | {} ms | {} ms |",
            cached.len(),
            opened.as_secs_f64(),
            wake.as_millis(),
            closed.as_millis(),
        );
        println!("target wake_first_request_ms {} < 1000", wake.as_millis());
        anyhow::Ok(())
    }
    .await;
    platform.report(outcome)
}
