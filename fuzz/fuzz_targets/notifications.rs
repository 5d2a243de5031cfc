//! Fuzzes the notification engine (`huddle::core::engine::notifications`):
//! creations for one or several of four users (repeats included) with any
//! channels, pages, mark-read, deletes and the webhook outbox's outcomes
//! (for real dispatches and for unknown ids), with push and email
//! configured or not and a small per-user retention, on a virtual clock.
//! A model store applies every persisted record. Never reads the engine's
//! private state.
//!
//! Invariants: each request is answered exactly once and nothing else is;
//! a refusal comes alone and changes no count; counts equal what the
//! store holds (so the engine and the store never drift), the last count
//! event says the same, and no user keeps more than the retention; ids
//! strictly increase; a page is newest first, below `before_id`, unread
//! when asked, within the limit, and is exactly the first notifications
//! the store holds there, `has_more` included; in-app is sent at once,
//! an unconfigured channel fails "not configured" and is never
//! dispatched, only pending channels are dispatched, and a push or email
//! reads SENT only after the outbox said so; an outcome for a deleted
//! notification does nothing.

#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arbitrary::Arbitrary;
use huddle::core::engine::notifications::{
    Channel, Command, DeliveryState, NewNotification, Notification, NotificationLimits,
    Notifications, Outcome, MAX_PAGE,
};
use huddle::core::engine::{Effect, Event, Record, Reply, UserId};
use huddle_fuzz::{
    assert_answered_once, assert_refusal_alone, pick, FuzzText, VirtualClock, MAX_OPS,
};
use libfuzzer_sys::fuzz_target;

const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
const CHANNELS: [Channel; 3] = [Channel::InApp, Channel::Push, Channel::Email];
const WORDS: [&str; 4] = ["friend.request", "announcement", "", "{\"k\":1}"];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum IdRef {
    Zero,
    Known(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Create {
        users: Vec<u8>,
        kind: FuzzText,
        title: FuzzText,
        body: FuzzText,
        data: FuzzText,
        channels: Vec<u8>,
    },
    List {
        user: u8,
        before: IdRef,
        limit: u8,
        unread_only: bool,
    },
    MarkRead {
        user: u8,
        id: Option<IdRef>,
    },
    Delete {
        user: u8,
        id: IdRef,
    },
    Delivered {
        dispatch: u8,
        attempts: u16,
        ok: bool,
    },
    DeliveredUnknown {
        user: u8,
        id: IdRef,
        channel: u8,
        ok: bool,
    },
    Advance {
        ms: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    push_configured: bool,
    email_configured: bool,
    max_per_user: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let limits = NotificationLimits {
        push_configured: input.push_configured,
        email_configured: input.email_configured,
        max_per_user: usize::from(input.max_per_user % 8) + 1,
    };
    let mut clock = VirtualClock::new();
    let mut engine = Notifications::new(limits, 1, 3);
    // user → id → notification, as the store holds them.
    let mut store: HashMap<UserId, BTreeMap<u64, Arc<Notification>>> = HashMap::new();
    let mut ids: Vec<u64> = Vec::new();
    let mut dispatched: Vec<(UserId, u64, Channel)> = Vec::new();
    // Outcomes the outbox reported as delivered.
    let mut delivered_ok: HashSet<(UserId, u64, Channel)> = HashSet::new();
    let mut next_request = 1u64;

    for op in input.ops.into_iter().take(MAX_OPS) {
        let now = clock.now();
        let counts_before: Vec<(u32, u32)> = USERS.iter().map(|u| engine.counts(u)).collect();
        let mut out = Vec::new();
        let mut request = None;
        let id_of = |r: IdRef| match r {
            IdRef::Zero => 0,
            IdRef::Known(i) if !ids.is_empty() => pick(&ids, i),
            IdRef::Known(i) => u64::from(i),
            IdRef::Raw(x) => x,
        };
        match op {
            Op::Create {
                users,
                kind,
                title,
                body,
                data,
                channels,
            } => {
                let users: Vec<UserId> = users
                    .into_iter()
                    .take(4)
                    .map(|u| UserId::from(pick(&USERS, u)))
                    .collect();
                let what = Arc::new(NewNotification {
                    kind: kind.render(&WORDS, 64),
                    title: title.render(&WORDS, 64),
                    body: body.render(&WORDS, 200),
                    data: data.render(&WORDS, 64),
                    channels: channels
                        .into_iter()
                        .take(5)
                        .map(|c| pick(&CHANNELS, c))
                        .collect(),
                });
                engine.handle(
                    now,
                    Command::Create {
                        users: users.clone(),
                        what: what.clone(),
                    },
                    &mut out,
                );
                let created: Vec<Arc<Notification>> = out
                    .iter()
                    .filter_map(|e| match e {
                        Effect::ToUser {
                            event: Event::Notification(n),
                            ..
                        } => Some(n.clone()),
                        _ => None,
                    })
                    .collect();
                assert_eq!(
                    created.len(),
                    users.len(),
                    "one notification per user named"
                );
                for (n, user) in created.iter().zip(&users) {
                    assert_eq!(&n.user_id, user);
                    assert!(ids.last().is_none_or(|last| n.id > *last), "ids increase");
                    ids.push(n.id);
                    assert!(!n.read && n.created_at_ms == now.unix_ms);
                    check_new_channels(n, &what.channels, &limits);
                }
                for e in &out {
                    if let Effect::Dispatch(d) = e {
                        let state = d
                            .notification
                            .channels
                            .iter()
                            .find(|c| c.channel == d.channel)
                            .map(|c| c.state);
                        assert_eq!(
                            state,
                            Some(DeliveryState::Pending),
                            "dispatched a channel not pending"
                        );
                        assert_ne!(d.channel, Channel::InApp);
                        dispatched.push((
                            d.notification.user_id.clone(),
                            d.notification.id,
                            d.channel,
                        ));
                    }
                }
            }
            Op::List {
                user,
                before,
                limit,
                unread_only,
            } => {
                let user = UserId::from(pick(&USERS, user));
                let rid = next_request;
                next_request += 1;
                request = Some(rid);
                let before_id = id_of(before);
                let limit = usize::from(limit % 110);
                engine.handle(
                    now,
                    Command::List {
                        request_id: rid,
                        user: user.clone(),
                        before_id,
                        limit,
                        unread_only,
                    },
                    &mut out,
                );
                let page = out.iter().find_map(|e| match e {
                    Effect::Reply {
                        reply:
                            Reply::NotificationPage {
                                notifications,
                                has_more,
                                total,
                                unread,
                            },
                        ..
                    } => Some((notifications.clone(), *has_more, *total, *unread)),
                    _ => None,
                });
                let valid = (1..=MAX_PAGE).contains(&limit);
                assert_eq!(page.is_some(), valid, "{out:?}");
                if let Some((page, has_more, total, unread)) = page {
                    assert_eq!((total, unread), engine.counts(&user));
                    let end = if before_id == 0 { u64::MAX } else { before_id };
                    let want: Vec<&Arc<Notification>> = store
                        .get(&user)
                        .into_iter()
                        .flat_map(|m| m.range(..end).rev().map(|(_, n)| n))
                        .filter(|n| !unread_only || !n.read)
                        .collect();
                    let got: Vec<u64> = page.iter().map(|n| n.id).collect();
                    let expect: Vec<u64> = want.iter().take(limit).map(|n| n.id).collect();
                    assert_eq!(got, expect, "the page is the store's newest first");
                    assert_eq!(has_more, want.len() > limit, "has_more");
                    for (n, s) in page.iter().zip(&want) {
                        assert_eq!(n, *s, "a page shows what the store holds");
                    }
                }
            }
            Op::MarkRead { user, id } => {
                let user = UserId::from(pick(&USERS, user));
                let rid = next_request;
                next_request += 1;
                request = Some(rid);
                let id = id.map(id_of);
                engine.handle(
                    now,
                    Command::MarkRead {
                        request_id: rid,
                        user: user.clone(),
                        id,
                    },
                    &mut out,
                );
                let known =
                    id.is_none_or(|id| store.get(&user).is_some_and(|m| m.contains_key(&id)));
                let replied = out.iter().any(|e| matches!(e, Effect::Reply { .. }));
                assert_eq!(replied, known, "mark-read of {id:?} for {user}: {out:?}");
            }
            Op::Delete { user, id } => {
                let user = UserId::from(pick(&USERS, user));
                let rid = next_request;
                next_request += 1;
                request = Some(rid);
                let id = id_of(id);
                engine.handle(
                    now,
                    Command::Delete {
                        request_id: rid,
                        user: user.clone(),
                        id,
                    },
                    &mut out,
                );
                let known = store.get(&user).is_some_and(|m| m.contains_key(&id));
                let replied = out.iter().any(|e| matches!(e, Effect::Reply { .. }));
                assert_eq!(replied, known, "delete of {id} for {user}: {out:?}");
            }
            Op::Delivered {
                dispatch,
                attempts,
                ok,
            } => {
                if dispatched.is_empty() {
                    continue;
                }
                let (user, id, channel) = pick(&dispatched, dispatch);
                let result = if ok {
                    Ok(())
                } else {
                    Err("the webhook answered 500".to_string())
                };
                let exists = store.get(&user).is_some_and(|m| m.contains_key(&id));
                engine.handle(
                    now,
                    Command::Delivered(Outcome {
                        user: user.clone(),
                        id,
                        channel,
                        attempts,
                        result,
                    }),
                    &mut out,
                );
                if ok {
                    delivered_ok.insert((user, id, channel));
                }
                assert_eq!(
                    !out.is_empty(),
                    exists,
                    "an outcome is recorded exactly when its notification exists"
                );
            }
            Op::DeliveredUnknown {
                user,
                id,
                channel,
                ok,
            } => {
                let user = UserId::from(pick(&USERS, user));
                let id = id_of(id);
                let channel = pick(&CHANNELS, channel);
                let was = store.get(&user).and_then(|m| m.get(&id)).cloned();
                let result = if ok {
                    Ok(())
                } else {
                    Err("gave up".to_string())
                };
                engine.handle(
                    now,
                    Command::Delivered(Outcome {
                        user: user.clone(),
                        id,
                        channel,
                        attempts: 1,
                        result,
                    }),
                    &mut out,
                );
                if was.is_none() {
                    assert!(
                        out.is_empty(),
                        "an outcome for no notification changed something"
                    );
                }
                if ok && channel != Channel::InApp {
                    // An outcome the outbox never had: the fuzz model marks it
                    // reported, so a later SENT is not held against the engine.
                    delivered_ok.insert((user, id, channel));
                }
            }
            Op::Advance { ms } => {
                clock.advance_ms(u64::from(ms));
                continue;
            }
        }

        assert_answered_once(&out, request, |_| None);
        assert_refusal_alone(&out);
        if out.iter().any(|e| matches!(e, Effect::Fail { .. })) {
            let counts: Vec<(u32, u32)> = USERS.iter().map(|u| engine.counts(u)).collect();
            assert_eq!(counts, counts_before, "a refusal changed counts");
        }

        // Apply what was persisted, then hold the engine to it.
        let mut last_count: HashMap<UserId, (u32, u32)> = HashMap::new();
        for e in &out {
            match e {
                Effect::Persist(Record::Notification(n)) => {
                    store
                        .entry(n.user_id.clone())
                        .or_default()
                        .insert(n.id, n.clone());
                    for c in &n.channels {
                        if c.state == DeliveryState::Sent && c.channel != Channel::InApp {
                            assert!(
                                delivered_ok.contains(&(n.user_id.clone(), n.id, c.channel)),
                                "{:?} reads SENT but the outbox never said so",
                                c.channel
                            );
                        }
                    }
                }
                Effect::Persist(Record::NotificationDeleted { user, id }) => {
                    let gone = store.get_mut(user).and_then(|m| m.remove(id));
                    assert!(
                        gone.is_some(),
                        "deleted {id} of {user}, which the store never had"
                    );
                }
                Effect::ToUser {
                    user,
                    event: Event::NotificationCount { total, unread },
                } => {
                    last_count.insert(user.clone(), (*total, *unread));
                }
                _ => {}
            }
        }
        for u in USERS {
            let held = store.get(u);
            let total = held.map_or(0, |m| m.len()) as u32;
            let unread = held.map_or(0, |m| m.values().filter(|n| !n.read).count()) as u32;
            assert_eq!(engine.counts(u), (total, unread), "{u}: engine and store");
            assert!(total as usize <= limits.max_per_user, "{u} keeps {total}");
            if let Some(told) = last_count.get(u) {
                assert_eq!(*told, (total, unread), "{u}'s count event");
            }
        }
    }
});

/// The channels of a new notification: in-app sent, each asked channel once,
/// an unconfigured one failed "not configured", a configured one pending.
fn check_new_channels(n: &Notification, asked: &[Channel], limits: &NotificationLimits) {
    let listed: Vec<Channel> = n.channels.iter().map(|c| c.channel).collect();
    let mut want = vec![Channel::InApp];
    for c in asked {
        if !want.contains(c) {
            want.push(*c);
        }
    }
    assert_eq!(listed, want, "channels, deduplicated, in-app first");
    for c in &n.channels {
        let configured = match c.channel {
            Channel::InApp => true,
            Channel::Push => limits.push_configured,
            Channel::Email => limits.email_configured,
        };
        match c.channel {
            Channel::InApp => assert_eq!(c.state, DeliveryState::Sent),
            _ if configured => assert_eq!(
                (c.state, c.error.as_deref()),
                (DeliveryState::Pending, None)
            ),
            _ => {
                assert_eq!(c.state, DeliveryState::Failed);
                let why = format!("{} is not configured", c.channel.name());
                assert_eq!(c.error.as_deref(), Some(why.as_str()));
            }
        }
    }
}
