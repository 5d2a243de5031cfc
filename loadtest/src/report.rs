//! The JSON report (one line on stdout), field for field the baseline load
//! generator's, and the human summary on stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{Args, Scenario};

/// The report; fields serialize in declaration order, as the baseline prints them.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: Scenario,
    pub(crate) target: &'static str,
    pub(crate) transport: &'static str,
    pub(crate) params: Params,
    /// Clients that finished setup.
    pub(crate) connections: u64,
    /// The measurement window, s.
    pub(crate) duration_s: f64,
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) expected: u64,
    pub(crate) lost: u64,
    pub(crate) delivered_per_s: f64,
    pub(crate) latency_us: Percentiles,
    pub(crate) connect: Connect,
    /// `null` without `--server-pid`.
    pub(crate) server: Option<Server>,
    pub(crate) loadgen: Loadgen,
    /// lobby-churn only: the operations by kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) operations: Option<Operations>,
}

/// Every flag (the secret left out), `source_ips` as used.
#[derive(Debug, Serialize)]
pub(crate) struct Params {
    pub(crate) scenario: Scenario,
    pub(crate) target: &'static str,
    pub(crate) url: String,
    pub(crate) clients: u32,
    pub(crate) room_size: u32,
    pub(crate) interval_ms: u64,
    pub(crate) duration_s: u64,
    pub(crate) hold_s: u64,
    pub(crate) concurrency: u32,
    pub(crate) source_ips: u32,
    pub(crate) server_pid: Option<u32>,
    pub(crate) threads: u32,
    /// lobby-churn only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lobby_size: Option<u32>,
    /// lobby-churn only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) think_ms: Option<u64>,
    pub(crate) data_dir: PathBuf,
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) insecure: bool,
    pub(crate) admin_url: String,
    /// `--run-id` as used.
    pub(crate) run_id: String,
}

impl Params {
    pub(crate) fn new(args: &Args, source_ips: u32) -> Self {
        let churn = args.scenario == Scenario::LobbyChurn;
        Self {
            scenario: args.scenario,
            target: TARGET,
            url: args.url.clone(),
            clients: args.clients,
            room_size: args.room_size,
            interval_ms: args.interval_ms,
            duration_s: args.duration_s,
            hold_s: args.hold_s,
            concurrency: args.concurrency,
            source_ips,
            server_pid: args.server_pid,
            threads: args.threads,
            lobby_size: churn.then_some(args.lobby_size),
            think_ms: churn.then_some(args.think_ms),
            data_dir: args.data_dir.clone(),
            ca_cert: args.ca_cert.clone(),
            insecure: args.insecure,
            admin_url: args.admin_url.clone(),
            run_id: args.run_id(),
        }
    }
}

/// The `target` of every report of this generator.
pub(crate) const TARGET: &str = "huddle";

#[derive(Debug, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let q = |q| h.value_at_quantile(q);
        Self {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max(),
        }
    }
}

/// lobby-churn: each kind of operation, and all of them per second.
#[derive(Debug, Serialize)]
pub(crate) struct Operations {
    pub(crate) create: OpReport,
    pub(crate) join: OpReport,
    pub(crate) ready: OpReport,
    pub(crate) leave: OpReport,
    /// Successful operations of every kind per second of the window.
    pub(crate) ops_per_s: f64,
}

/// One kind of lobby operation.
#[derive(Debug, Serialize)]
pub(crate) struct OpReport {
    /// Requests answered with their reply (`LobbyReply`, `LobbyLeft` for LEAVE).
    pub(crate) count: u64,
    /// Requests answered with an `Error` (or another unexpected frame), or
    /// not answered within the reply timeout.
    pub(crate) errors: u64,
    /// `count` per second of the window.
    pub(crate) per_s: f64,
    /// From sending the request to reading its reply, successful requests only.
    pub(crate) latency_us: Percentiles,
    /// `errors` by error code (`TIMEOUT`: no reply in time); omitted when none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) error_codes: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Connect {
    /// Connections / time to the last completed connect.
    pub(crate) per_s: f64,
    pub(crate) p99_us: u64,
    pub(crate) failed: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Server {
    pub(crate) pid: u32,
    pub(crate) rss_bytes_peak: u64,
    /// utime + stime during the window.
    pub(crate) cpu_s: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Loadgen {
    pub(crate) rss_bytes_peak: u64,
    pub(crate) cpu_s: f64,
}

/// `x` rounded to `digits` decimals.
pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Prints the human summary of `r` on stderr.
pub(crate) fn summarize(r: &Report, dropped: u64) {
    eprintln!(
        "{} over {}: {} connections ({} failed, {dropped} dropped later), window {} s",
        r.scenario.name(),
        r.transport,
        r.connections,
        r.connect.failed,
        r.duration_s
    );
    if r.scenario == Scenario::ChatFanout {
        eprintln!(
            "  sent {}, delivered {} of {} (lost {}), {} deliveries/s",
            r.sent, r.delivered, r.expected, r.lost, r.delivered_per_s
        );
    }
    let lat = &r.latency_us;
    eprintln!(
        "  latency us: p50 {} p90 {} p99 {} p99.9 {} max {}",
        lat.p50, lat.p90, lat.p99, lat.p999, lat.max
    );
    eprintln!(
        "  connect: {} per s, p99 {} us",
        r.connect.per_s, r.connect.p99_us
    );
    let window = r.duration_s.max(1e-9);
    if let Some(server) = &r.server {
        eprintln!(
            "  server: cpu {} s ({:.0}% of a core over the window), rss peak {} MiB",
            server.cpu_s,
            server.cpu_s / window * 100.0,
            server.rss_bytes_peak >> 20
        );
    }
    eprintln!(
        "  loadgen: cpu {} s ({:.0}% of a core), rss peak {} MiB",
        r.loadgen.cpu_s,
        r.loadgen.cpu_s / window * 100.0,
        r.loadgen.rss_bytes_peak >> 20
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(round(1.23456, 2), 1.23);
        assert_eq!(round(1212.46, 1), 1212.5);
        assert_eq!(round(0.0, 3), 0.0);
    }

    #[test]
    fn report_fields_keep_the_baseline_order_and_null_server() {
        let report = Report {
            scenario: Scenario::ConnectStorm,
            target: TARGET,
            transport: "ws",
            params: Params {
                scenario: Scenario::ConnectStorm,
                target: TARGET,
                url: "ws://127.0.0.1:7350".into(),
                clients: 10,
                room_size: 10,
                interval_ms: 1000,
                duration_s: 20,
                hold_s: 1,
                concurrency: 256,
                source_ips: 1,
                server_pid: None,
                threads: 1,
                lobby_size: None,
                think_ms: None,
                data_dir: "huddle-data".into(),
                ca_cert: None,
                insecure: false,
                admin_url: "http://127.0.0.1:7352".into(),
                run_id: "7".into(),
            },
            connections: 10,
            duration_s: 0.5,
            sent: 0,
            delivered: 0,
            expected: 0,
            lost: 0,
            delivered_per_s: 0.0,
            latency_us: Percentiles::of(&crate::setup::histogram()),
            connect: Connect {
                per_s: 20.0,
                p99_us: 0,
                failed: 0,
            },
            server: None,
            loadgen: Loadgen {
                rss_bytes_peak: 1,
                cpu_s: 0.1,
            },
            operations: None,
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.starts_with(
            r#"{"scenario":"connect-storm","target":"huddle","transport":"ws","params":{"scenario":"connect-storm","target":"huddle","url":"ws://127.0.0.1:7350","clients":10,"#
        ));
        assert!(json.contains(r#""connections":10,"duration_s":0.5,"sent":0,"delivered":0,"expected":0,"lost":0,"delivered_per_s":0.0,"latency_us":{"p50":0,"p90":0,"p99":0,"p999":0,"max":0},"connect":{"per_s":20.0,"p99_us":0,"failed":0},"server":null,"loadgen":{"rss_bytes_peak":1,"cpu_s":0.1}}"#), "{json}");
    }
}
