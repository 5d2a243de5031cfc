//! Friends, blocks and notifications over real sockets with the SDK, on both
//! transports; the webhook outbox against a real local HTTP server; and
//! persistence across a gateway restart.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use huddle_client::{
    Client, ContentType, DeliveryChannel, DeliveryState, ErrorCode, Event, EventStream,
    PresenceStatus, Relation,
};

/// The next event that `pick` accepts, skipping others, with a hang guard.
async fn next_where<T>(events: &mut EventStream, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("hang guard: the event never came")
            .expect("stream open");
        if let Some(t) = pick(ev) {
            return t;
        }
    }
}

async fn friend_update(events: &mut EventStream) -> (String, Relation) {
    next_where(events, |e| match e {
        Event::FriendUpdate {
            user_id, relation, ..
        } => Some((user_id, relation)),
        _ => None,
    })
    .await
}

async fn notification(events: &mut EventStream) -> huddle_client::Notification {
    next_where(events, |e| match e {
        Event::Notification { notification, .. } => Some(notification),
        _ => None,
    })
    .await
}

async fn count(events: &mut EventStream) -> (u32, u32) {
    next_where(events, |e| match e {
        Event::NotificationCount { total, unread, .. } => Some((total, unread)),
        _ => None,
    })
    .await
}

fn code(err: huddle_client::ClientError) -> ErrorCode {
    err.code()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"))
}

/// Two fresh users per transport, so one gateway serves both runs.
fn pair(url: &str, a: &str, b: &str) -> (String, String) {
    let t = if url.starts_with("quic") { "q" } else { "w" };
    (format!("{a}-{t}"), format!("{b}-{t}"))
}

async fn befriend(a: &Client, a_id: &str, b: &Client, b_id: &str) {
    a.friend_request(b_id).await.unwrap();
    b.friend_accept(a_id).await.unwrap();
}

#[tokio::test]
async fn request_accept_list_status_and_remove_over_both_transports() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (a_id, b_id) = pair(&url, "ann", "ben");
        let (a, mut a_ev) = gw.client(&url, &a_id).await;
        let (b, mut b_ev) = gw.client(&url, &b_id).await;

        let sent = a.friend_request(&b_id).await.unwrap();
        assert_eq!(
            (sent.user_id.as_str(), sent.relation),
            (b_id.as_str(), Relation::REQUEST_SENT)
        );
        assert_eq!(
            friend_update(&mut a_ev).await,
            (b_id.clone(), Relation::REQUEST_SENT)
        );
        assert_eq!(
            friend_update(&mut b_ev).await,
            (a_id.clone(), Relation::REQUEST_RECEIVED)
        );
        // friendship.requested creates a notification for the addressee.
        let n = notification(&mut b_ev).await;
        assert_eq!(n.kind, "friend.request");
        assert!(n.body.contains(&a_id), "{n:?}");
        assert!(n.data.contains(&a_id));
        assert_eq!(count(&mut b_ev).await, (1, 1));

        let accepted = b.friend_accept(&a_id).await.unwrap();
        assert_eq!(accepted.relation, Relation::FRIEND);
        assert!(accepted.since_ms > 0);
        assert_eq!(
            friend_update(&mut a_ev).await,
            (b_id.clone(), Relation::FRIEND)
        );
        assert_eq!(notification(&mut a_ev).await.kind, "friend.accepted");
        assert_eq!(
            friend_update(&mut b_ev).await,
            (a_id.clone(), Relation::FRIEND)
        );

        // The list carries each friend's presence.
        let friends = a.friends().await.unwrap();
        assert_eq!(friends.len(), 1);
        assert_eq!(friends[0].user_id, b_id);
        assert_eq!(friends[0].relation, Relation::FRIEND);
        assert_eq!(friends[0].presence.status, PresenceStatus::ONLINE);

        // user:status reaches friends without any follow.
        b.set_status(PresenceStatus::AWAY, "brb", false)
            .await
            .unwrap();
        let (who, status, text) = next_where(&mut a_ev, |e| match e {
            Event::UserStatus {
                user_id,
                status,
                text,
                ..
            } => Some((user_id, status, text)),
            _ => None,
        })
        .await;
        assert_eq!(
            (who.as_str(), status, text.as_str()),
            (b_id.as_str(), PresenceStatus::AWAY, "brb")
        );

        assert_eq!(
            a.friend_remove(&b_id).await.unwrap().relation,
            Relation::NONE
        );
        assert_eq!(
            friend_update(&mut b_ev).await,
            (a_id.clone(), Relation::NONE)
        );
        assert!(a.friends().await.unwrap().is_empty());
        assert!(b.friends().await.unwrap().is_empty());

        // Reject and cancel.
        a.friend_request(&b_id).await.unwrap();
        assert_eq!(
            b.friend_reject(&a_id).await.unwrap().relation,
            Relation::NONE
        );
        assert_eq!(notification(&mut a_ev).await.kind, "friend.rejected");
        a.friend_request(&b_id).await.unwrap();
        assert_eq!(
            a.friend_cancel(&b_id).await.unwrap().relation,
            Relation::NONE
        );
        assert!(b.friends().await.unwrap().is_empty());
        a.close().await;
        b.close().await;
    }
}

#[tokio::test]
async fn blocks_stop_direct_messages_and_requests_and_bad_operations_change_nothing() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (a_id, b_id) = pair(&url, "amy", "bea");
        let (a, _a_ev) = gw.client(&url, &a_id).await;
        let (b, _b_ev) = gw.client(&url, &b_id).await;
        let chat = if a_id < b_id {
            format!("direct:{a_id}:{b_id}")
        } else {
            format!("direct:{b_id}:{a_id}")
        };
        a.chat_join(&chat).await.unwrap();
        b.chat_join(&chat).await.unwrap();
        a.chat_send(&chat, "hi", ContentType::TEXT, None)
            .await
            .unwrap();
        befriend(&a, &a_id, &b, &b_id).await;

        assert_eq!(b.block(&a_id).await.unwrap().relation, Relation::BLOCKED);
        let refused = a
            .chat_send(&chat, "hello?", ContentType::TEXT, None)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::ACCESS_DENIED), "{refused}");
        assert!(refused
            .to_string()
            .contains("does not accept direct messages"));
        let refused = b
            .chat_send(&chat, "bye", ContentType::TEXT, None)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("unblock"), "{refused}");
        assert_eq!(
            code(a.friend_request(&b_id).await.unwrap_err()),
            ErrorCode::ACCESS_DENIED
        );
        assert!(
            a.friends().await.unwrap().is_empty(),
            "the blocked user is not told"
        );
        let blocked = b.friends().await.unwrap();
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0].relation, Relation::BLOCKED);
        assert_eq!(
            blocked[0].presence.status,
            PresenceStatus::OFFLINE,
            "presence is for friends only"
        );

        // Wrong operations: their code, and nothing changes.
        assert_eq!(
            code(a.friend_request(&a_id).await.unwrap_err()),
            ErrorCode::FRIEND_ERROR
        );
        assert_eq!(
            code(a.friend_accept(&b_id).await.unwrap_err()),
            ErrorCode::FRIEND_ERROR
        );
        assert_eq!(
            code(a.friend_remove(&b_id).await.unwrap_err()),
            ErrorCode::FRIEND_ERROR
        );
        assert_eq!(
            code(a.unblock(&b_id).await.unwrap_err()),
            ErrorCode::FRIEND_ERROR
        );
        assert_eq!(
            code(a.friend_request("").await.unwrap_err()),
            ErrorCode::INVALID_ARGUMENT
        );
        assert_eq!(b.friends().await.unwrap(), blocked);

        assert_eq!(b.unblock(&a_id).await.unwrap().relation, Relation::NONE);
        a.chat_send(&chat, "friends again?", ContentType::TEXT, None)
            .await
            .unwrap();
        a.close().await;
        b.close().await;
    }
}

#[tokio::test]
async fn notifications_list_mark_read_delete_and_operator_announcements() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (c_id, d_id) = pair(&url, "cid", "dot");
        let (c, mut c_ev) = gw.client(&url, &c_id).await;
        let (d, mut d_ev) = gw.client(&url, &d_id).await;
        for i in 0..3 {
            let body = format!(
                r#"{{"user_ids":["{c_id}"],"kind":"reward","title":"Reward {i}","data":{{"gold":{i}}}}}"#
            );
            let answer = admin_post(&gw, "/v1/notifications", &body).await;
            assert!(
                answer.contains("200 OK") && answer.contains("\"notified\":1"),
                "{answer}"
            );
            let n = notification(&mut c_ev).await;
            assert_eq!(
                (n.kind.as_str(), n.title.clone()),
                ("reward", format!("Reward {i}"))
            );
            assert_eq!(n.data, format!(r#"{{"gold":{i}}}"#));
            let in_app: Vec<_> = n.channels.iter().map(|ch| (ch.channel, ch.state)).collect();
            assert_eq!(in_app, vec![(DeliveryChannel::IN_APP, DeliveryState::SENT)]);
            assert_eq!(count(&mut c_ev).await, (i + 1, i + 1));
        }
        let page = c.notifications(0, 2, false).await.unwrap();
        assert_eq!((page.total, page.unread, page.has_more), (3, 3, true));
        let titles: Vec<&str> = page
            .notifications
            .iter()
            .map(|n| n.title.as_str())
            .collect();
        assert_eq!(titles, vec!["Reward 2", "Reward 1"], "newest first");
        let rest = c
            .notifications(page.notifications[1].id, 10, false)
            .await
            .unwrap();
        assert_eq!(rest.notifications.len(), 1);
        assert!(!rest.has_more);

        let first = rest.notifications[0].id;
        // Another user's notification: not found, nothing changes.
        assert_eq!(
            code(d.notification_mark_read(first).await.unwrap_err()),
            ErrorCode::NOTIFICATION_NOT_FOUND
        );
        assert_eq!(
            code(d.notification_delete(first).await.unwrap_err()),
            ErrorCode::NOTIFICATION_NOT_FOUND
        );
        assert_eq!(
            code(c.notifications(0, 0, false).await.unwrap_err()),
            ErrorCode::INVALID_ARGUMENT
        );

        let counts = c.notification_mark_read(first).await.unwrap();
        assert_eq!((counts.total, counts.unread), (3, 2));
        assert_eq!(count(&mut c_ev).await, (3, 2));
        let unread = c.notifications(0, 10, true).await.unwrap();
        assert_eq!(unread.notifications.len(), 2);
        let counts = c.notification_mark_all_read().await.unwrap();
        assert_eq!((counts.total, counts.unread), (3, 0));
        let counts = c.notification_delete(first).await.unwrap();
        assert_eq!((counts.total, counts.unread), (2, 0));

        // A server-wide announcement reaches everyone online.
        let answer = admin_post(
            &gw,
            "/v1/notifications",
            r#"{"all_online":true,"title":"Servers restart at 04:00"}"#,
        )
        .await;
        assert!(answer.contains("200 OK"), "{answer}");
        assert_eq!(
            notification(&mut c_ev).await.title,
            "Servers restart at 04:00"
        );
        assert_eq!(notification(&mut d_ev).await.kind, "announcement");
        c.close().await;
        d.close().await;
    }
    // Bad operator requests: 400 with the reason, nothing created.
    for body in [
        r#"{"title":"to nobody"}"#,
        r#"{"user_ids":["x"],"all_online":true,"title":"both"}"#,
        r#"{"user_ids":["x"],"title":""}"#,
        r#"{"user_ids":["x"],"title":"t","channels":["pigeon"]}"#,
    ] {
        let answer = admin_post(&gw, "/v1/notifications", body).await;
        assert!(!answer.contains("200 OK"), "{body} → {answer}");
    }
}

/// A local webhook that fails its first `failures` requests with 500, then
/// answers 200; it records every request's body and idempotency key.
#[derive(Clone, Default)]
struct Hook {
    failures: Arc<Mutex<u32>>,
    seen: Arc<Mutex<Vec<(String, String, serde_json::Value)>>>,
}

async fn start_hook(failures: u32) -> (String, Hook) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    let hook = Hook {
        failures: Arc::new(Mutex::new(failures)),
        ..Hook::default()
    };
    async fn handle(
        State(hook): State<Hook>,
        uri: Uri,
        headers: HeaderMap,
        axum::Json(body): axum::Json<serde_json::Value>,
    ) -> StatusCode {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        hook.seen
            .lock()
            .unwrap()
            .push((uri.path().to_string(), key, body));
        let mut left = hook.failures.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }
    let app = axum::Router::new()
        .fallback(axum::routing::post(handle))
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), hook)
}

/// Polls `user`'s newest notification until `done` holds.
async fn wait_for_notification(
    c: &Client,
    done: impl Fn(&huddle_client::Notification) -> bool,
) -> huddle_client::Notification {
    for _ in 0..200 {
        let page = c.notifications(0, 1, false).await.unwrap();
        if let Some(n) = page.notifications.into_iter().next() {
            if done(&n) {
                return n;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the notification never reached the wanted state");
}

fn channel(n: &huddle_client::Notification, c: DeliveryChannel) -> &huddle_client::ChannelStatus {
    n.channels
        .iter()
        .find(|s| s.channel == c)
        .expect("channel present")
}

#[tokio::test]
async fn push_goes_through_the_outbox_with_retries_and_unconfigured_email_fails() {
    let (hook_url, hook) = start_hook(2).await;
    let (events_url, events) = start_hook(0).await;
    let gw = TestGateway::start_with(|c| {
        c.notifications.push_url = format!("{hook_url}/push");
        c.webhooks.events_url = format!("{events_url}/events");
        c.webhooks.retry_base_ms = 50;
        c.webhooks.token = "hook-secret".into();
    })
    .await;
    let (e, _e_ev) = gw.client(&gw.ws_url, "eve").await;
    let answer = admin_post(
        &gw,
        "/v1/notifications",
        r#"{"user_ids":["eve"],"title":"Match ready","channels":["push","email"]}"#,
    )
    .await;
    assert!(answer.contains("200 OK"), "{answer}");
    let n = wait_for_notification(&e, |n| {
        channel(n, DeliveryChannel::PUSH).state != DeliveryState::PENDING
    })
    .await;
    let push = channel(&n, DeliveryChannel::PUSH);
    assert_eq!(push.state, DeliveryState::SENT, "{push:?}");
    assert_eq!(push.attempts, 3, "two 500s, then 200");
    let email = channel(&n, DeliveryChannel::EMAIL);
    assert_eq!(email.state, DeliveryState::FAILED);
    assert_eq!(email.error, "email is not configured");
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let key = format!("n:{}:push", n.id);
    assert!(seen.iter().all(|(path, k, _)| path == "/push" && *k == key));
    assert_eq!(seen[0].2["notification"]["title"], "Match ready");
    assert_eq!(seen[0].2["user_id"], "eve");

    // Domain events reach the integration webhook, batched.
    let (f, _f_ev) = gw.client(&gw.ws_url, "fay").await;
    f.friend_request("eve").await.unwrap();
    let mut found = None;
    for _ in 0..100 {
        found = events.seen.lock().unwrap().iter().find_map(|(_, _, body)| {
            body["events"].as_array().and_then(|evs| {
                evs.iter()
                    .find(|ev| ev["event"] == "friendship.requested")
                    .cloned()
            })
        });
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = found.expect("friendship.requested reached the integration webhook");
    assert_eq!(event["data"]["from"], "fay");
    assert_eq!(event["data"]["to"], "eve");
}

#[tokio::test]
async fn friends_notifications_and_owed_deliveries_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let season;
    // The push service is down for the whole first run.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    {
        let gw = TestGateway::start_in(dir.path(), |c| {
            c.notifications.push_url = format!("http://{dead}/push");
            c.webhooks.retry_base_ms = 60_000;
        })
        .await;
        let (g, _) = gw.client(&gw.ws_url, "gus").await;
        let (h, _) = gw.client(&gw.ws_url, "hal").await;
        befriend(&g, "gus", &h, "hal").await;
        h.block("ivy").await.unwrap();
        let answer = admin_post(
            &gw,
            "/v1/notifications",
            r#"{"user_ids":["hal"],"title":"Season starts","channels":["push"]}"#,
        )
        .await;
        assert!(answer.contains("200 OK"), "{answer}");
        let n = wait_for_notification(&h, |n| n.title == "Season starts").await;
        assert_eq!(
            channel(&n, DeliveryChannel::PUSH).state,
            DeliveryState::PENDING
        );
        season = n.id;
        g.close().await;
        h.close().await;
        assert!(gw.shutdown().await);
    }
    let (hook_url, hook) = start_hook(0).await;
    let gw = TestGateway::start_in(dir.path(), |c| {
        c.notifications.push_url = format!("{hook_url}/push");
        c.webhooks.retry_base_ms = 50;
    })
    .await;
    for url in gw.urls() {
        let (g, _) = gw.client(&url, "gus").await;
        let (h, _) = gw.client(&url, "hal").await;
        let friends = g.friends().await.unwrap();
        assert_eq!(friends.len(), 1);
        assert_eq!(
            (friends[0].user_id.as_str(), friends[0].relation),
            ("hal", Relation::FRIEND)
        );
        assert_eq!(friends[0].presence.status, PresenceStatus::ONLINE);
        let hal: Vec<_> = h
            .friends()
            .await
            .unwrap()
            .into_iter()
            .map(|f| (f.user_id, f.relation))
            .collect();
        assert_eq!(
            hal,
            vec![
                ("gus".to_string(), Relation::FRIEND),
                ("ivy".to_string(), Relation::BLOCKED)
            ]
        );
        // The push owed from before the restart is delivered now.
        let n = wait_for_notification(&h, |n| {
            n.title == "Season starts"
                && channel(n, DeliveryChannel::PUSH).state == DeliveryState::SENT
        })
        .await;
        let page = h.notifications(0, 10, false).await.unwrap();
        // hal's notifications: the announcement and gus's friend request.
        assert_eq!((page.total, page.unread), (2, 2));
        assert_eq!(page.notifications[0].id, n.id);
        g.close().await;
        h.close().await;
    }
    let key = format!("n:{season}:push");
    let seen = hook.seen.lock().unwrap();
    assert_eq!(
        seen.iter().filter(|(_, k, _)| *k == key).count(),
        1,
        "delivered once"
    );
}
