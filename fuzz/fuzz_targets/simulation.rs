//! Fuzzes the shard core as a whole: a seed and a sequence of workload
//! steps (connect, disconnect, friend requests and accepts, lobbies,
//! matchmaking, waits) run on `huddle::core::sim`, four shard cores with
//! shuffled message delivery, and the cross-shard invariants of
//! `huddle::core::sim::workload::Workload::check` must hold after every
//! input. The same workload as the property test in
//! `tests/simulation.rs`, steered by coverage instead of chance. Never
//! touches a socket, a thread or the real clock.
//!
//! Input: 8 bytes of seed (for the delivery order), then 4 bytes per step
//! (`Step::from_bytes`), at most 128 steps.

#![no_main]

use huddle::core::sim::workload::{Step, Workload};
use libfuzzer_sys::fuzz_target;

/// Most steps one input runs (the rest of a long input is ignored).
const MAX_STEPS: usize = 128;

fuzz_target!(|data: &[u8]| {
    let Some((seed, steps)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mut workload = Workload::new(u64::from_le_bytes(*seed));
    for chunk in steps.chunks_exact(4).take(MAX_STEPS) {
        let step = Step::from_bytes(chunk.try_into().expect("chunks of four"));
        workload.apply(step);
    }
    if let Err(broken) = workload.check() {
        panic!("{broken}");
    }
});
