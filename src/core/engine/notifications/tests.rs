//! Tests of the notification engine, driven with a virtual clock; they never
//! touch I/O.

use super::*;
use std::time::Instant;

fn now(ms: i64) -> Now {
    Now {
        mono: Instant::now(),
        unix_ms: ms,
    }
}

fn engine(push: bool, max: usize) -> Notifications {
    Notifications::new(
        NotificationLimits {
            push_configured: push,
            email_configured: false,
            max_per_user: max,
        },
        1,
        0,
    )
}

fn what(title: &str, channels: Vec<Channel>) -> Arc<NewNotification> {
    Arc::new(NewNotification {
        kind: "announcement".into(),
        title: title.into(),
        body: "body".into(),
        data: String::new(),
        channels,
    })
}

fn create(n: &mut Notifications, ms: i64, user: &str, w: Arc<NewNotification>) -> Vec<Effect> {
    let mut out = Vec::new();
    let cmd = Command::Create {
        users: vec![Arc::from(user)],
        what: w,
    };
    n.handle(now(ms), cmd, &mut out);
    out
}

fn run(n: &mut Notifications, cmd: Command) -> Vec<Effect> {
    let mut out = Vec::new();
    n.handle(now(10_000), cmd, &mut out);
    out
}

fn page_of(n: &mut Notifications, user: &str) -> Vec<Arc<Notification>> {
    let out = run(
        n,
        Command::List {
            request_id: 1,
            user: Arc::from(user),
            before_id: 0,
            limit: 10,
            unread_only: false,
        },
    );
    match &out[0] {
        Effect::Reply {
            reply: Reply::NotificationPage { notifications, .. },
            ..
        } => notifications.clone(),
        other => panic!("{other:?}"),
    }
}

fn page(n: &mut Notifications, user: &str, before: u64, limit: usize) -> (Vec<u64>, bool) {
    let out = run(
        n,
        Command::List {
            request_id: 1,
            user: Arc::from(user),
            before_id: before,
            limit,
            unread_only: false,
        },
    );
    match &out[0] {
        Effect::Reply {
            reply:
                Reply::NotificationPage {
                    notifications,
                    has_more,
                    ..
                },
            ..
        } => (notifications.iter().map(|n| n.id).collect(), *has_more),
        other => panic!("{other:?}"),
    }
}

#[test]
fn create_stores_pushes_counts_and_dispatches_only_configured_channels() {
    let mut n = engine(true, 10);
    let out = create(
        &mut n,
        1_000,
        "alice",
        what("hi", vec![Channel::Push, Channel::Email, Channel::Push]),
    );
    let stored = out.iter().find_map(|e| match e {
        Effect::Persist(Record::Notification(n)) => Some(n.clone()),
        _ => None,
    });
    let stored = stored.expect("stored");
    let states: Vec<_> = stored
        .channels
        .iter()
        .map(|c| (c.channel, c.state, c.error.clone()))
        .collect();
    assert_eq!(
        states,
        vec![
            (Channel::InApp, DeliveryState::Sent, None),
            (Channel::Push, DeliveryState::Pending, None),
            (
                Channel::Email,
                DeliveryState::Failed,
                Some("email is not configured".into())
            ),
        ]
    );
    let dispatched: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Dispatch(d) => Some(d.channel),
            _ => None,
        })
        .collect();
    assert_eq!(dispatched, vec![Channel::Push]);
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::ToUser {
            event: Event::NotificationCount {
                total: 1,
                unread: 1
            },
            ..
        }
    )));
    run(
        &mut n,
        Command::Delivered(Outcome {
            user: Arc::from("alice"),
            id: stored.id,
            channel: Channel::Push,
            attempts: 3,
            result: Ok(()),
        }),
    );
    let page = page_of(&mut n, "alice");
    let push = page[0]
        .channels
        .iter()
        .find(|c| c.channel == Channel::Push)
        .unwrap();
    assert_eq!(
        (push.state, push.attempts),
        (DeliveryState::Sent, 3),
        "the outbox's outcome is recorded on the channel"
    );
}

#[test]
fn list_is_newest_first_and_paginates() {
    let mut n = engine(false, 100);
    for i in 0..5 {
        create(&mut n, 1_000 + i, "alice", what("x", vec![]));
    }
    let (first, more) = page(&mut n, "alice", 0, 3);
    assert!(more && first.len() == 3 && first.windows(2).all(|w| w[0] > w[1]));
    let (rest, more) = page(&mut n, "alice", first[2], 3);
    assert!(!more && rest.len() == 2 && rest[0] < first[2]);
    assert!(matches!(
        run(
            &mut n,
            Command::List {
                request_id: 1,
                user: Arc::from("alice"),
                before_id: 0,
                limit: 101,
                unread_only: false
            }
        )[0],
        Effect::Fail { .. }
    ));
}

#[test]
fn mark_read_delete_and_another_users_ids_are_not_found() {
    let mut n = engine(false, 100);
    create(&mut n, 1_000, "alice", what("a", vec![]));
    create(&mut n, 1_001, "alice", what("b", vec![]));
    let (ids, _) = page(&mut n, "alice", 0, 10);
    let foreign = run(
        &mut n,
        Command::MarkRead {
            request_id: 1,
            user: Arc::from("bob"),
            id: Some(ids[0]),
        },
    );
    assert!(
        matches!(&foreign[0], Effect::Fail { failure, .. } if failure.refusal == Refusal::NotificationNotFound)
    );
    let out = run(
        &mut n,
        Command::Delete {
            request_id: 1,
            user: Arc::from("bob"),
            id: ids[0],
        },
    );
    assert!(matches!(&out[0], Effect::Fail { .. }));
    assert_eq!(n.counts("alice"), (2, 2), "refusals changed nothing");
    run(
        &mut n,
        Command::MarkRead {
            request_id: 1,
            user: Arc::from("alice"),
            id: Some(ids[0]),
        },
    );
    assert_eq!(n.counts("alice"), (2, 1));
    run(
        &mut n,
        Command::MarkRead {
            request_id: 1,
            user: Arc::from("alice"),
            id: None,
        },
    );
    assert_eq!(n.counts("alice"), (2, 0));
    run(
        &mut n,
        Command::Delete {
            request_id: 1,
            user: Arc::from("alice"),
            id: ids[1],
        },
    );
    assert_eq!(n.counts("alice"), (1, 0));
}

#[test]
fn retention_drops_the_oldest_read_one_first_and_says_so_to_the_store() {
    let mut n = engine(false, 2);
    create(&mut n, 1_000, "alice", what("old", vec![]));
    create(&mut n, 1_001, "alice", what("read", vec![]));
    let (ids, _) = page(&mut n, "alice", 0, 10);
    run(
        &mut n,
        Command::MarkRead {
            request_id: 1,
            user: Arc::from("alice"),
            id: Some(ids[0]),
        },
    );
    let out = create(&mut n, 1_002, "alice", what("new", vec![]));
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Persist(Record::NotificationDeleted { id, .. }) if *id == ids[0]
    )));
    assert_eq!(n.counts("alice"), (2, 2));
}

/// The notification `event` creates, with its data parsed (key order is
/// serde_json's business).
fn notified(event: DomainEvent) -> Option<(String, NewNotification, serde_json::Value)> {
    let (user, what) = for_event(&event)?;
    let data = serde_json::from_str(&what.data).expect("the data is JSON");
    Some((user.to_string(), what, data))
}

fn id(s: &str) -> Arc<str> {
    Arc::from(s)
}

#[test]
fn a_friend_request_notifies_its_target() {
    let (user, what, data) = notified(DomainEvent::FriendshipRequested {
        from: id("ann"),
        to: id("ben"),
    })
    .expect("a request notifies");
    assert_eq!(user, "ben");
    assert_eq!(what.kind, "friend.request");
    assert_eq!(what.title, "Friend request");
    assert_eq!(what.body, "ann wants to be your friend");
    assert_eq!(data, serde_json::json!({ "from": "ann" }));
    assert_eq!(what.channels, vec![Channel::InApp, Channel::Push]);
}

#[test]
fn an_accepted_request_notifies_the_requester() {
    let (user, what, data) = notified(DomainEvent::FriendshipAccepted {
        by: id("ben"),
        requester: id("ann"),
    })
    .expect("an acceptance notifies");
    assert_eq!(user, "ann");
    assert_eq!(what.kind, "friend.accepted");
    assert_eq!(what.title, "Friend request accepted");
    assert_eq!(what.body, "ben accepted your friend request");
    assert_eq!(data, serde_json::json!({ "by": "ben" }));
    assert_eq!(what.channels, vec![Channel::InApp, Channel::Push]);
}

#[test]
fn a_declined_request_notifies_the_requester() {
    let (user, what, data) = notified(DomainEvent::FriendshipRejected {
        by: id("ben"),
        requester: id("ann"),
    })
    .expect("a rejection notifies");
    assert_eq!(user, "ann");
    assert_eq!(what.kind, "friend.rejected");
    assert_eq!(what.title, "Friend request declined");
    assert_eq!(what.body, "ben declined your friend request");
    assert_eq!(data, serde_json::json!({ "by": "ben" }));
    assert_eq!(what.channels, vec![Channel::InApp, Channel::Push]);
}

#[test]
fn a_lobby_invitation_notifies_the_invitee() {
    let (user, what, data) = notified(DomainEvent::LobbyInvited {
        lobby_id: id("L1"),
        game: id("arena"),
        inviter: id("ann"),
        invitee: id("ben"),
    })
    .expect("an invitation notifies");
    assert_eq!(user, "ben");
    assert_eq!(what.kind, "lobby.invite");
    assert_eq!(what.title, "Lobby invitation");
    assert_eq!(what.body, "ann invited you to a arena lobby");
    assert_eq!(
        data,
        serde_json::json!({ "lobby_id": "L1", "game": "arena", "inviter": "ann" })
    );
    assert_eq!(what.channels, vec![Channel::InApp, Channel::Push]);
}

#[test]
fn other_domain_events_notify_no_one() {
    use super::super::matchmaking::FormedMatch;
    let matched = FormedMatch {
        match_id: id("m1"),
        game: id("arena"),
        mode: id("duo"),
        region: id("eu"),
        teams: 2,
        players: Vec::new(),
        matched_at_ms: 0,
        spread: 0,
        allowed_spread: 0,
        backfill_lobby: None,
    };
    let silent = [
        DomainEvent::UserOnline { user: id("ann") },
        DomainEvent::UserOffline { user: id("ann") },
        DomainEvent::ChatMessageSent {
            chat_id: id("direct:ann:ben"),
            message_id: 1,
            sender: id("ann"),
        },
        DomainEvent::LobbyCreated {
            lobby_id: id("L1"),
            game: id("arena"),
        },
        DomainEvent::LobbyUpdated { lobby_id: id("L1") },
        DomainEvent::LobbyClosed { lobby_id: id("L1") },
        DomainEvent::LobbyMemberJoined {
            lobby_id: id("L1"),
            user: id("ann"),
        },
        DomainEvent::LobbyMemberLeft {
            lobby_id: id("L1"),
            user: id("ann"),
        },
        DomainEvent::MatchmakingStarted {
            request_id: id("1@arena"),
            game: id("arena"),
            mode: id("duo"),
            users: vec![id("ann")],
            party: None,
        },
        DomainEvent::MatchmakingMatched {
            matched: Box::new(matched),
            lobby_id: id("L1"),
        },
        DomainEvent::MatchmakingCancelled {
            request_id: id("1@arena"),
            game: id("arena"),
            users: vec![id("ann")],
            reason: "cancelled",
        },
        DomainEvent::MatchmakingBackfillExpired {
            lobby_id: id("L1"),
            game: id("arena"),
        },
    ];
    for event in silent {
        assert_eq!(for_event(&event), None, "{}", event.name());
    }
}
