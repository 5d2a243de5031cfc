//! The shard runtime: one OS thread per shard (pinned to a core when asked),
//! each owning its engines' state outright, fed by a bounded crossbeam
//! mailbox, and carrying out the effects its engines return.
//!
//! This is the thin shell around the sans-IO engines: it reads the clock,
//! encodes each event once (one `Bytes` for every recipient), pushes frames
//! into session outboxes, and answers internal requests over oneshots. It
//! never blocks on a client: outbox pushes are non-blocking and bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use huddle_schema::Encoder;

use crate::backend::store::{History, PageJob, ReadJob, WarmJob};
use crate::backend::webhook::Webhooks;
use crate::core::engine::chat::{self, direct_chat_id, ChatContext, Chats};
use crate::core::engine::lobbies::{self, Lobbies};
use crate::core::engine::matchmaking::{self, Queues};
use crate::core::engine::notifications::{self, Channel, NewNotification, Notifications};
use crate::core::engine::social::{self, Pairs, Rosters};
use crate::core::engine::users::{self, Users};
use crate::core::engine::{
    shard_of, DomainEvent, Effect, Event, Failure, Now, ResumeRefusal, SessionId, UserId,
};
use crate::core::outbox::{Closed, Outbox, Push};
use crate::core::shard::*;
use crate::core::wire;
use crate::telemetry::metrics::metrics;
use huddle_schema::EventFrame;

/// How often a shard drops chat members whose sessions have ended.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Messages to another shard that found its mailbox full, kept in order
/// and retried every loop turn. Past this many the shard waits for room
/// instead (backpressure; never a drop).
const MAX_DEFERRED: usize = 65_536;

/// Lobbies of one user: (lobby, game, membership's starting version), oldest first.
type UserLobbies = Vec<(Arc<str>, Arc<str>, u64)>;

/// Lobbies one user may be in at once, over all games; joining one more
/// leaves the oldest.
const MAX_LOBBIES_PER_USER: usize = 16;

struct Envelope {
    msg: ShardMsg,
    sent_at: Instant,
}

/// Handles to every shard's mailbox. Cloned freely.
#[derive(Clone)]
pub struct Shards {
    mailboxes: Arc<[Sender<Envelope>]>,
}

/// The threads behind [`Shards`]; stopped and joined at shutdown.
pub struct ShardThreads {
    joins: Vec<JoinHandle<()>>,
    stop: Shards,
}

/// The services every shard hands work to.
#[derive(Clone)]
pub struct Services {
    pub history: History,
    pub webhooks: Webhooks,
}

/// Whether carrying out `effects` writes to the store (records, webhook
/// jobs): their reply then waits for the write to be durable.
fn persists(effects: &[Effect]) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::Persist(_) | Effect::Dispatch(_)))
}

/// The mailbox was full; the message comes back.
pub struct Busy(pub ShardMsg);

/// How a shard-to-shard send went.
enum PeerSend {
    Sent,
    Full(ShardMsg),
    /// The peer has stopped (shutdown).
    Gone,
}

impl Shards {
    /// Starts `count` shard threads.
    pub fn start(
        count: usize,
        mailbox: usize,
        pin: bool,
        settings: ShardSettings,
        services: Services,
        restore: Arc<Restore>,
    ) -> (Shards, ShardThreads) {
        let cores = if pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..count).map(|_| bounded(mailbox)).unzip();
        let shards = Shards {
            mailboxes: senders.into(),
        };
        let mut joins = Vec::with_capacity(count);
        for (index, rx) in receivers.into_iter().enumerate() {
            let services = services.clone();
            let peers = shards.clone();
            let restore = restore.clone();
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let join = std::thread::Builder::new()
                .name(format!("huddle-shard-{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let mut shard = ShardLoop::new(index, settings, services, peers, rx);
                    shard.restore(&restore);
                    drop(restore);
                    shard.run();
                })
                .expect("spawning a shard thread at start-up");
            joins.push(join);
        }
        let threads = ShardThreads {
            joins,
            stop: shards.clone(),
        };
        (shards, threads)
    }

    /// The shard that owns a lobby (and its chat, `lobby:<id>`).
    pub fn of_lobby(&self, lobby_id: &str) -> usize {
        shard_of(lobby_id.as_bytes(), self.count())
    }

    /// The shard that owns a game's matchmaking queues (every mode).
    pub fn of_game(&self, game: &str) -> usize {
        shard_of(matchmaking::shard_key(game).as_bytes(), self.count())
    }

    /// The shard that owns the pair of `a` and `b` (and their direct chat).
    pub fn of_pair(&self, a: &str, b: &str) -> usize {
        shard_of(direct_chat_id(a, b).as_bytes(), self.count())
    }

    pub fn count(&self) -> usize {
        self.mailboxes.len()
    }

    /// The shard that owns `user`.
    pub fn of_user(&self, user: &str) -> usize {
        shard_of(user.as_bytes(), self.count())
    }

    /// The shard that owns a chat. A lobby's chat lives with its lobby.
    pub fn of_chat(&self, chat_id: &str) -> usize {
        let key = chat_id.strip_prefix("lobby:").unwrap_or(chat_id);
        shard_of(key.as_bytes(), self.count())
    }

    /// The shard that serves requests not tied to a key (echo) for `session`.
    pub fn of_session(&self, session: SessionId) -> usize {
        shard_of(&session.to_le_bytes(), self.count())
    }

    fn try_send_peer(&self, shard: usize, msg: ShardMsg) -> PeerSend {
        let env = Envelope {
            msg,
            sent_at: Instant::now(),
        };
        match self.mailboxes[shard].try_send(env) {
            Ok(()) => PeerSend::Sent,
            Err(TrySendError::Full(env)) => PeerSend::Full(env.msg),
            Err(TrySendError::Disconnected(_)) => PeerSend::Gone,
        }
    }

    /// Sends without waiting; a full mailbox hands the message back.
    pub fn try_send(&self, shard: usize, msg: ShardMsg) -> Result<(), Busy> {
        let env = Envelope {
            msg,
            sent_at: Instant::now(),
        };
        match self.mailboxes[shard].try_send(env) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(env)) | Err(TrySendError::Disconnected(env)) => {
                Err(Busy(env.msg))
            }
        }
    }

    /// Sends from a thread that may block (never a shard or an async
    /// worker), waiting for room.
    pub fn send_blocking(&self, shard: usize, msg: ShardMsg) {
        let env = Envelope {
            msg,
            sent_at: Instant::now(),
        };
        let _ = self.mailboxes[shard].send(env);
    }

    /// Sends session control that must not be lost, waiting (off the async
    /// workers) for room when the mailbox is full.
    pub async fn send(&self, shard: usize, msg: ShardMsg) {
        if let Err(Busy(msg)) = self.try_send(shard, msg) {
            let tx = self.mailboxes[shard].clone();
            let env = Envelope {
                msg,
                sent_at: Instant::now(),
            };
            let _ = tokio::task::spawn_blocking(move || tx.send(env)).await;
        }
    }
}

impl ShardThreads {
    /// Stops every shard and waits. First the shards quiesce: rounds of
    /// `Quiesce` until a whole round sends nothing between shards, so every
    /// message one shard owes another has been handled; then `Stop`.
    pub fn join(self) {
        let send = |msg: ShardMsg, tx: &Sender<Envelope>| {
            let _ = tx.send(Envelope {
                msg,
                sent_at: Instant::now(),
            });
        };
        let mut last: Option<u64> = None;
        for _ in 0..10_000 {
            let (reply, answers) = crossbeam_channel::unbounded();
            for tx in self.stop.mailboxes.iter() {
                send(ShardMsg::Quiesce(reply.clone()), tx);
            }
            drop(reply);
            let answers: Vec<(u64, usize)> = answers.iter().collect();
            let parked: usize = answers.iter().map(|a| a.1).sum();
            // Answers arrive in any order; the total is what must settle.
            let sent: u64 = answers.iter().map(|a| a.0).sum();
            if parked == 0 && last == Some(sent) {
                break;
            }
            last = Some(sent);
            if parked > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for tx in self.stop.mailboxes.iter() {
            send(ShardMsg::Stop, tx);
        }
        for j in self.joins {
            let _ = j.join();
        }
    }
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    }
}

/// One shard's loop state.
struct ShardLoop {
    index: usize,
    rx: Receiver<Envelope>,
    /// Every shard's mailbox, this one's included.
    peers: Shards,
    /// Messages for peers whose mailbox was full, per peer, in order.
    deferred: Vec<std::collections::VecDeque<ShardMsg>>,
    deferred_len: usize,
    /// Messages sent to other shards so far (shutdown waits until it stops moving).
    peer_sends: u64,
    users: Users,
    /// Outboxes of the sessions whose users this shard owns.
    outboxes: HashMap<SessionId, Arc<Outbox>>,
    chats: Chats,
    /// Outboxes of the sessions in this shard's chats.
    chat_outboxes: HashMap<SessionId, Arc<Outbox>>,
    /// Outboxes of sessions following the status of this shard's users.
    follower_outboxes: HashMap<SessionId, Arc<Outbox>>,
    /// Friend/block authority of the pairs this shard owns.
    pairs: Pairs,
    /// The relations of the users this shard owns.
    rosters: Rosters,
    notifications: Notifications,
    lobbies: Lobbies,
    /// Lobbies each user this shard owns is in, with their game, oldest first.
    user_lobbies: HashMap<UserId, UserLobbies>,
    lobbies_per_game: usize,
    /// The matchmaking queues of the games this shard owns.
    queues: Queues,
    /// Outboxes of sessions following a ticket's status here.
    watcher_outboxes: HashMap<SessionId, Arc<Outbox>>,
    matchmaking_tick: Duration,
    next_matchmaking_tick: Instant,
    next_sweep: Instant,
    services: Services,
    encoder: Encoder,
    effects: Vec<Effect>,
}

/// What the chat engine may ask this shard: lobby membership from the
/// lobby engine and blocks from the pair authority.
struct Neighbours<'a> {
    pairs: &'a Pairs,
    lobbies: &'a Lobbies,
}

impl ChatContext for Neighbours<'_> {
    fn lobby_member(&self, lobby: &str, user: &str) -> Option<bool> {
        self.lobbies.chat_member(lobby, user)
    }

    fn direct_block(&self, sender: &str, recipient: &str) -> Option<String> {
        self.pairs.direct_block(sender, recipient)
    }
}

/// The notification a domain event creates, and for whom.
fn notification_for(event: &DomainEvent) -> Option<(UserId, NewNotification)> {
    let (user, kind, title, body, data) = match event {
        DomainEvent::FriendshipRequested { from, to } => (
            to,
            "friend.request",
            "Friend request",
            format!("{from} wants to be your friend"),
            serde_json::json!({ "from": from }),
        ),
        DomainEvent::FriendshipAccepted { by, requester } => (
            requester,
            "friend.accepted",
            "Friend request accepted",
            format!("{by} accepted your friend request"),
            serde_json::json!({ "by": by }),
        ),
        DomainEvent::FriendshipRejected { by, requester } => (
            requester,
            "friend.rejected",
            "Friend request declined",
            format!("{by} declined your friend request"),
            serde_json::json!({ "by": by }),
        ),
        DomainEvent::LobbyInvited {
            lobby_id,
            game,
            inviter,
            invitee,
        } => (
            invitee,
            "lobby.invite",
            "Lobby invitation",
            format!("{inviter} invited you to a {game} lobby"),
            serde_json::json!({ "lobby_id": lobby_id, "game": game, "inviter": inviter }),
        ),
        _ => return None,
    };
    Some((
        user.clone(),
        NewNotification {
            kind: kind.into(),
            title: title.into(),
            body,
            data: data.to_string(),
            channels: vec![Channel::InApp, Channel::Push],
        },
    ))
}

impl ShardLoop {
    fn new(
        index: usize,
        settings: ShardSettings,
        services: Services,
        peers: Shards,
        rx: Receiver<Envelope>,
    ) -> Self {
        Self {
            index,
            rx,
            deferred: (0..peers.count()).map(|_| Default::default()).collect(),
            deferred_len: 0,
            peer_sends: 0,
            peers,
            users: Users::new(index as u16, settings.resume_window),
            outboxes: HashMap::new(),
            chats: Chats::new(settings.chat, settings.node, index as u16),
            chat_outboxes: HashMap::new(),
            follower_outboxes: HashMap::new(),
            pairs: Pairs::new(),
            rosters: Rosters::new(),
            notifications: Notifications::new(settings.notifications, settings.node, index as u16),
            lobbies: Lobbies::new(settings.lobbies),
            user_lobbies: HashMap::new(),
            lobbies_per_game: settings.lobbies_per_game,
            queues: Queues::new(),
            watcher_outboxes: HashMap::new(),
            matchmaking_tick: settings.matchmaking_tick,
            next_matchmaking_tick: Instant::now(),
            next_sweep: Instant::now() + SWEEP_EVERY,
            services,
            encoder: Encoder::new(),
            effects: Vec::new(),
        }
    }

    /// Takes this shard's rows of what the store held.
    fn restore(&mut self, restore: &Restore) {
        let count = self.peers.count();
        for r in &restore.relations {
            // Each row holds the whole pair, so either row restores it.
            let Some(pair) = r.pair else { continue };
            if self.peers.of_pair(&r.user, &r.other) == self.index {
                self.pairs.restore(&r.user, &r.other, pair);
            }
            let user_is_lo = r.user < r.other;
            for (user, other, is_lo) in [
                (&r.user, &r.other, user_is_lo),
                (&r.other, &r.user, !user_is_lo),
            ] {
                if shard_of(user.as_bytes(), count) == self.index {
                    let (relation, since_ms) = pair.view(is_lo);
                    self.rosters.set(user, other, relation, since_ms);
                }
            }
        }
        // Pending push/email deliveries come back from the webhook outbox's
        // own table (the source of truth), not from here.
        for r in &restore.ratings {
            if self.peers.of_game(&r.game) == self.index {
                self.queues.restore_rating(r);
            }
        }
        for n in &restore.notifications {
            if shard_of(n.user_id.as_bytes(), count) == self.index {
                self.notifications.restore(n.clone());
            }
        }
        for c in &restore.channels {
            if self.peers.of_chat(&format!("channel:{}", c.name)) == self.index {
                self.chats.restore_channel(c.clone());
            }
        }
    }

    fn run(mut self) {
        let (lag, handled) = metrics().shard_series(self.index);
        loop {
            let matchmaking = self.queues.active().then_some(self.next_matchmaking_tick);
            let mut deadline = [
                self.users.poll_timeout(),
                self.lobbies.poll_timeout(),
                matchmaking,
            ]
            .into_iter()
            .flatten()
            .fold(self.next_sweep, Instant::min);
            if self.deferred_len > 0 {
                self.flush_deferred();
                if self.deferred_len > 0 {
                    deadline = deadline.min(Instant::now() + Duration::from_millis(1));
                }
            }
            match self.rx.recv_deadline(deadline) {
                Ok(Envelope {
                    msg: ShardMsg::Stop,
                    ..
                }) => break,
                Ok(env) => {
                    lag.set(env.sent_at.elapsed().as_secs_f64());
                    handled.inc();
                    self.handle(env.msg);
                    // A busy mailbox never times out: run due timers anyway.
                    if deadline <= Instant::now() {
                        self.timers();
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.timers(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Quiescing emptied the parked messages; a last try for anything
        // later (a peer that stopped first drops it, logged).
        self.flush_deferred();
        for outbox in self.outboxes.values() {
            outbox.close(Closed::Ended);
        }
    }

    /// Sends a message to shard `to` (handling it here when it is this
    /// one). A full peer mailbox parks the message in that peer's FIFO,
    /// retried every loop turn. Past `MAX_DEFERRED` parked messages the
    /// shard waits for room, but only on a higher-numbered peer: waits then
    /// always point the same way, so two shards can never wait on each
    /// other, and the highest shard never waits at all.
    fn send_to_shard(&mut self, to: usize, msg: ShardMsg) {
        if to == self.index {
            return self.handle(msg);
        }
        self.peer_sends += 1;
        if self.deferred[to].is_empty() {
            match self.peers.try_send_peer(to, msg) {
                PeerSend::Sent | PeerSend::Gone => return,
                PeerSend::Full(msg) => {
                    self.deferred[to].push_back(msg);
                    self.deferred_len += 1;
                }
            }
        } else {
            self.deferred[to].push_back(msg);
            self.deferred_len += 1;
        }
        if self.deferred_len > MAX_DEFERRED && to > self.index {
            while let Some(msg) = self.deferred[to].pop_front() {
                self.deferred_len -= 1;
                let env = Envelope {
                    msg,
                    sent_at: Instant::now(),
                };
                let _ = self.peers.mailboxes[to].send(env);
            }
        }
    }

    fn flush_deferred(&mut self) {
        for to in 0..self.deferred.len() {
            while let Some(msg) = self.deferred[to].pop_front() {
                match self.peers.try_send_peer(to, msg) {
                    PeerSend::Sent => self.deferred_len -= 1,
                    PeerSend::Gone => {
                        // Only at shutdown, after quiescing: nothing owed is lost.
                        tracing::warn!(
                            shard = self.index,
                            peer = to,
                            "peer shard gone; message dropped"
                        );
                        self.deferred_len -= 1;
                    }
                    PeerSend::Full(msg) => {
                        self.deferred[to].push_front(msg);
                        break;
                    }
                }
            }
        }
    }

    /// Queues an encoded event to every session of `user` (owned here).
    fn push_to_user(&mut self, user: &str, frame: &EventFrame, skip: &[SessionId]) {
        let mut ended = Vec::new();
        for session in self.users.sessions_of(user) {
            if skip.contains(session) {
                continue;
            }
            if let Some(outbox) = self.outboxes.get(session) {
                if let Push::Overflowed(Closed::OverflowWhileAway) = outbox.push_event(frame) {
                    ended.push(*session);
                }
            }
        }
        for session in ended {
            let cmd = users::Command::Detach {
                session,
                resumable: false,
            };
            self.users.handle(now(), cmd, &mut self.effects);
            self.apply(None);
        }
    }

    /// Queues an encoded event to every session of each user, wherever
    /// their shard is: one message per other shard.
    /// Sessions in `skip` already have the event (status followers).
    fn push_to_users(
        &mut self,
        users: impl IntoIterator<Item = UserId>,
        frame: &EventFrame,
        skip: &[SessionId],
    ) {
        let count = self.peers.count();
        let mut remote: Vec<Vec<UserId>> = vec![Vec::new(); count];
        for user in users {
            let shard = shard_of(user.as_bytes(), count);
            if shard == self.index {
                self.push_to_user(&user, frame, skip);
            } else {
                remote[shard].push(user);
            }
        }
        for (shard, users) in remote.into_iter().enumerate() {
            if !users.is_empty() {
                let frame = frame.clone();
                let skip = (!skip.is_empty()).then(|| Box::from(skip));
                self.send_to_shard(shard, ShardMsg::ToUsers { users, frame, skip });
            }
        }
    }

    /// Expires resume windows and sweeps chat members, whichever is due.
    fn timers(&mut self) {
        let now = now();
        self.users.handle_timeout(now, &mut self.effects);
        self.apply(None);
        self.lobbies.handle_timeout(now, &mut self.effects);
        self.apply(None);
        if self.queues.active() && now.mono >= self.next_matchmaking_tick {
            self.next_matchmaking_tick = now.mono + self.matchmaking_tick;
            self.queues.tick(now, &mut self.effects);
            self.apply(None);
        }
        if now.mono >= self.next_sweep {
            self.sweep_chat_members(now);
        }
    }

    fn handle(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Attach {
                session,
                user,
                resume_token,
                outbox,
            } => {
                self.outboxes.insert(session, outbox);
                let cmd = users::Command::Attach {
                    session,
                    user,
                    resume_token,
                };
                self.users.handle(now(), cmd, &mut self.effects);
                self.apply(None);
            }
            ShardMsg::Resume {
                session,
                user,
                resume_token,
                next_token,
                last_seq,
                wake,
                reply,
            } => {
                let cmd = users::Command::Resume {
                    session,
                    user,
                    resume_token,
                    next_token,
                };
                self.users.handle(now(), cmd, &mut self.effects);
                let accepted = self
                    .effects
                    .iter()
                    .any(|e| matches!(e, Effect::ResumeAccepted { .. }));
                let refused = self.effects.iter().find_map(|e| match e {
                    Effect::ResumeRefused { reason, .. } => Some(*reason),
                    _ => None,
                });
                self.effects.clear();
                let result = match (accepted, refused, self.outboxes.get(&session)) {
                    (true, _, Some(outbox)) => match outbox.resume(last_seq, wake) {
                        Ok((replayed, generation)) => {
                            metrics().sessions_resumed.inc();
                            Ok(Resumed {
                                outbox: outbox.clone(),
                                generation,
                                replayed,
                            })
                        }
                        Err(gap) => {
                            // An inexact resume is no resume: end the session.
                            let cmd = users::Command::Detach {
                                session,
                                resumable: false,
                            };
                            self.users.handle(now(), cmd, &mut self.effects);
                            self.apply(None);
                            Err(ResumeFailure::Gap(gap))
                        }
                    },
                    (_, Some(reason), _) => Err(ResumeFailure::Refused(reason)),
                    _ => Err(ResumeFailure::Refused(ResumeRefusal::UnknownSession)),
                };
                let _ = reply.send(result);
            }
            ShardMsg::Detach {
                session,
                generation,
                resumable,
            } => {
                // Resumes run on this thread too, so this check cannot race.
                let current = self.outboxes.get(&session).map(|o| o.generation());
                if current == Some(generation) {
                    let cmd = users::Command::Detach { session, resumable };
                    self.users.handle(now(), cmd, &mut self.effects);
                    self.apply(None);
                }
            }
            ShardMsg::Request { cmd, reply_to } => {
                self.users.handle(now(), cmd, &mut self.effects);
                self.apply(Some(&reply_to));
            }
            ShardMsg::Lookup { user_ids, reply } => {
                self.users.handle(
                    now(),
                    users::Command::Lookup { user_ids },
                    &mut self.effects,
                );
                for effect in self.effects.drain(..) {
                    if let Effect::Presence(rows) = effect {
                        let _ = reply.send(rows);
                        break;
                    }
                }
                self.effects.clear();
            }
            ShardMsg::Chat {
                cmd,
                reply_to,
                member,
            } => {
                if let (Some(outbox), chat::Command::Join { session, .. }) = (member, &*cmd) {
                    self.chat_outboxes.entry(*session).or_insert(outbox);
                }
                let session = chat_session(&cmd);
                let ctx = Neighbours {
                    pairs: &self.pairs,
                    lobbies: &self.lobbies,
                };
                self.chats.handle(now(), &ctx, *cmd, &mut self.effects);
                self.apply(Some(&reply_to));
                if let Some(session) = session {
                    if !self.chats.in_any_chat(session) {
                        self.chat_outboxes.remove(&session);
                    }
                }
            }
            ShardMsg::ChatUnread {
                actor,
                chat_ids,
                reply,
            } => {
                let ctx = Neighbours {
                    pairs: &self.pairs,
                    lobbies: &self.lobbies,
                };
                let _ = reply.send(self.chats.unread(&ctx, &actor, &chat_ids));
            }
            ShardMsg::Follow {
                session,
                targets,
                follow,
                outbox,
                reply,
            } => {
                if follow {
                    self.follower_outboxes.entry(session).or_insert(outbox);
                }
                let cmd = users::Command::Follow {
                    session,
                    targets,
                    follow,
                };
                self.users.handle(now(), cmd, &mut self.effects);
                for effect in self.effects.drain(..) {
                    if let Effect::Presence(rows) = effect {
                        let _ = reply.send(rows);
                        break;
                    }
                }
                self.effects.clear();
            }
            ShardMsg::CreateChannel { spec, reply } => {
                let cmd = chat::Command::CreateChannel(spec);
                let ctx = Neighbours {
                    pairs: &self.pairs,
                    lobbies: &self.lobbies,
                };
                self.chats.handle(now(), &ctx, cmd, &mut self.effects);
                let failure = self.effects.iter().find_map(|e| match e {
                    Effect::Fail { failure, .. } => Some(failure.clone()),
                    _ => None,
                });
                self.effects.retain(|e| matches!(e, Effect::Persist(_)));
                self.apply(None);
                let result = failure.map_or(Ok(()), Err);
                // Created means stored: the operator hears once it is.
                self.services.history.after_durable(move || {
                    let _ = reply.send(result);
                });
            }
            ShardMsg::Friend {
                cmd,
                reply_to,
                stage,
            } => self.friend_stage(cmd, reply_to, stage),
            ShardMsg::Roster {
                user,
                other,
                relation,
                since_ms,
            } => {
                self.rosters.set(&user, &other, relation, since_ms);
                let event = Event::FriendUpdate {
                    user_id: other,
                    relation,
                    since_ms,
                };
                let frame = wire::event_frame(&mut self.encoder, &event, true);
                self.push_to_user(&user, &frame, &[]);
            }
            ShardMsg::FriendList { user, reply } => {
                let _ = reply.send(self.rosters.list(&user));
            }
            ShardMsg::Notifications { cmd, reply_to } => {
                self.notifications.handle(now(), cmd, &mut self.effects);
                self.apply(reply_to.as_ref());
            }
            ShardMsg::Announce { users, what, reply } => {
                let users: Vec<UserId> = match users {
                    Some(users) => users,
                    None => self.users.connected_users().cloned().collect(),
                };
                let count = users.len();
                let cmd = notifications::Command::Create { users, what };
                self.notifications.handle(now(), cmd, &mut self.effects);
                self.apply(None);
                // The operator API answers for what is stored.
                self.services.history.after_durable(move || {
                    let _ = reply.send(count);
                });
            }
            ShardMsg::ToUsers { users, frame, skip } => {
                let skip = skip.as_deref().unwrap_or(&[]);
                for user in users {
                    self.push_to_user(&user, &frame, skip);
                }
            }
            ShardMsg::Lobby {
                cmd,
                reply_to,
                member,
            } => {
                let lobby_id = lobby_of(&cmd).clone();
                self.lobbies.handle(now(), *cmd, &mut self.effects);
                self.apply(reply_to.as_ref());
                if let Some(m) = member {
                    let LobbyMember {
                        session,
                        actor,
                        outbox,
                    } = *m;
                    self.join_lobby_chat(&lobby_id, session, actor, outbox);
                }
            }
            ShardMsg::LobbyAdmin { cmd, reply } => {
                self.lobbies.handle(now(), *cmd, &mut self.effects);
                let result = self.take_admin_answer().map(|reply| match reply {
                    Some(crate::core::engine::Reply::Lobby(l)) => Some(l),
                    _ => None,
                });
                self.apply(None);
                let _ = reply.send(result);
            }
            ShardMsg::LobbyIndex {
                user,
                lobby_id,
                game,
                joined,
                since_version,
            } => self.index_lobby(user, lobby_id, game, joined, since_version),
            ShardMsg::InviteCheck(check) => {
                let InviteCheck {
                    request_id,
                    lobby_id,
                    game,
                    inviter,
                    invitee,
                    friends_only,
                    reply_to,
                } = *check;
                let refusal = if self.pairs.blocked(&invitee, &inviter) {
                    Some(format!("{invitee} does not accept invitations from you"))
                } else if friends_only
                    && self.pairs.relation(&inviter, &invitee) != social::Relation::Friend
                {
                    Some(format!(
                        "{invitee} is not your friend; only friends may be invited to a lobby that is not public"
                    ))
                } else {
                    None
                };
                let result = match refusal {
                    Some(why) => Effect::Fail {
                        request_id,
                        failure: Failure::new(crate::core::engine::Refusal::AccessDenied, why),
                    },
                    None => {
                        let shard = self.peers.of_lobby(&lobby_id);
                        let cmd = lobbies::Command::Invited {
                            lobby_id: lobby_id.clone(),
                            invitee: invitee.clone(),
                        };
                        let msg = ShardMsg::Lobby {
                            cmd: Box::new(cmd),
                            reply_to: None,
                            member: None,
                        };
                        self.send_to_shard(shard, msg);
                        self.effects.push(Effect::Domain(DomainEvent::LobbyInvited {
                            lobby_id: lobby_id.clone(),
                            game,
                            inviter,
                            invitee: invitee.clone(),
                        }));
                        Effect::Reply {
                            request_id,
                            reply: crate::core::engine::Reply::LobbyInvited {
                                lobby_id,
                                user_id: invitee,
                            },
                        }
                    }
                };
                self.effects.push(result);
                self.apply(reply_to.as_ref());
            }
            ShardMsg::Matchmaking {
                cmd,
                reply_to,
                watcher,
            } => self.matchmaking(*cmd, reply_to, watcher),
            ShardMsg::MatchmakingAdmin { cmd, reply } => {
                self.queues.handle(now(), *cmd, &mut self.effects);
                let result = self.take_admin_answer().map(|_| ());
                let persisted = persists(&self.effects);
                self.apply(None);
                // A rating the backend set is answered once stored.
                self.once_stored(persisted, move || {
                    let _ = reply.send(result);
                });
            }
            ShardMsg::PartyStart(p) => self.party_start(*p),
            ShardMsg::MatchLobby(m) => self.match_lobby(*m),
            ShardMsg::LobbyList(q) => {
                let _ = q
                    .reply
                    .send(self.lobbies.list(&q.filter, &q.after, q.limit));
            }
            ShardMsg::Quiesce(reply) => {
                // Never wait here: a peer may be quiescing too.
                self.flush_deferred();
                let _ = reply.send((self.peer_sends, self.deferred_len));
            }
            ShardMsg::Stop => {}
        }
    }

    /// One stage of a friend operation (see [`ShardMsg::Friend`]).
    fn friend_stage(&mut self, cmd: social::OpCommand, reply_to: Arc<Outbox>, stage: FriendStage) {
        let refuse = |this: &mut Self, cmd: &social::OpCommand, message: String| {
            let f = Failure::new(crate::core::engine::Refusal::FriendError, message);
            let bytes = wire::failure_frame(&mut this.encoder, cmd.request_id, &f);
            reply_to.push_reply(bytes, huddle_schema::wire::Body::Error);
        };
        let next = match stage {
            FriendStage::Decide => {
                self.pairs.handle(now(), cmd, &mut self.effects);
                self.apply(Some(&reply_to));
                return;
            }
            FriendStage::Actor => {
                let adds = matches!(cmd.op, social::Op::Request | social::Op::Block);
                if adds && self.rosters.count(&cmd.actor) >= social::MAX_RELATIONS {
                    let why = format!(
                        "you have {} friends, requests and blocks, the most allowed; remove some first",
                        social::MAX_RELATIONS
                    );
                    return refuse(self, &cmd, why);
                }
                if cmd.op == social::Op::Request {
                    FriendStage::Target
                } else {
                    FriendStage::Decide
                }
            }
            FriendStage::Target => {
                if self.rosters.incoming(&cmd.target) >= social::MAX_INCOMING {
                    let why = format!(
                        "{} has {} friend requests waiting, the most allowed; try again later",
                        cmd.target,
                        social::MAX_INCOMING
                    );
                    return refuse(self, &cmd, why);
                }
                FriendStage::Decide
            }
        };
        let shard = match next {
            FriendStage::Target => self.peers.of_user(&cmd.target),
            _ => self.peers.of_pair(&cmd.actor, &cmd.target),
        };
        let msg = ShardMsg::Friend {
            cmd,
            reply_to,
            stage: next,
        };
        self.send_to_shard(shard, msg);
    }

    /// Takes the engine's answer to an operator's command (request 0) out
    /// of the pending effects: its reply, or its refusal.
    fn take_admin_answer(&mut self) -> Result<Option<crate::core::engine::Reply>, Failure> {
        let mut result = Ok(None);
        self.effects.retain(|e| match e {
            Effect::Reply {
                request_id: 0,
                reply,
            } => {
                result = Ok(Some(reply.clone()));
                false
            }
            Effect::Fail {
                request_id: 0,
                failure,
            } => {
                result = Err(failure.clone());
                false
            }
            _ => true,
        });
        result
    }

    /// A matchmaking command for this shard's games.
    fn matchmaking(
        &mut self,
        cmd: matchmaking::Command,
        reply_to: Option<Arc<Outbox>>,
        watcher: Option<Arc<Outbox>>,
    ) {
        let cmd = match cmd {
            matchmaking::Command::Configure(specs) => {
                let mine = specs
                    .into_iter()
                    .filter(|s| self.peers.of_game(&s.game) == self.index)
                    .collect();
                matchmaking::Command::Configure(mine)
            }
            other => other,
        };
        let session = match &cmd {
            matchmaking::Command::Start(s) => s.session,
            matchmaking::Command::Watch {
                session,
                watch: true,
                ..
            } => Some(*session),
            _ => None,
        };
        self.queues.handle(now(), cmd, &mut self.effects);
        // Keep the session's outbox only when it now follows a ticket (a
        // refused start or subscribe leaves nothing behind).
        let refused = self
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Fail { .. }));
        if let (Some(session), Some(outbox), false) = (session, watcher, refused) {
            self.watcher_outboxes.entry(session).or_insert(outbox);
        }
        self.apply(reply_to.as_ref());
    }

    /// A host queues their lobby: the members join the ticket as a party.
    fn party_start(&mut self, p: PartyStart) {
        let PartyStart {
            mut start,
            lobby_id,
            reply_to,
        } = p;
        let host = start
            .players
            .first()
            .map(|a| a.id.clone())
            .unwrap_or_default();
        let refusal = match self.lobbies.party(&lobby_id, &host) {
            Ok((game, _)) if game != start.game => Some(Failure::new(
                crate::core::engine::Refusal::LobbyError,
                format!(
                    "lobby {lobby_id} is a {game} lobby; it cannot queue for {}",
                    start.game
                ),
            )),
            Ok((_, players)) => {
                start.players = players;
                start.party = Some(lobby_id);
                None
            }
            Err(f) => Some(f),
        };
        if let Some(f) = refusal {
            let bytes = wire::failure_frame(&mut self.encoder, start.request_id, &f);
            reply_to.push_reply(bytes, huddle_schema::wire::Body::Error);
            return;
        }
        let shard = self.peers.of_game(&start.game);
        let msg = ShardMsg::Matchmaking {
            cmd: Box::new(matchmaking::Command::Start(Box::new(start))),
            reply_to: Some(reply_to.clone()),
            watcher: Some(reply_to),
        };
        self.send_to_shard(shard, msg);
    }

    /// Creates a formed match's lobby (this is the lobby's shard) with the
    /// teams assigned, then sends `matchmaking:matched` to every player's
    /// connections and publishes `matchmaking.matched`.
    fn match_lobby(&mut self, m: MatchLobby) {
        let MatchLobby { matched, lobby_id } = m;
        let assigned: Vec<(chat::Author, Option<u8>)> = matched
            .players
            .iter()
            .map(|p| (p.author.clone(), Some(p.team)))
            .collect();
        let cmd = if matched.backfill_lobby.is_some() {
            lobbies::Command::Assign {
                lobby_id: lobby_id.clone(),
                players: assigned,
            }
        } else {
            let size = u16::try_from(matched.players.len()).unwrap_or(u16::MAX);
            let spec = lobbies::LobbySpec {
                game: matched.game.to_string(),
                mode: matched.mode.to_string(),
                region: matched.region.to_string(),
                min: size,
                max: size,
                visibility: lobbies::Visibility::InviteOnly,
                password: None,
                chat: true,
                settings: [("match_id".to_string(), matched.match_id.to_string())].into(),
            };
            lobbies::Command::Create {
                request_id: 0,
                lobby_id: lobby_id.clone(),
                host: None,
                spec,
                assigned,
            }
        };
        self.lobbies.handle(now(), cmd, &mut self.effects);
        let refused = self.effects.iter().find_map(|e| match e {
            Effect::Fail {
                request_id: 0,
                failure,
            } => Some(failure.message.clone()),
            _ => None,
        });
        self.apply(None);
        let at = matched.matched_at_ms;
        // One encoding per ticket and team (a party's members share it).
        let mut groups: Vec<(Arc<str>, u8, Vec<UserId>)> = Vec::new();
        for p in &matched.players {
            match groups
                .iter_mut()
                .find(|(r, t, _)| *r == p.request_id && *t == p.team)
            {
                Some(g) => g.2.push(p.author.id.clone()),
                None => groups.push((p.request_id.clone(), p.team, vec![p.author.id.clone()])),
            }
        }
        for (request_id, team, users) in groups {
            let mut event = matchmaking::MatchEvent::new(
                if refused.is_some() {
                    matchmaking::EventKind::Removed
                } else {
                    matchmaking::EventKind::Matched
                },
                request_id,
                at,
            );
            event.match_id = matched.match_id.clone();
            if let Some(why) = &refused {
                event.reason = format!("the match's lobby could not be created: {why}");
            } else {
                event.lobby_id = lobby_id.clone();
                event.team = i16::from(team);
            }
            let frame = wire::event_frame(
                &mut self.encoder,
                &Event::Matchmaking(Arc::new(event)),
                true,
            );
            self.push_to_users(users, &frame, &[]);
        }
        match refused {
            Some(why) => {
                tracing::warn!(match_id = %matched.match_id, %why, "a formed match's lobby refused its players");
                let mut request_ids: Vec<Arc<str>> = matched
                    .players
                    .iter()
                    .map(|p| p.request_id.clone())
                    .collect();
                request_ids.dedup();
                let cmd = matchmaking::Command::MatchFailed {
                    game: matched.game.clone(),
                    request_ids,
                    backfill_lobby: matched.backfill_lobby.clone(),
                };
                let msg = ShardMsg::Matchmaking {
                    cmd: Box::new(cmd),
                    reply_to: None,
                    watcher: None,
                };
                self.send_to_shard(self.peers.of_game(&matched.game), msg);
            }
            None => self.publish(DomainEvent::MatchmakingMatched {
                matched: Box::new(matched),
                lobby_id,
            }),
        }
    }

    /// A session that just became (or already was) a member of a lobby with
    /// chat joins the lobby's chat, which lives on this same shard.
    fn join_lobby_chat(
        &mut self,
        lobby_id: &Arc<str>,
        session: SessionId,
        actor: chat::Actor,
        outbox: Arc<Outbox>,
    ) {
        if self.lobbies.chat_member(lobby_id, &actor.author.id) != Some(true) {
            return;
        }
        self.chat_outboxes.entry(session).or_insert(outbox.clone());
        let cmd = chat::Command::Join {
            request_id: 0,
            session,
            actor,
            chat_id: Arc::from(format!("lobby:{lobby_id}")),
        };
        let ctx = Neighbours {
            pairs: &self.pairs,
            lobbies: &self.lobbies,
        };
        self.chats.handle(now(), &ctx, cmd, &mut self.effects);
        // The lobby's reply already told the client: the chat's own reply
        // (request 0) is dropped here, and its warm-up's by the reader.
        self.effects
            .retain(|e| !matches!(e, Effect::Reply { request_id: 0, .. }));
        self.apply(Some(&outbox));
    }

    /// The user's lobby index: one lobby per game (the oldest gives way),
    /// at most `MAX_LOBBIES_PER_USER` in all, and the lobby learns whether
    /// its new member is online now.
    fn index_lobby(
        &mut self,
        user: UserId,
        lobby_id: Arc<str>,
        game: Arc<str>,
        joined: bool,
        since_version: u64,
    ) {
        let list = self.user_lobbies.entry(user.clone()).or_default();
        list.retain(|(l, _, _)| *l != lobby_id);
        let mut superseded: Vec<(Arc<str>, u64)> = Vec::new();
        if joined {
            list.push((lobby_id.clone(), game.clone(), since_version));
            let same = list.iter().filter(|(_, g, _)| *g == game).count();
            let mut extra_same = same.saturating_sub(self.lobbies_per_game);
            let mut extra_all = list.len().saturating_sub(MAX_LOBBIES_PER_USER);
            list.retain(|(l, g, v)| {
                let drop = if *g == game && extra_same > 0 {
                    extra_same -= 1;
                    true
                } else if extra_all > 0 && *l != lobby_id {
                    extra_all -= 1;
                    true
                } else {
                    false
                };
                if drop {
                    superseded.push((l.clone(), *v));
                }
                !drop
            });
        }
        if list.is_empty() {
            self.user_lobbies.remove(&user);
        }
        for (old, since_version) in superseded {
            let cmd = lobbies::Command::Superseded {
                lobby_id: old.clone(),
                user: user.clone(),
                since_version,
            };
            let msg = ShardMsg::Lobby {
                cmd: Box::new(cmd),
                reply_to: None,
                member: None,
            };
            self.send_to_shard(self.peers.of_lobby(&old), msg);
        }
        if joined {
            let online = !self.users.sessions_of(&user).is_empty();
            let cmd = lobbies::Command::Presence {
                lobby_id: lobby_id.clone(),
                user,
                online,
            };
            let msg = ShardMsg::Lobby {
                cmd: Box::new(cmd),
                reply_to: None,
                member: None,
            };
            self.send_to_shard(self.peers.of_lobby(&lobby_id), msg);
        }
    }

    /// Chat members whose sessions ended (resume window passed, slow
    /// consumer) leave their chats, which tells the others.
    fn sweep_chat_members(&mut self, now: Now) {
        self.next_sweep = now.mono + SWEEP_EVERY;
        let gone: Vec<SessionId> = self
            .chat_outboxes
            .iter()
            .filter(|(_, o)| o.is_closed())
            .map(|(s, _)| *s)
            .collect();
        if !gone.is_empty() {
            self.end_chat_sessions(gone);
        }
        let gone: Vec<SessionId> = self
            .watcher_outboxes
            .iter()
            .filter(|(_, o)| o.is_closed())
            .map(|(s, _)| *s)
            .collect();
        if !gone.is_empty() {
            for s in &gone {
                self.watcher_outboxes.remove(s);
            }
            let cmd = matchmaking::Command::SessionsGone(gone);
            self.queues.handle(now, cmd, &mut self.effects);
            self.apply(None);
        }
        let gone: Vec<SessionId> = self
            .follower_outboxes
            .iter()
            .filter(|(_, o)| o.is_closed())
            .map(|(s, _)| *s)
            .collect();
        if !gone.is_empty() {
            for s in &gone {
                self.follower_outboxes.remove(s);
            }
            let cmd = users::Command::FollowersGone { sessions: gone };
            self.users.handle(now, cmd, &mut self.effects);
            self.apply(None);
        }
    }

    fn end_chat_sessions(&mut self, sessions: Vec<SessionId>) {
        for s in &sessions {
            self.chat_outboxes.remove(s);
        }
        let cmd = chat::Command::SessionsGone { sessions };
        let ctx = Neighbours {
            pairs: &self.pairs,
            lobbies: &self.lobbies,
        };
        self.chats.handle(now(), &ctx, cmd, &mut self.effects);
        self.apply(None);
    }

    /// Sends a reply; one that stands for something stored waits until
    /// everything this shard queued for the store is durable. That is a
    /// reply to a request whose handling `persisted` a record, or an
    /// acknowledgement that may stand for a record written earlier (a
    /// nonce's `duplicate`). Other replies (joins, lobbies, presence) never
    /// wait, so they keep flowing while a failing disk holds records back;
    /// deliveries to other sessions never wait either.
    fn answer(
        &self,
        outbox: &Arc<Outbox>,
        bytes: bytes::Bytes,
        body: huddle_schema::wire::Body,
        persisted: bool,
    ) {
        use huddle_schema::wire::Body;
        let acknowledges = matches!(
            body,
            Body::ChatSent
                | Body::ChatUpdated
                | Body::ChatReadAck
                | Body::FriendOpDone
                | Body::NotificationCounts
        );
        let outbox = outbox.clone();
        self.once_stored(persisted || acknowledges, move || {
            outbox.push_reply(bytes, body);
        });
    }

    /// Runs `then` once this shard's queued records are durable when
    /// `stands_for_a_record`, at once otherwise (or when nothing waits).
    fn once_stored(&self, stands_for_a_record: bool, then: impl FnOnce() + Send + 'static) {
        if stands_for_a_record {
            self.services.history.after_durable(then);
        } else {
            then();
        }
    }

    /// Carries out the effects the engines produced: replies to
    /// `reply_to` (once what they stand for is stored), events encoded
    /// once and queued to every recipient.
    fn apply(&mut self, reply_to: Option<&Arc<Outbox>>) {
        let mut ended = Vec::new();
        let mut gone_from_chats = Vec::new();
        let effects = std::mem::take(&mut self.effects);
        let persisted = persists(&effects);
        // Replies go out after every effect is carried out: an engine may
        // push its reply before the record it stands for, and the reply must
        // see that record queued to know it has to wait for it.
        let mut replies = Vec::new();
        for effect in effects {
            match effect {
                Effect::Reply { request_id, reply } => {
                    let frame = wire::reply_frame(&mut self.encoder, request_id, &reply);
                    if let (Some(outbox), Some(frame)) = (reply_to, frame) {
                        replies.push((outbox, frame));
                    }
                }
                Effect::Fail {
                    request_id,
                    failure,
                } => {
                    if let Some(outbox) = reply_to {
                        let bytes = wire::failure_frame(&mut self.encoder, request_id, &failure);
                        outbox.push_reply(bytes, huddle_schema::wire::Body::Error);
                    }
                }
                Effect::Deliver {
                    sessions,
                    event,
                    reliable,
                } => {
                    let frame = wire::event_frame(&mut self.encoder, &event, reliable);
                    for session in sessions {
                        if let Some(outbox) = self.outboxes.get(&session) {
                            if let Push::Overflowed(Closed::OverflowWhileAway) =
                                outbox.push_event(&frame)
                            {
                                ended.push(session);
                            }
                        } else if let Some(outbox) = self
                            .follower_outboxes
                            .get(&session)
                            .or_else(|| self.watcher_outboxes.get(&session))
                        {
                            // A follower (or ticket watcher) homed elsewhere:
                            // its own shard ends the session; the sweep
                            // forgets the follow.
                            outbox.push_event(&frame);
                        }
                    }
                }
                Effect::Broadcast {
                    chat,
                    event,
                    reliable,
                    except,
                } => {
                    let frame = wire::event_frame(&mut self.encoder, &event, reliable);
                    for session in self.chats.sessions(&chat) {
                        if Some(session) == except {
                            continue;
                        }
                        let Some(outbox) = self.chat_outboxes.get(&session) else {
                            continue;
                        };
                        match outbox.push_event(&frame) {
                            Push::Queued | Push::Shed => {}
                            Push::Overflowed(_) | Push::AlreadyClosed => {
                                gone_from_chats.push(session)
                            }
                        }
                    }
                }
                Effect::Persist(record) => self.services.history.persist(record),
                Effect::ToUser { user, event } => {
                    let frame = wire::event_frame(&mut self.encoder, &event, true);
                    self.push_to_users([user], &frame, &[]);
                }
                Effect::ToFriends {
                    user,
                    event,
                    followers,
                } => {
                    let friends: Vec<UserId> = self.rosters.friends(&user).cloned().collect();
                    if friends.is_empty() && followers.is_empty() {
                        continue;
                    }
                    // One encoding for followers and friends; a session that
                    // is both hears it once.
                    let frame = wire::event_frame(&mut self.encoder, &event, true);
                    for session in &followers {
                        if let Some(outbox) = self
                            .outboxes
                            .get(session)
                            .or_else(|| self.follower_outboxes.get(session))
                        {
                            if let Push::Overflowed(Closed::OverflowWhileAway) =
                                outbox.push_event(&frame)
                            {
                                if self.outboxes.contains_key(session) {
                                    ended.push(*session);
                                }
                            }
                        }
                    }
                    self.push_to_users(friends, &frame, &followers);
                }
                Effect::RelationChanged {
                    user,
                    other,
                    relation,
                    since_ms,
                } => {
                    let shard = self.peers.of_user(&user);
                    let msg = ShardMsg::Roster {
                        user,
                        other,
                        relation,
                        since_ms,
                    };
                    self.send_to_shard(shard, msg);
                }
                Effect::Dispatch(delivery) => self.services.webhooks.deliver(&delivery),
                Effect::ToUsers { users, event } => {
                    let frame = wire::event_frame(&mut self.encoder, &event, true);
                    self.push_to_users(users, &frame, &[]);
                }
                Effect::LobbyMembership {
                    user,
                    lobby_id,
                    game,
                    joined,
                    since_version,
                } => {
                    if !joined {
                        // Out of the lobby is out of its chat (same shard).
                        let cmd = chat::Command::RemoveUser {
                            chat_id: Arc::from(format!("lobby:{lobby_id}")),
                            user: user.clone(),
                        };
                        let ctx = Neighbours {
                            pairs: &self.pairs,
                            lobbies: &self.lobbies,
                        };
                        self.chats.handle(now(), &ctx, cmd, &mut self.effects);
                        self.apply(None);
                    }
                    let shard = self.peers.of_user(&user);
                    let msg = ShardMsg::LobbyIndex {
                        user,
                        lobby_id,
                        game,
                        joined,
                        since_version,
                    };
                    self.send_to_shard(shard, msg);
                }
                Effect::LobbyInvite {
                    request_id,
                    lobby_id,
                    game,
                    inviter,
                    invitee,
                    friends_only,
                } => {
                    let shard = self.peers.of_pair(&inviter, &invitee);
                    let msg = ShardMsg::InviteCheck(Box::new(InviteCheck {
                        request_id,
                        lobby_id,
                        game,
                        inviter,
                        invitee,
                        friends_only,
                        reply_to: reply_to.cloned(),
                    }));
                    self.send_to_shard(shard, msg);
                }
                Effect::HistoryPage {
                    request_id,
                    chat_id,
                    before_id,
                    limit,
                    partial,
                } => {
                    if let Some(outbox) = reply_to {
                        let job = PageJob {
                            request_id,
                            chat_id,
                            partial,
                            before_id,
                            limit,
                            reply_to: outbox.clone(),
                        };
                        if self.services.history.read(ReadJob::Page(job)).is_err() {
                            let busy = crate::core::engine::Failure::new(
                                crate::core::engine::Refusal::RateLimited,
                                "history reads are backed up; retry shortly",
                            );
                            let bytes = wire::failure_frame(&mut self.encoder, request_id, &busy);
                            outbox.push_reply(bytes, huddle_schema::wire::Body::Error);
                        }
                    }
                }
                Effect::WarmUp {
                    request_id,
                    chat_id,
                    user,
                    recent,
                    joined,
                } => {
                    let Some(outbox) = reply_to else { continue };
                    let (peers, shard) = (self.peers.clone(), self.index);
                    let reply_to = outbox.clone();
                    let job = WarmJob {
                        request_id,
                        chat_id,
                        user,
                        recent,
                        joined,
                        reply_to: outbox.clone(),
                        back: Box::new(move |cmd| {
                            let msg = ShardMsg::Chat {
                                cmd: Box::new(cmd),
                                reply_to,
                                member: None,
                            };
                            peers.send_blocking(shard, msg);
                        }),
                    };
                    if let Err(ReadJob::Warm(job)) = self.services.history.read(ReadJob::Warm(job))
                    {
                        // The reader is far behind: answer from memory, and
                        // let the next join ask the store again.
                        tracing::warn!(chat = %job.chat_id, "history reader busy; join answered without the stored cursor");
                        let cmd = chat::Command::WarmFailed {
                            chat_id: job.chat_id.clone(),
                            user: job.user.clone(),
                        };
                        let ctx = Neighbours {
                            pairs: &self.pairs,
                            lobbies: &self.lobbies,
                        };
                        self.chats.handle(now(), &ctx, cmd, &mut self.effects);
                        let frame = (request_id != 0)
                            .then(|| wire::reply_frame(&mut self.encoder, request_id, &job.joined))
                            .flatten();
                        if let Some((bytes, body)) = frame {
                            outbox.push_reply(bytes, body);
                        }
                    }
                }
                Effect::SessionEnded { session } => {
                    if let Some(outbox) = self.outboxes.remove(&session) {
                        outbox.close(Closed::Ended);
                    }
                }
                Effect::Domain(event) => self.publish(event),
                Effect::MatchFormed(matched) => {
                    let lobby_id: Arc<str> = matched.backfill_lobby.clone().unwrap_or_else(|| {
                        Arc::from(format!("m{:015x}", rand::random::<u64>() >> 4))
                    });
                    let shard = self.peers.of_lobby(&lobby_id);
                    let msg = ShardMsg::MatchLobby(Box::new(MatchLobby {
                        matched: *matched,
                        lobby_id,
                    }));
                    self.send_to_shard(shard, msg);
                }
                Effect::Presence(_)
                | Effect::ResumeAccepted { .. }
                | Effect::ResumeRefused { .. } => {}
            }
        }
        for (outbox, (bytes, body)) in replies {
            self.answer(outbox, bytes, body, persisted);
        }
        // Sessions whose held events overflowed while the client was away
        // can never resume exactly: end them now.
        for session in ended {
            let cmd = users::Command::Detach {
                session,
                resumable: false,
            };
            self.users.handle(now(), cmd, &mut self.effects);
            self.apply(None);
        }
        if !gone_from_chats.is_empty() {
            gone_from_chats.sort_unstable();
            gone_from_chats.dedup();
            self.end_chat_sessions(gone_from_chats);
        }
    }
}

impl ShardLoop {
    /// The domain event bus: the engines that subscribe (notifications for
    /// friendship events) get their commands, and the integration webhook
    /// gets the event when one is configured.
    fn publish(&mut self, event: DomainEvent) {
        self.services.webhooks.publish(&event);
        // A member's lobbies learn when their last session ends or a new
        // one starts (this is the user's shard, which keeps their index).
        if let DomainEvent::UserOnline { user } | DomainEvent::UserOffline { user } = &event {
            let online = matches!(event, DomainEvent::UserOnline { .. });
            let lobbies: Vec<Arc<str>> = self
                .user_lobbies
                .get(user)
                .map(|l| l.iter().map(|(id, _, _)| id.clone()).collect())
                .unwrap_or_default();
            for lobby_id in lobbies {
                let cmd = lobbies::Command::Presence {
                    lobby_id: lobby_id.clone(),
                    user: user.clone(),
                    online,
                };
                let msg = ShardMsg::Lobby {
                    cmd: Box::new(cmd),
                    reply_to: None,
                    member: None,
                };
                self.send_to_shard(self.peers.of_lobby(&lobby_id), msg);
            }
        }
        if let Some((user, what)) = notification_for(&event) {
            let shard = self.peers.of_user(&user);
            let cmd = notifications::Command::Create {
                users: vec![user],
                what: Arc::new(what),
            };
            let msg = ShardMsg::Notifications {
                cmd,
                reply_to: None,
            };
            self.send_to_shard(shard, msg);
        }
    }
}

/// The lobby a lobby command is about.
pub(crate) fn lobby_of(cmd: &lobbies::Command) -> &Arc<str> {
    use lobbies::Command as C;
    match cmd {
        C::Create { lobby_id, .. }
        | C::Join { lobby_id, .. }
        | C::Leave { lobby_id, .. }
        | C::Ready { lobby_id, .. }
        | C::Kick { lobby_id, .. }
        | C::Update { lobby_id, .. }
        | C::TransferHost { lobby_id, .. }
        | C::Start { lobby_id, .. }
        | C::Close { lobby_id, .. }
        | C::Invite { lobby_id, .. }
        | C::Invited { lobby_id, .. }
        | C::Get { lobby_id, .. }
        | C::Presence { lobby_id, .. }
        | C::Superseded { lobby_id, .. }
        | C::Assign { lobby_id, .. } => lobby_id,
    }
}

/// The session a chat command acts for.
fn chat_session(cmd: &chat::Command) -> Option<SessionId> {
    match cmd {
        chat::Command::Join { session, .. }
        | chat::Command::Leave { session, .. }
        | chat::Command::Send { session, .. }
        | chat::Command::Typing { session, .. }
        | chat::Command::Read { session, .. }
        | chat::Command::History { session, .. }
        | chat::Command::Amend { session, .. } => Some(*session),
        chat::Command::Mute { .. }
        | chat::Command::Warmed { .. }
        | chat::Command::RemoveUser { .. }
        | chat::Command::WarmFailed { .. } => None,
        chat::Command::CreateChannel(_) | chat::Command::SessionsGone { .. } => None,
    }
}

#[cfg(test)]
mod size_tests {
    /// Every mailbox slot is as large as the largest message: keep it small.
    #[test]
    fn shard_messages_stay_small() {
        assert!(std::mem::size_of::<super::ShardMsg>() <= 96);
    }
}
