//! The edge: what faces clients. Transports, the session shell (handshake,
//! verification, limits, routing), token verification and TLS.

pub mod auth;
pub mod limits;
pub mod request;
pub mod session;
pub mod tls;
pub mod transport;
