//! Chat: typed requests (`chat:join`, `chat:leave`, `chat:message`,
//! `chat:typing`, `chat:read`, history) on [`Client`], the reply types, and
//! the decoding of chat events for the event stream.
//!
//! Owns the mapping between chat frames and Rust types only; connection
//! handling stays in the driver.

use huddle_schema::wire::{self, ChatKind, ContentType, Frame};

use crate::client::{reply_frame, unexpected, Client, Event};
use crate::error::ClientError;

/// A chat participant as others see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUser {
    pub id: String,
    pub username: String,
    pub display_name: String,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Time-ordered, unique across the cluster.
    pub id: u64,
    pub chat_id: String,
    pub sender: ChatUser,
    pub content: String,
    pub content_type: ContentType,
    pub created_at_ms: i64,
    /// 0 when never edited.
    pub edited_at_ms: i64,
    /// A tombstone: the message was deleted and its content is gone.
    pub deleted: bool,
}

/// The reply to [`Client::chat_join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatJoined {
    pub chat_id: String,
    pub kind: ChatKind,
    /// Distinct users in the chat, the joiner included.
    pub members: u32,
    pub read_only: bool,
    pub slow_mode_ms: u32,
    /// This user's read cursor (0 when none).
    pub read_up_to: u64,
}

/// The reply to [`Client::chat_send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatSent {
    pub message_id: u64,
    pub created_at_ms: i64,
    /// A retry of an earlier send with the same nonce: nothing was posted again.
    pub duplicate: bool,
}

/// The reply to [`Client::chat_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatReadAck {
    pub read_up_to: u64,
    /// Messages after the cursor.
    pub unread: u32,
}

/// One row of [`Client::chat_unread`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUnreadCount {
    pub chat_id: String,
    pub read_up_to: u64,
    pub unread: u32,
    pub last_message_id: u64,
}

/// A page of [`Client::chat_history`], newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatHistoryPage {
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

fn message(m: wire::ChatMessage<'_>) -> ChatMessage {
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

impl Client {
    /// `chat:join`: `direct:<a>:<b>`, `lobby:<id>` or `channel:<name>`.
    /// Refusals: CHAT_NOT_FOUND, ACCESS_DENIED, JOIN_ERROR.
    pub async fn chat_join(&self, chat_id: &str) -> Result<ChatJoined, ClientError> {
        let buf = self.request(|enc, id| enc.chat_join(id, chat_id)).await?;
        let frame = reply_frame(&buf)?;
        let j = frame
            .body_as_chat_joined()
            .ok_or_else(|| unexpected(&frame, "ChatJoined"))?;
        Ok(ChatJoined {
            chat_id: j.chat_id().unwrap_or_default().to_owned(),
            kind: j.kind(),
            members: j.members(),
            read_only: j.read_only(),
            slow_mode_ms: j.slow_mode_ms(),
            read_up_to: j.read_up_to(),
        })
    }

    /// `chat:leave`. NOT_IN_CHAT when not joined.
    pub async fn chat_leave(&self, chat_id: &str) -> Result<(), ClientError> {
        let buf = self.request(|enc, id| enc.chat_leave(id, chat_id)).await?;
        let frame = reply_frame(&buf)?;
        frame
            .body_as_chat_left()
            .map(|_| ())
            .ok_or_else(|| unexpected(&frame, "ChatLeft"))
    }

    /// `chat:message`. Pass a `nonce` (unique per message, e.g. a UUID) to
    /// make retries safe: resending with the same nonce returns the original
    /// message id with `duplicate` set. Refusals: NOT_IN_CHAT, MESSAGE_ERROR,
    /// ACCESS_DENIED (read-only), RATE_LIMITED (slow mode).
    pub async fn chat_send(
        &self,
        chat_id: &str,
        content: &str,
        content_type: ContentType,
        nonce: Option<&str>,
    ) -> Result<ChatSent, ClientError> {
        let buf = self
            .request(|enc, id| enc.chat_send(id, chat_id, content, content_type, nonce))
            .await?;
        let frame = reply_frame(&buf)?;
        let s = frame
            .body_as_chat_sent()
            .ok_or_else(|| unexpected(&frame, "ChatSent"))?;
        Ok(ChatSent {
            message_id: s.message_id(),
            created_at_ms: s.created_at_ms(),
            duplicate: s.duplicate(),
        })
    }

    /// `chat:typing`: a volatile signal with no reply (throttled by the
    /// gateway, never stored).
    pub async fn chat_typing(&self, chat_id: &str, typing: bool) -> Result<(), ClientError> {
        self.signal(|enc| enc.chat_typing(chat_id, typing)).await
    }

    /// `chat:read`: advance this user's read cursor (0 = to the newest).
    pub async fn chat_read(
        &self,
        chat_id: &str,
        message_id: u64,
    ) -> Result<ChatReadAck, ClientError> {
        let buf = self
            .request(|enc, id| enc.chat_read(id, chat_id, message_id))
            .await?;
        let frame = reply_frame(&buf)?;
        let r = frame
            .body_as_chat_read_ack()
            .ok_or_else(|| unexpected(&frame, "ChatReadAck"))?;
        Ok(ChatReadAck {
            read_up_to: r.read_up_to(),
            unread: r.unread(),
        })
    }

    /// Edit one of this user's messages (operators: any) among the chat's
    /// recent messages; members get [`Event::ChatMessageUpdated`]. Returns
    /// the edit time.
    pub async fn chat_edit(
        &self,
        chat_id: &str,
        message_id: u64,
        content: &str,
    ) -> Result<i64, ClientError> {
        self.amend(chat_id, message_id, Some(content)).await
    }

    /// Delete one of this user's messages (operators: any): it becomes a
    /// tombstone; members get [`Event::ChatMessageDeleted`].
    pub async fn chat_delete(&self, chat_id: &str, message_id: u64) -> Result<i64, ClientError> {
        self.amend(chat_id, message_id, None).await
    }

    async fn amend(
        &self,
        chat_id: &str,
        message_id: u64,
        content: Option<&str>,
    ) -> Result<i64, ClientError> {
        let buf = self
            .request(|enc, id| enc.chat_edit(id, chat_id, message_id, content))
            .await?;
        let frame = reply_frame(&buf)?;
        frame
            .body_as_chat_updated()
            .map(|u| u.at_ms())
            .ok_or_else(|| unexpected(&frame, "ChatUpdated"))
    }

    /// Operators: mute `user_id` in a chat for `duration_ms` (0 lifts the
    /// mute). Returns when the mute ends (Unix ms; 0 when lifted).
    pub async fn chat_mute(
        &self,
        chat_id: &str,
        user_id: &str,
        duration_ms: u32,
    ) -> Result<i64, ClientError> {
        let buf = self
            .request(|enc, id| enc.chat_mute(id, chat_id, user_id, duration_ms))
            .await?;
        let frame = reply_frame(&buf)?;
        frame
            .body_as_chat_muted()
            .map(|m| m.until_ms())
            .ok_or_else(|| unexpected(&frame, "ChatMuted"))
    }

    /// Unread counts of up to 100 chats this user may read, in the order
    /// asked. ACCESS_DENIED when one of them is not theirs to read.
    pub async fn chat_unread(
        &self,
        chat_ids: &[&str],
    ) -> Result<Vec<ChatUnreadCount>, ClientError> {
        let buf = self
            .request(|enc, id| enc.chat_unread(id, chat_ids))
            .await?;
        let frame = reply_frame(&buf)?;
        let counts = frame
            .body_as_chat_unread_counts()
            .ok_or_else(|| unexpected(&frame, "ChatUnreadCounts"))?;
        Ok(counts
            .chats()
            .map(|rows| {
                rows.iter()
                    .map(|r| ChatUnreadCount {
                        chat_id: r.chat_id().unwrap_or_default().to_owned(),
                        read_up_to: r.read_up_to(),
                        unread: r.unread(),
                        last_message_id: r.last_message_id(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A page of history, newest first: messages older than `before_id`
    /// (0 = from the newest), at most `limit` (1..=100).
    pub async fn chat_history(
        &self,
        chat_id: &str,
        before_id: u64,
        limit: u16,
    ) -> Result<ChatHistoryPage, ClientError> {
        let buf = self
            .request(|enc, id| enc.chat_history(id, chat_id, before_id, limit))
            .await?;
        let frame = reply_frame(&buf)?;
        let page = frame
            .body_as_chat_history_page()
            .ok_or_else(|| unexpected(&frame, "ChatHistoryPage"))?;
        Ok(ChatHistoryPage {
            messages: page
                .messages()
                .map(|v| v.iter().map(message).collect())
                .unwrap_or_default(),
            has_more: page.has_more(),
        })
    }
}
