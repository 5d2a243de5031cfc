//! Lobbies (parties) of one shard: create, join, leave, ready, kick with a
//! rejoin ban, update, host transfer and migration, lock, start, close,
//! invitations, disconnect grace; every change bumps the lobby's version,
//! and every event carries it so a client can spot a gap and ask for a
//! snapshot.
//!
//! Membership is per user, not per connection: events go to every session
//! of every member (the shell routes them through each member's shard), and
//! a member whose last session ends keeps the slot for a grace period.
//! Never does I/O; time comes in as [`Now`], timers leave through
//! [`Lobbies::poll_timeout`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chat::Author;
use super::{DomainEvent, Effect, Event, Failure, Now, Refusal, Reply, UserId};

/// Longest lobby id, game, mode or region, bytes.
pub const MAX_NAME: usize = 64;
/// Settings: at most this many keys, and this many bytes of keys and values.
pub const MAX_SETTINGS: usize = 32;
pub const MAX_SETTINGS_BYTES: usize = 4096;
/// Largest capacity.
pub const MAX_CAPACITY: u16 = 256;
/// Longest start payload (the game server's address and ticket), bytes.
pub const MAX_CONNECTION: usize = 1024;
/// Pending invitations per lobby at most.
pub const MAX_INVITED: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Listed, and anyone may join (with the password when one is set).
    Public,
    /// Not listed; anyone with the id (and the password) may join.
    Private,
    /// Not listed; only invited or assigned users may join.
    InviteOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    /// Every member is ready and there are at least `min` of them.
    Ready,
    InGame,
}

/// What a lobby is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbySpec {
    pub game: String,
    pub mode: String,
    pub region: String,
    pub min: u16,
    pub max: u16,
    pub visibility: Visibility,
    pub password: Option<String>,
    pub chat: bool,
    pub settings: BTreeMap<String, String>,
}

/// What the host may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LobbyUpdate {
    pub settings: Option<BTreeMap<String, String>>,
    pub capacity: Option<(u16, u16)>,
    pub visibility: Option<Visibility>,
    /// `Some(None)` removes the password.
    pub password: Option<Option<String>>,
    pub locked: Option<bool>,
}

/// One member as everyone sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub user: Author,
    pub ready: bool,
    /// False while their last session is gone and the grace period runs.
    pub connected: bool,
    pub team: Option<u8>,
    pub joined_at_ms: i64,
}

/// A lobby's full state, as sent on join, on request and with updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: Arc<str>,
    pub game: Arc<str>,
    pub mode: Arc<str>,
    pub region: Arc<str>,
    pub min: u16,
    pub max: u16,
    pub visibility: Visibility,
    pub has_password: bool,
    pub chat: bool,
    pub locked: bool,
    pub status: Status,
    pub host: Option<UserId>,
    pub members: Vec<MemberView>,
    pub settings: BTreeMap<String, String>,
    /// Given to members when the game starts (the game server's address).
    pub connection: Option<String>,
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What happened in a lobby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    MemberJoined,
    MemberLeft,
    HostChanged,
    MemberReady,
    /// Every member is ready (`lobby:ready`).
    AllReady,
    /// Someone unreadied or joined after `AllReady`: back to open.
    NotReady,
    MemberKicked,
    /// To the kicked user only (`lobby:kicked`).
    Kicked,
    Updated,
    Started,
    Closed,
    MemberDisconnected,
    MemberReconnected,
}

/// A lobby event, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyEvent {
    pub lobby_id: Arc<str>,
    pub version: u64,
    pub kind: EventKind,
    /// The member it is about, when it is about one.
    pub user: Option<Author>,
    pub ready: bool,
    pub reason: Option<String>,
    /// The state after the change, for updates, starts and host changes.
    pub snapshot: Option<Arc<Snapshot>>,
    pub at_ms: i64,
}

/// Commands the lobby engine accepts.
#[derive(Debug, Clone)]
pub enum Command {
    /// A player creates a lobby (and hosts it), or an operator or the
    /// matchmaker creates one with its players assigned (`host: None`).
    Create {
        request_id: u64,
        lobby_id: Arc<str>,
        host: Option<Author>,
        spec: LobbySpec,
        assigned: Vec<(Author, Option<u8>)>,
    },
    Join {
        request_id: u64,
        lobby_id: Arc<str>,
        user: Author,
        password: Option<String>,
    },
    Leave {
        request_id: u64,
        lobby_id: Arc<str>,
        user: UserId,
    },
    Ready {
        request_id: u64,
        lobby_id: Arc<str>,
        user: UserId,
        ready: bool,
    },
    Kick {
        request_id: u64,
        lobby_id: Arc<str>,
        actor: UserId,
        target: UserId,
        reason: String,
    },
    Update {
        request_id: u64,
        lobby_id: Arc<str>,
        actor: UserId,
        update: LobbyUpdate,
    },
    TransferHost {
        request_id: u64,
        lobby_id: Arc<str>,
        actor: UserId,
        target: UserId,
    },
    /// By the host, or by an operator or the game backend (`actor: None`).
    Start {
        request_id: u64,
        lobby_id: Arc<str>,
        actor: Option<UserId>,
        connection: Option<String>,
    },
    /// By the host, or by an operator (`actor: None`).
    Close {
        request_id: u64,
        lobby_id: Arc<str>,
        actor: Option<UserId>,
    },
    /// A member invites a user; the shell checks blocks (and friendship,
    /// unless the lobby is public) and then calls [`Command::Invited`].
    Invite {
        request_id: u64,
        lobby_id: Arc<str>,
        actor: UserId,
        invitee: UserId,
    },
    /// The invitation passed the shell's checks: the invitee may join.
    Invited { lobby_id: Arc<str>, invitee: UserId },
    Get {
        request_id: u64,
        lobby_id: Arc<str>,
        user: UserId,
    },
    /// The matchmaker's backfill adds players to a lobby (in game or not)
    /// with their teams; they keep their slot `assigned_grace` until they
    /// connect. Refused whole when they do not fit. Answers with request 0.
    Assign {
        lobby_id: Arc<str>,
        players: Vec<(Author, Option<u8>)>,
    },
    /// A member's user came online or went offline (their last session ended).
    Presence {
        lobby_id: Arc<str>,
        user: UserId,
        online: bool,
    },
    /// The user joined another lobby of the same game: they leave this one,
    /// if they are still in the membership that began at `since_version`.
    Superseded {
        lobby_id: Arc<str>,
        user: UserId,
        since_version: u64,
    },
}

/// Durations the engine works with.
#[derive(Debug, Clone, Copy)]
pub struct LobbyLimits {
    /// How long a disconnected member keeps the slot.
    pub grace: Duration,
    /// How long an assigned player who never connected keeps the slot.
    pub assigned_grace: Duration,
    /// How long a kicked user may not rejoin.
    pub kick_ban: Duration,
}

impl Default for LobbyLimits {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(60),
            assigned_grace: Duration::from_secs(600),
            kick_ban: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    user: Author,
    ready: bool,
    connected: bool,
    team: Option<u8>,
    joined_at_ms: i64,
    /// When the grace period ends, while disconnected.
    grace_until: Option<Instant>,
    /// The lobby's version when this membership began: tells a stale
    /// `Superseded` (about an earlier membership) from a current one.
    since_version: u64,
}

#[derive(Debug)]
struct Lobby {
    id: Arc<str>,
    game: Arc<str>,
    mode: Arc<str>,
    region: Arc<str>,
    min: u16,
    max: u16,
    visibility: Visibility,
    password: Option<String>,
    chat: bool,
    locked: bool,
    status: Status,
    host: Option<UserId>,
    /// In joining order: the host role passes to the longest present.
    members: Vec<Member>,
    settings: BTreeMap<String, String>,
    connection: Option<String>,
    invited: HashSet<UserId>,
    /// Kicked users and when they may rejoin (Unix ms).
    bans: HashMap<UserId, i64>,
    version: u64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl Lobby {
    fn member(&self, user: &str) -> Option<&Member> {
        self.members.iter().find(|m| &*m.user.id == user)
    }

    fn member_mut(&mut self, user: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| &*m.user.id == user)
    }

    fn is_host(&self, user: &str) -> bool {
        self.host.as_deref() == Some(user)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            id: self.id.clone(),
            game: self.game.clone(),
            mode: self.mode.clone(),
            region: self.region.clone(),
            min: self.min,
            max: self.max,
            visibility: self.visibility,
            has_password: self.password.is_some(),
            chat: self.chat,
            locked: self.locked,
            status: self.status,
            host: self.host.clone(),
            members: self
                .members
                .iter()
                .map(|m| MemberView {
                    user: m.user.clone(),
                    ready: m.ready,
                    connected: m.connected,
                    team: m.team,
                    joined_at_ms: m.joined_at_ms,
                })
                .collect(),
            settings: self.settings.clone(),
            connection: self.connection.clone(),
            version: self.version,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        })
    }

    /// A new version for a change made at `now`.
    fn bump(&mut self, now: Now) -> u64 {
        self.version += 1;
        self.updated_at_ms = now.unix_ms;
        self.version
    }

    fn event(&self, kind: EventKind, now: Now) -> LobbyEvent {
        LobbyEvent {
            lobby_id: self.id.clone(),
            version: self.version,
            kind,
            user: None,
            ready: false,
            reason: None,
            snapshot: None,
            at_ms: now.unix_ms,
        }
    }

    fn all_ready(&self) -> bool {
        !self.members.is_empty()
            && self.members.len() >= usize::from(self.min)
            && self.members.iter().all(|m| m.ready)
    }
}

/// A public lobby in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub id: Arc<str>,
    pub game: Arc<str>,
    pub mode: Arc<str>,
    pub region: Arc<str>,
    pub members: u16,
    pub max: u16,
    pub has_password: bool,
    pub status: Status,
}

/// What a listing asks for; empty strings match everything.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub game: String,
    pub mode: String,
    pub region: String,
    pub min_free: u16,
}

/// The lobbies of one shard.
pub struct Lobbies {
    limits: LobbyLimits,
    lobbies: HashMap<Arc<str>, Lobby>,
    /// (deadline, lobby, user) of members in their grace period.
    graces: BTreeSet<(Instant, Arc<str>, UserId)>,
}

fn failure(refusal: Refusal, message: impl Into<String>) -> Failure {
    Failure::new(refusal, message)
}

/// Checks the parts of a spec that a client or operator controls.
pub fn check_spec(spec: &LobbySpec) -> Result<(), Failure> {
    for (what, v) in [
        ("game", &spec.game),
        ("mode", &spec.mode),
        ("region", &spec.region),
    ] {
        if v.is_empty() || v.len() > MAX_NAME {
            return Err(failure(
                Refusal::InvalidArgument,
                format!("{what} must be 1..={MAX_NAME} bytes"),
            ));
        }
    }
    check_capacity(spec.min, spec.max)?;
    check_settings(&spec.settings)?;
    if spec.password.as_ref().is_some_and(|p| p.len() > MAX_NAME) {
        return Err(failure(
            Refusal::InvalidArgument,
            format!("password longer than {MAX_NAME} bytes"),
        ));
    }
    Ok(())
}

fn check_capacity(min: u16, max: u16) -> Result<(), Failure> {
    if min == 0 || min > max || max > MAX_CAPACITY {
        return Err(failure(
            Refusal::InvalidArgument,
            format!(
                "capacity must satisfy 1 <= min <= max <= {MAX_CAPACITY}; got min {min}, max {max}"
            ),
        ));
    }
    Ok(())
}

fn check_settings(settings: &BTreeMap<String, String>) -> Result<(), Failure> {
    let bytes: usize = settings.iter().map(|(k, v)| k.len() + v.len()).sum();
    if settings.len() > MAX_SETTINGS || bytes > MAX_SETTINGS_BYTES {
        return Err(failure(
            Refusal::InvalidArgument,
            format!(
                "settings: {} keys and {bytes} bytes; at most {MAX_SETTINGS} keys and {MAX_SETTINGS_BYTES} bytes",
                settings.len()
            ),
        ));
    }
    Ok(())
}

impl Lobbies {
    pub fn new(limits: LobbyLimits) -> Self {
        Self {
            limits,
            lobbies: HashMap::new(),
            graces: BTreeSet::new(),
        }
    }

    /// Whether `user` may be in the lobby's chat: a member of a lobby with
    /// chat on; `None` when no such lobby.
    pub fn chat_member(&self, lobby: &str, user: &str) -> Option<bool> {
        self.lobbies
            .get(lobby)
            .map(|l| l.chat && l.member(user).is_some())
    }

    /// The members of `lobby` to queue as a party for matchmaking, host
    /// first: only its host may, and only while it is not in game.
    pub fn party(&self, lobby: &str, user: &str) -> Result<(Arc<str>, Vec<Author>), Failure> {
        let Some(l) = self.lobbies.get(lobby) else {
            return Err(Failure::new(
                Refusal::LobbyNotFound,
                format!("no lobby {lobby}"),
            ));
        };
        if l.member(user).is_none() {
            return Err(Failure::new(
                Refusal::LobbyNotFound,
                format!("no lobby {lobby}"),
            ));
        }
        if l.host.as_deref() != Some(user) {
            return Err(Failure::new(
                Refusal::NotHost,
                "only the lobby's host may queue it for matchmaking",
            ));
        }
        if l.status == Status::InGame {
            return Err(Failure::new(
                Refusal::LobbyError,
                format!("lobby {lobby} is in game; it cannot queue for a match"),
            ));
        }
        let mut players: Vec<Author> = l.members.iter().map(|m| m.user.clone()).collect();
        if let Some(i) = players.iter().position(|p| &*p.id == user) {
            let host = players.remove(i);
            players.insert(0, host);
        }
        Ok((l.game.clone(), players))
    }

    /// The full state of a lobby, if it exists.
    pub fn snapshot(&self, lobby: &str) -> Option<Arc<Snapshot>> {
        self.lobbies.get(lobby).map(Lobby::snapshot)
    }

    /// Public, joinable lobbies matching `filter` with ids after `after`,
    /// in id order, at most `limit`.
    pub fn list(&self, filter: &ListFilter, after: &str, limit: usize) -> Vec<Summary> {
        let matches = |want: &str, have: &str| want.is_empty() || want == have;
        let mut out: Vec<Summary> = self
            .lobbies
            .values()
            .filter(|l| {
                l.visibility == Visibility::Public
                    && !l.locked
                    && l.status != Status::InGame
                    && &*l.id > after
                    && matches(&filter.game, &l.game)
                    && matches(&filter.mode, &l.mode)
                    && matches(&filter.region, &l.region)
                    && usize::from(l.max) - l.members.len() >= usize::from(filter.min_free.max(1))
            })
            .map(|l| Summary {
                id: l.id.clone(),
                game: l.game.clone(),
                mode: l.mode.clone(),
                region: l.region.clone(),
                members: l.members.len() as u16,
                max: l.max,
                has_password: l.password.is_some(),
                status: l.status,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.truncate(limit);
        out
    }

    /// The earliest grace period to end.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.graces.first().map(|(at, _, _)| *at)
    }

    /// Members whose grace period ended leave.
    pub fn handle_timeout(&mut self, now: Now, out: &mut Vec<Effect>) {
        while let Some((at, lobby, user)) = self.graces.first().cloned() {
            if at > now.mono {
                break;
            }
            self.graces.pop_first();
            let still_away = self
                .lobbies
                .get(&lobby)
                .and_then(|l| l.member(&user))
                .is_some_and(|m| m.grace_until == Some(at));
            if still_away {
                self.remove_member(now, &lobby, &user, "did not come back in time", out);
            }
        }
    }

    pub fn handle(&mut self, now: Now, cmd: Command, out: &mut Vec<Effect>) {
        let request_id = request_of(&cmd);
        if let Err(f) = self.apply(now, cmd, out) {
            out.push(Effect::Fail {
                request_id,
                failure: f,
            });
        }
    }

    fn lobby(&mut self, id: &str) -> Result<&mut Lobby, Failure> {
        self.lobbies
            .get_mut(id)
            .ok_or_else(|| failure(Refusal::LobbyNotFound, format!("no lobby {id}")))
    }

    fn reply(out: &mut Vec<Effect>, request_id: u64, lobby: &Lobby) {
        out.push(Effect::Reply {
            request_id,
            reply: Reply::Lobby(lobby.snapshot()),
        });
    }

    /// Every member (but `except`) hears `event`.
    fn broadcast(out: &mut Vec<Effect>, lobby: &Lobby, event: LobbyEvent, except: Option<&str>) {
        let users: Vec<UserId> = lobby
            .members
            .iter()
            .filter(|m| Some(&*m.user.id) != except)
            .map(|m| m.user.id.clone())
            .collect();
        if !users.is_empty() {
            out.push(Effect::ToUsers {
                users,
                event: Event::Lobby(Arc::new(event)),
            });
        }
    }

    fn apply(&mut self, now: Now, cmd: Command, out: &mut Vec<Effect>) -> Result<(), Failure> {
        match cmd {
            Command::Create {
                request_id,
                lobby_id,
                host,
                spec,
                assigned,
            } => {
                check_spec(&spec)?;
                if lobby_id.is_empty() || lobby_id.len() > MAX_NAME {
                    return Err(failure(
                        Refusal::InvalidArgument,
                        format!("lobby id must be 1..={MAX_NAME} bytes"),
                    ));
                }
                if self.lobbies.contains_key(&lobby_id) {
                    return Err(failure(
                        Refusal::LobbyError,
                        format!("lobby {lobby_id} already exists"),
                    ));
                }
                let players = host.iter().count() + assigned.len();
                if players == 0 {
                    return Err(failure(
                        Refusal::InvalidArgument,
                        "a lobby needs at least one player",
                    ));
                }
                if players > usize::from(spec.max) {
                    return Err(failure(
                        Refusal::InvalidArgument,
                        format!(
                            "{players} players assigned to a lobby of at most {}",
                            spec.max
                        ),
                    ));
                }
                let mut lobby = Lobby {
                    id: lobby_id.clone(),
                    game: Arc::from(spec.game),
                    mode: Arc::from(spec.mode),
                    region: Arc::from(spec.region),
                    min: spec.min,
                    max: spec.max,
                    visibility: spec.visibility,
                    password: spec.password,
                    chat: spec.chat,
                    locked: false,
                    status: Status::Open,
                    host: host.as_ref().map(|h| h.id.clone()),
                    members: Vec::new(),
                    settings: spec.settings,
                    connection: None,
                    invited: HashSet::new(),
                    bans: HashMap::new(),
                    version: 1,
                    created_at_ms: now.unix_ms,
                    updated_at_ms: now.unix_ms,
                };
                let assigned_grace = now.mono + self.limits.assigned_grace;
                for (user, team, connected) in host
                    .into_iter()
                    .map(|h| (h, None, true))
                    .chain(assigned.into_iter().map(|(u, t)| (u, t, false)))
                {
                    if lobby.member(&user.id).is_some() {
                        continue;
                    }
                    let grace_until = (!connected).then_some(assigned_grace);
                    if let Some(at) = grace_until {
                        self.graces.insert((at, lobby_id.clone(), user.id.clone()));
                    }
                    out.push(Effect::LobbyMembership {
                        user: user.id.clone(),
                        lobby_id: lobby_id.clone(),
                        game: lobby.game.clone(),
                        joined: true,
                        since_version: 1,
                    });
                    lobby.members.push(Member {
                        user,
                        ready: false,
                        connected,
                        team,
                        joined_at_ms: now.unix_ms,
                        grace_until,
                        since_version: 1,
                    });
                }
                if lobby.host.is_none() {
                    lobby.host = lobby.members.first().map(|m| m.user.id.clone());
                }
                Self::reply(out, request_id, &lobby);
                out.push(Effect::Domain(DomainEvent::LobbyCreated {
                    lobby_id: lobby_id.clone(),
                    game: lobby.game.clone(),
                }));
                self.lobbies.insert(lobby_id, lobby);
            }
            Command::Join {
                request_id,
                lobby_id,
                user,
                password,
            } => {
                let lobby = self.lobby(&lobby_id)?;
                if lobby.member(&user.id).is_some() {
                    // Already in (another device, a retry): the snapshot.
                    Self::reply(out, request_id, lobby);
                    return Ok(());
                }
                if let Some(&until) = lobby.bans.get(&user.id) {
                    if until > now.unix_ms {
                        let left = (until - now.unix_ms + 999) / 1000;
                        return Err(failure(
                            Refusal::LobbyError,
                            format!("you were kicked from {lobby_id}; you may rejoin in {left} s"),
                        ));
                    }
                }
                let invited = lobby.invited.contains(&user.id);
                if lobby.visibility == Visibility::InviteOnly && !invited {
                    return Err(failure(
                        Refusal::AccessDenied,
                        format!("{lobby_id} is invite-only; ask a member for an invitation"),
                    ));
                }
                if lobby.locked {
                    return Err(failure(
                        Refusal::LobbyError,
                        format!("{lobby_id} is locked by its host"),
                    ));
                }
                if lobby.status == Status::InGame {
                    return Err(failure(
                        Refusal::LobbyError,
                        format!("{lobby_id} is in game"),
                    ));
                }
                if lobby.members.len() >= usize::from(lobby.max) {
                    return Err(failure(
                        Refusal::LobbyError,
                        format!(
                            "{lobby_id} is full ({} of {})",
                            lobby.members.len(),
                            lobby.max
                        ),
                    ));
                }
                if let Some(want) = &lobby.password {
                    if !invited && password.as_deref() != Some(want.as_str()) {
                        return Err(failure(
                            Refusal::LobbyError,
                            format!("wrong password for {lobby_id}"),
                        ));
                    }
                }
                lobby.invited.remove(&user.id);
                lobby.bans.retain(|_, until| *until > now.unix_ms);
                let version = lobby.bump(now);
                lobby.members.push(Member {
                    user: user.clone(),
                    ready: false,
                    connected: true,
                    team: None,
                    joined_at_ms: now.unix_ms,
                    grace_until: None,
                    since_version: version,
                });
                if lobby.host.is_none() {
                    lobby.host = Some(user.id.clone());
                }
                let was_ready = lobby.status == Status::Ready;
                if was_ready {
                    lobby.status = Status::Open;
                }
                // Every member hears it, the joiner's other devices too.
                let mut joined = lobby.event(EventKind::MemberJoined, now);
                joined.user = Some(user.clone());
                Self::broadcast(out, lobby, joined, None);
                if was_ready {
                    let reverted = lobby.event(EventKind::NotReady, now);
                    Self::broadcast(out, lobby, reverted, None);
                }
                Self::reply(out, request_id, lobby);
                out.push(Effect::LobbyMembership {
                    user: user.id.clone(),
                    lobby_id: lobby_id.clone(),
                    game: lobby.game.clone(),
                    joined: true,
                    since_version: version,
                });
                out.push(Effect::Domain(DomainEvent::LobbyMemberJoined {
                    lobby_id,
                    user: user.id,
                }));
            }
            Command::Leave {
                request_id,
                lobby_id,
                user,
            } => {
                let lobby = self.lobby(&lobby_id)?;
                if lobby.member(&user).is_none() {
                    return Err(failure(
                        Refusal::LobbyError,
                        format!("you are not in {lobby_id}"),
                    ));
                }
                out.push(Effect::Reply {
                    request_id,
                    reply: Reply::LobbyLeft {
                        lobby_id: lobby_id.clone(),
                    },
                });
                self.remove_member(now, &lobby_id, &user, "left", out);
            }
            Command::Superseded {
                lobby_id,
                user,
                since_version,
            } => {
                let current = self
                    .lobbies
                    .get(&lobby_id)
                    .and_then(|l| l.member(&user))
                    .is_some_and(|m| m.since_version == since_version);
                if current {
                    self.remove_member(
                        now,
                        &lobby_id,
                        &user,
                        "joined another lobby of this game",
                        out,
                    );
                }
            }
            Command::Ready {
                request_id,
                lobby_id,
                user,
                ready,
            } => {
                let lobby = self.lobby(&lobby_id)?;
                if lobby.status == Status::InGame {
                    return Err(failure(
                        Refusal::ReadyError,
                        format!("{lobby_id} is in game"),
                    ));
                }
                let Some(member) = lobby.member_mut(&user) else {
                    return Err(failure(
                        Refusal::ReadyError,
                        format!("you are not in {lobby_id}"),
                    ));
                };
                if member.ready == ready {
                    Self::reply(out, request_id, lobby);
                    return Ok(());
                }
                member.ready = ready;
                let author = member.user.clone();
                lobby.bump(now);
                let mut e = lobby.event(EventKind::MemberReady, now);
                e.user = Some(author);
                e.ready = ready;
                Self::broadcast(out, lobby, e, None);
                let all = lobby.all_ready();
                if all && lobby.status == Status::Open {
                    lobby.status = Status::Ready;
                    let e = lobby.event(EventKind::AllReady, now);
                    Self::broadcast(out, lobby, e, None);
                } else if !all && lobby.status == Status::Ready {
                    lobby.status = Status::Open;
                    let e = lobby.event(EventKind::NotReady, now);
                    Self::broadcast(out, lobby, e, None);
                }
                Self::reply(out, request_id, lobby);
            }
            Command::Kick {
                request_id,
                lobby_id,
                actor,
                target,
                reason,
            } => {
                let ban = self.limits.kick_ban;
                let lobby = self.lobby(&lobby_id)?;
                if !lobby.is_host(&actor) {
                    return Err(failure(
                        Refusal::NotHost,
                        format!("only the host of {lobby_id} may kick"),
                    ));
                }
                if actor == target {
                    return Err(failure(
                        Refusal::KickError,
                        "you cannot kick yourself; leave the lobby instead",
                    ));
                }
                let Some(member) = lobby.member(&target) else {
                    return Err(failure(
                        Refusal::KickError,
                        format!("{target} is not in {lobby_id}"),
                    ));
                };
                let author = member.user.clone();
                lobby.bans.retain(|_, until| *until > now.unix_ms);
                lobby
                    .bans
                    .insert(target.clone(), now.unix_ms + ban.as_millis() as i64);
                let reason = if reason.is_empty() {
                    "kicked by the host".to_string()
                } else {
                    reason
                };
                self.remove_member_as(
                    now,
                    &lobby_id,
                    &target,
                    EventKind::MemberKicked,
                    &reason,
                    out,
                );
                // The host stays, so the lobby does too.
                if let Some(lobby) = self.lobbies.get(&lobby_id) {
                    // The target hears it on every one of their sessions.
                    let mut kicked = lobby.event(EventKind::Kicked, now);
                    kicked.user = Some(author);
                    kicked.reason = Some(reason);
                    out.push(Effect::ToUser {
                        user: target,
                        event: Event::Lobby(Arc::new(kicked)),
                    });
                    Self::reply(out, request_id, lobby);
                }
            }
            Command::Update {
                request_id,
                lobby_id,
                actor,
                update,
            } => {
                let lobby = self.lobby(&lobby_id)?;
                if !lobby.is_host(&actor) {
                    return Err(failure(
                        Refusal::NotHost,
                        format!("only the host of {lobby_id} may change it"),
                    ));
                }
                if let Some(settings) = &update.settings {
                    check_settings(settings)?;
                }
                if let Some((min, max)) = update.capacity {
                    check_capacity(min, max)?;
                    if usize::from(max) < lobby.members.len() {
                        return Err(failure(
                            Refusal::LobbyError,
                            format!(
                                "{} members are in {lobby_id}; max cannot go below that",
                                lobby.members.len()
                            ),
                        ));
                    }
                }
                if update
                    .password
                    .as_ref()
                    .is_some_and(|p| p.as_ref().is_some_and(|p| p.len() > MAX_NAME))
                {
                    return Err(failure(
                        Refusal::InvalidArgument,
                        format!("password longer than {MAX_NAME} bytes"),
                    ));
                }
                if let Some(s) = update.settings {
                    lobby.settings = s;
                }
                if let Some((min, max)) = update.capacity {
                    lobby.min = min;
                    lobby.max = max;
                }
                if let Some(v) = update.visibility {
                    lobby.visibility = v;
                }
                if let Some(p) = update.password {
                    lobby.password = p;
                }
                if let Some(l) = update.locked {
                    lobby.locked = l;
                }
                // A capacity change can make (or unmake) an all-ready lobby.
                if lobby.status != Status::InGame {
                    lobby.status = if lobby.all_ready() {
                        Status::Ready
                    } else {
                        Status::Open
                    };
                }
                lobby.bump(now);
                let mut e = lobby.event(EventKind::Updated, now);
                e.snapshot = Some(lobby.snapshot());
                Self::broadcast(out, lobby, e, None);
                Self::reply(out, request_id, lobby);
                out.push(Effect::Domain(DomainEvent::LobbyUpdated {
                    lobby_id: lobby_id.clone(),
                }));
            }
            Command::TransferHost {
                request_id,
                lobby_id,
                actor,
                target,
            } => {
                let lobby = self.lobby(&lobby_id)?;
                if !lobby.is_host(&actor) {
                    return Err(failure(
                        Refusal::NotHost,
                        format!("only the host of {lobby_id} may hand over the host role"),
                    ));
                }
                let Some(member) = lobby.member(&target) else {
                    return Err(failure(
                        Refusal::LobbyError,
                        format!("{target} is not in {lobby_id}"),
                    ));
                };
                if lobby.is_host(&target) {
                    Self::reply(out, request_id, lobby);
                    return Ok(());
                }
                let author = member.user.clone();
                lobby.host = Some(target);
                lobby.bump(now);
                let mut e = lobby.event(EventKind::HostChanged, now);
                e.user = Some(author);
                Self::broadcast(out, lobby, e, None);
                Self::reply(out, request_id, lobby);
            }
            Command::Start {
                request_id,
                lobby_id,
                actor,
                connection,
            } => {
                let lobby = self.lobby(&lobby_id)?;
                if actor.as_ref().is_some_and(|a| !lobby.is_host(a)) {
                    return Err(failure(
                        Refusal::NotHost,
                        format!("only the host of {lobby_id} may start it"),
                    ));
                }
                if connection
                    .as_ref()
                    .is_some_and(|c| c.len() > MAX_CONNECTION)
                {
                    return Err(failure(
                        Refusal::InvalidArgument,
                        format!("connection payload longer than {MAX_CONNECTION} bytes"),
                    ));
                }
                if lobby.members.len() < usize::from(lobby.min) {
                    return Err(failure(
                        Refusal::LobbyError,
                        format!(
                            "{lobby_id} needs at least {} members to start; it has {}",
                            lobby.min,
                            lobby.members.len()
                        ),
                    ));
                }
                lobby.status = Status::InGame;
                lobby.connection = connection;
                lobby.bump(now);
                let mut e = lobby.event(EventKind::Started, now);
                e.snapshot = Some(lobby.snapshot());
                Self::broadcast(out, lobby, e, None);
                Self::reply(out, request_id, lobby);
                out.push(Effect::Domain(DomainEvent::LobbyUpdated {
                    lobby_id: lobby_id.clone(),
                }));
            }
            Command::Close {
                request_id,
                lobby_id,
                actor,
            } => {
                let lobby = self.lobby(&lobby_id)?;
                if let Some(actor) = &actor {
                    if !lobby.is_host(actor) {
                        return Err(failure(
                            Refusal::NotHost,
                            format!("only the host of {lobby_id} may close it"),
                        ));
                    }
                }
                out.push(Effect::Reply {
                    request_id,
                    reply: Reply::LobbyLeft {
                        lobby_id: lobby_id.clone(),
                    },
                });
                self.close(now, &lobby_id, out);
            }
            Command::Invite {
                request_id,
                lobby_id,
                actor,
                invitee,
            } => {
                let lobby = self.lobby(&lobby_id)?;
                if lobby.member(&actor).is_none() {
                    return Err(failure(
                        Refusal::AccessDenied,
                        format!("only members of {lobby_id} may invite"),
                    ));
                }
                if actor == invitee || lobby.member(&invitee).is_some() {
                    return Err(failure(
                        Refusal::LobbyError,
                        format!("{invitee} is already in {lobby_id}"),
                    ));
                }
                if lobby.invited.len() >= MAX_INVITED {
                    return Err(failure(
                        Refusal::LobbyError,
                        format!(
                            "{lobby_id} has {MAX_INVITED} pending invitations, the most allowed"
                        ),
                    ));
                }
                out.push(Effect::LobbyInvite {
                    request_id,
                    lobby_id: lobby_id.clone(),
                    game: lobby.game.clone(),
                    inviter: actor,
                    invitee,
                    friends_only: lobby.visibility != Visibility::Public,
                });
            }
            Command::Invited { lobby_id, invitee } => {
                if let Some(lobby) = self.lobbies.get_mut(&lobby_id) {
                    lobby.invited.insert(invitee);
                }
            }
            Command::Get {
                request_id,
                lobby_id,
                user,
            } => {
                let lobby = self.lobby(&lobby_id)?;
                let member = lobby.member(&user).is_some();
                if !member && lobby.visibility != Visibility::Public {
                    return Err(failure(
                        Refusal::AccessDenied,
                        format!("only members see {lobby_id}"),
                    ));
                }
                let mut snapshot = lobby.snapshot();
                if !member {
                    // The game server's address is for members only.
                    Arc::make_mut(&mut snapshot).connection = None;
                }
                out.push(Effect::Reply {
                    request_id,
                    reply: Reply::Lobby(snapshot),
                });
            }
            Command::Assign { lobby_id, players } => {
                let grace = now.mono + self.limits.assigned_grace;
                let lobby = self.lobby(&lobby_id)?;
                // A player named twice is added once (as `Create` does).
                let mut named = HashSet::new();
                let new: Vec<(Author, Option<u8>)> = players
                    .into_iter()
                    .filter(|(a, _)| lobby.member(&a.id).is_none() && named.insert(a.id.clone()))
                    .collect();
                if lobby.members.len() + new.len() > usize::from(lobby.max) {
                    return Err(failure(
                        Refusal::LobbyError,
                        format!(
                            "{lobby_id} has room for {} more, not {}",
                            usize::from(lobby.max).saturating_sub(lobby.members.len()),
                            new.len()
                        ),
                    ));
                }
                let mut added = Vec::new();
                for (user, team) in new {
                    let version = lobby.bump(now);
                    lobby.members.push(Member {
                        user: user.clone(),
                        ready: false,
                        connected: false,
                        team,
                        joined_at_ms: now.unix_ms,
                        grace_until: Some(grace),
                        since_version: version,
                    });
                    if lobby.status == Status::Ready {
                        lobby.status = Status::Open;
                    }
                    let mut joined = lobby.event(EventKind::MemberJoined, now);
                    joined.user = Some(user.clone());
                    Self::broadcast(out, lobby, joined, None);
                    added.push((user.id, version));
                }
                let game = lobby.game.clone();
                Self::reply(out, 0, lobby);
                for (user, version) in added {
                    self.graces.insert((grace, lobby_id.clone(), user.clone()));
                    out.push(Effect::LobbyMembership {
                        user: user.clone(),
                        lobby_id: lobby_id.clone(),
                        game: game.clone(),
                        joined: true,
                        since_version: version,
                    });
                    out.push(Effect::Domain(DomainEvent::LobbyMemberJoined {
                        lobby_id: lobby_id.clone(),
                        user,
                    }));
                }
            }
            Command::Presence {
                lobby_id,
                user,
                online,
            } => {
                let grace = self.limits.grace;
                let Some(lobby) = self.lobbies.get_mut(&lobby_id) else {
                    return Ok(());
                };
                let Some(member) = lobby.member_mut(&user) else {
                    return Ok(());
                };
                if member.connected == online {
                    return Ok(());
                }
                member.connected = online;
                member.grace_until = (!online).then(|| now.mono + grace);
                if let Some(at) = member.grace_until {
                    self.graces.insert((at, lobby_id.clone(), user.clone()));
                }
                let author = member.user.clone();
                lobby.bump(now);
                let kind = if online {
                    EventKind::MemberReconnected
                } else {
                    EventKind::MemberDisconnected
                };
                let mut e = lobby.event(kind, now);
                e.user = Some(author);
                Self::broadcast(out, lobby, e, None);
            }
        }
        Ok(())
    }

    fn remove_member(
        &mut self,
        now: Now,
        lobby_id: &Arc<str>,
        user: &str,
        reason: &str,
        out: &mut Vec<Effect>,
    ) {
        self.remove_member_as(now, lobby_id, user, EventKind::MemberLeft, reason, out);
    }

    /// Takes `user` out of a lobby: tells the rest, passes the host role
    /// on, re-evaluates readiness, and closes the lobby when it is empty.
    fn remove_member_as(
        &mut self,
        now: Now,
        lobby_id: &Arc<str>,
        user: &str,
        kind: EventKind,
        reason: &str,
        out: &mut Vec<Effect>,
    ) {
        let Some(lobby) = self.lobbies.get_mut(lobby_id) else {
            return;
        };
        let Some(at) = lobby.members.iter().position(|m| &*m.user.id == user) else {
            return;
        };
        let gone = lobby.members.remove(at);
        lobby.bump(now);
        out.push(Effect::LobbyMembership {
            user: gone.user.id.clone(),
            lobby_id: lobby_id.clone(),
            game: lobby.game.clone(),
            joined: false,
            since_version: gone.since_version,
        });
        out.push(Effect::Domain(DomainEvent::LobbyMemberLeft {
            lobby_id: lobby_id.clone(),
            user: gone.user.id.clone(),
        }));
        if lobby.members.is_empty() {
            if kind == EventKind::MemberLeft {
                // The last one out hears the lobby close.
                let mut e = lobby.event(EventKind::Closed, now);
                e.version += 1;
                e.reason = Some(reason.to_string());
                out.push(Effect::ToUser {
                    user: gone.user.id.clone(),
                    event: Event::Lobby(Arc::new(e)),
                });
            }
            self.close(now, lobby_id, out);
            return;
        }
        let mut e = lobby.event(kind, now);
        e.user = Some(gone.user.clone());
        e.reason = Some(reason.to_string());
        if kind == EventKind::MemberLeft {
            // The one who left hears it too, on every device (a kicked
            // user hears `Kicked` instead).
            out.push(Effect::ToUser {
                user: gone.user.id.clone(),
                event: Event::Lobby(Arc::new(e.clone())),
            });
        }
        Self::broadcast(out, lobby, e, None);
        if lobby.is_host(user) {
            // The member present longest who is here now; else the longest.
            let next = lobby
                .members
                .iter()
                .find(|m| m.connected)
                .unwrap_or(&lobby.members[0])
                .user
                .clone();
            lobby.host = Some(next.id.clone());
            lobby.bump(now);
            let mut e = lobby.event(EventKind::HostChanged, now);
            e.user = Some(next);
            Self::broadcast(out, lobby, e, None);
        }
        if lobby.status == Status::Ready && !lobby.all_ready() {
            lobby.status = Status::Open;
            let e = lobby.event(EventKind::NotReady, now);
            Self::broadcast(out, lobby, e, None);
        } else if lobby.status == Status::Open && lobby.all_ready() {
            lobby.status = Status::Ready;
            let e = lobby.event(EventKind::AllReady, now);
            Self::broadcast(out, lobby, e, None);
        }
    }

    /// Ends a lobby: every member hears `lobby:closed` and is let go.
    fn close(&mut self, now: Now, lobby_id: &Arc<str>, out: &mut Vec<Effect>) {
        let Some(mut lobby) = self.lobbies.remove(lobby_id) else {
            return;
        };
        lobby.bump(now);
        if !lobby.members.is_empty() {
            let e = lobby.event(EventKind::Closed, now);
            Self::broadcast(out, &lobby, e, None);
        }
        for m in &lobby.members {
            out.push(Effect::LobbyMembership {
                user: m.user.id.clone(),
                lobby_id: lobby_id.clone(),
                game: lobby.game.clone(),
                joined: false,
                since_version: m.since_version,
            });
        }
        out.push(Effect::Domain(DomainEvent::LobbyClosed {
            lobby_id: lobby_id.clone(),
        }));
    }
}

fn request_of(cmd: &Command) -> u64 {
    match cmd {
        Command::Create { request_id, .. }
        | Command::Join { request_id, .. }
        | Command::Leave { request_id, .. }
        | Command::Ready { request_id, .. }
        | Command::Kick { request_id, .. }
        | Command::Update { request_id, .. }
        | Command::TransferHost { request_id, .. }
        | Command::Start { request_id, .. }
        | Command::Close { request_id, .. }
        | Command::Invite { request_id, .. }
        | Command::Get { request_id, .. } => *request_id,
        Command::Invited { .. }
        | Command::Presence { .. }
        | Command::Superseded { .. }
        | Command::Assign { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct World {
        lobbies: Lobbies,
        base: Instant,
        at_ms: i64,
    }

    fn author(id: &str) -> Author {
        Author {
            id: UserId::from(id),
            username: Arc::from(id),
            display_name: Arc::from(id),
        }
    }

    fn spec(min: u16, max: u16, visibility: Visibility) -> LobbySpec {
        LobbySpec {
            game: "g".into(),
            mode: "m".into(),
            region: "eu".into(),
            min,
            max,
            visibility,
            password: None,
            chat: true,
            settings: BTreeMap::new(),
        }
    }

    impl World {
        fn new() -> Self {
            Self {
                lobbies: Lobbies::new(LobbyLimits::default()),
                base: Instant::now(),
                at_ms: 1_800_000_000_000,
            }
        }
        fn now(&self) -> Now {
            Now {
                mono: self.base + Duration::from_millis((self.at_ms - 1_800_000_000_000) as u64),
                unix_ms: self.at_ms,
            }
        }
        fn advance(&mut self, ms: i64) -> Vec<Effect> {
            self.at_ms += ms;
            let mut out = Vec::new();
            let now = self.now();
            self.lobbies.handle_timeout(now, &mut out);
            out
        }
        fn run(&mut self, cmd: Command) -> Vec<Effect> {
            let mut out = Vec::new();
            let now = self.now();
            self.lobbies.handle(now, cmd, &mut out);
            out
        }
        fn create(&mut self, host: &str, spec: LobbySpec) -> Vec<Effect> {
            self.run(Command::Create {
                request_id: 1,
                lobby_id: Arc::from("L"),
                host: Some(author(host)),
                spec,
                assigned: Vec::new(),
            })
        }
        fn join(&mut self, user: &str, password: Option<&str>) -> Vec<Effect> {
            self.run(Command::Join {
                request_id: 2,
                lobby_id: Arc::from("L"),
                user: author(user),
                password: password.map(String::from),
            })
        }
        fn leave(&mut self, user: &str) -> Vec<Effect> {
            self.run(Command::Leave {
                request_id: 3,
                lobby_id: Arc::from("L"),
                user: UserId::from(user),
            })
        }
        fn ready(&mut self, user: &str, ready: bool) -> Vec<Effect> {
            self.run(Command::Ready {
                request_id: 4,
                lobby_id: Arc::from("L"),
                user: UserId::from(user),
                ready,
            })
        }
        fn kick(&mut self, actor: &str, target: &str) -> Vec<Effect> {
            self.run(Command::Kick {
                request_id: 5,
                lobby_id: Arc::from("L"),
                actor: UserId::from(actor),
                target: UserId::from(target),
                reason: String::new(),
            })
        }
        fn state(&self) -> Option<Arc<Snapshot>> {
            self.lobbies.snapshot("L")
        }
        fn members(&self) -> Vec<String> {
            self.state()
                .map(|s| s.members.iter().map(|m| m.user.id.to_string()).collect())
                .unwrap_or_default()
        }
    }

    fn refusal(out: &[Effect]) -> Option<Refusal> {
        out.iter().find_map(|e| match e {
            Effect::Fail { failure, .. } => Some(failure.refusal),
            _ => None,
        })
    }

    fn kinds(out: &[Effect]) -> Vec<EventKind> {
        out.iter()
            .filter_map(|e| match e {
                Effect::ToUsers {
                    event: Event::Lobby(e),
                    ..
                }
                | Effect::ToUser {
                    event: Event::Lobby(e),
                    ..
                } => Some(e.kind),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn join_ready_all_ready_and_revert() {
        let mut w = World::new();
        w.create("host", spec(2, 3, Visibility::Public));
        let out = w.join("ann", None);
        assert_eq!(kinds(&out), vec![EventKind::MemberJoined]);
        assert!(
            matches!(
                out.iter().find(|e| matches!(e, Effect::ToUsers { .. })),
                Some(Effect::ToUsers { users, .. }) if users.len() == 2
            ),
            "every member hears the join, the joiner's other devices too"
        );
        w.ready("host", true);
        let out = w.ready("ann", true);
        assert_eq!(
            kinds(&out),
            vec![EventKind::MemberReady, EventKind::AllReady]
        );
        assert_eq!(w.state().unwrap().status, Status::Ready);
        let out = w.ready("ann", false);
        assert_eq!(
            kinds(&out),
            vec![EventKind::MemberReady, EventKind::NotReady]
        );
        assert_eq!(w.state().unwrap().status, Status::Open);
        assert_eq!(refusal(&w.ready("zed", true)), Some(Refusal::ReadyError));
    }

    #[test]
    fn joins_are_checked_and_refusals_change_nothing() {
        let mut w = World::new();
        let mut s = spec(1, 2, Visibility::Public);
        s.password = Some("pw".into());
        w.create("host", s);
        let before = w.state();
        assert_eq!(refusal(&w.join("ann", None)), Some(Refusal::LobbyError));
        assert_eq!(
            refusal(&w.join("ann", Some("nope"))),
            Some(Refusal::LobbyError)
        );
        assert_eq!(
            w.state(),
            before,
            "refusals change nothing, not even the version"
        );
        w.join("ann", Some("pw"));
        assert_eq!(
            refusal(&w.join("bob", Some("pw"))),
            Some(Refusal::LobbyError),
            "full"
        );
        let unknown = w.run(Command::Join {
            request_id: 2,
            lobby_id: Arc::from("nope"),
            user: author("bob"),
            password: None,
        });
        assert_eq!(refusal(&unknown), Some(Refusal::LobbyNotFound));
        let bad = w.run(Command::Create {
            request_id: 1,
            lobby_id: Arc::from("M"),
            host: Some(author("x")),
            spec: spec(3, 2, Visibility::Public),
            assigned: Vec::new(),
        });
        assert_eq!(refusal(&bad), Some(Refusal::InvalidArgument), "min > max");
    }

    #[test]
    fn invite_only_needs_an_invitation() {
        let mut w = World::new();
        w.create("host", spec(1, 4, Visibility::InviteOnly));
        assert_eq!(refusal(&w.join("ann", None)), Some(Refusal::AccessDenied));
        let out = w.run(Command::Invite {
            request_id: 6,
            lobby_id: Arc::from("L"),
            actor: UserId::from("host"),
            invitee: UserId::from("ann"),
        });
        assert!(matches!(
            &out[..],
            [Effect::LobbyInvite {
                friends_only: true,
                ..
            }]
        ));
        w.run(Command::Invited {
            lobby_id: Arc::from("L"),
            invitee: UserId::from("ann"),
        });
        assert_eq!(refusal(&w.join("ann", None)), None);
        let outsider = w.run(Command::Invite {
            request_id: 6,
            lobby_id: Arc::from("L"),
            actor: UserId::from("zed"),
            invitee: UserId::from("bob"),
        });
        assert_eq!(refusal(&outsider), Some(Refusal::AccessDenied));
    }

    #[test]
    fn host_leaves_and_the_longest_present_takes_over_then_the_last_closes_it() {
        let mut w = World::new();
        w.create("host", spec(1, 4, Visibility::Public));
        w.join("ann", None);
        w.join("bob", None);
        let out = w.leave("host");
        // The leaver's devices and the rest hear it, then the new host.
        assert_eq!(
            kinds(&out),
            vec![
                EventKind::MemberLeft,
                EventKind::MemberLeft,
                EventKind::HostChanged
            ]
        );
        assert_eq!(w.state().unwrap().host.as_deref(), Some("ann"));
        w.leave("ann");
        let out = w.leave("bob");
        assert!(
            w.state().is_none(),
            "the last member leaving closes the lobby"
        );
        assert!(out
            .iter()
            .any(|e| matches!(e, Effect::Domain(DomainEvent::LobbyClosed { .. }))));
    }

    #[test]
    fn kick_is_host_only_reaches_the_target_and_bans_a_rejoin() {
        let mut w = World::new();
        w.create("host", spec(1, 4, Visibility::Public));
        w.join("ann", None);
        assert_eq!(refusal(&w.kick("ann", "host")), Some(Refusal::NotHost));
        assert_eq!(refusal(&w.kick("host", "host")), Some(Refusal::KickError));
        assert_eq!(refusal(&w.kick("host", "zed")), Some(Refusal::KickError));
        let out = w.kick("host", "ann");
        assert_eq!(
            kinds(&out),
            vec![EventKind::MemberKicked, EventKind::Kicked]
        );
        assert!(out
            .iter()
            .any(|e| matches!(e, Effect::ToUser { user, .. } if &**user == "ann")));
        assert_eq!(w.members(), vec!["host"]);
        assert_eq!(refusal(&w.join("ann", None)), Some(Refusal::LobbyError));
        w.at_ms += LobbyLimits::default().kick_ban.as_millis() as i64 + 1;
        assert_eq!(refusal(&w.join("ann", None)), None, "the ban ends");
    }

    #[test]
    fn a_disconnected_member_keeps_the_slot_for_the_grace_period() {
        let mut w = World::new();
        w.create("host", spec(1, 4, Visibility::Public));
        w.join("ann", None);
        let presence = |online| Command::Presence {
            lobby_id: Arc::from("L"),
            user: UserId::from("ann"),
            online,
        };
        let out = w.run(presence(false));
        assert_eq!(kinds(&out), vec![EventKind::MemberDisconnected]);
        assert!(w.advance(59_000).is_empty());
        let out = w.run(presence(true));
        assert_eq!(kinds(&out), vec![EventKind::MemberReconnected]);
        assert!(w.advance(5_000).is_empty(), "back in time: still in");
        w.run(presence(false));
        w.advance(60_001);
        assert_eq!(w.members(), vec!["host"], "gone after the grace period");
    }

    #[test]
    fn update_and_start_are_host_only_and_bump_the_version() {
        let mut w = World::new();
        w.create("host", spec(1, 4, Visibility::Public));
        w.join("ann", None);
        let v = w.state().unwrap().version;
        let update = |actor: &str, update: LobbyUpdate| Command::Update {
            request_id: 7,
            lobby_id: Arc::from("L"),
            actor: UserId::from(actor),
            update,
        };
        let lock = LobbyUpdate {
            locked: Some(true),
            ..Default::default()
        };
        assert_eq!(
            refusal(&w.run(update("ann", lock.clone()))),
            Some(Refusal::NotHost)
        );
        let small = LobbyUpdate {
            capacity: Some((1, 1)),
            ..Default::default()
        };
        assert_eq!(
            refusal(&w.run(update("host", small))),
            Some(Refusal::LobbyError)
        );
        let big = LobbyUpdate {
            settings: Some((0..40).map(|i| (format!("k{i}"), "v".into())).collect()),
            ..Default::default()
        };
        assert_eq!(
            refusal(&w.run(update("host", big))),
            Some(Refusal::InvalidArgument)
        );
        assert_eq!(w.state().unwrap().version, v);
        let out = w.run(update("host", lock));
        assert_eq!(kinds(&out), vec![EventKind::Updated]);
        assert!(w.state().unwrap().locked && w.state().unwrap().version > v);
        assert_eq!(
            refusal(&w.join("bob", None)),
            Some(Refusal::LobbyError),
            "locked"
        );
        let start = w.run(Command::Start {
            request_id: 8,
            lobby_id: Arc::from("L"),
            actor: Some(UserId::from("host")),
            connection: Some("10.0.0.7:7777".into()),
        });
        assert_eq!(kinds(&start), vec![EventKind::Started]);
        let s = w.state().unwrap();
        assert_eq!(
            (s.status, s.connection.as_deref()),
            (Status::InGame, Some("10.0.0.7:7777"))
        );
    }

    #[test]
    fn a_stale_superseded_never_removes_a_newer_membership() {
        let mut w = World::new();
        w.create("host", spec(1, 4, Visibility::Public));
        let first = w.join("ann", None);
        let v1 = first
            .iter()
            .find_map(|e| match e {
                Effect::LobbyMembership { since_version, .. } => Some(*since_version),
                _ => None,
            })
            .unwrap();
        w.leave("ann");
        w.join("ann", None);
        w.run(Command::Superseded {
            lobby_id: Arc::from("L"),
            user: UserId::from("ann"),
            since_version: v1,
        });
        assert_eq!(
            w.members(),
            vec!["host", "ann"],
            "the stale message is ignored"
        );
    }

    #[test]
    fn empty_lobbies_are_refused_and_non_members_never_see_the_server_address() {
        let mut w = World::new();
        let empty = w.run(Command::Create {
            request_id: 1,
            lobby_id: Arc::from("E"),
            host: None,
            spec: spec(1, 2, Visibility::Public),
            assigned: Vec::new(),
        });
        assert_eq!(refusal(&empty), Some(Refusal::InvalidArgument));
        w.create("host", spec(1, 4, Visibility::Public));
        w.run(Command::Start {
            request_id: 8,
            lobby_id: Arc::from("L"),
            actor: None,
            connection: Some("10.0.0.7:7777".into()),
        });
        let get = |w: &mut World, user: &str| {
            let out = w.run(Command::Get {
                request_id: 9,
                lobby_id: Arc::from("L"),
                user: UserId::from(user),
            });
            match &out[0] {
                Effect::Reply {
                    reply: Reply::Lobby(l),
                    ..
                } => l.connection.clone(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(get(&mut w, "host").as_deref(), Some("10.0.0.7:7777"));
        assert_eq!(get(&mut w, "outsider"), None);
    }

    /// Found by `fuzz/fuzz_targets/lobbies.rs`: a backfill naming a player
    /// twice added them twice (two slots, two memberships for one user).
    #[test]
    fn an_assignment_naming_a_player_twice_adds_them_once() {
        let mut w = World::new();
        w.create("host", spec(2, 3, Visibility::Public));
        let out = w.run(Command::Assign {
            lobby_id: Arc::from("L"),
            players: vec![(author("ann"), None), (author("ann"), Some(1))],
        });
        assert_eq!(refusal(&out), None);
        assert_eq!(w.members(), vec!["host", "ann"]);
        let joined = out
            .iter()
            .filter(|e| matches!(e, Effect::LobbyMembership { joined: true, .. }))
            .count();
        assert_eq!(joined, 1, "one membership for one player: {out:?}");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8),
        Leave(u8),
        Ready(u8, bool),
        Kick(u8, u8),
        Transfer(u8, u8),
        Presence(u8, bool),
        Capacity(u8, u8),
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..8).prop_map(Op::Join),
            (0u8..8).prop_map(Op::Leave),
            (0u8..8, any::<bool>()).prop_map(|(u, r)| Op::Ready(u, r)),
            (0u8..8, 0u8..8).prop_map(|(a, b)| Op::Kick(a, b)),
            (0u8..8, 0u8..8).prop_map(|(a, b)| Op::Transfer(a, b)),
            (0u8..8, any::<bool>()).prop_map(|(u, o)| Op::Presence(u, o)),
            (0u8..6, 0u8..6).prop_map(|(a, b)| Op::Capacity(a, b)),
            (0u16..40_000).prop_map(Op::Wait),
        ]
    }

    proptest! {
        #[test]
        fn lobby_invariants_hold_under_any_sequence(ops in proptest::collection::vec(op(), 1..80)) {
            let mut w = World::new();
            w.create("u0", spec(1, 4, Visibility::Public));
            let mut last_version = w.state().unwrap().version;
            let ban = LobbyLimits::default().kick_ban.as_millis() as i64;
            let mut kicked: HashMap<String, i64> = HashMap::new();
            let user = |i: u8| format!("u{i}");
            for op in ops {
                let out = match op {
                    Op::Join(u) => w.join(&user(u), None),
                    Op::Leave(u) => w.leave(&user(u)),
                    Op::Ready(u, r) => w.ready(&user(u), r),
                    Op::Kick(a, b) => {
                        let out = w.kick(&user(a), &user(b));
                        if refusal(&out).is_none() {
                            kicked.insert(user(b), w.at_ms);
                        }
                        out
                    }
                    Op::Transfer(a, b) => w.run(Command::TransferHost {
                        request_id: 9,
                        lobby_id: Arc::from("L"),
                        actor: UserId::from(user(a)),
                        target: UserId::from(user(b)),
                    }),
                    Op::Presence(u, online) => w.run(Command::Presence {
                        lobby_id: Arc::from("L"),
                        user: UserId::from(user(u)),
                        online,
                    }),
                    Op::Capacity(a, b) => {
                        let host = w.state().and_then(|s| s.host.clone()).unwrap_or_else(|| UserId::from("u0"));
                        w.run(Command::Update {
                            request_id: 10,
                            lobby_id: Arc::from("L"),
                            actor: host,
                            update: LobbyUpdate { capacity: Some((u16::from(a), u16::from(b))), ..Default::default() },
                        })
                    }
                    Op::Wait(ms) => w.advance(i64::from(ms)),
                };
                let Some(s) = w.state() else {
                    // Closed: every later command is LOBBY_NOT_FOUND.
                    break;
                };
                prop_assert!(s.members.len() <= usize::from(s.max), "never over capacity");
                prop_assert!(!s.members.is_empty(), "an empty lobby is closed");
                let host = s.host.clone().expect("a host while not empty");
                prop_assert_eq!(s.members.iter().filter(|m| m.user.id == host).count(), 1, "exactly one host, a member");
                for (k, at) in &kicked {
                    if w.at_ms < at + ban {
                        prop_assert!(
                            s.members.iter().all(|m| &*m.user.id != k.as_str()),
                            "a kicked user is not a member while banned"
                        );
                    }
                }
                prop_assert!(s.version >= last_version, "versions never go back");
                if refusal(&out).is_none() && !kinds(&out).is_empty() {
                    prop_assert!(s.version > last_version, "every change bumps the version");
                }
                last_version = s.version;
            }
        }
    }
}
