//! [`Event`]: what happened on a session, as the [`crate::EventStream`]
//! delivers it, and the decoding of server event frames into it.
//!
//! The enum lives here, below the driver that produces events and the client
//! that hands them out; each child module decodes one feature's event frames
//! (`chat`, `social`, `lobby`, `matchmaking`) into the reply and event types
//! of that feature's public module. This module owns that mapping only: it
//! never touches a connection or session state, and never panics on a frame
//! from the network (missing fields decode to defaults).

mod chat;
mod lobby;
mod matchmaking;
mod social;

use huddle_schema::wire::{ErrorCode, Frame};

/// Something that happened on the session, in order.
///
/// Every `seq` field is the event's reliable sequence number: a reliable
/// event is delivered exactly once, replays after a resume included.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An `EchoEvent`. `seq` is its reliable sequence number, or 0 when it
    /// was volatile. A reliable event is delivered exactly once, replays
    /// included.
    Echo {
        /// The user id of the sender.
        from_user: String,
        /// The payload as sent.
        payload: Vec<u8>,
        /// The reliable sequence number, or 0 for a volatile event.
        seq: u64,
    },
    /// `chat:message`: a message in a joined chat (the sender's own too).
    ChatMessage {
        /// The new message.
        message: crate::chat::ChatMessage,
        /// The event's reliable sequence number (delivered exactly once).
        seq: u64,
    },
    /// `user:status`: a user this session follows changed status (or came
    /// online, or went offline).
    UserStatus {
        /// Whose status changed.
        user_id: String,
        /// The new status (OFFLINE when they went offline or invisible).
        status: huddle_schema::wire::PresenceStatus,
        /// The status text ("" for none).
        text: String,
        /// When the status changed (Unix ms).
        updated_at_ms: i64,
        /// The event's reliable sequence number (delivered exactly once).
        seq: u64,
    },
    /// `chat:message:updated`: a message was edited.
    ChatMessageUpdated {
        /// The message as it is now.
        message: crate::chat::ChatMessage,
        /// The event's reliable sequence number (delivered exactly once).
        seq: u64,
    },
    /// `chat:message:deleted`: a message became a tombstone.
    ChatMessageDeleted {
        /// The chat the message was in.
        chat_id: String,
        /// The deleted message's id.
        message_id: u64,
        /// The user id of whoever deleted it (the sender or an operator).
        deleted_by: String,
        /// The event's reliable sequence number (delivered exactly once).
        seq: u64,
    },
    /// `chat:member:joined` / `chat:member:left`.
    ChatMember {
        /// The chat joined or left.
        chat_id: String,
        /// The member.
        user: crate::chat::ChatUser,
        /// True for `joined`, false for `left`.
        joined: bool,
        /// The event's reliable sequence number (delivered exactly once).
        seq: u64,
    },
    /// `chat:typing` (volatile: may be shed under pressure).
    ChatTyping {
        /// The chat typed in.
        chat_id: String,
        /// Who is typing.
        user: crate::chat::ChatUser,
        /// Started (true) or stopped (false) typing.
        typing: bool,
    },
    /// `chat:read`: another member's read cursor moved.
    ChatRead {
        /// The chat read.
        chat_id: String,
        /// Whose cursor moved.
        user_id: String,
        /// The id of the last message they read.
        read_up_to: u64,
        /// The event's reliable sequence number (delivered exactly once).
        seq: u64,
    },
    /// `friend:update`: this user's relation to `user_id` changed (a request
    /// sent or received, accepted, rejected, cancelled, a friend removed, a
    /// block or unblock by this user). `relation` is as this user sees it.
    FriendUpdate {
        /// The other user.
        user_id: String,
        /// The relation now, as this user sees it.
        relation: huddle_schema::wire::Relation,
        /// When the current relation began (Unix ms).
        since_ms: i64,
        /// The event's reliable sequence number (delivered exactly once).
        seq: u64,
    },
    /// `notification:new`: a notification for this user (every session of
    /// the user gets it).
    Notification {
        /// The new notification.
        notification: crate::social::Notification,
        /// The event's reliable sequence number (delivered exactly once).
        seq: u64,
    },
    /// `notification:count`: this user's notification counts after any
    /// change (new, read, deleted).
    NotificationCount {
        /// This user's notifications in all.
        total: u32,
        /// Of those, unread.
        unread: u32,
        /// The event's reliable sequence number (delivered exactly once).
        seq: u64,
    },
    /// A lobby this user is in (or was just kicked from) changed:
    /// `lobby:member:joined`, `lobby:member:left`, `lobby:host:changed`,
    /// `lobby:member:ready`, `lobby:ready` (everyone ready), back to open,
    /// `lobby:kicked` (this user), a member kicked, `lobby:update` and
    /// started (with the new state), closed, a member disconnected or
    /// reconnected; see [`crate::lobby::LobbyEvent`] for what each kind
    /// carries. Every session of every member gets it. `event.version` is
    /// bumped per change: a gap means events were missed, so call
    /// [`Client::lobby_get`](crate::Client::lobby_get) for a snapshot.
    Lobby {
        /// What changed.
        event: crate::lobby::LobbyEvent,
        /// The event's reliable sequence number (delivered exactly once).
        seq: u64,
    },
    /// A matchmaking ticket of this user changed: `matchmaking:status`
    /// (volatile, to subscribed sessions), `found` (a ready check),
    /// `matched` (with the match's lobby and team), `cancelled`, `timeout`,
    /// requeued, removed, or a party ticket started by the lobby's host; see
    /// [`crate::matchmaking::MatchmakingEvent`].
    Matchmaking {
        /// What changed.
        event: crate::matchmaking::MatchmakingEvent,
        /// The reliable sequence number, or 0 for a (volatile) STATUS.
        seq: u64,
    },
    /// The connection dropped; the client is reconnecting unless a
    /// [`Event::Closed`] follows. In-flight requests keep waiting (within
    /// their timeout): after a resume each gets its one reply, replayed or
    /// answered to a re-send; they fail with
    /// [`ClientError::Disconnected`](crate::ClientError::Disconnected) only
    /// when the session cannot be resumed or reconnecting is off. `close` is
    /// how the gateway closed it (e.g. `SLOW_CONSUMER` as close code 4108),
    /// when it did.
    Disconnected {
        /// Why the connection ended, in words.
        reason: String,
        /// How the gateway closed it; `None` when the connection ended on
        /// this side (silence, a write failure, a test drop) or the close
        /// carried nothing.
        close: Option<crate::transport::PeerClose>,
    },
    /// Connected again. With `resumed`, the session carried on and `replayed`
    /// missed events and replies follow; otherwise a [`Event::SessionReset`]
    /// came first.
    Reconnected {
        /// The old session carried on.
        resumed: bool,
        /// How many missed events and replies the gateway replays.
        replayed: u32,
    },
    /// Resuming failed and the client started a fresh session: events of the
    /// old one may have been missed and requests in flight failed with
    /// [`ClientError::Disconnected`](crate::ClientError::Disconnected) (they
    /// may or may not have been carried out), so re-sync application state
    /// (re-query presence, rejoin, look for the lobby you were creating, …).
    /// [`Event::Reconnected`] follows.
    SessionReset,
    /// The gateway is going away; the client reconnects (with resume) after
    /// `reconnect_after_ms` plus a random extra of its own (up to half as
    /// much again, at least up to 250 ms), so clients told the same delay
    /// do not return at once. [`Event::Disconnected`] follows when the
    /// connection closes.
    GoAway {
        /// Why, as the gateway put it.
        reason: String,
        /// The gateway's delay before reconnecting, ms.
        reconnect_after_ms: u32,
    },
    /// A connection-level error from the gateway (an `Error` with
    /// `request_id` 0), or the error that stopped reconnection (just before
    /// [`Event::Closed`]).
    ServerError {
        /// The wire error code.
        code: ErrorCode,
        /// The error's text.
        message: String,
    },
    /// The client is closed for good:
    /// [`Client::close`](crate::Client::close) was called, every
    /// [`Client`](crate::Client) handle was dropped, reconnecting is off, or
    /// the gateway refused the token. The last event.
    Closed,
}

/// The event a verified server frame carries, if it is one: an `EchoEvent`,
/// or a chat, presence, friends, notification, lobby or matchmaking event.
/// `seq` is the frame's sequence number (0 for volatile events). Anything
/// else (replies, pings, errors, `GoAway`) is `None`.
pub(crate) fn decode(frame: &Frame<'_>, seq: u64) -> Option<Event> {
    match frame.body_as_echo_event() {
        Some(echo) => Some(Event::Echo {
            from_user: echo.from_user().unwrap_or_default().to_owned(),
            payload: echo
                .payload()
                .map(|p| p.bytes().to_vec())
                .unwrap_or_default(),
            seq,
        }),
        None => chat::chat_event(frame, seq)
            .or_else(|| social::social_event(frame, seq))
            .or_else(|| lobby::lobby_event(frame, seq))
            .or_else(|| matchmaking::matchmaking_event(frame, seq)),
    }
}
