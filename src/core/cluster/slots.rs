//! Keys to slots and slots to their preferred node: pure arithmetic, the
//! same on every node. Owns the slot count and the hash; never who owns a
//! slot now (that is [`super::Ownership`]'s, under a lease).

use super::NodeId;

/// How many slots the key space is cut into. Fixed for the life of a
/// cluster (every node must agree): enough for a fair spread over dozens of
/// nodes, few enough that the whole table fits one reply (a few KiB).
pub const SLOTS: u16 = 1024;

/// One slot of the key space, `0..SLOTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u16);

impl Slot {
    /// The slot numbered `n`, when `n < SLOTS`.
    pub fn new(n: u16) -> Option<Self> {
        (n < SLOTS).then_some(Self(n))
    }

    /// Its number, `0..SLOTS`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Every slot, in order.
    pub fn all() -> impl Iterator<Item = Slot> {
        (0..SLOTS).map(Slot)
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "slot {}", self.0)
    }
}

/// The slot a key hashes to. The same bytes give the same slot on every
/// node and every version (the hash is xxh3-64, seed 0).
pub fn slot_of(key: &[u8]) -> Slot {
    Slot((xxhash_rust::xxh3::xxh3_64(key) % u64::from(SLOTS)) as u16)
}

/// The node a slot should live on among `members` (rendezvous hashing: the
/// member with the highest `hash(node, slot)`). Every node computes the
/// same answer from the same member list, a join moves only the slots the
/// newcomer wins (about `1/N` of them) and a leave moves only the leaver's.
/// `None` when there are no members.
pub fn preferred_owner(slot: Slot, members: &[NodeId]) -> Option<NodeId> {
    members
        .iter()
        .copied()
        .max_by_key(|node| (weight(*node, slot), *node))
}

fn weight(node: NodeId, slot: Slot) -> u64 {
    let mut bytes = [0u8; 10];
    bytes[..8].copy_from_slice(&node.0.to_le_bytes());
    bytes[8..].copy_from_slice(&slot.0.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}
