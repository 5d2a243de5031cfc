//! Fuzzes the chat engine (`huddle::core::engine::chat`): joins, leaves,
//! sends (with and without nonces), typing, read cursors, history pages,
//! edits, deletes, mutes, channel creation, session clean-ups and the
//! store's warm-up answers, over six sessions of four users (one an
//! operator) and a handful of direct, lobby and channel chats (valid and
//! malformed ids), with lobby membership and blocks the fuzzer toggles. A
//! model store keeps what the engine persisted and answers warm-ups the way
//! the shell's history reader would. Never reads the engine's private
//! state: everything is checked through effects and the public queries.
//!
//! Invariants: every request gets exactly one answer (a reply, a refusal,
//! a warm-up or a history page) and clean-ups get none; a refusal comes
//! alone; membership (`sessions`, `in_any_chat`, `member_count`, the
//! join replies) follows the model of joins, leaves and clean-ups, and
//! member events fire exactly when a user's first session joins or last
//! leaves; new message ids strictly increase; a duplicate answer names the
//! message first sent with that nonce, and a remembered nonce is never
//! sent twice; a send succeeds only from a member, with valid content,
//! unmuted, unblocked, and (in read-only channels) as an operator; slow
//! mode holds while the sender stays in the chat; read cursors only move
//! forward and never past the newest message; history pages are newest
//! first, below `before_id` and within the limit; only an author or an
//! operator edits or deletes, and never a deleted message.

#![no_main]

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use huddle::core::engine::chat::{
    Actor, Author, ChannelSpec, ChatContext, ChatLimits, Chats, Command, HistoryRecord, Kind,
    Message,
};
use huddle::core::engine::{Effect, Event, Record, Refusal, Reply, SessionId, UserId};
use huddle_fuzz::{
    assert_answered_once, assert_refusal_alone, pick, FuzzText, VirtualClock, MAX_OPS,
};
use libfuzzer_sys::fuzz_target;

const USERS: [&str; 4] = ["alice", "bob", "carol", "op"];
/// Sessions and the user each belongs to (a session never changes user).
const SESSIONS: [(SessionId, &str); 6] = [
    (1, "alice"),
    (2, "alice"),
    (3, "bob"),
    (4, "carol"),
    (5, "op"),
    (6, "bob"),
];
const CHANNEL_NAMES: [&str; 5] = ["general", "staff", "news", "", "a:b"];
const NONCES: [&str; 3] = ["n0", "n1", "n2"];
const WORDS: [&str; 4] = ["hi", "gg", "", "hello there"];

const LIMITS: ChatLimits = ChatLimits {
    max_chars: 32,
    recent: 16,
    nonces: 8,
    typing_every: Duration::from_millis(1_000),
};

fn chats_universe() -> Vec<String> {
    vec![
        "direct:alice:bob".into(),
        "direct:alice:carol".into(),
        "direct:bob:op".into(),
        "lobby:l1".into(),
        "lobby:l2".into(),
        "channel:general".into(),
        "channel:staff".into(),
        "channel:news".into(),
        // Malformed or refused ids.
        "direct:bob:alice".into(),
        "direct:alice".into(),
        "nope".into(),
        String::new(),
        format!("channel:{}", "x".repeat(200)),
    ]
}

/// The lobby engine and friends authority as the fuzzer sets them.
#[derive(Default)]
struct Context {
    /// Members of lobby `l1` (`l2` does not exist).
    l1: BTreeSet<String>,
    /// (sender, recipient) pairs that may not message each other.
    blocks: HashSet<(String, String)>,
}

impl ChatContext for Context {
    fn lobby_member(&self, lobby: &str, user: &str) -> Option<bool> {
        (lobby == "l1").then(|| self.l1.contains(user))
    }
    fn direct_block(&self, sender: &str, recipient: &str) -> Option<String> {
        let pair = (sender.to_string(), recipient.to_string());
        let back = (recipient.to_string(), sender.to_string());
        (self.blocks.contains(&pair) || self.blocks.contains(&back)).then(|| "blocked".into())
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum MsgRef {
    Zero,
    Known(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    CreateChannel {
        name: u8,
        public: bool,
        read_only: bool,
        slow_mode_ds: u8,
        members: Vec<u8>,
    },
    Join {
        session: u8,
        chat: u8,
    },
    Leave {
        session: u8,
        chat: u8,
        cleanup: bool,
    },
    Send {
        session: u8,
        chat: u8,
        content: FuzzText,
        content_type: u8,
        nonce: Option<FuzzText>,
    },
    Typing {
        session: u8,
        chat: u8,
        typing: bool,
    },
    Read {
        session: u8,
        chat: u8,
        message: MsgRef,
    },
    History {
        session: u8,
        chat: u8,
        before: MsgRef,
        limit: u8,
    },
    Amend {
        session: u8,
        chat: u8,
        message: MsgRef,
        content: Option<FuzzText>,
    },
    Mute {
        actor: u8,
        chat: u8,
        user: u8,
        duration_ds: u8,
    },
    SessionsGone {
        sessions: Vec<u8>,
    },
    RemoveUser {
        chat: u8,
        user: u8,
    },
    Warm {
        which: u8,
        fail: bool,
    },
    LobbyMember {
        user: u8,
        member: bool,
    },
    Block {
        sender: u8,
        recipient: u8,
        on: bool,
    },
    Unread {
        user: u8,
        chats: Vec<u8>,
    },
    Advance {
        ms: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
}

#[derive(Debug, Clone)]
struct Sent {
    chat: String,
    sender: String,
    deleted: bool,
}

/// Remembered ((user, nonce), message id), oldest first.
type NonceQueue = VecDeque<((String, String), u64)>;

#[derive(Default)]
struct Model {
    members: HashMap<String, BTreeSet<SessionId>>,
    /// Direct and lobby chats whose in-memory state was dropped once
    /// (everyone left): cursors, nonces, mutes and slow mode start over.
    forgotten: HashSet<String>,
    channels: HashMap<String, ChannelSpec>,
    stored: HashMap<String, Vec<Arc<Message>>>,
    stored_cursors: HashMap<(String, String), u64>,
    sent: HashMap<u64, Sent>,
    /// Message ids in send order.
    order: Vec<u64>,
    last_id: u64,
    /// Remembered nonces per chat, oldest first, with their message.
    nonces: HashMap<String, NonceQueue>,
    mutes: HashMap<(String, String), i64>,
    /// (chat, user) → last accepted send (ms) while the user stays in.
    last_send: HashMap<(String, String), i64>,
    cursors: HashMap<(String, String), u64>,
    /// Warm-ups the shell still has to answer: (chat, user, recent).
    warmups: Vec<(Arc<str>, UserId, usize)>,
}

impl Model {
    /// Sessions in `chat` per user (indexed like [`USERS`]).
    fn user_counts(&self, chat: &str) -> [usize; 4] {
        let mut counts = [0; 4];
        for s in self.members.get(chat).into_iter().flatten() {
            let user = session_user(*s);
            if let Some(i) = USERS.iter().position(|u| *u == user) {
                counts[i] += 1;
            }
        }
        counts
    }
    fn joined(&self, chat: &str, session: SessionId) -> bool {
        self.members.get(chat).is_some_and(|s| s.contains(&session))
    }
    fn intact(&self, chat: &str) -> bool {
        !self.forgotten.contains(chat)
    }
    fn newest_in(&self, chat: &str) -> u64 {
        let stored = self
            .stored
            .get(chat)
            .and_then(|m| m.iter().map(|m| m.id).max())
            .unwrap_or(0);
        stored.max(
            self.sent
                .iter()
                .filter(|(_, s)| s.chat == chat)
                .map(|(id, _)| *id)
                .max()
                .unwrap_or(0),
        )
    }
}

fn session_user(session: SessionId) -> &'static str {
    SESSIONS
        .iter()
        .find(|(s, _)| *s == session)
        .map(|(_, u)| *u)
        .expect("a session of the universe")
}

fn actor(user: &str) -> Actor {
    Actor {
        author: Author {
            id: UserId::from(user),
            username: Arc::from(format!("name-{user}")),
            display_name: Arc::from(user),
        },
        operator: user == "op",
    }
}

fn msg(model: &Model, r: MsgRef) -> u64 {
    match r {
        MsgRef::Zero => 0,
        MsgRef::Known(i) if !model.order.is_empty() => pick(&model.order, i),
        MsgRef::Known(i) => u64::from(i),
        MsgRef::Raw(x) => x,
    }
}

fn refusal(out: &[Effect]) -> Option<Refusal> {
    out.iter().find_map(|e| match e {
        Effect::Fail { failure, .. } => Some(failure.refusal),
        _ => None,
    })
}

fuzz_target!(|input: Input| {
    let universe = chats_universe();
    let mut clock = VirtualClock::new();
    let mut chats = Chats::new(LIMITS, 1, 2);
    let mut ctx = Context::default();
    ctx.l1.extend(["alice".to_string(), "bob".to_string()]);
    let mut model = Model::default();
    let mut next_request = 1u64;

    for op in input.ops.into_iter().take(MAX_OPS) {
        let mut out = Vec::new();
        let now = clock.now();
        let before_counts: Vec<[usize; 4]> =
            universe.iter().map(|c| model.user_counts(c)).collect();
        let mut request: Option<u64> = None;
        let mut fresh_rid = || {
            let r = next_request;
            next_request += 1;
            r
        };
        match op {
            Op::CreateChannel {
                name,
                public,
                read_only,
                slow_mode_ds,
                members,
            } => {
                let spec = ChannelSpec {
                    name: pick(&CHANNEL_NAMES, name).to_string(),
                    public,
                    read_only,
                    slow_mode_ms: u32::from(slow_mode_ds) * 100,
                    members: members
                        .into_iter()
                        .take(4)
                        .map(|u| UserId::from(pick(&USERS, u)))
                        .collect(),
                };
                chats.handle(now, &ctx, Command::CreateChannel(spec.clone()), &mut out);
                request = Some(0);
                if refusal(&out).is_none() {
                    model
                        .channels
                        .insert(format!("channel:{}", spec.name), spec);
                }
            }
            Op::Join { session, chat } => {
                let (session, user) = pick(&SESSIONS, session);
                let chat = pick(&universe, chat);
                let rid = fresh_rid();
                request = Some(rid);
                chats.handle(
                    now,
                    &ctx,
                    Command::Join {
                        request_id: rid,
                        session,
                        actor: actor(user),
                        chat_id: Arc::from(chat.as_str()),
                    },
                    &mut out,
                );
                let mut joined = None;
                for e in &out {
                    match e {
                        Effect::Reply { reply, .. } => joined = Some(reply.clone()),
                        Effect::WarmUp {
                            joined: reply,
                            chat_id,
                            user: u,
                            recent,
                            request_id,
                        } => {
                            assert_eq!((&**chat_id, &**u, *request_id), (chat.as_str(), user, rid));
                            model.warmups.push((chat_id.clone(), u.clone(), *recent));
                            joined = Some(reply.clone());
                        }
                        _ => {}
                    }
                }
                if let Some(reply) = joined {
                    let Reply::ChatJoined {
                        chat_id,
                        kind,
                        members,
                        read_only,
                        ..
                    } = reply
                    else {
                        panic!("a join answered with {reply:?}");
                    };
                    assert_eq!(&*chat_id, chat.as_str());
                    let want_kind = match chat.split_once(':').map(|(k, _)| k) {
                        Some("direct") => Kind::Direct,
                        Some("lobby") => Kind::Lobby,
                        _ => Kind::Channel,
                    };
                    assert_eq!(kind, want_kind);
                    check_access(&model, &ctx, &chat, user);
                    model
                        .members
                        .entry(chat.clone())
                        .or_default()
                        .insert(session);
                    let distinct: BTreeSet<&str> = model.members[&chat]
                        .iter()
                        .map(|s| session_user(*s))
                        .collect();
                    assert_eq!(members as usize, distinct.len(), "members of {chat}");
                    if let Some(spec) = model.channels.get(&chat) {
                        assert_eq!(read_only, spec.read_only);
                    }
                }
            }
            Op::Leave {
                session,
                chat,
                cleanup,
            } => {
                let (session, _) = pick(&SESSIONS, session);
                let chat = pick(&universe, chat);
                let rid = if cleanup { 0 } else { fresh_rid() };
                request = (!cleanup).then_some(rid);
                let was = model.joined(&chat, session);
                chats.handle(
                    now,
                    &ctx,
                    Command::Leave {
                        request_id: rid,
                        session,
                        chat_id: Arc::from(chat.as_str()),
                    },
                    &mut out,
                );
                if !cleanup {
                    assert_eq!(
                        refusal(&out).is_none(),
                        was,
                        "a leave succeeds exactly for a member: {out:?}"
                    );
                }
                if let Some(set) = model.members.get_mut(&chat) {
                    set.remove(&session);
                }
            }
            Op::Send {
                session,
                chat,
                content,
                content_type,
                nonce,
            } => {
                let (session, user) = pick(&SESSIONS, session);
                let chat = pick(&universe, chat);
                let rid = fresh_rid();
                request = Some(rid);
                let content = content.render(&WORDS, LIMITS.max_chars + 2);
                let nonce = nonce.map(|n| n.render(&NONCES, 70));
                let content_type = content_type % 6;
                chats.handle(
                    now,
                    &ctx,
                    Command::Send {
                        request_id: rid,
                        session,
                        actor: actor(user),
                        chat_id: Arc::from(chat.as_str()),
                        content: content.clone(),
                        content_type,
                        nonce: nonce.clone(),
                    },
                    &mut out,
                );
                check_send(
                    &mut model,
                    &ctx,
                    &out,
                    now.unix_ms,
                    session,
                    user,
                    &chat,
                    &content,
                    content_type,
                    nonce.as_deref(),
                );
            }
            Op::Typing {
                session,
                chat,
                typing,
            } => {
                let (session, user) = pick(&SESSIONS, session);
                let chat = pick(&universe, chat);
                chats.handle(
                    now,
                    &ctx,
                    Command::Typing {
                        session,
                        actor: actor(user),
                        chat_id: Arc::from(chat.as_str()),
                        typing,
                    },
                    &mut out,
                );
                for e in &out {
                    let Effect::Broadcast {
                        event: Event::ChatTyping { .. },
                        reliable,
                        except,
                        ..
                    } = e
                    else {
                        panic!("typing produced {e:?}");
                    };
                    assert!(!reliable && *except == Some(session));
                    assert!(model.joined(&chat, session), "typing from outside {chat}");
                }
            }
            Op::Read {
                session,
                chat,
                message,
            } => {
                let (session, user) = pick(&SESSIONS, session);
                let chat = pick(&universe, chat);
                let rid = fresh_rid();
                request = Some(rid);
                let message_id = msg(&model, message);
                chats.handle(
                    now,
                    &ctx,
                    Command::Read {
                        request_id: rid,
                        session,
                        user: UserId::from(user),
                        chat_id: Arc::from(chat.as_str()),
                        message_id,
                    },
                    &mut out,
                );
                let read = out.iter().find_map(|e| match e {
                    Effect::Reply {
                        reply: Reply::ChatRead { read_up_to, .. },
                        ..
                    } => Some(*read_up_to),
                    _ => None,
                });
                assert_eq!(read.is_some(), model.joined(&chat, session), "{out:?}");
                if let Some(up_to) = read {
                    assert!(
                        up_to <= model.newest_in(&chat),
                        "read past the newest message"
                    );
                    let key = (chat.clone(), user.to_string());
                    if model.intact(&chat) {
                        let last = model.cursors.get(&key).copied().unwrap_or(0);
                        assert!(
                            up_to >= last,
                            "cursor of {key:?} went back {last} -> {up_to}"
                        );
                    }
                    model.cursors.insert(key, up_to);
                }
            }
            Op::History {
                session,
                chat,
                before,
                limit,
            } => {
                let (session, _) = pick(&SESSIONS, session);
                let chat = pick(&universe, chat);
                let rid = fresh_rid();
                request = Some(rid);
                let before_id = msg(&model, before);
                let limit = u16::from(limit % 110);
                chats.handle(
                    now,
                    &ctx,
                    Command::History {
                        request_id: rid,
                        session,
                        chat_id: Arc::from(chat.as_str()),
                        before_id,
                        limit,
                    },
                    &mut out,
                );
                check_history(&model, &out, session, &chat, before_id, usize::from(limit));
            }
            Op::Amend {
                session,
                chat,
                message,
                content,
            } => {
                let (session, user) = pick(&SESSIONS, session);
                let chat = pick(&universe, chat);
                let rid = fresh_rid();
                request = Some(rid);
                let message_id = msg(&model, message);
                let content = content.map(|c| c.render(&WORDS, LIMITS.max_chars + 2));
                chats.handle(
                    now,
                    &ctx,
                    Command::Amend {
                        request_id: rid,
                        session,
                        actor: actor(user),
                        chat_id: Arc::from(chat.as_str()),
                        message_id,
                        content: content.clone(),
                    },
                    &mut out,
                );
                if refusal(&out).is_none() {
                    assert!(model.joined(&chat, session));
                    let sent = model
                        .sent
                        .get_mut(&message_id)
                        .expect("amended a message never sent");
                    assert_eq!(sent.chat, chat);
                    assert!(!sent.deleted, "amended a deleted message");
                    assert!(
                        sent.sender == user || user == "op",
                        "{user} amended {}'s message",
                        sent.sender
                    );
                    if let Some(c) = &content {
                        assert!(!c.is_empty() && c.chars().count() <= LIMITS.max_chars);
                    } else {
                        sent.deleted = true;
                    }
                }
            }
            Op::Mute {
                actor: who,
                chat,
                user,
                duration_ds,
            } => {
                let who = pick(&USERS, who);
                let chat = pick(&universe, chat);
                let user = pick(&USERS, user);
                let rid = fresh_rid();
                request = Some(rid);
                let duration_ms = u32::from(duration_ds) * 100;
                chats.handle(
                    now,
                    &ctx,
                    Command::Mute {
                        request_id: rid,
                        actor: actor(who),
                        chat_id: Arc::from(chat.as_str()),
                        user: UserId::from(user),
                        duration_ms,
                    },
                    &mut out,
                );
                let muted = out.iter().find_map(|e| match e {
                    Effect::Reply {
                        reply: Reply::ChatMuted { until_ms, .. },
                        ..
                    } => Some(*until_ms),
                    _ => None,
                });
                if let Some(until) = muted {
                    assert_eq!(who, "op", "only operators mute");
                    let want = if duration_ms == 0 {
                        0
                    } else {
                        now.unix_ms + i64::from(duration_ms)
                    };
                    assert_eq!(until, want);
                    model.mutes.insert((chat.clone(), user.to_string()), until);
                } else if who != "op" {
                    assert_eq!(refusal(&out), Some(Refusal::AccessDenied));
                }
            }
            Op::SessionsGone { sessions } => {
                let gone: Vec<SessionId> = sessions
                    .into_iter()
                    .take(6)
                    .map(|s| pick(&SESSIONS, s).0)
                    .collect();
                chats.handle(
                    now,
                    &ctx,
                    Command::SessionsGone {
                        sessions: gone.clone(),
                    },
                    &mut out,
                );
                for set in model.members.values_mut() {
                    for s in &gone {
                        set.remove(s);
                    }
                }
            }
            Op::RemoveUser { chat, user } => {
                let chat = pick(&universe, chat);
                let user = pick(&USERS, user);
                chats.handle(
                    now,
                    &ctx,
                    Command::RemoveUser {
                        chat_id: Arc::from(chat.as_str()),
                        user: UserId::from(user),
                    },
                    &mut out,
                );
                if let Some(set) = model.members.get_mut(&chat) {
                    set.retain(|s| session_user(*s) != user);
                }
            }
            Op::Warm { which, fail } => {
                if model.warmups.is_empty() {
                    continue;
                }
                let i = usize::from(which) % model.warmups.len();
                let (chat_id, user, recent) = model.warmups.remove(i);
                let cmd = if fail {
                    Command::WarmFailed { chat_id, user }
                } else {
                    let mut messages = model.stored.get(&*chat_id).cloned().unwrap_or_default();
                    messages.sort_by_key(|m| std::cmp::Reverse(m.id));
                    messages.truncate(recent);
                    let cursor = model
                        .stored_cursors
                        .get(&(chat_id.to_string(), user.to_string()))
                        .copied();
                    Command::Warmed {
                        chat_id,
                        user,
                        cursor,
                        messages,
                    }
                };
                chats.handle(now, &ctx, cmd, &mut out);
                assert!(out.is_empty(), "a warm-up answer has no effects: {out:?}");
            }
            Op::LobbyMember { user, member } => {
                let user = pick(&USERS, user).to_string();
                if member {
                    ctx.l1.insert(user);
                } else {
                    ctx.l1.remove(&user);
                }
                continue;
            }
            Op::Block {
                sender,
                recipient,
                on,
            } => {
                let pair = (
                    pick(&USERS, sender).to_string(),
                    pick(&USERS, recipient).to_string(),
                );
                if on {
                    ctx.blocks.insert(pair);
                } else {
                    ctx.blocks.remove(&pair);
                }
                continue;
            }
            Op::Unread { user, chats: asked } => {
                let user = pick(&USERS, user);
                let asked: Vec<Arc<str>> = asked
                    .into_iter()
                    .take(6)
                    .map(|c| Arc::from(pick(&universe, c).as_str()))
                    .collect();
                if let Ok(rows) = chats.unread(&ctx, &actor(user), &asked) {
                    assert_eq!(rows.len(), asked.len());
                    for (row, chat) in rows.iter().zip(&asked) {
                        assert_eq!(&row.chat_id, chat);
                        assert!(row.last_message_id <= model.newest_in(chat));
                        assert!(row.unread as usize <= LIMITS.recent);
                    }
                }
                continue;
            }
            Op::Advance { ms } => {
                clock.advance_ms(u64::from(ms));
                continue;
            }
        }

        assert_answered_once(&out, request, |e| match e {
            Effect::WarmUp { request_id, .. } | Effect::HistoryPage { request_id, .. } => {
                Some(*request_id)
            }
            _ => None,
        });
        assert_refusal_alone(&out);

        // What was persisted is what the store now holds.
        for e in &out {
            match e {
                Effect::Persist(Record::Chat(HistoryRecord::Message(m))) => {
                    let rows = model.stored.entry(m.chat_id.to_string()).or_default();
                    rows.retain(|r| r.id != m.id);
                    rows.push(m.clone());
                }
                Effect::Persist(Record::Chat(HistoryRecord::ReadCursor {
                    chat_id,
                    user_id,
                    up_to,
                })) => {
                    model
                        .stored_cursors
                        .insert((chat_id.to_string(), user_id.to_string()), *up_to);
                }
                _ => {}
            }
        }

        // Member events fire exactly on a user's first join and last leave.
        let mut told: Vec<(String, String, bool)> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Broadcast {
                    event:
                        Event::ChatMember {
                            chat_id,
                            user,
                            joined,
                        },
                    ..
                } => Some((chat_id.to_string(), user.id.to_string(), *joined)),
                _ => None,
            })
            .collect();
        told.sort();
        let mut want: Vec<(String, String, bool)> = Vec::new();
        for (chat, before) in universe.iter().zip(&before_counts) {
            let after = model.user_counts(chat);
            for (i, user) in USERS.iter().enumerate() {
                if before[i] == 0 && after[i] > 0 {
                    want.push((chat.clone(), user.to_string(), true));
                } else if before[i] > 0 && after[i] == 0 {
                    want.push((chat.clone(), user.to_string(), false));
                    // Out of the chat: slow mode and typing start over.
                    model.last_send.remove(&(chat.clone(), user.to_string()));
                }
            }
        }
        want.sort();
        assert_eq!(told, want, "member events of {out:?}");

        // Membership as the engine reports it.
        for chat in &universe {
            let want = model.members.get(chat).cloned().unwrap_or_default();
            let have: BTreeSet<SessionId> = chats.sessions(chat).collect();
            assert_eq!(have, want, "sessions of {chat}");
            let distinct: BTreeSet<&str> = want.iter().map(|s| session_user(*s)).collect();
            assert_eq!(
                chats.member_count(chat),
                distinct.len(),
                "member count of {chat}"
            );
            let had_members = before_counts[universe
                .iter()
                .position(|c| c == chat)
                .expect("in the universe")]
            .iter()
            .any(|n| *n > 0);
            if want.is_empty() && !chat.starts_with("channel:") && had_members {
                // Everyone left a direct or lobby chat: it is forgotten.
                model.forgotten.insert(chat.clone());
            }
        }
        for (session, _) in SESSIONS {
            let want = model.members.values().any(|s| s.contains(&session));
            assert_eq!(
                chats.in_any_chat(session),
                want,
                "session {session} in any chat"
            );
        }
    }
});

/// A join succeeded: the access rules of its kind allowed it.
fn check_access(model: &Model, ctx: &Context, chat: &str, user: &str) {
    let (kind, rest) = chat.split_once(':').expect("a joined chat has a kind");
    match kind {
        "direct" => {
            let (a, b) = rest.split_once(':').expect("direct:<a>:<b>");
            assert!(a < b && (a == user || b == user), "{user} joined {chat}");
        }
        "lobby" => assert_eq!(
            ctx.lobby_member(rest, user),
            Some(true),
            "{user} joined {chat}"
        ),
        "channel" => {
            let spec = model
                .channels
                .get(chat)
                .expect("joined a channel never created");
            assert!(
                spec.public || user == "op" || spec.members.iter().any(|m| &**m == user),
                "{user} joined restricted {chat}"
            );
        }
        other => panic!("joined a chat of kind {other:?}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn check_send(
    model: &mut Model,
    ctx: &Context,
    out: &[Effect],
    now_ms: i64,
    session: SessionId,
    user: &str,
    chat: &str,
    content: &str,
    content_type: u8,
    nonce: Option<&str>,
) {
    let sent = out.iter().find_map(|e| match e {
        Effect::Reply {
            reply:
                Reply::ChatSent {
                    message_id,
                    duplicate,
                    chat_id,
                    ..
                },
            ..
        } => Some((*message_id, *duplicate, chat_id.clone())),
        _ => None,
    });
    let joined = model.joined(chat, session);
    let Some((id, duplicate, chat_id)) = sent else {
        if !joined {
            assert_eq!(refusal(out), Some(Refusal::NotInChat));
        } else if content.is_empty() && nonce.is_none() {
            // Empty content is refused (access checks may refuse first).
            let why = refusal(out);
            assert!(
                matches!(why, Some(Refusal::MessageError | Refusal::AccessDenied)),
                "an empty message answered {out:?}"
            );
        }
        return;
    };
    assert_eq!(&*chat_id, chat);
    assert!(joined, "a send from outside {chat}");
    let nonce_key = nonce.map(|n| (user.to_string(), n.to_string()));
    if duplicate {
        let first = model
            .sent
            .get(&id)
            .expect("a duplicate of a message never sent");
        assert_eq!((first.chat.as_str(), first.sender.as_str()), (chat, user));
        if let (Some(key), true) = (&nonce_key, model.intact(chat)) {
            let remembered = model
                .nonces
                .get(chat)
                .and_then(|q| q.iter().find(|(k, _)| k == key));
            assert_eq!(
                remembered.map(|(_, id)| *id),
                Some(id),
                "duplicate of an unknown nonce"
            );
        }
        assert!(out.len() == 1, "a duplicate changes nothing: {out:?}");
        return;
    }
    assert!(
        id > model.last_id,
        "message id {id} after {}",
        model.last_id
    );
    model.last_id = id;
    assert!(!content.is_empty() && content.chars().count() <= LIMITS.max_chars);
    assert!(content_type <= 3);
    assert!(nonce.is_none_or(|n| n.len() <= huddle::core::engine::chat::MAX_NONCE));
    if let Some(spec) = model.channels.get(chat) {
        assert!(
            !spec.read_only || user == "op",
            "{user} posted in read-only {chat}"
        );
        let key = (chat.to_string(), user.to_string());
        if spec.slow_mode_ms > 0 && user != "op" {
            if let Some(last) = model.last_send.get(&key) {
                assert!(
                    now_ms - last >= i64::from(spec.slow_mode_ms),
                    "slow mode of {chat}: {user} sent {} ms apart",
                    now_ms - last
                );
            }
        }
    }
    model
        .last_send
        .insert((chat.to_string(), user.to_string()), now_ms);
    if let Some(("direct", pair)) = chat.split_once(':') {
        if let Some((a, b)) = pair.split_once(':') {
            let other = if a == user { b } else { a };
            assert!(
                ctx.direct_block(user, other).is_none(),
                "a blocked direct message"
            );
        }
    }
    if model.intact(chat) {
        if let Some(until) = model.mutes.get(&(chat.to_string(), user.to_string())) {
            assert!(*until <= now_ms, "{user} posted while muted in {chat}");
        }
    }
    if let Some(key) = nonce_key {
        let q = model.nonces.entry(chat.to_string()).or_default();
        if model.forgotten.contains(chat) {
            q.retain(|(k, _)| *k != key);
        }
        assert!(
            q.iter().all(|(k, _)| *k != key),
            "nonce {key:?} accepted twice in {chat}"
        );
        q.push_back((key, id));
        while q.len() > LIMITS.nonces {
            q.pop_front();
        }
    }
    let persisted = out.iter().any(
        |e| matches!(e, Effect::Persist(Record::Chat(HistoryRecord::Message(m))) if m.id == id),
    );
    let broadcast = out.iter().any(|e| matches!(e, Effect::Broadcast { event: Event::ChatMessage(m), except: None, reliable: true, .. } if m.id == id));
    assert!(
        persisted && broadcast,
        "a sent message is stored and delivered: {out:?}"
    );
    model.sent.insert(
        id,
        Sent {
            chat: chat.to_string(),
            sender: user.to_string(),
            deleted: false,
        },
    );
    model.order.push(id);
    let cursor = model
        .cursors
        .entry((chat.to_string(), user.to_string()))
        .or_insert(0);
    *cursor = (*cursor).max(id);
}

fn check_history(
    model: &Model,
    out: &[Effect],
    session: SessionId,
    chat: &str,
    before_id: u64,
    limit: usize,
) {
    let check_page = |messages: &[Arc<Message>]| {
        assert!(
            messages.windows(2).all(|w| w[0].id > w[1].id),
            "newest first"
        );
        assert!(messages.iter().all(|m| before_id == 0 || m.id < before_id));
        assert!(messages.iter().all(|m| &*m.chat_id == chat));
    };
    for e in out {
        match e {
            Effect::Reply {
                reply:
                    Reply::ChatHistory {
                        messages, has_more, ..
                    },
                ..
            } => {
                assert!(
                    messages.len() == limit && *has_more,
                    "a full page from memory"
                );
                check_page(messages);
            }
            Effect::HistoryPage {
                partial,
                limit: more,
                before_id: b,
                ..
            } => {
                assert_eq!(*b, before_id);
                assert_eq!(
                    partial.len() + more,
                    limit,
                    "the store is asked for the rest"
                );
                check_page(partial);
            }
            Effect::Fail { failure, .. } => {
                let bad_limit = limit == 0 || limit > huddle::core::engine::chat::MAX_PAGE;
                let want = if bad_limit {
                    Refusal::InvalidArgument
                } else {
                    Refusal::NotInChat
                };
                assert_eq!(failure.refusal, want);
                assert!(bad_limit || !model.joined(chat, session));
            }
            other => panic!("history produced {other:?}"),
        }
    }
}
