//! The cluster coordinator against a real Redis (Debian's `redis-server`,
//! started here on loopback ports of its own, without persistence), as one
//! instance and as a local three-master Redis Cluster: the sync script
//! gives the model's answers, and three membership tasks share the slots
//! out, take a dead node's slots, survive Redis being killed and restarted
//! empty, and never serve one slot twice at the same moment.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use huddle::backend::coordinator::{Coordinator, RedisTarget};
use huddle::core::cluster::{
    LeaseTable, NodeId, OwnershipEvent, OwnershipSettings, Slot, SyncReply, SyncRequest, SLOTS,
};
use huddle::runtime::cluster::Membership;

/// One `redis-server` process on a port of its own.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    fn start(cluster: bool) -> Self {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            cluster,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            // A restart must come back empty, cluster config included.
            let _ = std::fs::remove_file(self.dir.path().join("nodes.conf"));
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server is not installed (scripts/install-deps installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: everything it held is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A single Redis or a three-master cluster.
struct Setup {
    servers: Vec<Redis>,
}

impl Setup {
    fn single() -> Self {
        Setup {
            servers: vec![Redis::start(false)],
        }
    }

    fn cluster() -> Self {
        let servers: Vec<Redis> = (0..3).map(|_| Redis::start(true)).collect();
        let s = Setup { servers };
        s.form_cluster();
        s
    }

    fn form_cluster(&self) {
        let addrs: Vec<String> = self
            .servers
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.servers.iter().all(|r| {
            r.cli(&["CLUSTER", "INFO"])
                .is_some_and(|i| i.contains("cluster_state:ok"))
        }) {
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn target(&self) -> RedisTarget {
        if self.servers.len() == 1 {
            RedisTarget::Single(self.servers[0].url())
        } else {
            RedisTarget::Cluster(self.servers.iter().map(Redis::url).collect())
        }
    }

    /// Kills every server and starts them again empty.
    fn restart_empty(&mut self) {
        for r in &mut self.servers {
            r.kill();
        }
        for r in &mut self.servers {
            r.spawn();
        }
        if self.servers.len() > 1 {
            self.form_cluster();
        }
    }
}

async fn coordinator(setup: &Setup, cluster: &str) -> Coordinator {
    Coordinator::connect(&setup.target(), cluster, Duration::from_millis(300))
        .await
        .expect("connect to redis")
}

fn slot(n: u16) -> Slot {
    Slot::new(n).unwrap()
}

/// What both must agree on: who is a member, who owns what. Epoch values
/// differ (each side's clock); their order is compared separately.
fn shape(reply: &SyncReply) -> (bool, Vec<(NodeId, bool)>, BTreeMap<usize, NodeId>) {
    (
        reply.registered,
        reply.members.iter().map(|m| (m.node, m.leaving)).collect(),
        reply
            .owners
            .as_ref()
            .expect("the whole table (every request here names version 0)")
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.map(|o| (i, o.node)))
            .collect(),
    )
}

/// The scenario's steps: (wait before, request), on a 1 s TTL. The model
/// runs on the nominal times; the real waits can only be longer (a loaded
/// machine), so every step that needs a membership alive keeps at least
/// 380 ms of it in hand, and every step that needs one expired or a
/// quarantine over is only ever later in reality.
const TTL_MS: u64 = 1_000;

fn scenario() -> Vec<(u64, SyncRequest)> {
    let req = |node: u64, id: u64| SyncRequest {
        id,
        node: NodeId(node),
        ttl_ms: TTL_MS,
        leaving: false,
        depart: false,
        releases: Vec::new(),
        claims: Vec::new(),
        known_version: 0,
    };
    // Node ids above 2^53 on purpose: the script must never turn them
    // into Lua numbers.
    let a = u64::MAX - 7;
    let b = (1 << 60) + 3;
    vec![
        // A joins, claims during the quarantine: nothing granted.
        (
            0,
            SyncRequest {
                claims: vec![slot(1), slot(2)],
                ..req(a, 1)
            },
        ),
        // A lease later: granted.
        (
            1_100,
            SyncRequest {
                claims: vec![slot(1), slot(2)],
                ..req(a, 2)
            },
        ),
        // B joins and claims A's slot: refused, A is a member.
        (
            10,
            SyncRequest {
                claims: vec![slot(1), slot(900)],
                ..req(b, 1)
            },
        ),
        // A renews, leaving, and releases slot 2 (the epoch is filled in
        // from the previous answer); B claims it.
        (
            10,
            SyncRequest {
                leaving: true,
                ..req(a, 3)
            },
        ),
        (
            10,
            SyncRequest {
                claims: vec![slot(2)],
                ..req(b, 2)
            },
        ),
        // A falls silent; B renews past A's expiry and takes slot 1.
        (500, req(b, 3)),
        (
            600,
            SyncRequest {
                claims: vec![slot(1)],
                ..req(b, 4)
            },
        ),
        // A comes back: registered again, owns nothing.
        (
            10,
            SyncRequest {
                claims: vec![slot(1)],
                ..req(a, 4)
            },
        ),
        // B departs: its slots are free at once.
        (
            10,
            SyncRequest {
                depart: true,
                ..req(b, 5)
            },
        ),
    ]
}

async fn script_agrees_with_model(setup: Setup) {
    let redis = coordinator(&setup, "agree").await;
    redis.wipe().await.unwrap();
    let mut model = LeaseTable::default();
    let mut at_ms = 0;
    let mut last_model: Option<SyncReply> = None;
    let mut last_redis: Option<SyncReply> = None;
    let mut redis_epochs: BTreeMap<usize, u64> = BTreeMap::new();
    for (step, (wait, mut req)) in scenario().into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        at_ms += wait;
        if req.leaving && req.node == NodeId(u64::MAX - 7) {
            // Release slot 2 under the epoch each side granted.
            let m = last_model.as_ref().unwrap().owners.as_ref().unwrap()[2]
                .unwrap()
                .epoch;
            let r = last_redis.as_ref().unwrap().owners.as_ref().unwrap()[2]
                .unwrap()
                .epoch;
            let mut for_model = req.clone();
            for_model.releases = vec![(slot(2), m)];
            req.releases = vec![(slot(2), r)];
            let expect = model.sync(at_ms, &for_model);
            let got = redis.sync(&req).await.unwrap();
            assert_eq!(shape(&got), shape(&expect), "step {step}");
            last_model = Some(expect);
            last_redis = Some(got);
            continue;
        }
        let expect = model.sync(at_ms, &req);
        let got = redis.sync(&req).await.unwrap();
        assert_eq!(shape(&got), shape(&expect), "step {step}");
        assert_eq!(got.id, req.id);
        // Epochs only grow, and change exactly when the owner changes.
        for (i, o) in got.owners.as_ref().unwrap().iter().enumerate() {
            if let Some(o) = o {
                let before = redis_epochs.insert(i, o.epoch);
                let moved = last_redis
                    .as_ref()
                    .is_none_or(|l| l.owners.as_ref().unwrap()[i].map(|p| p.node) != Some(o.node));
                match before {
                    Some(e) if moved => assert!(o.epoch > e, "step {step}: slot {i}"),
                    Some(e) => assert_eq!(o.epoch, e, "step {step}: slot {i}"),
                    None => {}
                }
            }
        }
        last_model = Some(expect);
        last_redis = Some(got);
    }
    // A renewal naming the version it holds gets no table from either.
    let a = NodeId(u64::MAX - 7);
    let renew = |known_version| SyncRequest {
        id: 9,
        node: a,
        ttl_ms: TTL_MS,
        leaving: false,
        depart: false,
        releases: Vec::new(),
        claims: Vec::new(),
        known_version,
    };
    let m = model.sync(at_ms, &renew(last_model.unwrap().version));
    let r = redis
        .sync(&renew(last_redis.unwrap().version))
        .await
        .unwrap();
    assert_eq!((m.owners, r.owners), (None, None));
    assert_eq!(r.members, m.members);
}

#[tokio::test]
async fn the_sync_script_follows_the_lease_rules_on_one_redis() {
    script_agrees_with_model(Setup::single()).await;
}

#[tokio::test]
async fn the_sync_script_follows_the_lease_rules_on_a_redis_cluster() {
    script_agrees_with_model(Setup::cluster()).await;
}

fn fast() -> OwnershipSettings {
    OwnershipSettings {
        heartbeat: Duration::from_millis(100),
        lease_ttl: Duration::from_millis(600),
        margin: Duration::from_millis(100),
    }
}

/// Three membership tasks and a watcher that applies their events as a
/// server of the slots would (serving from `Acquired`, stopping at
/// `Released`/`Suspended`/`Lost`, and only while the node's lease is
/// valid), checking after every event that no slot has two servers.
struct Cluster {
    members: Vec<Membership>,
    serving: Vec<BTreeMap<Slot, u64>>,
    receivers: Vec<tokio::sync::mpsc::Receiver<OwnershipEvent>>,
    epochs: BTreeMap<Slot, u64>,
}

impl Cluster {
    async fn start(setup: &Setup, name: &str, n: u64) -> Self {
        let c = coordinator(setup, name).await;
        c.wipe().await.unwrap();
        let mut members = Vec::new();
        let mut receivers = Vec::new();
        for i in 0..n {
            let (m, rx) = Membership::start(c.clone(), NodeId(1000 + i), fast());
            members.push(m);
            receivers.push(rx);
        }
        Cluster {
            serving: vec![BTreeMap::new(); n as usize],
            members,
            receivers,
            epochs: BTreeMap::new(),
        }
    }

    fn servers(&self, slot: Slot, now: Instant) -> usize {
        (0..self.members.len())
            .filter(|i| {
                !self.members[*i].finished()
                    && self.members[*i].lease().valid_at(now)
                    && self.serving[*i].contains_key(&slot)
            })
            .count()
    }

    /// Applies events for `d`, checking the one-server rule after each.
    async fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            let mut got = false;
            for i in 0..self.members.len() {
                while let Ok(event) = self.receivers[i].try_recv() {
                    got = true;
                    match event {
                        OwnershipEvent::Acquired { slot, epoch } => {
                            if let Some(prev) = self.epochs.insert(slot, epoch) {
                                assert!(epoch >= prev, "{slot}: epoch {epoch} after {prev}");
                            }
                            self.serving[i].insert(slot, epoch);
                            let n = self.servers(slot, Instant::now());
                            assert!(n <= 1, "{slot} served by {n} nodes");
                        }
                        OwnershipEvent::Released { slot, .. } => {
                            self.serving[i].remove(&slot);
                            self.members[i].handed_over(slot).await;
                        }
                        OwnershipEvent::Suspended { slot, .. }
                        | OwnershipEvent::Lost { slot, .. } => {
                            self.serving[i].remove(&slot);
                        }
                        OwnershipEvent::Members { .. } | OwnershipEvent::Departed => {}
                    }
                }
            }
            if Instant::now() >= end {
                return;
            }
            if !got {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// Every slot served by exactly one of `live` now.
    fn covered_by(&self, live: &[usize]) -> bool {
        let now = Instant::now();
        Slot::all().all(|s| {
            live.iter()
                .filter(|i| {
                    self.members[**i].lease().valid_at(now) && self.serving[**i].contains_key(&s)
                })
                .count()
                == 1
        })
    }

    async fn settle(&mut self, live: &[usize], within: Duration) {
        let deadline = Instant::now() + within;
        while !self.covered_by(live) {
            assert!(Instant::now() < deadline, "not settled over {live:?}");
            self.run_for(Duration::from_millis(50)).await;
        }
    }

    fn count(&self, i: usize) -> usize {
        self.serving[i].len()
    }
}

async fn three_nodes_share_fail_over_and_survive_a_redis_restart(mut setup: Setup) {
    let mut c = Cluster::start(&setup, "three", 3).await;
    c.settle(&[0, 1, 2], Duration::from_secs(10)).await;
    let shares: Vec<usize> = (0..3).map(|i| c.count(i)).collect();
    assert_eq!(shares.iter().sum::<usize>(), usize::from(SLOTS));
    assert!(shares.iter().all(|s| (290..=400).contains(s)), "{shares:?}");

    // Node 2 dies: nothing takes its slots within its lease; soon after,
    // the others hold all of them.
    c.members[2].abort();
    c.serving[2].clear();
    c.settle(&[0, 1], Duration::from_secs(10)).await;

    // Redis is killed and comes back empty: the leases lapse, nobody
    // serves; after the quarantine everything is served again, under
    // greater epochs.
    let before = c.epochs.clone();
    for r in &mut setup.servers {
        r.kill();
    }
    c.run_for(Duration::from_millis(900)).await;
    let now = Instant::now();
    assert!(
        Slot::all().all(|s| c.servers(s, now) == 0),
        "slots served with the coordinator gone"
    );
    setup.restart_empty();
    c.settle(&[0, 1], Duration::from_secs(20)).await;
    for (slot, epoch) in &c.epochs {
        assert!(
            epoch > &before[slot],
            "{slot} kept its epoch across the loss"
        );
    }
    // Both survivors saw their lease lapse and said so.
    assert!(c
        .members
        .iter()
        .take(2)
        .all(|m| m.stats().lapses.load(Ordering::Relaxed) > 0));

    // Node 1 leaves: its slots are handed over, node 0 holds everything.
    let syncs = |c: &Cluster| c.members[1].stats().syncs.load(Ordering::Relaxed);
    let before = syncs(&c);
    c.members[1].leave().await;
    c.settle(&[0], Duration::from_secs(10)).await;
    c.run_for(Duration::from_millis(300)).await;
    assert!(c.members[1].finished(), "node 1 did not depart");
    // Its releases travel together: a handful of syncs for ~500 slots, not
    // one a slot.
    let spent = syncs(&c) - before;
    assert!(spent <= 20, "{spent} syncs to hand over and leave");
    assert_eq!(c.count(0), usize::from(SLOTS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_one_redis() {
    three_nodes_share_fail_over_and_survive_a_redis_restart(Setup::single()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_a_redis_cluster() {
    three_nodes_share_fail_over_and_survive_a_redis_restart(Setup::cluster()).await;
}
