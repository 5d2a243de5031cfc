//! Decoding of chat and presence event frames (`chat:message`, its edits
//! and deletions, `chat:member:*`, `chat:typing`, `chat:read`,
//! `user:status`) into [`Event`]s. Never panics on a frame from the network.

use huddle_schema::wire::Frame;

use super::Event;
use crate::chat::{message, user};

/// The chat event a server frame carries, if it is one. `seq` is the
/// frame's sequence number (0 for volatile events).
pub(crate) fn chat_event(frame: &Frame<'_>, seq: u64) -> Option<Event> {
    if let Some(e) = frame.body_as_chat_message_event() {
        return Some(Event::ChatMessage {
            message: message(e.message()?),
            seq,
        });
    }
    if let Some(e) = frame.body_as_user_status_event() {
        return Some(Event::UserStatus {
            user_id: e.user_id().unwrap_or_default().to_owned(),
            status: e.status(),
            text: e.text().unwrap_or_default().to_owned(),
            updated_at_ms: e.updated_at_ms(),
            seq,
        });
    }
    if let Some(e) = frame.body_as_chat_message_updated_event() {
        return Some(Event::ChatMessageUpdated {
            message: message(e.message()?),
            seq,
        });
    }
    if let Some(e) = frame.body_as_chat_message_deleted_event() {
        return Some(Event::ChatMessageDeleted {
            chat_id: e.chat_id().unwrap_or_default().to_owned(),
            message_id: e.message_id(),
            deleted_by: e.deleted_by().unwrap_or_default().to_owned(),
            seq,
        });
    }
    if let Some(e) = frame.body_as_chat_member_event() {
        return Some(Event::ChatMember {
            chat_id: e.chat_id().unwrap_or_default().to_owned(),
            user: user(e.user()),
            joined: e.joined(),
            seq,
        });
    }
    if let Some(e) = frame.body_as_chat_typing_event() {
        return Some(Event::ChatTyping {
            chat_id: e.chat_id().unwrap_or_default().to_owned(),
            user: user(e.user()),
            typing: e.typing(),
        });
    }
    if let Some(e) = frame.body_as_chat_read_event() {
        return Some(Event::ChatRead {
            chat_id: e.chat_id().unwrap_or_default().to_owned(),
            user_id: e.user_id().unwrap_or_default().to_owned(),
            read_up_to: e.read_up_to(),
            seq,
        });
    }
    None
}
