//! The ownership protocol across nodes, on the deterministic simulation
//! (`huddle::core::sim::cluster`): nodes join, leave, crash and are cut off,
//! packets are delayed, reordered and lost, the coordinator loses its data;
//! no slot is ever served by two nodes at once (also with clocks running up
//! to 2 % off), epochs only grow, and a quiet cluster ends with every slot
//! served by the node it belongs to.

use std::time::Duration;

use huddle::core::cluster::{OwnershipEvent, OwnershipSettings, Slot, SLOTS};
use huddle::core::sim::cluster::{ClusterSim, Network, Violation};
use proptest::prelude::*;

fn settings() -> OwnershipSettings {
    OwnershipSettings::default()
}

/// Long enough for any disturbance to settle: a lease (for a dead node's
/// membership to expire, or a fresh coordinator's quarantine), then a few
/// heartbeats to claim and hand over.
const SETTLE: Duration = Duration::from_secs(8);

fn assert_sound(sim: &ClusterSim) {
    assert_eq!(sim.violation, None, "at {} ms", sim.elapsed_ms());
}

#[test]
fn three_nodes_share_the_slots_out_fairly_and_each_slot_has_one_server() {
    let mut sim = ClusterSim::new(settings(), Network::default(), 1);
    for _ in 0..3 {
        sim.join();
    }
    sim.run_for(SETTLE);
    assert_sound(&sim);
    assert!(sim.settled());
    let counts: Vec<usize> = (0..3).map(|i| sim.serving_count(i)).collect();
    assert_eq!(counts.iter().sum::<usize>(), usize::from(SLOTS));
    assert!(counts.iter().all(|c| (290..=400).contains(c)), "{counts:?}");
}

#[test]
fn a_joining_node_takes_its_share_by_planned_hand_over() {
    let mut sim = ClusterSim::new(settings(), Network::default(), 2);
    sim.join();
    sim.join();
    sim.run_for(SETTLE);
    let before = sim.events.len();
    let newcomer = sim.join();
    sim.run_for(Duration::from_secs(3));
    assert_sound(&sim);
    assert!(sim.settled());
    let taken = sim.serving_count(newcomer);
    assert!((290..=400).contains(&taken), "{taken}");
    // Every slot it took was handed over (released, stored), never taken
    // from a node that was still serving it, and nothing was lost.
    let id = sim.node_id(newcomer);
    let released = sim.events[before..]
        .iter()
        .filter(|(node, e)| *node != id && matches!(e, OwnershipEvent::Released { .. }))
        .count();
    assert_eq!(released, taken);
    assert!(!sim.events[before..].iter().any(|(_, e)| matches!(
        e,
        OwnershipEvent::Lost { .. } | OwnershipEvent::Suspended { .. }
    )));
}

#[test]
fn a_node_leaving_hands_every_slot_over_and_departs() {
    let mut sim = ClusterSim::new(settings(), Network::default(), 3);
    for _ in 0..3 {
        sim.join();
    }
    sim.run_for(SETTLE);
    sim.leave(1);
    sim.run_for(Duration::from_secs(3));
    assert_sound(&sim);
    assert!(!sim.is_up(1));
    assert!(sim.settled());
    assert_eq!(
        sim.serving_count(0) + sim.serving_count(2),
        usize::from(SLOTS)
    );
    let id = sim.node_id(1);
    assert!(sim
        .events
        .iter()
        .any(|(n, e)| *n == id && *e == OwnershipEvent::Departed));
}

#[test]
fn a_crashed_node_s_slots_are_taken_over_after_its_lease() {
    let mut sim = ClusterSim::new(settings(), Network::default(), 4);
    for _ in 0..3 {
        sim.join();
    }
    sim.run_for(SETTLE);
    let orphaned: Vec<Slot> = Slot::all()
        .filter(|s| sim.servers_of(*s) == vec![sim.node_id(2)])
        .collect();
    sim.crash(2);
    // Within the lease nobody serves them (the dead node might still be
    // acting, as far as anyone can tell) ...
    sim.run_for(Duration::from_millis(2_000));
    assert!(orphaned.iter().all(|s| sim.servers_of(*s).is_empty()));
    // ... and a lease plus a heartbeat or two later, all of them are served.
    sim.run_for(Duration::from_millis(2_500));
    assert_sound(&sim);
    assert!(sim.settled());
}

#[test]
fn a_node_cut_off_stops_serving_before_anyone_else_starts() {
    let mut sim = ClusterSim::new(settings(), Network::default(), 5);
    for _ in 0..2 {
        sim.join();
    }
    sim.run_for(SETTLE);
    sim.partition(0, Duration::from_secs(6));
    sim.run_for(Duration::from_secs(10));
    assert_sound(&sim);
    assert!(sim.settled());
    let id = sim.node_id(0);
    assert!(sim
        .events
        .iter()
        .any(|(n, e)| *n == id && matches!(e, OwnershipEvent::Suspended { .. })));
}

#[test]
fn after_the_coordinator_loses_everything_nobody_serves_twice() {
    let mut sim = ClusterSim::new(settings(), Network::default(), 6);
    for _ in 0..3 {
        sim.join();
    }
    sim.run_for(SETTLE);
    sim.coordinator_loses_everything();
    sim.run_for(SETTLE);
    assert_sound(&sim);
    assert!(sim.settled());
}

/// A node whose clock runs slow believes its lease lasts longer than it
/// does; the margin (300 ms of 3 s) is what keeps a clock 5 % slow from
/// serving past the moment another node may take over. With no margin, a
/// clock 40 % slow serves on for 2 s after its membership expired, and the
/// other node (which claims a heartbeat after it hears of the expiry, so
/// within about a second) takes the slots meanwhile.
#[test]
fn the_margin_covers_a_slow_clock_and_without_it_two_nodes_serve() {
    let cut_off_slow_node = |margin_ms: u64, rate: f64| {
        let settings = OwnershipSettings {
            margin: Duration::from_millis(margin_ms),
            ..settings()
        };
        let mut sim = ClusterSim::new(settings, Network::default(), 7);
        sim.join_with_clock(rate);
        sim.join();
        sim.run_for(SETTLE);
        assert_sound(&sim);
        sim.partition(0, Duration::from_secs(6));
        sim.run_for(Duration::from_secs(10));
        sim.violation.clone()
    };
    assert_eq!(cut_off_slow_node(300, 0.95), None);
    assert!(
        matches!(cut_off_slow_node(0, 0.6), Some(Violation::TwoOwners { .. })),
        "a slow clock with no margin went unnoticed"
    );
}

#[derive(Debug, Clone)]
enum Step {
    Run(u16),
    Join,
    /// A node whose clock runs up to 2 % fast or slow.
    JoinDrifting(i8),
    Leave(u8),
    Crash(u8),
    Partition(u8, u16),
    LoseCoordinator,
    Loss(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u16..3_000).prop_map(Step::Run),
        2 => Just(Step::Join),
        1 => any::<i8>().prop_map(Step::JoinDrifting),
        1 => any::<u8>().prop_map(Step::Leave),
        1 => any::<u8>().prop_map(Step::Crash),
        2 => (any::<u8>(), 1u16..8_000).prop_map(|(n, ms)| Step::Partition(n, ms)),
        1 => Just(Step::LoseCoordinator),
        1 => (0u8..60).prop_map(Step::Loss),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Under any mix of joins, leaves, crashes, partitions, packet loss,
    /// reordering and coordinator loss: never two servers for one slot,
    /// epochs only grow; once the network is quiet the cluster settles.
    #[test]
    fn one_server_per_slot_whatever_happens(
        seed in any::<u64>(),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let network = Network { max_delay: Duration::from_millis(40), ..Network::default() };
        let mut sim = ClusterSim::new(settings(), network, seed);
        sim.join();
        sim.join();
        for step in steps {
            let n = sim.node_count();
            match step {
                Step::Run(ms) => sim.run_for(Duration::from_millis(u64::from(ms))),
                Step::Join => { sim.join(); }
                Step::JoinDrifting(d) => { sim.join_with_clock(1.0 + f64::from(d) / 127.0 * 0.02); }
                Step::Leave(i) => sim.leave(usize::from(i) % n),
                Step::Crash(i) => sim.crash(usize::from(i) % n),
                Step::Partition(i, ms) =>
                    sim.partition(usize::from(i) % n, Duration::from_millis(u64::from(ms))),
                Step::LoseCoordinator => sim.coordinator_loses_everything(),
                Step::Loss(p) => sim.set_network(Network {
                    loss: f64::from(p) / 100.0,
                    ..network
                }),
            }
            prop_assert_eq!(&sim.violation, &None);
        }
        // Quiet: no loss, every partition over; a live node not leaving,
        // to serve.
        sim.set_network(network);
        if !(0..sim.node_count()).any(|i| sim.is_up(i) && !sim.is_leaving(i)) {
            sim.join();
        }
        sim.run_for(Duration::from_secs(10) + SETTLE);
        prop_assert_eq!(&sim.violation, &None);
        prop_assert!(sim.settled(), "not settled at {} ms", sim.elapsed_ms());
    }
}
