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
//!
//! This file holds the types, the queries, the timers and the dispatch;
//! who is in a lobby lives in `membership`, the rest of a lobby's life in
//! `lifecycle`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chat::Author;
use super::{Effect, Event, Failure, Now, Refusal, Reply, UserId};

mod lifecycle;
mod membership;

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

    /// The players of a party ticket for `game`: [`Lobbies::party`]'s
    /// players (host first), refused when the lobby is of another game.
    pub fn party_ticket(
        &self,
        lobby_id: &str,
        host: &str,
        game: &str,
    ) -> Result<Vec<Author>, Failure> {
        let (lobby_game, players) = self.party(lobby_id, host)?;
        if &*lobby_game != game {
            return Err(Failure::new(
                Refusal::LobbyError,
                format!("lobby {lobby_id} is a {lobby_game} lobby; it cannot queue for {game}"),
            ));
        }
        Ok(players)
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

    /// Hands a command to its method; a refusal comes back as `Err`, and
    /// then nothing changed.
    fn apply(&mut self, now: Now, cmd: Command, out: &mut Vec<Effect>) -> Result<(), Failure> {
        match cmd {
            Command::Create {
                request_id,
                lobby_id,
                host,
                spec,
                assigned,
            } => self.create(now, request_id, lobby_id, host, spec, assigned, out),
            Command::Join {
                request_id,
                lobby_id,
                user,
                password,
            } => self.join(now, request_id, lobby_id, user, password, out),
            Command::Leave {
                request_id,
                lobby_id,
                user,
            } => self.leave(now, request_id, lobby_id, user, out),
            Command::Superseded {
                lobby_id,
                user,
                since_version,
            } => {
                self.superseded(now, lobby_id, user, since_version, out);
                Ok(())
            }
            Command::Ready {
                request_id,
                lobby_id,
                user,
                ready,
            } => self.ready(now, request_id, lobby_id, user, ready, out),
            Command::Kick {
                request_id,
                lobby_id,
                actor,
                target,
                reason,
            } => self.kick(now, request_id, lobby_id, actor, target, reason, out),
            Command::Update {
                request_id,
                lobby_id,
                actor,
                update,
            } => self.update(now, request_id, lobby_id, actor, update, out),
            Command::TransferHost {
                request_id,
                lobby_id,
                actor,
                target,
            } => self.transfer_host(now, request_id, lobby_id, actor, target, out),
            Command::Start {
                request_id,
                lobby_id,
                actor,
                connection,
            } => self.start(now, request_id, lobby_id, actor, connection, out),
            Command::Close {
                request_id,
                lobby_id,
                actor,
            } => self.close_on_request(now, request_id, lobby_id, actor, out),
            Command::Invite {
                request_id,
                lobby_id,
                actor,
                invitee,
            } => self.invite(request_id, lobby_id, actor, invitee, out),
            Command::Invited { lobby_id, invitee } => {
                self.invited(lobby_id, invitee);
                Ok(())
            }
            Command::Get {
                request_id,
                lobby_id,
                user,
            } => self.get(request_id, lobby_id, user, out),
            Command::Assign { lobby_id, players } => self.assign(now, lobby_id, players, out),
            Command::Presence {
                lobby_id,
                user,
                online,
            } => {
                self.presence(now, lobby_id, user, online, out);
                Ok(())
            }
        }
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
mod tests;
