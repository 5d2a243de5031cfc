//! Chat: the reply and event types of the chat requests (`chat:join`,
//! `chat:leave`, `chat:message`, `chat:typing`, `chat:read`, history), which
//! are methods of [`Client`](crate::Client), and the decoding of the chat
//! tables they carry.
//!
//! Owns the mapping between chat tables and Rust types only. It sits below
//! the events and the client (the requests live in `client::chat`, the event
//! decoding in `event::chat`), so it must never refer to either; it never
//! panics on a frame from the network: missing fields decode to defaults.

use huddle_schema::wire::{self, ChatKind, ContentType};

/// A chat participant as others see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUser {
    /// The user id.
    pub id: String,
    /// The user's login name.
    pub username: String,
    /// The name to show.
    pub display_name: String,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Time-ordered, unique across the cluster.
    pub id: u64,
    /// The chat it was posted in.
    pub chat_id: String,
    /// Who posted it.
    pub sender: ChatUser,
    /// The text (empty for a tombstone).
    pub content: String,
    /// How to read `content`.
    pub content_type: ContentType,
    /// When it was posted (Unix ms).
    pub created_at_ms: i64,
    /// 0 when never edited.
    pub edited_at_ms: i64,
    /// A tombstone: the message was deleted and its content is gone.
    pub deleted: bool,
}

/// The reply to [`Client::chat_join`](crate::Client::chat_join).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatJoined {
    /// The chat joined.
    pub chat_id: String,
    /// Direct, lobby or channel chat.
    pub kind: ChatKind,
    /// Distinct users in the chat, the joiner included.
    pub members: u32,
    /// Only operators may post.
    pub read_only: bool,
    /// The least time between two messages of one member, ms (0: no slow mode).
    pub slow_mode_ms: u32,
    /// This user's read cursor (0 when none).
    pub read_up_to: u64,
}

/// The reply to [`Client::chat_send`](crate::Client::chat_send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatSent {
    /// The id of the posted message (the original one for a duplicate).
    pub message_id: u64,
    /// When it was posted (Unix ms).
    pub created_at_ms: i64,
    /// A retry of an earlier send with the same nonce: nothing was posted again.
    pub duplicate: bool,
}

/// The reply to [`Client::chat_read`](crate::Client::chat_read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatReadAck {
    /// This user's read cursor now: the last message read.
    pub read_up_to: u64,
    /// Messages after the cursor.
    pub unread: u32,
}

/// One row of [`Client::chat_unread`](crate::Client::chat_unread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUnreadCount {
    /// The chat counted.
    pub chat_id: String,
    /// This user's read cursor (0 when none).
    pub read_up_to: u64,
    /// Messages after the cursor.
    pub unread: u32,
    /// The id of the chat's newest message.
    pub last_message_id: u64,
}

/// A page of [`Client::chat_history`](crate::Client::chat_history), newest
/// first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatHistoryPage {
    /// Up to the asked limit, newest first.
    pub messages: Vec<ChatMessage>,
    /// Older messages exist: ask again with `before_id` = the last id here.
    pub has_more: bool,
}

/// A participant; missing fields decode to "".
pub(crate) fn user(u: Option<wire::ChatUser<'_>>) -> ChatUser {
    ChatUser {
        id: u.and_then(|u| u.id()).unwrap_or_default().to_owned(),
        username: u.and_then(|u| u.username()).unwrap_or_default().to_owned(),
        display_name: u
            .and_then(|u| u.display_name())
            .unwrap_or_default()
            .to_owned(),
    }
}

/// A chat message; missing fields decode to "" and zeros.
pub(crate) fn message(m: wire::ChatMessage<'_>) -> ChatMessage {
    ChatMessage {
        id: m.id(),
        chat_id: m.chat_id().unwrap_or_default().to_owned(),
        sender: user(m.sender()),
        content: m.content().unwrap_or_default().to_owned(),
        content_type: m.content_type(),
        created_at_ms: m.created_at_ms(),
        edited_at_ms: m.edited_at_ms(),
        deleted: m.deleted(),
    }
}
