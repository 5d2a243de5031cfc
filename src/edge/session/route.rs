//! Routing: the one exhaustive match over [`Request`] (a request the shell
//! does not route is a compile error, not a silent default), the checks
//! every call passes first (request id, rate, store health), and the one
//! helper every request reaches its shard through ([`Conn::send_or_busy`]).
//! Chat, presence and echo requests become engine commands here; the rest
//! in `social`, `lobby`, `matchmaking` and `scatter`.
//!
//! Never waits on a shard: a full mailbox answers RATE_LIMITED at once.

use std::sync::Arc;
use std::time::Instant;

use huddle_schema::wire::{Body, ErrorCode};

use super::connection::Conn;
use super::{encode, unix_ms, End, MAX_CHATS_PER_CONNECTION};
use crate::core::engine::chat::{self, Actor};
use crate::core::engine::users::Command;
use crate::core::engine::UserId;
use crate::core::shard::ShardMsg;
use crate::edge::request::{self, Request, RequestKind};

impl Conn<'_> {
    /// Routes one decoded request; `Some` when it ends the connection.
    pub(super) fn route(&mut self, request_id: u64, request: Request<'_>) -> Option<End> {
        if request.kind() == RequestKind::Call {
            if let Err(refused) = self.admit(request_id, &request) {
                return refused;
            }
        }
        let session = self.at.session;
        let id = |s: &str| -> Arc<str> { Arc::from(s) };
        match request {
            Request::Hello(_) => {
                return self.malformed(
                    request_id,
                    ErrorCode::MALFORMED_FRAME,
                    "Hello after the handshake",
                );
            }
            Request::Ping { ack_seq } => {
                self.at.outbox.ack(ack_seq);
                self.reply(encode(|e| e.pong(0, unix_ms())), Body::Pong);
            }
            Request::Pong => {}
            Request::ChatTyping { chat_id, typing } => {
                // A volatile signal: no reply, and silently dropped when the
                // connection is over its request budget.
                if self.bucket.try_take(Instant::now()) {
                    let chat_id = id(chat_id);
                    let cmd = chat::Command::Typing {
                        session,
                        actor: self.actor(),
                        chat_id: chat_id.clone(),
                        typing,
                    };
                    self.chat(0, &chat_id, cmd, false);
                }
            }
            Request::Echo(echo) => self.echo(request_id, echo),
            Request::PresenceQuery { user_ids } => self.presence(request_id, user_ids, None),
            Request::Follow { user_ids } => self.presence(request_id, user_ids, Some(true)),
            Request::Unfollow { user_ids } => self.presence(request_id, user_ids, Some(false)),
            Request::SetStatus(req) => self.set_status(request_id, req),
            Request::ChatUnread { chat_ids } => self.unread(request_id, chat_ids),
            Request::ChatJoin { chat_id } => self.chat_request(
                request_id,
                chat::Command::Join {
                    request_id,
                    session,
                    actor: self.actor(),
                    chat_id: id(chat_id),
                },
            ),
            Request::ChatLeave { chat_id } => self.chat_request(
                request_id,
                chat::Command::Leave {
                    request_id,
                    session,
                    chat_id: id(chat_id),
                },
            ),
            Request::ChatSend(m) => self.chat_request(
                request_id,
                chat::Command::Send {
                    request_id,
                    session,
                    actor: self.actor(),
                    chat_id: id(m.chat_id),
                    content: m.content.to_string(),
                    content_type: m.content_type.0,
                    nonce: m.nonce.filter(|n| !n.is_empty()).map(str::to_string),
                },
            ),
            Request::ChatRead {
                chat_id,
                message_id,
            } => self.chat_request(
                request_id,
                chat::Command::Read {
                    request_id,
                    session,
                    user: self.at.user.clone(),
                    chat_id: id(chat_id),
                    message_id,
                },
            ),
            // Edit and delete are one engine command: with or without content.
            Request::ChatEdit {
                chat_id,
                message_id,
                content,
            } => self.chat_request(
                request_id,
                chat::Command::Amend {
                    request_id,
                    session,
                    actor: self.actor(),
                    chat_id: id(chat_id),
                    message_id,
                    content: Some(content.to_string()),
                },
            ),
            Request::ChatDelete {
                chat_id,
                message_id,
            } => self.chat_request(
                request_id,
                chat::Command::Amend {
                    request_id,
                    session,
                    actor: self.actor(),
                    chat_id: id(chat_id),
                    message_id,
                    content: None,
                },
            ),
            Request::ChatMute {
                chat_id,
                user_id,
                duration_ms,
            } => self.chat_request(
                request_id,
                chat::Command::Mute {
                    request_id,
                    actor: self.actor(),
                    chat_id: id(chat_id),
                    user: UserId::from(user_id),
                    duration_ms,
                },
            ),
            Request::ChatHistory {
                chat_id,
                before_id,
                limit,
            } => self.chat_request(
                request_id,
                chat::Command::History {
                    request_id,
                    session,
                    chat_id: id(chat_id),
                    before_id,
                    limit,
                },
            ),
            Request::FriendOp { action, user_id } => self.friend_op(request_id, action, user_id),
            Request::FriendList => self.friend_list(request_id),
            Request::NotificationList {
                before_id,
                limit,
                unread_only,
            } => self.notification_list(request_id, before_id, limit, unread_only),
            Request::NotificationMarkRead { id, all } => {
                self.notification_mark_read(request_id, id, all)
            }
            Request::NotificationDelete { id } => self.notification_delete(request_id, id),
            Request::LobbyCreate(c) => self.lobby_create(request_id, c),
            Request::LobbyJoin { lobby_id, password } => {
                self.lobby_join(request_id, lobby_id, password)
            }
            Request::LobbyUpdate(u) => self.lobby_update(request_id, u),
            Request::LobbyOp(op) => self.lobby_op(request_id, op),
            Request::LobbyList(q) => self.lobby_list(request_id, q),
            Request::MatchmakingStart(start) => self.matchmaking_start(request_id, start),
            Request::MatchmakingOp { op, ticket } => self.matchmaking_op(request_id, op, ticket),
        }
        None
    }

    /// The checks every call passes before it is routed: a non-zero
    /// request id (else a malformed frame), the connection's rate, and,
    /// for a write, a store that can keep it. `Err` carries what the
    /// refusal did to the connection.
    fn admit(&mut self, request_id: u64, request: &Request<'_>) -> Result<(), Option<End>> {
        if request_id == 0 {
            let msg = format!("{} needs a non-zero request_id", request.name());
            return Err(self.malformed(0, ErrorCode::MALFORMED_FRAME, &msg));
        }
        if !self.bucket.try_take(Instant::now()) {
            let cfg = &self.edge.session;
            let msg = format!(
                "more than {} requests/s (burst {}) on this connection; slow down and retry",
                cfg.rate_per_s, cfg.rate_burst
            );
            self.error(request_id, ErrorCode::RATE_LIMITED, &msg, true);
            return Err(None);
        }
        if request.writes_to_store() && !self.edge.store_health.accepting() {
            let why = self.edge.store_health.failure().unwrap_or_default();
            let msg = format!(
                "the gateway cannot store this right now ({why}); nothing changed, retry shortly"
            );
            self.error(request_id, ErrorCode::STORE_UNAVAILABLE, &msg, true);
            return Err(None);
        }
        Ok(())
    }

    /// Hands `msg` to `shard` without waiting; a full mailbox answers the
    /// request RATE_LIMITED (retryable) instead, except a signal's
    /// (`request_id` 0), which is dropped. Returns whether it was sent.
    pub(super) fn send_or_busy(&self, request_id: u64, shard: usize, msg: ShardMsg) -> bool {
        if self.edge.shards.try_send(shard, msg).is_ok() {
            return true;
        }
        if request_id != 0 {
            let msg = format!("shard {shard} is saturated; retry shortly");
            self.error(request_id, ErrorCode::RATE_LIMITED, &msg, true);
        }
        false
    }

    pub(super) fn actor(&self) -> Actor {
        Actor {
            author: self.at.author.clone(),
            operator: self.at.operator,
        }
    }

    /// Keeps the connection's joined chats (at most
    /// MAX_CHATS_PER_CONNECTION) and routes the chat command.
    fn chat_request(&mut self, request_id: u64, cmd: chat::Command) {
        let Some(chat_id) = cmd.chat_id().cloned() else {
            return;
        };
        let joining = matches!(cmd, chat::Command::Join { .. });
        if joining
            && self.joined.len() >= MAX_CHATS_PER_CONNECTION
            && !self.joined.contains(&chat_id)
        {
            let msg =
                format!("at most {MAX_CHATS_PER_CONNECTION} chats per connection; leave one first");
            self.error(request_id, ErrorCode::JOIN_ERROR, &msg, false);
            return;
        }
        if joining && !self.joined.contains(&chat_id) {
            self.joined.push(chat_id.clone());
        } else if matches!(cmd, chat::Command::Leave { .. }) {
            self.joined.retain(|c| c != &chat_id);
        }
        self.chat(request_id, &chat_id, cmd, joining);
    }

    /// Sends a chat command to the chat's shard; a join hands over this
    /// session's outbox so the shard can deliver to it directly.
    fn chat(&self, request_id: u64, chat_id: &str, cmd: chat::Command, joining: bool) {
        let shard = self.edge.shards.of_chat(chat_id);
        let msg = ShardMsg::Chat {
            cmd: Box::new(cmd),
            reply_to: self.at.outbox.clone(),
            member: joining.then(|| self.at.outbox.clone()),
        };
        self.send_or_busy(request_id, shard, msg);
    }

    fn echo(&mut self, request_id: u64, echo: request::Echo<'_>) {
        let to_user: Option<UserId> = echo.to_user.filter(|u| !u.is_empty()).map(UserId::from);
        let shards = &self.edge.shards;
        let shard = match &to_user {
            Some(u) => shards.of_user(u),
            None => shards.of_session(self.at.session),
        };
        let cmd = Command::Echo {
            request_id,
            from_user: self.at.user.clone(),
            to_user,
            payload: echo.payload.to_vec(),
            volatile: echo.volatile,
        };
        let msg = ShardMsg::Request {
            cmd,
            reply_to: self.at.outbox.clone(),
        };
        self.send_or_busy(request_id, shard, msg);
    }

    /// `user:status` goes to the user's own shard.
    fn set_status(&mut self, request_id: u64, req: request::SetStatus<'_>) {
        let Some(status) = crate::core::wire::status_from_wire(req.status) else {
            let msg = format!("unknown status {}", req.status.0);
            self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
            return;
        };
        let cmd = Command::SetStatus {
            request_id,
            user: self.at.user.clone(),
            status,
            text: req.text.map(str::to_string),
            invisible: req.invisible,
        };
        let shard = self.edge.shards.of_user(&self.at.user);
        let msg = ShardMsg::Request {
            cmd,
            reply_to: self.at.outbox.clone(),
        };
        self.send_or_busy(request_id, shard, msg);
    }
}
