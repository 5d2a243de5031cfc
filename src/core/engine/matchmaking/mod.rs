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

pub mod matcher;
pub mod queue;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::chat::Author;
use super::{DomainEvent, Effect, Event, Failure, Now, Refusal, Reply, SessionId, UserId};
use matcher::{Attribute, Player, Queue, QueueRules, Team, TicketSpec};
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

    fn start(&mut self, now: u64, s: Start, out: &mut Vec<Effect>) {
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
    fn active_ticket(
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

    fn cancel(&mut self, now: u64, rid: u64, user: &str, ticket: &str, out: &mut Vec<Effect>) {
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
    fn watch(
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

    fn answer(
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

    /// Withdraws a lobby's open backfill; false when it has none.
    fn cancel_backfill(&mut self, game: &str, lobby_id: &str) -> bool {
        let Some((&id, _)) = self
            .backfills
            .iter()
            .find(|(_, b)| &*b.game == game && &*b.lobby_id == lobby_id)
        else {
            return false;
        };
        if let Some(b) = self.backfills.remove(&id) {
            if let Some((_, life)) = self
                .queues
                .get_mut(&b.game)
                .and_then(|m| m.get_mut(&b.mode))
            {
                life.cancel_backfill(id);
            }
        }
        true
    }

    fn backfill(&mut self, now: u64, b: BackfillRequest, out: &mut Vec<Effect>) {
        let known = self
            .queues
            .get(&*b.game)
            .is_some_and(|m| m.contains_key(&*b.mode));
        if !known {
            return fail(
                out,
                0,
                Refusal::MatchNotFound,
                format!("no matchmaking queue {}/{}", b.game, b.mode),
            );
        }
        let replaces = self
            .backfills
            .values()
            .any(|x| x.game == b.game && x.lobby_id == b.lobby_id);
        if !replaces && self.backfills.len() >= MAX_BACKFILLS {
            return fail(
                out,
                0,
                Refusal::RateLimited,
                format!("{MAX_BACKFILLS} backfills are open on this shard, the most allowed"),
            );
        }
        let id = self.next_ticket;
        let spec = matcher::BackfillSpec {
            id,
            region: b.region.clone(),
            rating: b.rating,
            open: b.open,
            attributes: b.attributes,
        };
        let life = match self
            .queues
            .get_mut(&*b.game)
            .and_then(|m| m.get_mut(&*b.mode))
        {
            Some((_, life)) => life,
            None => return,
        };
        if let Err(f) = life.backfill(now, spec) {
            return out.push(Effect::Fail {
                request_id: 0,
                failure: f,
            });
        }
        self.next_ticket += 1;
        // Accepted: it replaces the lobby's earlier backfill, if any.
        self.cancel_backfill(&b.game, &b.lobby_id);
        self.backfills.insert(
            id,
            BackfillInfo {
                game: b.game.clone(),
                mode: b.mode.clone(),
                lobby_id: b.lobby_id,
                match_id: b.match_id,
                region: b.region,
            },
        );
        out.push(Effect::Reply {
            request_id: 0,
            reply: Reply::Done,
        });
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
    fn finish(&mut self, id: u64, view: TicketView) {
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
    fn finish_matched(&mut self, now: u64, teams: &[Team]) -> Vec<MatchedPlayer> {
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
    fn end_without_match(
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

    fn match_id(&mut self, game: &str) -> Arc<str> {
        let id = self.next_match;
        self.next_match += 1;
        Arc::from(format!("m{id}@{game}"))
    }

    fn lifecycle_events(
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

#[cfg(test)]
mod tests;
