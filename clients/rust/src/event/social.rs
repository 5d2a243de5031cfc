//! Decoding of `friend:update`, `notification:new` and `notification:count`
//! event frames into [`Event`]s. Never panics on a frame from the network.

use huddle_schema::wire::Frame;

use super::Event;
use crate::social::notification;

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

#[cfg(test)]
mod tests {
    use huddle_schema::wire::Relation;
    use huddle_schema::{stamp_seq, verify_frame, Encoder, EventFrame};

    use super::*;
    use crate::social::tests::{sample_fields, sample_notifications};

    /// Decodes an event frame as the driver does, with `seq` stamped in.
    fn event(frame: EventFrame, seq: u64) -> Option<Event> {
        let mut bytes = frame.bytes.to_vec();
        if let Some(at) = frame.seq_at {
            stamp_seq(&mut bytes, at, seq);
        }
        let frame = verify_frame(&bytes, 1 << 20).unwrap();
        social_event(&frame, frame.seq())
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
