//! One matchmaking queue (a game and mode) as a deterministic state
//! machine: tickets (a player or a party) go in with their ratings and
//! their latency per region; every tick forms as many matches as the rules
//! allow and times out what waited too long.
//!
//! The rules are data ([`QueueRules`]): team count and size, regions, and a
//! rating spread and a latency limit that widen with waiting time up to a
//! cap. A match fills every team exactly, never splits a party, keeps every
//! rating within the spread that applied to its oldest ticket, and keeps
//! every player under their own latency limit in the chosen region. Oldest
//! tickets pick first. Time comes in as milliseconds; the same inputs at
//! the same times give the same matches. Never does I/O.
//!
//! A tick sorts the waiting tickets by rating once (n log n) and, for each
//! ticket in age order, grows a group outward from it in rating order,
//! nearest first, skipping matched tickets through a path-compressed
//! "next free" index — so a tick costs O(n log n) plus a bounded scan per
//! ticket.
//!
//! One file on purpose (about 1,150 lines): the rating-sorted index, the
//! tick that grows groups through it and the team balancer are one hot-path
//! algorithm whose private layouts and invariants are read together.

use std::sync::Arc;

use smallvec::SmallVec;

use super::{Failure, Refusal, UserId};

/// A limit that widens with waiting time: `start`, plus `step` for every
/// full `every_ms` waited, never past `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Widening {
    pub start: f64,
    pub step: f64,
    pub every_ms: u64,
    pub max: f64,
}

impl Widening {
    /// The limit after waiting `waited_ms`.
    pub fn at(&self, waited_ms: u64) -> f64 {
        let steps = waited_ms.checked_div(self.every_ms).unwrap_or(0);
        (self.start + self.step * steps as f64).min(self.max)
    }
}

/// A queue's rule set.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRules {
    /// 2 for 1v1 or 5v5, 4 for 2v2v2v2, N for a free-for-all of N.
    pub teams: u16,
    pub team_size: u16,
    /// Regions a match may be played in, by name; tickets give their
    /// latency to some of them.
    pub regions: Vec<Arc<str>>,
    /// Largest rating difference within a match.
    pub spread: Widening,
    /// Largest latency (ms) to the match's region.
    pub latency: Widening,
    /// A ticket waiting this long times out.
    pub timeout_ms: u64,
    /// Preferences every ticket states, and how they must agree within a
    /// match (at most [`MAX_ATTRIBUTES`]).
    pub attributes: Vec<AttributeRule>,
    /// Roles players may take, each with the most one team may hold (at
    /// most [`MAX_ROLES`]): two tanks never land on the same team when
    /// the cap is one.
    pub roles: Vec<(Arc<str>, u16)>,
}

/// How one attribute must agree within a match.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeRule {
    pub name: Arc<str>,
    pub rule: AttributeMatch,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttributeMatch {
    /// Every ticket of a match gives the same text (a map, a game variant).
    Equal,
    /// Every ticket's number lies within this of every other's.
    Within(f64),
}

/// A ticket's value for an attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    Text(Arc<str>),
    Number(f64),
}

/// Attributes one queue may have at most.
pub const MAX_ATTRIBUTES: usize = 4;
/// Roles one queue may have at most.
pub const MAX_ROLES: usize = 4;

impl QueueRules {
    /// Players in one match.
    pub fn players(&self) -> usize {
        usize::from(self.teams) * usize::from(self.team_size)
    }
}

/// One player of a ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct Player {
    pub user: UserId,
    /// Skill rating (the mean of a rating + uncertainty pair).
    pub rating: f64,
}

/// A ticket as it enters the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketSpec {
    pub id: u64,
    /// One player, or a party (never split across teams or matches).
    pub players: Vec<Player>,
    /// Measured latency in ms to regions by name.
    pub latency_ms: Vec<(Arc<str>, u32)>,
    /// The ticket's value for every attribute the queue uses.
    pub attributes: Vec<(Arc<str>, Attribute)>,
    /// Roles its players take (at most one per player; the others are
    /// flexible).
    pub roles: Vec<Arc<str>>,
}

/// Latency values accepted, ms (0 and anything at or past this are absurd).
pub const MAX_LATENCY_MS: u32 = 10_000;
/// Regions one queue may have at most.
pub const MAX_REGIONS: usize = 8;
/// Latency meaning "no measurement for this region".
const UNKNOWN: u16 = u16::MAX;
/// Candidates examined per ticket and region in one tick, at most (the
/// scan is nearest-first, so this only bounds pathological queues).
const SCAN_LIMIT: usize = 256;

#[derive(Debug, Clone)]
struct Ticket {
    id: u64,
    /// Inline for a solo ticket: no allocation to queue or to match it.
    players: SmallVec<[Player; 1]>,
    rating: f64,
    rating_sum: f64,
    /// Indexed like `QueueRules::regions` (inline: no pointer to chase).
    latency: [u16; MAX_REGIONS],
    entered_ms: u64,
    /// Cancelled: skipped, and dropped at the next tick.
    cancelled: bool,
    /// What must-match attributes hash to: only equal classes meet.
    class: u64,
    /// Range attributes' values, indexed like `QueueRules::attributes`.
    numbers: [f64; MAX_ATTRIBUTES],
    /// Players per role, indexed like `QueueRules::roles`.
    roles: [u8; MAX_ROLES],
}

impl Ticket {
    fn size(&self) -> usize {
        self.players.len()
    }
}

/// A formed match.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Unique per queue: the id of its oldest ticket.
    pub id: u64,
    pub region: Arc<str>,
    /// Each team's tickets (ids) and players; parties stay whole.
    pub teams: Vec<Team>,
    /// The spread that applied (the oldest ticket's, at match time), and
    /// the match's actual rating range.
    pub allowed_spread: f64,
    pub spread: f64,
    pub formed_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    pub tickets: Vec<u64>,
    pub players: Vec<Player>,
    pub rating_sum: f64,
}

/// A request to refill a running match's open slots.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillSpec {
    pub id: u64,
    /// The match's region.
    pub region: Arc<str>,
    /// The rating replacements should be near (the match's average).
    pub rating: f64,
    /// Open slots per team, indexed like the match's teams.
    pub open: Vec<u16>,
    /// The match's values for the queue's attributes.
    pub attributes: Vec<(Arc<str>, Attribute)>,
}

#[derive(Debug, Clone)]
struct Backfill {
    id: u64,
    region: usize,
    rating: f64,
    open: Vec<u16>,
    entered_ms: u64,
    class: u64,
    numbers: [f64; MAX_ATTRIBUTES],
}

/// What a tick produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Matched(Match),
    TimedOut {
        ticket: u64,
    },
    /// Tickets placed into a backfill's open slots, per team (teams with
    /// nobody placed are empty); `done` when no slot is left open.
    Backfilled {
        backfill: u64,
        teams: Vec<Team>,
        done: bool,
    },
    /// A backfill waited `timeout_ms` with slots still open.
    BackfillExpired {
        backfill: u64,
    },
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TicketStatus {
    pub waited_ms: u64,
    pub spread: f64,
    pub latency_ms: f64,
    /// Tickets that entered before this one and still wait.
    pub ahead: usize,
}

/// One queue.
#[derive(Debug, Clone)]
pub struct Queue {
    rules: QueueRules,
    /// Waiting tickets in entry order (oldest first), which is also id
    /// order: ids increase, so a ticket is found by binary search.
    tickets: Vec<Ticket>,
    /// The last id queued.
    last_id: Option<u64>,
    /// Tickets waiting (not cancelled).
    live: usize,
    /// Open backfill requests, oldest first: served before new matches.
    backfills: Vec<Backfill>,
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(Refusal::InvalidArgument, message)
}

/// An f32 as a u32 with the same order (negative numbers included).
fn sortable32(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | (1 << 31)
    }
}

/// What the scan reads of one ticket, in one cache line.
#[derive(Debug, Clone, Copy, Default)]
struct Row {
    rating: f64,
    /// Rating sum (a party's players together).
    sum: f64,
    /// Must-match class.
    class: u64,
    /// The ticket's latency limit now, ms.
    limit: u16,
    size: u16,
    /// Latency per region ([`UNKNOWN`] when not measured).
    latency: [u16; MAX_REGIONS],
}

/// The per-tick copy of what the scan reads, in rating order.
struct Hot {
    rows: Vec<Row>,
    id: Vec<u64>,
    /// Range attributes per ticket (`ranges` values each, in the order of
    /// `range_rules`); empty when the queue has none.
    numbers: Vec<f64>,
    /// (attribute index, allowed width) of every range attribute.
    range_rules: Vec<(usize, f64)>,
    /// Players per role per ticket; empty when the queue has no roles.
    roles: Vec<[u8; MAX_ROLES]>,
}

impl Hot {
    /// Whether the ticket at `at` may join a group whose range attributes
    /// span `lo..=hi` (widening them when it may).
    fn ranges_fit(
        &self,
        at: usize,
        lo: &mut [f64; MAX_ATTRIBUTES],
        hi: &mut [f64; MAX_ATTRIBUTES],
    ) -> bool {
        let k = self.range_rules.len();
        if k == 0 {
            return true;
        }
        let v = &self.numbers[at * k..at * k + k];
        let fits = self
            .range_rules
            .iter()
            .enumerate()
            .all(|(i, (_, w))| hi[i].max(v[i]) - lo[i].min(v[i]) <= *w);
        if fits {
            for i in 0..k {
                lo[i] = lo[i].min(v[i]);
                hi[i] = hi[i].max(v[i]);
            }
        }
        fits
    }

    /// The range attributes of the ticket at `at`, as a group's span.
    fn span(&self, at: usize) -> ([f64; MAX_ATTRIBUTES], [f64; MAX_ATTRIBUTES]) {
        let k = self.range_rules.len();
        let mut lo = [0.0; MAX_ATTRIBUTES];
        lo[..k].copy_from_slice(&self.numbers[at * k..at * k + k]);
        (lo, lo)
    }
}

impl Hot {
    /// Grows a group around position `p` in `region`: the free tickets
    /// nearest in rating, each under its own latency limit, the whole group
    /// within `spread`, parties whole, exactly `need` players.
    #[allow(clippy::too_many_arguments)]
    fn grow(
        &self,
        need: usize,
        p: usize,
        region: usize,
        spread: f64,
        right: &mut NextFree,
        left: &mut NextFree,
        group: &mut Vec<usize>,
    ) -> bool {
        let n = self.rows.len();
        let center = self.rows[p].rating;
        let (mut lo, mut hi) = (center, center);
        let class = self.rows[p].class;
        let (mut attr_lo, mut attr_hi) = self.span(p);
        let mut players = usize::from(self.rows[p].size);
        group.push(p);
        let mut r = right.find(p + 1);
        let mut l = {
            let m = left.find(n - p); // mirrored p - 1
            (m < n).then(|| n - 1 - m)
        };
        let mut scanned = 0;
        while players < need && scanned < SCAN_LIMIT {
            let right_gap = (r < n).then(|| self.rows[r].rating - center);
            let left_gap = l.map(|l| center - self.rows[l].rating);
            let take_right = match (right_gap, left_gap) {
                (Some(rg), Some(lg)) => rg <= lg,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if (if take_right { right_gap } else { left_gap }).is_some_and(|g| g > spread) {
                break; // the nearest is already too far: so is everything
            }
            let at = if take_right {
                let at = r;
                r = right.find(r + 1);
                at
            } else {
                let at = l.unwrap_or(0);
                let m = left.find(n - at);
                l = (m < n).then(|| n - 1 - m);
                at
            };
            scanned += 1;
            let size = usize::from(self.rows[at].size);
            if self.rows[at].latency[region] > self.rows[at].limit
                || players + size > need
                || self.rows[at].class != class
            {
                continue;
            }
            let rating = self.rows[at].rating;
            let (nlo, nhi) = (lo.min(rating), hi.max(rating));
            if nhi - nlo > spread || !self.ranges_fit(at, &mut attr_lo, &mut attr_hi) {
                continue;
            }
            lo = nlo;
            hi = nhi;
            players += size;
            group.push(at);
        }
        players == need
    }
}

impl Hot {
    /// Places free tickets into a backfill's open slots, nearest to its
    /// rating first: each within `spread` of it, under its own latency
    /// limit in the backfill's region, a party only into a team with room
    /// for all of it (the team with most room). Takes what it places from
    /// the free index and answers (position, team) pairs.
    fn fill(
        &self,
        b: &mut Backfill,
        spread: f64,
        right: &mut NextFree,
        left: &mut NextFree,
    ) -> Vec<(usize, usize)> {
        let n = self.rows.len();
        let start = self.rows.partition_point(|r| r.rating < b.rating);
        let mut r = right.find(start);
        let mut l = {
            let m = left.find(n - start); // mirrored start - 1
            (m < n).then(|| n - 1 - m)
        };
        let mut placed = Vec::new();
        let mut scanned = 0;
        while b.open.iter().any(|&o| o > 0) && scanned < SCAN_LIMIT {
            let right_gap = (r < n).then(|| self.rows[r].rating - b.rating);
            let left_gap = l.map(|l| b.rating - self.rows[l].rating);
            let take_right = match (right_gap, left_gap) {
                (Some(rg), Some(lg)) => rg <= lg,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if (if take_right { right_gap } else { left_gap }).is_some_and(|g| g > spread) {
                break;
            }
            let at = if take_right {
                let at = r;
                r = right.find(r + 1);
                at
            } else {
                let at = l.unwrap_or(0);
                let m = left.find(n - at);
                l = (m < n).then(|| n - 1 - m);
                at
            };
            scanned += 1;
            let size = self.rows[at].size;
            if self.rows[at].latency[b.region] > self.rows[at].limit
                || self.rows[at].class != b.class
            {
                continue;
            }
            let (mut lo, mut hi) = (b.numbers, b.numbers);
            if !self.ranges_fit(at, &mut lo, &mut hi) {
                continue;
            }
            let Some(team) = (0..b.open.len())
                .filter(|&t| b.open[t] >= size)
                .max_by_key(|&t| (b.open[t], std::cmp::Reverse(t)))
            else {
                continue;
            };
            b.open[team] -= size;
            right.take(at);
            left.take(n - 1 - at);
            placed.push((at, team));
        }
        placed
    }
}

/// One ticket of a group being split into teams.
#[derive(Debug, Clone, Copy)]
struct Item {
    /// Index in `Queue::tickets`.
    ticket: usize,
    size: usize,
    sum: f64,
    id: u64,
    roles: [u8; MAX_ROLES],
}

/// A team while a group is split.
#[derive(Debug, Default)]
struct TeamDraft {
    sum: f64,
    count: usize,
    items: Vec<Item>,
    roles: [u16; MAX_ROLES],
}

/// Scratch space for [`Queue::balance`], reused for every group of a tick.
#[derive(Debug, Default)]
struct Balancer {
    items: Vec<Item>,
    teams: Vec<TeamDraft>,
}

/// "Next free slot" over positions 0..n with path compression: after
/// `take(i)`, `find(i)` skips to the next free position (n when none).
struct NextFree {
    next: Vec<u32>,
}

impl NextFree {
    fn new(n: usize) -> Self {
        Self {
            next: (0..=n as u32).collect(),
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        let mut root = i;
        while self.next[root] as usize != root {
            root = self.next[root] as usize;
        }
        while self.next[i] as usize != root {
            let up = self.next[i] as usize;
            self.next[i] = root as u32;
            i = up;
        }
        root
    }

    fn take(&mut self, i: usize) {
        self.next[i] = (i + 1) as u32;
    }
}

impl Queue {
    /// A queue for `rules`; refused when the rules cannot form a match.
    pub fn new(rules: QueueRules) -> Result<Self, Failure> {
        if rules.teams == 0 || rules.team_size == 0 {
            return Err(invalid(
                "a queue needs at least one team of at least one player",
            ));
        }
        if rules.regions.is_empty() || rules.regions.len() > MAX_REGIONS {
            return Err(invalid(format!("a queue has 1..={MAX_REGIONS} regions")));
        }
        if rules.attributes.len() > MAX_ATTRIBUTES || rules.roles.len() > MAX_ROLES {
            return Err(invalid(format!(
                "a queue has at most {MAX_ATTRIBUTES} attributes and {MAX_ROLES} roles"
            )));
        }
        if rules
            .attributes
            .iter()
            .any(|a| matches!(a.rule, AttributeMatch::Within(w) if !(w.is_finite() && w >= 0.0)))
        {
            return Err(invalid("a range attribute's width is a finite number >= 0"));
        }
        Ok(Self {
            rules,
            tickets: Vec::new(),
            last_id: None,
            live: 0,
            backfills: Vec::new(),
        })
    }

    /// Tickets waiting.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn find(&self, id: u64) -> Option<usize> {
        self.tickets
            .binary_search_by_key(&id, |t| t.id)
            .ok()
            .filter(|&i| !self.tickets[i].cancelled)
    }

    /// Adds a ticket; refuses bad ones with a message and changes nothing.
    /// Ticket ids increase (the shell numbers them).
    pub fn insert(&mut self, now_ms: u64, spec: TicketSpec) -> Result<(), Failure> {
        if self.last_id.is_some_and(|last| spec.id <= last) {
            return Err(invalid(format!(
                "ticket {} is not newer than the last queued ticket; ids increase",
                spec.id
            )));
        }
        let ticket = self.build(now_ms, spec)?;
        self.last_id = Some(ticket.id);
        self.live += 1;
        self.tickets.push(ticket);
        Ok(())
    }

    /// Puts a ticket back where its id and entry time place it (after a
    /// ready check others failed), keeping its waiting time.
    pub fn requeue(&mut self, entered_ms: u64, spec: TicketSpec) -> Result<(), Failure> {
        let at = match self.tickets.binary_search_by_key(&spec.id, |t| t.id) {
            Ok(i) if !self.tickets[i].cancelled => {
                return Err(invalid(format!("ticket {} is already queued", spec.id)))
            }
            Ok(i) => {
                self.tickets.remove(i);
                i
            }
            Err(i) => i,
        };
        let ticket = self.build(entered_ms, spec)?;
        self.last_id = Some(self.last_id.map_or(ticket.id, |l| l.max(ticket.id)));
        self.live += 1;
        self.tickets.insert(at, ticket);
        Ok(())
    }

    fn build(&self, now_ms: u64, spec: TicketSpec) -> Result<Ticket, Failure> {
        let size = spec.players.len();
        if size == 0 || size > usize::from(self.rules.team_size) {
            return Err(invalid(format!(
                "a party of {size} does not fit a team of {}",
                self.rules.team_size
            )));
        }
        if spec.players.iter().any(|p| !p.rating.is_finite()) {
            return Err(invalid("ratings must be finite numbers"));
        }
        let mut latency = [UNKNOWN; MAX_REGIONS];
        for (region, ms) in &spec.latency_ms {
            let Some(i) = self.rules.regions.iter().position(|r| r == region) else {
                return Err(invalid(format!(
                    "region {region:?} is not played in this queue; regions: {}",
                    self.rules.regions.join(", ")
                )));
            };
            if latency[i] != UNKNOWN {
                return Err(invalid(format!(
                    "latency to {region} is given twice; give one measurement per region"
                )));
            }
            if *ms == 0 || *ms >= MAX_LATENCY_MS {
                return Err(invalid(format!(
                    "latency {ms} ms to {region} is not a measurement (1..{MAX_LATENCY_MS})"
                )));
            }
            latency[i] = *ms as u16; // < MAX_LATENCY_MS, checked above
        }
        if latency[..self.rules.regions.len()]
            .iter()
            .all(|&l| l == UNKNOWN)
        {
            return Err(invalid("give the measured latency to at least one region"));
        }
        let (class, numbers) = self.attributes(&spec.attributes)?;
        if spec.roles.len() > size {
            return Err(invalid(format!(
                "{} roles for {size} players; at most one role per player",
                spec.roles.len()
            )));
        }
        let mut roles = [0u8; MAX_ROLES];
        for role in &spec.roles {
            let Some(i) = self.rules.roles.iter().position(|(r, _)| r == role) else {
                let known: Vec<&str> = self.rules.roles.iter().map(|(r, _)| &**r).collect();
                return Err(invalid(format!(
                    "role {role:?} is not played in this queue; roles: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            roles[i] += 1;
        }
        let rating_sum: f64 = spec.players.iter().map(|p| p.rating).sum();
        Ok(Ticket {
            class,
            numbers,
            roles,
            id: spec.id,
            rating: rating_sum / size as f64,
            rating_sum,
            players: spec.players.into_iter().collect(),
            latency,
            entered_ms: now_ms,
            cancelled: false,
        })
    }

    /// Asks for players to fill a running match's open slots; served at
    /// every tick before new matches form, nearest rating first, within
    /// the spread that widens with the backfill's own waiting time.
    pub fn backfill(&mut self, now_ms: u64, spec: BackfillSpec) -> Result<(), Failure> {
        let Some(region) = self.rules.regions.iter().position(|r| *r == spec.region) else {
            return Err(invalid(format!(
                "region {:?} is not played in this queue; regions: {}",
                spec.region,
                self.rules.regions.join(", ")
            )));
        };
        if spec.open.len() != usize::from(self.rules.teams)
            || spec.open.iter().any(|&o| o > self.rules.team_size)
            || spec.open.iter().all(|&o| o == 0)
        {
            return Err(invalid(format!(
                "open slots are given per team ({} teams), each 0..={}, at least one open",
                self.rules.teams, self.rules.team_size
            )));
        }
        if !spec.rating.is_finite() {
            return Err(invalid("the backfill's rating must be a finite number"));
        }
        if self.backfills.iter().any(|b| b.id == spec.id) {
            return Err(invalid(format!("backfill {} already exists", spec.id)));
        }
        let (class, numbers) = self.attributes(&spec.attributes)?;
        self.backfills.push(Backfill {
            class,
            numbers,
            id: spec.id,
            region,
            rating: spec.rating,
            open: spec.open,
            entered_ms: now_ms,
        });
        Ok(())
    }

    /// Withdraws a backfill; false when there is none by that id.
    pub fn cancel_backfill(&mut self, id: u64) -> bool {
        let before = self.backfills.len();
        self.backfills.retain(|b| b.id != id);
        self.backfills.len() != before
    }

    /// Open backfill requests.
    pub fn backfills(&self) -> usize {
        self.backfills.len()
    }

    /// The ids of the open backfills.
    pub fn backfill_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.backfills.iter().map(|b| b.id)
    }

    /// A ticket's (or a backfill's) attributes as its must-match class and
    /// its range values (in the order of the queue's range attributes);
    /// refused when one is missing, unknown or of the wrong kind.
    fn attributes(
        &self,
        given: &[(Arc<str>, Attribute)],
    ) -> Result<(u64, [f64; MAX_ATTRIBUTES]), Failure> {
        let rules = &self.rules.attributes;
        if let Some((name, _)) = given
            .iter()
            .find(|(n, _)| !rules.iter().any(|r| r.name == *n))
        {
            let known: Vec<&str> = rules.iter().map(|r| &*r.name).collect();
            return Err(invalid(format!(
                "attribute {name:?} is not used by this queue; it uses: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        let mut class = 0u64;
        let mut numbers = [0.0; MAX_ATTRIBUTES];
        let mut ranges = 0;
        for (i, rule) in rules.iter().enumerate() {
            let value = given.iter().find(|(n, _)| *n == rule.name).map(|(_, v)| v);
            match (rule.rule, value) {
                (AttributeMatch::Equal, Some(Attribute::Text(t))) => {
                    class = xxhash_rust::xxh3::xxh3_64_with_seed(t.as_bytes(), class ^ i as u64);
                }
                (AttributeMatch::Within(_), Some(Attribute::Number(x))) if x.is_finite() => {
                    numbers[ranges] = *x;
                    ranges += 1;
                }
                (AttributeMatch::Equal, _) => {
                    return Err(invalid(format!(
                        "this queue needs attribute {:?} as text (every player of a match gives the same)",
                        rule.name
                    )))
                }
                (AttributeMatch::Within(w), _) => {
                    return Err(invalid(format!(
                        "this queue needs attribute {:?} as a finite number (within {w} across a match)",
                        rule.name
                    )))
                }
            }
        }
        Ok((class, numbers))
    }

    /// Removes a waiting ticket; false when it is not waiting (matched,
    /// timed out, cancelled, never queued).
    pub fn cancel(&mut self, id: u64) -> bool {
        let Some(i) = self.find(id) else {
            return false;
        };
        self.tickets[i].cancelled = true;
        self.live -= 1;
        true
    }

    pub fn status(&self, id: u64, now_ms: u64) -> Option<TicketStatus> {
        let at = self.find(id)?;
        let waited = now_ms.saturating_sub(self.tickets[at].entered_ms);
        Some(TicketStatus {
            waited_ms: waited,
            spread: self.rules.spread.at(waited),
            latency_ms: self.rules.latency.at(waited),
            ahead: at,
        })
    }

    /// Times out what waited too long, then forms every match it can.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Outcome>) {
        let timeout = self.rules.timeout_ms;
        let live = &mut self.live;
        self.tickets.retain(|t| {
            if t.cancelled {
                return false;
            }
            let expired = now_ms.saturating_sub(t.entered_ms) >= timeout;
            if expired {
                *live -= 1;
                out.push(Outcome::TimedOut { ticket: t.id });
            }
            !expired
        });
        self.backfills.retain(|b| {
            let expired = now_ms.saturating_sub(b.entered_ms) >= timeout;
            if expired {
                out.push(Outcome::BackfillExpired { backfill: b.id });
            }
            !expired
        });
        let total = self.tickets.len();
        let need = self.rules.players();
        if total == 0 || need == 0 {
            return;
        }
        let regions_n = self.rules.regions.len();
        // Each ticket's latency limit now, below UNKNOWN so that an
        // unmeasured region never qualifies.
        let latency = &self.rules.latency;
        let limit_of = |t: &Ticket| {
            latency
                .at(now_ms.saturating_sub(t.entered_ms))
                .clamp(0.0, f64::from(UNKNOWN - 1)) as u16
        };
        // Rating order, ties by age: deterministic.
        // Sort (rating bits, age) keys: one pass over the tickets, then a
        // sort of plain integers.
        // One u64 per ticket: the rating (as an f32, order-preserving) above
        // the index (age). Ratings closer than an f32 can tell apart keep
        // their age order; every window is still checked on the f64s.
        // Only tickets that may play somewhere now take part: one whose
        // every region is over its latency limit waits for the limit to
        // widen, and scanning past it tick after tick would be wasted.
        let mut keys: Vec<u64> = self
            .tickets
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                let limit = limit_of(t);
                t.latency[..regions_n].iter().any(|&l| l <= limit)
            })
            .map(|(i, t)| (u64::from(sortable32(t.rating as f32)) << 32) | i as u64)
            .collect();
        keys.sort_unstable();
        let order: Vec<u32> = keys.into_iter().map(|k| k as u32).collect();
        let n = order.len();
        // Rating position of each ticket (u32::MAX: sitting this tick out).
        let mut pos = vec![u32::MAX; total];
        for (p, &t) in order.iter().enumerate() {
            pos[t as usize] = p as u32;
        }
        // What the scan reads, laid out in rating order so that neighbours
        // in rating are neighbours in memory.
        let mut hot = Hot {
            rows: vec![Row::default(); n],
            id: vec![0; n],
            numbers: Vec::new(),
            range_rules: self
                .rules
                .attributes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| match r.rule {
                    AttributeMatch::Within(w) => Some((i, w)),
                    AttributeMatch::Equal => None,
                })
                .collect(),
            roles: Vec::new(),
        };
        let ranges = hot.range_rules.len();
        hot.numbers.resize(n * ranges, 0.0);
        if !self.rules.roles.is_empty() {
            hot.roles.resize(n, [0; MAX_ROLES]);
        }
        // Read the tickets in order (sequentially) and scatter into the
        // small rating-ordered arrays.
        for (i, t) in self.tickets.iter().enumerate() {
            if pos[i] == u32::MAX {
                continue;
            }
            let p = pos[i] as usize;
            hot.rows[p] = Row {
                rating: t.rating,
                sum: t.rating_sum,
                class: t.class,
                limit: limit_of(t),
                size: t.size() as u16,
                latency: t.latency,
            };
            hot.id[p] = t.id;
            hot.numbers[p * ranges..p * ranges + ranges].copy_from_slice(&t.numbers[..ranges]);
            if let Some(r) = hot.roles.get_mut(p) {
                *r = t.roles;
            }
        }
        // Free positions in rating order, scanning right (`right`) and,
        // through mirrored positions, left (`left`).
        let mut right = NextFree::new(n);
        let mut left = NextFree::new(n);
        let mut matched = vec![false; total];
        // Where each matched ticket's players go: (index in `out`, team).
        let mut dest = vec![(u32::MAX, 0u32); total];
        let mut group: Vec<usize> = Vec::with_capacity(need);
        let mut balancer = Balancer::default();
        let mut regions: Vec<usize> = Vec::with_capacity(regions_n);
        // Backfills first, oldest first.
        let mut backfills = std::mem::take(&mut self.backfills);
        backfills.retain_mut(|b| {
            let spread = self.rules.spread.at(now_ms.saturating_sub(b.entered_ms));
            let placed = hot.fill(b, spread, &mut right, &mut left);
            if placed.is_empty() {
                return true;
            }
            let slot = out.len() as u32;
            let mut teams: Vec<Team> = (0..b.open.len())
                .map(|_| Team {
                    tickets: Vec::new(),
                    players: Vec::new(),
                    rating_sum: 0.0,
                })
                .collect();
            for (at, team) in placed {
                let t = order[at] as usize;
                matched[t] = true;
                dest[t] = (slot, team as u32);
                teams[team].tickets.push(hot.id[at]);
                teams[team].rating_sum += hot.rows[at].sum;
            }
            let done = b.open.iter().all(|&o| o == 0);
            out.push(Outcome::Backfilled {
                backfill: b.id,
                teams,
                done,
            });
            !done
        });
        self.backfills = backfills;
        for anchor in 0..total {
            if matched[anchor] || pos[anchor] == u32::MAX {
                continue;
            }
            let a = &self.tickets[anchor];
            let p = pos[anchor] as usize;
            let waited = now_ms.saturating_sub(a.entered_ms);
            let spread = self.rules.spread.at(waited);
            let limit = hot.rows[p].limit;
            regions.clear();
            regions.extend((0..regions_n).filter(|&r| hot.rows[p].latency[r] <= limit));
            regions.sort_by_key(|&r| (a.latency[r], r));
            for &region in &regions {
                group.clear();
                if !hot.grow(need, p, region, spread, &mut right, &mut left, &mut group) {
                    continue;
                }
                if self.balance(&hot, &order, &group, &mut balancer) {
                    let (lo, hi) = group.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &g| {
                        let r = hot.rows[g].rating;
                        (lo.min(r), hi.max(r))
                    });
                    for &g in &group {
                        matched[order[g] as usize] = true;
                        right.take(g);
                        left.take(n - 1 - g);
                    }
                    // Players join their teams in the sequential pass
                    // below, which removes the matched tickets.
                    let slot = out.len() as u32;
                    let teams = balancer
                        .teams
                        .iter()
                        .enumerate()
                        .map(|(team, draft)| {
                            for m in &draft.items {
                                dest[m.ticket] = (slot, team as u32);
                            }
                            Team {
                                tickets: draft
                                    .items
                                    .iter()
                                    .map(|m| hot.id[pos[m.ticket] as usize])
                                    .collect(),
                                players: Vec::with_capacity(usize::from(self.rules.team_size)),
                                rating_sum: draft.sum,
                            }
                        })
                        .collect();
                    out.push(Outcome::Matched(Match {
                        id: hot.id[p],
                        region: self.rules.regions[region].clone(),
                        teams,
                        allowed_spread: spread,
                        spread: hi - lo,
                        formed_ms: now_ms,
                    }));
                    break;
                }
            }
        }
        if matched.iter().any(|&m| m) {
            let mut i = 0;
            let live = &mut self.live;
            self.tickets.retain_mut(|t| {
                let (slot, team) = dest[i];
                i += 1;
                if slot == u32::MAX {
                    return true;
                }
                *live -= 1;
                match out.get_mut(slot as usize) {
                    Some(Outcome::Matched(m)) => {
                        m.teams[team as usize].players.extend(t.players.drain(..))
                    }
                    Some(Outcome::Backfilled { teams, .. }) => {
                        teams[team as usize].players.extend(t.players.drain(..))
                    }
                    _ => {}
                }
                false
            });
        }
    }

    /// Splits a group into full teams, parties whole, sums balanced:
    /// largest parties first, each to the lightest team with room (and
    /// under every role cap), then swaps of equal tickets (size and roles)
    /// between the heaviest and lightest team while that narrows the gap.
    /// False when the parties cannot fill the teams exactly. Works in
    /// `scratch` (reused across groups: no allocation per match), where
    /// the teams are left for the caller.
    fn balance(&self, hot: &Hot, order: &[u32], group: &[usize], scratch: &mut Balancer) -> bool {
        let size = usize::from(self.rules.team_size);
        let mut caps = [u16::MAX; MAX_ROLES];
        for (i, (_, cap)) in self.rules.roles.iter().enumerate().take(MAX_ROLES) {
            caps[i] = *cap;
        }
        let team_count = usize::from(self.rules.teams);
        // Positions in rating order are local to the group: no ticket is
        // read here. Ties go by age (the index), which is deterministic.
        let items = &mut scratch.items;
        items.clear();
        items.extend(group.iter().map(|&g| Item {
            ticket: order[g] as usize,
            size: usize::from(hot.rows[g].size),
            sum: hot.rows[g].sum,
            id: u64::from(order[g]),
            roles: hot.roles.get(g).copied().unwrap_or_default(),
        }));
        items.sort_by(|a, b| {
            b.size
                .cmp(&a.size)
                .then(b.sum.total_cmp(&a.sum))
                .then(a.id.cmp(&b.id))
        });
        let teams = &mut scratch.teams;
        teams.resize_with(team_count, TeamDraft::default);
        teams.truncate(team_count);
        for t in teams.iter_mut() {
            t.sum = 0.0;
            t.count = 0;
            t.items.clear();
            t.roles = [0; MAX_ROLES];
        }
        for item in items.iter() {
            let Some(best) = teams
                .iter_mut()
                .filter(|t| {
                    t.count + item.size <= size
                        && (0..MAX_ROLES).all(|r| t.roles[r] + u16::from(item.roles[r]) <= caps[r])
                })
                .min_by(|a, b| a.sum.total_cmp(&b.sum).then(a.count.cmp(&b.count)))
            else {
                return false;
            };
            best.sum += item.sum;
            best.count += item.size;
            for r in 0..MAX_ROLES {
                best.roles[r] += u16::from(item.roles[r]);
            }
            best.items.push(*item);
        }
        if teams.iter().any(|t| t.count != size) {
            return false;
        }
        for _ in 0..size * 2 {
            let (mut hi, mut lo) = (0, 0);
            for (i, t) in teams.iter().enumerate() {
                if t.sum > teams[hi].sum {
                    hi = i;
                }
                if t.sum < teams[lo].sum {
                    lo = i;
                }
            }
            let gap = teams[hi].sum - teams[lo].sum;
            let mut best: Option<(usize, usize, f64)> = None;
            for (i, x) in teams[hi].items.iter().enumerate() {
                for (j, y) in teams[lo].items.iter().enumerate() {
                    let d = x.sum - y.sum;
                    // Equal roles too: a swap never breaks a role cap.
                    if x.size != y.size || x.roles != y.roles || d <= 0.0 {
                        continue;
                    }
                    let new_gap = (gap - 2.0 * d).abs();
                    if new_gap < gap && best.is_none_or(|b| new_gap < b.2) {
                        best = Some((i, j, new_gap));
                    }
                }
            }
            let Some((i, j, _)) = best else { break };
            let (x, y) = (teams[hi].items[i], teams[lo].items[j]);
            teams[hi].items[i] = y;
            teams[lo].items[j] = x;
            teams[hi].sum -= x.sum - y.sum;
            teams[lo].sum += x.sum - y.sum;
        }
        true
    }
}

#[cfg(test)]
mod tests;
