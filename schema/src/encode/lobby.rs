//! Encoders for lobby frames: requests, replies and the one `LobbyEvent`
//! (encoded once for every member). Same rules as the parent module.

use bytes::Bytes;
use flatbuffers::{ForwardsUOffset, Vector, WIPOffset};

use super::{Encoder, EventFrame, UserFields};
use crate::wire::{self, Body, LobbyEventKind, LobbyOpKind, LobbyStatus, LobbyVisibility};

/// One member in a [`LobbyStateFields`].
#[derive(Debug, Clone, Copy)]
pub struct MemberFields<'a> {
    /// Who the member is.
    pub user: UserFields<'a>,
    /// The member marked themselves ready.
    pub ready: bool,
    /// False while the member's sessions are gone (grace period).
    pub connected: bool,
    /// -1 without a team.
    pub team: i16,
    /// When they joined (Unix ms).
    pub joined_at_ms: i64,
}

/// A lobby's full state.
#[derive(Debug, Clone)]
pub struct LobbyStateFields<'a> {
    /// The lobby id.
    pub id: &'a str,
    /// The game it is for.
    pub game: &'a str,
    /// The game mode.
    pub mode: &'a str,
    /// The region it plays in.
    pub region: &'a str,
    /// Members needed before it can be READY.
    pub min: u16,
    /// Most members it takes.
    pub max: u16,
    /// Who may find and join it.
    pub visibility: LobbyVisibility,
    /// Joining takes a password.
    pub has_password: bool,
    /// The lobby has a chat, `lobby:<id>`.
    pub chat: bool,
    /// No one else may join.
    pub locked: bool,
    /// OPEN, READY, IN_GAME, …
    pub status: LobbyStatus,
    /// The host's user id.
    pub host: &'a str,
    /// In joining order.
    pub members: Vec<MemberFields<'a>>,
    /// Game-defined key/value pairs.
    pub settings: Vec<(&'a str, &'a str)>,
    /// The game server's connection payload once started ("" before).
    pub connection: &'a str,
    /// Bumped on every change.
    pub version: u64,
    /// When it was created (Unix ms).
    pub created_at_ms: i64,
    /// When it last changed (Unix ms).
    pub updated_at_ms: i64,
}

/// A `LobbyCreate` request.
#[derive(Debug, Clone)]
pub struct LobbyCreateFields<'a> {
    /// The game it is for.
    pub game: &'a str,
    /// The game mode.
    pub mode: &'a str,
    /// The region it plays in.
    pub region: &'a str,
    /// Members needed before it can be READY.
    pub min: u16,
    /// Most members it takes.
    pub max: u16,
    /// Who may find and join it.
    pub visibility: LobbyVisibility,
    /// "" for none.
    pub password: &'a str,
    /// Create the lobby chat and join it for this session.
    pub chat: bool,
    /// Game-defined key/value pairs.
    pub settings: Vec<(&'a str, &'a str)>,
}

/// A `LobbyUpdate` request; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default)]
pub struct LobbyUpdateFields<'a> {
    /// The lobby to change.
    pub lobby_id: &'a str,
    /// Replaces every setting.
    pub settings: Option<Vec<(&'a str, &'a str)>>,
    /// `(min, max)`.
    pub capacity: Option<(u16, u16)>,
    /// Who may find and join it.
    pub visibility: Option<LobbyVisibility>,
    /// `Some("")` removes the password.
    pub password: Option<&'a str>,
    /// Lock (`true`) or unlock (`false`) the lobby.
    pub lock: Option<bool>,
}

/// One row of a `LobbyListPage`.
#[derive(Debug, Clone, Copy)]
pub struct LobbySummaryFields<'a> {
    /// The lobby id.
    pub id: &'a str,
    /// The game it is for.
    pub game: &'a str,
    /// The game mode.
    pub mode: &'a str,
    /// The region it plays in.
    pub region: &'a str,
    /// Members now.
    pub members: u16,
    /// Most members it takes.
    pub max: u16,
    /// Joining takes a password.
    pub has_password: bool,
    /// Where the lobby stands (OPEN, READY, …).
    pub status: LobbyStatus,
}

/// A `LobbyList` request.
#[derive(Debug, Clone, Copy, Default)]
pub struct LobbyListFields<'a> {
    /// The game to list ("" for any).
    pub game: &'a str,
    /// The mode to list ("" for any).
    pub mode: &'a str,
    /// The region to list ("" for any).
    pub region: &'a str,
    /// Free slots a listed lobby must have.
    pub min_free: u16,
    /// The previous page's `next_after` ("" for the first page).
    pub after: &'a str,
    /// Most rows on the page (1..=100).
    pub limit: u16,
}

/// A `LobbyEvent`.
#[derive(Debug, Clone)]
pub struct LobbyEventFields<'a> {
    /// The lobby that changed.
    pub lobby_id: &'a str,
    /// The lobby's version after the change.
    pub version: u64,
    /// What happened.
    pub kind: LobbyEventKind,
    /// The member it is about, when it is about one.
    pub user: Option<UserFields<'a>>,
    /// For MEMBER_READY: ready or not.
    pub ready: bool,
    /// Why, for the kinds that say ("" otherwise).
    pub reason: &'a str,
    /// The state, for the kinds that carry it.
    pub lobby: Option<LobbyStateFields<'a>>,
    /// When it happened (Unix ms).
    pub at_ms: i64,
}

type Settings = WIPOffset<Vector<'static, ForwardsUOffset<wire::Setting<'static>>>>;

impl Encoder {
    fn settings(&mut self, settings: &[(&str, &str)]) -> Settings {
        let rows: Vec<_> = settings
            .iter()
            .map(|(k, v)| {
                let key = Some(self.fbb.create_string(k));
                let value = Some(self.fbb.create_string(v));
                wire::Setting::create(&mut self.fbb, &wire::SettingArgs { key, value })
            })
            .collect();
        self.fbb.create_vector(&rows)
    }

    fn lobby_state(&mut self, l: &LobbyStateFields<'_>) -> WIPOffset<wire::LobbyState<'static>> {
        let members: Vec<_> = l
            .members
            .iter()
            .map(|m| {
                let user = Some(self.chat_user(m.user));
                wire::LobbyMember::create(
                    &mut self.fbb,
                    &wire::LobbyMemberArgs {
                        user,
                        ready: m.ready,
                        connected: m.connected,
                        team: m.team,
                        joined_at_ms: m.joined_at_ms,
                    },
                )
            })
            .collect();
        let members = Some(self.fbb.create_vector(&members));
        let settings = Some(self.settings(&l.settings));
        let id = Some(self.fbb.create_string(l.id));
        let game = Some(self.fbb.create_string(l.game));
        let mode = Some(self.fbb.create_string(l.mode));
        let region = Some(self.fbb.create_string(l.region));
        let host = Some(self.fbb.create_string(l.host));
        let connection = (!l.connection.is_empty()).then(|| self.fbb.create_string(l.connection));
        wire::LobbyState::create(
            &mut self.fbb,
            &wire::LobbyStateArgs {
                id,
                game,
                mode,
                region,
                min: l.min,
                max: l.max,
                visibility: l.visibility,
                has_password: l.has_password,
                chat: l.chat,
                locked: l.locked,
                status: l.status,
                host,
                members,
                settings,
                connection,
                version: l.version,
                created_at_ms: l.created_at_ms,
                updated_at_ms: l.updated_at_ms,
            },
        )
    }

    /// `lobby:create` request.
    pub fn lobby_create(&mut self, request_id: u64, c: &LobbyCreateFields<'_>) -> Bytes {
        let settings = Some(self.settings(&c.settings));
        let game = Some(self.fbb.create_string(c.game));
        let mode = Some(self.fbb.create_string(c.mode));
        let region = Some(self.fbb.create_string(c.region));
        let password = (!c.password.is_empty()).then(|| self.fbb.create_string(c.password));
        let body = wire::LobbyCreate::create(
            &mut self.fbb,
            &wire::LobbyCreateArgs {
                game,
                mode,
                region,
                min: c.min,
                max: c.max,
                visibility: c.visibility,
                password,
                chat: c.chat,
                settings,
            },
        );
        self.finish_frame(request_id, 0, Body::LobbyCreate, body.as_union_value())
    }

    /// `lobby:join` request (`password` "" for none).
    pub fn lobby_join(&mut self, request_id: u64, lobby_id: &str, password: &str) -> Bytes {
        let lobby_id = Some(self.fbb.create_string(lobby_id));
        let password = (!password.is_empty()).then(|| self.fbb.create_string(password));
        let body =
            wire::LobbyJoin::create(&mut self.fbb, &wire::LobbyJoinArgs { lobby_id, password });
        self.finish_frame(request_id, 0, Body::LobbyJoin, body.as_union_value())
    }

    /// `lobby:update` request.
    pub fn lobby_update(&mut self, request_id: u64, u: &LobbyUpdateFields<'_>) -> Bytes {
        let settings = u.settings.as_ref().map(|s| self.settings(s));
        let lobby_id = Some(self.fbb.create_string(u.lobby_id));
        let password = u.password.map(|p| self.fbb.create_string(p));
        let (min, max) = u.capacity.unwrap_or((0, 0));
        let body = wire::LobbyUpdate::create(
            &mut self.fbb,
            &wire::LobbyUpdateArgs {
                lobby_id,
                set_settings: u.settings.is_some(),
                settings,
                min,
                max,
                set_visibility: u.visibility.is_some(),
                visibility: u.visibility.unwrap_or(LobbyVisibility::PUBLIC),
                set_password: u.password.is_some(),
                password,
                lock: match u.lock {
                    None => 0,
                    Some(true) => 1,
                    Some(false) => 2,
                },
            },
        );
        self.finish_frame(request_id, 0, Body::LobbyUpdate, body.as_union_value())
    }

    /// Every other lobby request: `user_id` and `text` as the op needs.
    pub fn lobby_op(
        &mut self,
        request_id: u64,
        op: LobbyOpKind,
        lobby_id: &str,
        user_id: &str,
        text: &str,
    ) -> Bytes {
        let lobby_id = Some(self.fbb.create_string(lobby_id));
        let user_id = (!user_id.is_empty()).then(|| self.fbb.create_string(user_id));
        let text = (!text.is_empty()).then(|| self.fbb.create_string(text));
        let body = wire::LobbyOp::create(
            &mut self.fbb,
            &wire::LobbyOpArgs {
                op,
                lobby_id,
                user_id,
                text,
            },
        );
        self.finish_frame(request_id, 0, Body::LobbyOp, body.as_union_value())
    }

    /// The reply carrying a lobby's full state (create, join, ready, get, …).
    pub fn lobby_reply(&mut self, request_id: u64, l: &LobbyStateFields<'_>) -> Bytes {
        let lobby = Some(self.lobby_state(l));
        let body = wire::LobbyReply::create(&mut self.fbb, &wire::LobbyReplyArgs { lobby });
        self.finish_reply(request_id, Body::LobbyReply, body.as_union_value())
    }

    /// The reply to leaving (or closing) a lobby.
    pub fn lobby_left(&mut self, request_id: u64, lobby_id: &str) -> Bytes {
        let lobby_id = Some(self.fbb.create_string(lobby_id));
        let body = wire::LobbyLeft::create(&mut self.fbb, &wire::LobbyLeftArgs { lobby_id });
        self.finish_reply(request_id, Body::LobbyLeft, body.as_union_value())
    }

    /// The reply to an invite.
    pub fn lobby_invited(&mut self, request_id: u64, lobby_id: &str, user_id: &str) -> Bytes {
        let lobby_id = Some(self.fbb.create_string(lobby_id));
        let user_id = Some(self.fbb.create_string(user_id));
        let body = wire::LobbyInvited::create(
            &mut self.fbb,
            &wire::LobbyInvitedArgs { lobby_id, user_id },
        );
        self.finish_reply(request_id, Body::LobbyInvited, body.as_union_value())
    }

    /// A request for a page of public, joinable lobbies.
    pub fn lobby_list(&mut self, request_id: u64, q: &LobbyListFields<'_>) -> Bytes {
        let game = Some(self.fbb.create_string(q.game));
        let mode = Some(self.fbb.create_string(q.mode));
        let region = Some(self.fbb.create_string(q.region));
        let after = Some(self.fbb.create_string(q.after));
        let body = wire::LobbyList::create(
            &mut self.fbb,
            &wire::LobbyListArgs {
                game,
                mode,
                region,
                min_free: q.min_free,
                after,
                limit: q.limit,
            },
        );
        self.finish_frame(request_id, 0, Body::LobbyList, body.as_union_value())
    }

    /// The reply to a lobby list request; `next_after` "" on the last page.
    pub fn lobby_list_page(
        &mut self,
        request_id: u64,
        rows: &[LobbySummaryFields<'_>],
        next_after: &str,
    ) -> Bytes {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                let id = Some(self.fbb.create_string(r.id));
                let game = Some(self.fbb.create_string(r.game));
                let mode = Some(self.fbb.create_string(r.mode));
                let region = Some(self.fbb.create_string(r.region));
                wire::LobbySummary::create(
                    &mut self.fbb,
                    &wire::LobbySummaryArgs {
                        id,
                        game,
                        mode,
                        region,
                        members: r.members,
                        max: r.max,
                        has_password: r.has_password,
                        status: r.status,
                    },
                )
            })
            .collect();
        let lobbies = Some(self.fbb.create_vector(&rows));
        let next_after = Some(self.fbb.create_string(next_after));
        let body = wire::LobbyListPage::create(
            &mut self.fbb,
            &wire::LobbyListPageArgs {
                lobbies,
                next_after,
            },
        );
        self.finish_reply(request_id, Body::LobbyListPage, body.as_union_value())
    }

    /// A lobby event, reliable, encoded once for every member.
    pub fn lobby_event(&mut self, e: &LobbyEventFields<'_>) -> EventFrame {
        let lobby = e.lobby.as_ref().map(|l| self.lobby_state(l));
        let user = e.user.map(|u| self.chat_user(u));
        let lobby_id = Some(self.fbb.create_string(e.lobby_id));
        let reason = (!e.reason.is_empty()).then(|| self.fbb.create_string(e.reason));
        let body = wire::LobbyEvent::create(
            &mut self.fbb,
            &wire::LobbyEventArgs {
                lobby_id,
                version: e.version,
                kind: e.kind,
                user,
                ready: e.ready,
                reason,
                lobby,
                at_ms: e.at_ms,
            },
        );
        self.finish_event(true, Body::LobbyEvent, body.as_union_value())
    }
}
