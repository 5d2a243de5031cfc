//! Decoding a client's frame, once: [`Request::from_frame`] turns the body of
//! a verified frame into a [`Request`], the closed set of things a client
//! may send, each carrying the fields the session shell reads (borrowed from
//! the frame: decoding copies nothing and allocates nothing).
//!
//! This module (its decoders are in `decode`) is the only code in the crate
//! that reads request tables out of a frame (`body_as_*` and their fields). It must never judge arguments —
//! limits, enum values out of range, empty ids are the shell's to refuse,
//! with their own codes and in their own order — and must never panic on
//! any frame, verified or not.
//!
//! # Every body is decided at compile time
//!
//! flatc's `Body` is an open newtype (`Body(u8)`), so a `match` over it needs
//! a wildcard arm, into which a body added to `huddle.fbs` would fall
//! silently. Instead [`BODIES`] lists every `Body`, in tag order, with what
//! a client may do with it: send it (with its decoder), or never (a
//! server-to-client body). Its length is `Body::ENUM_VALUES.len()` and a
//! const assertion compares it with flatc's `Body::ENUM_VALUES` entry by
//! entry, so regenerating the schema with a new body fails to compile until
//! the table says what that body is. The decoders produce [`Request`], a
//! closed Rust enum, which the shell matches without a wildcard.

use flatbuffers::{ForwardsUOffset, Vector};
use huddle_schema::wire::{
    self, Body, ContentType, ErrorCode, FriendAction, LobbyOpKind, LobbyVisibility,
    MatchmakingOpKind, PresenceStatus,
};
use huddle_schema::PROTOCOL_VERSION;

mod decode;
// One decoder per client entry of BODIES.
use decode::*;

/// A vector in the frame, read lazily: its length without walking it, its
/// items decoded one by one as they are iterated.
pub struct List<'a, Raw: 'a, Item> {
    items: Option<Vector<'a, ForwardsUOffset<Raw>>>,
    decode: fn(Raw) -> Item,
}

/// A vector of strings (user ids, chat ids).
pub type Strings<'a> = List<'a, &'a str, &'a str>;
/// A lobby's settings as (key, value) pairs; a missing key or value is "".
pub type Settings<'a> = List<'a, wire::Setting<'a>, (&'a str, &'a str)>;
/// A matchmaking start's measured latencies.
pub type Latencies<'a> = List<'a, wire::RegionLatency<'a>, RegionLatency<'a>>;
/// A matchmaking start's attribute values.
pub type Attributes<'a> = List<'a, wire::MatchAttribute<'a>, MatchAttribute<'a>>;

impl<'a, Raw, Item> List<'a, Raw, Item>
where
    ForwardsUOffset<Raw>: flatbuffers::Follow<'a, Inner = Raw> + 'a,
{
    fn new(items: Option<Vector<'a, ForwardsUOffset<Raw>>>, decode: fn(Raw) -> Item) -> Self {
        Self { items, decode }
    }

    /// Items in the vector (0 when the field is absent).
    pub fn len(&self) -> usize {
        self.items.map_or(0, |v| v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items in order, decoded.
    pub fn iter(&self) -> impl Iterator<Item = Item> + 'a
    where
        Item: 'a,
    {
        let decode = self.decode;
        self.items.into_iter().flat_map(|v| v.iter()).map(decode)
    }
}

impl<'a, Raw, Item> Clone for List<'a, Raw, Item> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<'a, Raw, Item> Copy for List<'a, Raw, Item> {}

impl<'a, Raw, Item: std::fmt::Debug + 'a> std::fmt::Debug for List<'a, Raw, Item>
where
    ForwardsUOffset<Raw>: flatbuffers::Follow<'a, Inner = Raw> + 'a,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, Raw, Item: PartialEq + 'a> PartialEq for List<'a, Raw, Item>
where
    ForwardsUOffset<Raw>: flatbuffers::Follow<'a, Inner = Raw> + 'a,
{
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// One row of `MatchmakingStart.latencies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionLatency<'a> {
    pub region: &'a str,
    pub ms: u32,
}

/// One row of `MatchmakingStart.attributes`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchAttribute<'a> {
    pub name: &'a str,
    pub text: &'a str,
    pub number: f64,
    pub is_number: bool,
}

/// `Hello`, unchecked: the handshake checks it
/// (`crate::edge::session::handshake::parse_hello`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    pub token: Option<&'a str>,
    pub client: Option<&'a str>,
    pub protocol_version: u16,
    pub resume: Option<Resume<'a>>,
    pub datagrams: bool,
}

/// `Hello.resume`, unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume<'a> {
    pub session_id: Option<&'a str>,
    pub resume_token: Option<&'a str>,
    pub last_seq: u64,
}

/// `EchoRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a> {
    pub payload: &'a [u8],
    pub to_user: Option<&'a str>,
    pub volatile: bool,
}

/// `SetStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetStatus<'a> {
    pub status: PresenceStatus,
    pub text: Option<&'a str>,
    pub invisible: bool,
}

/// `ChatSend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatSend<'a> {
    pub chat_id: &'a str,
    pub content: &'a str,
    pub content_type: ContentType,
    pub nonce: Option<&'a str>,
}

/// `LobbyCreate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LobbyCreate<'a> {
    pub game: &'a str,
    pub mode: &'a str,
    pub region: &'a str,
    pub min: u16,
    pub max: u16,
    pub visibility: LobbyVisibility,
    pub password: Option<&'a str>,
    pub chat: bool,
    pub settings: Settings<'a>,
}

/// `LobbyUpdate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LobbyUpdate<'a> {
    pub lobby_id: &'a str,
    pub set_settings: bool,
    pub settings: Settings<'a>,
    pub min: u16,
    pub max: u16,
    pub set_visibility: bool,
    pub visibility: LobbyVisibility,
    pub set_password: bool,
    pub password: Option<&'a str>,
    pub lock: u8,
}

/// `LobbyOp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LobbyOp<'a> {
    pub op: LobbyOpKind,
    pub lobby_id: &'a str,
    pub user_id: &'a str,
    pub text: &'a str,
}

/// `LobbyList`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LobbyList<'a> {
    pub game: &'a str,
    pub mode: &'a str,
    pub region: &'a str,
    pub min_free: u16,
    pub after: &'a str,
    pub limit: u16,
}

/// `MatchmakingStart`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchmakingStart<'a> {
    pub game: &'a str,
    pub mode: &'a str,
    pub latencies: Latencies<'a>,
    pub lobby_id: &'a str,
    pub attributes: Attributes<'a>,
    pub role: Option<&'a str>,
}

/// Everything a client may send, one variant per client-to-server body of
/// `huddle.fbs`. A string field the frame leaves out reads as "" unless an
/// absent value means something of its own (then it is an `Option`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Request<'a> {
    Hello(Hello<'a>),
    Ping {
        ack_seq: u64,
    },
    Pong,
    Echo(Echo<'a>),
    PresenceQuery {
        user_ids: Strings<'a>,
    },
    Follow {
        user_ids: Strings<'a>,
    },
    Unfollow {
        user_ids: Strings<'a>,
    },
    SetStatus(SetStatus<'a>),
    ChatJoin {
        chat_id: &'a str,
    },
    ChatLeave {
        chat_id: &'a str,
    },
    ChatSend(ChatSend<'a>),
    ChatTyping {
        chat_id: &'a str,
        typing: bool,
    },
    ChatRead {
        chat_id: &'a str,
        message_id: u64,
    },
    ChatHistory {
        chat_id: &'a str,
        before_id: u64,
        limit: u16,
    },
    ChatEdit {
        chat_id: &'a str,
        message_id: u64,
        content: &'a str,
    },
    ChatDelete {
        chat_id: &'a str,
        message_id: u64,
    },
    ChatMute {
        chat_id: &'a str,
        user_id: &'a str,
        duration_ms: u32,
    },
    ChatUnread {
        chat_ids: Strings<'a>,
    },
    FriendOp {
        action: FriendAction,
        user_id: &'a str,
    },
    FriendList,
    NotificationList {
        before_id: u64,
        limit: u16,
        unread_only: bool,
    },
    NotificationMarkRead {
        id: u64,
        all: bool,
    },
    NotificationDelete {
        id: u64,
    },
    LobbyCreate(LobbyCreate<'a>),
    LobbyJoin {
        lobby_id: &'a str,
        password: Option<&'a str>,
    },
    LobbyUpdate(LobbyUpdate<'a>),
    LobbyOp(LobbyOp<'a>),
    LobbyList(LobbyList<'a>),
    MatchmakingStart(MatchmakingStart<'a>),
    MatchmakingOp {
        op: MatchmakingOpKind,
        /// The ticket's id, `MatchmakingOp.request_id` on the wire.
        ticket: &'a str,
    },
}

/// How the shell treats a request before routing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `Hello`: the handshake's frame, refused after it.
    Hello,
    /// Heartbeats and signals (`Ping`, `Pong`, `ChatTyping`): no reply, so
    /// no request id needed and none recorded.
    Signal,
    /// Everything else: answered under its request id, which must be
    /// non-zero, and counted against the connection's rate.
    Call,
}

/// Why a frame's body is no request. Every kind closes in on the
/// connection's malformed-frame budget (MALFORMED_FRAME).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A body only the gateway sends.
    #[error("{body} is a server-to-client frame")]
    ServerToClient { body: &'static str },
    /// A union tag this build does not know (`verify_frame` refuses these
    /// first; this answers the same for a frame that skipped it).
    #[error("unknown frame body type {tag}; this gateway speaks protocol {PROTOCOL_VERSION}")]
    UnknownBody { tag: u8 },
    /// No body, or a body that is not the table its tag names.
    #[error("frame has no body")]
    MissingBody,
}

impl RequestError {
    /// The wire error code the shell answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::ServerToClient { .. }
            | RequestError::UnknownBody { .. }
            | RequestError::MissingBody => ErrorCode::MALFORMED_FRAME,
        }
    }
}

impl<'a> Request<'a> {
    /// Decodes `frame`'s body (see the module doc for why every body is
    /// covered). Never panics.
    pub fn from_frame(frame: &wire::Frame<'a>) -> Result<Request<'a>, RequestError> {
        let tag = frame.body_type();
        let Some((_, sender)) = BODIES.get(usize::from(tag.0)) else {
            return Err(RequestError::UnknownBody { tag: tag.0 });
        };
        match sender {
            Sender::Nobody => Err(RequestError::MissingBody),
            Sender::Server => Err(RequestError::ServerToClient {
                body: tag.variant_name().unwrap_or("this body"),
            }),
            Sender::Client(decode) => decode(frame).ok_or(RequestError::MissingBody),
        }
    }

    /// The body this request came in.
    pub fn body(&self) -> Body {
        match self {
            Request::Hello(_) => Body::Hello,
            Request::Ping { .. } => Body::Ping,
            Request::Pong => Body::Pong,
            Request::Echo(_) => Body::EchoRequest,
            Request::PresenceQuery { .. } => Body::PresenceQuery,
            Request::Follow { .. } => Body::Follow,
            Request::Unfollow { .. } => Body::Unfollow,
            Request::SetStatus(_) => Body::SetStatus,
            Request::ChatJoin { .. } => Body::ChatJoin,
            Request::ChatLeave { .. } => Body::ChatLeave,
            Request::ChatSend(_) => Body::ChatSend,
            Request::ChatTyping { .. } => Body::ChatTyping,
            Request::ChatRead { .. } => Body::ChatRead,
            Request::ChatHistory { .. } => Body::ChatHistory,
            Request::ChatEdit { .. } => Body::ChatEdit,
            Request::ChatDelete { .. } => Body::ChatDelete,
            Request::ChatMute { .. } => Body::ChatMute,
            Request::ChatUnread { .. } => Body::ChatUnread,
            Request::FriendOp { .. } => Body::FriendOp,
            Request::FriendList => Body::FriendList,
            Request::NotificationList { .. } => Body::NotificationList,
            Request::NotificationMarkRead { .. } => Body::NotificationMarkRead,
            Request::NotificationDelete { .. } => Body::NotificationDelete,
            Request::LobbyCreate(_) => Body::LobbyCreate,
            Request::LobbyJoin { .. } => Body::LobbyJoin,
            Request::LobbyUpdate(_) => Body::LobbyUpdate,
            Request::LobbyOp(_) => Body::LobbyOp,
            Request::LobbyList(_) => Body::LobbyList,
            Request::MatchmakingStart(_) => Body::MatchmakingStart,
            Request::MatchmakingOp { .. } => Body::MatchmakingOp,
        }
    }

    /// The body's name in the schema, for messages.
    pub fn name(&self) -> &'static str {
        self.body().variant_name().unwrap_or("request")
    }

    /// How the shell admits this request (see [`RequestKind`]).
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Hello(_) => RequestKind::Hello,
            Request::Ping { .. } | Request::Pong | Request::ChatTyping { .. } => {
                RequestKind::Signal
            }
            _ => RequestKind::Call,
        }
    }

    /// Whether the request's effect is a record in the store (so its
    /// acknowledgement stands for it): refused with STORE_UNAVAILABLE while
    /// writes cannot be kept, before anything changes.
    pub fn writes_to_store(&self) -> bool {
        match self {
            Request::ChatSend(_)
            | Request::ChatEdit { .. }
            | Request::ChatDelete { .. }
            | Request::ChatRead { .. }
            | Request::FriendOp { .. }
            | Request::NotificationMarkRead { .. }
            | Request::NotificationDelete { .. } => true,
            Request::Hello(_)
            | Request::Ping { .. }
            | Request::Pong
            | Request::Echo(_)
            | Request::PresenceQuery { .. }
            | Request::Follow { .. }
            | Request::Unfollow { .. }
            | Request::SetStatus(_)
            | Request::ChatJoin { .. }
            | Request::ChatLeave { .. }
            | Request::ChatTyping { .. }
            | Request::ChatHistory { .. }
            | Request::ChatMute { .. }
            | Request::ChatUnread { .. }
            | Request::FriendList
            | Request::NotificationList { .. }
            | Request::LobbyCreate(_)
            | Request::LobbyJoin { .. }
            | Request::LobbyUpdate(_)
            | Request::LobbyOp(_)
            | Request::LobbyList(_)
            | Request::MatchmakingStart(_)
            | Request::MatchmakingOp { .. } => false,
        }
    }
}

/// Decodes one client body; `None` when the frame's body is not that table.
type Decoder = for<'a> fn(&wire::Frame<'a>) -> Option<Request<'a>>;

/// Who sends a body.
enum Sender {
    /// `Body::NONE`: no body at all.
    Nobody,
    /// The gateway only; a client sending it breaks the protocol.
    Server,
    /// A client, decoded with this.
    Client(Decoder),
}

/// Every body of `huddle.fbs`, in tag order, with who sends it. Checked
/// against flatc's `Body::ENUM_VALUES` at compile time (below).
const BODIES: [(Body, Sender); Body::ENUM_VALUES.len()] = [
    (Body::NONE, Sender::Nobody),
    (Body::Hello, Sender::Client(hello)),
    (Body::Welcome, Sender::Server),
    (Body::Error, Sender::Server),
    (Body::Ping, Sender::Client(ping)),
    (Body::Pong, Sender::Client(pong)),
    (Body::GoAway, Sender::Server),
    (Body::EchoRequest, Sender::Client(echo)),
    (Body::EchoReply, Sender::Server),
    (Body::EchoEvent, Sender::Server),
    (Body::PresenceQuery, Sender::Client(presence_query)),
    (Body::PresenceList, Sender::Server),
    (Body::ChatJoin, Sender::Client(chat_join)),
    (Body::ChatJoined, Sender::Server),
    (Body::ChatLeave, Sender::Client(chat_leave)),
    (Body::ChatLeft, Sender::Server),
    (Body::ChatSend, Sender::Client(chat_send)),
    (Body::ChatSent, Sender::Server),
    (Body::ChatTyping, Sender::Client(chat_typing)),
    (Body::ChatRead, Sender::Client(chat_read)),
    (Body::ChatReadAck, Sender::Server),
    (Body::ChatHistory, Sender::Client(chat_history)),
    (Body::ChatHistoryPage, Sender::Server),
    (Body::ChatMessageEvent, Sender::Server),
    (Body::ChatMemberEvent, Sender::Server),
    (Body::ChatTypingEvent, Sender::Server),
    (Body::ChatReadEvent, Sender::Server),
    (Body::ChatEdit, Sender::Client(chat_edit)),
    (Body::ChatDelete, Sender::Client(chat_delete)),
    (Body::ChatUpdated, Sender::Server),
    (Body::ChatMute, Sender::Client(chat_mute)),
    (Body::ChatMuted, Sender::Server),
    (Body::ChatMessageUpdatedEvent, Sender::Server),
    (Body::ChatMessageDeletedEvent, Sender::Server),
    (Body::ChatUnread, Sender::Client(chat_unread)),
    (Body::ChatUnreadCounts, Sender::Server),
    (Body::SetStatus, Sender::Client(set_status)),
    (Body::StatusSet, Sender::Server),
    (Body::Follow, Sender::Client(follow)),
    (Body::Unfollow, Sender::Client(unfollow)),
    (Body::UserStatusEvent, Sender::Server),
    (Body::FriendOp, Sender::Client(friend_op)),
    (Body::FriendOpDone, Sender::Server),
    (Body::FriendList, Sender::Client(friend_list)),
    (Body::FriendListPage, Sender::Server),
    (Body::FriendEvent, Sender::Server),
    (Body::NotificationEvent, Sender::Server),
    (Body::NotificationCountEvent, Sender::Server),
    (Body::NotificationList, Sender::Client(notification_list)),
    (Body::NotificationPage, Sender::Server),
    (
        Body::NotificationMarkRead,
        Sender::Client(notification_mark_read),
    ),
    (
        Body::NotificationDelete,
        Sender::Client(notification_delete),
    ),
    (Body::NotificationCounts, Sender::Server),
    (Body::LobbyCreate, Sender::Client(lobby_create)),
    (Body::LobbyJoin, Sender::Client(lobby_join)),
    (Body::LobbyUpdate, Sender::Client(lobby_update)),
    (Body::LobbyOp, Sender::Client(lobby_op)),
    (Body::LobbyReply, Sender::Server),
    (Body::LobbyLeft, Sender::Server),
    (Body::LobbyInvited, Sender::Server),
    (Body::LobbyList, Sender::Client(lobby_list)),
    (Body::LobbyListPage, Sender::Server),
    (Body::LobbyEvent, Sender::Server),
    (Body::MatchmakingStart, Sender::Client(matchmaking_start)),
    (Body::MatchmakingOp, Sender::Client(matchmaking_op)),
    (Body::MatchmakingReply, Sender::Server),
    (Body::MatchmakingEvent, Sender::Server),
];

// `BODIES[tag]` is the entry of body `tag`, for every body flatc generated.
const _: () = {
    let mut i = 0;
    while i < BODIES.len() {
        assert!(
            BODIES[i].0 .0 == Body::ENUM_VALUES[i].0 && Body::ENUM_VALUES[i].0 as usize == i,
            "edge::request::BODIES must list every Body of huddle.fbs, in tag order"
        );
        i += 1;
    }
};

#[cfg(test)]
mod tests;
