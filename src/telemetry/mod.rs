//! Telemetry, the bottom layer: the Prometheus series every layer counts
//! into (pre-registered atomics, no I/O on the hot path). Imports nothing
//! else from the crate.

pub mod metrics;
