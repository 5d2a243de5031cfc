//! A deterministic simulation of the ownership protocol across nodes: N
//! [`Ownership`] state machines and one coordinator ([`LeaseTable`]) on a
//! virtual clock, joined by a simulated network that delays, reorders,
//! drops and partitions, with nodes joining, leaving, crashing and the
//! coordinator losing its data. It checks, after every event, that no slot
//! is served by two nodes at once and that an epoch handed to a new owner
//! is greater than every earlier one. Each node may run its own clock at a
//! rate off true time ([`ClusterSim::join_with_clock`]), which is what the
//! protocol's `margin` is for. Nothing here runs on a thread or reads the
//! real clock; a seed replays a run exactly.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::core::cluster::{
    preferred_owner, Epoch, LeaseTable, NodeId, Ownership, OwnershipEvent, OwnershipSettings, Slot,
    SyncReply, SyncRequest, SLOTS,
};

/// How the simulated network between nodes and the coordinator behaves.
#[derive(Debug, Clone, Copy)]
pub struct Network {
    /// Each packet is in flight for a random time up to this (so packets
    /// overtake each other).
    pub max_delay: Duration,
    /// The chance that a packet is lost, 0..1.
    pub loss: f64,
    /// How long a released slot's state takes to store, at most.
    pub max_hand_over: Duration,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            max_delay: Duration::from_millis(20),
            loss: 0.0,
            max_hand_over: Duration::from_millis(30),
        }
    }
}

enum Packet {
    Request(usize, SyncRequest),
    Reply(usize, SyncReply),
}

struct Node {
    own: Ownership,
    /// How fast its clock runs against true time (1.0: exactly).
    rate: f64,
    /// A crashed or departed node does nothing more.
    up: bool,
    /// Packets to and from it are lost until then.
    cut_until: Option<Instant>,
}

/// What went wrong, if anything: the first broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    TwoOwners {
        slot: Slot,
        nodes: Vec<NodeId>,
        at_ms: u64,
    },
    /// The run made no progress: something asks to run again at the same
    /// instant forever.
    Stuck { at_ms: u64 },
    EpochWentBack {
        slot: Slot,
        node: NodeId,
        epoch: Epoch,
        previous: Epoch,
    },
}

/// The whole simulated cluster.
pub struct ClusterSim {
    start: Instant,
    now: Instant,
    settings: OwnershipSettings,
    network: Network,
    rng: SmallRng,
    coordinator: LeaseTable,
    nodes: Vec<Node>,
    packets: Vec<(Instant, Packet)>,
    hand_overs: Vec<(Instant, usize, Slot)>,
    /// The last owner and epoch each slot was acquired under.
    last_acquired: Vec<Option<(NodeId, Epoch)>>,
    /// Every event, with the node it happened on.
    pub events: Vec<(NodeId, OwnershipEvent)>,
    /// The first broken rule seen.
    pub violation: Option<Violation>,
}

impl ClusterSim {
    /// An empty cluster; add nodes with [`ClusterSim::join`].
    pub fn new(settings: OwnershipSettings, network: Network, seed: u64) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            settings,
            network,
            rng: SmallRng::seed_from_u64(seed),
            coordinator: LeaseTable::default(),
            nodes: Vec::new(),
            packets: Vec::new(),
            hand_overs: Vec::new(),
            last_acquired: vec![None; usize::from(SLOTS)],
            events: Vec::new(),
            violation: None,
        }
    }

    /// Milliseconds since the start.
    pub fn elapsed_ms(&self) -> u64 {
        self.now.duration_since(self.start).as_millis() as u64
    }

    /// Starts a node with an exact clock; returns its index.
    pub fn join(&mut self) -> usize {
        self.join_with_clock(1.0)
    }

    /// Starts a node whose clock runs at `rate` times true time (0.98: 2 %
    /// slow); returns its index.
    pub fn join_with_clock(&mut self, rate: f64) -> usize {
        let id = NodeId(self.rng.random());
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let reading = self.start + self.now.duration_since(self.start).mul_f64(rate);
        self.nodes.push(Node {
            own: Ownership::new(id, self.settings, reading),
            rate,
            up: true,
            cut_until: None,
        });
        self.nodes.len() - 1
    }

    /// Node `i`'s clock reading at true time `t`. Clocks all read the start
    /// at the start; a node joining later reads what its rate has made of
    /// the time since.
    fn local(&self, i: usize, t: Instant) -> Instant {
        self.start + t.duration_since(self.start).mul_f64(self.nodes[i].rate)
    }

    /// The true time at which node `i`'s clock reads `local` (rounded up,
    /// so that the node finds its deadline reached).
    fn global(&self, i: usize, local: Instant) -> Instant {
        let since = local.saturating_duration_since(self.start);
        self.start + since.div_f64(self.nodes[i].rate) + Duration::from_micros(1)
    }

    /// Asks node `i` to drain and leave.
    pub fn leave(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.own.leave();
        }
    }

    /// Kills node `i` (kill -9): it does nothing more.
    pub fn crash(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.up = false;
        }
    }

    /// Cuts node `i` off the coordinator for `d`.
    pub fn partition(&mut self, i: usize, d: Duration) {
        let until = self.now + d;
        if let Some(n) = self.nodes.get_mut(i) {
            n.cut_until = Some(until);
        }
    }

    /// The coordinator loses every key (a Redis restarted empty).
    pub fn coordinator_loses_everything(&mut self) {
        self.coordinator.lose_everything();
    }

    /// Changes the network's behaviour from now on.
    pub fn set_network(&mut self, network: Network) {
        self.network = network;
    }

    /// How many nodes were ever started.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Whether node `i` is running (not crashed, not departed).
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.up && !n.own.departed())
    }

    /// Whether node `i` was asked to leave.
    pub fn is_leaving(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.own.leaving())
    }

    /// Node `i`'s id.
    pub fn node_id(&self, i: usize) -> NodeId {
        self.nodes[i].own.node()
    }

    /// How many slots node `i` serves now.
    pub fn serving_count(&self, i: usize) -> usize {
        let n = &self.nodes[i];
        if !n.up {
            return 0;
        }
        Slot::all()
            .filter(|s| n.own.serving(*s, self.local(i, self.now)).is_some())
            .count()
    }

    /// The nodes serving `slot` now.
    pub fn servers_of(&self, slot: Slot) -> Vec<NodeId> {
        (0..self.nodes.len())
            .filter(|i| {
                let n = &self.nodes[*i];
                n.up && n.own.serving(slot, self.local(*i, self.now)).is_some()
            })
            .map(|i| self.nodes[i].own.node())
            .collect()
    }

    /// Every slot served by exactly the node the live, non-leaving members
    /// prefer: the state a quiet cluster must reach.
    pub fn settled(&self) -> bool {
        let sharing: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.up && !n.own.departed() && !n.own.leaving())
            .map(|n| n.own.node())
            .collect();
        Slot::all().all(|slot| {
            let servers = self.servers_of(slot);
            servers.len() == 1 && preferred_owner(slot, &sharing) == Some(servers[0])
        })
    }

    /// Runs the cluster for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut same_instant = 0u32;
        loop {
            let next = self.next_event().filter(|t| *t <= end);
            let Some(at) = next else { break };
            if at <= self.now {
                same_instant += 1;
                if same_instant > 1_000 {
                    self.violation = Some(Violation::Stuck {
                        at_ms: self.elapsed_ms(),
                    });
                    return;
                }
            } else {
                same_instant = 0;
            }
            self.now = self.now.max(at);
            self.step();
            if self.violation.is_some() {
                return;
            }
        }
        self.now = end;
    }

    fn next_event(&self) -> Option<Instant> {
        let packets = self.packets.iter().map(|(t, _)| *t);
        let hand_overs = self.hand_overs.iter().map(|(t, _, _)| *t);
        let wakeups = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up)
            .filter_map(|i| self.nodes[i].own.next_wakeup().map(|w| self.global(i, w)));
        packets.chain(hand_overs).chain(wakeups).min()
    }

    fn step(&mut self) {
        let now = self.now;
        // Packets due, in arrival order.
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.packets.len() {
            if self.packets[i].0 <= now {
                due.push(self.packets.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|(t, _)| *t);
        for (_, packet) in due {
            match packet {
                Packet::Request(node, req) => {
                    let at_ms = self.elapsed_ms();
                    let reply = self.coordinator.sync(at_ms, &req);
                    self.send(node, Packet::Reply(node, reply));
                }
                Packet::Reply(node, reply) => {
                    if self.nodes[node].up && !self.cut(node) {
                        let mut out = Vec::new();
                        let local = self.local(node, now);
                        self.nodes[node].own.synced(local, reply, &mut out);
                        self.record(node, out);
                    }
                }
            }
            if self.violation.is_some() {
                return;
            }
        }
        // Hand-overs finished.
        let mut i = 0;
        while i < self.hand_overs.len() {
            if self.hand_overs[i].0 <= now {
                let (_, node, slot) = self.hand_overs.swap_remove(i);
                if self.nodes[node].up {
                    self.nodes[node].own.handed_over(slot);
                }
            } else {
                i += 1;
            }
        }
        // Ticks.
        for node in 0..self.nodes.len() {
            if !self.nodes[node].up {
                continue;
            }
            let mut out = Vec::new();
            let local = self.local(node, now);
            let req = self.nodes[node].own.tick(local, &mut out);
            self.record(node, out);
            if let Some(req) = req {
                self.send(node, Packet::Request(node, req));
            }
        }
    }

    fn cut(&self, node: usize) -> bool {
        self.nodes[node].cut_until.is_some_and(|t| self.now < t)
    }

    fn send(&mut self, node: usize, packet: Packet) {
        if self.cut(node) || self.rng.random_bool(self.network.loss.clamp(0.0, 1.0)) {
            return;
        }
        let delay_us = self.network.max_delay.as_micros() as u64;
        let delay = Duration::from_micros(self.rng.random_range(0..=delay_us));
        self.packets.push((self.now + delay, packet));
    }

    fn record(&mut self, node: usize, out: Vec<OwnershipEvent>) {
        let id = self.nodes[node].own.node();
        for event in out {
            match &event {
                OwnershipEvent::Acquired { slot, epoch } => {
                    let last = &mut self.last_acquired[slot.index()];
                    if let Some((prev_node, prev)) = *last {
                        let went_back = if prev_node == id {
                            *epoch < prev
                        } else {
                            *epoch <= prev
                        };
                        if went_back && self.violation.is_none() {
                            self.violation = Some(Violation::EpochWentBack {
                                slot: *slot,
                                node: id,
                                epoch: *epoch,
                                previous: prev,
                            });
                        }
                    }
                    *last = Some((id, *epoch));
                    let servers = self.servers_of(*slot);
                    if servers.len() > 1 && self.violation.is_none() {
                        self.violation = Some(Violation::TwoOwners {
                            slot: *slot,
                            nodes: servers,
                            at_ms: self.elapsed_ms(),
                        });
                    }
                }
                OwnershipEvent::Released { slot, .. } => {
                    let most = self.network.max_hand_over.as_micros() as u64;
                    let after = Duration::from_micros(self.rng.random_range(0..=most));
                    self.hand_overs.push((self.now + after, node, *slot));
                }
                OwnershipEvent::Departed => self.nodes[node].up = false,
                _ => {}
            }
            self.events.push((id, event));
        }
    }
}
