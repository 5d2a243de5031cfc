//! Acknowledged means stored, under kill -9: the real `huddle` binary
//! takes chat messages, friend requests and operator notifications from
//! several clients at once and is SIGKILLed at a random moment, several
//! times over one data directory. Every reply that said something happened
//! (a `ChatSent`, a `FriendOpDone`, a `{"notified":1}`) must find its
//! record in the store afterwards, exactly once.
//!
//! Runs over the embedded store, and over the CQL store too where
//! `HUDDLE_TEST_CQL` names a CQL server (scripts/test starts one).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use huddle::backend::store::HistoryStore;
use huddle::ops::config::ScyllaConfig;
use huddle_client::{Client, ClientConfig, ContentType};
use rand::Rng;

/// What the gateway acknowledged, across every run.
#[derive(Default)]
struct Acked {
    /// chat → content → message ids it was acknowledged under.
    messages: BTreeMap<String, BTreeMap<String, Vec<u64>>>,
    /// (requester, addressee) pairs answered REQUEST_SENT.
    requests: BTreeSet<(String, String)>,
    /// Titles of notifications the operator API answered for.
    notifications: BTreeSet<String>,
}

#[derive(Clone, Copy)]
enum Store {
    Embedded,
    Cql,
}

fn spawn(data: &Path, store: Store, keyspace: &str) -> common::Served {
    let mut cmd = common::huddle_serve(data);
    if let Store::Cql = store {
        let node = std::env::var("HUDDLE_TEST_CQL").unwrap();
        cmd.env("HUDDLE_STORE__KIND", "scylla")
            .env("HUDDLE_STORE__SCYLLA__NODES", format!("[\"{node}\"]"))
            .env("HUDDLE_STORE__SCYLLA__KEYSPACE", keyspace);
    }
    common::serve(&mut cmd)
}

async fn client(ws: &str, user: &str) -> Option<Client> {
    let mut config = ClientConfig::new(ws.to_string(), common::token(user));
    config.reconnect = false;
    let (client, mut events) = Client::connect(config).await.ok()?;
    tokio::spawn(async move { while events.next().await.is_some() {} });
    Some(client)
}

/// Sends until the gateway dies, recording each acknowledgement.
async fn chat_load(ws: String, sender: String, chat: String, acked: Arc<Mutex<Acked>>, run: u32) {
    let Some(c) = client(&ws, &sender).await else {
        return;
    };
    if c.chat_join(&chat).await.is_err() {
        return;
    }
    for i in 0.. {
        let content = format!("{sender} run {run} #{i}");
        match c.chat_send(&chat, &content, ContentType::TEXT, None).await {
            Ok(ack) => acked
                .lock()
                .unwrap()
                .messages
                .entry(chat.clone())
                .or_default()
                .entry(content)
                .or_default()
                .push(ack.message_id),
            Err(_) => return,
        }
    }
}

async fn friend_load(ws: String, user: String, acked: Arc<Mutex<Acked>>, run: u32) {
    let Some(c) = client(&ws, &user).await else {
        return;
    };
    for i in 0.. {
        let other = format!("friend-{run}-{i}");
        match c.friend_request(&other).await {
            Ok(_) => {
                acked.lock().unwrap().requests.insert((user.clone(), other));
            }
            Err(_) => return,
        }
    }
}

async fn notify_load(admin: String, acked: Arc<Mutex<Acked>>, run: u32, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    let url = format!("http://{admin}/v1/notifications");
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let title = format!("run {run} notice {i}");
        // One offline user each: the per-user retention never removes one.
        let user = format!("reader-{run}-{i}");
        let body = serde_json::json!({ "user_ids": [user], "title": title });
        let Ok(resp) = http.post(&url).json(&body).send().await else {
            return;
        };
        if !resp.status().is_success() {
            return;
        }
        let Ok(text) = resp.text().await else { return };
        if text.contains("\"notified\":1") {
            acked.lock().unwrap().notifications.insert(title);
        }
    }
}

/// Reads what the store holds and compares it with what was acknowledged.
fn assert_kept(store: &dyn HistoryStore, acked: &Acked) {
    let mut total = 0;
    for (chat, sent) in &acked.messages {
        let stored = store.messages(chat, 0, 10_000_000).unwrap();
        let mut by_content: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for m in &stored {
            by_content.entry(&m.content).or_default().push(m.id);
        }
        // Counted first, so a failure says how much was lost.
        let missing = sent
            .iter()
            .filter(|(content, _)| !by_content.contains_key(content.as_str()))
            .count();
        eprintln!(
            "{chat}: {missing} of {} acknowledged messages missing",
            sent.len()
        );
        for (content, ids) in sent {
            assert_eq!(ids.len(), 1, "{chat}: {content:?} acknowledged once");
            let got = by_content.get(content.as_str());
            assert_eq!(
                got,
                Some(ids),
                "{chat}: acknowledged {content:?} is stored exactly once, under its id"
            );
            total += 1;
        }
        // Nothing stored twice, acknowledged or not.
        let distinct: BTreeSet<&str> = stored.iter().map(|m| &*m.content).collect();
        assert_eq!(distinct.len(), stored.len(), "{chat}: no message twice");
    }
    let relations: BTreeSet<(String, String)> = store
        .load_relations()
        .unwrap()
        .into_iter()
        .map(|r| (r.user.to_string(), r.other.to_string()))
        .collect();
    for (user, other) in &acked.requests {
        assert!(
            relations.contains(&(user.clone(), other.clone())),
            "the acknowledged friend request {user} → {other} is stored"
        );
    }
    let titles: Vec<String> = store
        .load_notifications()
        .unwrap()
        .into_iter()
        .filter(|n| n.user_id.starts_with("reader-"))
        .map(|n| n.title.to_string())
        .collect();
    let distinct: BTreeSet<&String> = titles.iter().collect();
    assert_eq!(distinct.len(), titles.len(), "no notification twice");
    for title in &acked.notifications {
        assert!(
            distinct.contains(title),
            "the acknowledged notification {title:?} is stored"
        );
    }
    eprintln!(
        "kept: {total} messages, {} friend requests, {} notifications acknowledged; all stored once",
        acked.requests.len(),
        acked.notifications.len()
    );
    assert!(total > 0 && !acked.notifications.is_empty() && !acked.requests.is_empty());
}

async fn kill_under_load(store: Store) {
    let data = tempfile::tempdir().unwrap();
    let keyspace = format!("huddle_crash_{}", std::process::id());
    let acked = Arc::new(Mutex::new(Acked::default()));
    let kills = 4;
    for run in 0..kills {
        let mut served = spawn(data.path(), store, &keyspace);
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for (sender, chat) in [
            ("ann", "direct:ann:ben"),
            ("ben", "direct:ann:ben"),
            ("cal", "direct:cal:dee"),
            ("eve", "direct:eve:fay"),
        ] {
            load.push(tokio::spawn(chat_load(
                served.ws.clone(),
                sender.into(),
                chat.into(),
                acked.clone(),
                run,
            )));
        }
        load.push(tokio::spawn(friend_load(
            served.ws.clone(),
            format!("gus{run}"),
            acked.clone(),
            run,
        )));
        load.push(tokio::spawn(notify_load(
            served.admin.clone(),
            acked.clone(),
            run,
            stop.clone(),
        )));
        // A different moment each time: early, mid-batch, late.
        let after = rand::rng().random_range(400..1600);
        tokio::time::sleep(Duration::from_millis(after)).await;
        served.child.kill().unwrap(); // SIGKILL
        served.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for l in load {
            let _ = tokio::time::timeout(Duration::from_secs(10), l).await;
        }
        eprintln!("run {run}: killed after {after} ms");
    }
    // One more start recovers what the last crash left; SIGTERM then
    // leaves everything in the store.
    let mut served = spawn(data.path(), store, &keyspace);
    assert!(common::terminate(&mut served.child).success());
    let dir = data.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let acked = acked.lock().unwrap();
        check(store, &dir, keyspace, &acked)
    })
    .await
    .unwrap();
}

fn check(store: Store, data: &Path, keyspace: String, acked: &Acked) {
    match store {
        Store::Embedded => {
            let store = huddle::backend::store::embedded::EmbeddedStore::open(
                &data.join("history.redb"),
                8 << 20,
            )
            .unwrap();
            assert_kept(&store, acked);
        }
        Store::Cql => {
            let cfg = ScyllaConfig {
                nodes: vec![std::env::var("HUDDLE_TEST_CQL").unwrap()],
                keyspace,
                ..ScyllaConfig::default()
            };
            let store = huddle::backend::store::scylla::ScyllaStore::connect(&cfg, 0).unwrap();
            assert_kept(&store, acked);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged_embedded() {
    kill_under_load(Store::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged_cql() {
    if std::env::var_os("HUDDLE_TEST_CQL").is_none() {
        assert!(
            std::env::var_os("HUDDLE_REQUIRE_CQL").is_none(),
            "HUDDLE_REQUIRE_CQL is set but HUDDLE_TEST_CQL is not"
        );
        eprintln!("skipped: no CQL server (scripts/test sets HUDDLE_TEST_CQL)");
        return;
    }
    kill_under_load(Store::Cql).await;
}

/// Operator-created channels are stored like history: one created just
/// before a SIGKILL, and one before a SIGTERM, can be joined after the
/// restart with the settings they were created with.
async fn channels_outlive_restarts(store: Store) {
    let data = tempfile::tempdir().unwrap();
    let keyspace = format!("huddle_channels_{}", std::process::id());
    let http = reqwest::Client::new();
    let create = |admin: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let resp = http
                .post(format!("http://{admin}/v1/channels"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        }
    };
    let mut served = spawn(data.path(), store, &keyspace);
    create(
        served.admin.clone(),
        serde_json::json!({ "name": "killed", "read_only": true }),
    )
    .await;
    served.child.kill().unwrap(); // SIGKILL right after the answer
    served.child.wait().unwrap();

    let mut served = spawn(data.path(), store, &keyspace);
    create(
        served.admin.clone(),
        serde_json::json!({ "name": "stopped", "slow_mode_ms": 2500, "public": false, "members": ["ann"] }),
    )
    .await;
    assert!(common::terminate(&mut served.child).success());

    let mut served = spawn(data.path(), store, &keyspace);
    let ann = client(&served.ws, "ann").await.expect("connects");
    let killed = ann
        .chat_join("channel:killed")
        .await
        .expect("a channel created before a SIGKILL exists");
    assert!(killed.read_only, "with its settings");
    let stopped = ann
        .chat_join("channel:stopped")
        .await
        .expect("a channel created before a SIGTERM exists");
    assert_eq!(stopped.slow_mode_ms, 2500);
    let bob = client(&served.ws, "bob").await.expect("connects");
    assert!(
        bob.chat_join("channel:stopped").await.is_err(),
        "its member list is kept too"
    );
    served.child.kill().unwrap();
    served.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_channels_outlive_sigkill_and_sigterm_embedded() {
    channels_outlive_restarts(Store::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_channels_outlive_sigkill_and_sigterm_cql() {
    if std::env::var_os("HUDDLE_TEST_CQL").is_none() {
        eprintln!("skipped: no CQL server (scripts/test sets HUDDLE_TEST_CQL)");
        return;
    }
    channels_outlive_restarts(Store::Cql).await;
}
