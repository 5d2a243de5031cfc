//! Fuzzes inbound frame verification: arbitrary bytes go through
//! `huddle_schema::verify_frame` exactly as the gateway calls it, and every
//! frame that verifies is read through every accessor the gateway could
//! touch (the generated `Debug` walks every field of the body table and of
//! each nested table and vector). Never decides what a frame means.
//!
//! Invariants: nothing panics (nor trips the address sanitizer); a verified
//! frame carries the protocol version and a known, present body whose
//! typed accessor matches its tag; refusals report a wire error code and
//! only request ids the frame carried; `seq_slot`/`stamp_seq` (which the
//! outbox runs on encoded frames) agree with the `seq` accessor.

#![no_main]

use std::fmt::Write;

use huddle_schema::encode::seq_slot;
use huddle_schema::wire::{Body, ErrorCode};
use huddle_schema::PROTOCOL_VERSION;
use huddle_schema::{stamp_seq, verify_frame, FrameError, DEFAULT_MAX_FRAME_BYTES};
use libfuzzer_sys::fuzz_target;

/// Discards what it is given; counts it so the walk is not optimised away.
struct Sink(usize);

impl Write for Sink {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn read_u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

fuzz_target!(|data: &[u8]| {
    // Whatever the bytes, the helpers the outbox runs on frames never panic.
    let slot = seq_slot(data);
    if let Some(at) = slot {
        let mut copy = data.to_vec();
        stamp_seq(&mut copy, at, 0x0102_0304_0506_0708);
        assert_eq!(read_u64_at(&copy, at as usize), Some(0x0102_0304_0506_0708));
    }

    match verify_frame(data, DEFAULT_MAX_FRAME_BYTES) {
        Ok(frame) => {
            assert_eq!(frame.version(), PROTOCOL_VERSION);
            let body = frame.body_type();
            assert!(body != Body::NONE && body.0 <= Body::ENUM_MAX, "{body:?}");
            assert!(body.variant_name().is_some());
            assert!(frame.body().is_some());
            let request_id = frame.request_id();
            let seq = frame.seq();
            // The seq helpers read the same field the accessor does.
            match slot {
                Some(at) => assert_eq!(read_u64_at(data, at as usize), Some(seq)),
                None => assert_eq!(seq, 0, "a frame with a seq field has a seq slot"),
            }
            // The typed accessor of the tag's table exists (the gateway
            // dispatches on it); a walk of the whole frame reads every
            // field of every table the body reaches.
            assert!(
                typed_body_present(&frame, body),
                "tag {body:?} without its table"
            );
            let mut sink = Sink(0);
            write!(sink, "{frame:?}").expect("a sink never fails");
            assert!(sink.0 > 0);
            let _ = request_id;
        }
        Err(e) => {
            let code = e.code();
            assert!(
                matches!(
                    code,
                    ErrorCode::FRAME_TOO_LARGE
                        | ErrorCode::MALFORMED_FRAME
                        | ErrorCode::UNSUPPORTED_VERSION
                ),
                "{code:?}"
            );
            // The message a client sees renders for every refusal.
            let _ = e.to_string();
            if let FrameError::TooLarge { .. } | FrameError::Malformed(_) = e {
                assert_eq!(e.request_id(), 0);
            }
        }
    }
});

/// Whether the typed accessor for `body` returns its table: the gateway
/// reads requests through these, and a tag whose table is missing would
/// be silently dropped.
fn typed_body_present(frame: &huddle_schema::wire::Frame<'_>, body: Body) -> bool {
    match body {
        Body::Hello => frame.body_as_hello().is_some(),
        Body::Welcome => frame.body_as_welcome().is_some(),
        Body::Error => frame.body_as_error().is_some(),
        Body::Ping => frame.body_as_ping().is_some(),
        Body::Pong => frame.body_as_pong().is_some(),
        Body::GoAway => frame.body_as_go_away().is_some(),
        Body::EchoRequest => frame.body_as_echo_request().is_some(),
        Body::EchoReply => frame.body_as_echo_reply().is_some(),
        Body::EchoEvent => frame.body_as_echo_event().is_some(),
        Body::PresenceQuery => frame.body_as_presence_query().is_some(),
        Body::PresenceList => frame.body_as_presence_list().is_some(),
        Body::ChatJoin => frame.body_as_chat_join().is_some(),
        Body::ChatJoined => frame.body_as_chat_joined().is_some(),
        Body::ChatLeave => frame.body_as_chat_leave().is_some(),
        Body::ChatLeft => frame.body_as_chat_left().is_some(),
        Body::ChatSend => frame.body_as_chat_send().is_some(),
        Body::ChatSent => frame.body_as_chat_sent().is_some(),
        Body::ChatTyping => frame.body_as_chat_typing().is_some(),
        Body::ChatRead => frame.body_as_chat_read().is_some(),
        Body::ChatReadAck => frame.body_as_chat_read_ack().is_some(),
        Body::ChatHistory => frame.body_as_chat_history().is_some(),
        Body::ChatHistoryPage => frame.body_as_chat_history_page().is_some(),
        Body::ChatMessageEvent => frame.body_as_chat_message_event().is_some(),
        Body::ChatMemberEvent => frame.body_as_chat_member_event().is_some(),
        Body::ChatTypingEvent => frame.body_as_chat_typing_event().is_some(),
        Body::ChatReadEvent => frame.body_as_chat_read_event().is_some(),
        Body::ChatEdit => frame.body_as_chat_edit().is_some(),
        Body::ChatDelete => frame.body_as_chat_delete().is_some(),
        Body::ChatUpdated => frame.body_as_chat_updated().is_some(),
        Body::ChatMute => frame.body_as_chat_mute().is_some(),
        Body::ChatMuted => frame.body_as_chat_muted().is_some(),
        Body::ChatMessageUpdatedEvent => frame.body_as_chat_message_updated_event().is_some(),
        Body::ChatMessageDeletedEvent => frame.body_as_chat_message_deleted_event().is_some(),
        Body::ChatUnread => frame.body_as_chat_unread().is_some(),
        Body::ChatUnreadCounts => frame.body_as_chat_unread_counts().is_some(),
        Body::SetStatus => frame.body_as_set_status().is_some(),
        Body::StatusSet => frame.body_as_status_set().is_some(),
        Body::Follow => frame.body_as_follow().is_some(),
        Body::Unfollow => frame.body_as_unfollow().is_some(),
        Body::UserStatusEvent => frame.body_as_user_status_event().is_some(),
        Body::FriendOp => frame.body_as_friend_op().is_some(),
        Body::FriendOpDone => frame.body_as_friend_op_done().is_some(),
        Body::FriendList => frame.body_as_friend_list().is_some(),
        Body::FriendListPage => frame.body_as_friend_list_page().is_some(),
        Body::FriendEvent => frame.body_as_friend_event().is_some(),
        Body::NotificationEvent => frame.body_as_notification_event().is_some(),
        Body::NotificationCountEvent => frame.body_as_notification_count_event().is_some(),
        Body::NotificationList => frame.body_as_notification_list().is_some(),
        Body::NotificationPage => frame.body_as_notification_page().is_some(),
        Body::NotificationMarkRead => frame.body_as_notification_mark_read().is_some(),
        Body::NotificationDelete => frame.body_as_notification_delete().is_some(),
        Body::NotificationCounts => frame.body_as_notification_counts().is_some(),
        Body::LobbyCreate => frame.body_as_lobby_create().is_some(),
        Body::LobbyJoin => frame.body_as_lobby_join().is_some(),
        Body::LobbyUpdate => frame.body_as_lobby_update().is_some(),
        Body::LobbyOp => frame.body_as_lobby_op().is_some(),
        Body::LobbyReply => frame.body_as_lobby_reply().is_some(),
        Body::LobbyLeft => frame.body_as_lobby_left().is_some(),
        Body::LobbyInvited => frame.body_as_lobby_invited().is_some(),
        Body::LobbyList => frame.body_as_lobby_list().is_some(),
        Body::LobbyListPage => frame.body_as_lobby_list_page().is_some(),
        Body::LobbyEvent => frame.body_as_lobby_event().is_some(),
        Body::MatchmakingStart => frame.body_as_matchmaking_start().is_some(),
        Body::MatchmakingOp => frame.body_as_matchmaking_op().is_some(),
        Body::MatchmakingReply => frame.body_as_matchmaking_reply().is_some(),
        Body::MatchmakingEvent => frame.body_as_matchmaking_event().is_some(),
        _ => false,
    }
}
