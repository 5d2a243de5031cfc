//! The chats one shard owns: who is in each (by session), the recent-message
//! buffer, message ids, send idempotency by client nonce, typing throttle,
//! read cursors, slow mode and read-only channels.
//!
//! Access rules follow the reference design: a direct chat admits its two
//! participants, a lobby chat the lobby's members (asked through
//! [`ChatContext`], which the lobby engine implements on the same shard),
//! a channel whoever its visibility allows. Membership is per session, like a
//! socket joining a room, and ends with the session.
//!
//! Never does I/O and never reads a clock: time arrives as [`Now`], and every
//! delivery leaves as an [`Effect::Broadcast`] the shell encodes once.
//!
//! This file holds the types, the dispatch and the queries; joining and
//! leaving live in `membership`, what members do in a chat in `messages`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Effect, Failure, Now, Refusal, Reply, SessionId, UserId};

mod membership;
mod messages;

/// Longest chat id accepted, bytes.
pub const MAX_CHAT_ID: usize = 200;
/// Longest client nonce accepted, bytes.
pub const MAX_NONCE: usize = 64;
/// Most messages one history page returns.
pub const MAX_PAGE: usize = 100;

/// The kinds of chat, named by their id's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Lobby,
    Channel,
}

/// Tunables, from `[chat]` config.
#[derive(Debug, Clone, Copy)]
pub struct ChatLimits {
    /// Longest message, in characters.
    pub max_chars: usize,
    /// Messages kept per chat for history and unread counts.
    pub recent: usize,
    /// Nonces remembered per chat for idempotent sends.
    pub nonces: usize,
    /// Least time between two typing signals of one user in one chat.
    pub typing_every: Duration,
}

impl Default for ChatLimits {
    fn default() -> Self {
        Self {
            max_chars: 2000,
            recent: 256,
            nonces: 4096,
            typing_every: Duration::from_millis(1000),
        }
    }
}

/// Who speaks: what recipients see of a sender.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Author {
    pub id: UserId,
    pub username: Arc<str>,
    pub display_name: Arc<str>,
}

/// The acting user, with what the rules need to know.
#[derive(Debug, Clone)]
pub struct Actor {
    pub author: Author,
    /// Holds the `operator` or `moderator` role: may post in read-only
    /// channels and join restricted ones.
    pub operator: bool,
}

/// A stored chat message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub id: u64,
    pub chat_id: Arc<str>,
    pub sender: Author,
    pub content: Arc<str>,
    pub content_type: u8,
    pub created_at_ms: i64,
    /// 0 when never edited.
    pub edited_at_ms: i64,
    /// A tombstone: the content is gone.
    pub deleted: bool,
    /// The sender's idempotency nonce, stored so a retry after a restart
    /// is still recognised. Never sent to other members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<Box<str>>,
}

/// What chat history persists; the store writes each idempotently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HistoryRecord {
    /// A message, its edit, or its tombstone (upsert by chat and id).
    Message(Arc<Message>),
    /// A user's read cursor (upsert by chat and user).
    ReadCursor {
        chat_id: Arc<str>,
        user_id: UserId,
        up_to: u64,
    },
}

/// One chat's unread count for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadCount {
    pub chat_id: Arc<str>,
    pub read_up_to: u64,
    /// Messages after the cursor among those kept in memory.
    pub unread: u32,
    pub last_message_id: u64,
}

/// An operator-created channel (kept in the store, reloaded at start).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelSpec {
    /// The name after `channel:`.
    pub name: String,
    /// Anyone may join; otherwise only `members` and operators.
    pub public: bool,
    /// Only operators may post.
    pub read_only: bool,
    /// Least time between two messages of one user; 0 = off.
    pub slow_mode_ms: u32,
    pub members: Vec<UserId>,
}

/// What the chat engine asks of its neighbours on the same shard: lobby
/// membership (the lobby engine, which lives with the lobby's chat) and
/// blocks (the friends authority, which lives with the direct chat).
pub trait ChatContext {
    /// Whether `user` is a member of `lobby`; `None` when no such lobby.
    fn lobby_member(&self, lobby: &str, user: &str) -> Option<bool>;
    /// Why `sender` may not message `recipient` directly, if blocked.
    fn direct_block(&self, _sender: &str, _recipient: &str) -> Option<String> {
        None
    }
}

/// No lobbies and no blocks: for tests and tools.
pub struct NoLobbies;

impl ChatContext for NoLobbies {
    fn lobby_member(&self, _lobby: &str, _user: &str) -> Option<bool> {
        None
    }
}

/// Commands the chat engine accepts.
#[derive(Debug, Clone)]
pub enum Command {
    CreateChannel(ChannelSpec),
    Join {
        request_id: u64,
        session: SessionId,
        actor: Actor,
        chat_id: Arc<str>,
    },
    /// `request_id` 0: a clean-up without reply (the connection ended).
    Leave {
        request_id: u64,
        session: SessionId,
        chat_id: Arc<str>,
    },
    Send {
        request_id: u64,
        session: SessionId,
        actor: Actor,
        chat_id: Arc<str>,
        content: String,
        content_type: u8,
        nonce: Option<String>,
    },
    Typing {
        session: SessionId,
        actor: Actor,
        chat_id: Arc<str>,
        typing: bool,
    },
    Read {
        request_id: u64,
        session: SessionId,
        user: UserId,
        chat_id: Arc<str>,
        message_id: u64,
    },
    History {
        request_id: u64,
        session: SessionId,
        chat_id: Arc<str>,
        before_id: u64,
        limit: u16,
    },
    /// Edit (`content: Some`) or delete (`None`) a message: one's own, or
    /// any as an operator.
    Amend {
        request_id: u64,
        session: SessionId,
        actor: Actor,
        chat_id: Arc<str>,
        message_id: u64,
        content: Option<String>,
    },
    /// An operator mutes `user` in the chat for `duration_ms` (0 lifts it).
    Mute {
        request_id: u64,
        actor: Actor,
        chat_id: Arc<str>,
        user: UserId,
        duration_ms: u32,
    },
    /// Sessions found gone (their outbox closed): drop them everywhere.
    SessionsGone {
        sessions: Vec<SessionId>,
    },
    /// A warm-up could not be queued: the next join asks the store again.
    WarmFailed {
        chat_id: Arc<str>,
        user: UserId,
    },
    /// `user` may no longer be in `chat_id` (left or was kicked from its
    /// lobby): every session of theirs leaves it.
    RemoveUser {
        chat_id: Arc<str>,
        user: UserId,
    },
    /// What the store held for a chat a join found cold: `user`'s read
    /// cursor and the newest messages (newest first).
    Warmed {
        chat_id: Arc<str>,
        user: UserId,
        cursor: Option<u64>,
        messages: Vec<Arc<Message>>,
    },
}

impl Command {
    /// The chat a command is about (none for clean-ups across chats).
    pub fn chat_id(&self) -> Option<&Arc<str>> {
        match self {
            Command::Join { chat_id, .. }
            | Command::Leave { chat_id, .. }
            | Command::Send { chat_id, .. }
            | Command::Typing { chat_id, .. }
            | Command::Read { chat_id, .. }
            | Command::History { chat_id, .. }
            | Command::Amend { chat_id, .. }
            | Command::Mute { chat_id, .. }
            | Command::Warmed { chat_id, .. }
            | Command::RemoveUser { chat_id, .. }
            | Command::WarmFailed { chat_id, .. } => Some(chat_id),
            Command::CreateChannel(_) | Command::SessionsGone { .. } => None,
        }
    }
}

#[derive(Debug, Default)]
struct MemberUser {
    /// This user's sessions in the chat.
    sessions: u32,
    last_sent_ms: Option<i64>,
    last_typing: Option<(Instant, bool)>,
}

#[derive(Debug)]
struct Chat {
    public: bool,
    read_only: bool,
    slow_mode_ms: u32,
    allowed: HashSet<UserId>,
    sessions: HashMap<SessionId, Author>,
    users: HashMap<UserId, MemberUser>,
    cursors: HashMap<UserId, u64>,
    recent: VecDeque<Arc<Message>>,
    nonces: HashMap<(UserId, Box<str>), u64>,
    nonce_order: VecDeque<(UserId, Box<str>)>,
    /// Muted users and when their mute ends (Unix ms).
    mutes: HashMap<UserId, i64>,
    /// The store's newest messages were asked for (on the first join).
    recent_loaded: bool,
    /// Users whose stored read cursor was asked for.
    cursors_loaded: HashSet<UserId>,
    /// Users whose cursor moved by sending (in memory only): their next
    /// `ChatRead` stores it even when it does not move it further, since
    /// its acknowledgement stands for a stored cursor.
    cursors_unstored: HashSet<UserId>,
}

impl Chat {
    fn new() -> Self {
        Self {
            public: false,
            read_only: false,
            slow_mode_ms: 0,
            allowed: HashSet::new(),
            sessions: HashMap::new(),
            users: HashMap::new(),
            cursors: HashMap::new(),
            recent: VecDeque::new(),
            nonces: HashMap::new(),
            nonce_order: VecDeque::new(),
            mutes: HashMap::new(),
            recent_loaded: false,
            cursors_loaded: HashSet::new(),
            cursors_unstored: HashSet::new(),
        }
    }

    fn unread_after(&self, cursor: u64) -> u32 {
        self.recent
            .iter()
            .rev()
            .take_while(|m| m.id > cursor)
            .count() as u32
    }
}

/// Time-ordered 64-bit ids: milliseconds since 2025-01-01 (41 bits), node
/// (9 bits), shard (6 bits), sequence (8 bits). When a millisecond's
/// sequence runs out the clock is borrowed from the next millisecond, so ids
/// stay unique and increasing.
#[derive(Debug)]
pub struct MessageIds {
    origin: u64,
    last_ms: u64,
    seq: u64,
}

/// 2025-01-01T00:00:00Z in Unix milliseconds.
const ID_EPOCH_MS: i64 = 1_735_689_600_000;

impl MessageIds {
    pub fn new(node: u16, shard: u16) -> Self {
        Self {
            origin: (u64::from(node & 0x1ff) << 14) | (u64::from(shard & 0x3f) << 8),
            last_ms: 0,
            seq: 0,
        }
    }

    /// Never hands out `id` or anything before it again (ids restored
    /// from the store after a restart).
    pub fn observe(&mut self, id: u64) {
        let ms = id >> 23;
        if ms > self.last_ms || (ms == self.last_ms && (id & 0xff) >= self.seq) {
            self.last_ms = ms;
            self.seq = id & 0xff;
        }
    }

    pub fn next(&mut self, unix_ms: i64) -> u64 {
        let ms = (unix_ms - ID_EPOCH_MS).max(0) as u64;
        if ms > self.last_ms {
            self.last_ms = ms;
            self.seq = 0;
        } else {
            self.seq += 1;
            if self.seq > 0xff {
                self.last_ms += 1;
                self.seq = 0;
            }
        }
        (self.last_ms << 23) | self.origin | self.seq
    }
}

/// The chat state of one shard.
pub struct Chats {
    limits: ChatLimits,
    ids: MessageIds,
    chats: HashMap<Arc<str>, Chat>,
    /// Chats each session joined here, for clean-up.
    joined: HashMap<SessionId, Vec<Arc<str>>>,
}

fn fail(out: &mut Vec<Effect>, request_id: u64, refusal: Refusal, message: impl Into<String>) {
    out.push(Effect::Fail {
        request_id,
        failure: Failure::new(refusal, message),
    });
}

/// Splits a chat id into its kind and the rest, checking its shape.
pub fn parse_chat_id(id: &str) -> Result<(Kind, &str), Failure> {
    let bad = |m: String| Err(Failure::new(Refusal::JoinError, m));
    if id.is_empty() || id.len() > MAX_CHAT_ID {
        return bad(format!("chat ids are 1 to {MAX_CHAT_ID} bytes"));
    }
    let (kind, rest) = match id.split_once(':') {
        Some(("direct", rest)) => (Kind::Direct, rest),
        Some(("lobby", rest)) => (Kind::Lobby, rest),
        Some(("channel", rest)) => (Kind::Channel, rest),
        _ => {
            return bad(format!(
                "chat id {id:?} must start with direct:, lobby: or channel:"
            ))
        }
    };
    if rest.is_empty() {
        return bad(format!("chat id {id:?} names nothing after its kind"));
    }
    if kind == Kind::Direct {
        match rest.split_once(':') {
            Some((a, b)) if !a.is_empty() && !b.contains(':') && a < b => {}
            _ => {
                return bad(format!(
                "direct chat ids are direct:<user a>:<user b> with a < b (byte order), got {id:?}"
            ))
            }
        }
    }
    Ok((kind, rest))
}

/// The chat, if `session` has joined it.
fn joined<'a>(
    chats: &'a HashMap<Arc<str>, Chat>,
    chat_id: &str,
    session: SessionId,
) -> Option<&'a Chat> {
    chats
        .get(chat_id)
        .filter(|c| c.sessions.contains_key(&session))
}

fn joined_mut<'a>(
    chats: &'a mut HashMap<Arc<str>, Chat>,
    chat_id: &str,
    session: SessionId,
) -> Option<&'a mut Chat> {
    chats
        .get_mut(chat_id)
        .filter(|c| c.sessions.contains_key(&session))
}

/// Message content rules, for sends and edits.
fn check_content(content: &str, max_chars: usize) -> Result<(), Failure> {
    if content.is_empty() {
        return Err(Failure::new(Refusal::MessageError, "empty message"));
    }
    let chars = content.chars().count();
    if chars > max_chars {
        return Err(Failure::new(
            Refusal::MessageError,
            format!("message of {chars} characters; at most {max_chars}"),
        ));
    }
    Ok(())
}

/// The id of the direct chat between two users.
pub fn direct_chat_id(a: &str, b: &str) -> String {
    if a <= b {
        format!("direct:{a}:{b}")
    } else {
        format!("direct:{b}:{a}")
    }
}

impl Chats {
    pub fn new(limits: ChatLimits, node: u16, shard: u16) -> Self {
        Self {
            limits,
            ids: MessageIds::new(node, shard),
            chats: HashMap::new(),
            joined: HashMap::new(),
        }
    }

    /// The sessions of a chat's members (for the shell's fan-out).
    pub fn sessions(&self, chat: &str) -> impl Iterator<Item = SessionId> + '_ {
        self.chats
            .get(chat)
            .into_iter()
            .flat_map(|c| c.sessions.keys().copied())
    }

    /// Whether a session is in any of this shard's chats.
    pub fn in_any_chat(&self, session: SessionId) -> bool {
        self.joined.contains_key(&session)
    }

    /// Distinct members of a chat.
    pub fn member_count(&self, chat: &str) -> usize {
        self.chats.get(chat).map_or(0, |c| c.users.len())
    }

    pub fn handle(
        &mut self,
        now: Now,
        lobbies: &dyn ChatContext,
        cmd: Command,
        out: &mut Vec<Effect>,
    ) {
        match cmd {
            Command::CreateChannel(spec) => self.create_channel(spec, out),
            Command::Join {
                request_id,
                session,
                actor,
                chat_id,
            } => self.join(lobbies, request_id, session, actor, chat_id, out),
            Command::Leave {
                request_id,
                session,
                chat_id,
            } => self.leave(request_id, session, &chat_id, out),
            Command::Send {
                request_id,
                session,
                actor,
                chat_id,
                content,
                content_type,
                nonce,
            } => self.send(
                now,
                lobbies,
                request_id,
                session,
                actor,
                &chat_id,
                content,
                content_type,
                nonce,
                out,
            ),
            Command::Typing {
                session,
                actor,
                chat_id,
                typing,
            } => self.typing(now, session, actor, &chat_id, typing, out),
            Command::Read {
                request_id,
                session,
                user,
                chat_id,
                message_id,
            } => self.read(request_id, session, user, &chat_id, message_id, out),
            Command::History {
                request_id,
                session,
                chat_id,
                before_id,
                limit,
            } => self.history(request_id, session, &chat_id, before_id, limit, out),
            Command::Amend {
                request_id,
                session,
                actor,
                chat_id,
                message_id,
                content,
            } => self.amend(
                now, request_id, session, actor, &chat_id, message_id, content, out,
            ),
            Command::Mute {
                request_id,
                actor,
                chat_id,
                user,
                duration_ms,
            } => self.mute(now, request_id, actor, &chat_id, user, duration_ms, out),
            Command::Warmed {
                chat_id,
                user,
                cursor,
                messages,
            } => self.warmed(&chat_id, user, cursor, messages),
            Command::WarmFailed { chat_id, user } => {
                if let Some(chat) = self.chats.get_mut(&chat_id) {
                    chat.recent_loaded = false;
                    chat.cursors_loaded.remove(&user);
                }
            }
            Command::RemoveUser { chat_id, user } => {
                let sessions: Vec<SessionId> = self
                    .chats
                    .get(&chat_id)
                    .into_iter()
                    .flat_map(|c| c.sessions.iter())
                    .filter(|(_, a)| a.id == user)
                    .map(|(s, _)| *s)
                    .collect();
                for session in sessions {
                    self.leave(0, session, &chat_id, out);
                }
            }
            Command::SessionsGone { sessions } => {
                for session in sessions {
                    for chat in self.joined.remove(&session).unwrap_or_default() {
                        self.remove_session(session, &chat, out);
                    }
                }
            }
        }
    }

    /// A stored channel, at start (no effects: it is already kept).
    pub fn restore_channel(&mut self, spec: ChannelSpec) {
        let id: Arc<str> = Arc::from(format!("channel:{}", spec.name));
        let chat = self.chats.entry(id).or_insert_with(Chat::new);
        chat.public = spec.public;
        chat.read_only = spec.read_only;
        chat.slow_mode_ms = spec.slow_mode_ms;
        chat.allowed = spec.members.into_iter().collect();
    }

    fn create_channel(&mut self, spec: ChannelSpec, out: &mut Vec<Effect>) {
        let id: Arc<str> = Arc::from(format!("channel:{}", spec.name));
        if let Err(f) = parse_chat_id(&id) {
            out.push(Effect::Fail {
                request_id: 0,
                failure: Failure::new(Refusal::InvalidArgument, f.message),
            });
            return;
        }
        out.push(Effect::Persist(super::Record::Channel(Arc::new(
            spec.clone(),
        ))));
        self.restore_channel(spec);
        out.push(Effect::Reply {
            request_id: 0,
            reply: Reply::Done,
        });
    }

    /// Unread counts of chats on this shard for `actor`, in the order asked;
    /// the first chat they may not read refuses the whole query.
    pub fn unread(
        &self,
        lobbies: &dyn ChatContext,
        actor: &Actor,
        chat_ids: &[Arc<str>],
    ) -> Result<Vec<UnreadCount>, Failure> {
        chat_ids
            .iter()
            .map(|chat_id| {
                self.may_join(lobbies, actor, chat_id)?;
                let chat = self.chats.get(chat_id);
                let read_up_to = chat
                    .and_then(|c| c.cursors.get(&actor.author.id).copied())
                    .unwrap_or(0);
                Ok(UnreadCount {
                    chat_id: chat_id.clone(),
                    read_up_to,
                    unread: chat.map_or(0, |c| c.unread_after(read_up_to)),
                    last_message_id: chat.and_then(|c| c.recent.back()).map_or(0, |m| m.id),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
