//! Decoding of `MatchmakingEvent` frames (`matchmaking:status`, `found`,
//! `matched`, `cancelled`, `timeout`, …) into [`Event::Matchmaking`]. Never
//! panics on a frame from the network: missing fields decode to defaults.

use huddle_schema::wire::Frame;

use super::Event;
use crate::matchmaking::{ticket, MatchmakingEvent};

/// The matchmaking event a server frame carries, if it is one.
pub(crate) fn matchmaking_event(frame: &Frame<'_>, seq: u64) -> Option<Event> {
    let e = frame.body_as_matchmaking_event()?;
    Some(Event::Matchmaking {
        event: MatchmakingEvent {
            kind: e.kind(),
            request_id: e.request_id().unwrap_or_default().to_owned(),
            ticket: e.ticket().map(|t| Box::new(ticket(t))),
            match_id: e.match_id().unwrap_or_default().to_owned(),
            lobby_id: e.lobby_id().unwrap_or_default().to_owned(),
            team: u8::try_from(e.team()).ok(),
            deadline_ms: e.deadline_ms(),
            reason: e.reason().unwrap_or_default().to_owned(),
            at_ms: e.at_ms(),
        },
        seq,
    })
}

#[cfg(test)]
mod tests {
    use huddle_schema::wire::{MatchmakingEventKind, TicketState};

    use super::*;
    use huddle_schema::encode::{MatchmakingEventFields, TicketFields};
    use huddle_schema::Encoder;

    #[test]
    fn a_matched_event_decodes_with_its_lobby_and_team() {
        let mut enc = Encoder::new();
        let frame = enc.matchmaking_event(&MatchmakingEventFields {
            kind: MatchmakingEventKind::MATCHED,
            request_id: "3@arena",
            ticket: Some(TicketFields {
                request_id: "3@arena",
                game: "arena",
                mode: "1v1",
                state: TicketState::MATCHED,
                waited_ms: 1200,
                spread: 100,
                latency_ms: 60,
                ahead_band: 0,
                estimated_wait_ms: -1,
                players: vec!["a"],
            }),
            match_id: "m1@arena",
            lobby_id: "mabc",
            team: 1,
            deadline_ms: 0,
            reason: "",
            at_ms: 5,
        });
        let parsed = huddle_schema::verify_frame(&frame.bytes, 1 << 20).unwrap();
        let Some(Event::Matchmaking { event, .. }) = matchmaking_event(&parsed, 0) else {
            panic!("not a matchmaking event");
        };
        assert_eq!(event.lobby_id, "mabc");
        assert_eq!(event.team, Some(1));
        let t = event.ticket.unwrap();
        assert_eq!(t.estimated_wait_ms, None);
        assert_eq!(t.players, vec!["a".to_string()]);
    }
}
