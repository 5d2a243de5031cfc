//! `connect-storm`: opens `--clients` connections, at most `--concurrency`
//! setups in flight, and measures each setup (transport connect, `Hello`,
//! `Welcome`) and the connect rate; then holds every connection `--hold-s`
//! seconds (answering the gateway's `Ping`s, sending heartbeats) and closes
//! them all.
//!
//! The window (`duration_s`, CPU) runs from the start to the last completed
//! connect; connections lost during the hold are counted as dropped later.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huddle_client::transport::Transport;
use tokio::sync::watch;
use tokio::time::sleep;

use super::{print_failures, setup_outcome, transport_name, wait_for_setups, Probes};
use crate::report::{self, Connect, Params, Percentiles, Report};
use crate::setup::{now_ns, Setup};
use crate::sys;
use crate::Args;

pub(super) async fn run(
    args: &Args,
    transport: Transport,
    source_ips: u32,
    setup: Arc<Setup>,
    probes: Probes,
) -> anyhow::Result<Report> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu_at_start = probes.mark();
    let started = Instant::now();
    let started_ns = now_ns();
    let tasks: Vec<_> = (0..args.clients)
        .map(|i| tokio::spawn(client(setup.clone(), i, stop_rx.clone())))
        .collect();
    drop(stop_rx);

    wait_for_setups(&setup, args.clients, started).await;
    let cpu_used = probes.since(cpu_at_start);
    let (connections, failed, connect_s) = setup_outcome(&setup, started_ns)?;

    sleep(Duration::from_secs(args.hold_s)).await;
    if let Some(usage) = sys::usage(None) {
        eprintln!("  loadgen rss while holding: {} MiB", usage.rss_bytes >> 20);
    }
    let dropped = setup.dropped.load(Relaxed);
    eprintln!(
        "  held {} connections for {} s ({dropped} dropped later); closing",
        connections - dropped,
        args.hold_s
    );
    stop_tx.send_replace(true);
    super::close_all(tasks).await;
    let connect_us = super::connect_latencies(&setup);
    let (server, loadgen) = probes.finish(cpu_used);
    let report = Report {
        scenario: args.scenario,
        target: report::TARGET,
        transport: transport_name(transport),
        params: Params::new(args, source_ips),
        connections,
        duration_s: report::round(connect_s, 3),
        sent: 0,
        delivered: 0,
        expected: 0,
        lost: 0,
        delivered_per_s: 0.0,
        latency_us: Percentiles::of(&connect_us),
        connect: Connect {
            per_s: report::round(connections as f64 / connect_s.max(1e-9), 1),
            p99_us: connect_us.value_at_quantile(0.99),
            failed,
        },
        server,
        loadgen,
        operations: None,
    };
    let dropped = setup.dropped.load(Relaxed);
    report::summarize(&report, dropped);
    print_failures(&setup);
    Ok(report)
}

/// Client `i`: set up, then answer the gateway until told to stop, then close.
async fn client(setup: Arc<Setup>, i: u32, mut stop: watch::Receiver<bool>) {
    let Some(mut session) = setup.run(i, Box::pin(setup.open(i))).await else {
        return;
    };
    loop {
        let event = tokio::select! {
            event = session.wait() => event,
            _ = stop.changed() => break,
        };
        let handled = match event {
            Ok(event) => session.handle(event, |_| ()).await.map(drop),
            Err(failure) => Err(failure),
        };
        if let Err(failure) = handled {
            return setup.dropped(i, failure);
        }
    }
    session.close().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clap::Parser as _;

    use super::*;

    /// Every connection is one task; its future must not carry the (large,
    /// short-lived) handshake state inline.
    #[test]
    fn a_connection_task_stays_small() {
        let args = Args::parse_from(["huddle-loadtest", "--jwt-secret", "s"]);
        let setup = Arc::new(Setup::new(&args, Transport::Ws, 1).unwrap());
        let (_stop_tx, stop_rx) = watch::channel(false);
        let task = client(setup, 0, stop_rx);
        let size = std::mem::size_of_val(&task);
        assert!(size < 4096, "the connection task is {size} bytes");
    }
}
