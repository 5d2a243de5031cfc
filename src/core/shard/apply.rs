//! Carrying out the effects the engines return: replies (once what they
//! stand for is stored), events encoded once and pushed to every recipient
//! here or sent on to their shards, records and deliveries for the
//! backend, and the domain event bus.

use std::sync::Arc;

use rand::Rng;

use super::*;
use crate::core::engine::chat;
use crate::core::engine::lobbies;
use crate::core::engine::notifications;
use crate::core::engine::Failure;
use crate::core::outbox::Outbox;
use crate::core::wire;

/// Whether carrying out `effects` writes to the store (records, webhook
/// jobs): their reply then waits for the write to be durable.
pub(super) fn persists(effects: &[Effect]) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::Persist(_) | Effect::Dispatch(_)))
}

impl ShardCore {
    /// Sends a reply; one that stands for something stored waits until
    /// everything this shard queued for the store is durable. That is a
    /// reply to a request whose handling `persisted` a record, or an
    /// acknowledgement that may stand for a record written earlier (a
    /// nonce's `duplicate`). Other replies (joins, lobbies, presence) never
    /// wait, so they keep flowing while a failing disk holds records back;
    /// deliveries to other sessions never wait either.
    pub(super) fn answer(
        &mut self,
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
    pub(super) fn once_stored(
        &mut self,
        stands_for_a_record: bool,
        then: impl FnOnce() + Send + 'static,
    ) {
        if stands_for_a_record {
            self.backend(BackendOp::AfterDurable(Box::new(then)));
        } else {
            then();
        }
    }

    /// A read the backend could not take: a page is answered busy; a
    /// join is answered from memory, and the next join asks the store again.
    pub(super) fn refused_read(&mut self, read: ReadOp) {
        match read {
            ReadOp::Page(read) => {
                let busy = Failure::new(
                    crate::core::engine::Refusal::RateLimited,
                    "history reads are backed up; retry shortly",
                );
                let bytes = wire::failure_frame(&mut self.encoder, read.request_id, &busy);
                read.reply_to
                    .push_reply(bytes, huddle_schema::wire::Body::Error);
            }
            ReadOp::Warm(read) => {
                tracing::warn!(chat = %read.chat_id, "history reader busy; join answered without the stored cursor");
                let cmd = chat::Command::WarmFailed {
                    chat_id: read.chat_id.clone(),
                    user: read.user.clone(),
                };
                let ctx = Neighbours {
                    pairs: &self.pairs,
                    lobbies: &self.lobbies,
                };
                self.chats.handle(self.now, &ctx, cmd, &mut self.effects);
                self.apply(None);
                let frame = (read.request_id != 0)
                    .then(|| wire::reply_frame(&mut self.encoder, read.request_id, &read.joined))
                    .flatten();
                if let Some((bytes, body)) = frame {
                    read.reply_to.push_reply(bytes, body);
                }
            }
        }
    }

    /// Carries out the effects the engines produced: replies to
    /// `reply_to` (once what they stand for is stored), events encoded
    /// once and queued to every recipient.
    pub(super) fn apply(&mut self, reply_to: Option<&Arc<Outbox>>) {
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
                        if let Some(outbox) = self.sessions.home(session) {
                            if let Push::Overflowed(Closed::OverflowWhileAway) =
                                outbox.push_event(&frame)
                            {
                                ended.push(session);
                            }
                        } else if let Some(outbox) = self.sessions.outbox(session).filter(|_| {
                            self.sessions.has(session, Role::Follower)
                                || self.sessions.has(session, Role::Watcher)
                        }) {
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
                        let Some(outbox) = self.sessions.outbox(session) else {
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
                Effect::Persist(record) => self.backend(BackendOp::Persist(record)),
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
                        let home = self.sessions.has(*session, Role::Home);
                        if !home && !self.sessions.has(*session, Role::Follower) {
                            continue;
                        }
                        if let Some(outbox) = self.sessions.outbox(*session) {
                            if let Push::Overflowed(Closed::OverflowWhileAway) =
                                outbox.push_event(&frame)
                            {
                                if home {
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
                    let shard = self.keys.of_user(&user);
                    let msg = ShardMsg::Roster {
                        user,
                        other,
                        relation,
                        since_ms,
                    };
                    self.send(shard, msg);
                }
                Effect::Dispatch(delivery) => self.backend(BackendOp::Deliver(delivery)),
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
                        self.chats.handle(self.now, &ctx, cmd, &mut self.effects);
                        self.apply(None);
                    }
                    let shard = self.keys.of_user(&user);
                    let msg = ShardMsg::LobbyIndex {
                        user,
                        lobby_id,
                        game,
                        joined,
                        since_version,
                    };
                    self.send(shard, msg);
                }
                Effect::LobbyInvite {
                    request_id,
                    lobby_id,
                    game,
                    inviter,
                    invitee,
                    friends_only,
                } => {
                    let shard = self.keys.of_pair(&inviter, &invitee);
                    let msg = ShardMsg::InviteCheck(Box::new(InviteCheck {
                        request_id,
                        lobby_id,
                        game,
                        inviter,
                        invitee,
                        friends_only,
                        reply_to: reply_to.cloned(),
                    }));
                    self.send(shard, msg);
                }
                Effect::HistoryPage {
                    request_id,
                    chat_id,
                    before_id,
                    limit,
                    partial,
                } => {
                    if let Some(outbox) = reply_to {
                        let read = PageRead {
                            request_id,
                            chat_id,
                            partial,
                            before_id,
                            limit,
                            reply_to: outbox.clone(),
                        };
                        self.backend(BackendOp::Read(ReadOp::Page(read)));
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
                    let read = WarmRead {
                        request_id,
                        chat_id,
                        user,
                        recent,
                        joined,
                        reply_to: outbox.clone(),
                    };
                    self.backend(BackendOp::Read(ReadOp::Warm(read)));
                }
                Effect::SessionEnded { session } => {
                    if let Some(outbox) = self.sessions.release(session, Role::Home) {
                        outbox.close(Closed::Ended);
                    }
                }
                Effect::Domain(event) => self.publish(event),
                Effect::MatchFormed(matched) => {
                    let lobby_id: Arc<str> = matched.backfill_lobby.clone().unwrap_or_else(|| {
                        Arc::from(format!("m{:015x}", self.rng.random::<u64>() >> 4))
                    });
                    let shard = self.keys.of_lobby(&lobby_id);
                    let msg = ShardMsg::MatchLobby(Box::new(MatchLobby {
                        matched: *matched,
                        lobby_id,
                    }));
                    self.send(shard, msg);
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
            self.users.handle(self.now, cmd, &mut self.effects);
            self.apply(None);
        }
        if !gone_from_chats.is_empty() {
            gone_from_chats.sort_unstable();
            gone_from_chats.dedup();
            self.end_chat_sessions(gone_from_chats);
        }
    }
}

impl ShardCore {
    /// The domain event bus: the engines that subscribe (notifications for
    /// friendship events) get their commands, and the integration webhook
    /// gets the event when one is configured.
    pub(super) fn publish(&mut self, event: DomainEvent) {
        self.backend(BackendOp::Publish(event.clone()));
        // A member's lobbies learn when their last session ends or a new
        // one starts (this is the user's shard, which keeps their index).
        if let DomainEvent::UserOnline { user } | DomainEvent::UserOffline { user } = &event {
            let online = matches!(event, DomainEvent::UserOnline { .. });
            let lobbies: Vec<Arc<str>> = self.user_lobbies.lobbies_of(user).cloned().collect();
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
                self.send(self.keys.of_lobby(&lobby_id), msg);
            }
        }
        if let Some((user, what)) = notifications::for_event(&event) {
            let shard = self.keys.of_user(&user);
            let cmd = notifications::Command::Create {
                users: vec![user],
                what: Arc::new(what),
            };
            let msg = ShardMsg::Notifications {
                cmd,
                reply_to: None,
            };
            self.send(shard, msg);
        }
    }
}

/// The lobby a lobby command is about.
pub fn lobby_of(cmd: &lobbies::Command) -> &Arc<str> {
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
pub(super) fn chat_session(cmd: &chat::Command) -> Option<SessionId> {
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
