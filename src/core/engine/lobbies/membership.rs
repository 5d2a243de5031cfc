//! Who is in a lobby: creating one with its first players, joins (with
//! their checks), leaving, invitations, the matchmaker's assignments,
//! presence and its grace period, and taking a member out (host hand-over,
//! readiness, closing the empty lobby). Part of [`Lobbies`]; never does I/O
//! and never reads a clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::super::chat::Author;
use super::super::{DomainEvent, Effect, Event, Failure, Now, Refusal, Reply, UserId};
use super::{
    check_spec, failure, EventKind, Lobbies, Lobby, LobbySpec, Member, Status, Visibility,
    MAX_INVITED, MAX_NAME,
};

impl Lobbies {
    /// A player creates a lobby and hosts it, or an operator or the
    /// matchmaker creates one with its players assigned.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create(
        &mut self,
        now: Now,
        request_id: u64,
        lobby_id: Arc<str>,
        host: Option<Author>,
        spec: LobbySpec,
        assigned: Vec<(Author, Option<u8>)>,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
        Ok(())
    }

    /// A user joins; bans, invitations, the lock, the status, room and the
    /// password are checked first.
    pub(super) fn join(
        &mut self,
        now: Now,
        request_id: u64,
        lobby_id: Arc<str>,
        user: Author,
        password: Option<String>,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
        Ok(())
    }

    /// A member leaves.
    pub(super) fn leave(
        &mut self,
        now: Now,
        request_id: u64,
        lobby_id: Arc<str>,
        user: UserId,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
        Ok(())
    }

    /// The user joined another lobby of this game: they leave this one if
    /// their membership is still the one that began at `since_version`.
    pub(super) fn superseded(
        &mut self,
        now: Now,
        lobby_id: Arc<str>,
        user: UserId,
        since_version: u64,
        out: &mut Vec<Effect>,
    ) {
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

    /// A member invites a user: checked here, then by the pair authority
    /// (see [`Effect::LobbyInvite`]).
    pub(super) fn invite(
        &mut self,
        request_id: u64,
        lobby_id: Arc<str>,
        actor: UserId,
        invitee: UserId,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
                format!("{lobby_id} has {MAX_INVITED} pending invitations, the most allowed"),
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
        Ok(())
    }

    /// The invitation passed the pair's checks: the invitee may join.
    pub(super) fn invited(&mut self, lobby_id: Arc<str>, invitee: UserId) {
        if let Some(lobby) = self.lobbies.get_mut(&lobby_id) {
            lobby.invited.insert(invitee);
        }
    }

    /// The matchmaker's backfill adds players with their teams, all or none.
    pub(super) fn assign(
        &mut self,
        now: Now,
        lobby_id: Arc<str>,
        players: Vec<(Author, Option<u8>)>,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
        let grace = now.mono + self.limits.assigned_grace;
        let lobby = self.lobby(&lobby_id)?;
        // A player named twice is added once (as `create` does).
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
        Ok(())
    }

    /// A member's user came online or went offline: the slot's grace period
    /// starts or ends.
    pub(super) fn presence(
        &mut self,
        now: Now,
        lobby_id: Arc<str>,
        user: UserId,
        online: bool,
        out: &mut Vec<Effect>,
    ) {
        let grace = self.limits.grace;
        let Some(lobby) = self.lobbies.get_mut(&lobby_id) else {
            return;
        };
        let Some(member) = lobby.member_mut(&user) else {
            return;
        };
        if member.connected == online {
            return;
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

    pub(super) fn remove_member(
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
    pub(super) fn remove_member_as(
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
    pub(super) fn close(&mut self, now: Now, lobby_id: &Arc<str>, out: &mut Vec<Effect>) {
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
