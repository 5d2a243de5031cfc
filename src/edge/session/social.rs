//! The session shell's friends and notifications requests: validates each
//! decoded request's arguments, turns it into its engine command and routes it — a
//! friend operation to the pair's shard, everything else to the user's
//! own shard. Assembles the friend list (roster from the user's shard,
//! presence from each friend's shard). Holds no state of its own.

use std::collections::HashMap;
use std::sync::Arc;

use huddle_schema::encode::{FriendEntry, PresenceEntry};
use huddle_schema::wire::{Body, ErrorCode, FriendAction};
use tokio::sync::oneshot;

use super::connection::Conn;
use super::encode;
use crate::core::engine::notifications::{self, MAX_PAGE};
use crate::core::engine::social::{Op, OpCommand, Relation};
use crate::core::engine::{Presence, Status, UserId};
use crate::core::shard::{FriendStage, ShardMsg};

/// Longest user id accepted in a friend operation, bytes.
const MAX_USER_ID: usize = 128;
/// Rows of a friend list at most (friends come first).
const MAX_FRIEND_ROWS: usize = 2000;

fn offline(user_id: &str) -> PresenceEntry {
    PresenceEntry {
        user_id: user_id.to_string(),
        status: crate::core::wire::presence_status(Status::Offline),
        connections: 0,
        last_active_ms: 0,
        text: String::new(),
    }
}

fn entry(p: &Presence) -> PresenceEntry {
    PresenceEntry {
        user_id: p.user_id.to_string(),
        status: crate::core::wire::presence_status(p.status),
        connections: p.connections,
        last_active_ms: p.last_active_ms,
        text: p.text.as_deref().unwrap_or("").to_string(),
    }
}

impl Conn<'_> {
    pub(super) fn notification_list(
        &mut self,
        request_id: u64,
        before_id: u64,
        limit: u16,
        unread_only: bool,
    ) {
        let limit = usize::from(limit);
        if limit == 0 || limit > MAX_PAGE {
            let msg = format!("limit must be 1..={MAX_PAGE}, got {limit}");
            self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
            return;
        }
        self.notifications(notifications::Command::List {
            request_id,
            user: self.at.user.clone(),
            before_id,
            limit,
            unread_only,
        });
    }

    pub(super) fn notification_mark_read(&mut self, request_id: u64, id: u64, all: bool) {
        if !all && id == 0 {
            let msg = "give a notification id, or set `all` to mark every one read";
            self.error(request_id, ErrorCode::INVALID_ARGUMENT, msg, false);
            return;
        }
        self.notifications(notifications::Command::MarkRead {
            request_id,
            user: self.at.user.clone(),
            id: (!all).then_some(id),
        });
    }

    pub(super) fn notification_delete(&mut self, request_id: u64, id: u64) {
        self.notifications(notifications::Command::Delete {
            request_id,
            user: self.at.user.clone(),
            id,
        });
    }

    fn notifications(&self, cmd: notifications::Command) {
        let request_id = match &cmd {
            notifications::Command::List { request_id, .. }
            | notifications::Command::MarkRead { request_id, .. }
            | notifications::Command::Delete { request_id, .. } => *request_id,
            _ => 0,
        };
        let shard = self.edge.shards.of_user(&self.at.user);
        let msg = ShardMsg::Notifications {
            cmd,
            reply_to: Some(self.at.outbox.clone()),
        };
        self.send_or_busy(request_id, shard, msg);
    }

    pub(super) fn friend_op(&mut self, request_id: u64, action: FriendAction, target: &str) {
        if target.is_empty() || target.len() > MAX_USER_ID || target.contains(':') {
            let msg = format!("user_id must be 1..={MAX_USER_ID} bytes without ':'");
            self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
            return;
        }
        let op = match action {
            FriendAction::REQUEST => Op::Request,
            FriendAction::ACCEPT => Op::Accept,
            FriendAction::REJECT => Op::Reject,
            FriendAction::CANCEL => Op::Cancel,
            FriendAction::REMOVE => Op::Remove,
            FriendAction::BLOCK => Op::Block,
            FriendAction::UNBLOCK => Op::Unblock,
            other => {
                let msg = format!("unknown friend action {}", other.0);
                self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
                return;
            }
        };
        // The actor's shard checks the relation cap, then hands the
        // operation to the pair's shard.
        let shard = self.edge.shards.of_user(&self.at.user);
        let msg = ShardMsg::Friend {
            cmd: OpCommand {
                request_id,
                actor: self.at.user.clone(),
                target: UserId::from(target),
                op,
            },
            reply_to: self.at.outbox.clone(),
            stage: FriendStage::Actor,
        };
        self.send_or_busy(request_id, shard, msg);
    }

    /// The roster from the user's shard, then each friend's presence from
    /// their shards; one reply.
    pub(super) fn friend_list(&mut self, request_id: u64) {
        let shards = self.edge.shards.clone();
        let own = shards.of_user(&self.at.user);
        let (tx, rx) = oneshot::channel();
        let msg = ShardMsg::FriendList {
            user: self.at.user.clone(),
            reply: tx,
        };
        if !self.send_or_busy(request_id, own, msg) {
            return;
        }
        let outbox = self.at.outbox.clone();
        tokio::spawn(async move {
            let mut roster = rx.await.unwrap_or_default();
            roster.truncate(MAX_FRIEND_ROWS);
            let mut by_shard: Vec<Vec<UserId>> = vec![Vec::new(); shards.count()];
            for r in roster.iter().filter(|r| r.relation == Relation::Friend) {
                by_shard[shards.of_user(&r.user_id)].push(r.user_id.clone());
            }
            let mut pending = Vec::new();
            for (shard, user_ids) in by_shard.into_iter().enumerate() {
                if user_ids.is_empty() {
                    continue;
                }
                let (reply, rx) = oneshot::channel();
                // Presence is best effort under saturation: friends show offline.
                if shards
                    .try_send(shard, ShardMsg::Lookup { user_ids, reply })
                    .is_ok()
                {
                    pending.push(rx);
                }
            }
            let mut presence: HashMap<Arc<str>, Presence> = HashMap::new();
            for rx in pending {
                for p in rx.await.unwrap_or_default() {
                    presence.insert(p.user_id.clone(), p);
                }
            }
            let rows: Vec<FriendEntry> = roster
                .iter()
                .map(|r| FriendEntry {
                    user_id: r.user_id.to_string(),
                    relation: crate::core::wire::relation(r.relation),
                    since_ms: r.since_ms,
                    presence: presence
                        .get(&r.user_id)
                        .map_or_else(|| offline(&r.user_id), entry),
                })
                .collect();
            let bytes = encode(|e| e.friend_list_page(request_id, &rows));
            outbox.push_reply(bytes, Body::FriendListPage);
        });
    }
}
