//! The lobby engine without I/O: one join + ready + leave cycle against a
//! lobby of 8 (the sans-IO cost of each operation, effects included).

// The gateway's allocator, so the figures match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use huddle::core::engine::chat::Author;
use huddle::core::engine::lobbies::{Command, Lobbies, LobbyLimits, LobbySpec, Visibility};
use huddle::core::engine::{Now, UserId};

fn author(id: &str) -> Author {
    Author {
        id: UserId::from(id),
        username: Arc::from(id),
        display_name: Arc::from(id),
    }
}

fn lobby_ops(c: &mut Criterion) {
    let mut lobbies = Lobbies::new(LobbyLimits::default());
    let base = Instant::now();
    let now = || Now {
        mono: base,
        unix_ms: 1_800_000_000_000,
    };
    let lobby: Arc<str> = Arc::from("bench");
    let mut out = Vec::new();
    lobbies.handle(
        now(),
        Command::Create {
            request_id: 1,
            lobby_id: lobby.clone(),
            host: Some(author("host")),
            spec: LobbySpec {
                game: "g".into(),
                mode: "m".into(),
                region: "eu".into(),
                min: 2,
                max: 8,
                visibility: Visibility::Public,
                password: None,
                chat: true,
                settings: BTreeMap::new(),
            },
            assigned: Vec::new(),
        },
        &mut out,
    );
    for i in 0..6 {
        let cmd = Command::Join {
            request_id: 1,
            lobby_id: lobby.clone(),
            user: author(&format!("member-{i}")),
            password: None,
        };
        lobbies.handle(now(), cmd, &mut out);
    }
    let joiner = author("joiner");
    c.bench_function("lobby join + ready + leave (3 ops, lobby of 8)", |b| {
        b.iter(|| {
            out.clear();
            lobbies.handle(
                now(),
                Command::Join {
                    request_id: 1,
                    lobby_id: lobby.clone(),
                    user: joiner.clone(),
                    password: None,
                },
                &mut out,
            );
            lobbies.handle(
                now(),
                Command::Ready {
                    request_id: 2,
                    lobby_id: lobby.clone(),
                    user: joiner.id.clone(),
                    ready: true,
                },
                &mut out,
            );
            lobbies.handle(
                now(),
                Command::Leave {
                    request_id: 3,
                    lobby_id: lobby.clone(),
                    user: joiner.id.clone(),
                },
                &mut out,
            );
        })
    });
}

criterion_group!(benches, lobby_ops);
criterion_main!(benches);
