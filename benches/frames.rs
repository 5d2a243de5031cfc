//! Hot-path micro-benchmarks: what one inbound request costs before it
//! reaches a shard (verify + decode + route), what one outbound event costs
//! to encode (once per fan-out) and to stamp per recipient, and what a
//! shard spends fanning one chat message out to 1,000 members.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use huddle::core::outbox::{Outbox, OutboxLimits};
use huddle::core::shard::shard_of;
use huddle_schema::encode::{MessageFields, UserFields};
use huddle_schema::wire::ContentType;
use huddle_schema::{stamp_seq, verify_frame, Encoder, DEFAULT_MAX_FRAME_BYTES};
use tokio::sync::Notify;

fn inbound(c: &mut Criterion) {
    let mut enc = Encoder::new();
    let frame = enc.echo_request(42, b"hello, lobby", Some("user-123456"), false);
    c.bench_function("verify+decode+route small request", |b| {
        b.iter(|| {
            let f = verify_frame(black_box(&frame), DEFAULT_MAX_FRAME_BYTES).expect("valid");
            let req = f.body_as_echo_request().expect("echo");
            let to = req.to_user().unwrap_or("");
            let shard = shard_of(to.as_bytes(), 16);
            black_box((f.request_id(), req.payload().map(|p| p.len()), shard))
        })
    });
}

fn outbound(c: &mut Criterion) {
    let mut enc = Encoder::new();
    c.bench_function("encode small event", |b| {
        b.iter(|| {
            black_box(enc.echo_event(black_box("user-123456"), black_box(b"hello, lobby"), true))
        })
    });
    let ev = enc.echo_event("user-123456", b"hello, lobby", true);
    let at = ev.seq_at.expect("reliable");
    let mut seq = 0u64;
    c.bench_function("stamp seq into a recipient copy", |b| {
        b.iter(|| {
            seq += 1;
            let mut copy = bytes::BytesMut::from(&ev.bytes[..]);
            stamp_seq(&mut copy, at, seq);
            black_box(copy.freeze())
        })
    });
}

/// One chat message to a 1,000-member chat: encode once, then queue the same
/// bytes to every member's outbox (what a shard does per message).
fn fanout(c: &mut Criterion) {
    let limits = OutboxLimits {
        capacity: 1 << 20,
        capacity_bytes: 1 << 30,
        volatile_shed_at: 1 << 19,
        replay: 1 << 20,
        replay_bytes: 1 << 30,
    };
    let outboxes: Vec<Outbox> = (0..1000)
        .map(|_| Outbox::new(limits, Arc::new(Notify::new())))
        .collect();
    let mut enc = Encoder::new();
    let content = "x".repeat(100);
    let mut drained = Vec::new();
    c.bench_function("fan-out of one message to 1,000 members", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let frame = enc.chat_message_event(&MessageFields {
                    id: 1,
                    chat_id: "channel:finals",
                    sender: UserFields {
                        id: "user-1",
                        username: "caster",
                        display_name: "Caster",
                    },
                    content: &content,
                    content_type: ContentType::TEXT,
                    created_at_ms: 1,
                    edited_at_ms: 0,
                    deleted: false,
                });
                for outbox in &outboxes {
                    black_box(outbox.push_event(&frame));
                }
                total += start.elapsed();
                // What the connection writers would do, outside the timing.
                for outbox in &outboxes {
                    drained.clear();
                    let _ = outbox.take_batch(1, 64, &mut drained);
                    outbox.ack(u64::MAX);
                }
            }
            total
        })
    });
}

criterion_group!(benches, inbound, outbound, fanout);
criterion_main!(benches);
