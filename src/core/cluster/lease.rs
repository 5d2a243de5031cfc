//! The coordinator's side of the ownership protocol, as a pure model: what
//! one atomic `sync` does to the membership and the slot table. The Redis
//! coordinator (`backend::coordinator`) runs the same rules as one Lua
//! script; the simulation runs this model; a shared suite holds both to the
//! same answers. Owns the rules of who may claim a slot; never a socket or
//! a clock (the coordinator's time comes in as `now_ms`).

use std::collections::BTreeMap;

use super::{NodeId, Slot, SLOTS};

/// A slot's fencing epoch: strictly greater at every change of owner, also
/// across a coordinator that lost its data (epochs start from the
/// coordinator's clock in microseconds). Writes on a slot's behalf carry it.
pub type Epoch = u64;

/// Who owns a slot, and since which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub node: NodeId,
    pub epoch: Epoch,
}

/// A live node as the coordinator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub node: NodeId,
    /// Draining: it keeps its membership while it hands its slots over, and
    /// no node counts it when sharing slots out.
    pub leaving: bool,
}

/// One node's round trip to the coordinator: renew (or create) its
/// membership for `ttl_ms`, give slots back, claim slots. Applied
/// atomically, releases before claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// Matches the reply to the request (one in flight per node).
    pub id: u64,
    pub node: NodeId,
    pub ttl_ms: u64,
    pub leaving: bool,
    /// The node's last sync: its membership ends now (it has stopped acting
    /// on every slot; any it still holds are freed).
    pub depart: bool,
    /// Slots handed back, each with the epoch it was held under (a release
    /// naming an older epoch changes nothing).
    pub releases: Vec<(Slot, Epoch)>,
    /// Slots the node wants. Granted when the slot is free, its owner is no
    /// longer a member, or the node owns it already (same epoch).
    pub claims: Vec<Slot>,
    /// The table version the node holds (0: none): an unchanged table is
    /// not sent again.
    pub known_version: u64,
}

/// What the coordinator answers: the state after the sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReply {
    pub id: u64,
    /// True when this sync created the membership (a first join, or a
    /// return after the membership expired or the coordinator lost it).
    pub registered: bool,
    /// Every live member, in node order.
    pub members: Vec<Member>,
    /// The version of the slot table and of the member set: it changes
    /// whenever either does (a grant, a release, a join, a leave, a
    /// membership expiring, a node starting to leave), and only grows, also
    /// across a coordinator that lost its data.
    pub version: u64,
    /// The owner of every slot (`SLOTS` entries, by slot number), or `None`
    /// when `version` is the one the request named.
    pub owners: Option<Vec<Option<Owner>>>,
}

/// The coordinator's state: memberships with their expiry, the slot table,
/// and when this generation of the data began.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    /// When the coordinator first saw a sync with no data (a fresh or a
    /// restarted Redis): no free slot is granted until a lease TTL later,
    /// so that an owner acting on a lease granted before the loss has
    /// stopped.
    generation_ms: Option<u64>,
    members: BTreeMap<NodeId, (u64, bool)>,
    owners: Vec<Option<Owner>>,
    last_epoch: Epoch,
    version: u64,
}

impl Default for LeaseTable {
    fn default() -> Self {
        Self {
            generation_ms: None,
            members: BTreeMap::new(),
            owners: vec![None; usize::from(SLOTS)],
            last_epoch: 0,
            version: 0,
        }
    }
}

impl LeaseTable {
    /// Applies one sync at the coordinator's time `now_ms`.
    pub fn sync(&mut self, now_ms: u64, req: &SyncRequest) -> SyncReply {
        let before = self.members.len();
        self.members.retain(|_, (expires, _)| *expires > now_ms);
        let mut changed = self.members.len() != before;
        let generation = *self.generation_ms.get_or_insert(now_ms);
        let registered = !self.members.contains_key(&req.node);
        if req.depart {
            changed |= self.members.remove(&req.node).is_some();
            for owner in &mut self.owners {
                if owner.is_some_and(|o| o.node == req.node) {
                    *owner = None;
                    changed = true;
                }
            }
        } else {
            let was = self
                .members
                .insert(req.node, (now_ms.saturating_add(req.ttl_ms), req.leaving));
            changed |= was.is_none_or(|(_, leaving)| leaving != req.leaving);
        }
        for (slot, epoch) in &req.releases {
            let entry = &mut self.owners[slot.index()];
            if *entry
                == Some(Owner {
                    node: req.node,
                    epoch: *epoch,
                })
            {
                *entry = None;
                changed = true;
            }
        }
        let settled = now_ms >= generation.saturating_add(req.ttl_ms);
        if !req.depart {
            for slot in &req.claims {
                let entry = &mut self.owners[slot.index()];
                let free = match entry {
                    None => settled,
                    Some(o) => o.node != req.node && !self.members.contains_key(&o.node),
                };
                if free {
                    let epoch = (self.last_epoch + 1).max(now_ms.saturating_mul(1000));
                    self.last_epoch = epoch;
                    *entry = Some(Owner {
                        node: req.node,
                        epoch,
                    });
                    changed = true;
                }
            }
        }
        if changed || self.version == 0 {
            self.version = (self.version + 1).max(now_ms.saturating_mul(1000));
        }
        SyncReply {
            id: req.id,
            registered,
            members: self
                .members
                .iter()
                .map(|(node, (_, leaving))| Member {
                    node: *node,
                    leaving: *leaving,
                })
                .collect(),
            version: self.version,
            owners: (req.known_version != self.version).then(|| self.owners.clone()),
        }
    }

    /// The coordinator loses everything (a Redis restarted without
    /// persistence, or a failover to a replica that had not caught up).
    pub fn lose_everything(&mut self) {
        *self = Self::default();
    }
}
