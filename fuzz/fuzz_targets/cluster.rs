//! Fuzzes the cluster's ownership protocol: a seed and a sequence of steps
//! (run for a while, join with a clock up to 2 % off, leave, crash, cut a
//! node off, lose the coordinator's data, change packet loss) drive
//! `huddle::core::sim::cluster`, and no slot may ever be served by two
//! nodes at once nor get an epoch that went back; after the steps, a quiet
//! network must settle every slot on its preferred live node. The property
//! test in `tests/cluster_ownership.rs` does the same by chance; this one
//! is steered by coverage. Never touches a socket, a thread or a clock.
//!
//! Input: 8 bytes of seed, then 3 bytes per step, at most 48 steps.

#![no_main]

use std::time::Duration;

use huddle::core::cluster::OwnershipSettings;
use huddle::core::sim::cluster::{ClusterSim, Network};
use libfuzzer_sys::fuzz_target;

const MAX_STEPS: usize = 48;
/// At most this many nodes are ever started (each costs a full table).
const MAX_NODES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((seed, steps)) = data.split_first_chunk::<8>() else {
        return;
    };
    let network = Network {
        max_delay: Duration::from_millis(40),
        ..Network::default()
    };
    let mut sim = ClusterSim::new(
        OwnershipSettings::default(),
        network,
        u64::from_le_bytes(*seed),
    );
    sim.join();
    for step in steps.chunks_exact(3).take(MAX_STEPS) {
        let (op, a, b) = (step[0], step[1], step[2]);
        let n = sim.node_count();
        let node = usize::from(a) % n;
        match op % 8 {
            0..=2 => sim.run_for(Duration::from_millis(
                u64::from(u16::from_le_bytes([a, b])) % 4_000,
            )),
            3 if n < MAX_NODES => {
                let drift = f64::from(a as i8) / 127.0 * 0.02;
                sim.join_with_clock(1.0 + drift);
            }
            4 => sim.leave(node),
            5 => sim.crash(node),
            6 => sim.partition(node, Duration::from_millis(u64::from(b) * 40)),
            7 if b % 4 == 0 => sim.coordinator_loses_everything(),
            7 => sim.set_network(Network {
                loss: f64::from(b % 60) / 100.0,
                ..network
            }),
            _ => {}
        }
        if let Some(broken) = &sim.violation {
            panic!("{broken:?} after {} ms", sim.elapsed_ms());
        }
    }
    sim.set_network(network);
    if !(0..sim.node_count()).any(|i| sim.is_up(i) && !sim.is_leaving(i)) {
        sim.join();
    }
    sim.run_for(Duration::from_secs(18));
    if let Some(broken) = &sim.violation {
        panic!("{broken:?} after {} ms", sim.elapsed_ms());
    }
    assert!(sim.settled(), "not settled at {} ms", sim.elapsed_ms());
});
