//! Fuzzes the handshake's first-frame check: arbitrary bytes go through
//! `huddle::edge::session::handshake::parse_hello`, the pure part of the
//! handshake (everything before the authenticator and the shard). Never
//! authenticates or attaches anything.
//!
//! Invariants: nothing panics; an accepted first frame verifies, is a
//! `Hello` of this protocol version under a non-zero request id that the
//! result carries; a refusal carries a handshake error code, a message,
//! and either request id 0 or the frame's own; a resume is either ids that
//! parse or RESUME_FAILED under the Hello's request id.

#![no_main]

use huddle::edge::session::handshake::parse_hello;
use huddle_schema::wire::{Body, ErrorCode};
use huddle_schema::{verify_frame, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let verified = verify_frame(data, DEFAULT_MAX_FRAME_BYTES).ok();
    match parse_hello(data, DEFAULT_MAX_FRAME_BYTES) {
        Ok(hello) => {
            let frame = verified.expect("an accepted Hello verifies");
            assert_eq!(frame.body_type(), Body::Hello);
            assert_ne!(hello.request_id, 0);
            assert_eq!(hello.request_id, frame.request_id());
            let body = frame.body_as_hello().expect("a Hello body");
            assert_eq!(body.protocol_version(), PROTOCOL_VERSION);
            assert_eq!(hello.token, body.token());
            match (&hello.resume, body.resume()) {
                (None, None) => {}
                (Some(Ok(ticket)), Some(r)) => {
                    assert_eq!(ticket.last_seq, r.last_seq());
                    let session = r.session_id().and_then(|s| u64::from_str_radix(s, 16).ok());
                    assert_eq!(session, Some(ticket.session));
                }
                (Some(Err(refusal)), Some(_)) => {
                    assert_eq!(refusal.code, ErrorCode::RESUME_FAILED);
                    assert_eq!(refusal.request_id, hello.request_id);
                }
                (ours, theirs) => panic!("resume {ours:?} from {theirs:?}"),
            }
        }
        Err(refusal) => {
            assert!(
                matches!(
                    refusal.code,
                    ErrorCode::MALFORMED_FRAME
                        | ErrorCode::FRAME_TOO_LARGE
                        | ErrorCode::UNSUPPORTED_VERSION
                ),
                "{refusal:?}"
            );
            assert!(!refusal.message.is_empty());
            match &verified {
                Some(frame) => {
                    assert!(refusal.request_id == frame.request_id());
                    assert_eq!(refusal.verified_body, Some(frame.body_type()));
                }
                None => assert_eq!(refusal.verified_body, None),
            }
        }
    }
});
