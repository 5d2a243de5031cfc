//! The runtime: the shard threads, their bounded mailboxes and the key
//! routing, a thin loop around the sans-IO shard core that carries its
//! effects out against the backend.

pub mod cluster;
pub mod shards;
