//! Huddle's wire schema: the Rust code that flatc generates from `huddle.fbs`
//! (checked in under `generated/`, never edited by hand) plus the framing
//! helpers that the gateway, the SDK and the load generator share.
//!
//! This crate owns the byte layout of a frame (and the numbers a close
//! carries) and nothing else: it never does I/O, never keeps session state,
//! and never decides what a frame means.
//!
//! # Layout
//! - [`wire`]: the generated flatbuffers types (`Frame`, `Body`, every request,
//!   reply and event table, `ErrorCode`).
//! - [`decode`]: verify an inbound buffer and classify what is wrong with it.
//! - [`encode`]: build frames with a reusable builder; events carry the
//!   position of their sequence number so one encoding serves every recipient.
//! - [`close`]: the close codes both transports carry (WebSocket status, QUIC
//!   application error code), derived from the wire error codes in one place.

#[allow(
    unsafe_code,
    unreachable_pub,
    unused_imports,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    mismatched_lifetime_syntaxes,
    clippy::all,
    clippy::pedantic
)]
#[rustfmt::skip]
#[path = "../generated/rust/huddle_generated.rs"]
mod generated;

pub use generated::huddle::wire;

pub mod close;
pub mod decode;
pub mod encode;

pub use close::{close_reason, CloseCode};
pub use decode::{verify_frame, FrameError};
pub use encode::{stamp_seq, Encoder, EventFrame};

/// The protocol version this crate speaks; `Frame.version` and
/// `Hello.protocol_version` must carry it.
pub const PROTOCOL_VERSION: u16 = 1;

/// ALPN protocol id of Huddle over QUIC.
pub const ALPN: &[u8] = b"huddle/1";

/// Default largest frame either side accepts, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// The canonical upper-case name of an error code, as written in the schema.
pub fn error_code_name(code: wire::ErrorCode) -> &'static str {
    code.variant_name().unwrap_or("UNKNOWN")
}
