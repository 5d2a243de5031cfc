//! Sans-IO engines: deterministic state machines that take commands and the
//! current time and push effects. They own their keys' state outright.
//!
//! Architecture invariant: nothing under `engine/` touches a socket, a
//! thread, a clock, a channel or flatbuffers. Time comes in as [`Now`];
//! everything an engine wants done goes out as an [`Effect`], which the
//! shard core (`crate::core::shard`) carries out. That is what lets the
//! tests drive an engine with a virtual clock and assert on the effects.
//!
//! Import rule (checked by `tests/layers.rs`): nothing here imports from the
//! crate outside `core::engine`; from other crates only std, serde (and
//! serde_json), smallvec, thiserror's derive and xxhash (the matcher's
//! stable tie-break hash).

pub mod chat;
pub mod lobbies;
pub mod matches;
pub mod matchmaking;
pub mod memberships;
pub mod notifications;
pub mod social;
pub mod users;

use std::sync::Arc;
use std::time::Instant;

/// A session (one logical client connection, surviving reconnects within the
/// resume window). Unique within a node.
pub type SessionId = u64;

/// A user id, from the token's `sub`. Cheap to clone.
pub type UserId = Arc<str>;

/// The time an engine acts at: a monotonic instant for timers and the wall
/// clock for timestamps users see.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix_ms: i64,
}

/// Presence as the engines see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Offline,
    Online,
    Away,
    Busy,
    InGame,
}

/// One user's presence row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub user_id: UserId,
    pub status: Status,
    pub connections: u32,
    pub last_active_ms: i64,
    /// Custom status text, when set and visible.
    pub text: Option<Arc<str>>,
}

/// A server event, before encoding. Encoded once per fan-out by the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Echo {
        from_user: UserId,
        payload: Vec<u8>,
    },
    ChatMessage(Arc<chat::Message>),
    ChatMember {
        chat_id: Arc<str>,
        user: chat::Author,
        joined: bool,
    },
    ChatTyping {
        chat_id: Arc<str>,
        user: chat::Author,
        typing: bool,
    },
    ChatRead {
        chat_id: Arc<str>,
        user_id: UserId,
        read_up_to: u64,
    },
    ChatMessageUpdated(Arc<chat::Message>),
    /// `user:status` to followers.
    UserStatus {
        user_id: UserId,
        status: Status,
        text: Option<Arc<str>>,
        at_ms: i64,
    },
    ChatMessageDeleted {
        chat_id: Arc<str>,
        message_id: u64,
        by: UserId,
    },
    /// `friend:update`: the recipient's relation to `user_id` changed.
    FriendUpdate {
        user_id: UserId,
        relation: social::Relation,
        since_ms: i64,
    },
    /// `notification:new`.
    Notification(Arc<notifications::Notification>),
    /// `notification:count`.
    NotificationCount {
        total: u32,
        unread: u32,
    },
    /// Everything `lobby:*`.
    Lobby(Arc<lobbies::LobbyEvent>),
    Matchmaking(Arc<matchmaking::MatchEvent>),
}

/// A typed reply to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Echo {
        payload: Vec<u8>,
        shard: u16,
        delivered: u32,
    },
    ChatJoined {
        chat_id: Arc<str>,
        kind: chat::Kind,
        members: u32,
        read_only: bool,
        slow_mode_ms: u32,
        read_up_to: u64,
    },
    ChatLeft {
        chat_id: Arc<str>,
    },
    ChatSent {
        chat_id: Arc<str>,
        message_id: u64,
        created_at_ms: i64,
        duplicate: bool,
    },
    ChatRead {
        chat_id: Arc<str>,
        read_up_to: u64,
        unread: u32,
    },
    ChatHistory {
        chat_id: Arc<str>,
        messages: Vec<Arc<chat::Message>>,
        has_more: bool,
    },
    ChatUpdated {
        chat_id: Arc<str>,
        message_id: u64,
        at_ms: i64,
    },
    ChatMuted {
        chat_id: Arc<str>,
        user_id: UserId,
        until_ms: i64,
    },
    StatusSet {
        status: Status,
        text: Option<Arc<str>>,
        invisible: bool,
    },
    FriendOpDone {
        user_id: UserId,
        relation: social::Relation,
        since_ms: i64,
    },
    NotificationPage {
        notifications: Vec<Arc<notifications::Notification>>,
        has_more: bool,
        total: u32,
        unread: u32,
    },
    NotificationCounts {
        total: u32,
        unread: u32,
    },
    /// A lobby's state (create, join, ready, update, get, ...).
    Lobby(Arc<lobbies::Snapshot>),
    LobbyLeft {
        lobby_id: Arc<str>,
    },
    /// An invitation went out.
    LobbyInvited {
        lobby_id: Arc<str>,
        user_id: UserId,
    },
    Matchmaking(Arc<matchmaking::TicketView>),
    /// An operator action succeeded.
    Done,
}

/// Why an engine refused a request; the shell maps each to its wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ChatNotFound,
    AccessDenied,
    JoinError,
    NotInChat,
    MessageError,
    RateLimited,
    InvalidArgument,
    FriendError,
    NotificationNotFound,
    LobbyNotFound,
    LobbyError,
    NotHost,
    KickError,
    ReadyError,
    MatchNotFound,
    SubscriptionError,
    CancelError,
    MatchmakingError,
}

/// A refused request: what and a message a developer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub refusal: Refusal,
    pub message: String,
}

impl Failure {
    pub fn new(refusal: Refusal, message: impl Into<String>) -> Self {
        Self {
            refusal,
            message: message.into(),
        }
    }
}

/// Why a resume was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeRefusal {
    #[error("no such session on this node, or its resume window has passed")]
    UnknownSession,
    #[error("the session belongs to another user")]
    WrongUser,
    #[error("the resume token does not match")]
    WrongToken,
}

/// Domain events other parts of the system react to (presence fan-out,
/// notifications, the game backend).
#[derive(Debug, Clone, PartialEq, Eq)]
///
/// Named as in the reference design (`friendship.requested`, ...); see
/// [`DomainEvent::name`]. Engines publish them as [`Effect::Domain`]; the
/// shard routes them to the engines that subscribe (notifications) and to
/// the integration webhook.
pub enum DomainEvent {
    UserOnline {
        user: UserId,
    },
    UserOffline {
        user: UserId,
    },
    FriendshipRequested {
        from: UserId,
        to: UserId,
    },
    FriendshipAccepted {
        by: UserId,
        requester: UserId,
    },
    FriendshipRejected {
        by: UserId,
        requester: UserId,
    },
    ChatMessageSent {
        chat_id: Arc<str>,
        message_id: u64,
        sender: UserId,
    },
    LobbyCreated {
        lobby_id: Arc<str>,
        game: Arc<str>,
    },
    LobbyUpdated {
        lobby_id: Arc<str>,
    },
    LobbyClosed {
        lobby_id: Arc<str>,
    },
    LobbyMemberJoined {
        lobby_id: Arc<str>,
        user: UserId,
    },
    LobbyMemberLeft {
        lobby_id: Arc<str>,
        user: UserId,
    },
    /// An invitation passed its checks (creates the invitee's notification).
    LobbyInvited {
        lobby_id: Arc<str>,
        game: Arc<str>,
        inviter: UserId,
        invitee: UserId,
    },
    MatchmakingStarted {
        request_id: Arc<str>,
        game: Arc<str>,
        mode: Arc<str>,
        users: Vec<UserId>,
        party: Option<Arc<str>>,
    },
    /// A match stands and its lobby exists: the game backend allocates a
    /// server and can push its address into the lobby.
    MatchmakingMatched {
        matched: Box<matchmaking::FormedMatch>,
        lobby_id: Arc<str>,
    },
    /// A ticket ended without a match (`reason`: cancelled, timeout,
    /// declined, no_answer, queue_changed).
    MatchmakingCancelled {
        request_id: Arc<str>,
        game: Arc<str>,
        users: Vec<UserId>,
        reason: &'static str,
    },
    /// A backfill waited the queue's timeout with slots still open.
    MatchmakingBackfillExpired {
        lobby_id: Arc<str>,
        game: Arc<str>,
    },
}

impl DomainEvent {
    /// The event's name on the bus and the integration webhook.
    pub fn name(&self) -> &'static str {
        match self {
            DomainEvent::UserOnline { .. } => "user.online",
            DomainEvent::UserOffline { .. } => "user.offline",
            DomainEvent::FriendshipRequested { .. } => "friendship.requested",
            DomainEvent::FriendshipAccepted { .. } => "friendship.accepted",
            DomainEvent::FriendshipRejected { .. } => "friendship.rejected",
            DomainEvent::ChatMessageSent { .. } => "chat.message.sent",
            DomainEvent::LobbyCreated { .. } => "lobby.created",
            DomainEvent::LobbyUpdated { .. } => "lobby.updated",
            DomainEvent::LobbyClosed { .. } => "lobby.closed",
            DomainEvent::LobbyMemberJoined { .. } => "lobby.member.joined",
            DomainEvent::LobbyMemberLeft { .. } => "lobby.member.left",
            DomainEvent::LobbyInvited { .. } => "lobby.invited",
            DomainEvent::MatchmakingStarted { .. } => "matchmaking.started",
            DomainEvent::MatchmakingMatched { .. } => "matchmaking.matched",
            DomainEvent::MatchmakingCancelled { .. } => "matchmaking.cancelled",
            DomainEvent::MatchmakingBackfillExpired { .. } => "matchmaking.backfill.expired",
        }
    }

    /// The event's fields as JSON, for the integration webhook.
    pub fn data(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            DomainEvent::UserOnline { user } | DomainEvent::UserOffline { user } => {
                json!({ "user_id": user })
            }
            DomainEvent::FriendshipRequested { from, to } => json!({ "from": from, "to": to }),
            DomainEvent::FriendshipAccepted { by, requester }
            | DomainEvent::FriendshipRejected { by, requester } => {
                json!({ "by": by, "requester": requester })
            }
            DomainEvent::ChatMessageSent {
                chat_id,
                message_id,
                sender,
            } => {
                json!({ "chat_id": chat_id, "message_id": message_id.to_string(), "sender": sender })
            }
            DomainEvent::LobbyCreated { lobby_id, game } => {
                json!({ "lobby_id": lobby_id, "game": game })
            }
            DomainEvent::LobbyUpdated { lobby_id } | DomainEvent::LobbyClosed { lobby_id } => {
                json!({ "lobby_id": lobby_id })
            }
            DomainEvent::LobbyMemberJoined { lobby_id, user }
            | DomainEvent::LobbyMemberLeft { lobby_id, user } => {
                json!({ "lobby_id": lobby_id, "user_id": user })
            }
            DomainEvent::LobbyInvited {
                lobby_id,
                game,
                inviter,
                invitee,
            } => {
                json!({ "lobby_id": lobby_id, "game": game, "inviter": inviter, "invitee": invitee })
            }
            DomainEvent::MatchmakingStarted {
                request_id,
                game,
                mode,
                users,
                party,
            } => {
                json!({ "request_id": request_id, "game": game, "mode": mode, "users": users, "party_lobby_id": party })
            }
            DomainEvent::MatchmakingMatched { matched, lobby_id } => {
                let backfill = matched.backfill_lobby.is_some();
                let players: Vec<_> = matched
                    .players
                    .iter()
                    .map(|p| json!({ "user_id": p.author.id, "team": p.team, "request_id": p.request_id }))
                    .collect();
                json!({
                    "match_id": matched.match_id,
                    "lobby_id": lobby_id,
                    "game": matched.game,
                    "mode": matched.mode,
                    "region": matched.region,
                    "teams": matched.teams,
                    "players": players,
                    "rating_spread": matched.spread,
                    "backfill": backfill,
                    "matched_at_ms": matched.matched_at_ms,
                })
            }
            DomainEvent::MatchmakingCancelled {
                request_id,
                game,
                users,
                reason,
            } => {
                json!({ "request_id": request_id, "game": game, "users": users, "reason": reason })
            }
            DomainEvent::MatchmakingBackfillExpired { lobby_id, game } => {
                json!({ "lobby_id": lobby_id, "game": game })
            }
        }
    }
}

/// A record for the store, as the engines produce it. Writing the same
/// record twice is harmless (upserts and deletes by primary key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Record {
    Chat(chat::HistoryRecord),
    Relation(social::RelationRecord),
    Notification(Arc<notifications::Notification>),
    NotificationDeleted {
        user: UserId,
        id: u64,
    },
    /// A rating the game backend set (token ratings come with each token).
    Rating(matchmaking::RatingRecord),
    /// A channel an operator created (upsert by name).
    Channel(Arc<chat::ChannelSpec>),
}

/// What an engine asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answer the request being handled.
    Reply {
        request_id: u64,
        reply: Reply,
    },
    /// Refuse the request being handled; nothing changed.
    Fail {
        request_id: u64,
        failure: Failure,
    },
    /// Hand a record to the history writer (asynchronous; never waited on).
    Persist(Record),
    /// Queue `event` to every session of `user`, wherever the user's shard is.
    ToUser {
        user: UserId,
        event: Event,
    },
    /// Queue `event` (a `user:status`) to the follower sessions and to every
    /// session of `user`'s friends, encoded once; a session in both hears
    /// it once.
    ToFriends {
        user: UserId,
        event: Event,
        followers: Vec<SessionId>,
    },
    /// A pair's shard decided a new relation as `user` sees it: update
    /// `user`'s roster (on their shard) and tell their sessions.
    RelationChanged {
        user: UserId,
        other: UserId,
        relation: social::Relation,
        since_ms: i64,
    },
    /// Hand a push or email delivery to the durable webhook outbox.
    Dispatch(notifications::Delivery),
    /// Queue `event` to every session of each user, wherever their shards
    /// are, encoded once.
    ToUsers {
        users: Vec<UserId>,
        event: Event,
    },
    /// `user` joined or left a lobby: their shard's index (one lobby per
    /// game, disconnect tracking) follows.
    LobbyMembership {
        user: UserId,
        lobby_id: Arc<str>,
        game: Arc<str>,
        joined: bool,
        /// The lobby version the membership began at (0 when leaving).
        since_version: u64,
    },
    /// A member asked to invite `invitee`: check blocks (and friendship
    /// when `friends_only`) on the pair's shard, then grant and notify.
    LobbyInvite {
        request_id: u64,
        lobby_id: Arc<str>,
        game: Arc<str>,
        inviter: UserId,
        invitee: UserId,
        friends_only: bool,
    },

    /// Finish a history page from the store: `partial` came from memory,
    /// `limit` more are wanted older than `partial`'s oldest (or `before_id`).
    HistoryPage {
        request_id: u64,
        chat_id: Arc<str>,
        before_id: u64,
        limit: usize,
        partial: Vec<Arc<chat::Message>>,
    },
    /// A join found its chat (or this user's cursor) cold: read `user`'s
    /// stored cursor and, with `recent` > 0, the newest `recent` messages;
    /// answer `joined` with the cursor merged in, and hand what was read
    /// back as [`chat::Command::Warmed`].
    WarmUp {
        request_id: u64,
        chat_id: Arc<str>,
        user: UserId,
        recent: usize,
        joined: Reply,
    },
    /// Queue `event` to every session in `chat` but `except`, encoded once.
    Broadcast {
        chat: Arc<str>,
        event: Event,
        reliable: bool,
        except: Option<SessionId>,
    },
    /// Queue `event` to each session, encoded once.
    Deliver {
        sessions: Vec<SessionId>,
        event: Event,
        reliable: bool,
    },
    /// Presence rows for a lookup, to the asker.
    Presence(Vec<Presence>),
    /// The session may take over its outbox again.
    ResumeAccepted {
        session: SessionId,
    },
    ResumeRefused {
        session: SessionId,
        reason: ResumeRefusal,
    },
    /// The session is over: release its outbox and close any connection.
    SessionEnded {
        session: SessionId,
    },
    Domain(DomainEvent),
    /// A match stands: create its lobby, then tell its players.
    MatchFormed(Box<matchmaking::FormedMatch>),
}
