//! One matchmaking tick over 10k, 100k and 1M waiting 5v5 tickets with a
//! realistic spread of ratings (normal, mean 1500, sd 300) and latencies
//! (three regions, 20–250 ms), and the cost of queueing a ticket.

// The gateway's allocator, so the figures match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use huddle::core::engine::matchmaking::matcher::{Player, Queue, QueueRules, TicketSpec, Widening};
use huddle::core::engine::UserId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rules() -> QueueRules {
    QueueRules {
        teams: 2,
        team_size: 5,
        regions: vec![Arc::from("eu"), Arc::from("us"), Arc::from("asia")],
        spread: Widening {
            start: 100.0,
            step: 50.0,
            every_ms: 10_000,
            max: 600.0,
        },
        latency: Widening {
            start: 80.0,
            step: 20.0,
            every_ms: 15_000,
            max: 200.0,
        },
        timeout_ms: 600_000,
        attributes: Vec::new(),
        roles: Vec::new(),
    }
}

fn tickets(n: usize, seed: u64) -> Vec<TicketSpec> {
    let mut rng = StdRng::seed_from_u64(seed);
    let regions = ["eu", "us", "asia"];
    (0..n as u64)
        .map(|id| {
            // Box-Muller: a normal rating.
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            let rating =
                1500.0 + 300.0 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let home = rng.random_range(0..3);
            TicketSpec {
                id,
                players: vec![Player {
                    user: UserId::from(format!("p{id}")),
                    rating,
                }],
                latency_ms: regions
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let ms = if i == home {
                            rng.random_range(20..90)
                        } else {
                            rng.random_range(120..250)
                        };
                        (Arc::from(*r), ms)
                    })
                    .collect(),
                attributes: Vec::new(),
                roles: Vec::new(),
            }
        })
        .collect()
}

fn queue_of(n: usize) -> Queue {
    let mut q = Queue::new(rules()).unwrap();
    // Entered over the last minute: windows of every width.
    for (i, t) in tickets(n, 7).into_iter().enumerate() {
        q.insert((i as u64 * 60_000) / n as u64, t).unwrap();
    }
    q
}

fn tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("matchmaker tick (5v5)");
    group.sample_size(10);
    for n in [10_000usize, 100_000, 1_000_000] {
        let queue = queue_of(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &queue, |b, queue| {
            b.iter_batched(
                || queue.clone(),
                |mut q| {
                    let mut out = Vec::new();
                    q.tick(60_000, &mut out);
                    // Dropped after timing: freeing is not the tick's work.
                    (q, out)
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn insert(c: &mut Criterion) {
    let specs = tickets(100_000, 11);
    c.bench_function("matchmaker insert 100k tickets", |b| {
        b.iter_batched(
            || specs.clone(),
            |specs| {
                let mut q = Queue::new(rules()).unwrap();
                for s in specs {
                    q.insert(0, s).unwrap();
                }
                q
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, tick, insert);
criterion_main!(benches);
