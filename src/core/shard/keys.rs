//! Which shard owns a key: users, chats, lobbies, pairs of users, games'
//! matchmaking queues. Pure arithmetic over the shard count: a key hashes
//! to its cluster slot (`core::cluster::slot_of`) and a slot to a shard
//! (`slot % n`), so every key of one slot lives on one shard and a slot
//! moving between nodes moves one shard's worth of state. A node's shards
//! and the mailboxes that reach them live elsewhere.

use crate::core::cluster::{slot_of, Slot};
use crate::core::engine::chat::direct_chat_id;
use crate::core::engine::{matchmaking, SessionId};

/// Maps a key to the shard that owns it. Stable for a given shard count.
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    shard_of_slot(slot_of(key), shards)
}

/// The shard that holds every key of `slot`.
pub fn shard_of_slot(slot: Slot, shards: usize) -> usize {
    slot.index() % shards.max(1)
}

/// The key-to-shard map of one node's `count` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    count: usize,
}

impl Keys {
    /// The map over `count` shards (at least one).
    pub fn new(count: usize) -> Self {
        Self {
            count: count.max(1),
        }
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The shard that owns `user`.
    pub fn of_user(&self, user: &str) -> usize {
        shard_of(user.as_bytes(), self.count)
    }

    /// The shard that owns a lobby (and its chat, `lobby:<id>`).
    pub fn of_lobby(&self, lobby_id: &str) -> usize {
        shard_of(lobby_id.as_bytes(), self.count)
    }

    /// The shard that owns a game's matchmaking queues (every mode).
    pub fn of_game(&self, game: &str) -> usize {
        shard_of(matchmaking::shard_key(game).as_bytes(), self.count)
    }

    /// The shard that owns the pair of `a` and `b` (and their direct chat).
    pub fn of_pair(&self, a: &str, b: &str) -> usize {
        shard_of(direct_chat_id(a, b).as_bytes(), self.count)
    }

    /// The shard that owns a chat. A lobby's chat lives with its lobby.
    pub fn of_chat(&self, chat_id: &str) -> usize {
        let key = chat_id.strip_prefix("lobby:").unwrap_or(chat_id);
        shard_of(key.as_bytes(), self.count)
    }

    /// The shard that serves requests not tied to a key (echo) for `session`.
    pub fn of_session(&self, session: SessionId) -> usize {
        shard_of(&session.to_le_bytes(), self.count)
    }
}
