//! Writes the checked-in seed corpora under `fuzz/corpus/`: every request
//! the schema's encoder can build (for `frame` and `request`), first
//! frames good and bad (for `handshake`), and step sequences (for
//! `simulation`). Seeds only steer the start of a run; libFuzzer mutates
//! from them. Never runs a fuzzer itself.
//!
//! Usage, from `fuzz/`: `cargo run --example seeds` (rewrites the files;
//! their names are the seed's name, so a rerun is a no-op in git).

use std::fs;
use std::path::Path;

use huddle_schema::encode::{LobbyCreateFields, MatchmakingStartFields, ResumeFields};
use huddle_schema::wire::{
    ContentType, ErrorCode, FriendAction, LobbyOpKind, LobbyVisibility, MatchmakingOpKind,
    PresenceStatus,
};
use huddle_schema::{Encoder, PROTOCOL_VERSION};

/// Every request a client can send, by name.
fn requests(e: &mut Encoder) -> Vec<(&'static str, Vec<u8>)> {
    let lobby = LobbyCreateFields {
        game: "arena",
        mode: "duo",
        region: "eu",
        min: 2,
        max: 4,
        visibility: LobbyVisibility::PUBLIC,
        password: "",
        chat: true,
        settings: vec![("map", "dust")],
    };
    let start = MatchmakingStartFields {
        game: "arena",
        mode: "duo",
        latencies: &[("eu", 20), ("us", 90)],
        lobby_id: "",
        texts: &[("role", "tank")],
        numbers: &[("skill", 1500.0)],
        role: "",
    };
    vec![
        ("ping", e.ping(3, 7, 1_000).to_vec()),
        ("pong", e.pong(4, 1_000).to_vec()),
        ("echo", e.echo_request(5, b"hi", None, false).to_vec()),
        (
            "echo_to",
            e.echo_request(6, b"hi", Some("bob"), true).to_vec(),
        ),
        (
            "presence_query",
            e.presence_query(7, &["bob", "eve"]).to_vec(),
        ),
        ("chat_join", e.chat_join(8, "lobby:1").to_vec()),
        ("chat_leave", e.chat_leave(9, "lobby:1").to_vec()),
        (
            "chat_send",
            e.chat_send(10, "lobby:1", "gg", ContentType::TEXT, Some("n1"))
                .to_vec(),
        ),
        ("chat_typing", e.chat_typing("lobby:1", true).to_vec()),
        ("chat_read", e.chat_read(11, "lobby:1", 42).to_vec()),
        (
            "chat_history",
            e.chat_history(12, "lobby:1", 0, 50).to_vec(),
        ),
        ("chat_unread", e.chat_unread(13, &["lobby:1"]).to_vec()),
        (
            "chat_edit",
            e.chat_edit(14, "lobby:1", 42, Some("gg wp")).to_vec(),
        ),
        ("chat_delete", e.chat_edit(15, "lobby:1", 42, None).to_vec()),
        (
            "chat_mute",
            e.chat_mute(16, "lobby:1", "bob", 60_000).to_vec(),
        ),
        (
            "set_status",
            e.set_status(17, PresenceStatus::ONLINE, "in queue", false, true)
                .to_vec(),
        ),
        ("follow", e.follow(18, &["bob"], true).to_vec()),
        (
            "friend_request",
            e.friend_op(19, FriendAction::REQUEST, "bob").to_vec(),
        ),
        (
            "friend_block",
            e.friend_op(20, FriendAction::BLOCK, "eve").to_vec(),
        ),
        ("friend_list", e.friend_list(21).to_vec()),
        (
            "notification_list",
            e.notification_list(22, 0, 20, true).to_vec(),
        ),
        (
            "notification_read",
            e.notification_mark_read(23, 5, false).to_vec(),
        ),
        ("notification_delete", e.notification_delete(24, 5).to_vec()),
        ("lobby_create", e.lobby_create(25, &lobby).to_vec()),
        ("lobby_join", e.lobby_join(26, "l-1", "").to_vec()),
        (
            "lobby_ready",
            e.lobby_op(27, LobbyOpKind::READY, "l-1", "", "").to_vec(),
        ),
        (
            "lobby_kick",
            e.lobby_op(28, LobbyOpKind::KICK, "l-1", "bob", "afk")
                .to_vec(),
        ),
        (
            "matchmaking_start",
            e.matchmaking_start(29, &start).to_vec(),
        ),
        (
            "matchmaking_cancel",
            e.matchmaking_op(30, MatchmakingOpKind::CANCEL, "t-1")
                .to_vec(),
        ),
    ]
}

/// First frames: good, resuming, and each way a handshake is refused.
fn first_frames(e: &mut Encoder) -> Vec<(&'static str, Vec<u8>)> {
    let resume = |session_id, last_seq| ResumeFields {
        session_id,
        resume_token: "0123456789abcdef",
        last_seq,
    };
    vec![
        (
            "hello",
            e.hello(1, Some("tok"), "seed/1", PROTOCOL_VERSION, None, false)
                .to_vec(),
        ),
        (
            "hello_no_token",
            e.hello(1, None, "seed/1", PROTOCOL_VERSION, None, true)
                .to_vec(),
        ),
        (
            "hello_resume",
            e.hello(
                2,
                Some("tok"),
                "seed/1",
                PROTOCOL_VERSION,
                Some(resume("00000000000000a1", 9)),
                false,
            )
            .to_vec(),
        ),
        (
            "hello_resume_bad_id",
            e.hello(
                2,
                Some("tok"),
                "seed/1",
                PROTOCOL_VERSION,
                Some(resume("not-hex", 0)),
                false,
            )
            .to_vec(),
        ),
        (
            "hello_bad_version",
            e.hello(1, Some("tok"), "seed/1", PROTOCOL_VERSION + 1, None, false)
                .to_vec(),
        ),
        (
            "hello_zero_request_id",
            e.hello(0, Some("tok"), "seed/1", PROTOCOL_VERSION, None, false)
                .to_vec(),
        ),
        ("not_hello", e.ping(1, 0, 0).to_vec()),
        (
            "unknown_body",
            e.raw_frame_for_tests(PROTOCOL_VERSION, 250).to_vec(),
        ),
    ]
}

/// Frames only the gateway sends, which a client decoder must survive.
fn server_frames(e: &mut Encoder) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "error",
            e.error(3, ErrorCode::RATE_LIMITED, "slow down", true, false)
                .to_vec(),
        ),
        ("go_away", e.go_away("draining", 500).to_vec()),
    ]
}

/// Workload step sequences (an 8-byte seed, then 4 bytes a step).
fn step_sequences() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, seed, steps) in [
        ("connects", 1u64, 8usize),
        ("busy", 7, 64),
        ("long", 42, 128),
    ] {
        let mut bytes = seed.to_le_bytes().to_vec();
        // A small xorshift, so the sequences are the same on every run.
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for _ in 0..steps * 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        out.push((name, bytes));
    }
    out
}

fn write(dir: &Path, seeds: &[(&str, Vec<u8>)]) {
    fs::create_dir_all(dir).expect("create the corpus folder");
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).expect("write a seed");
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut e = Encoder::new();
    let requests = requests(&mut e);
    let first = first_frames(&mut e);
    let server = server_frames(&mut e);

    write(&root.join("request"), &requests);
    write(&root.join("request"), &first);
    write(&root.join("frame"), &requests);
    write(&root.join("frame"), &first);
    write(&root.join("frame"), &server);
    write(&root.join("handshake"), &first);
    write(&root.join("simulation"), &step_sequences());
    println!("seeds written under {}", root.display());
}
