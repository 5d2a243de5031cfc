//! Huddle, a binary-protocol real-time gateway for multiplayer games.
//!
//! Clients connect over WebSocket or QUIC and speak flatbuffers frames
//! (`huddle-schema`); sessions feed share-nothing shards, one thread per
//! core, each running sans-IO engines. See `ARCHITECTURE.md` for the map,
//! a frame's walk from socket to engine to socket, and the invariants.
//!
//! # Layout: one folder per layer
//! Layers point one way: a module imports only from its own layer or the
//! layers listed before it here (`tests/layers.rs` fails CI otherwise), and
//! sibling modules never import each other in a circle.
//! - [`telemetry`]: the Prometheus series every layer counts into.
//! - [`core`]: sans-IO. The engines (`core::engine`), the shard core that
//!   runs them (`core::shard`), each session's outbox, the encoding of
//!   engine output into frames (`core::wire`), and the deterministic
//!   multi-shard simulation (`core::sim`). No socket, thread, mailbox or
//!   clock.
//! - [`backend`]: what is kept and delivered: the history store behind the
//!   acknowledgement journal, and the webhook outbox. Knows the engines'
//!   records, nothing of shards, sessions or frames.
//! - [`runtime`]: the shard threads, their bounded mailboxes and the loop
//!   that carries a shard core's outputs out against the backend.
//! - [`edge`]: what faces clients: transports, the session shell
//!   (handshake, verification, limits, routing), request decoding, tokens,
//!   TLS, and their settings.
//! - [`ops`]: configuration, the admin HTTP API, the node's state and its
//!   start-up, drain and shutdown.

pub mod telemetry;

pub mod core;

pub mod backend;

pub mod runtime;

pub mod edge;

pub mod ops;
