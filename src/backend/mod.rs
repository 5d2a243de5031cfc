//! The backend: what is kept (the history store behind the acknowledgement
//! journal) and what is delivered to the outside (the webhook outbox). It
//! knows the engines' records and nothing of shards, sessions or frames.

pub mod store;
pub mod webhook;
