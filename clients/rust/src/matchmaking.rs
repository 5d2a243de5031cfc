//! Matchmaking: typed requests (`matchmaking:start` solo or for a lobby's
//! party, `cancel`, `subscribe`, `unsubscribe`, `status`, and the ready
//! check's accept / decline) on [`Client`], the [`Ticket`] reply, and the
//! decoding of `MatchmakingEvent` frames (`matchmaking:status`, `found`,
//! `matched`, `cancelled`, `timeout`, …) for the event stream.
//!
//! Owns the mapping between matchmaking frames and Rust types only. It must
//! never panic on a frame from the network: missing fields decode to
//! defaults (empty strings, zeros, no team).

use huddle_schema::encode::MatchmakingStartFields;
use huddle_schema::wire::{self, Frame, MatchmakingEventKind, MatchmakingOpKind, TicketState};

use crate::client::{reply_frame, unexpected, Client, Event};
use crate::error::ClientError;

/// A matchmaking ticket as its players see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ticket {
    /// The id every other request takes (like `17@arena`).
    pub request_id: String,
    pub game: String,
    pub mode: String,
    pub state: TicketState,
    pub waited_ms: u64,
    /// The rating spread and latency limit (ms) that apply now.
    pub spread: u32,
    pub latency_ms: u32,
    /// Tickets ahead, rounded down to 0, 1, 10, 100, ...
    pub ahead_band: u64,
    /// From the queue's recent throughput; `None` while unknown.
    pub estimated_wait_ms: Option<u64>,
    /// Every player of the ticket (a party's members).
    pub players: Vec<String>,
}

/// A matchmaking event. By kind:
/// - STATUS (`matchmaking:status`, volatile): `ticket` holds the status, to
///   sessions subscribed to the ticket;
/// - STARTED: a lobby host queued this user's lobby; `ticket` is the shared
///   ticket;
/// - FOUND (`matchmaking:found`): a ready check; accept or decline before
///   `deadline_ms` ([`Client::matchmaking_accept`]);
/// - MATCHED (`matchmaking:matched`): `lobby_id` (the match's lobby, this
///   user already a member), `team` and `match_id`;
/// - REQUEUED: others failed the ready check; searching again;
/// - CANCELLED, TIMEOUT, REMOVED: the ticket is over (`reason` says why).
///
/// Every kind but STATUS reaches every connection of every player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchmakingEvent {
    pub kind: MatchmakingEventKind,
    pub request_id: String,
    pub ticket: Option<Box<Ticket>>,
    pub match_id: String,
    pub lobby_id: String,
    pub team: Option<u8>,
    pub deadline_ms: i64,
    pub reason: String,
    pub at_ms: i64,
}

fn ticket(t: wire::TicketStatus<'_>) -> Ticket {
    Ticket {
        request_id: t.request_id().unwrap_or_default().to_owned(),
        game: t.game().unwrap_or_default().to_owned(),
        mode: t.mode().unwrap_or_default().to_owned(),
        state: t.state(),
        waited_ms: t.waited_ms(),
        spread: t.spread(),
        latency_ms: t.latency_ms(),
        ahead_band: t.ahead_band(),
        estimated_wait_ms: u64::try_from(t.estimated_wait_ms()).ok(),
        players: t
            .players()
            .map(|v| v.iter().map(str::to_owned).collect())
            .unwrap_or_default(),
    }
}

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

fn decode_ticket(buf: &[u8]) -> Result<Ticket, ClientError> {
    let frame = reply_frame(buf)?;
    let r = frame
        .body_as_matchmaking_reply()
        .ok_or_else(|| unexpected(&frame, "MatchmakingReply"))?;
    Ok(r.ticket().map(ticket).unwrap_or_default())
}

/// A `matchmaking:start` with everything it may carry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchRequest {
    pub game: String,
    pub mode: String,
    /// Measured latency per region, ms.
    pub latencies: Vec<(String, u32)>,
    /// Queue this lobby (hosted by this user) as a party; "" for solo.
    pub lobby_id: String,
    /// Values for the queue's must-match attributes (a map, a variant).
    pub texts: Vec<(String, String)>,
    /// Values for the queue's range attributes (a level).
    pub numbers: Vec<(String, f64)>,
    /// The role this player takes ("" for none).
    pub role: String,
}

impl Client {
    /// `matchmaking:start` with attributes, a role or a party: see
    /// [`Client::matchmaking_start`] for the refusals; a missing, unknown or
    /// mistyped attribute or role is INVALID_ARGUMENT.
    pub async fn matchmaking_start_with(&self, r: &MatchRequest) -> Result<Ticket, ClientError> {
        let latencies: Vec<(&str, u32)> = r
            .latencies
            .iter()
            .map(|(g, ms)| (g.as_str(), *ms))
            .collect();
        let texts: Vec<(&str, &str)> = r
            .texts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let numbers: Vec<(&str, f64)> = r.numbers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let fields = MatchmakingStartFields {
            game: &r.game,
            mode: &r.mode,
            latencies: &latencies,
            lobby_id: &r.lobby_id,
            texts: &texts,
            numbers: &numbers,
            role: &r.role,
        };
        self.send_start(&fields).await
    }

    async fn send_start(&self, fields: &MatchmakingStartFields<'_>) -> Result<Ticket, ClientError> {
        let buf = self
            .request(|enc, id| enc.matchmaking_start(id, fields))
            .await?;
        decode_ticket(&buf)
    }

    /// `matchmaking:start` in `game`/`mode` with this player's measured
    /// latency per region (`(region, ms)`). The rating comes from the token
    /// or the game backend, never from here. This session is subscribed to
    /// the ticket's status. Refusals: MATCH_NOT_FOUND (no such queue),
    /// INVALID_ARGUMENT (region not played, latency missing or absurd),
    /// MATCHMAKING_ERROR (a ticket for this game is already active).
    pub async fn matchmaking_start(
        &self,
        game: &str,
        mode: &str,
        latencies: &[(&str, u32)],
    ) -> Result<Ticket, ClientError> {
        self.send_start(&MatchmakingStartFields {
            game,
            mode,
            latencies,
            ..Default::default()
        })
        .await
    }

    /// Queues the lobby `lobby_id` (this user hosts it) as one party: its
    /// members are never split across teams or matches, and each gets a
    /// STARTED event with the shared ticket. NOT_HOST, LOBBY_NOT_FOUND, or
    /// INVALID_ARGUMENT when the party is larger than a team.
    pub async fn matchmaking_start_party(
        &self,
        lobby_id: &str,
        game: &str,
        mode: &str,
        latencies: &[(&str, u32)],
    ) -> Result<Ticket, ClientError> {
        self.send_start(&MatchmakingStartFields {
            game,
            mode,
            latencies,
            lobby_id,
            ..Default::default()
        })
        .await
    }

    async fn matchmaking_op(
        &self,
        op: MatchmakingOpKind,
        request_id: &str,
    ) -> Result<Ticket, ClientError> {
        let buf = self
            .request(|enc, id| enc.matchmaking_op(id, op, request_id))
            .await?;
        decode_ticket(&buf)
    }

    /// `matchmaking:cancel`, only while searching: CANCEL_ERROR once a match
    /// was found (decline it instead) or the ticket is over. Every player
    /// of the ticket gets CANCELLED.
    pub async fn matchmaking_cancel(&self, request_id: &str) -> Result<Ticket, ClientError> {
        self.matchmaking_op(MatchmakingOpKind::CANCEL, request_id)
            .await
    }

    /// `matchmaking:subscribe`: STATUS events every few seconds on this
    /// session. MATCH_NOT_FOUND for a ticket that is not this user's;
    /// SUBSCRIPTION_ERROR when it is over.
    pub async fn matchmaking_subscribe(&self, request_id: &str) -> Result<Ticket, ClientError> {
        self.matchmaking_op(MatchmakingOpKind::SUBSCRIBE, request_id)
            .await
    }

    /// `matchmaking:unsubscribe`.
    pub async fn matchmaking_unsubscribe(&self, request_id: &str) -> Result<Ticket, ClientError> {
        self.matchmaking_op(MatchmakingOpKind::UNSUBSCRIBE, request_id)
            .await
    }

    /// The ticket's status now (also after it ended: its final state).
    pub async fn matchmaking_status(&self, request_id: &str) -> Result<Ticket, ClientError> {
        self.matchmaking_op(MatchmakingOpKind::STATUS, request_id)
            .await
    }

    /// Accepts the ready check of this ticket (after FOUND).
    pub async fn matchmaking_accept(&self, request_id: &str) -> Result<Ticket, ClientError> {
        self.matchmaking_op(MatchmakingOpKind::ACCEPT, request_id)
            .await
    }

    /// Declines the ready check: this ticket ends (REMOVED); the other
    /// tickets of the match search again keeping their waiting time.
    pub async fn matchmaking_decline(&self, request_id: &str) -> Result<Ticket, ClientError> {
        self.matchmaking_op(MatchmakingOpKind::DECLINE, request_id)
            .await
    }
}

#[cfg(test)]
mod tests {
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
