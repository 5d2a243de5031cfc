//! What a player does with a ticket: start one (solo or for a party, one
//! active per user per game), cancel it, follow its status, and answer its
//! ready check. Part of [`Queues`]; never does I/O and never reads a clock
//! (queue time comes in as milliseconds).

use std::sync::Arc;

use super::super::{DomainEvent, Effect, Event, Failure, Refusal, Reply, SessionId};
use super::matcher::{Player, TicketSpec};
use super::{
    fail, queue, EventKind, MatchEvent, Queues, Rating, Start, Ticket, TicketState, MAX_WATCHERS,
    STATUS_EVERY_MS,
};

impl Queues {
    pub(super) fn start(&mut self, now: u64, s: Start, out: &mut Vec<Effect>) {
        let rid = s.request_id;
        let Some(modes) = self.queues.get(&*s.game) else {
            return fail(
                out,
                rid,
                Refusal::MatchNotFound,
                format!("no matchmaking queues for game {:?}", s.game),
            );
        };
        if !modes.contains_key(&*s.mode) {
            let mut known: Vec<&str> = modes.keys().map(|m| &**m).collect();
            known.sort_unstable();
            return fail(
                out,
                rid,
                Refusal::MatchNotFound,
                format!(
                    "no matchmaking queue {}/{}; modes of {}: {}",
                    s.game,
                    s.mode,
                    s.game,
                    known.join(", ")
                ),
            );
        }
        let Some(owner) = s.players.first() else {
            return fail(
                out,
                rid,
                Refusal::InvalidArgument,
                "a ticket needs a player",
            );
        };
        for p in &s.players {
            let active = self
                .by_user
                .get(&p.id)
                .and_then(|l| l.iter().find(|(g, _)| *g == s.game));
            if let Some((_, ticket)) = active {
                let request = &self.tickets[ticket].request_id;
                let message = if p.id == owner.id {
                    format!(
                        "you already have ticket {request} for {}; cancel it before starting another",
                        s.game
                    )
                } else {
                    format!("{} is already searching for {} ({request})", p.id, s.game)
                };
                return fail(out, rid, Refusal::MatchmakingError, message);
            }
        }
        let token = s.token_rating.filter(Rating::valid);
        let owner_id = owner.id.clone();
        let id = self.next_ticket;
        let request_id: Arc<str> = Arc::from(format!("{id}@{}", s.game));
        let spec = TicketSpec {
            id,
            players: s
                .players
                .iter()
                .map(|p| {
                    let mut rating = self.rating(&s.game, &p.id);
                    // The asker's token counts unless the backend set one.
                    if p.id == owner_id && !self.backend_rated(&s.game, &p.id) {
                        rating = token.unwrap_or(rating);
                    }
                    Player {
                        user: p.id.clone(),
                        rating: rating.mu,
                    }
                })
                .collect(),
            latency_ms: s.latency_ms,
            attributes: s.attributes,
            roles: s.role.into_iter().collect(),
        };
        let life = match self
            .queues
            .get_mut(&*s.game)
            .and_then(|m| m.get_mut(&*s.mode))
        {
            Some((_, life)) => life,
            None => return,
        };
        if let Err(f) = life.start(now, spec) {
            return out.push(Effect::Fail {
                request_id: rid,
                failure: f,
            });
        }
        self.next_ticket += 1;
        if let Some(r) = token {
            // Kept for the parties this player joins later.
            self.set_rating(&s.game, &owner_id, r, false);
        }
        for p in &s.players {
            self.by_user
                .entry(p.id.clone())
                .or_default()
                .push((s.game.clone(), id));
        }
        let watchers: Vec<SessionId> = s.session.into_iter().collect();
        if !watchers.is_empty() {
            self.status_due.push_back((now + STATUS_EVERY_MS, id));
        }
        self.tickets.insert(
            id,
            Ticket {
                request_id: request_id.clone(),
                game: s.game.clone(),
                mode: s.mode.clone(),
                players: s.players,
                watchers,
                entered_ms: now,
                next_status_ms: now + STATUS_EVERY_MS,
            },
        );
        let view = self.view(id, now);
        let users = view.players.clone();
        if users.len() > 1 {
            // The party's other members learn the ticket they share.
            let mut event = MatchEvent::new(EventKind::Started, request_id.clone(), self.unix_ms);
            event.ticket = Some(view.clone());
            out.push(Effect::ToUsers {
                users: users[1..].to_vec(),
                event: Event::Matchmaking(Arc::new(event)),
            });
        }
        out.push(Effect::Reply {
            request_id: rid,
            reply: Reply::Matchmaking(Arc::new(view)),
        });
        out.push(Effect::Domain(DomainEvent::MatchmakingStarted {
            request_id,
            game: s.game,
            mode: s.mode,
            users,
            party: s.party,
        }));
    }

    /// `user`'s active ticket `ticket` with its queue's game and mode, or
    /// the refusal: `over` words it for a ticket that has ended.
    pub(super) fn active_ticket(
        &self,
        ticket: &str,
        user: &str,
        over: impl FnOnce(Option<TicketState>) -> Failure,
    ) -> Result<(u64, Arc<str>, Arc<str>), Failure> {
        match self.find(ticket, user)? {
            Some(id) => {
                let t = &self.tickets[&id];
                Ok((id, t.game.clone(), t.mode.clone()))
            }
            None => Err(over(self.finished(ticket).map(|f| f.view.state))),
        }
    }

    pub(super) fn cancel(
        &mut self,
        now: u64,
        rid: u64,
        user: &str,
        ticket: &str,
        out: &mut Vec<Effect>,
    ) {
        let found = self.active_ticket(ticket, user, |state| {
            let what = match state {
                Some(TicketState::Matched) => "was already matched",
                Some(TicketState::Cancelled) => "was already cancelled",
                Some(TicketState::TimedOut) => "already timed out",
                _ => "is over",
            };
            Failure::new(
                Refusal::CancelError,
                format!("ticket {ticket} {what}; only a searching ticket can be cancelled"),
            )
        });
        let (id, game, mode) = match found {
            Ok(found) => found,
            Err(failure) => {
                return out.push(Effect::Fail {
                    request_id: rid,
                    failure,
                })
            }
        };
        let mut events = Vec::new();
        let Some((_, life)) = self.queues.get_mut(&game).and_then(|m| m.get_mut(&mode)) else {
            return;
        };
        if let Err(f) = life.cancel(id, user, &mut events) {
            return out.push(Effect::Fail {
                request_id: rid,
                failure: f,
            });
        }
        let mut view = self.view(id, now);
        view.state = TicketState::Cancelled;
        out.push(Effect::Reply {
            request_id: rid,
            reply: Reply::Matchmaking(Arc::new(view)),
        });
        self.lifecycle_events(now, &game, &mode, events, out);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn watch(
        &mut self,
        now: u64,
        rid: u64,
        session: SessionId,
        user: &str,
        ticket: &str,
        watch: bool,
        out: &mut Vec<Effect>,
    ) {
        let id = match self.find(ticket, user) {
            Ok(Some(id)) => id,
            Ok(None) if watch => {
                let state = self.finished(ticket).map(|f| f.view.state);
                return fail(
                    out,
                    rid,
                    Refusal::SubscriptionError,
                    format!(
                        "ticket {ticket} is over ({}); there is nothing left to follow",
                        match state {
                            Some(TicketState::Matched) => "matched",
                            Some(TicketState::Cancelled) => "cancelled",
                            Some(TicketState::TimedOut) => "timed out",
                            _ => "removed",
                        }
                    ),
                );
            }
            Ok(None) => {
                let view = self.finished(ticket).map(|f| f.view.clone());
                if let Some(view) = view {
                    out.push(Effect::Reply {
                        request_id: rid,
                        reply: Reply::Matchmaking(Arc::new(view)),
                    });
                }
                return;
            }
            Err(f) => {
                return out.push(Effect::Fail {
                    request_id: rid,
                    failure: f,
                })
            }
        };
        let t = self.tickets.get_mut(&id).expect("found above");
        if watch && !t.watchers.contains(&session) {
            if t.watchers.len() >= MAX_WATCHERS {
                return fail(
                    out,
                    rid,
                    Refusal::SubscriptionError,
                    format!(
                        "{MAX_WATCHERS} sessions already follow ticket {ticket}, the most allowed"
                    ),
                );
            }
            t.watchers.push(session);
            if t.watchers.len() == 1 {
                t.next_status_ms = now + STATUS_EVERY_MS;
                self.status_due.push_back((t.next_status_ms, id));
            }
        } else if !watch {
            t.watchers.retain(|s| *s != session);
        }
        let view = self.view(id, now);
        out.push(Effect::Reply {
            request_id: rid,
            reply: Reply::Matchmaking(Arc::new(view)),
        });
    }

    pub(super) fn answer(
        &mut self,
        now: u64,
        rid: u64,
        user: &str,
        ticket: &str,
        accept: bool,
        out: &mut Vec<Effect>,
    ) {
        let found = self.active_ticket(ticket, user, |_| {
            Failure::new(
                Refusal::MatchmakingError,
                format!("ticket {ticket} is over; there is no ready check to answer"),
            )
        });
        let (id, game, mode) = match found {
            Ok(found) => found,
            Err(failure) => {
                return out.push(Effect::Fail {
                    request_id: rid,
                    failure,
                })
            }
        };
        let Some((_, life)) = self.queues.get_mut(&game).and_then(|m| m.get_mut(&mode)) else {
            return;
        };
        let Some(check) = life.checking(id) else {
            return fail(
                out,
                rid,
                Refusal::MatchmakingError,
                format!("ticket {ticket} is searching; there is no ready check to answer yet"),
            );
        };
        let mut events = Vec::new();
        if let Err(f) = life.answer(now, check, user, accept, &mut events) {
            return out.push(Effect::Fail {
                request_id: rid,
                failure: f,
            });
        }
        let mut view = self.view(id, now);
        let matched = events.iter().any(|e| {
            matches!(e, queue::Event::Matched(m)
                if m.teams.iter().any(|t| t.tickets.contains(&id)))
        });
        if !accept {
            view.state = TicketState::Removed;
        } else if matched {
            view.state = TicketState::Matched;
        }
        out.push(Effect::Reply {
            request_id: rid,
            reply: Reply::Matchmaking(Arc::new(view)),
        });
        self.lifecycle_events(now, &game, &mode, events, out);
    }
}
