//! Outbound frame building with one reusable [`flatbuffers::FlatBufferBuilder`]
//! per owner (a shard, a connection, a client).
//!
//! Events are encoded once per fan-out: [`EventFrame`] remembers where the
//! frame's `seq` field sits, and each recipient's writer stamps its own
//! sequence number into its copy with [`stamp_seq`]. Replies to requests carry
//! a `seq` slot too (0 until stamped; [`seq_slot`] finds it), so the gateway
//! numbers and replays them like reliable events; control frames (`Welcome`,
//! `Ping`, `Pong`, `GoAway`, an `Error` with request id 0) have none. Nothing
//! here allocates beyond the one `Bytes` per frame, and nothing here does I/O.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use crate::wire::{self, Body, ChatKind, ContentType, ErrorCode, PresenceStatus};
use crate::PROTOCOL_VERSION;

mod lobby;
mod matchmaking;
mod social;
pub use lobby::{
    LobbyCreateFields, LobbyEventFields, LobbyListFields, LobbyStateFields, LobbySummaryFields,
    LobbyUpdateFields, MemberFields,
};
pub use matchmaking::{MatchmakingEventFields, MatchmakingStartFields, TicketFields};
pub use social::{ChannelFields, FriendEntry, NotificationFields};

/// An event encoded once for many recipients.
#[derive(Clone, Debug)]
pub struct EventFrame {
    /// The encoded frame, `seq` holding a placeholder when `seq_at` is set.
    pub bytes: Bytes,
    /// Byte offset of the little-endian `u64` `Frame.seq`, for reliable events;
    /// `None` for volatile events, which carry no sequence number.
    pub seq_at: Option<u32>,
    /// The body type, for metrics.
    pub body: Body,
}

/// Writes `seq` into a copy of an [`EventFrame`] at `seq_at`.
///
/// Does nothing when the offset is out of bounds (it never is for frames from
/// [`Encoder`]), so a caller cannot panic through it.
pub fn stamp_seq(frame: &mut [u8], seq_at: u32, seq: u64) {
    let at = seq_at as usize;
    if let Some(slot) = frame.get_mut(at..at + 8) {
        slot.copy_from_slice(&seq.to_le_bytes());
    }
}

/// Where a frame's little-endian `u64` `Frame.seq` sits, when the frame
/// carries that field: reliable events and replies from [`Encoder`] do;
/// control frames, volatile events and requests do not.
///
/// Reads only the root table's vtable, every offset bounds-checked, so any
/// input is safe (garbage gives `None` or a slot that [`stamp_seq`] ignores).
pub fn seq_slot(frame: &[u8]) -> Option<u32> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(frame.get(at..at + 4)?.try_into().ok()?))
    };
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_le_bytes(frame.get(at..at + 2)?.try_into().ok()?))
    };
    let table = u32_at(0)? as usize;
    // The table starts with a signed offset back to its vtable (negative
    // when the vtable is shared with a table built earlier).
    let back = i64::from(u32_at(table)? as i32);
    let vtable = usize::try_from(table as i64 - back).ok()?;
    let vtable_len = usize::from(u16_at(vtable)?);
    let slot = usize::from(wire::Frame::VT_SEQ);
    if slot + 2 > vtable_len {
        return None;
    }
    let field = usize::from(u16_at(vtable + slot)?);
    let at = table.checked_add(field)?;
    if field == 0 || at + 8 > frame.len() {
        return None;
    }
    u32::try_from(at).ok()
}

/// Arguments of a [`wire::Welcome`].
#[derive(Debug, Clone, Default)]
pub struct WelcomeFields<'a> {
    /// The session id granted.
    pub session_id: &'a str,
    /// The user id from the token.
    pub user_id: &'a str,
    /// The login name from the token.
    pub username: &'a str,
    /// The name to show, from the token.
    pub display_name: &'a str,
    /// The token's roles.
    pub roles: &'a [String],
    /// What the client presents, with `session_id`, to resume after a drop.
    pub resume_token: &'a str,
    /// The client pings at least this often, ms.
    pub heartbeat_ms: u32,
    /// Silence after which the gateway closes the session, ms.
    pub heartbeat_timeout_ms: u32,
    /// The gateway's clock (Unix ms).
    pub server_time_ms: i64,
    /// This Welcome resumed an earlier session.
    pub resumed: bool,
    /// How many missed events and replies follow on resume.
    pub replayed: u32,
    /// The largest frame the gateway accepts.
    pub max_frame_bytes: u32,
    /// How long a dropped session can still be resumed, ms.
    pub resume_window_ms: u32,
    /// On resume: the highest request id the gateway had read on the
    /// session before (0 on a fresh session).
    pub last_request_id: u64,
}

/// Resume fields of a [`wire::Hello`].
#[derive(Debug, Clone, Copy)]
pub struct ResumeFields<'a> {
    /// The session to resume.
    pub session_id: &'a str,
    /// That session's resume token, from its `Welcome`.
    pub resume_token: &'a str,
    /// Highest `Frame.seq` the client has seen (0 when none).
    pub last_seq: u64,
}

/// One row of a [`wire::PresenceList`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// Whose presence this is.
    pub user_id: String,
    /// ONLINE, AWAY, BUSY, IN_GAME or OFFLINE.
    pub status: PresenceStatus,
    /// Their open connections.
    pub connections: u32,
    /// When they were last active (Unix ms; 0 when never).
    pub last_active_ms: i64,
    /// Custom status text ("" when none).
    pub text: String,
}

/// Who sent or did something in a chat.
#[derive(Debug, Clone, Copy)]
pub struct UserFields<'a> {
    /// The user id.
    pub id: &'a str,
    /// The login name.
    pub username: &'a str,
    /// The name to show.
    pub display_name: &'a str,
}

/// One chat message.
#[derive(Debug, Clone, Copy)]
pub struct MessageFields<'a> {
    /// Time-ordered, unique across nodes.
    pub id: u64,
    /// The chat it was posted in.
    pub chat_id: &'a str,
    /// Who posted it.
    pub sender: UserFields<'a>,
    /// The text (empty for a tombstone).
    pub content: &'a str,
    /// How to read `content`.
    pub content_type: ContentType,
    /// When it was posted (Unix ms).
    pub created_at_ms: i64,
    /// 0 when never edited.
    pub edited_at_ms: i64,
    /// A tombstone: the message was deleted.
    pub deleted: bool,
}

/// Arguments of a [`wire::ChatJoined`].
#[derive(Debug, Clone, Copy)]
pub struct JoinedFields<'a> {
    /// The chat joined.
    pub chat_id: &'a str,
    /// Direct, lobby or channel chat.
    pub kind: ChatKind,
    /// Distinct users in the chat, the joiner included.
    pub members: u32,
    /// Only operators may post.
    pub read_only: bool,
    /// The least time between two messages of one member, ms (0: none).
    pub slow_mode_ms: u32,
    /// The joiner's read cursor (0 when none).
    pub read_up_to: u64,
}

/// One row of a [`wire::ChatUnreadCounts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadRow {
    /// The chat counted.
    pub chat_id: String,
    /// The reader's cursor (0 when none).
    pub read_up_to: u64,
    /// Messages after the cursor.
    pub unread: u32,
    /// The id of the chat's newest message.
    pub last_message_id: u64,
}

/// A reusable frame builder. Not `Sync`: each owner keeps its own.
pub struct Encoder {
    fbb: FlatBufferBuilder<'static>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An empty builder (512 bytes to start; it grows and is reused).
    pub fn new() -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(512),
        }
    }

    fn finish_frame(
        &mut self,
        request_id: u64,
        seq: u64,
        body_type: Body,
        body: WIPOffset<UnionWIPOffset>,
    ) -> Bytes {
        let frame = wire::Frame::create(
            &mut self.fbb,
            &wire::FrameArgs {
                version: PROTOCOL_VERSION,
                request_id,
                seq,
                body_type,
                body: Some(body),
            },
        );
        wire::finish_frame_buffer(&mut self.fbb, frame);
        let bytes = Bytes::copy_from_slice(self.fbb.finished_data());
        self.fbb.reset();
        bytes
    }

    /// Finishes a reply to request `request_id`: its `seq` is written even
    /// though it is 0 (flatbuffers leaves default values out), so that the
    /// gateway's outbox can stamp the session's next number into the slot
    /// [`seq_slot`] finds. An unstamped reply reads as `seq` 0.
    fn finish_reply(
        &mut self,
        request_id: u64,
        body_type: Body,
        body: WIPOffset<UnionWIPOffset>,
    ) -> Bytes {
        // Only the Frame table's own scalars are built while forced; the
        // others (version, request_id, body_type) are never 0 here anyway.
        self.fbb.force_defaults(true);
        let frame = wire::Frame::create(
            &mut self.fbb,
            &wire::FrameArgs {
                version: PROTOCOL_VERSION,
                request_id,
                seq: 0,
                body_type,
                body: Some(body),
            },
        );
        self.fbb.force_defaults(false);
        wire::finish_frame_buffer(&mut self.fbb, frame);
        let bytes = Bytes::copy_from_slice(self.fbb.finished_data());
        self.fbb.reset();
        bytes
    }

    /// Finishes an event. Reliable events get a placeholder `seq` whose
    /// position is recorded for [`stamp_seq`].
    fn finish_event(
        &mut self,
        reliable: bool,
        body_type: Body,
        body: WIPOffset<UnionWIPOffset>,
    ) -> EventFrame {
        let seq = if reliable { u64::MAX } else { 0 };
        let bytes = self.finish_frame(0, seq, body_type, body);
        let seq_at = if reliable { seq_slot(&bytes) } else { None };
        EventFrame {
            bytes,
            seq_at,
            body: body_type,
        }
    }

    /// `Hello`: the first frame of a connection, with the token, the client
    /// name, the protocol version, and `resume` to resume a dropped session.
    pub fn hello(
        &mut self,
        request_id: u64,
        token: Option<&str>,
        client: &str,
        protocol_version: u16,
        resume: Option<ResumeFields<'_>>,
        datagrams: bool,
    ) -> Bytes {
        let token = token.map(|t| self.fbb.create_string(t));
        let client = self.fbb.create_string(client);
        let resume = resume.map(|r| {
            let session_id = self.fbb.create_string(r.session_id);
            let resume_token = self.fbb.create_string(r.resume_token);
            wire::Resume::create(
                &mut self.fbb,
                &wire::ResumeArgs {
                    session_id: Some(session_id),
                    resume_token: Some(resume_token),
                    last_seq: r.last_seq,
                },
            )
        });
        let body = wire::Hello::create(
            &mut self.fbb,
            &wire::HelloArgs {
                token,
                client: Some(client),
                protocol_version,
                resume,
                datagrams,
            },
        );
        self.finish_frame(request_id, 0, Body::Hello, body.as_union_value())
    }

    /// `Welcome`: the gateway's answer to a good `Hello`.
    pub fn welcome(&mut self, request_id: u64, w: &WelcomeFields<'_>) -> Bytes {
        let id = self.fbb.create_string(w.user_id);
        let username = self.fbb.create_string(w.username);
        let display_name = self.fbb.create_string(w.display_name);
        let roles: Vec<_> = w.roles.iter().map(|r| self.fbb.create_string(r)).collect();
        let roles = self.fbb.create_vector(&roles);
        let user = wire::UserInfo::create(
            &mut self.fbb,
            &wire::UserInfoArgs {
                id: Some(id),
                username: Some(username),
                display_name: Some(display_name),
                roles: Some(roles),
            },
        );
        let session_id = self.fbb.create_string(w.session_id);
        let resume_token = self.fbb.create_string(w.resume_token);
        let body = wire::Welcome::create(
            &mut self.fbb,
            &wire::WelcomeArgs {
                session_id: Some(session_id),
                user: Some(user),
                resume_token: Some(resume_token),
                heartbeat_ms: w.heartbeat_ms,
                heartbeat_timeout_ms: w.heartbeat_timeout_ms,
                server_time_ms: w.server_time_ms,
                resumed: w.resumed,
                replayed: w.replayed,
                max_frame_bytes: w.max_frame_bytes,
                resume_window_ms: w.resume_window_ms,
                last_request_id: w.last_request_id,
            },
        );
        self.finish_frame(request_id, 0, Body::Welcome, body.as_union_value())
    }

    /// `Error`: the reply to a failed request, or (`request_id` 0) a
    /// connection-level error; `closing` says the gateway closes the connection
    /// after it.
    pub fn error(
        &mut self,
        request_id: u64,
        code: ErrorCode,
        message: &str,
        retryable: bool,
        closing: bool,
    ) -> Bytes {
        let message = self.fbb.create_string(message);
        let body = wire::Error::create(
            &mut self.fbb,
            &wire::ErrorArgs {
                code,
                message: Some(message),
                retryable,
                closing,
            },
        );
        if request_id == 0 {
            // A connection-level error: a control frame, never sequenced.
            self.finish_frame(0, 0, Body::Error, body.as_union_value())
        } else {
            self.finish_reply(request_id, Body::Error, body.as_union_value())
        }
    }

    /// `Ping`: a heartbeat; a client's also acknowledges the events seen up to
    /// `ack_seq`.
    pub fn ping(&mut self, request_id: u64, ack_seq: u64, time_ms: i64) -> Bytes {
        let body = wire::Ping::create(&mut self.fbb, &wire::PingArgs { ack_seq, time_ms });
        self.finish_frame(request_id, 0, Body::Ping, body.as_union_value())
    }

    /// `Pong`: the answer to a `Ping`, echoing its `time_ms`.
    pub fn pong(&mut self, request_id: u64, time_ms: i64) -> Bytes {
        let body = wire::Pong::create(&mut self.fbb, &wire::PongArgs { time_ms });
        self.finish_frame(request_id, 0, Body::Pong, body.as_union_value())
    }

    /// `GoAway`: the gateway is going away; reconnect (with resume) after
    /// `reconnect_after_ms`.
    pub fn go_away(&mut self, reason: &str, reconnect_after_ms: u32) -> Bytes {
        let reason = self.fbb.create_string(reason);
        let body = wire::GoAway::create(
            &mut self.fbb,
            &wire::GoAwayArgs {
                reason: Some(reason),
                reconnect_after_ms,
            },
        );
        self.finish_frame(0, 0, Body::GoAway, body.as_union_value())
    }

    /// An echo request; with `to_user`, the echo is also delivered to every
    /// connection of that user (`volatile`: it may be shed).
    pub fn echo_request(
        &mut self,
        request_id: u64,
        payload: &[u8],
        to_user: Option<&str>,
        volatile: bool,
    ) -> Bytes {
        let payload = self.fbb.create_vector(payload);
        let to_user = to_user.map(|u| self.fbb.create_string(u));
        let body = wire::EchoRequest::create(
            &mut self.fbb,
            &wire::EchoRequestArgs {
                payload: Some(payload),
                to_user,
                volatile,
            },
        );
        self.finish_frame(request_id, 0, Body::EchoRequest, body.as_union_value())
    }

    /// The reply to an echo request: the payload, the shard that handled it and
    /// how many connections the event was queued to.
    pub fn echo_reply(
        &mut self,
        request_id: u64,
        payload: &[u8],
        shard: u16,
        delivered: u32,
    ) -> Bytes {
        let payload = self.fbb.create_vector(payload);
        let body = wire::EchoReply::create(
            &mut self.fbb,
            &wire::EchoReplyArgs {
                payload: Some(payload),
                shard,
                delivered,
            },
        );
        self.finish_reply(request_id, Body::EchoReply, body.as_union_value())
    }

    /// An `EchoEvent`; `reliable` events are sequenced and replayed on
    /// resume, volatile ones are not.
    pub fn echo_event(&mut self, from_user: &str, payload: &[u8], reliable: bool) -> EventFrame {
        let from_user = self.fbb.create_string(from_user);
        let payload = self.fbb.create_vector(payload);
        let body = wire::EchoEvent::create(
            &mut self.fbb,
            &wire::EchoEventArgs {
                from_user: Some(from_user),
                payload: Some(payload),
            },
        );
        self.finish_event(reliable, Body::EchoEvent, body.as_union_value())
    }

    /// Asks for the presence of `user_ids`.
    pub fn presence_query<S: AsRef<str>>(&mut self, request_id: u64, user_ids: &[S]) -> Bytes {
        let ids: Vec<_> = user_ids
            .iter()
            .map(|u| self.fbb.create_string(u.as_ref()))
            .collect();
        let ids = self.fbb.create_vector(&ids);
        let body = wire::PresenceQuery::create(
            &mut self.fbb,
            &wire::PresenceQueryArgs {
                user_ids: Some(ids),
            },
        );
        self.finish_frame(request_id, 0, Body::PresenceQuery, body.as_union_value())
    }

    fn user_presence(&mut self, u: &PresenceEntry) -> WIPOffset<wire::UserPresence<'static>> {
        let user_id = self.fbb.create_string(&u.user_id);
        let text = (!u.text.is_empty()).then(|| self.fbb.create_string(&u.text));
        wire::UserPresence::create(
            &mut self.fbb,
            &wire::UserPresenceArgs {
                user_id: Some(user_id),
                status: u.status,
                connections: u.connections,
                last_active_ms: u.last_active_ms,
                text,
            },
        )
    }

    /// The reply to a presence query or follow: one row per user.
    pub fn presence_list(&mut self, request_id: u64, users: &[PresenceEntry]) -> Bytes {
        let rows: Vec<_> = users.iter().map(|u| self.user_presence(u)).collect();
        let rows = self.fbb.create_vector(&rows);
        let body = wire::PresenceList::create(
            &mut self.fbb,
            &wire::PresenceListArgs { users: Some(rows) },
        );
        self.finish_reply(request_id, Body::PresenceList, body.as_union_value())
    }

    fn chat_user(&mut self, u: UserFields<'_>) -> WIPOffset<wire::ChatUser<'static>> {
        let id = self.fbb.create_string(u.id);
        let username = self.fbb.create_string(u.username);
        let display_name = self.fbb.create_string(u.display_name);
        wire::ChatUser::create(
            &mut self.fbb,
            &wire::ChatUserArgs {
                id: Some(id),
                username: Some(username),
                display_name: Some(display_name),
            },
        )
    }

    fn chat_message(&mut self, m: &MessageFields<'_>) -> WIPOffset<wire::ChatMessage<'static>> {
        let chat_id = self.fbb.create_string(m.chat_id);
        let sender = self.chat_user(m.sender);
        let content = self.fbb.create_string(m.content);
        wire::ChatMessage::create(
            &mut self.fbb,
            &wire::ChatMessageArgs {
                id: m.id,
                chat_id: Some(chat_id),
                sender: Some(sender),
                content: Some(content),
                content_type: m.content_type,
                created_at_ms: m.created_at_ms,
                edited_at_ms: m.edited_at_ms,
                deleted: m.deleted,
            },
        )
    }

    /// A request or reply whose only field is a chat id: `body` is one of
    /// ChatJoin, ChatLeave or ChatLeft.
    fn chat_id_only(&mut self, request_id: u64, body: Body, chat_id: &str) -> Bytes {
        let chat_id = Some(self.fbb.create_string(chat_id));
        let table = match body {
            Body::ChatJoin => {
                wire::ChatJoin::create(&mut self.fbb, &wire::ChatJoinArgs { chat_id })
                    .as_union_value()
            }
            Body::ChatLeave => {
                wire::ChatLeave::create(&mut self.fbb, &wire::ChatLeaveArgs { chat_id })
                    .as_union_value()
            }
            _ => wire::ChatLeft::create(&mut self.fbb, &wire::ChatLeftArgs { chat_id })
                .as_union_value(),
        };
        if body == Body::ChatLeft {
            self.finish_reply(request_id, body, table)
        } else {
            self.finish_frame(request_id, 0, body, table)
        }
    }

    /// `chat:join` request.
    pub fn chat_join(&mut self, request_id: u64, chat_id: &str) -> Bytes {
        self.chat_id_only(request_id, Body::ChatJoin, chat_id)
    }

    /// `chat:leave` request.
    pub fn chat_leave(&mut self, request_id: u64, chat_id: &str) -> Bytes {
        self.chat_id_only(request_id, Body::ChatLeave, chat_id)
    }

    /// The reply to `chat:leave`.
    pub fn chat_left(&mut self, request_id: u64, chat_id: &str) -> Bytes {
        self.chat_id_only(request_id, Body::ChatLeft, chat_id)
    }

    /// The reply to `chat:join`.
    pub fn chat_joined(&mut self, request_id: u64, j: &JoinedFields<'_>) -> Bytes {
        let chat_id = self.fbb.create_string(j.chat_id);
        let body = wire::ChatJoined::create(
            &mut self.fbb,
            &wire::ChatJoinedArgs {
                chat_id: Some(chat_id),
                kind: j.kind,
                members: j.members,
                read_only: j.read_only,
                slow_mode_ms: j.slow_mode_ms,
                read_up_to: j.read_up_to,
            },
        );
        self.finish_reply(request_id, Body::ChatJoined, body.as_union_value())
    }

    /// `chat:message` request; a `nonce` makes retries safe.
    pub fn chat_send(
        &mut self,
        request_id: u64,
        chat_id: &str,
        content: &str,
        content_type: ContentType,
        nonce: Option<&str>,
    ) -> Bytes {
        let chat_id = self.fbb.create_string(chat_id);
        let content = self.fbb.create_string(content);
        let nonce = nonce.map(|n| self.fbb.create_string(n));
        let body = wire::ChatSend::create(
            &mut self.fbb,
            &wire::ChatSendArgs {
                chat_id: Some(chat_id),
                content: Some(content),
                content_type,
                nonce,
            },
        );
        self.finish_frame(request_id, 0, Body::ChatSend, body.as_union_value())
    }

    /// The reply to `chat:message`: the message's id and time, `duplicate` for
    /// a retry with the same nonce.
    pub fn chat_sent(
        &mut self,
        request_id: u64,
        chat_id: &str,
        message_id: u64,
        created_at_ms: i64,
        duplicate: bool,
    ) -> Bytes {
        let chat_id = self.fbb.create_string(chat_id);
        let body = wire::ChatSent::create(
            &mut self.fbb,
            &wire::ChatSentArgs {
                chat_id: Some(chat_id),
                message_id,
                created_at_ms,
                duplicate,
            },
        );
        self.finish_reply(request_id, Body::ChatSent, body.as_union_value())
    }

    /// A typing signal (request_id 0: no reply).
    pub fn chat_typing(&mut self, chat_id: &str, typing: bool) -> Bytes {
        let chat_id = self.fbb.create_string(chat_id);
        let body = wire::ChatTyping::create(
            &mut self.fbb,
            &wire::ChatTypingArgs {
                chat_id: Some(chat_id),
                typing,
            },
        );
        self.finish_frame(0, 0, Body::ChatTyping, body.as_union_value())
    }

    /// `chat:read` request: move the read cursor to `message_id` (0: to the
    /// newest).
    pub fn chat_read(&mut self, request_id: u64, chat_id: &str, message_id: u64) -> Bytes {
        let chat_id = self.fbb.create_string(chat_id);
        let body = wire::ChatRead::create(
            &mut self.fbb,
            &wire::ChatReadArgs {
                chat_id: Some(chat_id),
                message_id,
            },
        );
        self.finish_frame(request_id, 0, Body::ChatRead, body.as_union_value())
    }

    /// The reply to `chat:read`: the cursor now and the messages after it.
    pub fn chat_read_ack(
        &mut self,
        request_id: u64,
        chat_id: &str,
        read_up_to: u64,
        unread: u32,
    ) -> Bytes {
        let chat_id = self.fbb.create_string(chat_id);
        let body = wire::ChatReadAck::create(
            &mut self.fbb,
            &wire::ChatReadAckArgs {
                chat_id: Some(chat_id),
                read_up_to,
                unread,
            },
        );
        self.finish_reply(request_id, Body::ChatReadAck, body.as_union_value())
    }

    /// A history request: messages older than `before_id` (0: from the newest),
    /// at most `limit`.
    pub fn chat_history(
        &mut self,
        request_id: u64,
        chat_id: &str,
        before_id: u64,
        limit: u16,
    ) -> Bytes {
        let chat_id = self.fbb.create_string(chat_id);
        let body = wire::ChatHistory::create(
            &mut self.fbb,
            &wire::ChatHistoryArgs {
                chat_id: Some(chat_id),
                before_id,
                limit,
            },
        );
        self.finish_frame(request_id, 0, Body::ChatHistory, body.as_union_value())
    }

    /// The reply to a history request, newest first.
    pub fn chat_history_page(
        &mut self,
        request_id: u64,
        chat_id: &str,
        messages: &[MessageFields<'_>],
        has_more: bool,
    ) -> Bytes {
        let rows: Vec<_> = messages.iter().map(|m| self.chat_message(m)).collect();
        let rows = self.fbb.create_vector(&rows);
        let chat_id = self.fbb.create_string(chat_id);
        let body = wire::ChatHistoryPage::create(
            &mut self.fbb,
            &wire::ChatHistoryPageArgs {
                chat_id: Some(chat_id),
                messages: Some(rows),
                has_more,
            },
        );
        self.finish_reply(request_id, Body::ChatHistoryPage, body.as_union_value())
    }

    /// chat:message, reliable, encoded once for every member.
    pub fn chat_message_event(&mut self, m: &MessageFields<'_>) -> EventFrame {
        let message = self.chat_message(m);
        let body = wire::ChatMessageEvent::create(
            &mut self.fbb,
            &wire::ChatMessageEventArgs {
                message: Some(message),
            },
        );
        self.finish_event(true, Body::ChatMessageEvent, body.as_union_value())
    }

    /// `chat:message:updated`, reliable.
    pub fn chat_message_updated_event(&mut self, m: &MessageFields<'_>) -> EventFrame {
        let message = self.chat_message(m);
        let body = wire::ChatMessageUpdatedEvent::create(
            &mut self.fbb,
            &wire::ChatMessageUpdatedEventArgs {
                message: Some(message),
            },
        );
        self.finish_event(true, Body::ChatMessageUpdatedEvent, body.as_union_value())
    }

    /// `chat:message:deleted`, reliable.
    pub fn chat_message_deleted_event(
        &mut self,
        chat_id: &str,
        message_id: u64,
        deleted_by: &str,
    ) -> EventFrame {
        let chat_id = self.fbb.create_string(chat_id);
        let deleted_by = self.fbb.create_string(deleted_by);
        let body = wire::ChatMessageDeletedEvent::create(
            &mut self.fbb,
            &wire::ChatMessageDeletedEventArgs {
                chat_id: Some(chat_id),
                message_id,
                deleted_by: Some(deleted_by),
            },
        );
        self.finish_event(true, Body::ChatMessageDeletedEvent, body.as_union_value())
    }

    /// Edit (`content` given) or delete (`None`) a message.
    pub fn chat_edit(
        &mut self,
        request_id: u64,
        chat_id: &str,
        message_id: u64,
        content: Option<&str>,
    ) -> Bytes {
        let chat_id = Some(self.fbb.create_string(chat_id));
        match content {
            Some(content) => {
                let content = Some(self.fbb.create_string(content));
                let body = wire::ChatEdit::create(
                    &mut self.fbb,
                    &wire::ChatEditArgs {
                        chat_id,
                        message_id,
                        content,
                    },
                );
                self.finish_frame(request_id, 0, Body::ChatEdit, body.as_union_value())
            }
            None => {
                let body = wire::ChatDelete::create(
                    &mut self.fbb,
                    &wire::ChatDeleteArgs {
                        chat_id,
                        message_id,
                    },
                );
                self.finish_frame(request_id, 0, Body::ChatDelete, body.as_union_value())
            }
        }
    }

    /// The reply to an edit or delete: when it took effect.
    pub fn chat_updated(
        &mut self,
        request_id: u64,
        chat_id: &str,
        message_id: u64,
        at_ms: i64,
    ) -> Bytes {
        let chat_id = self.fbb.create_string(chat_id);
        let body = wire::ChatUpdated::create(
            &mut self.fbb,
            &wire::ChatUpdatedArgs {
                chat_id: Some(chat_id),
                message_id,
                at_ms,
            },
        );
        self.finish_reply(request_id, Body::ChatUpdated, body.as_union_value())
    }

    /// Mute `user_id` in a chat for `duration_ms` (0 lifts the mute).
    pub fn chat_mute(
        &mut self,
        request_id: u64,
        chat_id: &str,
        user_id: &str,
        duration_ms: u32,
    ) -> Bytes {
        let chat_id = self.fbb.create_string(chat_id);
        let user_id = self.fbb.create_string(user_id);
        let body = wire::ChatMute::create(
            &mut self.fbb,
            &wire::ChatMuteArgs {
                chat_id: Some(chat_id),
                user_id: Some(user_id),
                duration_ms,
            },
        );
        self.finish_frame(request_id, 0, Body::ChatMute, body.as_union_value())
    }

    /// The reply to a mute: when it ends (Unix ms; 0 when lifted).
    pub fn chat_muted(
        &mut self,
        request_id: u64,
        chat_id: &str,
        user_id: &str,
        until_ms: i64,
    ) -> Bytes {
        let chat_id = self.fbb.create_string(chat_id);
        let user_id = self.fbb.create_string(user_id);
        let body = wire::ChatMuted::create(
            &mut self.fbb,
            &wire::ChatMutedArgs {
                chat_id: Some(chat_id),
                user_id: Some(user_id),
                until_ms,
            },
        );
        self.finish_reply(request_id, Body::ChatMuted, body.as_union_value())
    }

    /// Asks for the unread counts of `chat_ids`.
    pub fn chat_unread<S: AsRef<str>>(&mut self, request_id: u64, chat_ids: &[S]) -> Bytes {
        let ids: Vec<_> = chat_ids
            .iter()
            .map(|c| self.fbb.create_string(c.as_ref()))
            .collect();
        let ids = self.fbb.create_vector(&ids);
        let body = wire::ChatUnread::create(
            &mut self.fbb,
            &wire::ChatUnreadArgs {
                chat_ids: Some(ids),
            },
        );
        self.finish_frame(request_id, 0, Body::ChatUnread, body.as_union_value())
    }

    /// The reply to an unread-counts request, one row per chat.
    pub fn chat_unread_counts(&mut self, request_id: u64, rows: &[UnreadRow]) -> Bytes {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                let chat_id = self.fbb.create_string(&r.chat_id);
                wire::ChatUnreadRow::create(
                    &mut self.fbb,
                    &wire::ChatUnreadRowArgs {
                        chat_id: Some(chat_id),
                        read_up_to: r.read_up_to,
                        unread: r.unread,
                        last_message_id: r.last_message_id,
                    },
                )
            })
            .collect();
        let rows = self.fbb.create_vector(&rows);
        let body = wire::ChatUnreadCounts::create(
            &mut self.fbb,
            &wire::ChatUnreadCountsArgs { chats: Some(rows) },
        );
        self.finish_reply(request_id, Body::ChatUnreadCounts, body.as_union_value())
    }

    /// `user:status` request (`reply: false`) or its reply `StatusSet`.
    pub fn set_status(
        &mut self,
        request_id: u64,
        status: PresenceStatus,
        text: &str,
        invisible: bool,
        reply: bool,
    ) -> Bytes {
        let text = (!text.is_empty()).then(|| self.fbb.create_string(text));
        if reply {
            let body = wire::StatusSet::create(
                &mut self.fbb,
                &wire::StatusSetArgs {
                    status,
                    text,
                    invisible,
                },
            );
            self.finish_reply(request_id, Body::StatusSet, body.as_union_value())
        } else {
            let body = wire::SetStatus::create(
                &mut self.fbb,
                &wire::SetStatusArgs {
                    status,
                    text,
                    invisible,
                },
            );
            self.finish_frame(request_id, 0, Body::SetStatus, body.as_union_value())
        }
    }

    /// `Follow` (or `Unfollow` with `follow: false`).
    pub fn follow<S: AsRef<str>>(
        &mut self,
        request_id: u64,
        user_ids: &[S],
        follow: bool,
    ) -> Bytes {
        let ids: Vec<_> = user_ids
            .iter()
            .map(|u| self.fbb.create_string(u.as_ref()))
            .collect();
        let user_ids = Some(self.fbb.create_vector(&ids));
        if follow {
            let body = wire::Follow::create(&mut self.fbb, &wire::FollowArgs { user_ids });
            self.finish_frame(request_id, 0, Body::Follow, body.as_union_value())
        } else {
            let body = wire::Unfollow::create(&mut self.fbb, &wire::UnfollowArgs { user_ids });
            self.finish_frame(request_id, 0, Body::Unfollow, body.as_union_value())
        }
    }

    /// `user:status`, reliable, to every follower.
    pub fn user_status_event(
        &mut self,
        user_id: &str,
        status: PresenceStatus,
        text: &str,
        updated_at_ms: i64,
    ) -> EventFrame {
        let user_id = self.fbb.create_string(user_id);
        let text = (!text.is_empty()).then(|| self.fbb.create_string(text));
        let body = wire::UserStatusEvent::create(
            &mut self.fbb,
            &wire::UserStatusEventArgs {
                user_id: Some(user_id),
                status,
                text,
                updated_at_ms,
            },
        );
        self.finish_event(true, Body::UserStatusEvent, body.as_union_value())
    }

    /// chat:member:joined / chat:member:left, reliable.
    pub fn chat_member_event(
        &mut self,
        chat_id: &str,
        user: UserFields<'_>,
        joined: bool,
    ) -> EventFrame {
        let chat_id = self.fbb.create_string(chat_id);
        let user = self.chat_user(user);
        let body = wire::ChatMemberEvent::create(
            &mut self.fbb,
            &wire::ChatMemberEventArgs {
                chat_id: Some(chat_id),
                user: Some(user),
                joined,
            },
        );
        self.finish_event(true, Body::ChatMemberEvent, body.as_union_value())
    }

    /// chat:typing, volatile.
    pub fn chat_typing_event(
        &mut self,
        chat_id: &str,
        user: UserFields<'_>,
        typing: bool,
    ) -> EventFrame {
        let chat_id = self.fbb.create_string(chat_id);
        let user = self.chat_user(user);
        let body = wire::ChatTypingEvent::create(
            &mut self.fbb,
            &wire::ChatTypingEventArgs {
                chat_id: Some(chat_id),
                user: Some(user),
                typing,
            },
        );
        self.finish_event(false, Body::ChatTypingEvent, body.as_union_value())
    }

    /// chat:read, reliable.
    pub fn chat_read_event(&mut self, chat_id: &str, user_id: &str, read_up_to: u64) -> EventFrame {
        let chat_id = self.fbb.create_string(chat_id);
        let user_id = self.fbb.create_string(user_id);
        let body = wire::ChatReadEvent::create(
            &mut self.fbb,
            &wire::ChatReadEventArgs {
                chat_id: Some(chat_id),
                user_id: Some(user_id),
                read_up_to,
            },
        );
        self.finish_event(true, Body::ChatReadEvent, body.as_union_value())
    }

    /// A frame with an arbitrary version and union tag over an empty table,
    /// for tests and fuzzing of the verifier (unknown union members, wrong
    /// versions). Never used to talk to a peer.
    pub fn raw_frame_for_tests(&mut self, version: u16, body_tag: u8) -> Bytes {
        let body = wire::Pong::create(&mut self.fbb, &wire::PongArgs { time_ms: 0 });
        let frame = wire::Frame::create(
            &mut self.fbb,
            &wire::FrameArgs {
                version,
                request_id: 1,
                seq: 0,
                body_type: Body(body_tag),
                body: Some(body.as_union_value()),
            },
        );
        wire::finish_frame_buffer(&mut self.fbb, frame);
        let bytes = Bytes::copy_from_slice(self.fbb.finished_data());
        self.fbb.reset();
        bytes
    }
}
