//! Operations: configuration, the admin HTTP API, the node's shared state
//! and drain (`node`), and the gateway's wiring, start-up and ordered
//! shutdown.

pub mod admin;
pub mod config;
pub mod gateway;
pub mod node;
