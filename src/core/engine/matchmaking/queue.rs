//! One matchmaking queue's ticket lifecycle around [`Queue`]: what each
//! ticket is doing (searching, or in a ready check), the optional ready
//! check (`matchmaking:found`: every player accepts within the limit;
//! decliners and the silent lose their ticket, the others go back in the
//! queue keeping their waiting time), and what a cancel means at each stage.
//!
//! A cancel and a match can race; the outcome is defined by order: a cancel
//! handled before the tick that would have matched the ticket removes it; a
//! cancel after that tick is refused with CANCEL_ERROR ("a match was found;
//! decline it"), and the client sees the match. Never does I/O; time comes
//! in as milliseconds.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::matcher::{BackfillSpec, Match, Outcome, Queue, Team, TicketSpec};
use super::{Failure, Refusal, UserId};

/// Why a ticket left without a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Cancelled,
    TimedOut,
    /// A player of the ticket declined the ready check.
    Declined,
    /// A player of the ticket did not answer the ready check in time.
    NoAnswer,
    /// The queue's rules changed (or the queue was removed) and the ticket
    /// no longer fits them.
    QueueChanged,
}

/// What the lifecycle tells its shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A ready check began: every one of `users` must accept by `deadline_ms`.
    Found {
        match_id: u64,
        users: Vec<UserId>,
        deadline_ms: u64,
    },
    /// A match stands (ready check passed, or none asked): create its lobby.
    Matched(Match),
    /// A ready check failed (a decline, the deadline, the queue closed):
    /// its match will not stand. Its tickets' own events follow.
    CheckFailed { match_id: u64 },
    /// Back to searching after a failed ready check, waiting time kept.
    Requeued { ticket: u64, users: Vec<UserId> },
    /// Tickets placed into a running match's open slots (no ready check:
    /// the match is already playing); `done` when none is left open.
    Backfilled {
        backfill: u64,
        teams: Vec<Team>,
        done: bool,
    },
    /// A backfill waited the queue's timeout with slots still open.
    BackfillExpired { backfill: u64 },
    /// The ticket is over without a match.
    Removed {
        ticket: u64,
        users: Vec<UserId>,
        why: Removal,
    },
}

/// What a searching ticket's owner sees in `matchmaking:status`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    pub waited_ms: u64,
    /// The windows that apply now.
    pub spread: f64,
    pub latency_ms: f64,
    /// Tickets ahead in the queue, rounded down to a band (0, 1, 10, 100,
    /// 1,000, ...): enough to show progress without leaking the queue's size.
    pub ahead_band: u64,
    /// From the queue's recent throughput; `None` until it has some.
    pub estimated_wait_ms: Option<u64>,
}

/// How far back throughput is measured for wait estimates.
const THROUGHPUT_WINDOW_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Searching,
    Checking { match_id: u64 },
}

#[derive(Debug, Clone)]
struct Ticket {
    spec: TicketSpec,
    entered_ms: u64,
    stage: Stage,
}

impl Ticket {
    fn users(&self) -> Vec<UserId> {
        self.spec.players.iter().map(|p| p.user.clone()).collect()
    }
}

#[derive(Debug)]
struct Check {
    found: Match,
    deadline_ms: u64,
    /// Each participant's answer so far (`None`: not yet).
    answers: HashMap<UserId, Option<bool>>,
}

/// A queue with its tickets' lifecycle.
#[derive(Debug)]
pub struct Lifecycle {
    queue: Queue,
    /// `None`: matches stand at once.
    ready_check_ms: Option<u64>,
    tickets: HashMap<u64, Ticket>,
    checks: BTreeMap<u64, Check>,
    /// (tick time, tickets matched in it) over the last minute.
    throughput: VecDeque<(u64, u64)>,
}

fn failure(refusal: Refusal, message: impl Into<String>) -> Failure {
    Failure::new(refusal, message)
}

impl Lifecycle {
    pub fn new(queue: Queue, ready_check_ms: Option<u64>) -> Self {
        Self {
            queue,
            ready_check_ms,
            tickets: HashMap::new(),
            checks: BTreeMap::new(),
            throughput: VecDeque::new(),
        }
    }

    /// A searching ticket's status; `None` when it is not searching.
    pub fn status(&self, ticket: u64, now_ms: u64) -> Option<Status> {
        let s = self.queue.status(ticket, now_ms)?;
        let matched: u64 = self.throughput.iter().map(|(_, n)| n).sum();
        let span = self
            .throughput
            .front()
            .map_or(0, |(at, _)| now_ms.saturating_sub(*at))
            .max(1);
        let ahead = s.ahead as u64;
        let estimated_wait_ms = (matched > 0).then(|| {
            // Tickets ahead (and this one) leave at the recent rate.
            (ahead + 1).saturating_mul(span) / matched
        });
        let ahead_band = if ahead == 0 {
            0
        } else {
            10u64.pow(ahead.ilog10())
        };
        Some(Status {
            waited_ms: s.waited_ms,
            spread: s.spread,
            latency_ms: s.latency_ms,
            ahead_band,
            estimated_wait_ms,
        })
    }

    /// Tickets not over yet (searching or in a ready check).
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// Whether a tick has anything to do: tickets or open backfills (which
    /// expire even while nobody queues).
    pub fn idle(&self) -> bool {
        self.tickets.is_empty() && self.queue.backfills() == 0
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Queues a ticket (ids increase; the shell numbers them).
    pub fn start(&mut self, now_ms: u64, spec: TicketSpec) -> Result<(), Failure> {
        self.queue.insert(now_ms, spec.clone())?;
        self.tickets.insert(
            spec.id,
            Ticket {
                spec,
                entered_ms: now_ms,
                stage: Stage::Searching,
            },
        );
        Ok(())
    }

    /// Cancels `ticket` for `user`, who must be one of its players.
    pub fn cancel(&mut self, ticket: u64, user: &str, out: &mut Vec<Event>) -> Result<(), Failure> {
        let Some(t) = self.tickets.get(&ticket) else {
            return Err(failure(
                Refusal::MatchNotFound,
                format!("no ticket {ticket} is searching"),
            ));
        };
        if !t.spec.players.iter().any(|p| &*p.user == user) {
            return Err(failure(
                Refusal::MatchNotFound,
                format!("no ticket {ticket} of yours is searching"),
            ));
        }
        if let Stage::Checking { .. } = t.stage {
            return Err(failure(
                Refusal::CancelError,
                format!("a match was found for ticket {ticket}; decline it instead"),
            ));
        }
        self.queue.cancel(ticket);
        let t = self
            .tickets
            .remove(&ticket)
            .map(|t| t.users())
            .unwrap_or_default();
        out.push(Event::Removed {
            ticket,
            users: t,
            why: Removal::Cancelled,
        });
        Ok(())
    }

    /// `user` accepts or declines the ready check of `match_id`.
    pub fn answer(
        &mut self,
        now_ms: u64,
        match_id: u64,
        user: &str,
        accept: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), Failure> {
        let Some(check) = self.checks.get_mut(&match_id) else {
            return Err(failure(
                Refusal::MatchNotFound,
                format!("no ready check {match_id} is open"),
            ));
        };
        let Some(answer) = check.answers.iter_mut().find(|(u, _)| &***u == user) else {
            return Err(failure(
                Refusal::AccessDenied,
                format!("you are not in match {match_id}"),
            ));
        };
        *answer.1 = Some(accept);
        let everyone = check.answers.values().all(|&a| a == Some(true));
        if !accept {
            self.resolve(now_ms, match_id, Removal::Declined, out);
        } else if everyone {
            if let Some(check) = self.checks.remove(&match_id) {
                for team in &check.found.teams {
                    for t in &team.tickets {
                        self.tickets.remove(t);
                    }
                }
                out.push(Event::Matched(check.found));
            }
        }
        Ok(())
    }

    /// A failed ready check: on a decline, the decliner's ticket is
    /// removed; at the deadline, every ticket with a player who did not
    /// accept. The rest search again with their waiting time.
    fn resolve(&mut self, _now_ms: u64, match_id: u64, why: Removal, out: &mut Vec<Event>) {
        let Some(check) = self.checks.remove(&match_id) else {
            return;
        };
        out.push(Event::CheckFailed { match_id });
        for team in &check.found.teams {
            for id in &team.tickets {
                let Some(t) = self.tickets.get(id) else {
                    continue;
                };
                let users = t.users();
                let failed = users.iter().any(|u| {
                    let answer = check.answers.get(u).copied().flatten();
                    match why {
                        Removal::Declined => answer == Some(false),
                        _ => answer != Some(true),
                    }
                });
                if failed {
                    self.tickets.remove(id);
                    out.push(Event::Removed {
                        ticket: *id,
                        users,
                        why,
                    });
                } else if let Some(t) = self.tickets.get_mut(id) {
                    t.stage = Stage::Searching;
                    if self.queue.requeue(t.entered_ms, t.spec.clone()).is_ok() {
                        out.push(Event::Requeued { ticket: *id, users });
                    } else {
                        // The rules changed during the check: never dangle.
                        self.tickets.remove(id);
                        out.push(Event::Removed {
                            ticket: *id,
                            users,
                            why: Removal::QueueChanged,
                        });
                    }
                }
            }
        }
    }

    /// Applies new rules: searching tickets move into `queue` (built from
    /// the new rules) keeping their waiting time; those it refuses are
    /// removed with [`Removal::QueueChanged`]. Ready checks in progress
    /// finish under the old match; their survivors requeue under the new
    /// rules.
    pub fn reconfigure(&mut self, queue: Queue, ready_check_ms: Option<u64>, out: &mut Vec<Event>) {
        // Open backfills were asked under the old rules: they end, and the
        // game backend asks again under the new ones.
        let old = std::mem::replace(&mut self.queue, queue);
        for backfill in old.backfill_ids() {
            out.push(Event::BackfillExpired { backfill });
        }
        self.ready_check_ms = ready_check_ms;
        let mut searching: Vec<u64> = self
            .tickets
            .iter()
            .filter(|(_, t)| t.stage == Stage::Searching)
            .map(|(id, _)| *id)
            .collect();
        searching.sort_unstable();
        for id in searching {
            let Some(t) = self.tickets.get(&id) else {
                continue;
            };
            if self.queue.requeue(t.entered_ms, t.spec.clone()).is_err() {
                let users = t.users();
                self.tickets.remove(&id);
                out.push(Event::Removed {
                    ticket: id,
                    users,
                    why: Removal::QueueChanged,
                });
            }
        }
    }

    /// Asks for players to fill a running match's open slots.
    pub fn backfill(&mut self, now_ms: u64, spec: BackfillSpec) -> Result<(), Failure> {
        self.queue.backfill(now_ms, spec)
    }

    pub fn cancel_backfill(&mut self, id: u64) -> bool {
        self.queue.cancel_backfill(id)
    }

    /// Ends every ticket and backfill (the queue was removed from the
    /// configuration).
    pub fn close(&mut self, out: &mut Vec<Event>) {
        let backfills: Vec<u64> = self.queue.backfill_ids().collect();
        for backfill in backfills {
            self.queue.cancel_backfill(backfill);
            out.push(Event::BackfillExpired { backfill });
        }
        let mut ids: Vec<u64> = self.tickets.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(t) = self.tickets.remove(&id) {
                self.queue.cancel(id);
                out.push(Event::Removed {
                    ticket: id,
                    users: t.users(),
                    why: Removal::QueueChanged,
                });
            }
        }
        for match_id in std::mem::take(&mut self.checks).into_keys() {
            out.push(Event::CheckFailed { match_id });
        }
    }

    /// The ready check `ticket` is in, if any.
    pub fn checking(&self, ticket: u64) -> Option<u64> {
        match self.tickets.get(&ticket)?.stage {
            Stage::Checking { match_id } => Some(match_id),
            Stage::Searching => None,
        }
    }

    /// Closes ready checks past their deadline, then runs the queue's tick.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Event>) {
        let due: Vec<u64> = self
            .checks
            .iter()
            .filter(|(_, c)| c.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for match_id in due {
            self.resolve(now_ms, match_id, Removal::NoAnswer, out);
        }
        let mut formed = Vec::new();
        self.queue.tick(now_ms, &mut formed);
        let matched: u64 = formed
            .iter()
            .map(|o| match o {
                Outcome::Matched(m) => m.teams.iter().map(|t| t.tickets.len() as u64).sum(),
                Outcome::Backfilled { teams, .. } => {
                    teams.iter().map(|t| t.tickets.len() as u64).sum()
                }
                Outcome::TimedOut { .. } | Outcome::BackfillExpired { .. } => 0,
            })
            .sum();
        self.throughput.push_back((now_ms, matched));
        while self
            .throughput
            .front()
            .is_some_and(|(at, _)| now_ms.saturating_sub(*at) > THROUGHPUT_WINDOW_MS)
        {
            self.throughput.pop_front();
        }
        for outcome in formed {
            match outcome {
                Outcome::Backfilled {
                    backfill,
                    teams,
                    done,
                } => {
                    for team in &teams {
                        for t in &team.tickets {
                            self.tickets.remove(t);
                        }
                    }
                    out.push(Event::Backfilled {
                        backfill,
                        teams,
                        done,
                    });
                }
                Outcome::BackfillExpired { backfill } => {
                    out.push(Event::BackfillExpired { backfill })
                }
                Outcome::TimedOut { ticket } => {
                    let users = self
                        .tickets
                        .remove(&ticket)
                        .map(|t| t.users())
                        .unwrap_or_default();
                    out.push(Event::Removed {
                        ticket,
                        users,
                        why: Removal::TimedOut,
                    });
                }
                Outcome::Matched(m) => match self.ready_check_ms {
                    None => {
                        for team in &m.teams {
                            for t in &team.tickets {
                                self.tickets.remove(t);
                            }
                        }
                        out.push(Event::Matched(m));
                    }
                    Some(limit) => {
                        let users: Vec<UserId> = m
                            .teams
                            .iter()
                            .flat_map(|t| t.players.iter().map(|p| p.user.clone()))
                            .collect();
                        for team in &m.teams {
                            for t in &team.tickets {
                                if let Some(t) = self.tickets.get_mut(t) {
                                    t.stage = Stage::Checking { match_id: m.id };
                                }
                            }
                        }
                        let deadline_ms = now_ms + limit;
                        out.push(Event::Found {
                            match_id: m.id,
                            users: users.clone(),
                            deadline_ms,
                        });
                        self.checks.insert(
                            m.id,
                            Check {
                                found: m,
                                deadline_ms,
                                answers: users.into_iter().map(|u| (u, None)).collect(),
                            },
                        );
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::engine::matchmaking::matcher::{Player, QueueRules, Widening};
    use std::collections::HashSet;
    use std::sync::Arc;

    fn lifecycle(ready_check: Option<u64>) -> Lifecycle {
        let rules = QueueRules {
            teams: 2,
            team_size: 1,
            regions: vec![Arc::from("eu")],
            spread: Widening {
                start: 100.0,
                step: 50.0,
                every_ms: 10_000,
                max: 1000.0,
            },
            latency: Widening {
                start: 100.0,
                step: 0.0,
                every_ms: 10_000,
                max: 100.0,
            },
            timeout_ms: 60_000,
            attributes: Vec::new(),
            roles: Vec::new(),
        };
        Lifecycle::new(Queue::new(rules).unwrap(), ready_check)
    }

    fn spec(id: u64, user: &str, rating: f64) -> TicketSpec {
        TicketSpec {
            id,
            players: vec![Player {
                user: UserId::from(user),
                rating,
            }],
            latency_ms: vec![(Arc::from("eu"), 30)],
            attributes: Vec::new(),
            roles: Vec::new(),
        }
    }

    fn found(out: &[Event]) -> Option<u64> {
        out.iter().find_map(|e| match e {
            Event::Found { match_id, .. } => Some(*match_id),
            _ => None,
        })
    }

    #[test]
    fn without_a_ready_check_a_match_stands_at_once() {
        let mut l = lifecycle(None);
        l.start(0, spec(1, "a", 1500.0)).unwrap();
        l.start(0, spec(2, "b", 1520.0)).unwrap();
        let mut out = Vec::new();
        l.tick(100, &mut out);
        assert!(matches!(&out[..], [Event::Matched(_)]));
        assert!(l.is_empty());
    }

    #[test]
    fn all_accept_then_the_match_stands() {
        let mut l = lifecycle(Some(10_000));
        l.start(0, spec(1, "a", 1500.0)).unwrap();
        l.start(0, spec(2, "b", 1520.0)).unwrap();
        let mut out = Vec::new();
        l.tick(100, &mut out);
        let id = found(&out).expect("found");
        out.clear();
        l.answer(200, id, "a", true, &mut out).unwrap();
        assert!(out.is_empty(), "still waiting for b");
        assert_eq!(
            l.answer(200, id, "zed", true, &mut out)
                .unwrap_err()
                .refusal,
            Refusal::AccessDenied
        );
        l.answer(300, id, "b", true, &mut out).unwrap();
        assert!(matches!(&out[..], [Event::Matched(_)]));
        assert!(l.is_empty());
        assert_eq!(
            l.answer(400, id, "a", true, &mut out).unwrap_err().refusal,
            Refusal::MatchNotFound
        );
    }

    #[test]
    fn a_decliner_loses_the_ticket_the_others_search_again_with_their_waiting_time() {
        let mut l = lifecycle(Some(10_000));
        l.start(0, spec(1, "a", 1500.0)).unwrap();
        l.start(5_000, spec(2, "b", 1520.0)).unwrap();
        let mut out = Vec::new();
        l.tick(6_000, &mut out);
        let id = found(&out).unwrap();
        out.clear();
        l.answer(7_000, id, "b", false, &mut out).unwrap();
        assert!(out.contains(&Event::Removed {
            ticket: 2,
            users: vec![UserId::from("b")],
            why: Removal::Declined
        }));
        assert!(out.contains(&Event::Requeued {
            ticket: 1,
            users: vec![UserId::from("a")]
        }));
        let status = l.queue().status(1, 8_000).expect("a searches again");
        assert_eq!(status.waited_ms, 8_000, "waiting time kept");
    }

    #[test]
    fn the_silent_lose_their_ticket_at_the_deadline() {
        let mut l = lifecycle(Some(10_000));
        l.start(0, spec(1, "a", 1500.0)).unwrap();
        l.start(0, spec(2, "b", 1520.0)).unwrap();
        let mut out = Vec::new();
        l.tick(0, &mut out);
        let id = found(&out).unwrap();
        l.answer(100, id, "a", true, &mut out).unwrap();
        out.clear();
        l.tick(10_000, &mut out);
        assert!(out.contains(&Event::Removed {
            ticket: 2,
            users: vec![UserId::from("b")],
            why: Removal::NoAnswer
        }));
        assert!(out
            .iter()
            .any(|e| matches!(e, Event::Requeued { ticket: 1, .. })));
    }

    #[test]
    fn cancel_only_while_searching_and_only_by_the_owner() {
        let mut l = lifecycle(Some(10_000));
        l.start(0, spec(1, "a", 1500.0)).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            l.cancel(1, "b", &mut out).unwrap_err().refusal,
            Refusal::MatchNotFound,
            "another user's ticket"
        );
        l.start(0, spec(2, "b", 1520.0)).unwrap();
        l.tick(0, &mut out);
        assert!(found(&out).is_some());
        let refused = l.cancel(1, "a", &mut out).unwrap_err();
        assert_eq!(refused.refusal, Refusal::CancelError, "{}", refused.message);
        l.start(1, spec(3, "c", 1500.0)).unwrap();
        out.clear();
        l.cancel(3, "c", &mut out).unwrap();
        assert_eq!(
            out,
            vec![Event::Removed {
                ticket: 3,
                users: vec![UserId::from("c")],
                why: Removal::Cancelled
            }]
        );
        let mut again = Vec::new();
        l.tick(2, &mut again);
        assert!(
            again.iter().all(|e| !matches!(e, Event::Found { .. })),
            "a cancelled ticket is never matched"
        );
    }

    #[test]
    fn status_shows_windows_a_band_and_a_wait_estimate_from_throughput() {
        let mut l = lifecycle(None);
        for i in 1..=4u64 {
            l.start(0, spec(i, &format!("u{i}"), 1500.0 + i as f64))
                .unwrap();
        }
        l.start(0, spec(5, "far", 3000.0)).unwrap();
        let mut out = Vec::new();
        let before = l.status(5, 0).unwrap();
        assert_eq!(before.estimated_wait_ms, None, "no throughput yet");
        assert_eq!(before.ahead_band, 1, "4 ahead: the 1s band");
        l.tick(10_000, &mut out);
        let s = l.status(5, 20_000).unwrap();
        assert_eq!(s.waited_ms, 20_000);
        assert_eq!(s.spread, 200.0, "100 + 2 steps of 50");
        assert_eq!(s.ahead_band, 0);
        assert!(s.estimated_wait_ms.is_some());
        assert!(l.status(1, 20_000).is_none(), "matched: not searching");
    }

    #[test]
    fn every_ticket_ends_once() {
        let mut l = lifecycle(Some(5_000));
        let mut out = Vec::new();
        for i in 1..=40u64 {
            l.start(
                i * 100,
                spec(i, &format!("u{i}"), 1400.0 + (i * 37 % 200) as f64),
            )
            .unwrap();
        }
        let mut ended: HashSet<u64> = HashSet::new();
        let mut now = 0;
        for round in 0..40 {
            now += 3_000;
            l.tick(now, &mut out);
            for e in std::mem::take(&mut out) {
                match e {
                    // Every other ready check: the first player accepts, the rest are silent.
                    Event::Found {
                        match_id, users, ..
                    } if round % 2 == 0 => {
                        for u in &users {
                            l.answer(now, match_id, u, true, &mut out).unwrap();
                        }
                    }
                    Event::Found {
                        match_id, users, ..
                    } => {
                        l.answer(now, match_id, &users[0], true, &mut out).unwrap();
                    }
                    Event::Matched(m) => {
                        for t in m.teams.iter().flat_map(|t| t.tickets.iter()) {
                            assert!(ended.insert(*t), "a ticket ended twice");
                        }
                    }
                    Event::Removed { ticket, .. } => assert!(ended.insert(ticket)),
                    Event::Requeued { .. } | Event::CheckFailed { .. } => {}
                    Event::Backfilled { .. } | Event::BackfillExpired { .. } => {
                        unreachable!("no backfill was asked")
                    }
                }
            }
            for e in out.drain(..) {
                if let Event::Matched(m) = e {
                    for t in m.teams.iter().flat_map(|t| t.tickets.iter()) {
                        assert!(ended.insert(*t), "a ticket ended twice");
                    }
                }
            }
        }
        assert_eq!(
            ended.len(),
            40,
            "every ticket ended: matched, removed or timed out"
        );
        assert!(l.is_empty());
    }
}
