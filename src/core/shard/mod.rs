//! The shard core: what one shard owns and how it answers a message,
//! without a thread, a mailbox or a clock of its own.

pub mod msg;

pub use msg::*;
