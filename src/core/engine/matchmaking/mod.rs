//! A shard's matchmaking: the queues of the games this shard owns (every
//! mode of a game lives on the shard that `mm:<game>` hashes to, so "one
//! active ticket per user per game" is a local check), each ticket's
//! players and subscribed sessions, and players' ratings per game. Turns
//! each queue's [`Lifecycle`] events into what players see, and formed
//! matches into [`Effect::MatchFormed`] for the shell to give a lobby.
//!
//! Ratings come from the token (recorded when its holder starts a ticket)
//! or from the game backend; a client's payload never sets one. Never does
//! I/O; time comes in as milliseconds.
//!
//! This file holds the types, ratings, configuration and the dispatch; a
//! player's ticket commands live in `tickets`, how tickets end (the tick,
//! formed matches) in `outcomes`, backfills in `backfills`; one queue's
//! matching is `matcher`, its ready check `queue`.

mod backfills;
pub mod matcher;
mod outcomes;
pub mod queue;
mod tickets;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::chat::Author;
use super::{DomainEvent, Effect, Failure, Now, Refusal, Reply, SessionId, UserId};
use matcher::{Attribute, Queue, QueueRules};
use queue::{Lifecycle, Removal};

/// How often subscribed sessions get `matchmaking:status`.
pub const STATUS_EVERY_MS: u64 = 2_000;
/// Sessions that may follow one ticket.
pub const MAX_WATCHERS: usize = 16;
/// Largest rating (and uncertainty) accepted: far beyond any real scale,
/// well inside what sums of a party's ratings can hold.
pub const MAX_RATING: f64 = 1e9;
/// A player's rating when neither the token nor the backend gave one.
pub const DEFAULT_RATING: Rating = Rating {
    mu: 1500.0,
    sigma: 350.0,
};
/// Finished tickets remembered (per shard) so a late cancel or status gets
/// the outcome instead of "not found".
const RECENT: usize = 16_384;
/// Users whose ratings one shard keeps; past this, ratings of new users
/// are not kept (their own start still uses their token's rating, and
/// `POST /v1/ratings` says how many it could not keep).
pub const MAX_RATED_USERS: usize = 2_000_000;
/// Open backfills one shard keeps at most.
pub const MAX_BACKFILLS: usize = 10_000;
/// Largest ticket key (game names are at most this long too).
pub const MAX_NAME: usize = 64;

/// A skill rating and its uncertainty; matching uses `mu`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rating {
    pub mu: f64,
    pub sigma: f64,
}

impl Rating {
    /// Finite, |mu| and sigma at most [`MAX_RATING`], sigma not negative.
    pub fn valid(&self) -> bool {
        self.mu.is_finite()
            && self.sigma.is_finite()
            && self.mu.abs() <= MAX_RATING
            && (0.0..=MAX_RATING).contains(&self.sigma)
    }
}

/// A rating the game backend set, as the store keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RatingRecord {
    pub game: Arc<str>,
    pub user: UserId,
    pub rating: Rating,
}

// Ratings are checked finite before they are kept: no NaN, so `==` is an
// equivalence.
impl Eq for RatingRecord {}

/// One configured queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub game: Arc<str>,
    pub mode: Arc<str>,
    pub rules: QueueRules,
    pub ready_check_ms: Option<u64>,
}

/// `matchmaking:start`, solo or for a lobby's party.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub request_id: u64,
    /// The asking session, subscribed to the ticket's status.
    pub session: Option<SessionId>,
    pub game: Arc<str>,
    pub mode: Arc<str>,
    /// The asking player first; a party's other members after.
    pub players: Vec<Author>,
    /// The asker's rating for this game from their token, if it has one.
    pub token_rating: Option<Rating>,
    pub latency_ms: Vec<(Arc<str>, u32)>,
    /// The ticket's preferences for the queue's attributes.
    pub attributes: Vec<(Arc<str>, Attribute)>,
    /// The asking player's role, if they pick one.
    pub role: Option<Arc<str>>,
    /// The lobby queued as a party.
    pub party: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Start(Box<Start>),
    Cancel {
        request_id: u64,
        user: UserId,
        ticket: Arc<str>,
    },
    /// Subscribe (`watch`) or unsubscribe `session` to a ticket's status.
    Watch {
        request_id: u64,
        session: SessionId,
        user: UserId,
        ticket: Arc<str>,
        watch: bool,
    },
    Status {
        request_id: u64,
        user: UserId,
        ticket: Arc<str>,
    },
    /// Accept or decline the ready check of the user's ticket.
    Answer {
        request_id: u64,
        user: UserId,
        ticket: Arc<str>,
        accept: bool,
    },
    /// The game backend (or a token, `from_token`) sets a player's rating
    /// for a game; the backend's wins over the token's.
    SetRatings {
        game: Arc<str>,
        ratings: Vec<(UserId, Rating)>,
        from_token: bool,
    },
    /// The queues of the games this shard owns, replacing the old set.
    Configure(Vec<QueueSpec>),
    /// Sessions that ended: they follow nothing any more.
    SessionsGone(Vec<SessionId>),
    /// Fill a running match's open slots before new matches form; replaces
    /// the lobby's open backfill, if any. Answered with request 0.
    Backfill(Box<BackfillRequest>),
    /// Withdraw the open backfill of a lobby. Answered with request 0.
    CancelBackfill {
        game: Arc<str>,
        lobby_id: Arc<str>,
    },
    /// The lobby of a formed match refused its players (it closed under a
    /// backfill, or could not be created): their tickets end as REMOVED
    /// (the players were told by the lobby's shard), and a backfill into
    /// that lobby is withdrawn.
    MatchFailed {
        game: Arc<str>,
        request_ids: Vec<Arc<str>>,
        backfill_lobby: Option<Arc<str>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketState {
    Searching,
    Found,
    Matched,
    Cancelled,
    TimedOut,
    Removed,
}

/// A ticket as its players see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketView {
    pub request_id: Arc<str>,
    pub game: Arc<str>,
    pub mode: Arc<str>,
    pub state: TicketState,
    pub waited_ms: u64,
    pub spread: u32,
    pub latency_ms: u32,
    pub ahead_band: u64,
    pub estimated_wait_ms: Option<u64>,
    pub players: Vec<UserId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Status,
    Found,
    Matched,
    Cancelled,
    TimedOut,
    Requeued,
    Removed,
    Started,
}

/// A matchmaking event for a ticket's players.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchEvent {
    pub kind: EventKind,
    pub request_id: Arc<str>,
    pub ticket: Option<TicketView>,
    pub match_id: Arc<str>,
    pub lobby_id: Arc<str>,
    /// -1 without a team.
    pub team: i16,
    pub deadline_ms: i64,
    pub reason: String,
    pub at_ms: i64,
}

impl MatchEvent {
    pub fn new(kind: EventKind, request_id: Arc<str>, at_ms: i64) -> Self {
        Self {
            kind,
            request_id,
            ticket: None,
            match_id: Arc::from(""),
            lobby_id: Arc::from(""),
            team: -1,
            deadline_ms: 0,
            reason: String::new(),
            at_ms,
        }
    }
}

/// One player of a formed match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedPlayer {
    pub author: Author,
    pub team: u8,
    pub request_id: Arc<str>,
}

/// A match that stands: the shell creates its lobby with the teams
/// assigned, then tells every player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormedMatch {
    pub match_id: Arc<str>,
    pub game: Arc<str>,
    pub mode: Arc<str>,
    pub region: Arc<str>,
    pub teams: u16,
    pub players: Vec<MatchedPlayer>,
    pub matched_at_ms: i64,
    /// The match's rating range and the spread allowed, rounded.
    pub spread: u32,
    pub allowed_spread: u32,
    /// Set for players placed by a backfill: they join this running
    /// match's lobby instead of a new one.
    pub backfill_lobby: Option<Arc<str>>,
}

/// A running match asks for replacements (from the game backend).
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillRequest {
    pub lobby_id: Arc<str>,
    pub match_id: Arc<str>,
    pub game: Arc<str>,
    pub mode: Arc<str>,
    pub region: Arc<str>,
    /// The rating replacements should be near.
    pub rating: f64,
    /// Open slots per team.
    pub open: Vec<u16>,
    /// The match's values for the queue's attributes.
    pub attributes: Vec<(Arc<str>, Attribute)>,
}

#[derive(Debug)]
struct BackfillInfo {
    game: Arc<str>,
    mode: Arc<str>,
    lobby_id: Arc<str>,
    match_id: Arc<str>,
    region: Arc<str>,
}

#[derive(Debug)]
struct Ticket {
    request_id: Arc<str>,
    game: Arc<str>,
    mode: Arc<str>,
    players: Vec<Author>,
    watchers: Vec<SessionId>,
    entered_ms: u64,
    next_status_ms: u64,
}

#[derive(Debug, Clone)]
struct Finished {
    view: TicketView,
}

/// A game's queues by mode, each with its configuration.
type Modes = HashMap<Arc<str>, (QueueSpec, Lifecycle)>;

/// A user's ratings for one game, from each source.
#[derive(Debug)]
struct Ratings {
    game: Arc<str>,
    backend: Option<Rating>,
    token: Option<Rating>,
}

/// The queues of one shard.
#[derive(Debug, Default)]
pub struct Queues {
    /// game → mode → queue.
    queues: HashMap<Arc<str>, Modes>,
    tickets: HashMap<u64, Ticket>,
    /// user → (game, ticket) for every active ticket the user is in.
    by_user: HashMap<UserId, Vec<(Arc<str>, u64)>>,
    ratings: HashMap<UserId, Vec<Ratings>>,
    /// Status updates due, in time order (every interval is the same).
    status_due: VecDeque<(u64, u64)>,
    /// (game, mode, ready check id) → the match id players see.
    checks: HashMap<(Arc<str>, Arc<str>, u64), Arc<str>>,
    recent: HashMap<u64, Finished>,
    /// Open backfills by id (ids share the ticket counter).
    backfills: HashMap<u64, BackfillInfo>,
    recent_order: VecDeque<u64>,
    next_ticket: u64,
    next_match: u64,
    /// Queue time is monotonic milliseconds since this instant (the first
    /// call): a wall-clock step never times tickets out or freezes them.
    base: Option<std::time::Instant>,
    /// The wall clock at the last call, for the times players see.
    unix_ms: i64,
}

fn fail(out: &mut Vec<Effect>, request_id: u64, refusal: Refusal, message: impl Into<String>) {
    out.push(Effect::Fail {
        request_id,
        failure: Failure::new(refusal, message),
    });
}

/// The ticket number and game of a request id such as `17@arena`.
pub fn parse_ticket(request_id: &str) -> Option<(u64, &str)> {
    let (n, game) = request_id.split_once('@')?;
    let n = n.parse().ok()?;
    (!game.is_empty()).then_some((n, game))
}

/// The key a game's queues hash to (every mode of a game on one shard).
pub fn shard_key(game: &str) -> String {
    format!("mm:{game}")
}

fn removal_reason(why: Removal) -> (EventKind, TicketState, &'static str) {
    match why {
        Removal::Cancelled => (EventKind::Cancelled, TicketState::Cancelled, "cancelled"),
        Removal::TimedOut => (EventKind::TimedOut, TicketState::TimedOut, "timeout"),
        Removal::Declined => (EventKind::Removed, TicketState::Removed, "declined"),
        Removal::NoAnswer => (EventKind::Removed, TicketState::Removed, "no_answer"),
        Removal::QueueChanged => (EventKind::Removed, TicketState::Removed, "queue_changed"),
    }
}

fn removal_message(why: Removal) -> &'static str {
    match why {
        Removal::Cancelled => "the ticket was cancelled",
        Removal::TimedOut => "no match was found in time; start a new ticket to keep searching",
        Removal::Declined => "a player of this ticket declined the match",
        Removal::NoAnswer => "a player of this ticket did not accept the match in time",
        Removal::QueueChanged => {
            "the queue's rules changed (or it was removed) and this ticket no longer fits them"
        }
    }
}

impl Queues {
    pub fn new() -> Self {
        Self {
            next_ticket: 1,
            next_match: 1,
            ..Default::default()
        }
    }

    /// Tickets not over yet.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// Active tickets of `game` that `user` plays in, counted from the
    /// tickets themselves (not the per-user index), to check the index.
    pub fn tickets_of(&self, game: &str, user: &str) -> usize {
        self.tickets
            .values()
            .filter(|t| &*t.game == game && t.players.iter().any(|p| &*p.id == user))
            .count()
    }

    /// Whether a tick has anything to do (tickets, or backfills, which
    /// expire even while nobody queues).
    pub fn active(&self) -> bool {
        !self.tickets.is_empty() || !self.backfills.is_empty()
    }

    /// A user's rating for a game: the backend's, else the token's, else
    /// the default.
    pub fn rating(&self, game: &str, user: &str) -> Rating {
        self.ratings
            .get(user)
            .and_then(|r| r.iter().find(|r| &*r.game == game))
            .and_then(|r| r.backend.or(r.token))
            .unwrap_or(DEFAULT_RATING)
    }

    fn backend_rated(&self, game: &str, user: &str) -> bool {
        self.ratings
            .get(user)
            .is_some_and(|r| r.iter().any(|r| &*r.game == game && r.backend.is_some()))
    }

    /// A stored rating from the game backend, at start-up (before the
    /// queues are configured).
    pub fn restore_rating(&mut self, r: &RatingRecord) {
        if !r.rating.valid()
            || (self.ratings.len() >= MAX_RATED_USERS && !self.ratings.contains_key(&r.user))
        {
            return;
        }
        let rows = self.ratings.entry(r.user.clone()).or_default();
        match rows.iter_mut().find(|x| x.game == r.game) {
            Some(row) => row.backend = Some(r.rating),
            None => rows.push(Ratings {
                game: r.game.clone(),
                backend: Some(r.rating),
                token: None,
            }),
        }
    }

    /// Keeps a rating; false when the table is full (a new user past
    /// [`MAX_RATED_USERS`]).
    fn set_rating(
        &mut self,
        game: &Arc<str>,
        user: &UserId,
        rating: Rating,
        backend: bool,
    ) -> bool {
        if !self.queues.contains_key(game)
            || (self.ratings.len() >= MAX_RATED_USERS && !self.ratings.contains_key(user))
        {
            return false;
        }
        let rows = self.ratings.entry(user.clone()).or_default();
        let i = match rows.iter().position(|r| r.game == *game) {
            Some(i) => i,
            None => {
                rows.push(Ratings {
                    game: game.clone(),
                    backend: None,
                    token: None,
                });
                rows.len() - 1
            }
        };
        if backend {
            rows[i].backend = Some(rating);
        } else {
            rows[i].token = Some(rating);
        }
        true
    }

    /// Monotonic queue time for `now`, remembering its wall-clock time.
    fn clock(&mut self, now: Now) -> u64 {
        let base = *self.base.get_or_insert(now.mono);
        self.unix_ms = now.unix_ms;
        now.mono.saturating_duration_since(base).as_millis() as u64
    }

    /// Wall-clock time (Unix ms) of queue time `at` (at or after now).
    fn wall(&self, now: u64, at: u64) -> i64 {
        self.unix_ms.saturating_add(at.saturating_sub(now) as i64)
    }

    pub fn handle(&mut self, now: Now, cmd: Command, out: &mut Vec<Effect>) {
        let now = self.clock(now);
        match cmd {
            Command::Start(start) => self.start(now, *start, out),
            Command::Cancel {
                request_id,
                user,
                ticket,
            } => self.cancel(now, request_id, &user, &ticket, out),
            Command::Watch {
                request_id,
                session,
                user,
                ticket,
                watch,
            } => self.watch(now, request_id, session, &user, &ticket, watch, out),
            Command::Status {
                request_id,
                user,
                ticket,
            } => match self.find(&ticket, &user) {
                Ok(Some(id)) => {
                    let view = self.view(id, now);
                    out.push(Effect::Reply {
                        request_id,
                        reply: Reply::Matchmaking(Arc::new(view)),
                    });
                }
                Ok(None) => {
                    let view = self.finished(&ticket).map(|f| f.view.clone());
                    if let Some(view) = view {
                        out.push(Effect::Reply {
                            request_id,
                            reply: Reply::Matchmaking(Arc::new(view)),
                        });
                    }
                }
                Err(f) => out.push(Effect::Fail {
                    request_id,
                    failure: f,
                }),
            },
            Command::Answer {
                request_id,
                user,
                ticket,
                accept,
            } => self.answer(now, request_id, &user, &ticket, accept, out),
            Command::SetRatings {
                game,
                ratings,
                from_token,
            } => {
                // The backend's batch is all or nothing: refused whole when
                // the game has no queue or the table cannot hold it.
                if !from_token {
                    let new = ratings
                        .iter()
                        .filter(|(u, _)| !self.ratings.contains_key(u))
                        .count();
                    let why = if !self.queues.contains_key(&game) {
                        Some(format!(
                            "no matchmaking queue for game {game:?}; ratings are kept for configured games"
                        ))
                    } else if self.ratings.len() + new > MAX_RATED_USERS {
                        Some(format!(
                            "this shard keeps ratings for at most {MAX_RATED_USERS} users; nothing was set"
                        ))
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        return fail(out, 0, Refusal::InvalidArgument, why);
                    }
                }
                let mut lost = 0;
                for (user, rating) in ratings {
                    if !(rating.valid() && self.set_rating(&game, &user, rating, !from_token)) {
                        lost += 1;
                    } else if !from_token {
                        // The backend's word outlives a restart.
                        out.push(Effect::Persist(super::Record::Rating(RatingRecord {
                            game: game.clone(),
                            user,
                            rating,
                        })));
                    }
                }
                out.push(if lost == 0 {
                    Effect::Reply {
                        request_id: 0,
                        reply: Reply::Done,
                    }
                } else {
                    Effect::Fail {
                        request_id: 0,
                        failure: Failure::new(
                            Refusal::RateLimited,
                            format!(
                                "{lost} ratings not kept: this shard keeps ratings for at most {MAX_RATED_USERS} users"
                            ),
                        ),
                    }
                });
            }
            Command::Configure(specs) => self.configure(now, specs, out),
            Command::Backfill(b) => self.backfill(now, *b, out),
            Command::CancelBackfill { game, lobby_id } => {
                let found = self.cancel_backfill(&game, &lobby_id);
                if found {
                    out.push(Effect::Reply {
                        request_id: 0,
                        reply: Reply::Done,
                    });
                } else {
                    fail(
                        out,
                        0,
                        Refusal::MatchNotFound,
                        format!("no backfill is open for lobby {lobby_id} in {game}"),
                    );
                }
            }
            Command::MatchFailed {
                game,
                request_ids,
                backfill_lobby,
            } => {
                if let Some(lobby) = backfill_lobby {
                    if self.cancel_backfill(&game, &lobby) {
                        // The backend learns its backfill is gone.
                        out.push(Effect::Domain(DomainEvent::MatchmakingBackfillExpired {
                            lobby_id: lobby,
                            game: game.clone(),
                        }));
                    }
                }
                for request_id in request_ids {
                    let Some((id, _)) = parse_ticket(&request_id) else {
                        continue;
                    };
                    let Some(f) = self.recent.get_mut(&id) else {
                        continue;
                    };
                    f.view.state = TicketState::Removed;
                    out.push(Effect::Domain(DomainEvent::MatchmakingCancelled {
                        request_id,
                        game: game.clone(),
                        users: f.view.players.clone(),
                        reason: "lobby_refused",
                    }));
                }
            }
            Command::SessionsGone(sessions) => {
                for t in self.tickets.values_mut() {
                    t.watchers.retain(|s| !sessions.contains(s));
                }
            }
        }
    }

    /// The active ticket `request_id` names, when `user` is one of its
    /// players (`Ok(None)`: finished, see `recent`). Another user's ticket
    /// is "not found": ids are never confirmed to outsiders.
    fn find(&self, request_id: &str, user: &str) -> Result<Option<u64>, Failure> {
        let not_found = || {
            Failure::new(
                Refusal::MatchNotFound,
                format!("no matchmaking ticket {request_id} of yours"),
            )
        };
        let Some((id, _)) = parse_ticket(request_id) else {
            return Err(Failure::new(
                Refusal::MatchNotFound,
                format!("{request_id:?} is not a matchmaking request id (they look like 17@game)"),
            ));
        };
        if let Some(t) = self.tickets.get(&id) {
            if &*t.request_id == request_id && t.players.iter().any(|p| &*p.id == user) {
                return Ok(Some(id));
            }
            return Err(not_found());
        }
        match self.recent.get(&id) {
            Some(f)
                if &*f.view.request_id == request_id
                    && f.view.players.iter().any(|p| &**p == user) =>
            {
                Ok(None)
            }
            _ => Err(not_found()),
        }
    }

    fn finished(&self, request_id: &str) -> Option<&Finished> {
        let (id, _) = parse_ticket(request_id)?;
        self.recent.get(&id)
    }

    fn queue(&self, game: &str, mode: &str) -> Option<&Lifecycle> {
        self.queues.get(game)?.get(mode).map(|(_, l)| l)
    }

    fn view(&self, id: u64, now: u64) -> TicketView {
        let t = &self.tickets[&id];
        let life = self.queue(&t.game, &t.mode);
        let status = life.and_then(|l| l.status(id, now));
        let found = life.and_then(|l| l.checking(id)).is_some();
        TicketView {
            request_id: t.request_id.clone(),
            game: t.game.clone(),
            mode: t.mode.clone(),
            state: if found {
                TicketState::Found
            } else {
                TicketState::Searching
            },
            waited_ms: status.map_or(now.saturating_sub(t.entered_ms), |s| s.waited_ms),
            spread: status.map_or(0, |s| s.spread.round() as u32),
            latency_ms: status.map_or(0, |s| s.latency_ms.round() as u32),
            ahead_band: status.map_or(0, |s| s.ahead_band),
            estimated_wait_ms: status.and_then(|s| s.estimated_wait_ms),
            players: t.players.iter().map(|p| p.id.clone()).collect(),
        }
    }

    fn configure(&mut self, now: u64, specs: Vec<QueueSpec>, out: &mut Vec<Effect>) {
        let mut events = Vec::new();
        // Queues no longer configured end their tickets.
        let mut closed: Vec<(Arc<str>, Arc<str>)> = self
            .queues
            .iter()
            .flat_map(|(g, modes)| modes.keys().map(move |m| (g.clone(), m.clone())))
            .filter(|(g, m)| !specs.iter().any(|s| s.game == *g && s.mode == *m))
            .collect();
        // Same inputs, same order of effects.
        closed.sort();
        for (game, mode) in &closed {
            if let Some((_, life)) = self.queues.get_mut(game).and_then(|m| m.get_mut(mode)) {
                let mut ev = Vec::new();
                life.close(&mut ev);
                events.push((game.clone(), mode.clone(), ev));
            }
        }
        for spec in specs {
            let Ok(queue) = Queue::new(spec.rules.clone()) else {
                continue;
            };
            let modes = self.queues.entry(spec.game.clone()).or_default();
            match modes.get_mut(&spec.mode) {
                Some((old, life)) => {
                    if *old != spec {
                        let mut ev = Vec::new();
                        life.reconfigure(queue, spec.ready_check_ms, &mut ev);
                        events.push((spec.game.clone(), spec.mode.clone(), ev));
                        *old = spec;
                    }
                }
                None => {
                    let life = Lifecycle::new(queue, spec.ready_check_ms);
                    modes.insert(spec.mode.clone(), (spec, life));
                }
            }
        }
        for (game, mode, ev) in events {
            self.lifecycle_events(now, &game, &mode, ev, out);
        }
        for (game, mode) in closed {
            // The queue's backfills go with it.
            self.backfills
                .retain(|_, b| !(b.game == game && b.mode == mode));
            if let Some(modes) = self.queues.get_mut(&game) {
                modes.remove(&mode);
                if modes.is_empty() {
                    self.queues.remove(&game);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
