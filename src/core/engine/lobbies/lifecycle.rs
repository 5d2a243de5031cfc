//! A lobby's life between joins: readiness, the host's kicks, changes and
//! hand-over, the start, closing on request, and snapshots for whoever may
//! see them. Part of [`Lobbies`]; never does I/O and never reads a clock.

use std::sync::Arc;

use super::super::{DomainEvent, Effect, Event, Failure, Now, Refusal, Reply, UserId};
use super::{
    check_capacity, check_settings, failure, EventKind, Lobbies, LobbyUpdate, Status, Visibility,
    MAX_CONNECTION, MAX_NAME,
};

impl Lobbies {
    /// A member (un)readies; the lobby becomes ready, or open again, as its
    /// members are.
    pub(super) fn ready(
        &mut self,
        now: Now,
        request_id: u64,
        lobby_id: Arc<str>,
        user: UserId,
        ready: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
        Ok(())
    }

    /// The host kicks a member, who may not rejoin for `kick_ban`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn kick(
        &mut self,
        now: Now,
        request_id: u64,
        lobby_id: Arc<str>,
        actor: UserId,
        target: UserId,
        reason: String,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
        Ok(())
    }

    /// The host changes settings, capacity, visibility, password or lock.
    pub(super) fn update(
        &mut self,
        now: Now,
        request_id: u64,
        lobby_id: Arc<str>,
        actor: UserId,
        update: LobbyUpdate,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
        Ok(())
    }

    /// The host hands the host role to another member.
    pub(super) fn transfer_host(
        &mut self,
        now: Now,
        request_id: u64,
        lobby_id: Arc<str>,
        actor: UserId,
        target: UserId,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
        Ok(())
    }

    /// The host (or an operator, or the game backend) starts the game.
    pub(super) fn start(
        &mut self,
        now: Now,
        request_id: u64,
        lobby_id: Arc<str>,
        actor: Option<UserId>,
        connection: Option<String>,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
        Ok(())
    }

    /// The host (or an operator) closes the lobby.
    pub(super) fn close_on_request(
        &mut self,
        now: Now,
        request_id: u64,
        lobby_id: Arc<str>,
        actor: Option<UserId>,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
        Ok(())
    }

    /// A lobby's state, for its members (and anyone, when it is public).
    pub(super) fn get(
        &mut self,
        request_id: u64,
        lobby_id: Arc<str>,
        user: UserId,
        out: &mut Vec<Effect>,
    ) -> Result<(), Failure> {
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
        Ok(())
    }
}
