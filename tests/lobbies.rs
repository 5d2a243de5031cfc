//! Lobbies over real sockets with the SDK, on both transports: the flows of
//! the lobby issue (create, join, ready, host migration, kick from another
//! device, disconnect grace, invitations, listing, one lobby per game,
//! bulk creation through the operator API) and their refusals.

mod common;

use std::time::Duration;

use common::*;
use huddle_client::{
    ContentType, ErrorCode, Event, EventStream, LobbyChanges, LobbyEvent, LobbyEventKind,
    LobbyStatus, LobbyVisibility, NewLobby,
};

/// The next lobby event that `want` accepts, skipping others.
async fn lobby_event(events: &mut EventStream, want: LobbyEventKind) -> LobbyEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("hang guard: the lobby event never came")
            .expect("stream open");
        if let Event::Lobby { event, .. } = ev {
            if event.kind == want {
                return event;
            }
        }
    }
}

async fn chat_text(events: &mut EventStream) -> (String, String) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("hang guard")
            .expect("stream open");
        if let Event::ChatMessage { message, .. } = ev {
            return (message.sender.username, message.content);
        }
    }
}

fn code(err: huddle_client::ClientError) -> ErrorCode {
    err.code()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"))
}

fn names(url: &str, base: &[&str]) -> Vec<String> {
    let t = if url.starts_with("quic") { "q" } else { "w" };
    base.iter().map(|b| format!("{b}-{t}")).collect()
}

#[tokio::test]
async fn create_join_ready_chat_host_migration_and_close_over_both_transports() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let n = names(&url, &["hana", "ivo", "jade"]);
        let (h, mut h_ev) = gw.client(&url, &n[0]).await;
        let (i, mut i_ev) = gw.client(&url, &n[1]).await;
        let (j, mut j_ev) = gw.client(&url, &n[2]).await;
        let mut new = NewLobby::new("arena", "duo", "eu", 2, 3);
        new.settings = vec![("map".into(), "docks".into())];
        let lobby = h.lobby_create(&new).await.unwrap();
        assert_eq!(lobby.host, n[0]);
        assert_eq!(lobby.members.len(), 1);
        assert_eq!(
            lobby.settings,
            vec![("map".to_string(), "docks".to_string())]
        );
        let id = lobby.id.clone();

        let joined = i.lobby_join(&id, "").await.unwrap();
        assert_eq!(joined.members.len(), 2, "the joiner gets the full state");
        let e = lobby_event(&mut h_ev, LobbyEventKind::MEMBER_JOINED).await;
        assert_eq!(e.user.unwrap().id, n[1]);
        assert!(e.version > lobby.version);

        // The lobby chat was joined for both sessions on create and join.
        let chat = format!("lobby:{id}");
        i.chat_send(&chat, "glhf", ContentType::TEXT, None)
            .await
            .unwrap();
        let (sender, text) = chat_text(&mut h_ev).await;
        assert!(
            sender.ends_with(&n[1]) && text == "glhf",
            "{sender}: {text}"
        );

        h.lobby_ready(&id, true).await.unwrap();
        let ready = i.lobby_ready(&id, true).await.unwrap();
        assert_eq!(ready.status, LobbyStatus::READY);
        lobby_event(&mut h_ev, LobbyEventKind::ALL_READY).await;
        // A third member joining unready reverts it.
        j.lobby_join(&id, "").await.unwrap();
        lobby_event(&mut i_ev, LobbyEventKind::NOT_READY).await;

        // Host only.
        assert_eq!(
            code(i.lobby_kick(&id, &n[2], "").await.unwrap_err()),
            ErrorCode::NOT_HOST
        );
        let changes = LobbyChanges {
            lock: Some(true),
            ..Default::default()
        };
        assert_eq!(
            code(i.lobby_update(&id, &changes).await.unwrap_err()),
            ErrorCode::NOT_HOST
        );
        let updated = h.lobby_update(&id, &changes).await.unwrap();
        assert!(updated.locked);
        let e = lobby_event(&mut j_ev, LobbyEventKind::UPDATED).await;
        assert!(e.lobby.is_some_and(|l| l.locked));

        // The host leaves: the longest present takes over.
        h.lobby_leave(&id).await.unwrap();
        let e = lobby_event(&mut i_ev, LobbyEventKind::HOST_CHANGED).await;
        assert_eq!(e.user.unwrap().id, n[1]);
        assert_eq!(i.lobby_get(&id).await.unwrap().host, n[1]);
        assert_eq!(
            code(
                h.chat_send(&chat, "still here?", ContentType::TEXT, None)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::NOT_IN_CHAT,
            "leaving the lobby leaves its chat"
        );

        let started = i.lobby_start(&id, "10.1.2.3:7777").await.unwrap();
        assert_eq!(started.status, LobbyStatus::IN_GAME);
        let e = lobby_event(&mut j_ev, LobbyEventKind::STARTED).await;
        assert_eq!(e.lobby.unwrap().connection, "10.1.2.3:7777");

        i.lobby_close(&id).await.unwrap();
        lobby_event(&mut j_ev, LobbyEventKind::CLOSED).await;
        assert_eq!(
            code(j.lobby_get(&id).await.unwrap_err()),
            ErrorCode::LOBBY_NOT_FOUND
        );
        for c in [h, i, j] {
            c.close().await;
        }
    }
}

#[tokio::test]
async fn kick_reaches_every_device_of_the_target_and_bars_a_rejoin() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let n = names(&url, &["kai", "lea"]);
        let (k, _k_ev) = gw.client(&url, &n[0]).await;
        let (phone, mut phone_ev) = gw.client(&url, &n[1]).await;
        let (_pc, mut pc_ev) = gw.client(&url, &n[1]).await;
        let id = k
            .lobby_create(&NewLobby::new("arena", "duo", "eu", 1, 4))
            .await
            .unwrap()
            .id;
        phone.lobby_join(&id, "").await.unwrap();
        assert_eq!(
            code(k.lobby_kick(&id, &n[0], "").await.unwrap_err()),
            ErrorCode::KICK_ERROR
        );
        let after = k.lobby_kick(&id, &n[1], "toxic").await.unwrap();
        assert_eq!(after.members.len(), 1);
        for events in [&mut phone_ev, &mut pc_ev] {
            let e = lobby_event(events, LobbyEventKind::KICKED).await;
            assert_eq!(e.reason, "toxic");
            assert_eq!(e.lobby_id, id);
        }
        let refused = phone.lobby_join(&id, "").await.unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::LOBBY_ERROR));
        assert!(refused.to_string().contains("kicked"), "{refused}");
        assert_eq!(
            code(
                phone
                    .chat_send(&format!("lobby:{id}"), "hey", ContentType::TEXT, None)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::NOT_IN_CHAT
        );
    }
}

#[tokio::test]
async fn a_disconnected_member_keeps_the_slot_until_the_grace_period_ends() {
    let gw = TestGateway::start_with(|c| c.lobbies.grace_ms = 1_500).await;
    let url = gw.ws_url.clone();
    let (m, mut m_ev) = gw.client(&url, "mia").await;
    let id = m
        .lobby_create(&NewLobby::new("arena", "duo", "eu", 1, 4))
        .await
        .unwrap()
        .id;
    let (n, _) = gw.client(&url, "ned").await;
    n.lobby_join(&id, "").await.unwrap();
    n.close().await;
    let e = lobby_event(&mut m_ev, LobbyEventKind::MEMBER_DISCONNECTED).await;
    assert_eq!(e.user.unwrap().id, "ned");
    let state = m.lobby_get(&id).await.unwrap();
    let ned = state.members.iter().find(|x| x.user.id == "ned").unwrap();
    assert!(!ned.connected, "still a member, marked disconnected");

    // Back within the grace period: still in.
    let (n, _) = gw.client(&url, "ned").await;
    lobby_event(&mut m_ev, LobbyEventKind::MEMBER_RECONNECTED).await;
    assert!(n
        .lobby_get(&id)
        .await
        .unwrap()
        .members
        .iter()
        .any(|x| x.user.id == "ned" && x.connected));

    // Gone for longer: out.
    n.close().await;
    lobby_event(&mut m_ev, LobbyEventKind::MEMBER_DISCONNECTED).await;
    let e = lobby_event(&mut m_ev, LobbyEventKind::MEMBER_LEFT).await;
    assert_eq!(e.user.unwrap().id, "ned");
    assert_eq!(m.lobby_get(&id).await.unwrap().members.len(), 1);
}

#[tokio::test]
async fn refusals_invitations_listing_and_one_lobby_per_game() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let n = names(&url, &["ola", "pim", "quin"]);
        let (o, mut o_ev) = gw.client(&url, &n[0]).await;
        let (p, mut p_ev) = gw.client(&url, &n[1]).await;
        let (q, _q_ev) = gw.client(&url, &n[2]).await;

        assert_eq!(
            code(
                o.lobby_create(&NewLobby::new("arena", "duo", "eu", 3, 2))
                    .await
                    .unwrap_err()
            ),
            ErrorCode::INVALID_ARGUMENT,
            "min > max"
        );
        assert_eq!(
            code(o.lobby_join("no-such-lobby", "").await.unwrap_err()),
            ErrorCode::LOBBY_NOT_FOUND
        );

        let mut secret = NewLobby::new("arena", "duo", "eu", 1, 2);
        secret.password = "hunter2".into();
        let id = o.lobby_create(&secret).await.unwrap().id;
        assert_eq!(
            code(p.lobby_join(&id, "wrong").await.unwrap_err()),
            ErrorCode::LOBBY_ERROR
        );
        p.lobby_join(&id, "hunter2").await.unwrap();
        let full = q.lobby_join(&id, "hunter2").await.unwrap_err();
        assert_eq!(full.code(), Some(ErrorCode::LOBBY_ERROR));
        assert!(full.to_string().contains("full"), "{full}");

        // Invite-only: friends may be invited; a block stops invitations.
        let mut closed = NewLobby::new("racer", "solo", "eu", 1, 4);
        closed.visibility = LobbyVisibility::INVITE_ONLY;
        let inv = o.lobby_create(&closed).await.unwrap().id;
        assert_eq!(
            code(q.lobby_join(&inv, "").await.unwrap_err()),
            ErrorCode::ACCESS_DENIED
        );
        assert_eq!(
            code(o.lobby_invite(&inv, &n[2]).await.unwrap_err()),
            ErrorCode::ACCESS_DENIED,
            "not a friend"
        );
        o.friend_request(&n[2]).await.unwrap();
        q.friend_accept(&n[0]).await.unwrap();
        o.lobby_invite(&inv, &n[2]).await.unwrap();
        q.lobby_join(&inv, "").await.unwrap();
        q.lobby_leave(&inv).await.unwrap();
        q.block(&n[0]).await.unwrap();
        assert_eq!(
            code(o.lobby_invite(&inv, &n[2]).await.unwrap_err()),
            ErrorCode::ACCESS_DENIED
        );

        // One lobby per game: joining another arena lobby leaves the first.
        let other = q
            .lobby_create(&NewLobby::new("arena", "duo", "eu", 1, 4))
            .await
            .unwrap()
            .id;
        p.lobby_join(&other, "").await.unwrap();
        let e = loop {
            let e = lobby_event(&mut o_ev, LobbyEventKind::MEMBER_LEFT).await;
            if e.lobby_id == id {
                break e;
            }
        };
        assert_eq!(e.user.unwrap().id, n[1]);
        assert!(e.reason.contains("another lobby"), "{}", e.reason);
        let _ = &mut p_ev;

        // Listing: public, joinable, by game.
        let page = o.lobby_list("arena", "", "", 1, "", 100).await.unwrap();
        assert!(page.lobbies.iter().any(|l| l.id == other));
        assert!(
            page.lobbies.iter().all(|l| l.id != inv),
            "invite-only lobbies are not listed"
        );
        for c in [o, p, q] {
            c.close().await;
        }
    }
}

#[tokio::test]
async fn operators_create_lobbies_in_bulk_with_players_assigned() {
    let gw = TestGateway::start().await;
    let (r, mut r_ev) = gw.client(&gw.ws_url, "rex").await;
    let (s, _s_ev) = gw.client(&gw.quic_url, "sol").await;
    let body = r#"{"lobbies":[
        {"game":"arena","mode":"duo","region":"eu","min":2,"max":2,"players":[{"user_id":"rex","team":0},{"user_id":"sol","team":1}]},
        {"game":"arena","mode":"duo","region":"eu","min":2,"max":2,"players":[{"user_id":"tia","team":0},{"user_id":"uma","team":1}]},
        {"game":"arena","mode":"duo","region":"eu","min":3,"max":2,"players":[]}
    ]}"#;
    let answer = admin_post(&gw, "/v1/lobbies", body).await;
    assert!(answer.contains("200 OK"), "{answer}");
    let json: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap().trim()).unwrap();
    assert_eq!(json["created"].as_array().unwrap().len(), 2);
    assert_eq!(json["failed"][0]["index"], 2, "{json}");
    let id = json["created"][0]["lobby_id"].as_str().unwrap().to_string();

    let n = loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), r_ev.next())
            .await
            .unwrap()
            .unwrap();
        if let Event::Notification { notification, .. } = ev {
            break notification;
        }
    };
    assert_eq!(n.kind, "lobby.assigned");
    assert!(n.data.contains(&id));
    let lobby = s.lobby_get(&id).await.unwrap();
    let teams: Vec<(String, Option<u8>)> = lobby
        .members
        .iter()
        .map(|m| (m.user.id.clone(), m.team))
        .collect();
    assert_eq!(
        teams,
        vec![("rex".into(), Some(0)), ("sol".into(), Some(1))]
    );
    assert_eq!(lobby.visibility, LobbyVisibility::INVITE_ONLY);
    r.chat_join(&format!("lobby:{id}")).await.unwrap();

    // The game backend starts it with the game server's address.
    let answer = admin_post(
        &gw,
        "/v1/lobbies/start",
        &format!(r#"{{"lobby_id":"{id}","connection":"gs-7.example:7777"}}"#),
    )
    .await;
    assert!(answer.contains("200 OK"), "{answer}");
    let e = lobby_event(&mut r_ev, LobbyEventKind::STARTED).await;
    assert_eq!(e.lobby.unwrap().connection, "gs-7.example:7777");
    let missing = admin_post(&gw, "/v1/lobbies/close", r#"{"lobby_id":"nope"}"#).await;
    assert!(missing.contains("404"), "{missing}");

    let answer = admin_post(
        &gw,
        "/v1/lobbies/close",
        &format!(r#"{{"lobby_id":"{id}"}}"#),
    )
    .await;
    assert!(answer.contains("200 OK"), "{answer}");
    lobby_event(&mut r_ev, LobbyEventKind::CLOSED).await;
}
