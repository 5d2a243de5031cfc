//! Notifications of the users one shard owns: created by domain events and
//! operators, stored, pushed live as `notification:new` with
//! `notification:count` after every change, listed newest first, marked
//! read, deleted; and each delivery channel's state.
//!
//! In-app delivery is the store plus the live push. Push and email go out
//! through the durable webhook outbox ([`Effect::Dispatch`]); a channel
//! stays PENDING until the outbox reports back ([`Command::Delivered`]), and
//! a channel with no webhook configured is FAILED "not configured" — never
//! reported sent when it was not. [`for_event`] names the notification a
//! domain event creates. Never does I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::chat::MessageIds;
use super::{DomainEvent, Effect, Event, Failure, Now, Record, Refusal, Reply, UserId};

/// Largest page of a notification list, in notifications and in bytes.
pub const MAX_PAGE: usize = 100;
pub const MAX_PAGE_BYTES: usize = 256 * 1024;

/// Where a notification is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    InApp,
    Push,
    Email,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::InApp => "in_app",
            Channel::Push => "push",
            Channel::Email => "email",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Sent,
    Failed,
}

/// One channel's delivery state on a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStatus {
    pub channel: Channel,
    pub state: DeliveryState,
    /// Why it failed.
    pub error: Option<String>,
    pub attempts: u16,
    pub updated_at_ms: i64,
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: u64,
    pub user_id: UserId,
    /// What happened: `friend.request`, `announcement`, ...
    pub kind: String,
    pub title: String,
    pub body: String,
    /// JSON for the game ("" when none).
    pub data: String,
    pub created_at_ms: i64,
    pub read: bool,
    pub channels: Vec<ChannelStatus>,
}

/// What to notify, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data: String,
    /// Deduplicated; empty means in-app only.
    pub channels: Vec<Channel>,
}

/// The notification a domain event creates, and for whom: a friend
/// request for its target, an accepted or declined request for its
/// requester, a lobby invitation for the invitee; in-app and push. Other
/// events create none.
pub fn for_event(event: &DomainEvent) -> Option<(UserId, NewNotification)> {
    let (user, kind, title, body, data) = match event {
        DomainEvent::FriendshipRequested { from, to } => (
            to,
            "friend.request",
            "Friend request",
            format!("{from} wants to be your friend"),
            serde_json::json!({ "from": from }),
        ),
        DomainEvent::FriendshipAccepted { by, requester } => (
            requester,
            "friend.accepted",
            "Friend request accepted",
            format!("{by} accepted your friend request"),
            serde_json::json!({ "by": by }),
        ),
        DomainEvent::FriendshipRejected { by, requester } => (
            requester,
            "friend.rejected",
            "Friend request declined",
            format!("{by} declined your friend request"),
            serde_json::json!({ "by": by }),
        ),
        DomainEvent::LobbyInvited {
            lobby_id,
            game,
            inviter,
            invitee,
        } => (
            invitee,
            "lobby.invite",
            "Lobby invitation",
            format!("{inviter} invited you to a {game} lobby"),
            serde_json::json!({ "lobby_id": lobby_id, "game": game, "inviter": inviter }),
        ),
        _ => return None,
    };
    Some((
        user.clone(),
        NewNotification {
            kind: kind.into(),
            title: title.into(),
            body,
            data: data.to_string(),
            channels: vec![Channel::InApp, Channel::Push],
        },
    ))
}

/// A push or email delivery for the webhook outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub notification: Arc<Notification>,
    pub channel: Channel,
}

/// What the webhook outbox reports back for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub user: UserId,
    pub id: u64,
    pub channel: Channel,
    pub attempts: u16,
    /// `Err(why)` once the outbox gave up.
    pub result: Result<(), String>,
}

/// Commands the notification engine accepts.
#[derive(Debug, Clone)]
pub enum Command {
    /// Notify `users` (owned by this shard).
    Create {
        users: Vec<UserId>,
        what: Arc<NewNotification>,
    },
    List {
        request_id: u64,
        user: UserId,
        before_id: u64,
        limit: usize,
        unread_only: bool,
    },
    /// Mark one (`Some(id)`) or every notification read.
    MarkRead {
        request_id: u64,
        user: UserId,
        id: Option<u64>,
    },
    Delete {
        request_id: u64,
        user: UserId,
        id: u64,
    },
    Delivered(Outcome),
}

/// Which external channels have a webhook, and how much one user keeps.
#[derive(Debug, Clone, Copy)]
pub struct NotificationLimits {
    pub push_configured: bool,
    pub email_configured: bool,
    /// Notifications kept per user; past it the oldest read one goes (or
    /// the oldest, when all are unread). A documented retention, not a drop.
    pub max_per_user: usize,
}

#[derive(Debug, Default)]
struct Inbox {
    items: BTreeMap<u64, Arc<Notification>>,
    unread: u32,
}

/// The notification state of one shard.
pub struct Notifications {
    limits: NotificationLimits,
    ids: MessageIds,
    inboxes: HashMap<UserId, Inbox>,
}

fn not_found(out: &mut Vec<Effect>, request_id: u64, id: u64) {
    out.push(Effect::Fail {
        request_id,
        failure: Failure::new(
            Refusal::NotificationNotFound,
            format!("you have no notification {id}"),
        ),
    });
}

impl Notifications {
    pub fn new(limits: NotificationLimits, node: u16, shard: u16) -> Self {
        Self {
            limits,
            ids: MessageIds::new(node, shard),
            inboxes: HashMap::new(),
        }
    }

    /// Loads a stored notification (at start-up).
    pub fn restore(&mut self, n: Notification) {
        self.ids.observe(n.id);
        let inbox = self.inboxes.entry(n.user_id.clone()).or_default();
        if !n.read {
            inbox.unread += 1;
        }
        if let Some(old) = inbox.items.insert(n.id, Arc::new(n)) {
            if !old.read {
                inbox.unread -= 1;
            }
        }
    }

    /// (total, unread) of `user`.
    pub fn counts(&self, user: &str) -> (u32, u32) {
        self.inboxes
            .get(user)
            .map_or((0, 0), |i| (i.items.len() as u32, i.unread))
    }

    fn count_event(&self, user: &UserId, out: &mut Vec<Effect>) {
        let (total, unread) = self.counts(user);
        out.push(Effect::ToUser {
            user: user.clone(),
            event: Event::NotificationCount { total, unread },
        });
    }

    fn counts_reply(&self, request_id: u64, user: &UserId, out: &mut Vec<Effect>) {
        let (total, unread) = self.counts(user);
        out.push(Effect::Reply {
            request_id,
            reply: Reply::NotificationCounts { total, unread },
        });
    }

    pub fn handle(&mut self, now: Now, cmd: Command, out: &mut Vec<Effect>) {
        match cmd {
            Command::Create { users, what } => {
                for user in users {
                    self.create(now, user, &what, out);
                }
            }
            Command::List {
                request_id,
                user,
                before_id,
                limit,
                unread_only,
            } => {
                if limit == 0 || limit > MAX_PAGE {
                    return out.push(Effect::Fail {
                        request_id,
                        failure: Failure::new(
                            Refusal::InvalidArgument,
                            format!("limit must be 1..={MAX_PAGE}, got {limit}"),
                        ),
                    });
                }
                let (total, unread) = self.counts(&user);
                let end = if before_id == 0 { u64::MAX } else { before_id };
                let mut page: Vec<Arc<Notification>> = Vec::new();
                let mut bytes = 0;
                let mut has_more = false;
                let candidates = self
                    .inboxes
                    .get(&user)
                    .into_iter()
                    .flat_map(|i| i.items.range(..end).rev())
                    .map(|(_, n)| n)
                    .filter(|n| !unread_only || !n.read);
                for n in candidates {
                    // A page stays well inside a frame: by count and by size.
                    let size = 128 + n.kind.len() + n.title.len() + n.body.len() + n.data.len();
                    if page.len() == limit || (!page.is_empty() && bytes + size > MAX_PAGE_BYTES) {
                        has_more = true;
                        break;
                    }
                    bytes += size;
                    page.push(n.clone());
                }
                out.push(Effect::Reply {
                    request_id,
                    reply: Reply::NotificationPage {
                        notifications: page,
                        has_more,
                        total,
                        unread,
                    },
                });
            }
            Command::MarkRead {
                request_id,
                user,
                id,
            } => {
                let Some(inbox) = self.inboxes.get_mut(&user) else {
                    return match id {
                        Some(id) => not_found(out, request_id, id),
                        None => self.counts_reply(request_id, &user, out),
                    };
                };
                let ids: Vec<u64> = match id {
                    Some(id) if !inbox.items.contains_key(&id) => {
                        return not_found(out, request_id, id)
                    }
                    Some(id) => vec![id],
                    None => inbox
                        .items
                        .values()
                        .filter(|n| !n.read)
                        .map(|n| n.id)
                        .collect(),
                };
                let mut changed = false;
                for id in ids {
                    if let Some(n) = inbox.items.get_mut(&id) {
                        if !n.read {
                            Arc::make_mut(n).read = true;
                            inbox.unread -= 1;
                            out.push(Effect::Persist(Record::Notification(n.clone())));
                            changed = true;
                        }
                    }
                }
                self.counts_reply(request_id, &user, out);
                if changed {
                    self.count_event(&user, out);
                }
            }
            Command::Delete {
                request_id,
                user,
                id,
            } => {
                let Some(removed) = self
                    .inboxes
                    .get_mut(&user)
                    .and_then(|i| i.items.remove(&id))
                else {
                    return not_found(out, request_id, id);
                };
                self.forget(&removed, out);
                self.counts_reply(request_id, &user, out);
                self.count_event(&user, out);
            }
            Command::Delivered(outcome) => self.delivered(now, outcome, out),
        }
    }

    fn create(&mut self, now: Now, user: UserId, what: &NewNotification, out: &mut Vec<Effect>) {
        let mut channels = vec![ChannelStatus {
            channel: Channel::InApp,
            state: DeliveryState::Sent,
            error: None,
            attempts: 1,
            updated_at_ms: now.unix_ms,
        }];
        for &channel in &what.channels {
            if channels.iter().any(|c| c.channel == channel) {
                continue;
            }
            let configured = match channel {
                Channel::InApp => true,
                Channel::Push => self.limits.push_configured,
                Channel::Email => self.limits.email_configured,
            };
            channels.push(ChannelStatus {
                channel,
                state: if configured {
                    DeliveryState::Pending
                } else {
                    DeliveryState::Failed
                },
                error: (!configured).then(|| format!("{} is not configured", channel.name())),
                attempts: 0,
                updated_at_ms: now.unix_ms,
            });
        }
        let n = Arc::new(Notification {
            id: self.ids.next(now.unix_ms),
            user_id: user.clone(),
            kind: what.kind.clone(),
            title: what.title.clone(),
            body: what.body.clone(),
            data: what.data.clone(),
            created_at_ms: now.unix_ms,
            read: false,
            channels,
        });
        out.push(Effect::Persist(Record::Notification(n.clone())));
        for c in &n.channels {
            if c.state == DeliveryState::Pending {
                out.push(Effect::Dispatch(Delivery {
                    notification: n.clone(),
                    channel: c.channel,
                }));
            }
        }
        let inbox = self.inboxes.entry(user.clone()).or_default();
        inbox.items.insert(n.id, n.clone());
        inbox.unread += 1;
        if inbox.items.len() > self.limits.max_per_user {
            let oldest = inbox
                .items
                .values()
                .find(|n| n.read)
                .or_else(|| inbox.items.values().next())
                .map(|n| n.id);
            if let Some(removed) = oldest.and_then(|id| inbox.items.remove(&id)) {
                self.forget(&removed, out);
            }
        }
        out.push(Effect::ToUser {
            user: user.clone(),
            event: Event::Notification(n),
        });
        self.count_event(&user, out);
    }

    /// Bookkeeping and the store after `removed` left its inbox.
    fn forget(&mut self, removed: &Notification, out: &mut Vec<Effect>) {
        if let Some(inbox) = self.inboxes.get_mut(&removed.user_id) {
            if !removed.read {
                inbox.unread -= 1;
            }
            if inbox.items.is_empty() {
                self.inboxes.remove(&removed.user_id);
            }
        }
        out.push(Effect::Persist(Record::NotificationDeleted {
            user: removed.user_id.clone(),
            id: removed.id,
        }));
    }

    fn delivered(&mut self, now: Now, o: Outcome, out: &mut Vec<Effect>) {
        let Some(n) = self
            .inboxes
            .get_mut(&o.user)
            .and_then(|i| i.items.get_mut(&o.id))
        else {
            // Deleted meanwhile: nothing to record.
            return;
        };
        let n = Arc::make_mut(n);
        if let Some(c) = n.channels.iter_mut().find(|c| c.channel == o.channel) {
            c.attempts = o.attempts;
            c.updated_at_ms = now.unix_ms;
            match o.result {
                Ok(()) => {
                    c.state = DeliveryState::Sent;
                    c.error = None;
                }
                Err(why) => {
                    c.state = DeliveryState::Failed;
                    c.error = Some(why);
                }
            }
        }
        out.push(Effect::Persist(Record::Notification(Arc::new(n.clone()))));
    }
}

#[cfg(test)]
mod tests;
