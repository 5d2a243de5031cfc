//! `Request::from_frame` over every body of the schema: each client body
//! round-trips with its fields, each other kind of body gets its error.

use bytes::Bytes;
use huddle_schema::encode::{
    LobbyCreateFields, LobbyListFields, LobbyUpdateFields, MatchmakingStartFields, ResumeFields,
};
use huddle_schema::wire::{
    self, Body, ContentType, ErrorCode, FriendAction, LobbyOpKind, LobbyVisibility,
    MatchmakingOpKind, PresenceStatus,
};
use huddle_schema::{verify_frame, Encoder, PROTOCOL_VERSION};

use super::*;

fn verified(bytes: &[u8]) -> wire::Frame<'_> {
    verify_frame(bytes, 1 << 16).expect("a frame the encoder built verifies")
}

fn decoded(bytes: &[u8]) -> Request<'_> {
    Request::from_frame(&verified(bytes)).expect("a client body decodes")
}

/// One frame of every body a client may send.
fn client_frames() -> Vec<Bytes> {
    let mut e = Encoder::new();
    vec![
        e.hello(1, Some("t"), "c", PROTOCOL_VERSION, None, false),
        e.ping(0, 1, 2),
        e.pong(0, 3),
        e.echo_request(1, b"x", None, false),
        e.presence_query(1, &["u"]),
        e.follow(1, &["u"], true),
        e.follow(1, &["u"], false),
        e.set_status(1, PresenceStatus::AWAY, "", false, false),
        e.chat_join(1, "c"),
        e.chat_leave(1, "c"),
        e.chat_send(1, "c", "hi", ContentType::TEXT, None),
        e.chat_typing("c", true),
        e.chat_read(1, "c", 2),
        e.chat_history(1, "c", 0, 10),
        e.chat_edit(1, "c", 2, Some("new")),
        e.chat_edit(1, "c", 2, None),
        e.chat_mute(1, "c", "u", 5),
        e.chat_unread(1, &["c"]),
        e.friend_op(1, FriendAction::REQUEST, "u"),
        e.friend_list(1),
        e.notification_list(1, 0, 10, false),
        e.notification_mark_read(1, 3, false),
        e.notification_delete(1, 3),
        e.lobby_create(
            1,
            &LobbyCreateFields {
                game: "g",
                mode: "m",
                region: "r",
                min: 1,
                max: 2,
                visibility: LobbyVisibility::PUBLIC,
                password: "",
                chat: true,
                settings: Vec::new(),
            },
        ),
        e.lobby_join(1, "l", ""),
        e.lobby_update(
            1,
            &LobbyUpdateFields {
                lobby_id: "l",
                ..Default::default()
            },
        ),
        e.lobby_op(1, LobbyOpKind::GET, "l", "", ""),
        e.lobby_list(
            1,
            &LobbyListFields {
                game: "",
                mode: "",
                region: "",
                min_free: 0,
                after: "",
                limit: 10,
            },
        ),
        e.matchmaking_start(
            1,
            &MatchmakingStartFields {
                game: "g",
                mode: "m",
                latencies: &[("eu", 20)],
                lobby_id: "",
                texts: &[],
                numbers: &[],
                role: "",
            },
        ),
        e.matchmaking_op(1, MatchmakingOpKind::STATUS, "1@g"),
    ]
}

#[test]
fn every_client_body_decodes_as_itself() {
    let frames = client_frames();
    let mut decoded_bodies = Vec::new();
    for bytes in &frames {
        let frame = verified(bytes);
        let request = Request::from_frame(&frame).expect("a client body decodes");
        assert_eq!(request.body(), frame.body_type(), "{request:?}");
        decoded_bodies.push(request.body());
    }
    decoded_bodies.sort_by_key(|b| b.0);
    let client_bodies: Vec<Body> = BODIES
        .iter()
        .filter(|(_, sender)| matches!(sender, Sender::Client(_)))
        .map(|(body, _)| *body)
        .collect();
    assert_eq!(
        decoded_bodies, client_bodies,
        "client_frames covers every client body, in tag order"
    );
}

#[test]
fn handshake_and_signals_round_trip() {
    let mut e = Encoder::new();
    let resume = ResumeFields {
        session_id: "00000000000000ab",
        resume_token: "ff",
        last_seq: 9,
    };
    let bytes = e.hello(7, Some("jwt"), "sdk/1", 3, Some(resume), true);
    assert_eq!(
        decoded(&bytes),
        Request::Hello(Hello {
            token: Some("jwt"),
            client: Some("sdk/1"),
            protocol_version: 3,
            resume: Some(Resume {
                session_id: Some("00000000000000ab"),
                resume_token: Some("ff"),
                last_seq: 9,
            }),
            datagrams: true,
        })
    );
    let bytes = e.hello(7, None, "sdk/1", 1, None, false);
    let Request::Hello(hello) = decoded(&bytes) else {
        panic!("Hello decodes as Hello");
    };
    assert_eq!((hello.token, hello.resume), (None, None));
    assert_eq!(decoded(&e.ping(0, 41, 5)), Request::Ping { ack_seq: 41 });
    assert_eq!(decoded(&e.pong(0, 5)), Request::Pong);
    assert_eq!(
        decoded(&e.chat_typing("lobby:1", true)),
        Request::ChatTyping {
            chat_id: "lobby:1",
            typing: true
        }
    );
}

#[test]
fn presence_and_echo_round_trip() {
    let mut e = Encoder::new();
    assert_eq!(
        decoded(&e.echo_request(1, b"abc", Some("bob"), true)),
        Request::Echo(Echo {
            payload: b"abc",
            to_user: Some("bob"),
            volatile: true,
        })
    );
    let ids = |r: Request<'_>| -> (Body, Vec<String>) {
        let (Request::PresenceQuery { user_ids }
        | Request::Follow { user_ids }
        | Request::Unfollow { user_ids }
        | Request::ChatUnread { chat_ids: user_ids }) = r
        else {
            panic!("{r:?} carries no id list");
        };
        assert_eq!(user_ids.len(), user_ids.iter().count());
        (r.body(), user_ids.iter().map(str::to_string).collect())
    };
    let two = || vec!["a".to_string(), "b".to_string()];
    assert_eq!(
        ids(decoded(&e.presence_query(1, &["a", "b"]))),
        (Body::PresenceQuery, two())
    );
    assert_eq!(
        ids(decoded(&e.follow(1, &["a", "b"], true))),
        (Body::Follow, two())
    );
    assert_eq!(
        ids(decoded(&e.follow(1, &["a", "b"], false))),
        (Body::Unfollow, two())
    );
    assert_eq!(
        ids(decoded(&e.chat_unread(1, &["a", "b"]))),
        (Body::ChatUnread, two())
    );
    assert_eq!(
        ids(decoded(&e.presence_query::<&str>(1, &[]))),
        (Body::PresenceQuery, vec![])
    );
    assert_eq!(
        decoded(&e.set_status(1, PresenceStatus::BUSY, "afk", true, false)),
        Request::SetStatus(SetStatus {
            status: PresenceStatus::BUSY,
            text: Some("afk"),
            invisible: true,
        })
    );
}

#[test]
fn chat_requests_round_trip() {
    let mut e = Encoder::new();
    assert_eq!(
        decoded(&e.chat_join(1, "channel:news")),
        Request::ChatJoin {
            chat_id: "channel:news"
        }
    );
    assert_eq!(
        decoded(&e.chat_leave(1, "channel:news")),
        Request::ChatLeave {
            chat_id: "channel:news"
        }
    );
    assert_eq!(
        decoded(&e.chat_send(1, "c", "hello", ContentType::EMOTE, Some("n1"))),
        Request::ChatSend(ChatSend {
            chat_id: "c",
            content: "hello",
            content_type: ContentType::EMOTE,
            nonce: Some("n1"),
        })
    );
    assert_eq!(
        decoded(&e.chat_read(1, "c", 77)),
        Request::ChatRead {
            chat_id: "c",
            message_id: 77
        }
    );
    assert_eq!(
        decoded(&e.chat_history(1, "c", 99, 20)),
        Request::ChatHistory {
            chat_id: "c",
            before_id: 99,
            limit: 20
        }
    );
    assert_eq!(
        decoded(&e.chat_edit(1, "c", 5, Some("fixed"))),
        Request::ChatEdit {
            chat_id: "c",
            message_id: 5,
            content: "fixed"
        }
    );
    assert_eq!(
        decoded(&e.chat_edit(1, "c", 5, None)),
        Request::ChatDelete {
            chat_id: "c",
            message_id: 5
        }
    );
    assert_eq!(
        decoded(&e.chat_mute(1, "c", "u", 1000)),
        Request::ChatMute {
            chat_id: "c",
            user_id: "u",
            duration_ms: 1000
        }
    );
}

#[test]
fn social_requests_round_trip() {
    let mut e = Encoder::new();
    assert_eq!(
        decoded(&e.friend_op(1, FriendAction::BLOCK, "eve")),
        Request::FriendOp {
            action: FriendAction::BLOCK,
            user_id: "eve"
        }
    );
    assert_eq!(decoded(&e.friend_list(1)), Request::FriendList);
    assert_eq!(
        decoded(&e.notification_list(1, 12, 50, true)),
        Request::NotificationList {
            before_id: 12,
            limit: 50,
            unread_only: true
        }
    );
    assert_eq!(
        decoded(&e.notification_mark_read(1, 0, true)),
        Request::NotificationMarkRead { id: 0, all: true }
    );
    assert_eq!(
        decoded(&e.notification_delete(1, 8)),
        Request::NotificationDelete { id: 8 }
    );
}

#[test]
fn lobby_requests_round_trip() {
    let mut e = Encoder::new();
    let bytes = e.lobby_create(
        1,
        &LobbyCreateFields {
            game: "g",
            mode: "m",
            region: "eu",
            min: 2,
            max: 8,
            visibility: LobbyVisibility::INVITE_ONLY,
            password: "pw",
            chat: false,
            settings: vec![("map", "dust"), ("ranked", "yes")],
        },
    );
    let Request::LobbyCreate(c) = decoded(&bytes) else {
        panic!("LobbyCreate decodes as LobbyCreate");
    };
    assert_eq!(
        (c.game, c.mode, c.region, c.min, c.max),
        ("g", "m", "eu", 2, 8)
    );
    assert_eq!(
        (c.visibility, c.password, c.chat),
        (LobbyVisibility::INVITE_ONLY, Some("pw"), false)
    );
    assert_eq!(
        c.settings.iter().collect::<Vec<_>>(),
        [("map", "dust"), ("ranked", "yes")]
    );
    assert_eq!(
        decoded(&e.lobby_join(1, "l1", "pw")),
        Request::LobbyJoin {
            lobby_id: "l1",
            password: Some("pw")
        }
    );
    assert_eq!(
        decoded(&e.lobby_join(1, "l1", "")),
        Request::LobbyJoin {
            lobby_id: "l1",
            password: None
        }
    );
    let bytes = e.lobby_update(
        1,
        &LobbyUpdateFields {
            lobby_id: "l1",
            settings: Some(vec![("k", "v")]),
            capacity: Some((3, 4)),
            visibility: Some(LobbyVisibility::PRIVATE),
            password: Some(""),
            lock: Some(false),
        },
    );
    let Request::LobbyUpdate(u) = decoded(&bytes) else {
        panic!("LobbyUpdate decodes as LobbyUpdate");
    };
    assert_eq!(
        (u.lobby_id, u.set_settings, u.min, u.max, u.lock),
        ("l1", true, 3, 4, 2)
    );
    assert_eq!(
        (u.set_visibility, u.visibility, u.set_password, u.password),
        (true, LobbyVisibility::PRIVATE, true, Some(""))
    );
    assert_eq!(u.settings.iter().collect::<Vec<_>>(), [("k", "v")]);
    assert_eq!(
        decoded(&e.lobby_op(1, LobbyOpKind::KICK, "l1", "bob", "afk")),
        Request::LobbyOp(LobbyOp {
            op: LobbyOpKind::KICK,
            lobby_id: "l1",
            user_id: "bob",
            text: "afk",
        })
    );
    let bytes = e.lobby_list(
        1,
        &LobbyListFields {
            game: "g",
            mode: "m",
            region: "r",
            min_free: 2,
            after: "l0",
            limit: 30,
        },
    );
    assert_eq!(
        decoded(&bytes),
        Request::LobbyList(LobbyList {
            game: "g",
            mode: "m",
            region: "r",
            min_free: 2,
            after: "l0",
            limit: 30,
        })
    );
}

#[test]
fn matchmaking_requests_round_trip() {
    let mut e = Encoder::new();
    let bytes = e.matchmaking_start(
        1,
        &MatchmakingStartFields {
            game: "arena",
            mode: "duel",
            latencies: &[("eu", 20), ("us", 90)],
            lobby_id: "l1",
            texts: &[("map", "dust")],
            numbers: &[("level", 12.5)],
            role: "tank",
        },
    );
    let Request::MatchmakingStart(s) = decoded(&bytes) else {
        panic!("MatchmakingStart decodes as MatchmakingStart");
    };
    assert_eq!(
        (s.game, s.mode, s.lobby_id, s.role),
        ("arena", "duel", "l1", Some("tank"))
    );
    assert_eq!(
        s.latencies.iter().collect::<Vec<_>>(),
        [
            RegionLatency {
                region: "eu",
                ms: 20
            },
            RegionLatency {
                region: "us",
                ms: 90
            }
        ]
    );
    assert_eq!(s.attributes.len(), 2);
    assert_eq!(
        s.attributes.iter().collect::<Vec<_>>(),
        [
            MatchAttribute {
                name: "map",
                text: "dust",
                number: 0.0,
                is_number: false
            },
            MatchAttribute {
                name: "level",
                text: "",
                number: 12.5,
                is_number: true
            }
        ]
    );
    assert_eq!(
        decoded(&e.matchmaking_op(1, MatchmakingOpKind::ACCEPT, "17@arena")),
        Request::MatchmakingOp {
            op: MatchmakingOpKind::ACCEPT,
            ticket: "17@arena"
        }
    );
}

#[test]
fn server_bodies_are_refused_by_name() {
    let mut e = Encoder::new();
    let mut refused = 0;
    for (body, sender) in &BODIES {
        if !matches!(sender, Sender::Server) {
            continue;
        }
        let bytes = e.raw_frame_for_tests(PROTOCOL_VERSION, body.0);
        let frame = wire::root_as_frame(&bytes).expect("the frame is well-formed");
        let err = Request::from_frame(&frame).unwrap_err();
        let name = body.variant_name().unwrap();
        assert_eq!(err, RequestError::ServerToClient { body: name });
        assert_eq!(err.code(), ErrorCode::MALFORMED_FRAME);
        assert_eq!(
            err.to_string(),
            format!("{name} is a server-to-client frame")
        );
        refused += 1;
    }
    assert_eq!(
        refused + client_frames().len() + 1,
        Body::ENUM_VALUES.len(),
        "every body is NONE, a client body or a server body"
    );
    // The same through the verifier, as the session sees it.
    let bytes = e.go_away("bye", 10);
    let err = Request::from_frame(&verified(&bytes)).unwrap_err();
    assert_eq!(err.to_string(), "GoAway is a server-to-client frame");
}

#[test]
fn unknown_and_missing_bodies_are_malformed() {
    let mut e = Encoder::new();
    let bytes = e.raw_frame_for_tests(PROTOCOL_VERSION, 200);
    let frame = wire::root_as_frame(&bytes).expect("the frame is well-formed");
    let err = Request::from_frame(&frame).unwrap_err();
    assert_eq!(err, RequestError::UnknownBody { tag: 200 });
    assert_eq!(err.code(), ErrorCode::MALFORMED_FRAME);
    assert_eq!(
        err.to_string(),
        huddle_schema::FrameError::UnknownBody {
            tag: 200,
            request_id: 1
        }
        .to_string(),
        "the same words as the verifier"
    );

    // Tag NONE, no table. (A client body's tag without its table does not
    // even pass the flatbuffers verifier: no safe code holds such a frame.)
    let bytes = bodiless(Body::NONE);
    let frame = wire::root_as_frame(&bytes).expect("the frame is well-formed");
    let err = Request::from_frame(&frame).unwrap_err();
    assert_eq!(err, RequestError::MissingBody);
    assert_eq!(err.code(), ErrorCode::MALFORMED_FRAME);
    assert_eq!(
        err.to_string(),
        huddle_schema::FrameError::MissingBody { request_id: 4 }.to_string(),
        "the same words as the verifier"
    );
    assert!(wire::root_as_frame(&bodiless(Body::ChatSend)).is_err());
}

/// A frame whose union tag is `tag` with no body table.
fn bodiless(tag: Body) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let root = wire::Frame::create(
        &mut fbb,
        &wire::FrameArgs {
            version: PROTOCOL_VERSION,
            request_id: 4,
            seq: 0,
            body_type: tag,
            body: None,
        },
    );
    wire::finish_frame_buffer(&mut fbb, root);
    fbb.finished_data().to_vec()
}

#[test]
fn kinds_and_store_writes_follow_the_protocol() {
    for bytes in client_frames() {
        let request = decoded(&bytes);
        let want = match request.body() {
            Body::Hello => RequestKind::Hello,
            Body::Ping | Body::Pong | Body::ChatTyping => RequestKind::Signal,
            _ => RequestKind::Call,
        };
        assert_eq!(request.kind(), want, "{}", request.name());
        let writes = matches!(
            request.body(),
            Body::ChatSend
                | Body::ChatEdit
                | Body::ChatDelete
                | Body::ChatRead
                | Body::FriendOp
                | Body::NotificationMarkRead
                | Body::NotificationDelete
        );
        assert_eq!(request.writes_to_store(), writes, "{}", request.name());
    }
}
