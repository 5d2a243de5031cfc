//! The session shell's matchmaking requests: validates each decoded
//! request's arguments and routes it to the shard that owns the game's queues (a
//! party start goes through the lobby's shard first, which adds the
//! members). The player's rating comes from the token, never the frame.
//! Holds no state of its own.

use std::sync::Arc;

use huddle_schema::wire::{ErrorCode, MatchmakingOpKind};

use super::connection::Conn;
use crate::core::engine::matchmaking::matcher::{
    Attribute, MAX_ATTRIBUTES, MAX_LATENCY_MS, MAX_REGIONS,
};
use crate::core::engine::matchmaking::{self, Command, Start, MAX_NAME};
use crate::core::shard::{PartyStart, ShardMsg};
use crate::edge::request;

impl Conn<'_> {
    /// A ticket's operation (cancel, watch, status, answer), routed to the
    /// game's queue shard.
    pub(super) fn matchmaking_op(&mut self, request_id: u64, op: MatchmakingOpKind, ticket: &str) {
        let ticket: Arc<str> = Arc::from(ticket);
        let Some((_, game)) = matchmaking::parse_ticket(&ticket) else {
            let msg = format!(
                "{ticket:?} is not a matchmaking request id; use the one matchmaking:start answered (like 17@arena)"
            );
            self.error(request_id, ErrorCode::MATCH_NOT_FOUND, &msg, false);
            return;
        };
        let shard = self.edge.shards.of_game(game);
        let user = self.at.user.clone();
        let session = self.at.session;
        let cmd = match op {
            MatchmakingOpKind::CANCEL => Command::Cancel {
                request_id,
                user,
                ticket,
            },
            MatchmakingOpKind::SUBSCRIBE | MatchmakingOpKind::UNSUBSCRIBE => Command::Watch {
                request_id,
                session,
                user,
                ticket,
                watch: op == MatchmakingOpKind::SUBSCRIBE,
            },
            MatchmakingOpKind::STATUS => Command::Status {
                request_id,
                user,
                ticket,
            },
            MatchmakingOpKind::ACCEPT | MatchmakingOpKind::DECLINE => Command::Answer {
                request_id,
                user,
                ticket,
                accept: op == MatchmakingOpKind::ACCEPT,
            },
            other => {
                let msg = format!("unknown matchmaking op {}", other.0);
                self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
                return;
            }
        };
        let watcher =
            matches!(cmd, Command::Watch { watch: true, .. }).then(|| self.at.outbox.clone());
        let msg = ShardMsg::Matchmaking {
            cmd: Box::new(cmd),
            reply_to: Some(self.at.outbox.clone()),
            watcher,
        };
        self.send_or_busy(request_id, shard, msg);
    }

    /// A solo ticket to the game's queue shard, or a party's through the
    /// lobby's shard (which adds the members).
    pub(super) fn matchmaking_start(
        &mut self,
        request_id: u64,
        start: request::MatchmakingStart<'_>,
    ) {
        let invalid = |this: &Self, msg: &str| {
            this.error(request_id, ErrorCode::INVALID_ARGUMENT, msg, false);
        };
        let (game, mode) = (start.game, start.mode);
        if game.is_empty() || mode.is_empty() || game.len() > MAX_NAME || mode.len() > MAX_NAME {
            return invalid(self, &format!("game and mode are 1..={MAX_NAME} bytes"));
        }
        let rows = start.latencies.len();
        if rows == 0 || rows > MAX_REGIONS {
            let msg = format!(
                "give your measured latency to 1..={MAX_REGIONS} regions (latencies is {})",
                if rows == 0 { "empty" } else { "too long" }
            );
            return invalid(self, &msg);
        }
        let mut latency_ms: Vec<(Arc<str>, u32)> = Vec::with_capacity(rows);
        for row in start.latencies.iter() {
            let region = row.region;
            if region.is_empty() || region.len() > MAX_NAME {
                return invalid(self, &format!("region names are 1..={MAX_NAME} bytes"));
            }
            if row.ms == 0 || row.ms >= MAX_LATENCY_MS {
                let msg = format!(
                    "latency {} ms to {region} is not a measurement (1..{MAX_LATENCY_MS})",
                    row.ms
                );
                return invalid(self, &msg);
            }
            if latency_ms.iter().any(|(r, _)| &**r == region) {
                return invalid(self, &format!("region {region} is listed twice"));
            }
            latency_ms.push((Arc::from(region), row.ms));
        }
        let given = start.attributes.len();
        if given > MAX_ATTRIBUTES {
            return invalid(self, &format!("at most {MAX_ATTRIBUTES} attributes"));
        }
        let mut attributes: Vec<(Arc<str>, Attribute)> = Vec::with_capacity(given);
        for a in start.attributes.iter() {
            let name = a.name;
            if name.is_empty() || name.len() > MAX_NAME {
                return invalid(self, &format!("attribute names are 1..={MAX_NAME} bytes"));
            }
            if attributes.iter().any(|(n, _)| &**n == name) {
                return invalid(self, &format!("attribute {name} is given twice"));
            }
            let value = if a.is_number {
                if !a.number.is_finite() {
                    return invalid(self, &format!("attribute {name} must be a finite number"));
                }
                Attribute::Number(a.number)
            } else {
                let text = a.text;
                if text.len() > MAX_NAME {
                    return invalid(
                        self,
                        &format!("attribute {name}'s text is at most {MAX_NAME} bytes"),
                    );
                }
                Attribute::Text(Arc::from(text))
            };
            attributes.push((Arc::from(name), value));
        }
        let role = start.role.filter(|r| !r.is_empty());
        if role.is_some_and(|r| r.len() > MAX_NAME) {
            return invalid(self, &format!("role is at most {MAX_NAME} bytes"));
        }
        let game: Arc<str> = Arc::from(game);
        let token_rating = self
            .at
            .ratings
            .iter()
            .find(|(g, _)| *g == game)
            .map(|(_, r)| *r);
        let start_cmd = Start {
            request_id,
            session: Some(self.at.session),
            game: game.clone(),
            mode: Arc::from(mode),
            players: vec![self.at.author.clone()],
            token_rating,
            latency_ms,
            attributes,
            role: role.map(Arc::from),
            party: None,
        };
        let lobby_id = start.lobby_id;
        let (shard, msg) = if lobby_id.is_empty() {
            let msg = ShardMsg::Matchmaking {
                cmd: Box::new(Command::Start(Box::new(start_cmd))),
                reply_to: Some(self.at.outbox.clone()),
                watcher: Some(self.at.outbox.clone()),
            };
            (self.edge.shards.of_game(&game), msg)
        } else {
            if lobby_id.len() > crate::core::engine::lobbies::MAX_NAME {
                let msg = format!(
                    "lobby_id must be 1..={} bytes",
                    crate::core::engine::lobbies::MAX_NAME
                );
                return invalid(self, &msg);
            }
            let msg = ShardMsg::PartyStart(Box::new(PartyStart {
                start: start_cmd,
                lobby_id: Arc::from(lobby_id),
                reply_to: self.at.outbox.clone(),
            }));
            (self.edge.shards.of_lobby(lobby_id), msg)
        };
        self.send_or_busy(request_id, shard, msg);
    }
}
