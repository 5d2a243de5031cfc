//! Hot-path micro-benchmarks: what one inbound request costs before it
//! reaches a shard (verify + decode + route), and what one outbound event
//! costs to encode (once per fan-out) and to stamp per recipient.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use huddle::engine::shard_of;
use huddle_schema::{stamp_seq, verify_frame, Encoder, DEFAULT_MAX_FRAME_BYTES};

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

criterion_group!(benches, inbound, outbound);
criterion_main!(benches);
