//! The sans-IO core: the engines, the shard core that runs them, each
//! session's outbox, and the encoding of engine output into frames. Nothing
//! here owns a socket, a thread, a channel receiver or a clock: time and
//! messages come in, effects and messages go out.

pub mod cluster;
pub mod engine;
pub mod outbox;
pub mod shard;
pub mod sim;
pub mod wire;
