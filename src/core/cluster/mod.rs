//! The cluster's sans-IO core: how keys map to slots, how slots are shared
//! out over the live nodes, and the lease protocol that gives every slot at
//! most one owner at a time. Owns the rules; never a socket, a Redis
//! connection, a thread or a clock (the coordinator's side is modelled in
//! [`lease`], the Redis one lives in `backend::coordinator`).
//!
//! The pieces, in the order a node meets them:
//! - [`slots`]: a key's [`Slot`] (`xxh3 % SLOTS`) and the node a slot
//!   should live on (rendezvous hashing over the members not leaving);
//! - [`lease`]: one atomic sync with the coordinator — membership with a
//!   TTL, releases, claims granted only when the slot is free or its owner
//!   is no longer a member, fencing epochs that only grow;
//! - [`ownership`]: one node's state machine: the slots it serves, its
//!   lease deadline, planned hand-over, suspension when the lease lapses.

pub mod lease;
pub mod ownership;
pub mod slots;

#[cfg(test)]
mod tests;

pub use lease::{Epoch, LeaseTable, Member, Owner, SyncReply, SyncRequest};
pub use ownership::{Ownership, OwnershipEvent, OwnershipSettings};
pub use slots::{preferred_owner, slot_of, Slot, SLOTS};

/// A gateway process in the cluster: random at every start, so that a
/// restarted process never inherits the slots (or the sessions) of the one
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
