//! Who is in a chat: the access rule by chat kind, joining (with a cold
//! chat's warm-up from the store), leaving, and a session's removal, each
//! telling the other members. Part of [`Chats`]; never does I/O and never
//! reads a clock.

use std::sync::Arc;

use super::super::{Effect, Event, Failure, Refusal, Reply, SessionId, UserId};
use super::{fail, parse_chat_id, Actor, Chat, ChatContext, Chats, Kind, Message};

impl Chats {
    /// The access rule of the reference design: who may join (and read) a
    /// chat, by its kind.
    pub(super) fn may_join(
        &self,
        lobbies: &dyn ChatContext,
        actor: &Actor,
        chat_id: &Arc<str>,
    ) -> Result<Kind, Failure> {
        let (kind, rest) = parse_chat_id(chat_id)?;
        let user = &actor.author.id;
        let allowed = match kind {
            Kind::Direct => rest
                .split_once(':')
                .is_some_and(|(a, b)| a == &**user || b == &**user),
            Kind::Lobby => match lobbies.lobby_member(rest, user) {
                None => {
                    let msg = format!("no lobby {rest:?}: {chat_id} does not exist");
                    return Err(Failure::new(Refusal::ChatNotFound, msg));
                }
                Some(member) => member,
            },
            Kind::Channel => match self.chats.get(chat_id) {
                None => {
                    let msg = format!("no channel {chat_id}; operators create channels");
                    return Err(Failure::new(Refusal::ChatNotFound, msg));
                }
                Some(c) => c.public || actor.operator || c.allowed.contains(user),
            },
        };
        if allowed {
            return Ok(kind);
        }
        let why = match kind {
            Kind::Direct => "only its two participants may join a direct chat",
            Kind::Lobby => "only the lobby's members may join its chat",
            Kind::Channel => "this channel is restricted to its members",
        };
        Err(Failure::new(
            Refusal::AccessDenied,
            format!("cannot join {chat_id}: {why}"),
        ))
    }

    pub(super) fn join(
        &mut self,
        lobbies: &dyn ChatContext,
        request_id: u64,
        session: SessionId,
        actor: Actor,
        chat_id: Arc<str>,
        out: &mut Vec<Effect>,
    ) {
        let kind = match self.may_join(lobbies, &actor, &chat_id) {
            Ok(kind) => kind,
            Err(failure) => {
                return out.push(Effect::Fail {
                    request_id,
                    failure,
                })
            }
        };
        let user = &actor.author.id;
        let chat = self.chats.entry(chat_id.clone()).or_insert_with(Chat::new);
        if chat
            .sessions
            .insert(session, actor.author.clone())
            .is_none()
        {
            self.joined
                .entry(session)
                .or_default()
                .push(chat_id.clone());
            let member = chat.users.entry(user.clone()).or_default();
            member.sessions += 1;
            if member.sessions == 1 {
                out.push(Effect::Broadcast {
                    chat: chat_id.clone(),
                    event: Event::ChatMember {
                        chat_id: chat_id.clone(),
                        user: actor.author.clone(),
                        joined: true,
                    },
                    reliable: true,
                    except: Some(session),
                });
            }
        }
        let reply = Reply::ChatJoined {
            chat_id: chat_id.clone(),
            kind,
            members: chat.users.len() as u32,
            read_only: chat.read_only,
            slow_mode_ms: chat.slow_mode_ms,
            read_up_to: chat.cursors.get(user).copied().unwrap_or(0),
        };
        // What the store holds of this chat's past (after a restart, or
        // once an empty chat was forgotten) comes back before the reply.
        let recent = if chat.recent_loaded {
            0
        } else {
            chat.recent_loaded = true;
            self.limits.recent
        };
        let cursor = chat.cursors_loaded.insert(user.clone());
        if recent > 0 || cursor {
            out.push(Effect::WarmUp {
                request_id,
                chat_id,
                user: user.clone(),
                recent,
                joined: reply,
            });
        } else {
            out.push(Effect::Reply { request_id, reply });
        }
    }

    /// Merges what the store held: the cursor only moves forward, and
    /// stored messages older than the buffer's oldest fill it from below.
    pub(super) fn warmed(
        &mut self,
        chat_id: &str,
        user: UserId,
        cursor: Option<u64>,
        messages: Vec<Arc<Message>>,
    ) {
        let Some(chat) = self.chats.get_mut(chat_id) else {
            return;
        };
        if let Some(stored) = cursor {
            let c = chat.cursors.entry(user).or_insert(0);
            *c = (*c).max(stored);
        }
        let oldest = chat.recent.front().map_or(u64::MAX, |m| m.id);
        for m in messages.into_iter().filter(|m| m.id < oldest) {
            if chat.recent.len() >= self.limits.recent {
                break;
            }
            if let Some(nonce) = &m.nonce {
                let key = (m.sender.id.clone(), nonce.clone());
                if chat.nonce_order.len() < self.limits.nonces && !chat.nonces.contains_key(&key) {
                    chat.nonces.insert(key.clone(), m.id);
                    chat.nonce_order.push_front(key);
                }
            }
            chat.recent.push_front(m);
        }
    }

    pub(super) fn leave(
        &mut self,
        request_id: u64,
        session: SessionId,
        chat_id: &Arc<str>,
        out: &mut Vec<Effect>,
    ) {
        let member = self
            .chats
            .get(chat_id)
            .is_some_and(|c| c.sessions.contains_key(&session));
        if !member {
            if request_id != 0 {
                fail(
                    out,
                    request_id,
                    Refusal::NotInChat,
                    format!("not in {chat_id}; nothing to leave"),
                );
            }
            return;
        }
        if let Some(list) = self.joined.get_mut(&session) {
            list.retain(|c| c != chat_id);
            if list.is_empty() {
                self.joined.remove(&session);
            }
        }
        self.remove_session(session, chat_id, out);
        if request_id != 0 {
            out.push(Effect::Reply {
                request_id,
                reply: Reply::ChatLeft {
                    chat_id: chat_id.clone(),
                },
            });
        }
    }

    pub(super) fn remove_session(
        &mut self,
        session: SessionId,
        chat_id: &Arc<str>,
        out: &mut Vec<Effect>,
    ) {
        let Some(chat) = self.chats.get_mut(chat_id) else {
            return;
        };
        let Some(author) = chat.sessions.remove(&session) else {
            return;
        };
        let last = match chat.users.get_mut(&author.id) {
            Some(m) => {
                m.sessions = m.sessions.saturating_sub(1);
                m.sessions == 0
            }
            None => false,
        };
        if last {
            chat.users.remove(&author.id);
            out.push(Effect::Broadcast {
                chat: chat_id.clone(),
                event: Event::ChatMember {
                    chat_id: chat_id.clone(),
                    user: author,
                    joined: false,
                },
                reliable: true,
                except: Some(session),
            });
        }
        // A direct or lobby chat nobody is in is forgotten: its history and
        // read cursors are in the store, and clients cannot grow this map by
        // opening chats they then leave. Channels keep their settings.
        let forget = chat.sessions.is_empty() && !chat_id.starts_with("channel:");
        if forget {
            self.chats.remove(chat_id);
        }
    }
}
