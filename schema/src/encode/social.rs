//! Encoders for friends and notifications frames (requests, replies and
//! events). Same rules as the parent module: one builder, one `Bytes` per
//! frame, events encoded once for every recipient.

use bytes::Bytes;
use flatbuffers::WIPOffset;

use super::{Encoder, EventFrame, PresenceEntry};
use crate::wire::{self, Body, DeliveryChannel, DeliveryState, FriendAction, Relation};

/// One row of a [`wire::FriendListPage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendEntry {
    /// The other user.
    pub user_id: String,
    /// The relation, as the asking user sees it.
    pub relation: Relation,
    /// When the current relation began (Unix ms).
    pub since_ms: i64,
    /// Their presence (OFFLINE for anyone but friends).
    pub presence: PresenceEntry,
}

/// One delivery channel's state on a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelFields<'a> {
    /// IN_APP, PUSH or EMAIL.
    pub channel: DeliveryChannel,
    /// PENDING, SENT or FAILED.
    pub state: DeliveryState,
    /// Why the channel failed ("" otherwise).
    pub error: &'a str,
    /// Delivery attempts so far.
    pub attempts: u16,
    /// When the state last changed (Unix ms).
    pub updated_at_ms: i64,
}

/// A notification as the wire carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationFields<'a> {
    /// Time-ordered, unique across nodes.
    pub id: u64,
    /// What happened: "friend.request", "announcement", …
    pub kind: &'a str,
    /// A short headline.
    pub title: &'a str,
    /// The text ("" when none).
    pub body: &'a str,
    /// JSON for the game ("" when none).
    pub data: &'a str,
    /// When it was created (Unix ms).
    pub created_at_ms: i64,
    /// The user marked it read.
    pub read: bool,
    /// How each delivery channel fared.
    pub channels: Vec<ChannelFields<'a>>,
}

impl Encoder {
    /// A friend operation request.
    pub fn friend_op(&mut self, request_id: u64, action: FriendAction, user_id: &str) -> Bytes {
        let user_id = Some(self.fbb.create_string(user_id));
        let body = wire::FriendOp::create(&mut self.fbb, &wire::FriendOpArgs { action, user_id });
        self.finish_frame(request_id, 0, Body::FriendOp, body.as_union_value())
    }

    /// The reply to a friend operation: the relation afterwards.
    pub fn friend_op_done(
        &mut self,
        request_id: u64,
        user_id: &str,
        relation: Relation,
        since_ms: i64,
    ) -> Bytes {
        let user_id = Some(self.fbb.create_string(user_id));
        let body = wire::FriendOpDone::create(
            &mut self.fbb,
            &wire::FriendOpDoneArgs {
                user_id,
                relation,
                since_ms,
            },
        );
        self.finish_reply(request_id, Body::FriendOpDone, body.as_union_value())
    }

    /// A request for this user's friends, requests and blocks.
    pub fn friend_list(&mut self, request_id: u64) -> Bytes {
        let body = wire::FriendList::create(&mut self.fbb, &wire::FriendListArgs {});
        self.finish_frame(request_id, 0, Body::FriendList, body.as_union_value())
    }

    /// The reply to a friend list request.
    pub fn friend_list_page(&mut self, request_id: u64, rows: &[FriendEntry]) -> Bytes {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                let user_id = self.fbb.create_string(&r.user_id);
                let presence = self.user_presence(&r.presence);
                wire::FriendRow::create(
                    &mut self.fbb,
                    &wire::FriendRowArgs {
                        user_id: Some(user_id),
                        relation: r.relation,
                        since_ms: r.since_ms,
                        presence: Some(presence),
                    },
                )
            })
            .collect();
        let friends = Some(self.fbb.create_vector(&rows));
        let body =
            wire::FriendListPage::create(&mut self.fbb, &wire::FriendListPageArgs { friends });
        self.finish_reply(request_id, Body::FriendListPage, body.as_union_value())
    }

    /// friend:update, reliable, to every session of the user whose relation
    /// changed.
    pub fn friend_event(&mut self, user_id: &str, relation: Relation, since_ms: i64) -> EventFrame {
        let user_id = Some(self.fbb.create_string(user_id));
        let body = wire::FriendEvent::create(
            &mut self.fbb,
            &wire::FriendEventArgs {
                user_id,
                relation,
                since_ms,
            },
        );
        self.finish_event(true, Body::FriendEvent, body.as_union_value())
    }

    fn notification(
        &mut self,
        n: &NotificationFields<'_>,
    ) -> WIPOffset<wire::Notification<'static>> {
        let channels: Vec<_> = n
            .channels
            .iter()
            .map(|c| {
                let error = (!c.error.is_empty()).then(|| self.fbb.create_string(c.error));
                wire::ChannelStatus::create(
                    &mut self.fbb,
                    &wire::ChannelStatusArgs {
                        channel: c.channel,
                        state: c.state,
                        error,
                        attempts: c.attempts,
                        updated_at_ms: c.updated_at_ms,
                    },
                )
            })
            .collect();
        let channels = Some(self.fbb.create_vector(&channels));
        let kind = Some(self.fbb.create_string(n.kind));
        let title = Some(self.fbb.create_string(n.title));
        let body = Some(self.fbb.create_string(n.body));
        let data = (!n.data.is_empty()).then(|| self.fbb.create_string(n.data));
        wire::Notification::create(
            &mut self.fbb,
            &wire::NotificationArgs {
                id: n.id,
                kind,
                title,
                body,
                data,
                created_at_ms: n.created_at_ms,
                read: n.read,
                channels,
            },
        )
    }

    /// notification:new, reliable.
    pub fn notification_event(&mut self, n: &NotificationFields<'_>) -> EventFrame {
        let notification = Some(self.notification(n));
        let body = wire::NotificationEvent::create(
            &mut self.fbb,
            &wire::NotificationEventArgs { notification },
        );
        self.finish_event(true, Body::NotificationEvent, body.as_union_value())
    }

    /// notification:count, reliable.
    pub fn notification_count_event(&mut self, total: u32, unread: u32) -> EventFrame {
        let body = wire::NotificationCountEvent::create(
            &mut self.fbb,
            &wire::NotificationCountEventArgs { total, unread },
        );
        self.finish_event(true, Body::NotificationCountEvent, body.as_union_value())
    }

    /// A request for a page of notifications: older than `before_id` (0: from
    /// the newest), at most `limit`, only unread ones with `unread_only`.
    pub fn notification_list(
        &mut self,
        request_id: u64,
        before_id: u64,
        limit: u16,
        unread_only: bool,
    ) -> Bytes {
        let body = wire::NotificationList::create(
            &mut self.fbb,
            &wire::NotificationListArgs {
                before_id,
                limit,
                unread_only,
            },
        );
        self.finish_frame(request_id, 0, Body::NotificationList, body.as_union_value())
    }

    /// The reply to a notification list request, newest first, with the user's
    /// counts.
    pub fn notification_page(
        &mut self,
        request_id: u64,
        rows: &[NotificationFields<'_>],
        has_more: bool,
        total: u32,
        unread: u32,
    ) -> Bytes {
        let rows: Vec<_> = rows.iter().map(|n| self.notification(n)).collect();
        let notifications = Some(self.fbb.create_vector(&rows));
        let body = wire::NotificationPage::create(
            &mut self.fbb,
            &wire::NotificationPageArgs {
                notifications,
                has_more,
                total,
                unread,
            },
        );
        self.finish_reply(request_id, Body::NotificationPage, body.as_union_value())
    }

    /// Mark one notification read, or all of them with `all`.
    pub fn notification_mark_read(&mut self, request_id: u64, id: u64, all: bool) -> Bytes {
        let body = wire::NotificationMarkRead::create(
            &mut self.fbb,
            &wire::NotificationMarkReadArgs { id, all },
        );
        self.finish_frame(
            request_id,
            0,
            Body::NotificationMarkRead,
            body.as_union_value(),
        )
    }

    /// Deletes notification `id`.
    pub fn notification_delete(&mut self, request_id: u64, id: u64) -> Bytes {
        let body =
            wire::NotificationDelete::create(&mut self.fbb, &wire::NotificationDeleteArgs { id });
        self.finish_frame(
            request_id,
            0,
            Body::NotificationDelete,
            body.as_union_value(),
        )
    }

    /// The reply to mark-read and delete: the counts afterwards.
    pub fn notification_counts(&mut self, request_id: u64, total: u32, unread: u32) -> Bytes {
        let body = wire::NotificationCounts::create(
            &mut self.fbb,
            &wire::NotificationCountsArgs { total, unread },
        );
        self.finish_reply(request_id, Body::NotificationCounts, body.as_union_value())
    }
}
