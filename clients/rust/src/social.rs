//! Friends and notifications: typed requests (`friend:request`, `accept`,
//! `reject`, `cancel`, `remove`, `block`, `unblock`, the friend list,
//! notification pages, mark-read and delete) on [`Client`], the reply types,
//! and the decoding of `friend:update`, `notification:new` and
//! `notification:count` events for the event stream.
//!
//! Owns the mapping between friends and notifications frames and Rust types
//! only; connection handling stays in the driver. It must never panic on a
//! frame from the network: missing fields decode to defaults (empty strings,
//! zeros, OFFLINE presence).

use huddle_schema::encode::PresenceEntry;
use huddle_schema::wire::{self, DeliveryChannel, DeliveryState, Frame, FriendAction, Relation};

use crate::client::{presence_entry, reply_frame, unexpected, Client, Event};
use crate::error::ClientError;

/// The reply to a friend operation ([`Client::friend_request`] and the
/// others): the relation afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendOpDone {
    pub user_id: String,
    /// As this user sees it: BLOCKED means "I blocked them".
    pub relation: Relation,
    /// When the current relation began (Unix ms).
    pub since_ms: i64,
}

/// One row of [`Client::friends`]: a friend, a request either way, or a
/// block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Friend {
    pub user_id: String,
    pub relation: Relation,
    /// When the current relation began (Unix ms).
    pub since_ms: i64,
    /// OFFLINE for anyone but friends.
    pub presence: PresenceEntry,
}

/// One delivery channel's state on a [`Notification`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStatus {
    pub channel: DeliveryChannel,
    /// PENDING until the channel's webhook answered (SENT) or gave up
    /// (FAILED); IN_APP is SENT once stored.
    pub state: DeliveryState,
    /// Why the channel failed ("" otherwise).
    pub error: String,
    pub attempts: u16,
    pub updated_at_ms: i64,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Time-ordered, unique across nodes.
    pub id: u64,
    /// What happened: "friend.request", "friend.accepted", "announcement", …
    pub kind: String,
    pub title: String,
    pub body: String,
    /// Free-form JSON for the game ("" when none).
    pub data: String,
    pub created_at_ms: i64,
    pub read: bool,
    pub channels: Vec<ChannelStatus>,
}

/// A page of [`Client::notifications`], newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationPage {
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
    pub total: u32,
    pub unread: u32,
}

fn channel_status(c: wire::ChannelStatus<'_>) -> ChannelStatus {
    ChannelStatus {
        channel: c.channel(),
        state: c.state(),
        error: c.error().unwrap_or_default().to_owned(),
        attempts: c.attempts(),
        updated_at_ms: c.updated_at_ms(),
    }
}

fn notification(n: wire::Notification<'_>) -> Notification {
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

fn friend(r: wire::FriendRow<'_>) -> Friend {
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

/// The friends or notifications event a server frame carries, if it is one.
/// `seq` is the frame's sequence number.
pub(crate) fn social_event(frame: &Frame<'_>, seq: u64) -> Option<Event> {
    if let Some(e) = frame.body_as_friend_event() {
        return Some(Event::FriendUpdate {
            user_id: e.user_id().unwrap_or_default().to_owned(),
            relation: e.relation(),
            since_ms: e.since_ms(),
            seq,
        });
    }
    if let Some(e) = frame.body_as_notification_event() {
        return Some(Event::Notification {
            notification: notification(e.notification()?),
            seq,
        });
    }
    if let Some(e) = frame.body_as_notification_count_event() {
        return Some(Event::NotificationCount {
            total: e.total(),
            unread: e.unread(),
            seq,
        });
    }
    None
}

fn decode_friend_op_done(buf: &[u8]) -> Result<FriendOpDone, ClientError> {
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

fn decode_friend_list_page(buf: &[u8]) -> Result<Vec<Friend>, ClientError> {
    let frame = reply_frame(buf)?;
    let page = frame
        .body_as_friend_list_page()
        .ok_or_else(|| unexpected(&frame, "FriendListPage"))?;
    Ok(page
        .friends()
        .map(|rows| rows.iter().map(friend).collect())
        .unwrap_or_default())
}

fn decode_notification_page(buf: &[u8]) -> Result<NotificationPage, ClientError> {
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

fn decode_notification_counts(buf: &[u8]) -> Result<NotificationCounts, ClientError> {
    let frame = reply_frame(buf)?;
    let c = frame
        .body_as_notification_counts()
        .ok_or_else(|| unexpected(&frame, "NotificationCounts"))?;
    Ok(NotificationCounts {
        total: c.total(),
        unread: c.unread(),
    })
}

impl Client {
    /// `friend:request`: ask `user_id` to be friends. When they already asked
    /// this user, this accepts their request instead. Both users get
    /// [`Event::FriendUpdate`]. FRIEND_ERROR when it does not fit the current
    /// relation (e.g. befriending oneself).
    pub async fn friend_request(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::REQUEST, user_id).await
    }

    /// `friend:accept`: accept `user_id`'s request. FRIEND_ERROR when there
    /// is none.
    pub async fn friend_accept(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::ACCEPT, user_id).await
    }

    /// `friend:reject`: turn down `user_id`'s request. FRIEND_ERROR when
    /// there is none.
    pub async fn friend_reject(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::REJECT, user_id).await
    }

    /// `friend:cancel`: withdraw this user's request to `user_id`.
    /// FRIEND_ERROR when there is none.
    pub async fn friend_cancel(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::CANCEL, user_id).await
    }

    /// `friend:remove`: stop being friends with `user_id`. FRIEND_ERROR when
    /// not friends.
    pub async fn friend_remove(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::REMOVE, user_id).await
    }

    /// `friend:block`: block `user_id` (ends any friendship or request). The
    /// blocked user sees NONE and is never told.
    pub async fn block(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::BLOCK, user_id).await
    }

    /// `friend:unblock`: lift this user's block on `user_id`. FRIEND_ERROR
    /// when not blocked.
    pub async fn unblock(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::UNBLOCK, user_id).await
    }

    async fn friend_op(
        &self,
        action: FriendAction,
        user_id: &str,
    ) -> Result<FriendOpDone, ClientError> {
        let buf = self
            .request(|enc, id| enc.friend_op(id, action, user_id))
            .await?;
        decode_friend_op_done(&buf)
    }

    /// This user's friends, requests both ways and blocks, each with
    /// presence (OFFLINE for anyone but friends).
    pub async fn friends(&self) -> Result<Vec<Friend>, ClientError> {
        let buf = self.request(|enc, id| enc.friend_list(id)).await?;
        decode_friend_list_page(&buf)
    }

    /// A page of this user's notifications, newest first: older than
    /// `before_id` (0 = from the newest), at most `limit` (1..=100), only
    /// unread ones with `unread_only`.
    pub async fn notifications(
        &self,
        before_id: u64,
        limit: u16,
        unread_only: bool,
    ) -> Result<NotificationPage, ClientError> {
        let buf = self
            .request(|enc, id| enc.notification_list(id, before_id, limit, unread_only))
            .await?;
        decode_notification_page(&buf)
    }

    /// Mark one notification read; returns the counts afterwards (also sent
    /// as [`Event::NotificationCount`]). NOTIFICATION_NOT_FOUND when this
    /// user has no such notification.
    pub async fn notification_mark_read(
        &self,
        notification_id: u64,
    ) -> Result<NotificationCounts, ClientError> {
        let buf = self
            .request(|enc, id| enc.notification_mark_read(id, notification_id, false))
            .await?;
        decode_notification_counts(&buf)
    }

    /// Mark every notification of this user read; returns the counts
    /// afterwards.
    pub async fn notification_mark_all_read(&self) -> Result<NotificationCounts, ClientError> {
        let buf = self
            .request(|enc, id| enc.notification_mark_read(id, 0, true))
            .await?;
        decode_notification_counts(&buf)
    }

    /// Delete one notification; returns the counts afterwards.
    /// NOTIFICATION_NOT_FOUND when this user has no such notification.
    pub async fn notification_delete(
        &self,
        notification_id: u64,
    ) -> Result<NotificationCounts, ClientError> {
        let buf = self
            .request(|enc, id| enc.notification_delete(id, notification_id))
            .await?;
        decode_notification_counts(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_schema::encode::{ChannelFields, FriendEntry, NotificationFields};
    use huddle_schema::wire::{ErrorCode, PresenceStatus};
    use huddle_schema::{stamp_seq, verify_frame, Encoder, EventFrame};

    /// Decodes an event frame as the driver does, with `seq` stamped in.
    fn event(frame: EventFrame, seq: u64) -> Option<Event> {
        let mut bytes = frame.bytes.to_vec();
        if let Some(at) = frame.seq_at {
            stamp_seq(&mut bytes, at, seq);
        }
        let frame = verify_frame(&bytes, 1 << 20).unwrap();
        social_event(&frame, frame.seq())
    }

    fn sample_fields() -> Vec<NotificationFields<'static>> {
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

    fn sample_notifications() -> Vec<Notification> {
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

    #[test]
    fn decodes_friend_events() {
        let mut enc = Encoder::new();
        let frame = enc.friend_event("erin", Relation::FRIEND, 555);
        assert!(frame.seq_at.is_some(), "friend:update is reliable");
        assert_eq!(
            event(frame, 17),
            Some(Event::FriendUpdate {
                user_id: "erin".into(),
                relation: Relation::FRIEND,
                since_ms: 555,
                seq: 17,
            })
        );
    }

    #[test]
    fn decodes_notification_events() {
        let mut enc = Encoder::new();
        let fields = sample_fields();
        let frame = enc.notification_event(&fields[0]);
        assert!(frame.seq_at.is_some(), "notification:new is reliable");
        assert_eq!(
            event(frame, 3),
            Some(Event::Notification {
                notification: sample_notifications().remove(0),
                seq: 3,
            })
        );

        let frame = enc.notification_count_event(5, 1);
        assert!(frame.seq_at.is_some(), "notification:count is reliable");
        assert_eq!(
            event(frame, 4),
            Some(Event::NotificationCount {
                total: 5,
                unread: 1,
                seq: 4,
            })
        );
    }

    #[test]
    fn other_frames_are_not_social_events() {
        let mut enc = Encoder::new();
        assert_eq!(event(enc.echo_event("u", b"x", true), 1), None);
        let pong = enc.pong(0, 0);
        let frame = verify_frame(&pong, 1 << 20).unwrap();
        assert_eq!(social_event(&frame, 0), None);
    }
}
