//! The edge: what faces clients. Transports, the session shell (handshake,
//! verification, limits, routing), request decoding, token verification and
//! TLS, sharing one [`Edge`] context, and the settings of each ([`config`]
//! for the listeners and sessions). It never reaches up into `ops`' node
//! state: the node builds the `Edge` and signals it.

pub mod auth;
pub mod config;
pub mod context;
pub mod limits;
pub mod request;
pub mod session;
pub mod tls;
pub mod transport;

pub use context::{Edge, GoAwayTiming};
