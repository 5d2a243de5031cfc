//! Lobbies: typed requests (`lobby:create`, `join`, `leave`, `ready`,
//! `kick`, `update`, `transfer host`, `start`, `close`, `invite`, `get` and
//! the public list) on [`Client`], the reply types, and the decoding of
//! `LobbyEvent` frames (`lobby:member:joined`, `lobby:ready`, `lobby:kicked`,
//! `lobby:update`, …) for the event stream.
//!
//! Owns the mapping between lobby frames and Rust types only; connection
//! handling stays in the driver. It must never panic on a frame from the
//! network: missing fields decode to defaults (empty strings, zeros, no team,
//! PUBLIC/OPEN), a reply without its lobby state decodes to an empty
//! [`Lobby`], and an event without a user or state leaves them `None`.

use huddle_schema::encode::{LobbyCreateFields, LobbyListFields, LobbyUpdateFields};
use huddle_schema::wire::{self, Frame, LobbyEventKind, LobbyOpKind, LobbyStatus, LobbyVisibility};

use crate::chat::{user, ChatUser};
use crate::client::{reply_frame, unexpected, Client, Event};
use crate::error::ClientError;

/// One member of a [`Lobby`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyMember {
    pub user: ChatUser,
    pub ready: bool,
    /// False while the member's sessions are gone and the grace period runs.
    pub connected: bool,
    /// `None` when no team was assigned (or the wire value is out of range).
    pub team: Option<u8>,
    pub joined_at_ms: i64,
}

/// A lobby's full state, as [`Client::lobby_get`] and most lobby requests
/// return it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lobby {
    pub id: String,
    pub game: String,
    pub mode: String,
    pub region: String,
    pub min: u16,
    pub max: u16,
    pub visibility: LobbyVisibility,
    pub has_password: bool,
    /// The lobby has a chat, `lobby:<id>`.
    pub chat: bool,
    /// No one else may join.
    pub locked: bool,
    pub status: LobbyStatus,
    /// The host's user id.
    pub host: String,
    /// In joining order; the host role passes to the first on leave.
    pub members: Vec<LobbyMember>,
    /// Game-defined key/value pairs, in the order the server sent them.
    pub settings: Vec<(String, String)>,
    /// The game server's connection payload once started ("" before).
    pub connection: String,
    /// Bumped on every change; [`LobbyEvent::version`] carries it.
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One row of a [`LobbyListPage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbySummary {
    pub id: String,
    pub game: String,
    pub mode: String,
    pub region: String,
    /// Members now.
    pub members: u16,
    pub max: u16,
    pub has_password: bool,
    pub status: LobbyStatus,
}

/// A page of [`Client::lobby_list`], by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyListPage {
    pub lobbies: Vec<LobbySummary>,
    /// Pass as `after` for the next page; "" when this is the last one.
    pub next_after: String,
}

/// What [`Client::lobby_create`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLobby {
    pub game: String,
    pub mode: String,
    pub region: String,
    /// Members needed before the lobby can be READY.
    pub min: u16,
    pub max: u16,
    pub visibility: LobbyVisibility,
    /// "" for none.
    pub password: String,
    /// Create the lobby chat (`lobby:<id>`) and join it for this session.
    pub chat: bool,
    /// At most 32 keys and 4096 bytes in all.
    pub settings: Vec<(String, String)>,
}

impl NewLobby {
    /// A PUBLIC lobby without a password or settings, with chat.
    pub fn new(
        game: impl Into<String>,
        mode: impl Into<String>,
        region: impl Into<String>,
        min: u16,
        max: u16,
    ) -> Self {
        Self {
            game: game.into(),
            mode: mode.into(),
            region: region.into(),
            min,
            max,
            visibility: LobbyVisibility::PUBLIC,
            password: String::new(),
            chat: true,
            settings: Vec::new(),
        }
    }
}

/// What [`Client::lobby_update`] changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LobbyChanges {
    /// Replaces every setting.
    pub settings: Option<Vec<(String, String)>>,
    /// `(min, max)`.
    pub capacity: Option<(u16, u16)>,
    pub visibility: Option<LobbyVisibility>,
    /// `Some("")` removes the password.
    pub password: Option<String>,
    /// `Some(true)` locks the lobby, `Some(false)` unlocks it.
    pub lock: Option<bool>,
}

/// One `LobbyEvent`, sent to every session of every member (and to a kicked
/// user's sessions). What it means depends on `kind`:
/// - MEMBER_JOINED (`lobby:member:joined`), MEMBER_LEFT
///   (`lobby:member:left`), MEMBER_KICKED, MEMBER_DISCONNECTED and
///   MEMBER_RECONNECTED: `user` is the member;
/// - HOST_CHANGED (`lobby:host:changed`): `user` is the new host;
/// - MEMBER_READY (`lobby:member:ready`): `user` and `ready`;
/// - ALL_READY (`lobby:ready`): every member is ready; NOT_READY: back to
///   OPEN;
/// - KICKED (`lobby:kicked`): this user was kicked, `reason` says why;
/// - UPDATED (`lobby:update`) and STARTED: `lobby` holds the new state (with
///   the connection payload once started);
/// - CLOSED: the lobby is gone.
///
/// Every change bumps `version`: when an event's version is not one more than
/// the last one seen, events were missed — call [`Client::lobby_get`] for a
/// snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyEvent {
    pub lobby_id: String,
    pub version: u64,
    pub kind: LobbyEventKind,
    /// The member the event is about, when it is about one.
    pub user: Option<ChatUser>,
    pub ready: bool,
    pub reason: String,
    /// The state, for the kinds that carry it (boxed to keep [`Event`]
    /// small).
    pub lobby: Option<Box<Lobby>>,
    pub at_ms: i64,
}

fn settings<'a>(
    v: Option<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<wire::Setting<'a>>>>,
) -> Vec<(String, String)> {
    v.map(|v| {
        v.iter()
            .map(|s| {
                (
                    s.key().unwrap_or_default().to_owned(),
                    s.value().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

fn member(m: wire::LobbyMember<'_>) -> LobbyMember {
    LobbyMember {
        user: user(m.user()),
        ready: m.ready(),
        connected: m.connected(),
        team: u8::try_from(m.team()).ok(),
        joined_at_ms: m.joined_at_ms(),
    }
}

fn lobby(l: wire::LobbyState<'_>) -> Lobby {
    Lobby {
        id: l.id().unwrap_or_default().to_owned(),
        game: l.game().unwrap_or_default().to_owned(),
        mode: l.mode().unwrap_or_default().to_owned(),
        region: l.region().unwrap_or_default().to_owned(),
        min: l.min(),
        max: l.max(),
        visibility: l.visibility(),
        has_password: l.has_password(),
        chat: l.chat(),
        locked: l.locked(),
        status: l.status(),
        host: l.host().unwrap_or_default().to_owned(),
        members: l
            .members()
            .map(|v| v.iter().map(member).collect())
            .unwrap_or_default(),
        settings: settings(l.settings()),
        connection: l.connection().unwrap_or_default().to_owned(),
        version: l.version(),
        created_at_ms: l.created_at_ms(),
        updated_at_ms: l.updated_at_ms(),
    }
}

fn summary(s: wire::LobbySummary<'_>) -> LobbySummary {
    LobbySummary {
        id: s.id().unwrap_or_default().to_owned(),
        game: s.game().unwrap_or_default().to_owned(),
        mode: s.mode().unwrap_or_default().to_owned(),
        region: s.region().unwrap_or_default().to_owned(),
        members: s.members(),
        max: s.max(),
        has_password: s.has_password(),
        status: s.status(),
    }
}

/// The lobby event a server frame carries, if it is one. `seq` is the
/// frame's sequence number.
pub(crate) fn lobby_event(frame: &Frame<'_>, seq: u64) -> Option<Event> {
    let e = frame.body_as_lobby_event()?;
    Some(Event::Lobby {
        event: LobbyEvent {
            lobby_id: e.lobby_id().unwrap_or_default().to_owned(),
            version: e.version(),
            kind: e.kind(),
            user: e.user().map(|u| user(Some(u))),
            ready: e.ready(),
            reason: e.reason().unwrap_or_default().to_owned(),
            lobby: e.lobby().map(|l| Box::new(lobby(l))),
            at_ms: e.at_ms(),
        },
        seq,
    })
}

pub(crate) fn decode_lobby_reply(buf: &[u8]) -> Result<Lobby, ClientError> {
    let frame = reply_frame(buf)?;
    let r = frame
        .body_as_lobby_reply()
        .ok_or_else(|| unexpected(&frame, "LobbyReply"))?;
    Ok(r.lobby().map(lobby).unwrap_or_default())
}

pub(crate) fn decode_lobby_left(buf: &[u8]) -> Result<(), ClientError> {
    let frame = reply_frame(buf)?;
    frame
        .body_as_lobby_left()
        .map(|_| ())
        .ok_or_else(|| unexpected(&frame, "LobbyLeft"))
}

pub(crate) fn decode_lobby_invited(buf: &[u8]) -> Result<(), ClientError> {
    let frame = reply_frame(buf)?;
    frame
        .body_as_lobby_invited()
        .map(|_| ())
        .ok_or_else(|| unexpected(&frame, "LobbyInvited"))
}

pub(crate) fn decode_lobby_list_page(buf: &[u8]) -> Result<LobbyListPage, ClientError> {
    let frame = reply_frame(buf)?;
    let page = frame
        .body_as_lobby_list_page()
        .ok_or_else(|| unexpected(&frame, "LobbyListPage"))?;
    Ok(LobbyListPage {
        lobbies: page
            .lobbies()
            .map(|v| v.iter().map(summary).collect())
            .unwrap_or_default(),
        next_after: page.next_after().unwrap_or_default().to_owned(),
    })
}

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
    /// way to re-sync after a gap in [`LobbyEvent::version`].
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

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_schema::encode::{
        LobbyEventFields, LobbyStateFields, LobbySummaryFields, MemberFields, UserFields,
    };
    use huddle_schema::wire::ErrorCode;
    use huddle_schema::{stamp_seq, verify_frame, Encoder, EventFrame};

    /// Decodes an event frame as the driver does, with `seq` stamped in.
    fn event(frame: EventFrame, seq: u64) -> Option<Event> {
        let mut bytes = frame.bytes.to_vec();
        if let Some(at) = frame.seq_at {
            stamp_seq(&mut bytes, at, seq);
        }
        let frame = verify_frame(&bytes, 1 << 20).unwrap();
        lobby_event(&frame, frame.seq())
    }

    const ALICE: UserFields<'static> = UserFields {
        id: "u-alice",
        username: "alice",
        display_name: "Alice",
    };
    const BOB: UserFields<'static> = UserFields {
        id: "u-bob",
        username: "bob",
        display_name: "Bob",
    };

    fn chat_user(u: UserFields<'_>) -> ChatUser {
        ChatUser {
            id: u.id.into(),
            username: u.username.into(),
            display_name: u.display_name.into(),
        }
    }

    fn sample_fields() -> LobbyStateFields<'static> {
        LobbyStateFields {
            id: "l-1",
            game: "arena",
            mode: "2v2",
            region: "eu",
            min: 2,
            max: 4,
            visibility: LobbyVisibility::PRIVATE,
            has_password: true,
            chat: true,
            locked: false,
            status: LobbyStatus::IN_GAME,
            host: "u-alice",
            members: vec![
                MemberFields {
                    user: ALICE,
                    ready: true,
                    connected: true,
                    team: 1,
                    joined_at_ms: 100,
                },
                MemberFields {
                    user: BOB,
                    ready: false,
                    connected: false,
                    team: -1,
                    joined_at_ms: 200,
                },
            ],
            settings: vec![("map", "dust"), ("rounds", "")],
            connection: "10.0.0.1:7777?t=abc",
            version: 7,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_500,
        }
    }

    fn sample_lobby() -> Lobby {
        Lobby {
            id: "l-1".into(),
            game: "arena".into(),
            mode: "2v2".into(),
            region: "eu".into(),
            min: 2,
            max: 4,
            visibility: LobbyVisibility::PRIVATE,
            has_password: true,
            chat: true,
            locked: false,
            status: LobbyStatus::IN_GAME,
            host: "u-alice".into(),
            members: vec![
                LobbyMember {
                    user: chat_user(ALICE),
                    ready: true,
                    connected: true,
                    team: Some(1),
                    joined_at_ms: 100,
                },
                LobbyMember {
                    user: chat_user(BOB),
                    ready: false,
                    connected: false,
                    team: None,
                    joined_at_ms: 200,
                },
            ],
            settings: vec![
                ("map".into(), "dust".into()),
                ("rounds".into(), String::new()),
            ],
            connection: "10.0.0.1:7777?t=abc".into(),
            version: 7,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_500,
        }
    }

    #[test]
    fn decodes_lobby_replies() {
        let mut enc = Encoder::new();
        let buf = enc.lobby_reply(3, &sample_fields());
        assert_eq!(decode_lobby_reply(&buf).unwrap(), sample_lobby());

        let err = enc.error(3, ErrorCode::LOBBY_NOT_FOUND, "no such lobby", false, false);
        assert_eq!(
            decode_lobby_reply(&err).unwrap_err(),
            ClientError::Server {
                code: ErrorCode::LOBBY_NOT_FOUND,
                message: "no such lobby".into(),
                retryable: false,
            }
        );
        let wrong = enc.lobby_left(3, "l-1");
        assert!(matches!(
            decode_lobby_reply(&wrong),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            decode_lobby_reply(b"garbage"),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn out_of_range_teams_are_none() {
        let mut enc = Encoder::new();
        let mut fields = sample_fields();
        fields.members[0].team = 0;
        fields.members[1].team = 300;
        let mut third = fields.members[0];
        third.team = -5;
        fields.members.push(third);
        let lobby = decode_lobby_reply(&enc.lobby_reply(1, &fields)).unwrap();
        let teams: Vec<_> = lobby.members.iter().map(|m| m.team).collect();
        assert_eq!(teams, vec![Some(0), None, None]);
    }

    #[test]
    fn missing_fields_decode_to_defaults() {
        // Built by hand: the schema encoder always sets these fields.
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let setting = wire::Setting::create(&mut fbb, &wire::SettingArgs::default());
        let settings = fbb.create_vector(&[setting]);
        let m = wire::LobbyMember::create(
            &mut fbb,
            &wire::LobbyMemberArgs {
                user: None,
                ..Default::default()
            },
        );
        let members = fbb.create_vector(&[m]);
        let state = wire::LobbyState::create(
            &mut fbb,
            &wire::LobbyStateArgs {
                members: Some(members),
                settings: Some(settings),
                ..Default::default()
            },
        );
        fbb.finish_minimal(state);
        let state = flatbuffers::root::<wire::LobbyState>(fbb.finished_data()).unwrap();
        assert_eq!(
            lobby(state),
            Lobby {
                members: vec![LobbyMember {
                    user: user(None),
                    ready: false,
                    connected: false,
                    team: None,
                    joined_at_ms: 0,
                }],
                settings: vec![(String::new(), String::new())],
                ..Lobby::default()
            }
        );

        // An empty state (or none, in a reply) decodes to the default lobby.
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let empty = wire::LobbyState::create(&mut fbb, &wire::LobbyStateArgs::default());
        fbb.finish_minimal(empty);
        let empty = flatbuffers::root::<wire::LobbyState>(fbb.finished_data()).unwrap();
        let l = lobby(empty);
        assert_eq!(l, Lobby::default());
        assert_eq!(l.visibility, LobbyVisibility::PUBLIC);
        assert_eq!(l.status, LobbyStatus::OPEN);
    }

    #[test]
    fn decodes_lobby_left_and_invited() {
        let mut enc = Encoder::new();
        assert_eq!(decode_lobby_left(&enc.lobby_left(4, "l-1")), Ok(()));
        assert_eq!(
            decode_lobby_invited(&enc.lobby_invited(5, "l-1", "u-bob")),
            Ok(())
        );
        let reply = enc.lobby_reply(6, &sample_fields());
        assert!(matches!(
            decode_lobby_left(&reply),
            Err(ClientError::Protocol(_))
        ));
        let left = enc.lobby_left(7, "l-1");
        assert!(matches!(
            decode_lobby_invited(&left),
            Err(ClientError::Protocol(_))
        ));
        let err = enc.error(8, ErrorCode::LOBBY_ERROR, "not host", false, false);
        assert!(matches!(
            decode_lobby_left(&err),
            Err(ClientError::Server {
                code: ErrorCode::LOBBY_ERROR,
                ..
            })
        ));
    }

    #[test]
    fn decodes_lobby_list_pages() {
        let mut enc = Encoder::new();
        let rows = [
            LobbySummaryFields {
                id: "l-1",
                game: "arena",
                mode: "2v2",
                region: "eu",
                members: 3,
                max: 4,
                has_password: false,
                status: LobbyStatus::OPEN,
            },
            LobbySummaryFields {
                id: "l-2",
                game: "arena",
                mode: "ffa",
                region: "us",
                members: 1,
                max: 8,
                has_password: true,
                status: LobbyStatus::READY,
            },
        ];
        let buf = enc.lobby_list_page(9, &rows, "l-2");
        assert_eq!(
            decode_lobby_list_page(&buf).unwrap(),
            LobbyListPage {
                lobbies: vec![
                    LobbySummary {
                        id: "l-1".into(),
                        game: "arena".into(),
                        mode: "2v2".into(),
                        region: "eu".into(),
                        members: 3,
                        max: 4,
                        has_password: false,
                        status: LobbyStatus::OPEN,
                    },
                    LobbySummary {
                        id: "l-2".into(),
                        game: "arena".into(),
                        mode: "ffa".into(),
                        region: "us".into(),
                        members: 1,
                        max: 8,
                        has_password: true,
                        status: LobbyStatus::READY,
                    },
                ],
                next_after: "l-2".into(),
            }
        );
        let empty = enc.lobby_list_page(10, &[], "");
        assert_eq!(
            decode_lobby_list_page(&empty).unwrap(),
            LobbyListPage {
                lobbies: vec![],
                next_after: String::new(),
            }
        );
        let wrong = enc.lobby_reply(11, &sample_fields());
        assert!(matches!(
            decode_lobby_list_page(&wrong),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn decodes_lobby_events() {
        let mut enc = Encoder::new();
        let frame = enc.lobby_event(&LobbyEventFields {
            lobby_id: "l-1",
            version: 8,
            kind: LobbyEventKind::MEMBER_READY,
            user: Some(BOB),
            ready: true,
            reason: "",
            lobby: None,
            at_ms: 1234,
        });
        assert!(frame.seq_at.is_some(), "lobby events are reliable");
        assert_eq!(
            event(frame, 21),
            Some(Event::Lobby {
                event: LobbyEvent {
                    lobby_id: "l-1".into(),
                    version: 8,
                    kind: LobbyEventKind::MEMBER_READY,
                    user: Some(chat_user(BOB)),
                    ready: true,
                    reason: String::new(),
                    lobby: None,
                    at_ms: 1234,
                },
                seq: 21,
            })
        );

        let frame = enc.lobby_event(&LobbyEventFields {
            lobby_id: "l-1",
            version: 7,
            kind: LobbyEventKind::STARTED,
            user: None,
            ready: false,
            reason: "",
            lobby: Some(sample_fields()),
            at_ms: 99,
        });
        assert_eq!(
            event(frame, 22),
            Some(Event::Lobby {
                event: LobbyEvent {
                    lobby_id: "l-1".into(),
                    version: 7,
                    kind: LobbyEventKind::STARTED,
                    user: None,
                    ready: false,
                    reason: String::new(),
                    lobby: Some(Box::new(sample_lobby())),
                    at_ms: 99,
                },
                seq: 22,
            })
        );

        let frame = enc.lobby_event(&LobbyEventFields {
            lobby_id: "l-1",
            version: 9,
            kind: LobbyEventKind::KICKED,
            user: Some(BOB),
            ready: false,
            reason: "afk",
            lobby: None,
            at_ms: 5,
        });
        let Some(Event::Lobby { event: e, seq }) = event(frame, 23) else {
            panic!("not a lobby event");
        };
        assert_eq!(seq, 23);
        assert_eq!(e.kind, LobbyEventKind::KICKED);
        assert_eq!(e.reason, "afk");
    }

    #[test]
    fn other_frames_are_not_lobby_events() {
        let mut enc = Encoder::new();
        assert_eq!(event(enc.echo_event("u", b"x", true), 1), None);
        assert_eq!(
            event(enc.friend_event("u", wire::Relation::FRIEND, 1), 2),
            None
        );
        let reply = enc.lobby_reply(1, &sample_fields());
        let frame = verify_frame(&reply, 1 << 20).unwrap();
        assert_eq!(lobby_event(&frame, 0), None);
    }

    #[test]
    fn new_lobby_defaults() {
        let n = NewLobby::new("arena", "2v2", "eu", 2, 4);
        assert_eq!(n.visibility, LobbyVisibility::PUBLIC);
        assert_eq!(n.password, "");
        assert!(n.chat);
        assert!(n.settings.is_empty());
        assert_eq!(LobbyChanges::default().lock, None);
    }
}
