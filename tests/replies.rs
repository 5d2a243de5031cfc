//! Exactly one reply per request across a dropped connection, over real
//! sockets and both transports. A raw-frame client sends a request, drops
//! the connection before reading anything more, and resumes from the last
//! `seq` it saw: the gateway says it read the request
//! (`Welcome.last_request_id`), its one reply arrives after the resume (in
//! the replay, or live right after it when the shard answered late), in
//! `seq` order with the events, and the request was carried out once. A
//! request the gateway never read is above `last_request_id` and is carried
//! out once when sent again; the SDK resolves a request in flight across a
//! forced drop once, both when its reply was lost and when the request was.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use huddle_client::transport::{RawConnection, Transport};
use huddle_client::{Event, EventStream, NewLobby};
use huddle_schema::encode::{LobbyCreateFields, MatchmakingStartFields, ResumeFields};
use huddle_schema::wire::{
    Body, ContentType, FriendAction, LobbyEventKind, LobbyOpKind, LobbyVisibility, Relation,
    TicketState,
};
use huddle_schema::{verify_frame, Encoder};

fn frame_of(bytes: &[u8]) -> huddle_schema::wire::Frame<'_> {
    verify_frame(bytes, 1 << 20).expect("gateway frames verify")
}

fn request_id_of(bytes: &[u8]) -> u64 {
    frame_of(bytes).request_id()
}

/// "ws" or "quic": per-transport names keep the two runs' state apart.
fn tag(url: &str) -> &'static str {
    if url.starts_with("quic") {
        "quic"
    } else {
        "ws"
    }
}

/// A raw-frame session that remembers what a resume needs and checks that
/// every sequenced frame (event or reply) follows the last without a gap.
struct RawSession {
    conn: RawConnection,
    user: String,
    welcome: WelcomeInfo,
    /// The highest `seq` seen (never acknowledged: this client sends no
    /// Ping, so the gateway keeps everything for a resume).
    last_seq: u64,
    next_request_id: u64,
    enc: Encoder,
}

/// A session whose connection dropped with one request in flight.
struct Dropped {
    user: String,
    welcome: WelcomeInfo,
    last_seq: u64,
    next_request_id: u64,
    /// The request in flight, and its frame for sending again.
    request_id: u64,
    frame: Bytes,
}

impl RawSession {
    async fn open(gw: &TestGateway, url: &str, user: &str) -> Self {
        let (conn, welcome) = gw.raw_session(url, user).await;
        Self {
            conn,
            user: user.into(),
            welcome,
            last_seq: 0,
            // The Hello was request 1.
            next_request_id: 2,
            enc: Encoder::new(),
        }
    }

    fn take_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    /// The next frame (heartbeats skipped), its `seq` checked and noted.
    async fn next(&mut self) -> Bytes {
        let bytes = next_frame(&mut self.conn)
            .await
            .expect("the connection stays open");
        let seq = frame_of(&bytes).seq();
        if seq != 0 {
            assert_eq!(
                seq,
                self.last_seq + 1,
                "replies and events share one seq, without gaps"
            );
            self.last_seq = seq;
        }
        bytes
    }

    /// Sends a request and reads up to its reply (earlier frames are
    /// skipped); returns the reply.
    async fn request(&mut self, build: impl FnOnce(&mut Encoder, u64) -> Bytes) -> Bytes {
        let request_id = self.take_request_id();
        let frame = build(&mut self.enc, request_id);
        self.conn.send(frame).await.expect("send a request");
        loop {
            let bytes = self.next().await;
            if request_id_of(&bytes) == request_id {
                return bytes;
            }
        }
    }

    /// Reads until a frame of `body` comes; returns it.
    async fn until(&mut self, body: Body) -> Bytes {
        loop {
            let bytes = self.next().await;
            if frame_of(&bytes).body_type() == body {
                return bytes;
            }
        }
    }

    /// Sends a request and drops the connection without reading anything
    /// more, as a network failure would. QUIC discards what it has not sent
    /// yet when a connection closes, so there the request gets a moment to
    /// leave first (the client still reads nothing).
    async fn send_and_drop(mut self, build: impl FnOnce(&mut Encoder, u64) -> Bytes) -> Dropped {
        let request_id = self.take_request_id();
        let frame = build(&mut self.enc, request_id);
        self.conn.send(frame.clone()).await.expect("send a request");
        if self.conn.transport() == Transport::Quic {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.conn.abort();
        Dropped {
            user: self.user,
            welcome: self.welcome,
            last_seq: self.last_seq,
            next_request_id: self.next_request_id,
            request_id,
            frame,
        }
    }

    /// Reads after a resume until the reply to `request_id` has come, then
    /// twice past the reply to a later echo (anything owed before those is
    /// then read): every frame read, which must hold exactly one reply to
    /// `request_id`. Returns that reply and the frames.
    async fn expect_one_reply(&mut self, request_id: u64) -> (Bytes, Vec<Bytes>) {
        let mut frames: Vec<Bytes> = Vec::new();
        for _ in 0..2 {
            let barrier = self.take_request_id();
            let echo = self.enc.echo_request(barrier, b"barrier", None, false);
            self.conn.send(echo).await.expect("send an echo");
            let mut barrier_answered = false;
            while !barrier_answered || !frames.iter().any(|f| request_id_of(f) == request_id) {
                let bytes = self.next().await;
                barrier_answered |= request_id_of(&bytes) == barrier;
                frames.push(bytes);
            }
        }
        let replies: Vec<&Bytes> = frames
            .iter()
            .filter(|f| request_id_of(f) == request_id)
            .collect();
        assert_eq!(
            replies.len(),
            1,
            "exactly one reply to request {request_id}, not zero, not two"
        );
        let reply = replies[0].clone();
        assert_ne!(
            frame_of(&reply).seq(),
            0,
            "a reply is sequenced, so it could be replayed"
        );
        (reply, frames)
    }
}

/// What the resuming `Welcome` said.
struct Resumed {
    last_request_id: u64,
}

impl Dropped {
    /// Resumes the session on a new connection from the last `seq` seen.
    async fn resume(&self, gw: &TestGateway, url: &str) -> (RawSession, Resumed) {
        let mut conn = gw.raw(url).await;
        let resume = ResumeFields {
            session_id: &self.welcome.session_id,
            resume_token: &self.welcome.resume_token,
            last_seq: self.last_seq,
        };
        let reply = hello(&mut conn, Some(&token(&self.user)), Some(resume)).await;
        let welcome = parse_welcome(&reply)
            .unwrap_or_else(|| panic!("resume refused: {:?}", parse_error(&reply)));
        assert!(welcome.resumed, "the same session carries on");
        let resumed = Resumed {
            last_request_id: welcome.last_request_id,
        };
        let session = RawSession {
            conn,
            user: self.user.clone(),
            welcome,
            last_seq: self.last_seq,
            next_request_id: self.next_request_id,
            enc: Encoder::new(),
        };
        (session, resumed)
    }

    /// Resumes and checks that the gateway had read the request before the
    /// drop, so the client must not send it again; then its one reply.
    async fn resume_expecting_one_reply(
        &self,
        gw: &TestGateway,
        url: &str,
    ) -> (RawSession, Bytes, Vec<Bytes>) {
        let (mut session, resumed) = self.resume(gw, url).await;
        assert_eq!(
            resumed.last_request_id, self.request_id,
            "the gateway read the request before the drop ({url})"
        );
        let (reply, frames) = session.expect_one_reply(self.request_id).await;
        (session, reply, frames)
    }
}

fn count_bodies(frames: &[Bytes], body: Body) -> usize {
    frames
        .iter()
        .filter(|f| frame_of(f).body_type() == body)
        .count()
}

/// Echo payloads `events` got until (without) `marker`.
async fn echoes_until(events: &mut EventStream, marker: &[u8]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("hang guard")
        {
            Some(Event::Echo { payload, .. }) if payload == marker => return got,
            Some(Event::Echo { payload, .. }) => got.push(payload),
            Some(_) => {}
            None => panic!("event stream ended"),
        }
    }
}

#[tokio::test]
async fn an_echo_in_flight_across_a_drop_is_answered_once() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let observer_id = format!("echo-observer-{}", tag(&url));
        let (observer, mut seen) = gw.client(&url, &observer_id).await;
        let session = RawSession::open(&gw, &url, &format!("echo-sender-{}", tag(&url))).await;
        let dropped = session
            .send_and_drop(|enc, id| enc.echo_request(id, b"once", Some(&observer_id), false))
            .await;
        let (mut session, reply, _) = dropped.resume_expecting_one_reply(&gw, &url).await;
        let echo = frame_of(&reply).body_as_echo_reply().expect("an EchoReply");
        assert_eq!(echo.payload().map(|p| p.bytes()), Some(&b"once"[..]));
        assert_eq!(echo.delivered(), 1);
        // Carried out once: the observer heard it once before a later echo.
        session
            .request(|enc, id| enc.echo_request(id, b"marker", Some(&observer_id), false))
            .await;
        assert_eq!(
            echoes_until(&mut seen, b"marker").await,
            vec![b"once".to_vec()]
        );
        observer.close().await;
    }
}

/// An operator channel `replies-<tag>`, an SDK member watching it, and a
/// raw session of `user` joined to it.
async fn joined_channel(
    gw: &TestGateway,
    url: &str,
    user: &str,
) -> (String, huddle_client::Client, RawSession) {
    let name = format!("replies-{}", tag(url));
    admin_post(gw, "/v1/channels", &format!(r#"{{"name":"{name}"}}"#)).await;
    let chat_id = format!("channel:{name}");
    let (watcher, _) = gw.client(url, &format!("chat-watcher-{}", tag(url))).await;
    watcher
        .chat_join(&chat_id)
        .await
        .expect("the watcher joins");
    let mut session = RawSession::open(gw, url, user).await;
    let joined = session.request(|enc, id| enc.chat_join(id, &chat_id)).await;
    assert!(frame_of(&joined).body_as_chat_joined().is_some(), "joined");
    (chat_id, watcher, session)
}

#[tokio::test]
async fn a_chat_send_without_nonce_in_flight_across_a_drop_is_sent_once() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (chat_id, watcher, session) =
            joined_channel(&gw, &url, &format!("chat-sender-{}", tag(&url))).await;
        let dropped = session
            .send_and_drop(|enc, id| {
                enc.chat_send(id, &chat_id, "sent once", ContentType::TEXT, None)
            })
            .await;
        let (_session, reply, frames) = dropped.resume_expecting_one_reply(&gw, &url).await;
        let sent = frame_of(&reply).body_as_chat_sent().expect("a ChatSent");
        assert!(!sent.duplicate());
        assert_eq!(
            count_bodies(&frames, Body::ChatMessageEvent),
            1,
            "the sender hears its message once"
        );
        let history = watcher.chat_history(&chat_id, 0, 100).await.unwrap();
        let copies: Vec<u64> = history
            .messages
            .iter()
            .filter(|m| m.content == "sent once")
            .map(|m| m.id)
            .collect();
        assert_eq!(
            copies,
            vec![sent.message_id()],
            "one message in the history"
        );
        watcher.close().await;
    }
}

#[tokio::test]
async fn a_chat_edit_in_flight_across_a_drop_is_answered_once() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (chat_id, watcher, mut session) =
            joined_channel(&gw, &url, &format!("chat-editor-{}", tag(&url))).await;
        let sent = session
            .request(|enc, id| enc.chat_send(id, &chat_id, "draft", ContentType::TEXT, None))
            .await;
        let message_id = frame_of(&sent).body_as_chat_sent().unwrap().message_id();
        // Its own ChatMessageEvent was queued with the reply: an echo round
        // trip reads past it, so the drop leaves only the edit's answers.
        session
            .request(|enc, id| enc.echo_request(id, b"sync", None, false))
            .await;
        let dropped = session
            .send_and_drop(|enc, id| enc.chat_edit(id, &chat_id, message_id, Some("edited once")))
            .await;
        let (_session, reply, frames) = dropped.resume_expecting_one_reply(&gw, &url).await;
        assert!(
            frame_of(&reply).body_as_chat_updated().is_some(),
            "a ChatUpdated"
        );
        assert_eq!(count_bodies(&frames, Body::ChatMessageUpdatedEvent), 1);
        let history = watcher.chat_history(&chat_id, 0, 100).await.unwrap();
        let edited: Vec<&str> = history
            .messages
            .iter()
            .filter(|m| m.id == message_id)
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(edited, vec!["edited once"]);
        watcher.close().await;
    }
}

fn lobby_fields(game: &str, min: u16) -> LobbyCreateFields<'_> {
    LobbyCreateFields {
        game,
        mode: "duel",
        region: "eu",
        min,
        max: 4,
        visibility: LobbyVisibility::PUBLIC,
        password: "",
        chat: false,
        settings: Vec::new(),
    }
}

fn lobby_id_of(reply: &[u8]) -> String {
    let frame = frame_of(reply);
    let lobby = frame.body_as_lobby_reply().expect("a LobbyReply");
    lobby
        .lobby()
        .and_then(|l| l.id())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_lobby_create_in_flight_across_a_drop_creates_one_lobby() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let game = format!("replies-{}", tag(&url));
        let (watcher, _) = gw
            .client(&url, &format!("lobby-watcher-{}", tag(&url)))
            .await;
        let session = RawSession::open(&gw, &url, &format!("lobby-host-{}", tag(&url))).await;
        let dropped = session
            .send_and_drop(|enc, id| enc.lobby_create(id, &lobby_fields(&game, 1)))
            .await;
        let (_session, reply, _) = dropped.resume_expecting_one_reply(&gw, &url).await;
        let lobby_id = lobby_id_of(&reply);
        let page = watcher.lobby_list(&game, "", "", 0, "", 100).await.unwrap();
        let ids: Vec<&str> = page.lobbies.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, vec![lobby_id.as_str()], "the lobby exists once");
        watcher.close().await;
    }
}

#[tokio::test]
async fn a_lobby_ready_in_flight_across_a_drop_is_answered_once() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let game = format!("ready-{}", tag(&url));
        let mut session = RawSession::open(&gw, &url, &format!("ready-host-{}", tag(&url))).await;
        // Two needed: ready alone is not everyone ready.
        let created = session
            .request(|enc, id| enc.lobby_create(id, &lobby_fields(&game, 2)))
            .await;
        let lobby_id = lobby_id_of(&created);
        let dropped = session
            .send_and_drop(|enc, id| enc.lobby_op(id, LobbyOpKind::READY, &lobby_id, "", ""))
            .await;
        let (mut session, reply, mut frames) = dropped.resume_expecting_one_reply(&gw, &url).await;
        let replied = frame_of(&reply)
            .body_as_lobby_reply()
            .expect("a LobbyReply");
        let version = replied.lobby().map(|l| l.version()).unwrap_or_default();
        let member_ready = |frames: &[Bytes]| {
            frames
                .iter()
                .filter(|f| {
                    frame_of(f)
                        .body_as_lobby_event()
                        .is_some_and(|e| e.kind() == LobbyEventKind::MEMBER_READY)
                })
                .count()
        };
        // The event reaches the user through the user's shard: wait for it.
        while member_ready(&frames) == 0 {
            frames.push(session.next().await);
        }
        let got = session
            .request(|enc, id| enc.lobby_op(id, LobbyOpKind::GET, &lobby_id, "", ""))
            .await;
        let lobby = frame_of(&got)
            .body_as_lobby_reply()
            .and_then(|r| r.lobby())
            .unwrap();
        assert_eq!(
            lobby.version(),
            version,
            "nothing changed after the one READY"
        );
        assert!(lobby.members().unwrap().iter().all(|m| m.ready()));
        assert_eq!(member_ready(&frames), 1, "one MEMBER_READY");
    }
}

#[tokio::test]
async fn a_friend_request_in_flight_across_a_drop_is_made_once() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let asker = format!("asker-{}", tag(&url));
        let target = format!("target-{}", tag(&url));
        let (addressee, _) = gw.client(&url, &target).await;
        let session = RawSession::open(&gw, &url, &asker).await;
        let dropped = session
            .send_and_drop(|enc, id| enc.friend_op(id, FriendAction::REQUEST, &target))
            .await;
        let (_session, reply, _) = dropped.resume_expecting_one_reply(&gw, &url).await;
        let done = frame_of(&reply)
            .body_as_friend_op_done()
            .expect("a FriendOpDone");
        assert_eq!(done.relation(), Relation::REQUEST_SENT);
        // The addressee's roster is updated on its own shard: wait for it.
        let mut rows = Vec::new();
        for _ in 0..200 {
            rows = addressee.friends().await.unwrap();
            if !rows.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let from: Vec<(&str, Relation)> = rows
            .iter()
            .map(|f| (f.user_id.as_str(), f.relation))
            .collect();
        assert_eq!(from, vec![(asker.as_str(), Relation::REQUEST_RECEIVED)]);
        addressee.close().await;
    }
}

#[tokio::test]
async fn a_notification_mark_read_in_flight_across_a_drop_is_answered_once() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let reader = format!("reader-{}", tag(&url));
        let (asker, _) = gw.client(&url, &format!("notifier-{}", tag(&url))).await;
        let mut session = RawSession::open(&gw, &url, &reader).await;
        asker.friend_request(&reader).await.unwrap();
        let event = session.until(Body::NotificationEvent).await;
        let notification_id = frame_of(&event)
            .body_as_notification_event()
            .and_then(|e| e.notification())
            .map(|n| n.id())
            .expect("a notification");
        // Its count event follows: read it, so nothing is left unread.
        session.until(Body::NotificationCountEvent).await;
        let dropped = session
            .send_and_drop(|enc, id| enc.notification_mark_read(id, notification_id, false))
            .await;
        let (_session, reply, _) = dropped.resume_expecting_one_reply(&gw, &url).await;
        let counts = frame_of(&reply)
            .body_as_notification_counts()
            .expect("NotificationCounts");
        assert_eq!((counts.total(), counts.unread()), (1, 0));
        asker.close().await;
    }
}

#[tokio::test]
async fn a_matchmaking_start_in_flight_across_a_drop_queues_one_ticket() {
    let gw = TestGateway::start_with(|c| c.matchmaking.queues = vec![queue("duel", 2, 1)]).await;
    for url in gw.urls() {
        let player = format!("seeker-{}", tag(&url));
        let session = RawSession::open(&gw, &url, &player).await;
        let start = |enc: &mut Encoder, id| {
            let fields = MatchmakingStartFields {
                game: "arena",
                mode: "duel",
                latencies: &[("eu", 30)],
                ..Default::default()
            };
            enc.matchmaking_start(id, &fields)
        };
        let dropped = session.send_and_drop(start).await;
        let (_session, reply, _) = dropped.resume_expecting_one_reply(&gw, &url).await;
        let ticket = frame_of(&reply)
            .body_as_matchmaking_reply()
            .and_then(|r| r.ticket())
            .expect("a ticket");
        let ticket_id = ticket.request_id().unwrap().to_string();
        assert_eq!(ticket.state(), TicketState::SEARCHING);
        // Another device of the player sees that one ticket searching.
        let (device, _) = gw.client(&url, &player).await;
        let status = device.matchmaking_status(&ticket_id).await.unwrap();
        assert_eq!(status.state, TicketState::SEARCHING);
        device.close().await;
    }
}

#[tokio::test]
async fn a_request_the_gateway_never_read_is_above_last_request_id_and_runs_once_when_sent_again() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let game = format!("unread-{}", tag(&url));
        let (watcher, _) = gw
            .client(&url, &format!("unread-watcher-{}", tag(&url)))
            .await;
        let mut session = RawSession::open(&gw, &url, &format!("unread-host-{}", tag(&url))).await;
        let echoed = session
            .request(|enc, id| enc.echo_request(id, b"read", None, false))
            .await;
        let read_id = request_id_of(&echoed);
        // The next request never leaves: the connection drops first.
        let unsent_id = session.next_request_id;
        session.conn.abort();
        let dropped = Dropped {
            user: session.user,
            welcome: session.welcome,
            last_seq: session.last_seq,
            next_request_id: session.next_request_id + 1,
            request_id: unsent_id,
            frame: session.enc.lobby_create(unsent_id, &lobby_fields(&game, 1)),
        };
        let (mut session, resumed) = dropped.resume(&gw, &url).await;
        assert_eq!(resumed.last_request_id, read_id);
        assert!(
            dropped.request_id > resumed.last_request_id,
            "so it is sent again"
        );
        session.conn.send(dropped.frame.clone()).await.unwrap();
        let (reply, _) = session.expect_one_reply(dropped.request_id).await;
        let page = watcher.lobby_list(&game, "", "", 0, "", 100).await.unwrap();
        assert_eq!(page.lobbies.len(), 1);
        assert_eq!(page.lobbies[0].id, lobby_id_of(&reply));
        watcher.close().await;
    }
}

#[tokio::test]
async fn a_client_that_sends_again_exactly_what_was_not_read_runs_each_request_once() {
    // Dropped at once, without giving QUIC time to send: whether the gateway
    // read the request depends on the transport and on timing. Either way,
    // a client following the protocol (send again only above
    // last_request_id) gets one reply and one lobby.
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        for attempt in 0..3 {
            let game = format!("race-{}-{attempt}", tag(&url));
            let (watcher, _) = gw
                .client(&url, &format!("race-watcher-{}", tag(&url)))
                .await;
            let mut session =
                RawSession::open(&gw, &url, &format!("race-host-{}-{attempt}", tag(&url))).await;
            let request_id = session.take_request_id();
            let frame = session
                .enc
                .lobby_create(request_id, &lobby_fields(&game, 1));
            session.conn.send(frame.clone()).await.unwrap();
            session.conn.abort();
            let dropped = Dropped {
                user: session.user,
                welcome: session.welcome,
                last_seq: session.last_seq,
                next_request_id: session.next_request_id,
                request_id,
                frame,
            };
            let (mut session, resumed) = dropped.resume(&gw, &url).await;
            if request_id > resumed.last_request_id {
                session.conn.send(dropped.frame.clone()).await.unwrap();
            }
            let (reply, _) = session.expect_one_reply(request_id).await;
            let page = watcher.lobby_list(&game, "", "", 0, "", 100).await.unwrap();
            let ids: Vec<&str> = page.lobbies.iter().map(|l| l.id.as_str()).collect();
            assert_eq!(ids, vec![lobby_id_of(&reply).as_str()]);
            watcher.close().await;
        }
    }
}

/// Waits for the SDK's `Reconnected`, which must be a resume.
async fn expect_resumed(events: &mut EventStream) {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("hang guard")
        {
            Some(Event::Reconnected { resumed, .. }) => {
                assert!(resumed, "the session carried on");
                return;
            }
            Some(Event::SessionReset) => panic!("the resume must succeed"),
            Some(_) => {}
            None => panic!("event stream ended"),
        }
    }
}

#[tokio::test]
async fn an_sdk_request_in_flight_across_a_forced_drop_resolves_once_after_the_resume() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (watcher, _) = gw.client(&url, &format!("sdk-watcher-{}", tag(&url))).await;

        // The request is lost with the connection: queued, but the writer
        // is gone before it writes (this runtime has one thread, so the
        // drop is handled before the writer runs). It is sent again.
        let (client, mut events) = gw.client(&url, &format!("sdk-host-{}", tag(&url))).await;
        // A round trip: the connection task is running (a drop asked for
        // before it runs is not seen).
        client.echo(b"warm").await.unwrap();
        let game = format!("sdk-lost-{}", tag(&url));
        let creating = {
            let (client, new) = (client.clone(), NewLobby::new(&game, "duel", "eu", 1, 4));
            tokio::spawn(async move { client.lobby_create(&new).await })
        };
        client.drop_connection_for_tests();
        let lobby = creating.await.unwrap().expect("resolves after the resume");
        expect_resumed(&mut events).await;
        let page = watcher.lobby_list(&game, "", "", 0, "", 100).await.unwrap();
        let ids: Vec<&str> = page.lobbies.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, vec![lobby.id.as_str()], "created once");
        client.close().await;

        // The reply is lost with the connection: the client is not reading
        // (its event buffer is full) when the gateway answers, then drops.
        let host = format!("sdk-stalled-{}", tag(&url));
        let mut config = gw.client_config(&url, &host);
        config.event_buffer = 1;
        let (client, mut events) = huddle_client::Client::connect(config).await.unwrap();
        for i in 0..2u8 {
            watcher.echo_to(&host, &[i], false).await.unwrap();
        }
        // One event waits in the buffer; the reader holds the other.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let game = format!("sdk-unread-{}", tag(&url));
        let mut creating = {
            let (client, new) = (client.clone(), NewLobby::new(&game, "duel", "eu", 1, 4));
            tokio::spawn(async move { client.lobby_create(&new).await })
        };
        // Carried out (the gateway read it), the reply unread.
        let mut listed = 0;
        for _ in 0..200 {
            listed = watcher
                .lobby_list(&game, "", "", 0, "", 100)
                .await
                .unwrap()
                .lobbies
                .len();
            if listed > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(listed, 1);
        assert!(!creating.is_finished(), "the reply was not read yet");
        client.drop_connection_for_tests();
        // Draining lets the reader go on; it drops the connection first.
        let mut resumed = false;
        let lobby = loop {
            tokio::select! {
                created = &mut creating => break created.unwrap(),
                event = events.next() => match event {
                    Some(Event::Reconnected { resumed: r, .. }) => resumed = r,
                    Some(Event::SessionReset) | None => panic!("the resume must succeed"),
                    Some(_) => {}
                },
            }
        };
        let lobby = lobby.expect("the replayed reply resolves it");
        if !resumed {
            expect_resumed(&mut events).await;
        }
        let page = watcher.lobby_list(&game, "", "", 0, "", 100).await.unwrap();
        let ids: Vec<&str> = page.lobbies.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, vec![lobby.id.as_str()], "created once");
        client.close().await;
        watcher.close().await;
    }
}
