//! Fuzzes the edge's one request decoder: bytes that pass `verify_frame`
//! go through `huddle::edge::request::Request::from_frame`, exactly as a
//! session does with every frame after the handshake. Never decides what
//! a request does (that is the shard core's).
//!
//! Invariants: nothing panics; a decoded request names the body it came
//! in, its kind follows from that body (`Hello` is the handshake's,
//! heartbeats and typing are signals, everything else a call), and its
//! `Debug` walk reads every field it borrowed from the frame; a refusal
//! answers MALFORMED_FRAME with a message a developer can read.

#![no_main]

use huddle::edge::request::{Request, RequestKind};
use huddle_schema::wire::{Body, ErrorCode};
use huddle_schema::{verify_frame, DEFAULT_MAX_FRAME_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = verify_frame(data, DEFAULT_MAX_FRAME_BYTES) else {
        return;
    };
    match Request::from_frame(&frame) {
        Ok(request) => {
            assert_eq!(request.body(), frame.body_type(), "{request:?}");
            assert!(!request.name().is_empty());
            let expected = match frame.body_type() {
                Body::Hello => RequestKind::Hello,
                Body::Ping | Body::Pong | Body::ChatTyping => RequestKind::Signal,
                _ => RequestKind::Call,
            };
            assert_eq!(request.kind(), expected, "{request:?}");
            assert!(!format!("{request:?}").is_empty());
        }
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::MALFORMED_FRAME);
            assert!(!e.to_string().is_empty());
        }
    }
});
