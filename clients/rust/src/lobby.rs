//! Lobbies: the reply and event types of the lobby requests
//! (`lobby:create`, `join`, `leave`, `ready`, `kick`, `update`, `transfer
//! host`, `start`, `close`, `invite`, `get` and the public list), which are
//! methods of [`Client`](crate::Client), and the decoding of lobby tables
//! and lobby replies.
//!
//! Owns the mapping between lobby tables and Rust types only. It sits below
//! the events and the client (the requests live in `client::lobby`, the
//! `LobbyEvent` decoding in `event::lobby`), so it must never refer to
//! either. It must never panic on a frame from the network: missing fields
//! decode to defaults (empty strings, zeros, no team, PUBLIC/OPEN) and a
//! reply without its lobby state decodes to an empty [`Lobby`].

use huddle_schema::wire::{self, LobbyEventKind, LobbyStatus, LobbyVisibility};

use crate::chat::{user, ChatUser};
use crate::error::ClientError;
use crate::reply::{reply_frame, unexpected};

/// One member of a [`Lobby`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyMember {
    /// Who the member is.
    pub user: ChatUser,
    /// The member marked themselves ready.
    pub ready: bool,
    /// False while the member's sessions are gone and the grace period runs.
    pub connected: bool,
    /// `None` when no team was assigned (or the wire value is out of range).
    pub team: Option<u8>,
    /// When they joined (Unix ms).
    pub joined_at_ms: i64,
}

/// A lobby's full state, as [`Client::lobby_get`](crate::Client::lobby_get)
/// and most lobby requests return it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lobby {
    /// The lobby id.
    pub id: String,
    /// The game it is for.
    pub game: String,
    /// The game mode.
    pub mode: String,
    /// The region it plays in.
    pub region: String,
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
    pub host: String,
    /// In joining order; the host role passes to the first on leave.
    pub members: Vec<LobbyMember>,
    /// Game-defined key/value pairs, in the order the server sent them.
    pub settings: Vec<(String, String)>,
    /// The game server's connection payload once started ("" before).
    pub connection: String,
    /// Bumped on every change; [`LobbyEvent::version`] carries it.
    pub version: u64,
    /// When it was created (Unix ms).
    pub created_at_ms: i64,
    /// When it last changed (Unix ms).
    pub updated_at_ms: i64,
}

/// One row of a [`LobbyListPage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbySummary {
    /// The lobby id.
    pub id: String,
    /// The game it is for.
    pub game: String,
    /// The game mode.
    pub mode: String,
    /// The region it plays in.
    pub region: String,
    /// Members now.
    pub members: u16,
    /// Most members it takes.
    pub max: u16,
    /// Joining takes a password.
    pub has_password: bool,
    /// Where the lobby stands (OPEN, READY, …).
    pub status: LobbyStatus,
}

/// A page of [`Client::lobby_list`](crate::Client::lobby_list), by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyListPage {
    /// The lobbies of this page, by id.
    pub lobbies: Vec<LobbySummary>,
    /// Pass as `after` for the next page; "" when this is the last one.
    pub next_after: String,
}

/// What [`Client::lobby_create`](crate::Client::lobby_create) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLobby {
    /// The game it is for.
    pub game: String,
    /// The game mode.
    pub mode: String,
    /// The region it plays in.
    pub region: String,
    /// Members needed before the lobby can be READY.
    pub min: u16,
    /// Most members it takes.
    pub max: u16,
    /// Who may find and join it.
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

/// What [`Client::lobby_update`](crate::Client::lobby_update) changes;
/// `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LobbyChanges {
    /// Replaces every setting.
    pub settings: Option<Vec<(String, String)>>,
    /// `(min, max)`.
    pub capacity: Option<(u16, u16)>,
    /// Who may find and join it.
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
/// the last one seen, events were missed — call
/// [`Client::lobby_get`](crate::Client::lobby_get) for a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyEvent {
    /// The lobby that changed.
    pub lobby_id: String,
    /// The lobby's version after the change.
    pub version: u64,
    /// What happened; see the type docs.
    pub kind: LobbyEventKind,
    /// The member the event is about, when it is about one.
    pub user: Option<ChatUser>,
    /// For MEMBER_READY: ready (true) or not.
    pub ready: bool,
    /// Why, for the kinds that say (KICKED); "" otherwise.
    pub reason: String,
    /// The state, for the kinds that carry it (boxed to keep
    /// [`Event`](crate::Event) small).
    pub lobby: Option<Box<Lobby>>,
    /// When it happened (Unix ms).
    pub at_ms: i64,
}

pub(crate) fn settings<'a>(
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

pub(crate) fn member(m: wire::LobbyMember<'_>) -> LobbyMember {
    LobbyMember {
        user: user(m.user()),
        ready: m.ready(),
        connected: m.connected(),
        team: u8::try_from(m.team()).ok(),
        joined_at_ms: m.joined_at_ms(),
    }
}

pub(crate) fn lobby(l: wire::LobbyState<'_>) -> Lobby {
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

pub(crate) fn summary(s: wire::LobbySummary<'_>) -> LobbySummary {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use huddle_schema::encode::{LobbyStateFields, LobbySummaryFields, MemberFields, UserFields};
    use huddle_schema::wire::ErrorCode;
    use huddle_schema::Encoder;

    pub(crate) const ALICE: UserFields<'static> = UserFields {
        id: "u-alice",
        username: "alice",
        display_name: "Alice",
    };
    pub(crate) const BOB: UserFields<'static> = UserFields {
        id: "u-bob",
        username: "bob",
        display_name: "Bob",
    };

    pub(crate) fn chat_user(u: UserFields<'_>) -> ChatUser {
        ChatUser {
            id: u.id.into(),
            username: u.username.into(),
            display_name: u.display_name.into(),
        }
    }

    pub(crate) fn sample_fields() -> LobbyStateFields<'static> {
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

    pub(crate) fn sample_lobby() -> Lobby {
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
    fn new_lobby_defaults() {
        let n = NewLobby::new("arena", "2v2", "eu", 2, 4);
        assert_eq!(n.visibility, LobbyVisibility::PUBLIC);
        assert_eq!(n.password, "");
        assert!(n.chat);
        assert!(n.settings.is_empty());
        assert_eq!(LobbyChanges::default().lock, None);
    }
}
