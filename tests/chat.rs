//! Chat over real sockets with the SDK, on both transports: the reference
//! design's chat integration tests (§8.2) and every access rule.

mod common;

use std::time::Duration;

use common::*;
use huddle_client::{ChatKind, Client, ContentType, ErrorCode, Event, EventStream};

/// Creates a channel through the operator API.
async fn create_channel(gw: &TestGateway, body: &str) -> String {
    admin_post(gw, "/v1/channels", body).await
}

/// The next chat event (skipping connection events), with a hang guard.
async fn next_chat(events: &mut EventStream) -> Event {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("hang guard")
            .expect("stream open");
        if matches!(
            ev,
            Event::ChatMessage { .. }
                | Event::ChatMember { .. }
                | Event::ChatTyping { .. }
                | Event::ChatRead { .. }
                | Event::ChatMessageUpdated { .. }
                | Event::ChatMessageDeleted { .. }
        ) {
            return ev;
        }
    }
}

fn code(err: huddle_client::ClientError) -> ErrorCode {
    err.code()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"))
}

#[tokio::test]
async fn a_channel_broadcast_reaches_every_member_with_the_senders_name() {
    let gw = TestGateway::start().await;
    assert!(create_channel(&gw, r#"{"name":"lobby-chat-test"}"#)
        .await
        .contains("200 OK"));
    for url in gw.urls() {
        let (alice, mut alice_ev) = gw.client(&url, "alice").await;
        let (bob, mut bob_ev) = gw.client(&url, "bob").await;
        let joined = alice.chat_join("channel:lobby-chat-test").await.unwrap();
        assert_eq!((joined.kind, joined.members), (ChatKind::CHANNEL, 1));
        let joined = bob.chat_join("channel:lobby-chat-test").await.unwrap();
        assert_eq!(joined.members, 2);
        match next_chat(&mut alice_ev).await {
            Event::ChatMember {
                user, joined: true, ..
            } => assert_eq!(user.id, "bob"),
            other => panic!("alice expected bob's join, got {other:?}"),
        }

        let sent = alice
            .chat_send("channel:lobby-chat-test", "gg", ContentType::TEXT, None)
            .await
            .unwrap();
        for events in [&mut alice_ev, &mut bob_ev] {
            match next_chat(events).await {
                Event::ChatMessage { message, seq } => {
                    assert!(seq > 0, "chat messages are reliable, sequenced events");
                    assert_eq!(message.id, sent.message_id);
                    assert_eq!(message.content, "gg");
                    assert_eq!(message.sender.username, "name-alice");
                    assert_eq!(message.chat_id, "channel:lobby-chat-test");
                }
                other => panic!("expected the message, got {other:?}"),
            }
        }

        // Typing reaches the others only.
        bob.chat_typing("channel:lobby-chat-test", true)
            .await
            .unwrap();
        match next_chat(&mut alice_ev).await {
            Event::ChatTyping {
                user, typing: true, ..
            } => assert_eq!(user.id, "bob"),
            other => panic!("expected bob typing, got {other:?}"),
        }
        alice
            .chat_send(
                "channel:lobby-chat-test",
                "after typing",
                ContentType::TEXT,
                None,
            )
            .await
            .unwrap();
        match next_chat(&mut bob_ev).await {
            Event::ChatMessage { message, .. } => assert_eq!(
                message.content, "after typing",
                "bob got no typing event of his own"
            ),
            other => panic!("expected the message, got {other:?}"),
        }
        let _ = next_chat(&mut alice_ev).await; // alice's own copy

        // Leaving tells the others.
        bob.chat_leave("channel:lobby-chat-test").await.unwrap();
        match next_chat(&mut alice_ev).await {
            Event::ChatMember {
                user,
                joined: false,
                ..
            } => assert_eq!(user.id, "bob"),
            other => panic!("expected bob's leave, got {other:?}"),
        }
        alice.chat_leave("channel:lobby-chat-test").await.unwrap();
        alice.close().await;
        bob.close().await;
    }
}

#[tokio::test]
async fn access_rules_and_their_codes() {
    let gw = TestGateway::start().await;
    create_channel(&gw, r#"{"name":"staff","public":false,"members":["mod1"]}"#).await;
    for url in gw.urls() {
        let (carol, _) = gw.client(&url, "carol").await;
        assert_eq!(
            code(carol.chat_join("channel:missing").await.unwrap_err()),
            ErrorCode::CHAT_NOT_FOUND
        );
        assert_eq!(
            code(carol.chat_join("channel:staff").await.unwrap_err()),
            ErrorCode::ACCESS_DENIED
        );
        assert_eq!(
            code(carol.chat_join("direct:alice:bob").await.unwrap_err()),
            ErrorCode::ACCESS_DENIED
        );
        assert_eq!(
            code(carol.chat_join("lobby:nope").await.unwrap_err()),
            ErrorCode::CHAT_NOT_FOUND
        );
        assert_eq!(
            code(carol.chat_join("party:x").await.unwrap_err()),
            ErrorCode::JOIN_ERROR
        );
        assert_eq!(
            code(
                carol
                    .chat_send("direct:alice:carol", "hi", ContentType::TEXT, None)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::NOT_IN_CHAT
        );
        assert_eq!(
            code(carol.chat_leave("direct:alice:carol").await.unwrap_err()),
            ErrorCode::NOT_IN_CHAT
        );
        let (moderator, _) = gw.client(&url, "mod1").await;
        assert!(moderator.chat_join("channel:staff").await.is_ok());
        carol.close().await;
        moderator.close().await;
    }
}

#[tokio::test]
async fn direct_chats_validate_messages_and_dedupe_retries() {
    let gw = TestGateway::start().await;
    for (n, url) in gw.urls().into_iter().enumerate() {
        // Fresh users per transport: the chat and its nonces outlive sessions.
        let (a, b) = (format!("alice{n}"), format!("bob{n}"));
        let (alice, mut alice_ev) = gw.client(&url, &a).await;
        let (bob, mut bob_ev) = gw.client(&url, &b).await;
        let id = &huddle::core::engine::chat::direct_chat_id(&a, &b);
        assert_eq!(alice.chat_join(id).await.unwrap().kind, ChatKind::DIRECT);
        bob.chat_join(id).await.unwrap();
        let _ = next_chat(&mut alice_ev).await; // bob joined

        let long = "x".repeat(2001);
        assert_eq!(
            code(
                alice
                    .chat_send(id, &long, ContentType::TEXT, None)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::MESSAGE_ERROR
        );
        assert_eq!(
            code(
                alice
                    .chat_send(id, "", ContentType::TEXT, None)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::MESSAGE_ERROR
        );

        let first = alice
            .chat_send(id, "once", ContentType::EMOTE, Some("nonce-1"))
            .await
            .unwrap();
        let retry = alice
            .chat_send(id, "once", ContentType::EMOTE, Some("nonce-1"))
            .await
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.message_id, first.message_id);
        let second = alice
            .chat_send(id, "twice", ContentType::TEXT, Some("nonce-2"))
            .await
            .unwrap();
        assert!(
            second.message_id > first.message_id,
            "message ids are time-ordered"
        );
        let mut got = Vec::new();
        for _ in 0..2 {
            if let Event::ChatMessage { message, .. } = next_chat(&mut bob_ev).await {
                got.push((message.content, message.content_type));
            }
        }
        assert_eq!(
            got,
            vec![
                ("once".to_string(), ContentType::EMOTE),
                ("twice".to_string(), ContentType::TEXT)
            ],
            "the retried send was delivered once"
        );

        // Read receipts and history.
        let ack = bob.chat_read(id, first.message_id).await.unwrap();
        assert_eq!((ack.read_up_to, ack.unread), (first.message_id, 1));
        loop {
            match next_chat(&mut alice_ev).await {
                Event::ChatRead {
                    user_id,
                    read_up_to,
                    ..
                } => {
                    assert_eq!(
                        (user_id.as_str(), read_up_to),
                        (b.as_str(), first.message_id)
                    );
                    break;
                }
                Event::ChatMessage { .. } => continue,
                other => panic!("expected bob's read receipt, got {other:?}"),
            }
        }
        let page = bob.chat_history(id, 0, 1).await.unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].content, "twice");
        assert!(page.has_more);
        let older = bob.chat_history(id, page.messages[0].id, 10).await.unwrap();
        assert_eq!(
            older
                .messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>(),
            vec!["once"]
        );
        assert!(!older.has_more);
        assert_eq!(
            code(bob.chat_history(id, 0, 0).await.unwrap_err()),
            ErrorCode::INVALID_ARGUMENT
        );
        alice.close().await;
        bob.close().await;
    }
}

#[tokio::test]
async fn read_only_channels_and_slow_mode() {
    let gw = TestGateway::start().await;
    create_channel(&gw, r#"{"name":"announcements","read_only":true}"#).await;
    create_channel(&gw, r#"{"name":"spectators","slow_mode_ms":60000}"#).await;
    let url = gw.ws_url.clone();
    let (fan, _) = gw.client(&url, "fan").await;
    let mut op_config = gw.client_config(&url, "caster");
    op_config.token = operator_token("caster");
    let (caster, _) = Client::connect(op_config).await.unwrap();
    fan.chat_join("channel:announcements").await.unwrap();
    caster.chat_join("channel:announcements").await.unwrap();
    assert_eq!(
        code(
            fan.chat_send("channel:announcements", "hi", ContentType::TEXT, None)
                .await
                .unwrap_err()
        ),
        ErrorCode::ACCESS_DENIED
    );
    assert!(caster
        .chat_send(
            "channel:announcements",
            "round 2 starts",
            ContentType::SYSTEM,
            None
        )
        .await
        .is_ok());

    let joined = fan.chat_join("channel:spectators").await.unwrap();
    assert_eq!(joined.slow_mode_ms, 60000);
    fan.chat_send("channel:spectators", "first", ContentType::TEXT, None)
        .await
        .unwrap();
    let err = fan
        .chat_send("channel:spectators", "second", ContentType::TEXT, None)
        .await
        .unwrap_err();
    assert_eq!(code(err.clone()), ErrorCode::RATE_LIMITED);
    assert!(matches!(
        err,
        huddle_client::ClientError::Server {
            retryable: true,
            ..
        }
    ));
}

#[tokio::test]
async fn a_closed_connection_leaves_its_chats() {
    let gw = TestGateway::start().await;
    create_channel(&gw, r#"{"name":"hall"}"#).await;
    for url in gw.urls() {
        let (stay, mut stay_ev) = gw.client(&url, "stayer").await;
        let (go, _) = gw.client(&url, "goer").await;
        stay.chat_join("channel:hall").await.unwrap();
        go.chat_join("channel:hall").await.unwrap();
        let _ = next_chat(&mut stay_ev).await; // goer joined
        go.close().await;
        match next_chat(&mut stay_ev).await {
            Event::ChatMember {
                user,
                joined: false,
                ..
            } => assert_eq!(user.id, "goer"),
            other => panic!("expected goer to leave, got {other:?}"),
        }
        stay.chat_leave("channel:hall").await.unwrap();
        stay.close().await;
    }
}

fn operator_token(user: &str) -> String {
    let mut c = claims(user);
    c.roles = vec!["operator".into()];
    sign(
        &c,
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

#[tokio::test]
async fn authors_edit_and_delete_operators_mute() {
    let gw = TestGateway::start().await;
    create_channel(&gw, r#"{"name":"general"}"#).await;
    for (n, url) in gw.urls().into_iter().enumerate() {
        let chat = "channel:general";
        let (author, mut author_ev) = gw.client(&url, &format!("author{n}")).await;
        let (other, mut other_ev) = gw.client(&url, &format!("other{n}")).await;
        let mut op_config = gw.client_config(&url, &format!("mod{n}"));
        op_config.token = operator_token(&format!("mod{n}"));
        let (moderator, _) = Client::connect(op_config).await.unwrap();
        author.chat_join(chat).await.unwrap();
        other.chat_join(chat).await.unwrap();
        moderator.chat_join(chat).await.unwrap();

        let sent = author
            .chat_send(chat, "teh plan", ContentType::TEXT, None)
            .await
            .unwrap();
        assert_eq!(
            code(
                other
                    .chat_edit(chat, sent.message_id, "my plan")
                    .await
                    .unwrap_err()
            ),
            ErrorCode::ACCESS_DENIED,
            "only the author edits"
        );
        author
            .chat_edit(chat, sent.message_id, "the plan")
            .await
            .unwrap();
        loop {
            match next_chat(&mut other_ev).await {
                Event::ChatMessageUpdated { message, .. } => {
                    assert_eq!(
                        (message.id, message.content.as_str()),
                        (sent.message_id, "the plan")
                    );
                    assert!(message.edited_at_ms > 0);
                    break;
                }
                Event::ChatMessage { .. } | Event::ChatMember { .. } => continue,
                other => panic!("expected the edit, got {other:?}"),
            }
        }
        moderator.chat_delete(chat, sent.message_id).await.unwrap();
        loop {
            match next_chat(&mut author_ev).await {
                Event::ChatMessageDeleted {
                    message_id,
                    deleted_by,
                    ..
                } => {
                    assert_eq!(
                        (message_id, deleted_by),
                        (sent.message_id, format!("mod{n}"))
                    );
                    break;
                }
                Event::ChatMessage { .. }
                | Event::ChatMember { .. }
                | Event::ChatMessageUpdated { .. } => continue,
                other => panic!("expected the delete, got {other:?}"),
            }
        }
        let page = other.chat_history(chat, 0, 1).await.unwrap();
        assert!(
            page.messages[0].deleted && page.messages[0].content.is_empty(),
            "a tombstone stays in history"
        );

        assert_eq!(
            code(
                author
                    .chat_mute(chat, &format!("other{n}"), 60_000)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::ACCESS_DENIED,
            "members cannot mute"
        );
        assert!(
            moderator
                .chat_mute(chat, &format!("other{n}"), 60_000)
                .await
                .unwrap()
                > 0
        );
        let err = other
            .chat_send(chat, "hello?", ContentType::TEXT, None)
            .await
            .unwrap_err();
        assert_eq!(code(err), ErrorCode::ACCESS_DENIED);
        assert_eq!(
            moderator
                .chat_mute(chat, &format!("other{n}"), 0)
                .await
                .unwrap(),
            0
        );
        assert!(other
            .chat_send(chat, "thanks", ContentType::TEXT, None)
            .await
            .is_ok());
    }
}

#[tokio::test]
async fn history_survives_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
    let chat = "direct:keeper:reader";
    let mut ids = Vec::new();
    {
        let gw = TestGateway::start_in(dir.path(), |_| {}).await;
        let (keeper, _) = gw.client(&gw.ws_url, "keeper").await;
        keeper.chat_join(chat).await.unwrap();
        for i in 0..5 {
            let nonce = format!("keeper-{i}");
            let sent = keeper
                .chat_send(chat, &format!("note {i}"), ContentType::TEXT, Some(&nonce))
                .await
                .unwrap();
            ids.push(sent.message_id);
        }
        keeper
            .chat_edit(chat, ids[1], "note 1 (edited)")
            .await
            .unwrap();
        keeper.chat_delete(chat, ids[2]).await.unwrap();
        let (reader, _) = gw.client(&gw.ws_url, "reader").await;
        reader.chat_join(chat).await.unwrap();
        reader.chat_read(chat, ids[3]).await.unwrap();
        reader.close().await;
        keeper.close().await;
        assert!(gw.shutdown().await, "clean shutdown flushes history");
    }
    let gw = TestGateway::start_in(dir.path(), |_| {}).await;
    for url in gw.urls() {
        let (reader, _) = gw.client(&url, "reader").await;
        let joined = reader.chat_join(chat).await.unwrap();
        assert_eq!(joined.read_up_to, ids[3], "the read cursor is read back");
        let unread = reader.chat_unread(&[chat]).await.unwrap();
        assert_eq!(
            (unread[0].unread, unread[0].last_message_id),
            (1, ids[4]),
            "unread counts cover the stored messages"
        );
        let page = reader.chat_history(chat, 0, 3).await.unwrap();
        let got: Vec<(u64, String, bool)> = page
            .messages
            .iter()
            .map(|m| (m.id, m.content.clone(), m.deleted))
            .collect();
        assert_eq!(
            got,
            vec![
                (ids[4], "note 4".into(), false),
                (ids[3], "note 3".into(), false),
                (ids[2], String::new(), true)
            ]
        );
        assert!(page.has_more);
        let rest = reader.chat_history(chat, ids[2], 10).await.unwrap();
        let got: Vec<&str> = rest.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(got, vec!["note 1 (edited)", "note 0"]);
        assert!(!rest.has_more);
        reader.close().await;
    }
    // New messages after the restart join the stored ones, and stored
    // messages can still be edited.
    let (keeper, _) = gw.client(&gw.ws_url, "keeper").await;
    keeper.chat_join(chat).await.unwrap();
    let retry = keeper
        .chat_send(chat, "note 4", ContentType::TEXT, Some("keeper-4"))
        .await
        .unwrap();
    assert_eq!(
        (retry.message_id, retry.duplicate),
        (ids[4], true),
        "a send retried across the restart is not posted twice"
    );
    keeper
        .chat_edit(chat, ids[4], "note 4 (edited after restart)")
        .await
        .unwrap();
    let (reader, _) = gw.client(&gw.ws_url, "reader").await;
    reader.chat_join(chat).await.unwrap();
    let sent = reader
        .chat_send(chat, "back again", ContentType::TEXT, None)
        .await
        .unwrap();
    assert!(
        sent.message_id > ids[4],
        "ids keep increasing across a restart"
    );
    let page = reader.chat_history(chat, 0, 2).await.unwrap();
    assert_eq!(page.messages[0].content, "back again");
    assert_eq!(page.messages[1].id, ids[4]);
    assert_eq!(page.messages[1].content, "note 4 (edited after restart)");
}

#[tokio::test]
async fn unread_counts_across_chats_and_shards() {
    let gw = TestGateway::start().await;
    create_channel(&gw, r#"{"name":"news-a"}"#).await;
    create_channel(&gw, r#"{"name":"news-b"}"#).await;
    create_channel(&gw, r#"{"name":"vip","public":false}"#).await;
    for (n, url) in gw.urls().into_iter().enumerate() {
        let (writer, _) = gw.client(&url, &format!("writer{n}")).await;
        let (reader, _) = gw.client(&url, &format!("reader{n}")).await;
        let chats = ["channel:news-a", "channel:news-b"];
        for chat in chats {
            writer.chat_join(chat).await.unwrap();
            reader.chat_join(chat).await.unwrap();
        }
        let mut last = 0;
        for i in 0..3 {
            last = writer
                .chat_send(chats[0], &format!("a{i}"), ContentType::TEXT, None)
                .await
                .unwrap()
                .message_id;
        }
        writer
            .chat_send(chats[1], "b0", ContentType::TEXT, None)
            .await
            .unwrap();
        let before = reader.chat_unread(&chats).await.unwrap();
        let a0 = before[0].clone();
        reader.chat_read(chats[0], last).await.unwrap();
        let after = reader.chat_unread(&chats).await.unwrap();
        assert_eq!(
            after.iter().map(|r| r.chat_id.as_str()).collect::<Vec<_>>(),
            chats,
            "rows in the order asked"
        );
        assert_eq!(after[0].unread, 0);
        assert_eq!(after[0].read_up_to, last);
        assert_eq!(after[1].unread, before[1].unread);
        assert_eq!(
            a0.unread,
            3 * (n as u32 + 1),
            "a new reader has every message of news-a unread (3 per round so far)"
        );
        assert_eq!(
            code(reader.chat_unread(&["channel:vip"]).await.unwrap_err()),
            ErrorCode::ACCESS_DENIED
        );
        let too_many: Vec<String> = (0..101).map(|i| format!("channel:x{i}")).collect();
        let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
        assert_eq!(
            code(reader.chat_unread(&refs).await.unwrap_err()),
            ErrorCode::INVALID_ARGUMENT
        );
    }
}

#[tokio::test]
async fn a_rejoin_right_after_leaving_sees_the_message_and_its_nonce() {
    // The direct chat goes cold when its last session leaves: the rejoin
    // reads it back from the store while the writer may still hold the
    // message. It must come back, and a retry of its nonce stays a retry.
    let gw = TestGateway::start().await;
    let chat = "direct:quick:quiet";
    for round in 0..5 {
        let (quick, _) = gw.client(&gw.ws_url, "quick").await;
        quick.chat_join(chat).await.unwrap();
        let nonce = format!("quick-{round}");
        let text = format!("round {round}");
        let sent = quick
            .chat_send(chat, &text, ContentType::TEXT, Some(&nonce))
            .await
            .unwrap();
        quick.close().await;
        let (again, _) = gw.client(&gw.ws_url, "quick").await;
        again.chat_join(chat).await.unwrap();
        let retry = again
            .chat_send(chat, &text, ContentType::TEXT, Some(&nonce))
            .await
            .unwrap();
        assert!(
            retry.duplicate,
            "round {round}: the nonce survived the cold rejoin"
        );
        assert_eq!(retry.message_id, sent.message_id);
        let page = again.chat_history(chat, 0, 50).await.unwrap();
        assert_eq!(
            page.messages.len(),
            round + 1,
            "round {round}: every message, once"
        );
        assert_eq!(page.messages[0].id, sent.message_id);
        again.close().await;
    }
}
