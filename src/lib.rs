//! Huddle, a binary-protocol real-time gateway for multiplayer games.
//!
//! Clients connect over WebSocket or QUIC and speak flatbuffers frames
//! (`huddle-schema`); sessions feed share-nothing engine shards, one thread
//! per core. See `ARCHITECTURE.md` for the map and its invariants.
//!
//! # Layout
//! - [`config`]: TOML + `HUDDLE_*` configuration with embedded defaults.
//! - [`auth`]: JWT verification (one pinned algorithm) and dev-token minting.
//! - [`engine`]: sans-IO state machines (the user directory so far).
//! - [`shard`]: shard threads, mailboxes, and carrying out engine effects.
//! - [`outbox`]: each session's bounded queue of encoded frames and its
//!   replay buffer for resume.
//! - [`session`]: the per-connection shell: handshake, verification, limits,
//!   heartbeats, routing, batched writes.
//! - [`transport`]: WebSocket and QUIC adapters for the session shell.
//! - [`limits`]: the per-connection token bucket.
//! - [`metrics`] and [`admin`]: Prometheus series and the admin HTTP API.
//! - [`tls`]: certificates (configured, or self-signed for dev).
//! - [`gateway`]: wiring, start-up and ordered shutdown.

pub mod backend;
pub mod core;
pub mod edge;
pub mod ops;
pub mod runtime;
pub mod telemetry;
