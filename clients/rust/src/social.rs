//! Friends and notifications: the reply types of the friend requests
//! (`friend:request`, `accept`, `reject`, `cancel`, `remove`, `block`,
//! `unblock`, the friend list) and the notification requests (pages,
//! mark-read, delete), which are methods of [`Client`](crate::Client), and
//! the decoding of the tables and replies they carry.
//!
//! Owns the mapping between friends and notifications tables and Rust types
//! only. It sits below the events and the client (the requests live in
//! `client::social`, the event decoding in `event::social`), so it must never
//! refer to either. It must never panic on a frame from the network: missing
//! fields decode to defaults (empty strings, zeros, OFFLINE presence).

use huddle_schema::encode::PresenceEntry;
use huddle_schema::wire::{self, DeliveryChannel, DeliveryState, Relation};

use crate::error::ClientError;
use crate::reply::{presence_entry, reply_frame, unexpected};

/// The reply to a friend operation
/// ([`Client::friend_request`](crate::Client::friend_request) and the
/// others): the relation afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendOpDone {
    /// The other user.
    pub user_id: String,
    /// As this user sees it: BLOCKED means "I blocked them".
    pub relation: Relation,
    /// When the current relation began (Unix ms).
    pub since_ms: i64,
}

/// One row of [`Client::friends`](crate::Client::friends): a friend, a
/// request either way, or a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Friend {
    /// The other user.
    pub user_id: String,
    /// The relation, as this user sees it.
    pub relation: Relation,
    /// When the current relation began (Unix ms).
    pub since_ms: i64,
    /// OFFLINE for anyone but friends.
    pub presence: PresenceEntry,
}

/// One delivery channel's state on a [`Notification`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStatus {
    /// IN_APP, PUSH or EMAIL.
    pub channel: DeliveryChannel,
    /// PENDING until the channel's webhook answered (SENT) or gave up
    /// (FAILED); IN_APP is SENT once stored.
    pub state: DeliveryState,
    /// Why the channel failed ("" otherwise).
    pub error: String,
    /// Delivery attempts so far.
    pub attempts: u16,
    /// When the state last changed (Unix ms).
    pub updated_at_ms: i64,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Time-ordered, unique across nodes.
    pub id: u64,
    /// What happened: "friend.request", "friend.accepted", "announcement", …
    pub kind: String,
    /// A short headline.
    pub title: String,
    /// The text ("" when none).
    pub body: String,
    /// Free-form JSON for the game ("" when none).
    pub data: String,
    /// When it was created (Unix ms).
    pub created_at_ms: i64,
    /// This user marked it read.
    pub read: bool,
    /// How each delivery channel fared.
    pub channels: Vec<ChannelStatus>,
}

/// A page of [`Client::notifications`](crate::Client::notifications),
/// newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationPage {
    /// Up to the asked limit, newest first.
    pub notifications: Vec<Notification>,
    /// Older notifications exist: ask again with `before_id` = the last id
    /// here.
    pub has_more: bool,
    /// This user's notifications in all.
    pub total: u32,
    /// Of those, unread.
    pub unread: u32,
}

/// This user's notification counts after a mark-read or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationCounts {
    /// This user's notifications in all.
    pub total: u32,
    /// Of those, unread.
    pub unread: u32,
}

pub(crate) fn channel_status(c: wire::ChannelStatus<'_>) -> ChannelStatus {
    ChannelStatus {
        channel: c.channel(),
        state: c.state(),
        error: c.error().unwrap_or_default().to_owned(),
        attempts: c.attempts(),
        updated_at_ms: c.updated_at_ms(),
    }
}

pub(crate) fn notification(n: wire::Notification<'_>) -> Notification {
    Notification {
        id: n.id(),
        kind: n.kind().unwrap_or_default().to_owned(),
        title: n.title().unwrap_or_default().to_owned(),
        body: n.body().unwrap_or_default().to_owned(),
        data: n.data().unwrap_or_default().to_owned(),
        created_at_ms: n.created_at_ms(),
        read: n.read(),
        channels: n
            .channels()
            .map(|v| v.iter().map(channel_status).collect())
            .unwrap_or_default(),
    }
}

pub(crate) fn friend(r: wire::FriendRow<'_>) -> Friend {
    let user_id = r.user_id().unwrap_or_default().to_owned();
    let presence = r
        .presence()
        .map(presence_entry)
        .unwrap_or_else(|| PresenceEntry {
            user_id: user_id.clone(),
            status: wire::PresenceStatus::OFFLINE,
            connections: 0,
            last_active_ms: 0,
            text: String::new(),
        });
    Friend {
        user_id,
        relation: r.relation(),
        since_ms: r.since_ms(),
        presence,
    }
}

pub(crate) fn decode_friend_op_done(buf: &[u8]) -> Result<FriendOpDone, ClientError> {
    let frame = reply_frame(buf)?;
    let d = frame
        .body_as_friend_op_done()
        .ok_or_else(|| unexpected(&frame, "FriendOpDone"))?;
    Ok(FriendOpDone {
        user_id: d.user_id().unwrap_or_default().to_owned(),
        relation: d.relation(),
        since_ms: d.since_ms(),
    })
}

pub(crate) fn decode_friend_list_page(buf: &[u8]) -> Result<Vec<Friend>, ClientError> {
    let frame = reply_frame(buf)?;
    let page = frame
        .body_as_friend_list_page()
        .ok_or_else(|| unexpected(&frame, "FriendListPage"))?;
    Ok(page
        .friends()
        .map(|rows| rows.iter().map(friend).collect())
        .unwrap_or_default())
}

pub(crate) fn decode_notification_page(buf: &[u8]) -> Result<NotificationPage, ClientError> {
    let frame = reply_frame(buf)?;
    let page = frame
        .body_as_notification_page()
        .ok_or_else(|| unexpected(&frame, "NotificationPage"))?;
    Ok(NotificationPage {
        notifications: page
            .notifications()
            .map(|v| v.iter().map(notification).collect())
            .unwrap_or_default(),
        has_more: page.has_more(),
        total: page.total(),
        unread: page.unread(),
    })
}

pub(crate) fn decode_notification_counts(buf: &[u8]) -> Result<NotificationCounts, ClientError> {
    let frame = reply_frame(buf)?;
    let c = frame
        .body_as_notification_counts()
        .ok_or_else(|| unexpected(&frame, "NotificationCounts"))?;
    Ok(NotificationCounts {
        total: c.total(),
        unread: c.unread(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use huddle_schema::encode::{ChannelFields, FriendEntry, NotificationFields};
    use huddle_schema::wire::{ErrorCode, PresenceStatus};
    use huddle_schema::Encoder;

    pub(crate) fn sample_fields() -> Vec<NotificationFields<'static>> {
        vec![
            NotificationFields {
                id: 42,
                kind: "friend.request",
                title: "New friend request",
                body: "bob wants to be friends",
                data: r#"{"from":"bob"}"#,
                created_at_ms: 1_700_000_000_000,
                read: false,
                channels: vec![
                    ChannelFields {
                        channel: DeliveryChannel::IN_APP,
                        state: DeliveryState::SENT,
                        error: "",
                        attempts: 1,
                        updated_at_ms: 1_700_000_000_001,
                    },
                    ChannelFields {
                        channel: DeliveryChannel::EMAIL,
                        state: DeliveryState::FAILED,
                        error: "not configured",
                        attempts: 0,
                        updated_at_ms: 1_700_000_000_002,
                    },
                ],
            },
            NotificationFields {
                id: 41,
                kind: "announcement",
                title: "Maintenance",
                body: "",
                data: "",
                created_at_ms: 1_600_000_000_000,
                read: true,
                channels: vec![],
            },
        ]
    }

    pub(crate) fn sample_notifications() -> Vec<Notification> {
        vec![
            Notification {
                id: 42,
                kind: "friend.request".into(),
                title: "New friend request".into(),
                body: "bob wants to be friends".into(),
                data: r#"{"from":"bob"}"#.into(),
                created_at_ms: 1_700_000_000_000,
                read: false,
                channels: vec![
                    ChannelStatus {
                        channel: DeliveryChannel::IN_APP,
                        state: DeliveryState::SENT,
                        error: String::new(),
                        attempts: 1,
                        updated_at_ms: 1_700_000_000_001,
                    },
                    ChannelStatus {
                        channel: DeliveryChannel::EMAIL,
                        state: DeliveryState::FAILED,
                        error: "not configured".into(),
                        attempts: 0,
                        updated_at_ms: 1_700_000_000_002,
                    },
                ],
            },
            Notification {
                id: 41,
                kind: "announcement".into(),
                title: "Maintenance".into(),
                body: String::new(),
                data: String::new(),
                created_at_ms: 1_600_000_000_000,
                read: true,
                channels: vec![],
            },
        ]
    }

    #[test]
    fn decodes_friend_op_done() {
        let mut enc = Encoder::new();
        let buf = enc.friend_op_done(3, "bob", Relation::REQUEST_SENT, 1234);
        assert_eq!(
            decode_friend_op_done(&buf).unwrap(),
            FriendOpDone {
                user_id: "bob".into(),
                relation: Relation::REQUEST_SENT,
                since_ms: 1234,
            }
        );
        let err = enc.error(3, ErrorCode::FRIEND_ERROR, "no request", false, false);
        assert_eq!(
            decode_friend_op_done(&err).unwrap_err(),
            ClientError::Server {
                code: ErrorCode::FRIEND_ERROR,
                message: "no request".into(),
                retryable: false,
            }
        );
        let wrong = enc.notification_counts(3, 1, 1);
        assert!(matches!(
            decode_friend_op_done(&wrong),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            decode_friend_op_done(b"garbage"),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn decodes_friend_list_pages() {
        let mut enc = Encoder::new();
        let rows = vec![
            FriendEntry {
                user_id: "alice".into(),
                relation: Relation::FRIEND,
                since_ms: 10,
                presence: PresenceEntry {
                    user_id: "alice".into(),
                    status: PresenceStatus::IN_GAME,
                    connections: 2,
                    last_active_ms: 99,
                    text: "ranked".into(),
                },
            },
            FriendEntry {
                user_id: "carol".into(),
                relation: Relation::BLOCKED,
                since_ms: 20,
                presence: PresenceEntry {
                    user_id: "carol".into(),
                    status: PresenceStatus::OFFLINE,
                    connections: 0,
                    last_active_ms: 0,
                    text: String::new(),
                },
            },
        ];
        let buf = enc.friend_list_page(5, &rows);
        let friends = decode_friend_list_page(&buf).unwrap();
        let expected: Vec<Friend> = rows
            .into_iter()
            .map(|r| Friend {
                user_id: r.user_id,
                relation: r.relation,
                since_ms: r.since_ms,
                presence: r.presence,
            })
            .collect();
        assert_eq!(friends, expected);

        let empty = enc.friend_list_page(6, &[]);
        assert_eq!(decode_friend_list_page(&empty).unwrap(), vec![]);
        let wrong = enc.friend_op_done(7, "x", Relation::NONE, 0);
        assert!(matches!(
            decode_friend_list_page(&wrong),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn a_friend_row_without_presence_is_offline() {
        // Built by hand: the schema encoder always sets presence.
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let user_id = fbb.create_string("dave");
        let row = wire::FriendRow::create(
            &mut fbb,
            &wire::FriendRowArgs {
                user_id: Some(user_id),
                relation: Relation::REQUEST_RECEIVED,
                since_ms: 7,
                presence: None,
            },
        );
        fbb.finish_minimal(row);
        let row = flatbuffers::root::<wire::FriendRow>(fbb.finished_data()).unwrap();
        assert_eq!(
            friend(row),
            Friend {
                user_id: "dave".into(),
                relation: Relation::REQUEST_RECEIVED,
                since_ms: 7,
                presence: PresenceEntry {
                    user_id: "dave".into(),
                    status: PresenceStatus::OFFLINE,
                    connections: 0,
                    last_active_ms: 0,
                    text: String::new(),
                },
            }
        );
    }

    #[test]
    fn decodes_notification_pages() {
        let mut enc = Encoder::new();
        let buf = enc.notification_page(9, &sample_fields(), true, 12, 3);
        assert_eq!(
            decode_notification_page(&buf).unwrap(),
            NotificationPage {
                notifications: sample_notifications(),
                has_more: true,
                total: 12,
                unread: 3,
            }
        );
        let empty = enc.notification_page(10, &[], false, 0, 0);
        assert_eq!(
            decode_notification_page(&empty).unwrap(),
            NotificationPage {
                notifications: vec![],
                has_more: false,
                total: 0,
                unread: 0,
            }
        );
        let wrong = enc.friend_list_page(11, &[]);
        assert!(matches!(
            decode_notification_page(&wrong),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn decodes_notification_counts() {
        let mut enc = Encoder::new();
        let buf = enc.notification_counts(4, 8, 2);
        assert_eq!(
            decode_notification_counts(&buf).unwrap(),
            NotificationCounts {
                total: 8,
                unread: 2
            }
        );
        let err = enc.error(4, ErrorCode::NOTIFICATION_NOT_FOUND, "", false, false);
        assert!(matches!(
            decode_notification_counts(&err),
            Err(ClientError::Server {
                code: ErrorCode::NOTIFICATION_NOT_FOUND,
                ..
            })
        ));
        let wrong = enc.notification_page(4, &[], false, 0, 0);
        assert!(matches!(
            decode_notification_counts(&wrong),
            Err(ClientError::Protocol(_))
        ));
    }
}
