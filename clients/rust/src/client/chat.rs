//! The chat requests on [`Client`]: `chat:join`, `chat:leave`,
//! `chat:message`, `chat:typing`, `chat:read`, edits, deletions, mutes,
//! unread counts and history.
//!
//! Owns building each request and decoding its reply into the types of
//! [`crate::chat`]; the request plumbing is the parent's, and it never
//! touches the connection itself.

use huddle_schema::wire::ContentType;

use super::Client;
use crate::chat::{message, ChatHistoryPage, ChatJoined, ChatReadAck, ChatSent, ChatUnreadCount};
use crate::error::ClientError;
use crate::reply::{reply_frame, unexpected};

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
    /// recent messages; members get
    /// [`Event::ChatMessageUpdated`](crate::Event::ChatMessageUpdated).
    /// Returns the edit time.
    pub async fn chat_edit(
        &self,
        chat_id: &str,
        message_id: u64,
        content: &str,
    ) -> Result<i64, ClientError> {
        self.amend(chat_id, message_id, Some(content)).await
    }

    /// Delete one of this user's messages (operators: any): it becomes a
    /// tombstone; members get
    /// [`Event::ChatMessageDeleted`](crate::Event::ChatMessageDeleted).
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
