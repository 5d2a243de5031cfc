//! The transports: each turns its sockets into [`crate::edge::session::FrameReader`]
//! and [`crate::edge::session::FrameWriter`] halves and hands them to
//! [`crate::edge::session::serve`] with the shared [`crate::edge::Edge`].
//! No session logic lives here.

pub mod quic;
pub mod ws;
