//! Tests of the parent module.

//! The store behaviour suite against a real CQL server: the address in
//! `HUDDLE_TEST_CQL` (scripts/test starts `deploy/cassandra-dev/` and
//! sets it). Without it the tests say so and pass, unless
//! `HUDDLE_REQUIRE_CQL` is set (as in CI), where that is a failure.
use super::*;

#[test]
fn the_cluster_password_never_reaches_a_log() {
    let s = ScyllaConfig {
        password: Some("hunter2".into()),
        ..ScyllaConfig::default()
    };
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("<redacted>"),
        "{shown}"
    );
}

#[test]
fn replication_is_per_datacenter_in_production() {
    let mut s = ScyllaConfig::default();
    assert_eq!(
        s.replication(),
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    );
    s.datacenters.insert("eu1".into(), 3);
    s.datacenters.insert("us1".into(), 3);
    assert_eq!(
        s.replication(),
        "{'class': 'NetworkTopologyStrategy', 'eu1': 3, 'us1': 3}"
    );
    s.datacenters.insert("x'y".into(), 1);
    assert!(s.validate().unwrap_err().contains("datacenter"));
}

pub(crate) fn store() -> Option<ScyllaStore> {
    let Ok(node) = std::env::var("HUDDLE_TEST_CQL") else {
        assert!(
            std::env::var_os("HUDDLE_REQUIRE_CQL").is_none(),
            "HUDDLE_REQUIRE_CQL is set but HUDDLE_TEST_CQL (host:port of a CQL server) is not"
        );
        eprintln!("skipped: no CQL server (set HUDDLE_TEST_CQL=127.0.0.1:9042 after deploy/cassandra-dev/start.sh)");
        return None;
    };
    // Schema changes from several connections at once can disagree.
    static CONNECT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CONNECT.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = ScyllaConfig {
        nodes: vec![node],
        keyspace: "huddle_test".into(),
        ..ScyllaConfig::default()
    };
    Some(ScyllaStore::connect(&cfg, 1).expect("connects to the CQL server"))
}

/// Keys unique to this run: the keyspace outlives a test.
pub(crate) fn prefix() -> String {
    format!("s{:08x}", rand::random::<u32>())
}

#[test]
fn pages_are_newest_first_and_upserts_are_idempotent() {
    if let Some(s) = store() {
        crate::backend::store::suite::pages_and_upserts(&s, &prefix());
    }
}

#[test]
fn pages_cross_day_partitions_and_gaps() {
    if let Some(s) = store() {
        crate::backend::store::suite::pages_across_days(&s, &prefix());
    }
}

#[test]
fn relations_notifications_ratings_and_jobs_round_trip_and_delete() {
    if let Some(s) = store() {
        crate::backend::store::suite::warm_start_rows(&s, &prefix());
    }
}

#[test]
fn later_writes_in_a_batch_win() {
    if let Some(s) = store() {
        crate::backend::store::suite::later_writes_in_a_batch_win(&s, &prefix());
    }
}

#[test]
fn a_bad_keyspace_name_is_refused_before_connecting() {
    let cfg = ScyllaConfig {
        nodes: vec!["127.0.0.1:1".into()],
        keyspace: "x; DROP".into(),
        ..ScyllaConfig::default()
    };
    let e = ScyllaStore::connect(&cfg, 1).err().expect("refused");
    assert!(e.0.contains("letters, digits and _"), "{}", e.0);
}
