//! Tests of the chat engine, driven with a virtual clock; they assert on
//! effects and never touch I/O.

use super::super::{Event, Record};
use super::*;

struct Lobbies;
impl ChatContext for Lobbies {
    fn lobby_member(&self, lobby: &str, user: &str) -> Option<bool> {
        (lobby == "l1").then(|| user == "alice" || user == "bob")
    }
}

struct World {
    chats: Chats,
    base: Instant,
    at_ms: i64,
}

fn actor(id: &str) -> Actor {
    Actor {
        author: Author {
            id: UserId::from(id),
            username: Arc::from(format!("name-{id}")),
            display_name: Arc::from(id),
        },
        operator: id.starts_with("op"),
    }
}

impl World {
    fn new() -> Self {
        Self {
            chats: Chats::new(ChatLimits::default(), 3, 1),
            base: Instant::now(),
            at_ms: 1_800_000_000_000,
        }
    }
    fn now(&self) -> Now {
        Now {
            mono: self.base + Duration::from_millis((self.at_ms - 1_800_000_000_000) as u64),
            unix_ms: self.at_ms,
        }
    }
    /// Runs a command; a join's warm-up is answered as an empty store
    /// would (its own test below covers a store that holds something).
    fn run(&mut self, cmd: Command) -> Vec<Effect> {
        let mut out = Vec::new();
        let now = self.now();
        self.chats.handle(now, &Lobbies, cmd, &mut out);
        for e in &mut out {
            if let Effect::WarmUp {
                request_id, joined, ..
            } = e
            {
                *e = Effect::Reply {
                    request_id: *request_id,
                    reply: joined.clone(),
                };
            }
        }
        out
    }
    fn join(&mut self, session: SessionId, user: &str, chat: &str) -> Vec<Effect> {
        self.run(Command::Join {
            request_id: 1,
            session,
            actor: actor(user),
            chat_id: Arc::from(chat),
        })
    }
    fn send(
        &mut self,
        session: SessionId,
        user: &str,
        chat: &str,
        text: &str,
        nonce: Option<&str>,
    ) -> Vec<Effect> {
        self.run(Command::Send {
            request_id: 2,
            session,
            actor: actor(user),
            chat_id: Arc::from(chat),
            content: text.into(),
            content_type: 0,
            nonce: nonce.map(String::from),
        })
    }
}

fn refusal(out: &[Effect]) -> Option<Refusal> {
    out.iter().find_map(|e| match e {
        Effect::Fail { failure, .. } => Some(failure.refusal),
        _ => None,
    })
}

fn sent_id(out: &[Effect]) -> (u64, bool) {
    out.iter()
        .find_map(|e| match e {
            Effect::Reply {
                reply:
                    Reply::ChatSent {
                        message_id,
                        duplicate,
                        ..
                    },
                ..
            } => Some((*message_id, *duplicate)),
            _ => None,
        })
        .expect("a ChatSent reply")
}

#[test]
fn access_rules_follow_the_chat_kind() {
    let mut w = World::new();
    assert_eq!(
        refusal(&w.join(1, "alice", "channel:nope")),
        Some(Refusal::ChatNotFound)
    );
    assert_eq!(
        refusal(&w.join(1, "alice", "lobby:l9")),
        Some(Refusal::ChatNotFound)
    );
    assert_eq!(
        refusal(&w.join(1, "carol", "lobby:l1")),
        Some(Refusal::AccessDenied)
    );
    assert_eq!(refusal(&w.join(1, "alice", "lobby:l1")), None);
    assert_eq!(
        refusal(&w.join(2, "carol", "direct:alice:bob")),
        Some(Refusal::AccessDenied)
    );
    assert_eq!(refusal(&w.join(2, "bob", "direct:alice:bob")), None);
    assert_eq!(
        refusal(&w.join(2, "bob", "direct:bob:alice")),
        Some(Refusal::JoinError),
        "ids are ordered"
    );
    assert_eq!(
        refusal(&w.join(2, "bob", "room:x")),
        Some(Refusal::JoinError)
    );
    w.run(Command::CreateChannel(ChannelSpec {
        name: "finals".into(),
        public: false,
        members: vec![UserId::from("dave")],
        ..Default::default()
    }));
    assert_eq!(
        refusal(&w.join(3, "erin", "channel:finals")),
        Some(Refusal::AccessDenied)
    );
    assert_eq!(refusal(&w.join(3, "dave", "channel:finals")), None);
    assert_eq!(
        refusal(&w.join(4, "op-frank", "channel:finals")),
        None,
        "operators may join"
    );
    assert_eq!(direct_chat_id("bob", "alice"), "direct:alice:bob");
}

#[test]
fn messages_reach_every_member_and_retries_are_idempotent() {
    let mut w = World::new();
    w.join(1, "alice", "direct:alice:bob");
    let joined = w.join(2, "bob", "direct:alice:bob");
    assert!(joined.iter().any(|e| matches!(
        e,
        Effect::Broadcast {
            event: Event::ChatMember { joined: true, .. },
            except: Some(2),
            ..
        }
    )));
    assert_eq!(
        refusal(&w.send(3, "carol", "direct:alice:bob", "hi", None)),
        Some(Refusal::NotInChat)
    );
    let out = w.send(1, "alice", "direct:alice:bob", "hello", Some("n-1"));
    assert!(out.iter().any(|e| matches!(e, Effect::Broadcast { event: Event::ChatMessage(m), except: None, .. } if &*m.content == "hello" && &*m.sender.username == "name-alice")));
    let (first, dup) = sent_id(&out);
    assert!(!dup);
    let again = w.send(1, "alice", "direct:alice:bob", "hello", Some("n-1"));
    assert_eq!(sent_id(&again), (first, true));
    assert!(
        !again.iter().any(|e| matches!(e, Effect::Broadcast { .. })),
        "a retry is not delivered twice"
    );
    let (second, _) = sent_id(&w.send(1, "alice", "direct:alice:bob", "again", Some("n-2")));
    assert!(second > first, "ids increase");
}

#[test]
fn bad_messages_change_nothing() {
    let mut w = World::new();
    w.join(1, "alice", "direct:alice:bob");
    assert_eq!(
        refusal(&w.send(1, "alice", "direct:alice:bob", "", None)),
        Some(Refusal::MessageError)
    );
    let long = "é".repeat(2001);
    assert_eq!(
        refusal(&w.send(1, "alice", "direct:alice:bob", &long, None)),
        Some(Refusal::MessageError)
    );
    assert_eq!(
        refusal(&w.send(1, "alice", "direct:alice:bob", &"é".repeat(2000), None)),
        None,
        "2000 characters is fine"
    );
    let out = w.run(Command::Send {
        request_id: 9,
        session: 1,
        actor: actor("alice"),
        chat_id: Arc::from("direct:alice:bob"),
        content: "x".into(),
        content_type: 7,
        nonce: None,
    });
    assert_eq!(refusal(&out), Some(Refusal::MessageError));
    let history = w.run(Command::History {
        request_id: 3,
        session: 1,
        chat_id: Arc::from("direct:alice:bob"),
        before_id: 0,
        limit: 100,
    });
    let Some(Effect::HistoryPage { partial, .. }) = history.last() else {
        panic!("expected a store page: {history:?}")
    };
    assert_eq!(partial.len(), 1, "only the valid message was kept");
}

#[test]
fn slow_mode_read_only_and_typing_throttle() {
    let mut w = World::new();
    w.run(Command::CreateChannel(ChannelSpec {
        name: "news".into(),
        public: true,
        read_only: true,
        ..Default::default()
    }));
    w.run(Command::CreateChannel(ChannelSpec {
        name: "slow".into(),
        public: true,
        slow_mode_ms: 5000,
        ..Default::default()
    }));
    w.join(1, "alice", "channel:news");
    w.join(2, "op-ann", "channel:news");
    assert_eq!(
        refusal(&w.send(1, "alice", "channel:news", "hi", None)),
        Some(Refusal::AccessDenied)
    );
    assert_eq!(
        refusal(&w.send(2, "op-ann", "channel:news", "announcement", None)),
        None
    );
    w.join(1, "alice", "channel:slow");
    assert_eq!(
        refusal(&w.send(1, "alice", "channel:slow", "one", None)),
        None
    );
    w.at_ms += 1000;
    assert_eq!(
        refusal(&w.send(1, "alice", "channel:slow", "two", None)),
        Some(Refusal::RateLimited)
    );
    w.at_ms += 4000;
    assert_eq!(
        refusal(&w.send(1, "alice", "channel:slow", "two", None)),
        None
    );

    let typing = |w: &mut World, on: bool| {
        w.run(Command::Typing {
            session: 1,
            actor: actor("alice"),
            chat_id: Arc::from("channel:slow"),
            typing: on,
        })
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Broadcast {
                    reliable: false,
                    except: Some(1),
                    ..
                }
            )
        })
        .count()
    };
    assert_eq!(typing(&mut w, true), 1);
    assert_eq!(typing(&mut w, true), 0, "throttled");
    assert_eq!(typing(&mut w, false), 1, "a change of state goes through");
    w.at_ms += 1000;
    assert_eq!(typing(&mut w, false), 1);
}

#[test]
fn a_read_acknowledges_a_stored_cursor_even_when_sending_moved_it() {
    let mut w = World::new();
    w.join(1, "alice", "direct:alice:bob");
    let id = sent_id(&w.send(1, "alice", "direct:alice:bob", "hi", None)).0;
    let read = |w: &mut World, request_id| {
        w.run(Command::Read {
            request_id,
            session: 1,
            user: UserId::from("alice"),
            chat_id: Arc::from("direct:alice:bob"),
            message_id: id,
        })
    };
    let stored = |out: &[Effect]| {
        out.iter().any(|e| {
            matches!(
                e,
                Effect::Persist(Record::Chat(HistoryRecord::ReadCursor { up_to, .. })) if *up_to == id
            )
        })
    };
    // Sending moved alice's cursor in memory only; her read does not
    // move it further, yet its ChatReadAck stands for a stored cursor.
    assert!(stored(&read(&mut w, 7)));
    assert!(!stored(&read(&mut w, 8)), "once stored, not again");
}

#[test]
fn read_cursors_history_pages_and_leaving() {
    let mut w = World::new();
    w.join(1, "alice", "direct:alice:bob");
    w.join(2, "bob", "direct:alice:bob");
    let ids: Vec<u64> = (0..5)
        .map(|i| sent_id(&w.send(1, "alice", "direct:alice:bob", &format!("m{i}"), None)).0)
        .collect();
    let read = w.run(Command::Read {
        request_id: 4,
        session: 2,
        user: UserId::from("bob"),
        chat_id: Arc::from("direct:alice:bob"),
        message_id: ids[2],
    });
    assert!(read.iter().any(|e| matches!(
        e,
        Effect::Reply {
            reply: Reply::ChatRead { unread: 2, .. },
            ..
        }
    )));
    assert!(read.iter().any(|e| matches!(
        e,
        Effect::Broadcast {
            event: Event::ChatRead { .. },
            except: Some(2),
            ..
        }
    )));
    let page = w.run(Command::History {
        request_id: 5,
        session: 2,
        chat_id: Arc::from("direct:alice:bob"),
        before_id: ids[3],
        limit: 2,
    });
    let Some(Effect::Reply {
        reply: Reply::ChatHistory {
            messages, has_more, ..
        },
        ..
    }) = page.last()
    else {
        panic!()
    };
    assert_eq!(
        messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]],
        "newest first, before the cursor"
    );
    assert!(*has_more);
    let left = w.run(Command::Leave {
        request_id: 6,
        session: 2,
        chat_id: Arc::from("direct:alice:bob"),
    });
    assert!(left.iter().any(|e| matches!(
        e,
        Effect::Broadcast {
            event: Event::ChatMember { joined: false, .. },
            ..
        }
    )));
    assert_eq!(
        refusal(&w.run(Command::Leave {
            request_id: 7,
            session: 2,
            chat_id: Arc::from("direct:alice:bob")
        })),
        Some(Refusal::NotInChat)
    );
    let gone = w.run(Command::SessionsGone { sessions: vec![1] });
    assert!(gone.iter().any(|e| matches!(
        e,
        Effect::Broadcast {
            event: Event::ChatMember { joined: false, .. },
            ..
        }
    )));
    assert_eq!(w.chats.member_count("direct:alice:bob"), 0);
    assert!(
        w.chats.chats.is_empty(),
        "an empty direct chat is forgotten (its history is in the store)"
    );
}

#[test]
fn edits_deletes_and_mutes() {
    let mut w = World::new();
    w.join(1, "alice", "direct:alice:bob");
    w.join(2, "bob", "direct:alice:bob");
    let (id, _) = sent_id(&w.send(1, "alice", "direct:alice:bob", "helo", None));
    let amend = |w: &mut World, session, user: &str, content: Option<&str>| {
        w.run(Command::Amend {
            request_id: 8,
            session,
            actor: actor(user),
            chat_id: Arc::from("direct:alice:bob"),
            message_id: id,
            content: content.map(String::from),
        })
    };
    assert_eq!(
        refusal(&amend(&mut w, 2, "bob", Some("hijack"))),
        Some(Refusal::AccessDenied)
    );
    let edited = amend(&mut w, 1, "alice", Some("hello"));
    assert!(edited.iter().any(|e| matches!(e, Effect::Broadcast { event: Event::ChatMessageUpdated(m), .. } if &*m.content == "hello" && m.edited_at_ms > 0)));
    let deleted = amend(&mut w, 1, "alice", None);
    assert!(deleted.iter().any(|e| matches!(e, Effect::Broadcast { event: Event::ChatMessageDeleted { message_id, .. }, .. } if *message_id == id)));
    assert_eq!(
        refusal(&amend(&mut w, 1, "alice", Some("again"))),
        Some(Refusal::MessageError),
        "tombstones stay"
    );

    let mute = |w: &mut World, by: &str, ms| {
        w.run(Command::Mute {
            request_id: 9,
            actor: actor(by),
            chat_id: Arc::from("direct:alice:bob"),
            user: UserId::from("bob"),
            duration_ms: ms,
        })
    };
    assert_eq!(
        refusal(&mute(&mut w, "alice", 60_000)),
        Some(Refusal::AccessDenied)
    );
    assert_eq!(refusal(&mute(&mut w, "op-olga", 60_000)), None);
    assert_eq!(
        refusal(&w.send(2, "bob", "direct:alice:bob", "let me talk", None)),
        Some(Refusal::AccessDenied)
    );
    w.at_ms += 60_000;
    assert_eq!(
        refusal(&w.send(2, "bob", "direct:alice:bob", "thanks", None)),
        None,
        "the mute ran out"
    );
}

#[test]
fn unread_counts_follow_the_cursor_and_the_access_rules() {
    let mut w = World::new();
    w.join(1, "alice", "direct:alice:bob");
    for i in 0..3 {
        w.send(1, "alice", "direct:alice:bob", &format!("m{i}"), None);
    }
    let ids = [Arc::from("direct:alice:bob"), Arc::from("direct:bob:carol")];
    let rows = w.chats.unread(&Lobbies, &actor("bob"), &ids).unwrap();
    assert_eq!((rows[0].unread, rows[0].read_up_to), (3, 0));
    assert_eq!(rows[1].unread, 0, "a direct chat nobody opened yet");
    assert_eq!(
        w.chats
            .unread(&Lobbies, &actor("alice"), &ids[..1])
            .unwrap()[0]
            .unread,
        0,
        "the sender read it"
    );
    let denied = w
        .chats
        .unread(&Lobbies, &actor("dave"), &ids[..1])
        .unwrap_err();
    assert_eq!(denied.refusal, Refusal::AccessDenied);
}

#[test]
fn message_ids_are_unique_and_increasing_within_a_millisecond() {
    let mut ids = MessageIds::new(5, 2);
    let mut last = 0;
    for _ in 0..1000 {
        let id = ids.next(1_800_000_000_000);
        assert!(id > last);
        last = id;
    }
    let other_shard = MessageIds::new(5, 3).next(1_800_000_000_000);
    assert_ne!(other_shard, MessageIds::new(5, 2).next(1_800_000_000_000));
}

#[test]
fn a_cold_chat_asks_the_store_once_and_merges_what_it_held() {
    let mut w = World::new();
    let mut out = Vec::new();
    let join = |session, user: &str| Command::Join {
        request_id: 1,
        session,
        actor: actor(user),
        chat_id: Arc::from("direct:alice:bob"),
    };
    w.chats
        .handle(w.now(), &Lobbies, join(1, "alice"), &mut out);
    assert!(
        matches!(&out[..], [.., Effect::WarmUp { recent, .. }] if *recent == ChatLimits::default().recent),
        "{out:?}"
    );
    out.clear();
    // A message sent meanwhile is newer than anything stored.
    let sent = sent_id(&w.send(1, "alice", "direct:alice:bob", "live", None)).0;
    let stored: Vec<Arc<Message>> = [3u64, 2, 1]
        .iter()
        .map(|&id| {
            Arc::new(Message {
                id,
                chat_id: Arc::from("direct:alice:bob"),
                sender: actor("bob").author,
                content: Arc::from(format!("old {id}")),
                content_type: 0,
                created_at_ms: 1,
                edited_at_ms: 0,
                deleted: false,
                nonce: (id == 3).then(|| Box::from("n-3")),
            })
        })
        .collect();
    w.run(Command::Warmed {
        chat_id: Arc::from("direct:alice:bob"),
        user: UserId::from("alice"),
        cursor: Some(2),
        messages: stored,
    });
    w.chats.handle(w.now(), &Lobbies, join(2, "bob"), &mut out);
    assert!(
        matches!(&out[..], [.., Effect::WarmUp { recent: 0, .. }]),
        "a second user only needs their cursor: {out:?}"
    );
    let rows = w
        .chats
        .unread(&Lobbies, &actor("alice"), &[Arc::from("direct:alice:bob")])
        .unwrap();
    assert_eq!(
        (rows[0].read_up_to, rows[0].last_message_id),
        (sent, sent),
        "the sender's own newer cursor wins over the stored one"
    );
    let rows = w
        .chats
        .unread(&Lobbies, &actor("bob"), &[Arc::from("direct:alice:bob")])
        .unwrap();
    assert_eq!(
        rows[0].unread, 4,
        "three stored messages below the live one"
    );
}
