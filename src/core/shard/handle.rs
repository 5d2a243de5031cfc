//! How a shard core answers each message: the arms of [`ShardCore::dispatch`]
//! and the multi-step operations (friend stages, parties, formed matches,
//! the user's lobby index, the sweep of ended sessions). Carrying out the
//! engines' effects is `apply.rs`.

use std::sync::Arc;

use super::*;
use crate::core::engine::chat;
use crate::core::engine::lobbies;
use crate::core::engine::matches;
use crate::core::engine::matchmaking;
use crate::core::engine::notifications;
use crate::core::engine::social;
use crate::core::engine::{Event, Failure, ResumeRefusal};
use crate::core::outbox::Outbox;
use crate::core::wire;
use crate::telemetry::metrics::metrics;

impl ShardCore {
    pub(super) fn dispatch(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Attach {
                session,
                user,
                resume_token,
                outbox,
            } => {
                self.sessions.attach(session, outbox);
                let cmd = users::Command::Attach {
                    session,
                    user,
                    resume_token,
                };
                self.users.handle(self.now, cmd, &mut self.effects);
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
                self.users.handle(self.now, cmd, &mut self.effects);
                let accepted = self
                    .effects
                    .iter()
                    .any(|e| matches!(e, Effect::ResumeAccepted { .. }));
                let refused = self.effects.iter().find_map(|e| match e {
                    Effect::ResumeRefused { reason, .. } => Some(*reason),
                    _ => None,
                });
                self.effects.clear();
                let result = match (accepted, refused, self.sessions.home(session)) {
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
                            self.users.handle(self.now, cmd, &mut self.effects);
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
                let current = self.sessions.home(session).map(|o| o.generation());
                if current == Some(generation) {
                    let cmd = users::Command::Detach { session, resumable };
                    self.users.handle(self.now, cmd, &mut self.effects);
                    self.apply(None);
                }
            }
            ShardMsg::Request { cmd, reply_to } => {
                self.users.handle(self.now, cmd, &mut self.effects);
                self.apply(Some(&reply_to));
            }
            ShardMsg::Lookup { user_ids, reply } => {
                self.users.handle(
                    self.now,
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
                    self.sessions.hold(*session, Role::Chat, outbox);
                }
                let session = super::apply::chat_session(&cmd);
                let ctx = Neighbours {
                    pairs: &self.pairs,
                    lobbies: &self.lobbies,
                };
                self.chats.handle(self.now, &ctx, *cmd, &mut self.effects);
                self.apply(Some(&reply_to));
                if let Some(session) = session {
                    if !self.chats.in_any_chat(session) {
                        self.sessions.release(session, Role::Chat);
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
                    self.sessions.hold(session, Role::Follower, outbox);
                }
                let cmd = users::Command::Follow {
                    session,
                    targets,
                    follow,
                };
                self.users.handle(self.now, cmd, &mut self.effects);
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
                self.chats.handle(self.now, &ctx, cmd, &mut self.effects);
                let failure = self.effects.iter().find_map(|e| match e {
                    Effect::Fail { failure, .. } => Some(failure.clone()),
                    _ => None,
                });
                self.effects.retain(|e| matches!(e, Effect::Persist(_)));
                self.apply(None);
                let result = failure.map_or(Ok(()), Err);
                // Created means stored: the operator hears once it is.
                self.backend(BackendOp::AfterDurable(Box::new(move || {
                    let _ = reply.send(result);
                })));
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
                self.notifications.handle(self.now, cmd, &mut self.effects);
                self.apply(reply_to.as_ref());
            }
            ShardMsg::Announce { users, what, reply } => {
                let users: Vec<UserId> = match users {
                    Some(users) => users,
                    None => self.users.connected_users().cloned().collect(),
                };
                let count = users.len();
                let cmd = notifications::Command::Create { users, what };
                self.notifications.handle(self.now, cmd, &mut self.effects);
                self.apply(None);
                // The operator API answers for what is stored.
                self.backend(BackendOp::AfterDurable(Box::new(move || {
                    let _ = reply.send(count);
                })));
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
                self.lobbies.handle(self.now, *cmd, &mut self.effects);
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
                self.lobbies.handle(self.now, *cmd, &mut self.effects);
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
                let refusal = self
                    .pairs
                    .check_invite(&inviter, &invitee, friends_only)
                    .err();
                let result = match refusal {
                    Some(failure) => Effect::Fail {
                        request_id,
                        failure,
                    },
                    None => {
                        let shard = self.keys.of_lobby(&lobby_id);
                        let cmd = lobbies::Command::Invited {
                            lobby_id: lobby_id.clone(),
                            invitee: invitee.clone(),
                        };
                        let msg = ShardMsg::Lobby {
                            cmd: Box::new(cmd),
                            reply_to: None,
                            member: None,
                        };
                        self.send(shard, msg);
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
                self.queues.handle(self.now, *cmd, &mut self.effects);
                let result = self.take_admin_answer().map(|_| ());
                let persisted = super::apply::persists(&self.effects);
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
        }
    }

    /// One stage of a friend operation (see [`ShardMsg::Friend`]).
    pub(super) fn friend_stage(
        &mut self,
        cmd: social::OpCommand,
        reply_to: Arc<Outbox>,
        stage: FriendStage,
    ) {
        if stage == FriendStage::Decide {
            self.pairs.handle(self.now, cmd, &mut self.effects);
            self.apply(Some(&reply_to));
            return;
        }
        let next = match self.rosters.advance(&cmd, stage) {
            Ok(next) => next,
            Err(f) => {
                let bytes = wire::failure_frame(&mut self.encoder, cmd.request_id, &f);
                reply_to.push_reply(bytes, huddle_schema::wire::Body::Error);
                return;
            }
        };
        let shard = match next {
            FriendStage::Target => self.keys.of_user(&cmd.target),
            _ => self.keys.of_pair(&cmd.actor, &cmd.target),
        };
        let msg = ShardMsg::Friend {
            cmd,
            reply_to,
            stage: next,
        };
        self.send(shard, msg);
    }

    /// Takes the engine's answer to an operator's command (request 0) out
    /// of the pending effects: its reply, or its refusal.
    pub(super) fn take_admin_answer(
        &mut self,
    ) -> Result<Option<crate::core::engine::Reply>, Failure> {
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
    pub(super) fn matchmaking(
        &mut self,
        cmd: matchmaking::Command,
        reply_to: Option<Arc<Outbox>>,
        watcher: Option<Arc<Outbox>>,
    ) {
        let cmd = match cmd {
            matchmaking::Command::Configure(specs) => {
                let mine = specs
                    .into_iter()
                    .filter(|s| self.keys.of_game(&s.game) == self.index)
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
        self.queues.handle(self.now, cmd, &mut self.effects);
        // Keep the session's outbox only when it now follows a ticket (a
        // refused start or subscribe leaves nothing behind).
        let refused = self
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Fail { .. }));
        if let (Some(session), Some(outbox), false) = (session, watcher, refused) {
            self.sessions.hold(session, Role::Watcher, outbox);
        }
        self.apply(reply_to.as_ref());
    }

    /// A host queues their lobby: the members join the ticket as a party.
    pub(super) fn party_start(&mut self, p: PartyStart) {
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
        match self.lobbies.party_ticket(&lobby_id, &host, &start.game) {
            Ok(players) => {
                start.players = players;
                start.party = Some(lobby_id);
            }
            Err(f) => {
                let bytes = wire::failure_frame(&mut self.encoder, start.request_id, &f);
                reply_to.push_reply(bytes, huddle_schema::wire::Body::Error);
                return;
            }
        }
        let shard = self.keys.of_game(&start.game);
        let msg = ShardMsg::Matchmaking {
            cmd: Box::new(matchmaking::Command::Start(Box::new(start))),
            reply_to: Some(reply_to.clone()),
            watcher: Some(reply_to),
        };
        self.send(shard, msg);
    }

    /// Creates a formed match's lobby (this is the lobby's shard) with the
    /// teams assigned, then sends `matchmaking:matched` to every player's
    /// connections and publishes `matchmaking.matched`.
    pub(super) fn match_lobby(&mut self, m: MatchLobby) {
        let MatchLobby { matched, lobby_id } = m;
        let cmd = matches::lobby_command(&matched, &lobby_id);
        self.lobbies.handle(self.now, cmd, &mut self.effects);
        let refused = self.effects.iter().find_map(|e| match e {
            Effect::Fail {
                request_id: 0,
                failure,
            } => Some(failure.message.clone()),
            _ => None,
        });
        self.apply(None);
        // One encoding per ticket and team (a party's members share it).
        for (event, users) in matches::player_events(&matched, &lobby_id, refused.as_deref()) {
            let frame = wire::event_frame(&mut self.encoder, &event, true);
            self.push_to_users(users, &frame, &[]);
        }
        match refused {
            Some(why) => {
                tracing::warn!(match_id = %matched.match_id, %why, "a formed match's lobby refused its players");
                let msg = ShardMsg::Matchmaking {
                    cmd: Box::new(matches::match_failed(&matched)),
                    reply_to: None,
                    watcher: None,
                };
                self.send(self.keys.of_game(&matched.game), msg);
            }
            None => self.publish(DomainEvent::MatchmakingMatched {
                matched: Box::new(matched),
                lobby_id,
            }),
        }
    }

    /// A session that just became (or already was) a member of a lobby with
    /// chat joins the lobby's chat, which lives on this same shard.
    pub(super) fn join_lobby_chat(
        &mut self,
        lobby_id: &Arc<str>,
        session: SessionId,
        actor: chat::Actor,
        outbox: Arc<Outbox>,
    ) {
        if self.lobbies.chat_member(lobby_id, &actor.author.id) != Some(true) {
            return;
        }
        self.sessions.hold(session, Role::Chat, outbox.clone());
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
        self.chats.handle(self.now, &ctx, cmd, &mut self.effects);
        // The lobby's reply already told the client: the chat's own reply
        // (request 0) is dropped here, and its warm-up's by the reader.
        self.effects
            .retain(|e| !matches!(e, Effect::Reply { request_id: 0, .. }));
        self.apply(Some(&outbox));
    }

    /// The user's lobby index: one lobby per game (the oldest gives way),
    /// at most `memberships::MAX_LOBBIES_PER_USER` in all, and the lobby learns whether
    /// its new member is online now.
    pub(super) fn index_lobby(
        &mut self,
        user: UserId,
        lobby_id: Arc<str>,
        game: Arc<str>,
        joined: bool,
        since_version: u64,
    ) {
        let superseded = if joined {
            self.user_lobbies
                .joined(&user, lobby_id.clone(), game, since_version)
        } else {
            self.user_lobbies.left(&user, &lobby_id);
            Vec::new()
        };
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
            self.send(self.keys.of_lobby(&old), msg);
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
            self.send(self.keys.of_lobby(&lobby_id), msg);
        }
    }

    /// Chat members whose sessions ended (resume window passed, slow
    /// consumer) leave their chats, which tells the others.
    pub(super) fn sweep_sessions(&mut self, now: Now) {
        self.next_sweep = now.mono + SWEEP_EVERY;
        let gone = self.sessions.closed(Role::Chat);
        if !gone.is_empty() {
            self.end_chat_sessions(gone);
        }
        let gone = self.sessions.closed(Role::Watcher);
        if !gone.is_empty() {
            for s in &gone {
                self.sessions.release(*s, Role::Watcher);
            }
            let cmd = matchmaking::Command::SessionsGone(gone);
            self.queues.handle(now, cmd, &mut self.effects);
            self.apply(None);
        }
        let gone = self.sessions.closed(Role::Follower);
        if !gone.is_empty() {
            for s in &gone {
                self.sessions.release(*s, Role::Follower);
            }
            let cmd = users::Command::FollowersGone { sessions: gone };
            self.users.handle(now, cmd, &mut self.effects);
            self.apply(None);
        }
    }

    pub(super) fn end_chat_sessions(&mut self, sessions: Vec<SessionId>) {
        for s in &sessions {
            self.sessions.release(*s, Role::Chat);
        }
        let cmd = chat::Command::SessionsGone { sessions };
        let ctx = Neighbours {
            pairs: &self.pairs,
            lobbies: &self.lobbies,
        };
        self.chats.handle(self.now, &ctx, cmd, &mut self.effects);
        self.apply(None);
    }
}
