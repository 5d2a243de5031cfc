//! How tickets end: each tick runs the queues, turns their lifecycle
//! events into what players and the backend hear (found, matched, removed,
//! requeued, timed out), forms matches for the shell to give a lobby, and
//! files finished tickets with the recent outcomes. Part of [`Queues`];
//! never does I/O and never reads a clock.

use std::sync::Arc;

use super::super::{DomainEvent, Effect, Event, Now};
use super::matcher::Team;
use super::{
    queue, removal_message, removal_reason, EventKind, Finished, FormedMatch, MatchEvent,
    MatchedPlayer, Queues, TicketState, TicketView, RECENT, STATUS_EVERY_MS,
};

impl Queues {
    /// Runs every queue's tick, then sends the status updates due.
    pub fn tick(&mut self, now: Now, out: &mut Vec<Effect>) {
        let now = self.clock(now);
        let mut all = Vec::new();
        for (game, modes) in &mut self.queues {
            for (mode, (_, life)) in modes.iter_mut() {
                if life.idle() {
                    continue;
                }
                let mut events = Vec::new();
                life.tick(now, &mut events);
                if !events.is_empty() {
                    all.push((game.clone(), mode.clone(), events));
                }
            }
        }
        // Same inputs, same order of effects.
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        for (game, mode, events) in all {
            self.lifecycle_events(now, &game, &mode, events, out);
        }
        while let Some(&(due, id)) = self.status_due.front() {
            if due > now {
                break;
            }
            self.status_due.pop_front();
            let Some(t) = self.tickets.get(&id) else {
                continue;
            };
            if t.next_status_ms != due || t.watchers.is_empty() {
                continue;
            }
            let sessions = t.watchers.clone();
            let view = self.view(id, now);
            let mut event =
                MatchEvent::new(EventKind::Status, view.request_id.clone(), self.unix_ms);
            event.ticket = Some(view);
            out.push(Effect::Deliver {
                sessions,
                event: Event::Matchmaking(Arc::new(event)),
                reliable: false,
            });
            let t = self.tickets.get_mut(&id).expect("present above");
            t.next_status_ms = now + STATUS_EVERY_MS;
            self.status_due.push_back((t.next_status_ms, id));
        }
    }

    /// Ends a ticket: out of the indexes, into the recent outcomes.
    pub(super) fn finish(&mut self, id: u64, view: TicketView) {
        if let Some(t) = self.tickets.remove(&id) {
            for p in &t.players {
                if let Some(list) = self.by_user.get_mut(&p.id) {
                    list.retain(|(_, tid)| *tid != id);
                    if list.is_empty() {
                        self.by_user.remove(&p.id);
                    }
                }
            }
        }
        self.recent.insert(id, Finished { view });
        self.recent_order.push_back(id);
        while self.recent_order.len() > RECENT {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    /// Ends the tickets of matched teams as MATCHED; their players, each
    /// with their team and ticket.
    pub(super) fn finish_matched(&mut self, now: u64, teams: &[Team]) -> Vec<MatchedPlayer> {
        let mut players = Vec::new();
        for (team, t) in teams.iter().enumerate() {
            for id in &t.tickets {
                let Some(ticket) = self.tickets.get(id) else {
                    continue;
                };
                let request_id = ticket.request_id.clone();
                players.extend(ticket.players.iter().map(|author| MatchedPlayer {
                    author: author.clone(),
                    team: team as u8,
                    request_id: request_id.clone(),
                }));
                let mut view = self.view(*id, now);
                view.state = TicketState::Matched;
                self.finish(*id, view);
            }
        }
        players
    }

    /// Ends an active ticket that was taken for a match that cannot stand:
    /// its players hear REMOVED, the backend `matchmaking.cancelled`.
    pub(super) fn end_without_match(
        &mut self,
        now: u64,
        id: u64,
        reason: &'static str,
        out: &mut Vec<Effect>,
    ) {
        if !self.tickets.contains_key(&id) {
            return;
        }
        let mut view = self.view(id, now);
        view.state = TicketState::Removed;
        let request_id = view.request_id.clone();
        let users = view.players.clone();
        let game = view.game.clone();
        let mut e = MatchEvent::new(EventKind::Removed, request_id.clone(), self.unix_ms);
        e.reason = "the match could not take this ticket; start again".into();
        e.ticket = Some(view.clone());
        self.finish(id, view);
        out.push(Effect::ToUsers {
            users: users.clone(),
            event: Event::Matchmaking(Arc::new(e)),
        });
        out.push(Effect::Domain(DomainEvent::MatchmakingCancelled {
            request_id,
            game,
            users,
            reason,
        }));
    }

    pub(super) fn match_id(&mut self, game: &str) -> Arc<str> {
        let id = self.next_match;
        self.next_match += 1;
        Arc::from(format!("m{id}@{game}"))
    }

    pub(super) fn lifecycle_events(
        &mut self,
        now: u64,
        game: &Arc<str>,
        mode: &Arc<str>,
        events: Vec<queue::Event>,
        out: &mut Vec<Effect>,
    ) {
        let at = self.unix_ms;
        for event in events {
            match event {
                queue::Event::Found {
                    match_id,
                    users,
                    deadline_ms,
                } => {
                    let external = self.match_id(game);
                    self.checks
                        .insert((game.clone(), mode.clone(), match_id), external.clone());
                    // One event per ticket (each names its own request id).
                    let mut tickets: Vec<u64> = users
                        .iter()
                        .filter_map(|u| {
                            self.by_user
                                .get(u)?
                                .iter()
                                .find(|(g, _)| g == game)
                                .map(|(_, t)| *t)
                        })
                        .collect();
                    tickets.sort_unstable();
                    tickets.dedup();
                    for id in tickets {
                        let view = self.view(id, now);
                        let mut e = MatchEvent::new(EventKind::Found, view.request_id.clone(), at);
                        e.match_id = external.clone();
                        e.deadline_ms = self.wall(now, deadline_ms);
                        let users = view.players.clone();
                        e.ticket = Some(view);
                        out.push(Effect::ToUsers {
                            users,
                            event: Event::Matchmaking(Arc::new(e)),
                        });
                    }
                }
                queue::Event::Matched(m) => {
                    let external = self
                        .checks
                        .remove(&(game.clone(), mode.clone(), m.id))
                        .unwrap_or_else(|| self.match_id(game));
                    let players = self.finish_matched(now, &m.teams);
                    let teams = m.teams.len() as u16;
                    out.push(Effect::MatchFormed(Box::new(FormedMatch {
                        match_id: external,
                        game: game.clone(),
                        mode: mode.clone(),
                        region: m.region.clone(),
                        teams,
                        players,
                        matched_at_ms: at,
                        spread: m.spread.round() as u32,
                        allowed_spread: m.allowed_spread.round() as u32,
                        backfill_lobby: None,
                    })));
                }
                queue::Event::Backfilled {
                    backfill,
                    teams,
                    done,
                } => {
                    let Some((lobby_id, match_id, region)) = self
                        .backfills
                        .get(&backfill)
                        .map(|b| (b.lobby_id.clone(), b.match_id.clone(), b.region.clone()))
                    else {
                        // Never the case (a withdrawn backfill leaves its
                        // queue too), but a placed ticket must never dangle.
                        let tickets = teams.iter().flat_map(|t| t.tickets.iter().copied());
                        for id in tickets.collect::<Vec<_>>() {
                            self.end_without_match(now, id, "backfill_withdrawn", out);
                        }
                        continue;
                    };
                    if done {
                        self.backfills.remove(&backfill);
                    }
                    let players = self.finish_matched(now, &teams);
                    out.push(Effect::MatchFormed(Box::new(FormedMatch {
                        match_id,
                        game: game.clone(),
                        mode: mode.clone(),
                        region,
                        teams: teams.len() as u16,
                        players,
                        matched_at_ms: at,
                        spread: 0,
                        allowed_spread: 0,
                        backfill_lobby: Some(lobby_id),
                    })));
                }
                queue::Event::BackfillExpired { backfill } => {
                    if let Some(b) = self.backfills.remove(&backfill) {
                        out.push(Effect::Domain(DomainEvent::MatchmakingBackfillExpired {
                            lobby_id: b.lobby_id,
                            game: game.clone(),
                        }));
                    }
                }
                queue::Event::CheckFailed { match_id } => {
                    self.checks.remove(&(game.clone(), mode.clone(), match_id));
                }
                queue::Event::Requeued { ticket, users } => {
                    let Some(t) = self.tickets.get(&ticket) else {
                        continue;
                    };
                    let mut e = MatchEvent::new(EventKind::Requeued, t.request_id.clone(), at);
                    e.reason = "another player did not accept; searching again with your waiting time kept".into();
                    e.ticket = Some(self.view(ticket, now));
                    out.push(Effect::ToUsers {
                        users,
                        event: Event::Matchmaking(Arc::new(e)),
                    });
                }
                queue::Event::Removed { ticket, users, why } => {
                    let Some(t) = self.tickets.get(&ticket) else {
                        continue;
                    };
                    let request_id = t.request_id.clone();
                    let (kind, state, reason) = removal_reason(why);
                    let mut view = self.view(ticket, now);
                    view.state = state;
                    let mut e = MatchEvent::new(kind, request_id.clone(), at);
                    e.reason = removal_message(why).into();
                    e.ticket = Some(view.clone());
                    self.finish(ticket, view);
                    out.push(Effect::ToUsers {
                        users: users.clone(),
                        event: Event::Matchmaking(Arc::new(e)),
                    });
                    out.push(Effect::Domain(DomainEvent::MatchmakingCancelled {
                        request_id,
                        game: game.clone(),
                        users,
                        reason,
                    }));
                }
            }
        }
    }
}
