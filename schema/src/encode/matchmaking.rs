//! Encoders for matchmaking frames: `matchmaking:start` and the other
//! ticket requests, the reply with a ticket's status, and the one
//! `MatchmakingEvent`. Same rules as the parent module.

use bytes::Bytes;
use flatbuffers::WIPOffset;

use super::{Encoder, EventFrame};
use crate::wire::{self, Body, MatchmakingEventKind, MatchmakingOpKind, TicketState};

/// A ticket's status as its players see it.
#[derive(Debug, Clone)]
pub struct TicketFields<'a> {
    /// The ticket id (like `17@arena`).
    pub request_id: &'a str,
    /// The game queued for.
    pub game: &'a str,
    /// The game mode.
    pub mode: &'a str,
    /// Searching, found, matched, or how it ended.
    pub state: TicketState,
    /// Time in the queue so far, ms.
    pub waited_ms: u64,
    /// The rating spread that applies now.
    pub spread: u32,
    /// The latency limit that applies now, ms.
    pub latency_ms: u32,
    /// Tickets ahead, rounded down to 0, 1, 10, 100, …
    pub ahead_band: u64,
    /// -1 while unknown.
    pub estimated_wait_ms: i64,
    /// Every player of the ticket (a party's members).
    pub players: Vec<&'a str>,
}

/// A `matchmaking:start` request.
#[derive(Debug, Clone, Default)]
pub struct MatchmakingStartFields<'a> {
    /// The game to queue for.
    pub game: &'a str,
    /// The game mode.
    pub mode: &'a str,
    /// Measured latency per region, `(region, ms)`.
    pub latencies: &'a [(&'a str, u32)],
    /// "" for a solo ticket.
    pub lobby_id: &'a str,
    /// (name, text) for must-match attributes.
    pub texts: &'a [(&'a str, &'a str)],
    /// (name, number) for range attributes.
    pub numbers: &'a [(&'a str, f64)],
    /// "" for none.
    pub role: &'a str,
}

/// A `MatchmakingEvent`; empty strings are left out.
#[derive(Debug, Clone)]
pub struct MatchmakingEventFields<'a> {
    /// What happened.
    pub kind: MatchmakingEventKind,
    /// The ticket it is about.
    pub request_id: &'a str,
    /// The ticket status, for the kinds that carry it.
    pub ticket: Option<TicketFields<'a>>,
    /// The match's id ("" when not about a match).
    pub match_id: &'a str,
    /// For MATCHED: the match's lobby.
    pub lobby_id: &'a str,
    /// -1 without a team.
    pub team: i16,
    /// For FOUND: the ready check's deadline (Unix ms).
    pub deadline_ms: i64,
    /// Why, for the kinds that say ("" otherwise).
    pub reason: &'a str,
    /// When it happened (Unix ms).
    pub at_ms: i64,
}

impl Encoder {
    fn opt_string(&mut self, s: &str) -> Option<WIPOffset<&'static str>> {
        (!s.is_empty()).then(|| self.fbb.create_string(s))
    }

    fn ticket(&mut self, t: &TicketFields<'_>) -> WIPOffset<wire::TicketStatus<'static>> {
        let request_id = Some(self.fbb.create_string(t.request_id));
        let game = Some(self.fbb.create_string(t.game));
        let mode = Some(self.fbb.create_string(t.mode));
        let players: Vec<_> = t
            .players
            .iter()
            .map(|p| self.fbb.create_string(p))
            .collect();
        let players = Some(self.fbb.create_vector(&players));
        wire::TicketStatus::create(
            &mut self.fbb,
            &wire::TicketStatusArgs {
                request_id,
                game,
                mode,
                state: t.state,
                waited_ms: t.waited_ms,
                spread: t.spread,
                latency_ms: t.latency_ms,
                ahead_band: t.ahead_band,
                estimated_wait_ms: t.estimated_wait_ms,
                players,
            },
        )
    }

    /// `matchmaking:start`.
    pub fn matchmaking_start(&mut self, request_id: u64, m: &MatchmakingStartFields<'_>) -> Bytes {
        let rows: Vec<_> = m
            .latencies
            .iter()
            .map(|(region, ms)| {
                let region = Some(self.fbb.create_string(region));
                wire::RegionLatency::create(
                    &mut self.fbb,
                    &wire::RegionLatencyArgs { region, ms: *ms },
                )
            })
            .collect();
        let latencies = Some(self.fbb.create_vector(&rows));
        let mut attrs = Vec::with_capacity(m.texts.len() + m.numbers.len());
        for (name, text) in m.texts {
            let name = Some(self.fbb.create_string(name));
            let text = Some(self.fbb.create_string(text));
            attrs.push(wire::MatchAttribute::create(
                &mut self.fbb,
                &wire::MatchAttributeArgs {
                    name,
                    text,
                    number: 0.0,
                    is_number: false,
                },
            ));
        }
        for (name, number) in m.numbers {
            let name = Some(self.fbb.create_string(name));
            attrs.push(wire::MatchAttribute::create(
                &mut self.fbb,
                &wire::MatchAttributeArgs {
                    name,
                    text: None,
                    number: *number,
                    is_number: true,
                },
            ));
        }
        let attributes = (!attrs.is_empty()).then(|| self.fbb.create_vector(&attrs));
        let game = Some(self.fbb.create_string(m.game));
        let mode = Some(self.fbb.create_string(m.mode));
        let lobby_id = self.opt_string(m.lobby_id);
        let role = self.opt_string(m.role);
        let body = wire::MatchmakingStart::create(
            &mut self.fbb,
            &wire::MatchmakingStartArgs {
                game,
                mode,
                latencies,
                lobby_id,
                attributes,
                role,
            },
        );
        self.finish_frame(request_id, 0, Body::MatchmakingStart, body.as_union_value())
    }

    /// A ticket request other than start (`cancel`, `subscribe`, `status`,
    /// `accept`, …) on the ticket `ticket`.
    pub fn matchmaking_op(
        &mut self,
        request_id: u64,
        op: MatchmakingOpKind,
        ticket: &str,
    ) -> Bytes {
        let ticket = Some(self.fbb.create_string(ticket));
        let body = wire::MatchmakingOp::create(
            &mut self.fbb,
            &wire::MatchmakingOpArgs {
                op,
                request_id: ticket,
            },
        );
        self.finish_frame(request_id, 0, Body::MatchmakingOp, body.as_union_value())
    }

    /// The reply to a matchmaking request: the ticket's status.
    pub fn matchmaking_reply(&mut self, request_id: u64, t: &TicketFields<'_>) -> Bytes {
        let ticket = Some(self.ticket(t));
        let body =
            wire::MatchmakingReply::create(&mut self.fbb, &wire::MatchmakingReplyArgs { ticket });
        self.finish_reply(request_id, Body::MatchmakingReply, body.as_union_value())
    }

    /// A matchmaking event: volatile for STATUS, reliable otherwise.
    pub fn matchmaking_event(&mut self, e: &MatchmakingEventFields<'_>) -> EventFrame {
        let ticket = e.ticket.as_ref().map(|t| self.ticket(t));
        let request_id = Some(self.fbb.create_string(e.request_id));
        let match_id = self.opt_string(e.match_id);
        let lobby_id = self.opt_string(e.lobby_id);
        let reason = self.opt_string(e.reason);
        let body = wire::MatchmakingEvent::create(
            &mut self.fbb,
            &wire::MatchmakingEventArgs {
                kind: e.kind,
                request_id,
                ticket,
                match_id,
                lobby_id,
                team: e.team,
                deadline_ms: e.deadline_ms,
                reason,
                at_ms: e.at_ms,
            },
        );
        let reliable = e.kind != MatchmakingEventKind::STATUS;
        self.finish_event(reliable, Body::MatchmakingEvent, body.as_union_value())
    }
}
