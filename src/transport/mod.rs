//! The transports: each turns its sockets into [`crate::session::FrameReader`]
//! and [`crate::session::FrameWriter`] halves and hands them to
//! [`crate::session::serve`]. No session logic lives here.

pub mod quic;
pub mod ws;
