//! Scatter-gather queries: requests naming keys that live on several shards
//! (unread counts over chats, presence and follows over users). Each owning
//! shard answers its part; a spawned task gathers the parts and answers
//! once, in the order the client asked. Holds no state but the
//! connection's follow set.
//!
//! A saturated shard answers the whole request RATE_LIMITED; parts already
//! sent to other shards still run, and their answers are dropped.

use std::collections::HashMap;
use std::sync::Arc;

use huddle_schema::encode::{PresenceEntry, UnreadRow};
use huddle_schema::wire::{Body, ErrorCode};
use tokio::sync::oneshot;

use super::connection::Conn;
use super::{encode, MAX_FOLLOWS_PER_CONNECTION, MAX_PRESENCE_IDS, MAX_UNREAD_CHATS};
use crate::core::engine::{Failure, Refusal, UserId};
use crate::core::shard::ShardMsg;
use crate::edge::request::Strings;
use crate::runtime::shards::Shards;

impl Conn<'_> {
    /// Splits `keys` by owning shard and sends each shard its part; the
    /// receivers answer in shard order. A saturated shard answers the whole
    /// request RATE_LIMITED instead (returns `None`).
    fn scatter<K: Clone, T>(
        &self,
        request_id: u64,
        keys: &[K],
        owner: impl Fn(&Shards, &K) -> usize,
        message: impl Fn(Vec<K>, oneshot::Sender<T>) -> ShardMsg,
    ) -> Option<Vec<oneshot::Receiver<T>>> {
        let shards = &self.edge.shards;
        let mut by_shard: Vec<Vec<K>> = vec![Vec::new(); shards.count()];
        for key in keys {
            by_shard[owner(shards, key)].push(key.clone());
        }
        let mut pending = Vec::new();
        for (shard, part) in by_shard.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            if !self.send_or_busy(request_id, shard, message(part, tx)) {
                return None;
            }
            pending.push(rx);
        }
        Some(pending)
    }

    /// Unread counts over chats that may live on several shards: ask each
    /// shard for its part, answer once with rows in the order asked.
    pub(super) fn unread(&mut self, request_id: u64, chat_ids: Strings<'_>) {
        let asked = chat_ids.len();
        if asked > MAX_UNREAD_CHATS {
            let msg = format!("{asked} chats asked; at most {MAX_UNREAD_CHATS} per query");
            self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
            return;
        }
        let ids: Vec<Arc<str>> = chat_ids.iter().map(Arc::from).collect();
        let actor = self.actor();
        let Some(pending) = self.scatter(
            request_id,
            &ids,
            |shards, id| shards.of_chat(id),
            |chat_ids, reply| ShardMsg::ChatUnread {
                actor: actor.clone(),
                chat_ids,
                reply,
            },
        ) else {
            return;
        };
        let outbox = self.at.outbox.clone();
        tokio::spawn(async move {
            let mut rows = HashMap::new();
            let mut refused = None;
            for rx in pending {
                match rx.await {
                    Ok(Ok(part)) => rows.extend(part.into_iter().map(|r| (r.chat_id.clone(), r))),
                    Ok(Err(f)) => refused = refused.or(Some(f)),
                    Err(_) => {
                        let f =
                            Failure::new(Refusal::RateLimited, "a shard is shutting down; retry");
                        refused = refused.or(Some(f));
                    }
                }
            }
            let (bytes, body) = match refused {
                Some(f) => (
                    encode(|e| crate::core::wire::failure_frame(e, request_id, &f)),
                    Body::Error,
                ),
                None => {
                    let out: Vec<UnreadRow> = ids
                        .iter()
                        .filter_map(|id| rows.get(id))
                        .map(|r| UnreadRow {
                            chat_id: r.chat_id.to_string(),
                            read_up_to: r.read_up_to,
                            unread: r.unread,
                            last_message_id: r.last_message_id,
                        })
                        .collect();
                    (
                        encode(|e| e.chat_unread_counts(request_id, &out)),
                        Body::ChatUnreadCounts,
                    )
                }
            };
            outbox.push_reply(bytes, body);
        });
    }

    /// Presence of up to 500 users (`follow: None`), or follow / unfollow
    /// them for this session (`Some(true | false)`): each owning shard
    /// answers its part, the reply keeps the order asked.
    pub(super) fn presence(
        &mut self,
        request_id: u64,
        user_ids: Strings<'_>,
        follow: Option<bool>,
    ) {
        let asked = user_ids.len();
        if asked > MAX_PRESENCE_IDS {
            let msg = format!("{asked} user ids asked; at most {MAX_PRESENCE_IDS} per request");
            self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
            return;
        }
        let ids: Vec<UserId> = user_ids.iter().map(UserId::from).collect();
        match follow {
            Some(true) => {
                let follows = self.follows.get_or_insert_with(Default::default);
                let new = ids.iter().filter(|id| !follows.contains(*id)).count();
                if follows.len() + new > MAX_FOLLOWS_PER_CONNECTION {
                    let msg = format!(
                        "following {} users already; at most {MAX_FOLLOWS_PER_CONNECTION} per connection (unfollow some)",
                        follows.len()
                    );
                    self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
                    return;
                }
                follows.extend(ids.iter().cloned());
            }
            Some(false) => {
                if let Some(follows) = self.follows.as_mut() {
                    ids.iter().for_each(|id| {
                        follows.remove(id);
                    });
                }
            }
            None => {}
        }
        let (session, outbox) = (self.at.session, self.at.outbox.clone());
        let Some(pending) = self.scatter(
            request_id,
            &ids,
            |shards, id| shards.of_user(id),
            |user_ids, reply| match follow {
                None => ShardMsg::Lookup { user_ids, reply },
                Some(follow) => ShardMsg::Follow {
                    session,
                    targets: user_ids,
                    follow,
                    outbox: outbox.clone(),
                    reply,
                },
            },
        ) else {
            return;
        };
        let outbox = self.at.outbox.clone();
        tokio::spawn(async move {
            let mut rows = HashMap::new();
            for rx in pending {
                for p in rx.await.unwrap_or_default() {
                    rows.insert(p.user_id.clone(), p);
                }
            }
            let entries: Vec<PresenceEntry> = ids
                .iter()
                .filter_map(|id| rows.get(id))
                .map(|p| PresenceEntry {
                    user_id: p.user_id.to_string(),
                    status: crate::core::wire::presence_status(p.status),
                    connections: p.connections,
                    last_active_ms: p.last_active_ms,
                    text: p.text.as_deref().unwrap_or("").to_string(),
                })
                .collect();
            let bytes = encode(|e| e.presence_list(request_id, &entries));
            outbox.push_reply(bytes, Body::PresenceList);
        });
    }
}
