//! The session shell's lobby requests: validates each frame's arguments,
//! turns it into its lobby command and routes it to the lobby's shard (the
//! asking session rides along so it can join the lobby's chat there), and
//! gathers lobby listings from every shard. Holds no state of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use huddle_schema::encode::LobbySummaryFields;
use huddle_schema::wire::{self, Body, ErrorCode, LobbyOpKind};
use tokio::sync::oneshot;

use super::{encode, Conn};
use crate::core::engine::lobbies::{self, Command, ListFilter, LobbySpec, LobbyUpdate};
use crate::core::engine::UserId;
use crate::core::shard::{LobbyListQuery, LobbyMember, ShardMsg};

/// Largest page of a lobby listing.
const MAX_LIST: usize = 100;

fn settings(
    v: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<wire::Setting<'_>>>>,
) -> BTreeMap<String, String> {
    v.map(|v| {
        v.iter()
            .map(|s| {
                (
                    s.key().unwrap_or("").to_string(),
                    s.value().unwrap_or("").to_string(),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

/// A fresh lobby id: 16 hex digits, random.
fn new_lobby_id() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

impl Conn<'_> {
    /// Routes a lobby request; false when `frame` is not one.
    pub(super) fn lobby_request(&mut self, request_id: u64, frame: &wire::Frame<'_>) -> bool {
        let user = self.at.user.clone();
        let cmd = if let Some(c) = frame.body_as_lobby_create() {
            let Some(visibility) = crate::core::wire::visibility_from_wire(c.visibility()) else {
                self.invalid(request_id, "unknown visibility");
                return true;
            };
            let spec = LobbySpec {
                game: c.game().unwrap_or("").to_string(),
                mode: c.mode().unwrap_or("").to_string(),
                region: c.region().unwrap_or("").to_string(),
                min: c.min(),
                max: c.max(),
                visibility,
                password: c.password().filter(|p| !p.is_empty()).map(str::to_string),
                chat: c.chat(),
                settings: settings(c.settings()),
            };
            Command::Create {
                request_id,
                lobby_id: new_lobby_id(),
                host: Some(self.at.author.clone()),
                spec,
                assigned: Vec::new(),
            }
        } else if let Some(j) = frame.body_as_lobby_join() {
            Command::Join {
                request_id,
                lobby_id: Arc::from(j.lobby_id().unwrap_or("")),
                user: self.at.author.clone(),
                password: j.password().map(str::to_string),
            }
        } else if let Some(u) = frame.body_as_lobby_update() {
            let visibility = if u.set_visibility() {
                match crate::core::wire::visibility_from_wire(u.visibility()) {
                    Some(v) => Some(v),
                    None => {
                        self.invalid(request_id, "unknown visibility");
                        return true;
                    }
                }
            } else {
                None
            };
            let update = LobbyUpdate {
                settings: u.set_settings().then(|| settings(u.settings())),
                capacity: (u.min() != 0 || u.max() != 0).then(|| (u.min(), u.max())),
                visibility,
                password: u
                    .set_password()
                    .then(|| u.password().filter(|p| !p.is_empty()).map(str::to_string)),
                locked: match u.lock() {
                    0 => None,
                    1 => Some(true),
                    2 => Some(false),
                    other => {
                        self.invalid(request_id, &format!("lock must be 0, 1 or 2; got {other}"));
                        return true;
                    }
                },
            };
            Command::Update {
                request_id,
                lobby_id: Arc::from(u.lobby_id().unwrap_or("")),
                actor: user,
                update,
            }
        } else if let Some(op) = frame.body_as_lobby_op() {
            let lobby_id: Arc<str> = Arc::from(op.lobby_id().unwrap_or(""));
            let target = || UserId::from(op.user_id().unwrap_or(""));
            let text = op.text().unwrap_or("").to_string();
            match op.op() {
                LobbyOpKind::LEAVE => Command::Leave {
                    request_id,
                    lobby_id,
                    user,
                },
                LobbyOpKind::READY | LobbyOpKind::UNREADY => Command::Ready {
                    request_id,
                    lobby_id,
                    user,
                    ready: op.op() == LobbyOpKind::READY,
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
                    self.invalid(request_id, &format!("unknown lobby op {}", other.0));
                    return true;
                }
            }
        } else if let Some(list) = frame.body_as_lobby_list() {
            self.lobby_list(request_id, list);
            return true;
        } else {
            return false;
        };
        self.lobby(request_id, cmd);
        true
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
        let shard = self.gw.shards.of_lobby(&lobby_id);
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
        if self.gw.shards.try_send(shard, msg).is_err() {
            self.busy(request_id, shard);
        }
    }

    /// Public lobbies from every shard, merged by id.
    fn lobby_list(&mut self, request_id: u64, q: wire::LobbyList<'_>) {
        let limit = usize::from(q.limit());
        if limit == 0 || limit > MAX_LIST {
            return self.invalid(request_id, &format!("limit must be 1..={MAX_LIST}"));
        }
        let filter = ListFilter {
            game: q.game().unwrap_or("").to_string(),
            mode: q.mode().unwrap_or("").to_string(),
            region: q.region().unwrap_or("").to_string(),
            min_free: q.min_free(),
        };
        let after = q.after().unwrap_or("").to_string();
        let shards = self.gw.shards.clone();
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
            if shards
                .try_send(shard, ShardMsg::LobbyList(Box::new(query)))
                .is_err()
            {
                return self.busy(request_id, shard);
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
