//! Matchmaking: the [`Ticket`] reply and the [`MatchmakingEvent`] of the
//! matchmaking requests (`matchmaking:start` solo or for a lobby's party,
//! `cancel`, `subscribe`, `unsubscribe`, `status`, and the ready check's
//! accept / decline), which are methods of [`Client`](crate::Client), what
//! [`MatchRequest`] asks for, and the decoding of tickets.
//!
//! Owns the mapping between matchmaking tables and Rust types only. It sits
//! below the events and the client (the requests live in
//! `client::matchmaking`, the event decoding in `event::matchmaking`), so it
//! must never refer to either. It must never panic on a frame from the
//! network: missing fields decode to defaults (empty strings, zeros, no team).

use huddle_schema::wire::{self, MatchmakingEventKind, TicketState};

use crate::error::ClientError;
use crate::reply::{reply_frame, unexpected};

/// A matchmaking ticket as its players see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ticket {
    /// The id every other request takes (like `17@arena`).
    pub request_id: String,
    /// The game queued for.
    pub game: String,
    /// The game mode.
    pub mode: String,
    /// Searching, found, matched, or how it ended.
    pub state: TicketState,
    /// Time in the queue so far, ms.
    pub waited_ms: u64,
    /// The rating spread and latency limit (ms) that apply now.
    pub spread: u32,
    /// The latency limit that applies now, ms (see `spread`).
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
///   `deadline_ms`
///   ([`Client::matchmaking_accept`](crate::Client::matchmaking_accept));
/// - MATCHED (`matchmaking:matched`): `lobby_id` (the match's lobby, this
///   user already a member), `team` and `match_id`;
/// - REQUEUED: others failed the ready check; searching again;
/// - CANCELLED, TIMEOUT, REMOVED: the ticket is over (`reason` says why).
///
/// Every kind but STATUS reaches every connection of every player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchmakingEvent {
    /// What happened; see the type docs.
    pub kind: MatchmakingEventKind,
    /// The ticket it is about.
    pub request_id: String,
    /// The ticket status, for the kinds that carry it (boxed to keep events
    /// small).
    pub ticket: Option<Box<Ticket>>,
    /// The match's id, for the kinds about a match ("" otherwise).
    pub match_id: String,
    /// For MATCHED: the match's lobby, this user already a member.
    pub lobby_id: String,
    /// For MATCHED: this user's team (`None` when none or out of range).
    pub team: Option<u8>,
    /// For FOUND: accept or decline before this time (Unix ms).
    pub deadline_ms: i64,
    /// Why, for the kinds that say ("" otherwise).
    pub reason: String,
    /// When it happened (Unix ms).
    pub at_ms: i64,
}

pub(crate) fn ticket(t: wire::TicketStatus<'_>) -> Ticket {
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

pub(crate) fn decode_ticket(buf: &[u8]) -> Result<Ticket, ClientError> {
    let frame = reply_frame(buf)?;
    let r = frame
        .body_as_matchmaking_reply()
        .ok_or_else(|| unexpected(&frame, "MatchmakingReply"))?;
    Ok(r.ticket().map(ticket).unwrap_or_default())
}

/// A `matchmaking:start` with everything it may carry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchRequest {
    /// The game to queue for.
    pub game: String,
    /// The game mode (a queue of `game`).
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
