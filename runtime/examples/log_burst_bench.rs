//! Benchmark driver for `bench/logs/run`: does log shipping slow a container that prints as fast
//! as it can? The bursts of `tests/common/burst.rs` (busybox `seq` of 300k lines, timed by the
//! container itself from /proc/uptime) through the node agent's log path: without shipping, with
//! the ClickHouse shipper, and with a ClickHouse that accepts connections and never answers;
//! every line accounted for as in the test. Fastest of ROUNDS (default 3) per variant.
//!
//! Prints the times, the ratios to the run without shipping and `target` lines for
//! bench/lib.sh: >= 100k lines/s while shipping or stalled, and at most 1.5x the time without
//! shipping.

#[path = "../tests/common/burst.rs"]
mod burst;
#[path = "../tests/common/mod.rs"]
mod common;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(3);
    let t = burst::rounds(rounds).await?;
    let lines = burst::LINES as f64;
    println!(
        "burst of {lines} lines, fastest of {rounds}: no shipping {:.2} s, shipping {:.2} s \
         ({:.2}x), ClickHouse stalled {:.2} s ({:.2}x); {} lines stored",
        t.baseline,
        t.shipping,
        t.shipping / t.baseline,
        t.stalled,
        t.stalled / t.baseline,
        t.stored
    );
    println!(
        "target burst_lines_per_s_shipping {:.0} >= 100000",
        lines / t.shipping
    );
    println!(
        "target burst_lines_per_s_clickhouse_stalled {:.0} >= 100000",
        lines / t.stalled
    );
    println!(
        "target burst_time_shipping/no_shipping {:.3} <= 1.5",
        t.shipping / t.baseline
    );
    println!(
        "target burst_time_stalled/no_shipping {:.3} <= 1.5",
        t.stalled / t.baseline
    );
    Ok(())
}
