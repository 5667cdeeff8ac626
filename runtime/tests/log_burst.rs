//! A burst from one real container (busybox `seq`, as fast as it can print) through the node
//! agent's log path: every line is accounted for, whether ClickHouse takes the lines or stalls:
//! stored in ClickHouse (or, while it stalls, spooled on disk) or counted as dropped on the
//! node's `/metrics`. Whether shipping slows the container is measured by `bench/logs/run`
//! (`examples/log_burst_bench.rs`, the same bursts), not asserted here.

#[path = "common/burst.rs"]
mod burst;
mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_shipped_or_spooled_or_counted_line_by_line() -> anyhow::Result<()> {
    let t = burst::rounds(1).await?;
    println!(
        "{} lines: no shipping {:.2} s, shipping {:.2} s, ClickHouse stalled {:.2} s; {} lines \
         stored (speed is bench/logs/run's to judge)",
        burst::LINES,
        t.baseline,
        t.shipping,
        t.stalled,
        t.stored
    );
    Ok(())
}
