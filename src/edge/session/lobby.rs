//! The session shell's lobby requests: validates each decoded request's arguments,
//! turns it into its lobby command and routes it to the lobby's shard (the
//! asking session rides along so it can join the lobby's chat there), and
//! gathers lobby listings from every shard. Holds no state of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use huddle_schema::encode::LobbySummaryFields;
use huddle_schema::wire::{Body, ErrorCode, LobbyOpKind};
use tokio::sync::oneshot;

use super::connection::Conn;
use super::encode;
use crate::core::engine::lobbies::{self, Command, ListFilter, LobbySpec, LobbyUpdate};
use crate::core::engine::UserId;
use crate::core::shard::{LobbyListQuery, LobbyMember, ShardMsg};
use crate::edge::request;

/// Largest page of a lobby listing.
const MAX_LIST: usize = 100;

fn settings(v: request::Settings<'_>) -> BTreeMap<String, String> {
    v.iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// A fresh lobby id: 16 hex digits, random.
fn new_lobby_id() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

impl Conn<'_> {
    pub(super) fn lobby_create(&mut self, request_id: u64, c: request::LobbyCreate<'_>) {
        let Some(visibility) = crate::core::wire::visibility_from_wire(c.visibility) else {
            return self.invalid(request_id, "unknown visibility");
        };
        let spec = LobbySpec {
            game: c.game.to_string(),
            mode: c.mode.to_string(),
            region: c.region.to_string(),
            min: c.min,
            max: c.max,
            visibility,
            password: c.password.filter(|p| !p.is_empty()).map(str::to_string),
            chat: c.chat,
            settings: settings(c.settings),
        };
        let cmd = Command::Create {
            request_id,
            lobby_id: new_lobby_id(),
            host: Some(self.at.author.clone()),
            spec,
            assigned: Vec::new(),
        };
        self.lobby(request_id, cmd);
    }

    pub(super) fn lobby_join(&mut self, request_id: u64, lobby_id: &str, password: Option<&str>) {
        let cmd = Command::Join {
            request_id,
            lobby_id: Arc::from(lobby_id),
            user: self.at.author.clone(),
            password: password.map(str::to_string),
        };
        self.lobby(request_id, cmd);
    }

    pub(super) fn lobby_update(&mut self, request_id: u64, u: request::LobbyUpdate<'_>) {
        let visibility = if u.set_visibility {
            match crate::core::wire::visibility_from_wire(u.visibility) {
                Some(v) => Some(v),
                None => return self.invalid(request_id, "unknown visibility"),
            }
        } else {
            None
        };
        let update = LobbyUpdate {
            settings: u.set_settings.then(|| settings(u.settings)),
            capacity: (u.min != 0 || u.max != 0).then_some((u.min, u.max)),
            visibility,
            password: u
                .set_password
                .then(|| u.password.filter(|p| !p.is_empty()).map(str::to_string)),
            locked: match u.lock {
                0 => None,
                1 => Some(true),
                2 => Some(false),
                other => {
                    return self
                        .invalid(request_id, &format!("lock must be 0, 1 or 2; got {other}"))
                }
            },
        };
        let cmd = Command::Update {
            request_id,
            lobby_id: Arc::from(u.lobby_id),
            actor: self.at.user.clone(),
            update,
        };
        self.lobby(request_id, cmd);
    }

    pub(super) fn lobby_op(&mut self, request_id: u64, op: request::LobbyOp<'_>) {
        let user = self.at.user.clone();
        let lobby_id: Arc<str> = Arc::from(op.lobby_id);
        let target = || UserId::from(op.user_id);
        let text = op.text.to_string();
        let cmd = match op.op {
            LobbyOpKind::LEAVE => Command::Leave {
                request_id,
                lobby_id,
                user,
            },
            LobbyOpKind::READY | LobbyOpKind::UNREADY => Command::Ready {
                request_id,
                lobby_id,
                user,
                ready: op.op == LobbyOpKind::READY,
            },
            LobbyOpKind::KICK => Command::Kick {
                request_id,
                lobby_id,
                actor: user,
                target: target(),
                reason: text,
            },
            LobbyOpKind::TRANSFER_HOST => Command::TransferHost {
                request_id,
                lobby_id,
                actor: user,
                target: target(),
            },
            LobbyOpKind::START => Command::Start {
                request_id,
                lobby_id,
                actor: Some(user),
                connection: (!text.is_empty()).then_some(text),
            },
            LobbyOpKind::CLOSE => Command::Close {
                request_id,
                lobby_id,
                actor: Some(user),
            },
            LobbyOpKind::INVITE => Command::Invite {
                request_id,
                lobby_id,
                actor: user,
                invitee: target(),
            },
            LobbyOpKind::GET => Command::Get {
                request_id,
                lobby_id,
                user,
            },
            other => {
                return self.invalid(request_id, &format!("unknown lobby op {}", other.0));
            }
        };
        self.lobby(request_id, cmd);
    }

    fn invalid(&self, request_id: u64, message: &str) {
        self.error(request_id, ErrorCode::INVALID_ARGUMENT, message, false);
    }

    /// Sends a lobby command to the lobby's shard with this session along.
    fn lobby(&mut self, request_id: u64, cmd: Command) {
        let lobby_id = crate::core::shard::lobby_of(&cmd).clone();
        if lobby_id.is_empty() || lobby_id.len() > lobbies::MAX_NAME {
            let msg = format!("lobby_id must be 1..={} bytes", lobbies::MAX_NAME);
            return self.invalid(request_id, &msg);
        }
        // Create and join may put this session in the lobby's chat, on the
        // lobby's shard; a closed connection leaves it through that
        // shard's sweep of closed outboxes.
        let joins = matches!(cmd, Command::Create { .. } | Command::Join { .. });
        let shard = self.edge.shards.of_lobby(&lobby_id);
        let member = joins.then(|| {
            Box::new(LobbyMember {
                session: self.at.session,
                actor: self.actor(),
                outbox: self.at.outbox.clone(),
            })
        });
        let msg = ShardMsg::Lobby {
            cmd: Box::new(cmd),
            reply_to: Some(self.at.outbox.clone()),
            member,
        };
        self.send_or_busy(request_id, shard, msg);
    }

    /// Public lobbies from every shard, merged by id.
    pub(super) fn lobby_list(&mut self, request_id: u64, q: request::LobbyList<'_>) {
        let limit = usize::from(q.limit);
        if limit == 0 || limit > MAX_LIST {
            return self.invalid(request_id, &format!("limit must be 1..={MAX_LIST}"));
        }
        let filter = ListFilter {
            game: q.game.to_string(),
            mode: q.mode.to_string(),
            region: q.region.to_string(),
            min_free: q.min_free,
        };
        let after = q.after.to_string();
        let shards = self.edge.shards.clone();
        let mut pending = Vec::new();
        for shard in 0..shards.count() {
            let (reply, rx) = oneshot::channel();
            // One more than asked: a shard with more says so.
            let query = LobbyListQuery {
                filter: filter.clone(),
                after: after.clone(),
                limit: limit + 1,
                reply,
            };
            if !self.send_or_busy(request_id, shard, ShardMsg::LobbyList(Box::new(query))) {
                return;
            }
            pending.push(rx);
        }
        let outbox = self.at.outbox.clone();
        tokio::spawn(async move {
            let mut rows = Vec::new();
            for rx in pending {
                rows.extend(rx.await.unwrap_or_default());
            }
            rows.sort_by(|a, b| a.id.cmp(&b.id));
            let more = rows.len() > limit;
            rows.truncate(limit);
            let next_after = if more {
                rows.last().map_or("", |r| &*r.id)
            } else {
                ""
            };
            let fields: Vec<LobbySummaryFields<'_>> = rows
                .iter()
                .map(|r| LobbySummaryFields {
                    id: &r.id,
                    game: &r.game,
                    mode: &r.mode,
                    region: &r.region,
                    members: r.members,
                    max: r.max,
                    has_password: r.has_password,
                    status: crate::core::wire::lobby_status(r.status),
                })
                .collect();
            let bytes = encode(|e| e.lobby_list_page(request_id, &fields, next_after));
            outbox.push_reply(bytes, Body::LobbyListPage);
        });
    }
}
