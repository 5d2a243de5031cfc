//! The edge: what faces clients. Transports, the session shell (handshake,
//! verification, limits, routing), token verification and TLS, and the
//! settings of each ([`config`] for the listeners and sessions).

pub mod auth;
pub mod config;
pub mod limits;
pub mod session;
pub mod tls;
pub mod transport;
