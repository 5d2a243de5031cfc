//! The messages shards accept, from sessions, the admin API, the store's
//! readers and each other, and what a shard starts with. Each message
//! carries what its handler needs to answer (an outbox, a oneshot), so a
//! shard never looks a caller up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use crate::core::engine::chat::{self, ChannelSpec, ChatLimits};
use crate::core::engine::lobbies::{self, LobbyLimits};
use crate::core::engine::matchmaking;
use crate::core::engine::notifications::{self, NewNotification, Notification, NotificationLimits};
pub use crate::core::engine::social::FriendStage;
use crate::core::engine::social::{self, RelationRecord, RosterEntry};
use crate::core::engine::users;
use crate::core::engine::{Failure, Presence, ResumeRefusal, SessionId, UserId};
use crate::core::outbox::{Outbox, ResumeGap};
use huddle_schema::EventFrame;

/// What every shard is started with.
#[derive(Debug, Clone, Copy)]
pub struct ShardSettings {
    pub resume_window: Duration,
    pub chat: ChatLimits,
    pub notifications: NotificationLimits,
    pub lobbies: LobbyLimits,
    /// Lobbies of one game a user may be in at once.
    pub lobbies_per_game: usize,
    /// This node's id, part of every message id.
    pub node: u16,
    /// Time between two ticks of this shard's matchmaking queues.
    pub matchmaking_tick: Duration,
}

/// What the store held at start-up; each shard takes the rows it owns.
#[derive(Debug, Default)]
pub struct Restore {
    pub relations: Vec<RelationRecord>,
    pub notifications: Vec<Notification>,
    pub ratings: Vec<matchmaking::RatingRecord>,
    pub channels: Vec<chat::ChannelSpec>,
}

/// Why a resume failed, for the RESUME_FAILED message.
#[derive(Debug, thiserror::Error)]
pub enum ResumeFailure {
    #[error("{0}")]
    Refused(#[from] ResumeRefusal),
    #[error("{0}")]
    Gap(#[from] ResumeGap),
}

/// A successful resume: the session's outbox, the new connection's
/// generation, and how many events and replies will be replayed.
pub struct Resumed {
    pub outbox: Arc<Outbox>,
    pub generation: u64,
    pub replayed: u32,
}

/// Messages a shard accepts.
pub enum ShardMsg {
    /// A new session of a user this shard owns.
    Attach {
        session: SessionId,
        user: UserId,
        resume_token: u128,
        outbox: Arc<Outbox>,
    },
    Resume {
        session: SessionId,
        user: UserId,
        resume_token: u128,
        /// Replaces `resume_token` once the resume is accepted.
        next_token: u128,
        last_seq: u64,
        wake: Arc<Notify>,
        reply: oneshot::Sender<Result<Resumed, ResumeFailure>>,
    },
    /// The connection of `generation` went away. Ignored when a newer
    /// connection has resumed the session since (the messages can cross).
    Detach {
        session: SessionId,
        generation: u64,
        resumable: bool,
    },
    /// A client request; the reply goes to `reply_to`.
    Request {
        cmd: users::Command,
        reply_to: Arc<Outbox>,
    },
    Lookup {
        user_ids: Vec<UserId>,
        reply: oneshot::Sender<Vec<Presence>>,
    },
    /// `session` (whose outbox this is) follows or unfollows the status of
    /// users this shard owns; answered with their presence.
    Follow {
        session: SessionId,
        targets: Vec<UserId>,
        follow: bool,
        outbox: Arc<Outbox>,
        reply: oneshot::Sender<Vec<Presence>>,
    },
    /// A chat request. `member` is the session's outbox, handed over on
    /// join so the chat's shard can deliver to it directly.
    /// Boxed: chat commands are the largest messages, and every mailbox
    /// slot is as large as the largest message.
    Chat {
        cmd: Box<chat::Command>,
        reply_to: Arc<Outbox>,
        member: Option<Arc<Outbox>>,
    },
    /// Unread counts of this shard's chats among those a user asked for.
    ChatUnread {
        actor: chat::Actor,
        chat_ids: Vec<Arc<str>>,
        reply: oneshot::Sender<Result<Vec<chat::UnreadCount>, Failure>>,
    },
    /// An operator creates or reconfigures a channel.
    CreateChannel {
        spec: ChannelSpec,
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// A friend operation, in stages: the actor's shard enforces the
    /// per-user relation cap; for a request, the target's shard then the
    /// cap on pending requests a user receives; the pair's shard decides.
    Friend {
        cmd: social::OpCommand,
        reply_to: Arc<Outbox>,
        stage: FriendStage,
    },
    /// The pair's shard decided `user`'s new relation to `other`.
    Roster {
        user: UserId,
        other: UserId,
        relation: social::Relation,
        since_ms: i64,
    },
    /// `user`'s roster, for the friend list.
    FriendList {
        user: UserId,
        reply: oneshot::Sender<Vec<RosterEntry>>,
    },
    /// A notification command for users this shard owns.
    Notifications {
        cmd: notifications::Command,
        reply_to: Option<Arc<Outbox>>,
    },
    /// An operator's notification: to `users` (owned here), or with `None`
    /// to every user connected to this shard. Answered with the count.
    Announce {
        users: Option<Vec<UserId>>,
        what: Arc<NewNotification>,
        reply: oneshot::Sender<usize>,
    },
    /// An event, encoded once by another shard, for every session of
    /// `users` but those in `skip` (which had it already).
    ToUsers {
        users: Vec<UserId>,
        frame: EventFrame,
        skip: Option<Box<[SessionId]>>,
    },
    /// A lobby command for a lobby this shard owns. `member` is the
    /// asking session, joined to the lobby's chat when the command makes
    /// its user a member of a lobby with chat.
    Lobby {
        cmd: Box<lobbies::Command>,
        reply_to: Option<Arc<Outbox>>,
        member: Option<Box<LobbyMember>>,
    },
    /// An operator's lobby command (bulk create, close), answered over a
    /// oneshot with the lobby's state (`None` when it closed) or the refusal.
    LobbyAdmin {
        cmd: Box<lobbies::Command>,
        reply: oneshot::Sender<Result<Option<Arc<lobbies::Snapshot>>, Failure>>,
    },
    /// `user` (owned here) joined or left a lobby.
    LobbyIndex {
        user: UserId,
        lobby_id: Arc<str>,
        game: Arc<str>,
        joined: bool,
        since_version: u64,
    },
    /// Check an invitation on the pair's shard.
    InviteCheck(Box<InviteCheck>),
    /// A matchmaking command for a game this shard owns (`Configure` goes
    /// to every shard, which keeps its own games). `watcher` is the asking
    /// session's outbox, kept while the session follows a ticket.
    Matchmaking {
        cmd: Box<matchmaking::Command>,
        reply_to: Option<Arc<Outbox>>,
        watcher: Option<Arc<Outbox>>,
    },
    /// An operator's or the game backend's matchmaking command (backfill),
    /// answered over a oneshot.
    MatchmakingAdmin {
        cmd: Box<matchmaking::Command>,
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// A lobby host queues the lobby (owned here) as a party.
    PartyStart(Box<PartyStart>),
    /// A match stands: create its lobby here (the lobby's shard), then
    /// tell every player.
    MatchLobby(Box<MatchLobby>),
    /// This shard's public lobbies matching a listing.
    LobbyList(Box<LobbyListQuery>),
}

/// A party ticket on its way through the lobby's shard, which fills in
/// the members (host first) and forwards it to the game's queue shard.
pub struct PartyStart {
    pub start: matchmaking::Start,
    pub lobby_id: Arc<str>,
    pub reply_to: Arc<Outbox>,
}

pub struct MatchLobby {
    pub matched: matchmaking::FormedMatch,
    pub lobby_id: Arc<str>,
}

/// The session a lobby command came from, joined to the lobby's chat when
/// the command leaves its user a member of a lobby with chat.
pub struct LobbyMember {
    pub session: SessionId,
    pub actor: chat::Actor,
    pub outbox: Arc<Outbox>,
}

/// An invitation to check on the pair's shard: blocks, and friendship when
/// `friends_only`.
pub struct InviteCheck {
    pub request_id: u64,
    pub lobby_id: Arc<str>,
    pub game: Arc<str>,
    pub inviter: UserId,
    pub invitee: UserId,
    pub friends_only: bool,
    pub reply_to: Option<Arc<Outbox>>,
}

/// A lobby listing, asked of every shard.
pub struct LobbyListQuery {
    pub filter: lobbies::ListFilter,
    pub after: String,
    pub limit: usize,
    pub reply: oneshot::Sender<Vec<lobbies::Summary>>,
}
