//! Tests of the lease rules and of one node's ownership state machine,
//! driven by hand against a [`LeaseTable`]; the multi-node simulation's
//! tests live in `tests/cluster_ownership.rs`.

use std::time::{Duration, Instant};

use super::*;

fn settings() -> OwnershipSettings {
    OwnershipSettings::default()
}

fn request(node: u64, id: u64) -> SyncRequest {
    SyncRequest {
        id,
        node: NodeId(node),
        ttl_ms: 3_000,
        leaving: false,
        depart: false,
        releases: Vec::new(),
        claims: Vec::new(),
        known_version: 0,
    }
}

fn slot(n: u16) -> Slot {
    Slot::new(n).unwrap()
}

#[test]
fn keys_hash_to_stable_slots_and_slots_spread_evenly_over_members() {
    assert_eq!(slot_of(b"user:ada"), slot_of(b"user:ada"));
    assert!(Slot::new(SLOTS).is_none());
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let mut counts = [0usize; 3];
    for s in Slot::all() {
        let owner = preferred_owner(s, &members).unwrap();
        counts[members.iter().position(|m| *m == owner).unwrap()] += 1;
    }
    // 1024 / 3 = 341; rendezvous hashing stays within a few percent.
    assert!(counts.iter().all(|c| (300..=385).contains(c)), "{counts:?}");
    // A fourth member takes slots only from the others, never moves one
    // between them.
    let more = [NodeId(1), NodeId(2), NodeId(3), NodeId(4)];
    for s in Slot::all() {
        let after = preferred_owner(s, &more).unwrap();
        assert!(after == NodeId(4) || after == preferred_owner(s, &members).unwrap());
    }
    assert_eq!(preferred_owner(slot(0), &[]), None);
}

#[test]
fn a_fresh_coordinator_grants_no_free_slot_for_one_lease() {
    let mut table = LeaseTable::default();
    let mut req = request(1, 1);
    req.claims = vec![slot(7)];
    let reply = table.sync(10_000, &req);
    assert!(reply.registered);
    assert_eq!(
        reply.owners.as_ref().unwrap()[7],
        None,
        "granted before the quarantine ended"
    );
    let reply = table.sync(
        12_999,
        &SyncRequest {
            id: 2,
            ..req.clone()
        },
    );
    assert!(!reply.registered);
    assert_eq!(reply.owners.as_ref().unwrap()[7], None);
    let reply = table.sync(13_000, &SyncRequest { id: 3, ..req });
    assert_eq!(
        reply.owners.as_ref().unwrap()[7].map(|o| o.node),
        Some(NodeId(1))
    );
}

#[test]
fn a_slot_moves_only_when_released_or_when_its_owner_has_expired() {
    let mut table = LeaseTable::default();
    let mut a = request(1, 1);
    a.claims = vec![slot(3)];
    table.sync(0, &a);
    let first = table.sync(3_000, &a).owners.as_ref().unwrap()[3].unwrap();
    assert_eq!(first.node, NodeId(1));
    let mut b = request(2, 1);
    b.claims = vec![slot(3)];
    // A is a member until 6,000: B's claim is refused.
    assert_eq!(
        table.sync(5_999, &b).owners.as_ref().unwrap()[3],
        Some(first)
    );
    // A's membership expired: B gets the slot with a greater epoch.
    let taken = table.sync(6_000, &b).owners.as_ref().unwrap()[3].unwrap();
    assert_eq!(taken.node, NodeId(2));
    assert!(taken.epoch > first.epoch);
    // A comes back: it is a member again but the slot stays B's, and A's
    // release of the old epoch changes nothing.
    let mut back = request(1, 2);
    back.releases = vec![(slot(3), first.epoch)];
    back.claims = vec![slot(3)];
    let reply = table.sync(6_100, &back);
    assert!(reply.registered);
    assert_eq!(reply.owners.as_ref().unwrap()[3], Some(taken));
    // B releases it: A may claim it, under a greater epoch again.
    let mut release = request(2, 2);
    release.releases = vec![(slot(3), taken.epoch)];
    assert_eq!(
        table.sync(6_200, &release).owners.as_ref().unwrap()[3],
        None
    );
    let again = table.sync(6_300, &back).owners.as_ref().unwrap()[3].unwrap();
    assert_eq!(again.node, NodeId(1));
    assert!(again.epoch > taken.epoch);
}

#[test]
fn epochs_keep_growing_after_the_coordinator_loses_everything() {
    let mut table = LeaseTable::default();
    let mut a = request(1, 1);
    a.claims = vec![slot(1)];
    table.sync(0, &a);
    let before = table.sync(3_000, &a).owners.as_ref().unwrap()[1]
        .unwrap()
        .epoch;
    table.lose_everything();
    let reply = table.sync(4_000, &a);
    assert!(reply.registered);
    assert_eq!(
        reply.owners.as_ref().unwrap()[1],
        None,
        "quarantined after the loss"
    );
    let after = table.sync(7_000, &a).owners.as_ref().unwrap()[1]
        .unwrap()
        .epoch;
    assert!(after > before);
}

#[test]
fn a_departure_frees_every_slot_at_once() {
    let mut table = LeaseTable::default();
    let mut a = request(1, 1);
    a.claims = vec![slot(1), slot(2)];
    table.sync(0, &a);
    table.sync(3_000, &a);
    let mut bye = request(1, 2);
    bye.depart = true;
    let reply = table.sync(3_100, &bye);
    assert!(reply.members.is_empty());
    assert!(reply.owners.as_ref().unwrap().iter().all(Option::is_none));
}

/// Runs one node against a table, replying at once: `steps` ticks of
/// `every`.
fn drive(
    own: &mut Ownership,
    table: &mut LeaseTable,
    start: Instant,
    from: Duration,
    steps: u32,
    every: Duration,
) -> Vec<OwnershipEvent> {
    let mut out = Vec::new();
    for i in 0..steps {
        let now = start + from + every * i;
        let at_ms = (from + every * i).as_millis() as u64;
        if let Some(req) = own.tick(now, &mut out) {
            let reply = table.sync(at_ms, &req);
            own.synced(now, reply, &mut out);
        }
    }
    out
}

#[test]
fn a_lone_node_takes_every_slot_after_the_quarantine_and_stops_when_its_lease_lapses() {
    let start = Instant::now();
    let mut table = LeaseTable::default();
    let mut own = Ownership::new(NodeId(9), settings(), start);
    let tick = Duration::from_millis(500);
    let out = drive(&mut own, &mut table, start, Duration::ZERO, 8, tick);
    assert!(out.contains(&OwnershipEvent::Members {
        joined: vec![NodeId(9)],
        left: vec![]
    }));
    let acquired = out
        .iter()
        .filter(|e| matches!(e, OwnershipEvent::Acquired { .. }))
        .count();
    assert_eq!(acquired, usize::from(SLOTS));
    let last_sync = start + tick * 7;
    assert!(own.serving(slot(5), last_sync).is_some());
    // No reply ever again: serving stops at sent + ttl - margin.
    let lapse = last_sync + Duration::from_millis(2_700);
    assert!(own
        .serving(slot(5), lapse - Duration::from_millis(1))
        .is_some());
    assert!(own.serving(slot(5), lapse).is_none());
    let mut out = Vec::new();
    let lost = own.tick(lapse, &mut out).expect("a sync is due");
    assert_eq!(
        out.iter()
            .filter(|e| matches!(e, OwnershipEvent::Suspended { .. }))
            .count(),
        usize::from(SLOTS)
    );
    // That sync is never answered; a whole lease later it is given up on
    // and the next one (the membership expired meanwhile, nobody took the
    // slots) brings them back with their epochs; the late answer to the
    // lost one changes nothing.
    let epoch = own.owner_of(slot(5)).unwrap().epoch;
    let mut out = Vec::new();
    assert!(own
        .tick(lapse + Duration::from_millis(2_999), &mut out)
        .is_none());
    let out = drive(
        &mut own,
        &mut table,
        start,
        Duration::from_millis(9_200),
        1,
        tick,
    );
    assert!(out.contains(&OwnershipEvent::Acquired {
        slot: slot(5),
        epoch
    }));
    let late = table.sync(9_300, &lost);
    let mut out = Vec::new();
    own.synced(start + Duration::from_millis(9_300), late, &mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn settings_that_cannot_keep_a_lease_are_refused() {
    let mut s = settings();
    assert!(s.check().is_ok());
    s.lease_ttl = Duration::from_millis(1_000);
    assert!(s.check().unwrap_err().contains("three heartbeats"));
    s = settings();
    s.margin = s.lease_ttl;
    assert!(s.check().unwrap_err().contains("lease_margin"));
}

#[test]
fn an_unchanged_table_is_not_sent_again_and_versions_only_grow() {
    let mut table = LeaseTable::default();
    let mut a = request(1, 1);
    let first = table.sync(0, &a);
    assert!(first.owners.is_some());
    // A renewal naming the version it holds: no table, same version.
    a.known_version = first.version;
    let renewal = table.sync(500, &a);
    assert_eq!(
        (renewal.version, renewal.owners.as_ref()),
        (first.version, None)
    );
    // A grant changes it, and the new table comes back.
    a.claims = vec![slot(4)];
    let granted = table.sync(3_000, &a);
    assert!(granted.version > first.version);
    assert_eq!(granted.owners.unwrap()[4].map(|o| o.node), Some(NodeId(1)));
    // So does a second member joining, for everyone holding the old one.
    let joined = table.sync(3_100, &request(2, 1));
    assert!(joined.version > granted.version);
    // A coordinator that lost everything never hands out an old version.
    table.lose_everything();
    a.known_version = joined.version;
    a.claims.clear();
    let fresh = table.sync(3_200, &a);
    assert!(fresh.version > joined.version && fresh.owners.is_some());
}
