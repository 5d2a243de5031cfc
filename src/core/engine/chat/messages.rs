//! What members do in a chat: send (idempotent by nonce, under slow mode
//! and read-only rules), edit and delete, mute, typing, read cursors and
//! history pages. Part of [`Chats`]; never does I/O and never reads a
//! clock (time comes in as [`Now`]).

use std::sync::Arc;

use super::super::{DomainEvent, Effect, Event, Now, Record, Refusal, Reply, SessionId, UserId};
use super::{
    check_content, fail, joined, joined_mut, Actor, ChatContext, Chats, HistoryRecord, Message,
    MAX_NONCE, MAX_PAGE,
};

impl Chats {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &mut self,
        now: Now,
        ctx: &dyn ChatContext,
        request_id: u64,
        session: SessionId,
        actor: Actor,
        chat_id: &Arc<str>,
        content: String,
        content_type: u8,
        nonce: Option<String>,
        out: &mut Vec<Effect>,
    ) {
        let limits = self.limits;
        let Some(chat) = joined_mut(&mut self.chats, chat_id, session) else {
            return fail(
                out,
                request_id,
                Refusal::NotInChat,
                format!("join {chat_id} before sending to it"),
            );
        };
        let user = actor.author.id.clone();
        if let Some(nonce) = nonce.as_deref() {
            if nonce.len() > MAX_NONCE {
                return fail(
                    out,
                    request_id,
                    Refusal::MessageError,
                    format!("nonce longer than {MAX_NONCE} bytes"),
                );
            }
            if let Some(&id) = chat.nonces.get(&(user.clone(), Box::from(nonce))) {
                let created_at_ms = chat
                    .recent
                    .iter()
                    .find(|m| m.id == id)
                    .map_or(0, |m| m.created_at_ms);
                return out.push(Effect::Reply {
                    request_id,
                    reply: Reply::ChatSent {
                        chat_id: chat_id.clone(),
                        message_id: id,
                        created_at_ms,
                        duplicate: true,
                    },
                });
            }
        }
        if chat.read_only && !actor.operator {
            return fail(
                out,
                request_id,
                Refusal::AccessDenied,
                format!("{chat_id} is read-only; only operators post here"),
            );
        }
        if let Some(("direct", pair)) = chat_id.split_once(':') {
            let other = pair
                .split_once(':')
                .map(|(a, b)| if a == &*user { b } else { a });
            if let Some(why) = other.and_then(|other| ctx.direct_block(&user, other)) {
                return fail(out, request_id, Refusal::AccessDenied, why);
            }
        }
        if let Some(&until) = chat.mutes.get(&user) {
            if until > now.unix_ms {
                let left = (until - now.unix_ms + 999) / 1000;
                return fail(
                    out,
                    request_id,
                    Refusal::AccessDenied,
                    format!("you are muted in {chat_id} for {left} more s"),
                );
            }
        }
        if let Err(f) = check_content(&content, limits.max_chars) {
            return out.push(Effect::Fail {
                request_id,
                failure: f,
            });
        }
        if content_type > 3 {
            return fail(
                out,
                request_id,
                Refusal::MessageError,
                format!("unknown content type {content_type}; use text, emote, system or custom"),
            );
        }
        let member = chat.users.entry(user.clone()).or_default();
        if chat.slow_mode_ms > 0 && !actor.operator {
            if let Some(last) = member.last_sent_ms {
                let wait = last + i64::from(chat.slow_mode_ms) - now.unix_ms;
                if wait > 0 {
                    return fail(
                        out,
                        request_id,
                        Refusal::RateLimited,
                        format!(
                            "slow mode: {} ms between messages; wait {wait} ms",
                            chat.slow_mode_ms
                        ),
                    );
                }
            }
        }
        member.last_sent_ms = Some(now.unix_ms);
        let message = Arc::new(Message {
            id: self.ids.next(now.unix_ms),
            chat_id: chat_id.clone(),
            sender: actor.author,
            content: Arc::from(content),
            content_type,
            created_at_ms: now.unix_ms,
            edited_at_ms: 0,
            deleted: false,
            nonce: nonce.as_deref().map(Box::from),
        });
        chat.recent.push_back(message.clone());
        if chat.recent.len() > limits.recent {
            chat.recent.pop_front();
        }
        if let Some(nonce) = nonce {
            let key = (user.clone(), Box::<str>::from(nonce));
            chat.nonces.insert(key.clone(), message.id);
            chat.nonce_order.push_back(key);
            if chat.nonce_order.len() > limits.nonces {
                if let Some(old) = chat.nonce_order.pop_front() {
                    chat.nonces.remove(&old);
                }
            }
        }
        // The sender has read what they wrote (stored with their next read).
        chat.cursors.insert(user.clone(), message.id);
        chat.cursors_unstored.insert(user);
        out.push(Effect::Persist(Record::Chat(HistoryRecord::Message(
            message.clone(),
        ))));
        out.push(Effect::Broadcast {
            chat: chat_id.clone(),
            event: Event::ChatMessage(message.clone()),
            reliable: true,
            except: None,
        });
        out.push(Effect::Domain(DomainEvent::ChatMessageSent {
            chat_id: chat_id.clone(),
            message_id: message.id,
            sender: message.sender.id.clone(),
        }));
        out.push(Effect::Reply {
            request_id,
            reply: Reply::ChatSent {
                chat_id: chat_id.clone(),
                message_id: message.id,
                created_at_ms: message.created_at_ms,
                duplicate: false,
            },
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn amend(
        &mut self,
        now: Now,
        request_id: u64,
        session: SessionId,
        actor: Actor,
        chat_id: &Arc<str>,
        message_id: u64,
        content: Option<String>,
        out: &mut Vec<Effect>,
    ) {
        let limits = self.limits;
        let Some(chat) = joined_mut(&mut self.chats, chat_id, session) else {
            return fail(
                out,
                request_id,
                Refusal::NotInChat,
                format!("join {chat_id} before changing its messages"),
            );
        };
        let Some(slot) = chat.recent.iter().position(|m| m.id == message_id) else {
            return fail(
                out,
                request_id,
                Refusal::MessageError,
                format!(
                    "message {message_id} is not among the last {} of {chat_id}",
                    limits.recent
                ),
            );
        };
        let old = chat.recent[slot].clone();
        if old.deleted {
            return fail(
                out,
                request_id,
                Refusal::MessageError,
                format!("message {message_id} was deleted"),
            );
        }
        if old.sender.id != actor.author.id && !actor.operator {
            return fail(
                out,
                request_id,
                Refusal::AccessDenied,
                "only its author or an operator may change a message",
            );
        }
        if let Some(c) = &content {
            if let Err(f) = check_content(c, limits.max_chars) {
                return out.push(Effect::Fail {
                    request_id,
                    failure: f,
                });
            }
        }
        let (event, updated) = match content {
            Some(c) => {
                let edited = Arc::new(Message {
                    content: Arc::from(c),
                    edited_at_ms: now.unix_ms,
                    ..(*old).clone()
                });
                (Event::ChatMessageUpdated(edited.clone()), edited)
            }
            None => {
                let tombstone = Arc::new(Message {
                    content: Arc::from(""),
                    deleted: true,
                    edited_at_ms: now.unix_ms,
                    ..(*old).clone()
                });
                let event = Event::ChatMessageDeleted {
                    chat_id: chat_id.clone(),
                    message_id,
                    by: actor.author.id.clone(),
                };
                (event, tombstone)
            }
        };
        chat.recent[slot] = updated.clone();
        out.push(Effect::Persist(Record::Chat(HistoryRecord::Message(
            updated,
        ))));
        out.push(Effect::Broadcast {
            chat: chat_id.clone(),
            event,
            reliable: true,
            except: None,
        });
        out.push(Effect::Reply {
            request_id,
            reply: Reply::ChatUpdated {
                chat_id: chat_id.clone(),
                message_id,
                at_ms: now.unix_ms,
            },
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn mute(
        &mut self,
        now: Now,
        request_id: u64,
        actor: Actor,
        chat_id: &Arc<str>,
        user: UserId,
        duration_ms: u32,
        out: &mut Vec<Effect>,
    ) {
        if !actor.operator {
            return fail(
                out,
                request_id,
                Refusal::AccessDenied,
                "only operators and moderators may mute",
            );
        }
        let Some(chat) = self.chats.get_mut(chat_id) else {
            return fail(
                out,
                request_id,
                Refusal::ChatNotFound,
                format!("no chat {chat_id} on this node"),
            );
        };
        let until_ms = if duration_ms == 0 {
            chat.mutes.remove(&user);
            0
        } else {
            let until = now.unix_ms + i64::from(duration_ms);
            chat.mutes.insert(user.clone(), until);
            until
        };
        out.push(Effect::Reply {
            request_id,
            reply: Reply::ChatMuted {
                chat_id: chat_id.clone(),
                user_id: user,
                until_ms,
            },
        });
    }

    pub(super) fn typing(
        &mut self,
        now: Now,
        session: SessionId,
        actor: Actor,
        chat_id: &Arc<str>,
        typing: bool,
        out: &mut Vec<Effect>,
    ) {
        let every = self.limits.typing_every;
        let Some(chat) = joined_mut(&mut self.chats, chat_id, session) else {
            return; // a volatile signal: not in the chat, nothing to tell
        };
        let Some(member) = chat.users.get_mut(&actor.author.id) else {
            return;
        };
        let throttled = member.last_typing.is_some_and(|(at, was)| {
            was == typing && now.mono.saturating_duration_since(at) < every
        });
        if throttled {
            return;
        }
        member.last_typing = Some((now.mono, typing));
        out.push(Effect::Broadcast {
            chat: chat_id.clone(),
            event: Event::ChatTyping {
                chat_id: chat_id.clone(),
                user: actor.author,
                typing,
            },
            reliable: false,
            except: Some(session),
        });
    }

    pub(super) fn read(
        &mut self,
        request_id: u64,
        session: SessionId,
        user: UserId,
        chat_id: &Arc<str>,
        message_id: u64,
        out: &mut Vec<Effect>,
    ) {
        let Some(chat) = joined_mut(&mut self.chats, chat_id, session) else {
            return fail(
                out,
                request_id,
                Refusal::NotInChat,
                format!("join {chat_id} before marking it read"),
            );
        };
        let newest = chat.recent.back().map_or(0, |m| m.id);
        let target = if message_id == 0 {
            newest
        } else {
            message_id.min(newest)
        };
        let cursor = chat.cursors.entry(user.clone()).or_insert(0);
        let advanced = target > *cursor;
        if advanced {
            *cursor = target;
        }
        let read_up_to = *cursor;
        if chat.cursors_unstored.remove(&user) || advanced {
            out.push(Effect::Persist(Record::Chat(HistoryRecord::ReadCursor {
                chat_id: chat_id.clone(),
                user_id: user.clone(),
                up_to: read_up_to,
            })));
        }
        if advanced {
            out.push(Effect::Broadcast {
                chat: chat_id.clone(),
                event: Event::ChatRead {
                    chat_id: chat_id.clone(),
                    user_id: user,
                    read_up_to,
                },
                reliable: true,
                except: Some(session),
            });
        }
        out.push(Effect::Reply {
            request_id,
            reply: Reply::ChatRead {
                chat_id: chat_id.clone(),
                read_up_to,
                unread: chat.unread_after(read_up_to),
            },
        });
    }

    pub(super) fn history(
        &mut self,
        request_id: u64,
        session: SessionId,
        chat_id: &Arc<str>,
        before_id: u64,
        limit: u16,
        out: &mut Vec<Effect>,
    ) {
        let limit = usize::from(limit);
        if limit == 0 || limit > MAX_PAGE {
            return fail(
                out,
                request_id,
                Refusal::InvalidArgument,
                format!("history limit must be 1 to {MAX_PAGE}"),
            );
        }
        let Some(chat) = joined(&self.chats, chat_id, session) else {
            return fail(
                out,
                request_id,
                Refusal::NotInChat,
                format!("join {chat_id} before reading its history"),
            );
        };
        let mut messages: Vec<Arc<Message>> = chat
            .recent
            .iter()
            .rev()
            .filter(|m| before_id == 0 || m.id < before_id)
            .take(limit + 1)
            .cloned()
            .collect();
        if messages.len() > limit {
            messages.truncate(limit);
            out.push(Effect::Reply {
                request_id,
                reply: Reply::ChatHistory {
                    chat_id: chat_id.clone(),
                    messages,
                    has_more: true,
                },
            });
        } else {
            // The recent buffer ran out: the rest (and whether there is
            // more) comes from the history store.
            out.push(Effect::HistoryPage {
                request_id,
                chat_id: chat_id.clone(),
                before_id,
                limit: limit - messages.len(),
                partial: messages,
            });
        }
    }
}
