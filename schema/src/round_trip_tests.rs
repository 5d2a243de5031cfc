//! Round trips: frames built by [`Encoder`], read back with
//! [`verify_frame`] — sequence numbers stamped into events and replies, and
//! which frames carry a `seq` slot at all.
//!
//! Tests only. They live beside `encode` and `decode` so that neither of
//! those refers to the other; nothing else may depend on this module.

use crate::encode::{seq_slot, stamp_seq, Encoder, WelcomeFields};
use crate::verify_frame;
use crate::wire::{ErrorCode, PresenceStatus};

#[test]
fn stamped_event_carries_each_recipients_seq() {
    let mut enc = Encoder::new();
    let ev = enc.echo_event("u1", b"hi", true);
    let at = ev.seq_at.expect("reliable events are sequenced");
    for seq in [1u64, 42, u64::MAX - 1] {
        let mut copy = ev.bytes.to_vec();
        stamp_seq(&mut copy, at, seq);
        let frame = verify_frame(&copy, 1024).unwrap();
        assert_eq!(frame.seq(), seq);
        assert_eq!(
            frame
                .body_as_echo_event()
                .unwrap()
                .payload()
                .unwrap()
                .bytes(),
            b"hi"
        );
    }
}

#[test]
fn volatile_events_have_no_seq() {
    let mut enc = Encoder::new();
    let ev = enc.echo_event("u1", b"hi", false);
    assert!(ev.seq_at.is_none());
    assert_eq!(verify_frame(&ev.bytes, 1024).unwrap().seq(), 0);
}

#[test]
fn replies_carry_a_seq_slot_and_control_frames_do_not() {
    let mut enc = Encoder::new();
    let replies = [
        enc.echo_reply(7, b"hi", 1, 0),
        enc.chat_left(7, "channel:x"),
        enc.error(7, ErrorCode::RATE_LIMITED, "slow down", true, false),
        enc.set_status(7, PresenceStatus::AWAY, "", false, true),
    ];
    for reply in replies {
        assert_eq!(verify_frame(&reply, 1024).unwrap().seq(), 0, "unstamped");
        let at = seq_slot(&reply).expect("a reply has a seq slot");
        let mut copy = reply.to_vec();
        stamp_seq(&mut copy, at, 42);
        let frame = verify_frame(&copy, 1024).unwrap();
        assert_eq!((frame.request_id(), frame.seq()), (7, 42));
    }
    let unsequenced = [
        enc.error(0, ErrorCode::MALFORMED_FRAME, "bad", false, false),
        enc.ping(0, 3, 1),
        enc.pong(0, 1),
        enc.go_away("bye", 10),
        enc.welcome(1, &WelcomeFields::default()),
        enc.echo_request(7, b"hi", None, false),
        enc.chat_join(7, "channel:x"),
        enc.set_status(7, PresenceStatus::AWAY, "", false, false),
    ];
    for frame in unsequenced {
        assert_eq!(seq_slot(&frame), None);
    }
    for garbage in [&b""[..], b"\xff\xff\xff\xff", &[0u8; 16], b"HDL1HDL1HDL1"] {
        assert_eq!(seq_slot(garbage), None);
    }
}
