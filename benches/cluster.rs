//! The ownership protocol's own cost: a key's slot, and one settled node's
//! heartbeat (tick, the coordinator model's sync, the reply) in clusters of
//! 3 and 32 nodes — the CPU a node spends per heartbeat, whatever the
//! traffic; then, when `redis-server` is installed, one heartbeat's round
//! trip through the real sync script (a settled 3-node cluster on a Redis
//! this bench starts on a free loopback port), and the Redis CPU it costs.

// The gateway's allocator, so the figures match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use huddle::backend::coordinator::{Coordinator, RedisTarget};
use huddle::core::cluster::{
    slot_of, LeaseTable, NodeId, Ownership, OwnershipEvent, OwnershipSettings, Slot, SyncRequest,
};

/// `n` nodes synced until settled: every slot claimed by its preferred node.
fn settled(n: u64) -> (Vec<Ownership>, LeaseTable, Instant, u64) {
    let start = Instant::now();
    let settings = OwnershipSettings::default();
    let mut nodes: Vec<Ownership> = (0..n)
        .map(|i| Ownership::new(NodeId(0x9e37_79b9_7f4a_7c15 ^ i), settings, start))
        .collect();
    let mut table = LeaseTable::default();
    let mut out = Vec::new();
    let mut at_ms = 0;
    for _ in 0..12 {
        for node in &mut nodes {
            let now = start + Duration::from_millis(at_ms);
            if let Some(req) = node.tick(now, &mut out) {
                let reply = table.sync(at_ms, &req);
                node.synced(now, reply, &mut out);
            }
            for event in out.drain(..) {
                if let OwnershipEvent::Released { slot, .. } = event {
                    node.handed_over(slot);
                }
            }
        }
        at_ms += 500;
    }
    (nodes, table, start, at_ms)
}

fn bench(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(|i| format!("user-{i:08}")).collect();
    c.bench_function("slot_of (a 13-byte key)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            slot_of(keys[i].as_bytes())
        })
    });
    let mut group = c.benchmark_group("heartbeat of a settled node");
    for n in [3u64, 32] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let (mut nodes, mut table, start, mut at_ms) = settled(n);
            let mut out = Vec::new();
            // Every node heartbeats (so all stay members and the table stays
            // settled); only node 0's heartbeat is timed.
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    at_ms += 500;
                    let now = start + Duration::from_millis(at_ms);
                    for (i, node) in nodes.iter_mut().enumerate() {
                        let t0 = Instant::now();
                        let req = node.tick(now, &mut out).expect("a sync is due");
                        let reply = table.sync(at_ms, &req);
                        node.synced(now, reply, &mut out);
                        if i == 0 {
                            timed += t0.elapsed();
                        }
                        assert!(out.is_empty(), "the cluster was not settled: {out:?}");
                    }
                }
                timed
            })
        });
    }
    group.finish();
    redis_round_trip(c);
}

/// Redis's CPU time so far (utime + stime, clock ticks of 10 ms).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn redis_round_trip(c: &mut Criterion) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(6399);
    let Ok(mut redis) = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!("redis-server not installed: skipping the Redis round trip");
        return;
    };
    std::thread::sleep(Duration::from_millis(300));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let coordinator = rt
        .block_on(Coordinator::connect(
            &RedisTarget::Single(format!("redis://127.0.0.1:{port}/")),
            "bench",
            Duration::from_secs(2),
        ))
        .expect("connect to the bench's redis");
    // Three nodes, each holding a third of the slots (claimed after the
    // quarantine); the timed heartbeat renews node 0 and claims nothing.
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let req = |node: NodeId, claims: Vec<Slot>| SyncRequest {
        id: 1,
        node,
        ttl_ms: 60_000,
        leaving: false,
        depart: false,
        releases: Vec::new(),
        claims,
        known_version: 0,
    };
    let thirds = |i: usize| Slot::all().filter(move |s| s.index() % 3 == i).collect();
    rt.block_on(async {
        for (i, id) in ids.iter().enumerate() {
            coordinator.sync(&req(*id, thirds(i))).await.unwrap();
        }
    });
    // Quarantine: a fresh Redis grants free slots one lease (60 s here)
    // later, so hand the generation back in time instead of waiting.
    let _ = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "HSET",
            "{huddle:bench}:meta",
            "generation",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .status();
    let mut version = 0;
    rt.block_on(async {
        for (i, id) in ids.iter().enumerate() {
            let reply = coordinator.sync(&req(*id, thirds(i))).await.unwrap();
            version = reply.version;
            let owned = reply
                .owners
                .as_ref()
                .unwrap()
                .iter()
                .filter(|o| o.is_some())
                .count();
            assert!(i < 2 || owned == 1024, "not settled: {owned} slots owned");
        }
    });
    // A settled node's heartbeat names the table version it holds.
    let renew = SyncRequest {
        known_version: version,
        ..req(ids[0], Vec::new())
    };
    let before = (cpu_ticks(redis.id()), Instant::now());
    let mut syncs = 0u64;
    c.bench_function(
        "heartbeat round trip through Redis (3 nodes, 1,024 slots)",
        |b| {
            b.iter(|| {
                syncs += 1;
                let reply = rt.block_on(coordinator.sync(&renew)).unwrap();
                assert!(reply.owners.is_none(), "the table changed under the bench");
                reply
            })
        },
    );
    let ticks = cpu_ticks(redis.id()) - before.0;
    eprintln!(
        "redis CPU: {:.1} µs per heartbeat over {syncs} heartbeats ({:.1} s)",
        ticks as f64 * 10_000.0 / syncs.max(1) as f64,
        before.1.elapsed().as_secs_f64()
    );
    let _ = redis.kill();
    let _ = redis.wait();
}

criterion_group!(benches, bench);
criterion_main!(benches);
