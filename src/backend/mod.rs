//! The backend: what is kept (the history store behind the acknowledgement
//! journal), what is delivered to the outside (the webhook outbox) and the
//! cluster's coordinator in Redis. It knows the engines' records and the
//! cluster protocol's messages, and nothing of shards, sessions or frames.

pub mod coordinator;
pub mod store;
pub mod webhook;
