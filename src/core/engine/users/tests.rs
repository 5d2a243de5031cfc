//! Tests of the users engine (sessions, resume, presence), driven with a
//! virtual clock; they never touch I/O.

use super::*;

struct Clock {
    base: Instant,
    at: Duration,
}
impl Clock {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            at: Duration::ZERO,
        }
    }
    fn now(&self) -> Now {
        Now {
            mono: self.base + self.at,
            unix_ms: 1_700_000_000_000 + self.at.as_millis() as i64,
        }
    }
    fn advance(&mut self, d: Duration) {
        self.at += d;
    }
}

fn uid(s: &str) -> UserId {
    UserId::from(s)
}

/// Runs a command. A status change reads as its delivery to followers
/// (the friends half is the shard's, checked in the integration tests).
fn run(users: &mut Users, clock: &Clock, cmd: Command) -> Vec<Effect> {
    let mut out = Vec::new();
    users.handle(clock.now(), cmd, &mut out);
    followers_only(out)
}

fn followers_only(out: Vec<Effect>) -> Vec<Effect> {
    out.into_iter()
        .filter_map(|e| match e {
            Effect::ToFriends { followers, .. } if followers.is_empty() => None,
            Effect::ToFriends {
                event, followers, ..
            } => Some(Effect::Deliver {
                sessions: followers,
                event,
                reliable: true,
            }),
            other => Some(other),
        })
        .collect()
}

#[test]
fn every_visible_change_goes_to_friends_and_invisible_changes_do_not() {
    let clock = Clock::new();
    let mut users = Users::new(0, Duration::from_secs(30));
    let to_friends = |out: &[Effect]| {
        out.iter()
            .filter_map(|e| match e {
                Effect::ToFriends {
                    event: Event::UserStatus { status, .. },
                    ..
                } => Some(*status),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    let attach = Command::Attach {
        session: 1,
        user: uid("alice"),
        resume_token: 1,
    };
    users.handle(clock.now(), attach, &mut out);
    assert_eq!(to_friends(&out), vec![Status::Online]);
    out.clear();
    let invisible = Command::SetStatus {
        request_id: 1,
        user: uid("alice"),
        status: Status::Busy,
        text: None,
        invisible: true,
    };
    users.handle(clock.now(), invisible, &mut out);
    assert_eq!(to_friends(&out), vec![Status::Offline]);
    out.clear();
    let still_invisible = Command::SetStatus {
        request_id: 2,
        user: uid("alice"),
        status: Status::Away,
        text: None,
        invisible: true,
    };
    users.handle(clock.now(), still_invisible, &mut out);
    assert!(to_friends(&out).is_empty(), "nothing visible changed");
}

fn attach(users: &mut Users, clock: &Clock, session: SessionId, user: &str) -> Vec<Effect> {
    run(
        users,
        clock,
        Command::Attach {
            session,
            user: uid(user),
            resume_token: session as u128 * 7,
        },
    )
}

fn lookup(users: &mut Users, clock: &Clock, user: &str) -> Presence {
    match run(
        users,
        clock,
        Command::Lookup {
            user_ids: vec![uid(user)],
        },
    )
    .pop()
    {
        Some(Effect::Presence(mut rows)) => rows.remove(0),
        other => panic!("expected presence, got {other:?}"),
    }
}

#[test]
fn online_once_offline_after_last_session() {
    let clock = Clock::new();
    let mut users = Users::new(0, Duration::from_secs(30));
    let first = attach(&mut users, &clock, 1, "alice");
    assert_eq!(
        first,
        vec![Effect::Domain(DomainEvent::UserOnline {
            user: uid("alice")
        })]
    );
    assert!(
        attach(&mut users, &clock, 2, "alice").is_empty(),
        "second device: no second online"
    );
    assert_eq!(lookup(&mut users, &clock, "alice").connections, 2);

    let out = run(
        &mut users,
        &clock,
        Command::Detach {
            session: 1,
            resumable: false,
        },
    );
    assert_eq!(out, vec![Effect::SessionEnded { session: 1 }]);
    let out = run(
        &mut users,
        &clock,
        Command::Detach {
            session: 2,
            resumable: false,
        },
    );
    assert_eq!(
        out,
        vec![
            Effect::SessionEnded { session: 2 },
            Effect::Domain(DomainEvent::UserOffline { user: uid("alice") })
        ]
    );
    assert_eq!(lookup(&mut users, &clock, "alice").status, Status::Offline);
}

#[test]
fn detached_session_resumes_inside_the_window_and_expires_after() {
    let mut clock = Clock::new();
    let mut users = Users::new(0, Duration::from_secs(30));
    attach(&mut users, &clock, 9, "bob");
    run(
        &mut users,
        &clock,
        Command::Detach {
            session: 9,
            resumable: true,
        },
    );
    assert_eq!(
        users.poll_timeout(),
        Some(clock.now().mono + Duration::from_secs(30))
    );

    clock.advance(Duration::from_secs(10));
    let wrong = run(
        &mut users,
        &clock,
        Command::Resume {
            session: 9,
            user: uid("bob"),
            resume_token: 1,
            next_token: 63,
        },
    );
    assert_eq!(
        wrong,
        vec![Effect::ResumeRefused {
            session: 9,
            reason: ResumeRefusal::WrongToken
        }]
    );
    let ok = run(
        &mut users,
        &clock,
        Command::Resume {
            session: 9,
            user: uid("bob"),
            resume_token: 63,
            next_token: 63,
        },
    );
    assert_eq!(ok, vec![Effect::ResumeAccepted { session: 9 }]);
    assert_eq!(
        users.poll_timeout(),
        None,
        "resumed sessions have no expiry"
    );

    run(
        &mut users,
        &clock,
        Command::Detach {
            session: 9,
            resumable: true,
        },
    );
    clock.advance(Duration::from_secs(29));
    let mut out = Vec::new();
    users.handle_timeout(clock.now(), &mut out);
    assert!(out.is_empty());
    clock.advance(Duration::from_secs(2));
    users.handle_timeout(clock.now(), &mut out);
    let out = followers_only(out);
    assert_eq!(
        out,
        vec![
            Effect::SessionEnded { session: 9 },
            Effect::Domain(DomainEvent::UserOffline { user: uid("bob") })
        ]
    );
    let late = run(
        &mut users,
        &clock,
        Command::Resume {
            session: 9,
            user: uid("bob"),
            resume_token: 63,
            next_token: 63,
        },
    );
    assert_eq!(
        late,
        vec![Effect::ResumeRefused {
            session: 9,
            reason: ResumeRefusal::UnknownSession
        }]
    );
}

#[test]
fn a_connect_and_drop_loop_cannot_pile_up_sessions() {
    let clock = Clock::new();
    let mut users = Users::new(0, Duration::from_secs(30));
    for session in 1..=20 {
        attach(&mut users, &clock, session, "looper");
        run(
            &mut users,
            &clock,
            Command::Detach {
                session,
                resumable: true,
            },
        );
    }
    assert!(users.session_count() <= MAX_DETACHED_PER_USER + 1);
    assert_eq!(
        lookup(&mut users, &clock, "looper").connections as usize,
        users.session_count()
    );
}

#[test]
fn followers_see_status_changes_and_invisible_users_look_offline() {
    let clock = Clock::new();
    let mut users = Users::new(0, Duration::from_secs(30));
    let follow = run(
        &mut users,
        &clock,
        Command::Follow {
            session: 77,
            targets: vec![uid("erin")],
            follow: true,
        },
    );
    assert!(matches!(&follow[..], [Effect::Presence(rows)] if rows[0].status == Status::Offline));
    let statuses = |out: &[Effect]| -> Vec<(Status, Option<String>)> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Deliver {
                    sessions,
                    event: Event::UserStatus { status, text, .. },
                    ..
                } if sessions == &vec![77] => Some((*status, text.as_deref().map(String::from))),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        statuses(&attach(&mut users, &clock, 1, "erin")),
        vec![(Status::Online, None)]
    );
    let set = |users: &mut Users, status, text: Option<&str>, invisible| {
        run(
            users,
            &clock,
            Command::SetStatus {
                request_id: 3,
                user: uid("erin"),
                status,
                text: text.map(String::from),
                invisible,
            },
        )
    };
    assert_eq!(
        statuses(&set(&mut users, Status::InGame, Some("ranked"), false)),
        vec![(Status::InGame, Some("ranked".into()))]
    );
    assert!(
        statuses(&set(&mut users, Status::InGame, Some("ranked"), false)).is_empty(),
        "no change, no event"
    );
    assert_eq!(
        statuses(&set(&mut users, Status::Away, None, true)),
        vec![(Status::Offline, None)],
        "invisible looks offline"
    );
    assert_eq!(lookup(&mut users, &clock, "erin").status, Status::Offline);
    let long = "x".repeat(MAX_STATUS_TEXT + 1);
    assert!(matches!(
        &set(&mut users, Status::Busy, Some(&long), false)[..],
        [Effect::Fail { .. }]
    ));
    assert!(matches!(
        &set(&mut users, Status::Offline, None, false)[..],
        [Effect::Fail { .. }]
    ));
    set(&mut users, Status::Busy, None, false);
    let out = run(
        &mut users,
        &clock,
        Command::Detach {
            session: 1,
            resumable: false,
        },
    );
    assert_eq!(statuses(&out), vec![(Status::Offline, None)]);
    run(
        &mut users,
        &clock,
        Command::FollowersGone { sessions: vec![77] },
    );
    assert!(
        statuses(&attach(&mut users, &clock, 2, "erin")).is_empty(),
        "a gone follower hears nothing"
    );
}

#[test]
fn echo_to_user_reaches_every_session_of_theirs() {
    let clock = Clock::new();
    let mut users = Users::new(3, Duration::from_secs(30));
    attach(&mut users, &clock, 1, "carol");
    attach(&mut users, &clock, 2, "carol");
    let out = run(
        &mut users,
        &clock,
        Command::Echo {
            request_id: 5,
            from_user: uid("dave"),
            to_user: Some(uid("carol")),
            payload: b"hi".to_vec(),
            volatile: false,
        },
    );
    assert_eq!(
        out,
        vec![
            Effect::Deliver {
                sessions: vec![1, 2],
                event: Event::Echo {
                    from_user: uid("dave"),
                    payload: b"hi".to_vec()
                },
                reliable: true,
            },
            Effect::Reply {
                request_id: 5,
                reply: Reply::Echo {
                    payload: b"hi".to_vec(),
                    shard: 3,
                    delivered: 2
                },
            },
        ]
    );
}

/// Found by `fuzz/fuzz_targets/users.rs`: sessions attached at once and
/// then dropped all waited for a resume, past the cap (the cap was only
/// applied when a session attached).
#[test]
fn many_connections_dropping_at_once_wait_within_the_cap() {
    let mut clock = Clock::new();
    let mut users = Users::new(0, Duration::from_secs(30));
    let sessions = 1..=(MAX_DETACHED_PER_USER as SessionId + 3);
    for session in sessions.clone() {
        attach(&mut users, &clock, session, "many");
    }
    let mut ended = Vec::new();
    for session in sessions {
        clock.advance(Duration::from_millis(10));
        for e in run(
            &mut users,
            &clock,
            Command::Detach {
                session,
                resumable: true,
            },
        ) {
            if let Effect::SessionEnded { session } = e {
                ended.push(session);
            }
        }
    }
    assert_eq!(ended, vec![1, 2, 3], "the oldest waiting ones end");
    assert_eq!(users.session_count(), MAX_DETACHED_PER_USER);
    assert_eq!(
        lookup(&mut users, &clock, "many").connections as usize,
        MAX_DETACHED_PER_USER,
        "the user stays online through the rest"
    );
}
