//! The matchmaking requests on [`Client`]: `matchmaking:start` (solo, for a
//! lobby's party, or with attributes and a role), `cancel`, `subscribe`,
//! `unsubscribe`, `status`, and the ready check's accept / decline.
//!
//! Owns building each request; the [`Ticket`] replies decode in
//! [`crate::matchmaking`] and the request plumbing is the parent's. It never
//! touches the connection.

use huddle_schema::encode::MatchmakingStartFields;
use huddle_schema::wire::MatchmakingOpKind;

use super::Client;
use crate::error::ClientError;
use crate::matchmaking::{decode_ticket, MatchRequest, Ticket};

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
