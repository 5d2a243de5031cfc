//! Decoding of `LobbyEvent` frames (`lobby:member:joined`, `lobby:ready`,
//! `lobby:kicked`, `lobby:update`, …) into [`Event::Lobby`]. Never panics on
//! a frame from the network: an event without a user or state leaves them
//! `None`.

use huddle_schema::wire::Frame;

use super::Event;
use crate::chat::user;
use crate::lobby::{lobby, LobbyEvent};

/// The lobby event a server frame carries, if it is one. `seq` is the
/// frame's sequence number.
pub(crate) fn lobby_event(frame: &Frame<'_>, seq: u64) -> Option<Event> {
    let e = frame.body_as_lobby_event()?;
    Some(Event::Lobby {
        event: LobbyEvent {
            lobby_id: e.lobby_id().unwrap_or_default().to_owned(),
            version: e.version(),
            kind: e.kind(),
            user: e.user().map(|u| user(Some(u))),
            ready: e.ready(),
            reason: e.reason().unwrap_or_default().to_owned(),
            lobby: e.lobby().map(|l| Box::new(lobby(l))),
            at_ms: e.at_ms(),
        },
        seq,
    })
}

#[cfg(test)]
mod tests {
    use huddle_schema::encode::LobbyEventFields;
    use huddle_schema::wire::{self, LobbyEventKind};
    use huddle_schema::{stamp_seq, verify_frame, Encoder, EventFrame};

    use super::*;
    use crate::lobby::tests::{chat_user, sample_fields, sample_lobby, BOB};

    /// Decodes an event frame as the driver does, with `seq` stamped in.
    fn event(frame: EventFrame, seq: u64) -> Option<Event> {
        let mut bytes = frame.bytes.to_vec();
        if let Some(at) = frame.seq_at {
            stamp_seq(&mut bytes, at, seq);
        }
        let frame = verify_frame(&bytes, 1 << 20).unwrap();
        lobby_event(&frame, frame.seq())
    }

    #[test]
    fn decodes_lobby_events() {
        let mut enc = Encoder::new();
        let frame = enc.lobby_event(&LobbyEventFields {
            lobby_id: "l-1",
            version: 8,
            kind: LobbyEventKind::MEMBER_READY,
            user: Some(BOB),
            ready: true,
            reason: "",
            lobby: None,
            at_ms: 1234,
        });
        assert!(frame.seq_at.is_some(), "lobby events are reliable");
        assert_eq!(
            event(frame, 21),
            Some(Event::Lobby {
                event: LobbyEvent {
                    lobby_id: "l-1".into(),
                    version: 8,
                    kind: LobbyEventKind::MEMBER_READY,
                    user: Some(chat_user(BOB)),
                    ready: true,
                    reason: String::new(),
                    lobby: None,
                    at_ms: 1234,
                },
                seq: 21,
            })
        );

        let frame = enc.lobby_event(&LobbyEventFields {
            lobby_id: "l-1",
            version: 7,
            kind: LobbyEventKind::STARTED,
            user: None,
            ready: false,
            reason: "",
            lobby: Some(sample_fields()),
            at_ms: 99,
        });
        assert_eq!(
            event(frame, 22),
            Some(Event::Lobby {
                event: LobbyEvent {
                    lobby_id: "l-1".into(),
                    version: 7,
                    kind: LobbyEventKind::STARTED,
                    user: None,
                    ready: false,
                    reason: String::new(),
                    lobby: Some(Box::new(sample_lobby())),
                    at_ms: 99,
                },
                seq: 22,
            })
        );

        let frame = enc.lobby_event(&LobbyEventFields {
            lobby_id: "l-1",
            version: 9,
            kind: LobbyEventKind::KICKED,
            user: Some(BOB),
            ready: false,
            reason: "afk",
            lobby: None,
            at_ms: 5,
        });
        let Some(Event::Lobby { event: e, seq }) = event(frame, 23) else {
            panic!("not a lobby event");
        };
        assert_eq!(seq, 23);
        assert_eq!(e.kind, LobbyEventKind::KICKED);
        assert_eq!(e.reason, "afk");
    }

    #[test]
    fn other_frames_are_not_lobby_events() {
        let mut enc = Encoder::new();
        assert_eq!(event(enc.echo_event("u", b"x", true), 1), None);
        assert_eq!(
            event(enc.friend_event("u", wire::Relation::FRIEND, 1), 2),
            None
        );
        let reply = enc.lobby_reply(1, &sample_fields());
        let frame = verify_frame(&reply, 1 << 20).unwrap();
        assert_eq!(lobby_event(&frame, 0), None);
    }
}
