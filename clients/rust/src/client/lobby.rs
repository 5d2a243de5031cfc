//! The lobby requests on [`Client`]: `lobby:create`, `join`, `leave`,
//! `ready`, `kick`, `update`, `transfer host`, `start`, `close`, `invite`,
//! `get` and the public list.
//!
//! Owns building each request; the replies decode in [`crate::lobby`] and the
//! request plumbing is the parent's. It never touches the connection.

use huddle_schema::encode::{LobbyCreateFields, LobbyListFields, LobbyUpdateFields};
use huddle_schema::wire::LobbyOpKind;

use super::Client;
use crate::error::ClientError;
use crate::lobby::{
    decode_lobby_invited, decode_lobby_left, decode_lobby_list_page, decode_lobby_reply, Lobby,
    LobbyChanges, LobbyListPage, NewLobby,
};

fn borrowed(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

impl Client {
    /// `lobby:create`: this user becomes host; with `chat`, the lobby chat
    /// (`lobby:<id>`) is joined for this session. Returns the new lobby.
    /// LOBBY_ERROR when the request does not fit (capacity, settings, …).
    pub async fn lobby_create(&self, new: &NewLobby) -> Result<Lobby, ClientError> {
        let fields = LobbyCreateFields {
            game: &new.game,
            mode: &new.mode,
            region: &new.region,
            min: new.min,
            max: new.max,
            visibility: new.visibility,
            password: &new.password,
            chat: new.chat,
            settings: borrowed(&new.settings),
        };
        let buf = self
            .request(|enc, id| enc.lobby_create(id, &fields))
            .await?;
        decode_lobby_reply(&buf)
    }

    /// `lobby:join` with `password` ("" for none). Returns the full state;
    /// the other members get MEMBER_JOINED. Refusals: LOBBY_NOT_FOUND,
    /// LOBBY_ERROR (full, locked, wrong password, not invited, …).
    pub async fn lobby_join(&self, lobby_id: &str, password: &str) -> Result<Lobby, ClientError> {
        let buf = self
            .request(|enc, id| enc.lobby_join(id, lobby_id, password))
            .await?;
        decode_lobby_reply(&buf)
    }

    /// `lobby:leave`: the others get MEMBER_LEFT (and HOST_CHANGED when this
    /// user was host).
    pub async fn lobby_leave(&self, lobby_id: &str) -> Result<(), ClientError> {
        let buf = self.lobby_op(LobbyOpKind::LEAVE, lobby_id, "", "").await?;
        decode_lobby_left(&buf)
    }

    /// Mark this user ready (or not); members get MEMBER_READY, and ALL_READY
    /// or NOT_READY when the lobby's status changes.
    pub async fn lobby_ready(&self, lobby_id: &str, ready: bool) -> Result<Lobby, ClientError> {
        let op = if ready {
            LobbyOpKind::READY
        } else {
            LobbyOpKind::UNREADY
        };
        let buf = self.lobby_op(op, lobby_id, "", "").await?;
        decode_lobby_reply(&buf)
    }

    /// Host only: remove `user_id` with a `reason` ("" for none). They get
    /// KICKED, the others MEMBER_KICKED.
    pub async fn lobby_kick(
        &self,
        lobby_id: &str,
        user_id: &str,
        reason: &str,
    ) -> Result<Lobby, ClientError> {
        let buf = self
            .lobby_op(LobbyOpKind::KICK, lobby_id, user_id, reason)
            .await?;
        decode_lobby_reply(&buf)
    }

    /// `lobby:update` (host only): change what `changes` sets; members get
    /// UPDATED with the new state.
    pub async fn lobby_update(
        &self,
        lobby_id: &str,
        changes: &LobbyChanges,
    ) -> Result<Lobby, ClientError> {
        let fields = LobbyUpdateFields {
            lobby_id,
            settings: changes.settings.as_deref().map(borrowed),
            capacity: changes.capacity,
            visibility: changes.visibility,
            password: changes.password.as_deref(),
            lock: changes.lock,
        };
        let buf = self
            .request(|enc, id| enc.lobby_update(id, &fields))
            .await?;
        decode_lobby_reply(&buf)
    }

    /// Host only: `user_id` (a member) becomes host; members get
    /// HOST_CHANGED.
    pub async fn lobby_transfer_host(
        &self,
        lobby_id: &str,
        user_id: &str,
    ) -> Result<Lobby, ClientError> {
        let buf = self
            .lobby_op(LobbyOpKind::TRANSFER_HOST, lobby_id, user_id, "")
            .await?;
        decode_lobby_reply(&buf)
    }

    /// Host only: the lobby goes IN_GAME and members get STARTED with
    /// `connection` (the game server's connection payload) in the state.
    pub async fn lobby_start(
        &self,
        lobby_id: &str,
        connection: &str,
    ) -> Result<Lobby, ClientError> {
        let buf = self
            .lobby_op(LobbyOpKind::START, lobby_id, "", connection)
            .await?;
        decode_lobby_reply(&buf)
    }

    /// Host only: close the lobby; members get CLOSED.
    pub async fn lobby_close(&self, lobby_id: &str) -> Result<(), ClientError> {
        let buf = self.lobby_op(LobbyOpKind::CLOSE, lobby_id, "", "").await?;
        decode_lobby_left(&buf)
    }

    /// Any member: invite `user_id`, who gets a notification and may then
    /// join (even an INVITE_ONLY lobby).
    pub async fn lobby_invite(&self, lobby_id: &str, user_id: &str) -> Result<(), ClientError> {
        let buf = self
            .lobby_op(LobbyOpKind::INVITE, lobby_id, user_id, "")
            .await?;
        decode_lobby_invited(&buf)
    }

    /// The lobby's state now (members, or anyone for a PUBLIC lobby): the
    /// way to re-sync after a gap in
    /// [`LobbyEvent::version`](crate::LobbyEvent::version).
    pub async fn lobby_get(&self, lobby_id: &str) -> Result<Lobby, ClientError> {
        let buf = self.lobby_op(LobbyOpKind::GET, lobby_id, "", "").await?;
        decode_lobby_reply(&buf)
    }

    async fn lobby_op(
        &self,
        op: LobbyOpKind,
        lobby_id: &str,
        user_id: &str,
        text: &str,
    ) -> Result<bytes::Bytes, ClientError> {
        self.request(|enc, id| enc.lobby_op(id, op, lobby_id, user_id, text))
            .await
    }

    /// A page of PUBLIC, joinable lobbies by id: "" matches any `game`,
    /// `mode` or `region`; `min_free` is the free slots needed; `after` is
    /// the previous page's `next_after` ("" for the first page); `limit` is
    /// 1..=100.
    pub async fn lobby_list(
        &self,
        game: &str,
        mode: &str,
        region: &str,
        min_free: u16,
        after: &str,
        limit: u16,
    ) -> Result<LobbyListPage, ClientError> {
        let fields = LobbyListFields {
            game,
            mode,
            region,
            min_free,
            after,
            limit,
        };
        let buf = self.request(|enc, id| enc.lobby_list(id, &fields)).await?;
        decode_lobby_list_page(&buf)
    }
}
