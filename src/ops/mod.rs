//! Operations: configuration, the admin HTTP API, and the gateway's wiring,
//! start-up, drain and ordered shutdown.

pub mod admin;
pub mod config;
pub mod gateway;
