//! The per-session outbound queue: already-encoded frames waiting for the
//! session's connection writer, plus the written-but-unacknowledged reliable
//! frames kept for resume, and the highest request id the session has read.
//!
//! Reliable frames are reliable events and replies to requests: each gets the
//! session's next `seq`, is held while the client is away, moves to the
//! replay buffer once written, and is replayed on resume until the client
//! acknowledges it. Control frames (Ping, Pong, a connection-level Error)
//! are unsequenced and belong to one connection.
//!
//! Producers (shard threads, history threads, the connection's own task)
//! push from any thread; the one connection writer drains in batches. The
//! queue is bounded: volatile events are shed once it is `volatile_shed_at`
//! deep; a reliable frame that finds it full closes the connection with
//! SLOW_CONSUMER (or, while the client is away, ends the session so its
//! resume fails loudly). Nothing is dropped without one of those outcomes.
//! The mutex guards only this session's queue — never engine state — and is
//! held for a few pointer moves.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use huddle_schema::encode::seq_slot;
use huddle_schema::wire::Body;
use huddle_schema::{stamp_seq, EventFrame};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::telemetry::metrics::metrics;

/// Bounds of one outbox, from `[session]` config.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Frames waiting to be written.
    pub capacity: usize,
    /// Bytes waiting to be written.
    pub capacity_bytes: usize,
    pub volatile_shed_at: usize,
    /// Written-but-unacknowledged reliable frames (events and replies) kept
    /// for resume, and their bytes: acknowledgements come from the client,
    /// so both are bounded.
    pub replay: usize,
    pub replay_bytes: usize,
}

/// Why an outbox stopped accepting frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The attached client did not read fast enough.
    SlowConsumer,
    /// Events or replies piled up past the bound while the client was away;
    /// a resume could not be exact, so the session is over.
    OverflowWhileAway,
    /// The session ended (resume window passed, clean close).
    Ended,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// A volatile event dropped under pressure (counted, by design).
    Shed,
    /// The frame overflowed the queue and closed the outbox.
    Overflowed(Closed),
    /// The outbox was already closed.
    AlreadyClosed,
}

/// A frame in the queue.
#[derive(Debug, Clone)]
pub struct Queued {
    pub bytes: Bytes,
    /// 0 for unsequenced frames.
    pub seq: u64,
    /// Where to stamp `seq` (0 when unsequenced).
    pub seq_at: u32,
    pub volatile: bool,
    pub body: Body,
}

impl Queued {
    /// The bytes to write: a stamped copy for sequenced events, the shared
    /// bytes otherwise.
    pub fn wire_bytes(&self) -> Bytes {
        if self.seq == 0 {
            return self.bytes.clone();
        }
        let mut copy = BytesMut::from(&self.bytes[..]);
        stamp_seq(&mut copy, self.seq_at, self.seq);
        copy.freeze()
    }
}

/// A resume that cannot be exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeGap {
    #[error("events after seq {last_seq} are no longer held (oldest held follows seq {floor})")]
    Released { last_seq: u64, floor: u64 },
    #[error("the client claims seq {last_seq} but only {sent} were sent")]
    Ahead { last_seq: u64, sent: u64 },
    #[error("the session is closed")]
    Closed,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Queued>,
    /// Written, not yet acknowledged, reliable frames (ascending seq).
    replay: VecDeque<Queued>,
    /// Last sequence number handed out.
    last_seq: u64,
    /// Every seq ≤ floor has been released from `replay`.
    floor: u64,
    attached: bool,
    closed: Option<Closed>,
    /// Frames at the front of `queue` put back by a resume: they were
    /// already admitted once, so they do not count against the capacity.
    resent: usize,
    /// Bytes in `queue` and in `replay`.
    queue_bytes: usize,
    replay_bytes: usize,
    /// Which connection currently drains this outbox; bumped by a resume.
    generation: u64,
    /// The highest request id read on this session, over all its
    /// connections: a resume tells the client, so it re-sends only what
    /// never arrived.
    last_request_id: u64,
    /// Wakes the current connection's writer.
    wake: Arc<Notify>,
}

/// Why a writer must stop draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Closed(Closed),
    /// A newer connection resumed this session.
    Superseded,
}

/// One session's outbound queue. Shared as `Arc<Outbox>`.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    limits: OutboxLimits,
}

impl Outbox {
    /// A new outbox drained by the connection that `wake` wakes
    /// (generation 1).
    pub fn new(limits: OutboxLimits, wake: Arc<Notify>) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                replay: VecDeque::new(),
                last_seq: 0,
                floor: 0,
                attached: true,
                closed: None,
                resent: 0,
                queue_bytes: 0,
                replay_bytes: 0,
                generation: 1,
                last_request_id: 0,
                wake,
            }),
            limits,
        }
    }

    /// Queues a reply or a control frame; callable from any thread. A reply
    /// (a frame from the encoder with a `seq` slot: a typed result, or an
    /// `Error` with a request id) gets the session's next sequence number
    /// and is held and replayed like a reliable event, so it reaches the
    /// client even across a drop. A control frame (Ping, Pong, an `Error`
    /// with request id 0) is unsequenced and is dropped while no connection
    /// is attached: it meant something to that connection only.
    pub fn push_reply(&self, bytes: Bytes, body: Body) -> Push {
        let seq_at = seq_slot(&bytes).unwrap_or(0);
        self.push(Queued {
            bytes,
            seq: 0,
            seq_at,
            volatile: false,
            body,
        })
    }

    /// Queues an event; reliable events (those with `seq_at`) get this
    /// session's next sequence number.
    pub fn push_event(&self, ev: &EventFrame) -> Push {
        self.push(Queued {
            bytes: ev.bytes.clone(),
            seq: 0,
            seq_at: ev.seq_at.unwrap_or(0),
            volatile: ev.seq_at.is_none(),
            body: ev.body,
        })
    }

    fn push(&self, mut frame: Queued) -> Push {
        let mut st = self.state.lock();
        let outcome = {
            if st.closed.is_some() {
                return Push::AlreadyClosed;
            }
            let depth = st.queue.len().saturating_sub(st.resent);
            if frame.volatile && (!st.attached || depth >= self.limits.volatile_shed_at) {
                metrics().events_shed.inc();
                return Push::Shed;
            }
            if frame.seq_at == 0 && !frame.volatile && !st.attached {
                // A control frame of a connection that is gone.
                return Push::Shed;
            }
            let full = depth >= self.limits.capacity
                || st.queue_bytes + frame.bytes.len() > self.limits.capacity_bytes;
            if !frame.volatile && full {
                let reason = if st.attached {
                    Closed::SlowConsumer
                } else {
                    Closed::OverflowWhileAway
                };
                close_locked(&mut st, reason);
                Push::Overflowed(reason)
            } else {
                if frame.seq_at != 0 {
                    st.last_seq += 1;
                    frame.seq = st.last_seq;
                }
                st.queue_bytes += frame.bytes.len();
                st.queue.push_back(frame);
                metrics().outbound_depth.inc();
                Push::Queued
            }
        };
        st.wake.notify_one();
        outcome
    }

    /// Moves up to `max` frames into `out`, returning why the outbox closed
    /// when it has. Reliable frames (events and replies) move to the replay
    /// buffer as they are taken; the oldest are released past its bound.
    pub fn take_batch(
        &self,
        generation: u64,
        max: usize,
        out: &mut Vec<Queued>,
    ) -> Result<(), Stop> {
        let mut st = self.state.lock();
        if let Some(reason) = st.closed {
            return Err(Stop::Closed(reason));
        }
        if st.generation != generation {
            return Err(Stop::Superseded);
        }
        let n = max.min(st.queue.len());
        for _ in 0..n {
            let Some(frame) = st.queue.pop_front() else {
                break;
            };
            st.queue_bytes -= frame.bytes.len();
            if frame.seq != 0 {
                st.replay_bytes += frame.bytes.len();
                st.replay.push_back(frame.clone());
                while st.replay.len() > self.limits.replay
                    || st.replay_bytes > self.limits.replay_bytes
                {
                    let Some(old) = st.replay.pop_front() else {
                        break;
                    };
                    st.replay_bytes -= old.bytes.len();
                    st.floor = old.seq;
                }
            }
            out.push(frame);
        }
        st.resent = st.resent.saturating_sub(n);
        metrics().outbound_depth.dec_by(n as i64);
        Ok(())
    }

    /// The client has seen every reliable frame up to `seq`: release them.
    pub fn ack(&self, seq: u64) {
        let mut st = self.state.lock();
        while st.replay.front().is_some_and(|f| f.seq <= seq) {
            if let Some(f) = st.replay.pop_front() {
                st.replay_bytes -= f.bytes.len();
                st.floor = f.seq;
            }
        }
    }

    /// The connection of `generation` went away; events and replies keep
    /// queueing for a resume. Returns false when a newer connection already
    /// took over.
    pub fn detach(&self, generation: u64) -> bool {
        let mut st = self.state.lock();
        if st.generation != generation {
            return false;
        }
        st.attached = false;
        // Control and volatile frames are meaningless to a future connection.
        let before = st.queue.len();
        st.queue.retain(|f| f.seq != 0);
        st.queue_bytes = st.queue.iter().map(|f| f.bytes.len()).sum();
        metrics()
            .outbound_depth
            .dec_by((before - st.queue.len()) as i64);
        true
    }

    /// A new connection (woken through `wake`) takes over: requeue every
    /// reliable frame after `last_seq` ahead of what is waiting. Returns how
    /// many frames (events and replies) will be replayed and the new
    /// connection's generation; a still attached older connection is woken
    /// and finds itself superseded, and reads no more requests
    /// ([`Outbox::read_request`]), so [`Outbox::last_request_id`] read after
    /// this is exact.
    pub fn resume(&self, last_seq: u64, wake: Arc<Notify>) -> Result<(u32, u64), ResumeGap> {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return Err(ResumeGap::Closed);
        }
        if last_seq > st.last_seq {
            return Err(ResumeGap::Ahead {
                last_seq,
                sent: st.last_seq,
            });
        }
        if last_seq < st.floor {
            return Err(ResumeGap::Released {
                last_seq,
                floor: st.floor,
            });
        }
        // Control and volatile frames belong to the old connection; the
        // events and replies it took but may not have delivered go out
        // again first.
        let before = st.queue.len();
        st.queue.retain(|f| f.seq > last_seq);
        let again: Vec<Queued> = st.replay.drain(..).filter(|f| f.seq > last_seq).collect();
        metrics()
            .outbound_depth
            .inc_by(again.len() as i64 + st.queue.len() as i64 - before as i64);
        st.resent = again.len();
        st.replay_bytes = 0;
        for f in again.into_iter().rev() {
            st.queue.push_front(f);
        }
        st.queue_bytes = st.queue.iter().map(|f| f.bytes.len()).sum();
        st.floor = last_seq;
        st.attached = true;
        st.generation += 1;
        st.wake.notify_one();
        st.wake = wake;
        st.wake.notify_one();
        let replayed = st.queue.iter().filter(|f| f.seq != 0).count() as u32;
        Ok((replayed, st.generation))
    }

    /// Closes the outbox; the writer sees `reason` on its next batch.
    pub fn close(&self, reason: Closed) {
        let mut st = self.state.lock();
        close_locked(&mut st, reason);
        st.wake.notify_one();
    }

    /// The connection of `generation` read a request: remember the highest
    /// id. A superseded connection must not carry the request out (a
    /// resume already told the client which requests arrived), so it gets
    /// `Err` and stops.
    pub fn read_request(&self, generation: u64, request_id: u64) -> Result<(), Stop> {
        let mut st = self.state.lock();
        if let Some(reason) = st.closed {
            return Err(Stop::Closed(reason));
        }
        if st.generation != generation {
            return Err(Stop::Superseded);
        }
        st.last_request_id = st.last_request_id.max(request_id);
        Ok(())
    }

    /// The highest request id read on this session (0 before any).
    pub fn last_request_id(&self) -> u64 {
        self.state.lock().last_request_id
    }

    /// The generation of the connection draining this outbox now.
    pub fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    /// Whether the connection of `generation` may keep draining.
    pub fn check(&self, generation: u64) -> Result<(), Stop> {
        let st = self.state.lock();
        match st.closed {
            Some(reason) => Err(Stop::Closed(reason)),
            None if st.generation != generation => Err(Stop::Superseded),
            None => Ok(()),
        }
    }

    /// True once the outbox is closed for good (its session is over).
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed.is_some()
    }
}

/// Marks the outbox closed (first reason wins) and frees what it held.
fn close_locked(st: &mut State, reason: Closed) {
    if st.closed.is_none() {
        st.closed = Some(reason);
        metrics().outbound_depth.dec_by(st.queue.len() as i64);
        st.queue = VecDeque::new();
        st.replay = VecDeque::new();
        st.queue_bytes = 0;
        st.replay_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_schema::wire::ErrorCode;
    use huddle_schema::Encoder;

    fn limits() -> OutboxLimits {
        OutboxLimits {
            capacity: 4,
            capacity_bytes: 1 << 20,
            volatile_shed_at: 2,
            replay: 8,
            replay_bytes: 1 << 20,
        }
    }

    #[test]
    fn byte_bounds_hold_for_big_frames() {
        let mut enc = Encoder::new();
        let big = enc.echo_event("u", &[0u8; 300 * 1024], true);
        let ob = Outbox::new(limits(), Arc::new(Notify::new()));
        for _ in 0..3 {
            assert_eq!(ob.push_event(&big), Push::Queued);
        }
        assert_eq!(
            ob.push_event(&big),
            Push::Overflowed(Closed::SlowConsumer),
            "1 MiB of queue"
        );
        let ob = Outbox::new(limits(), Arc::new(Notify::new()));
        for _ in 0..6 {
            ob.push_event(&big);
            ob.take_batch(1, 10, &mut Vec::new()).unwrap();
        }
        ob.detach(1);
        // Only the newest 3 (≤ 1 MiB) unacknowledged events are still held.
        assert!(ob.resume(2, Arc::new(Notify::new())).is_err());
        assert_eq!(ob.resume(3, Arc::new(Notify::new())).map(|r| r.0), Ok(3));
    }

    fn seqs(out: &[Queued]) -> Vec<u64> {
        out.iter().map(|f| f.seq).collect()
    }

    #[test]
    fn reliable_events_are_numbered_and_replayed_after_resume() {
        let mut enc = Encoder::new();
        let ev = enc.echo_event("u", b"x", true);
        let ob = Outbox::new(limits(), Arc::new(Notify::new()));
        for _ in 0..3 {
            assert_eq!(ob.push_event(&ev), Push::Queued);
        }
        let mut out = Vec::new();
        ob.take_batch(1, 10, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![1, 2, 3]);
        ob.ack(1);
        assert!(ob.detach(1));
        assert_eq!(
            ob.push_event(&ev),
            Push::Queued,
            "held for the client while away"
        );
        let (replayed, generation) = ob.resume(2, Arc::new(Notify::new())).unwrap();
        assert_eq!((replayed, generation), (2, 2));
        assert_eq!(ob.take_batch(1, 10, &mut Vec::new()), Err(Stop::Superseded));
        assert!(
            !ob.detach(1),
            "a superseded connection cannot detach the session"
        );
        out.clear();
        ob.take_batch(2, 10, &mut out).unwrap();
        assert_eq!(
            seqs(&out),
            vec![3, 4],
            "exactly the missed events, in order"
        );
        let stamped = out[0].wire_bytes();
        assert_eq!(
            huddle_schema::verify_frame(&stamped, 1024).unwrap().seq(),
            3
        );
    }

    #[test]
    fn a_large_replay_does_not_count_against_the_queue_bound() {
        let mut enc = Encoder::new();
        let ev = enc.echo_event("u", b"x", true);
        let ob = Outbox::new(limits(), Arc::new(Notify::new()));
        // 8 events written but never acknowledged, twice the queue bound.
        for _ in 0..2 {
            for _ in 0..4 {
                ob.push_event(&ev);
            }
            ob.take_batch(1, 10, &mut Vec::new()).unwrap();
        }
        ob.push_reply(enc.pong(0, 1), Body::Pong);
        ob.detach(1);
        let (replayed, generation) = ob.resume(0, Arc::new(Notify::new())).unwrap();
        assert_eq!(replayed, 8);
        assert_eq!(ob.push_reply(enc.pong(0, 2), Body::Pong), Push::Queued);
        assert_eq!(ob.push_event(&ev), Push::Queued, "live events still fit");
        let mut out = Vec::new();
        ob.take_batch(generation, 100, &mut out).unwrap();
        assert_eq!(
            seqs(&out),
            vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 9],
            "no control frame of the old connection"
        );
    }

    #[test]
    fn replies_are_numbered_with_events_held_while_away_and_replayed() {
        let mut enc = Encoder::new();
        let ev = enc.echo_event("u", b"x", true);
        let ob = Outbox::new(limits(), Arc::new(Notify::new()));
        assert_eq!(ob.push_event(&ev), Push::Queued);
        assert_eq!(
            ob.push_reply(enc.echo_reply(7, b"r", 0, 0), Body::EchoReply),
            Push::Queued
        );
        let mut out = Vec::new();
        ob.take_batch(1, 10, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![1, 2], "the reply takes the next seq");
        // The connection drops before the client saw either frame; a refusal
        // for a request it had sent arrives while the client is away.
        assert!(ob.detach(1));
        let refusal = enc.error(8, ErrorCode::LOBBY_ERROR, "full", false, false);
        assert_eq!(ob.push_reply(refusal, Body::Error), Push::Queued);
        assert_eq!(
            ob.push_reply(enc.pong(0, 1), Body::Pong),
            Push::Shed,
            "a control frame of the gone connection"
        );
        let (replayed, generation) = ob.resume(0, Arc::new(Notify::new())).unwrap();
        assert_eq!(replayed, 3);
        out.clear();
        ob.take_batch(generation, 10, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![1, 2, 3]);
        let stamped: Vec<(u64, u64)> = out
            .iter()
            .map(|f| {
                let bytes = f.wire_bytes();
                let frame = huddle_schema::verify_frame(&bytes, 1024).unwrap();
                (frame.request_id(), frame.seq())
            })
            .collect();
        assert_eq!(
            stamped,
            vec![(0, 1), (7, 2), (8, 3)],
            "replies keep their ids"
        );
        // Acknowledged replies are released like events.
        ob.ack(3);
        ob.detach(generation);
        assert_eq!(ob.resume(3, Arc::new(Notify::new())).map(|r| r.0), Ok(0));
    }

    #[test]
    fn replies_piling_up_while_away_end_the_session() {
        let mut enc = Encoder::new();
        let ob = Outbox::new(limits(), Arc::new(Notify::new()));
        ob.detach(1);
        for id in 1..=4 {
            let reply = enc.echo_reply(id, b"r", 0, 0);
            assert_eq!(ob.push_reply(reply, Body::EchoReply), Push::Queued);
        }
        assert_eq!(
            ob.push_reply(enc.echo_reply(5, b"r", 0, 0), Body::EchoReply),
            Push::Overflowed(Closed::OverflowWhileAway),
            "never a silent drop"
        );
        assert_eq!(
            ob.resume(0, Arc::new(Notify::new())),
            Err(ResumeGap::Closed)
        );
    }

    #[test]
    fn the_highest_request_read_survives_a_resume_and_a_superseded_connection_reads_none() {
        let ob = Outbox::new(limits(), Arc::new(Notify::new()));
        assert_eq!(ob.last_request_id(), 0);
        assert_eq!(ob.read_request(1, 5), Ok(()));
        assert_eq!(ob.read_request(1, 3), Ok(()), "a reused id is only tracked");
        assert_eq!(ob.last_request_id(), 5);
        // A resume while the old connection still looks attached.
        let (_, generation) = ob.resume(0, Arc::new(Notify::new())).unwrap();
        assert_eq!(ob.read_request(1, 9), Err(Stop::Superseded));
        assert_eq!(ob.last_request_id(), 5, "what the resume reported holds");
        assert_eq!(ob.read_request(generation, 6), Ok(()));
        assert_eq!(ob.last_request_id(), 6);
        ob.close(Closed::Ended);
        assert_eq!(
            ob.read_request(generation, 7),
            Err(Stop::Closed(Closed::Ended))
        );
    }

    #[test]
    fn resume_from_before_the_released_floor_fails() {
        let mut enc = Encoder::new();
        let ev = enc.echo_event("u", b"x", true);
        let ob = Outbox::new(limits(), Arc::new(Notify::new()));
        ob.push_event(&ev);
        ob.push_event(&ev);
        ob.take_batch(1, 10, &mut Vec::new()).unwrap();
        ob.ack(2);
        ob.detach(1);
        let wake = Arc::new(Notify::new());
        assert_eq!(
            ob.resume(1, wake.clone()),
            Err(ResumeGap::Released {
                last_seq: 1,
                floor: 2
            })
        );
        assert_eq!(
            ob.resume(5, wake.clone()),
            Err(ResumeGap::Ahead {
                last_seq: 5,
                sent: 2
            })
        );
        assert_eq!(ob.resume(2, wake), Ok((0, 2)));
    }

    #[test]
    fn volatile_is_shed_first_then_slow_consumer_closes() {
        let mut enc = Encoder::new();
        let reliable = enc.echo_event("u", b"x", true);
        let volatile = enc.echo_event("u", b"x", false);
        let ob = Outbox::new(limits(), Arc::new(Notify::new()));
        assert_eq!(ob.push_event(&volatile), Push::Queued);
        assert_eq!(ob.push_event(&reliable), Push::Queued);
        assert_eq!(ob.push_event(&volatile), Push::Shed, "shed at depth 2");
        assert_eq!(ob.push_event(&reliable), Push::Queued);
        assert_eq!(ob.push_event(&reliable), Push::Queued);
        assert_eq!(
            ob.push_event(&reliable),
            Push::Overflowed(Closed::SlowConsumer)
        );
        assert_eq!(
            ob.take_batch(1, 10, &mut Vec::new()),
            Err(Stop::Closed(Closed::SlowConsumer))
        );
        assert_eq!(ob.push_event(&reliable), Push::AlreadyClosed);
    }

    #[test]
    fn overflow_while_away_ends_the_session() {
        let mut enc = Encoder::new();
        let reliable = enc.echo_event("u", b"x", true);
        let ob = Outbox::new(limits(), Arc::new(Notify::new()));
        ob.detach(1);
        for _ in 0..4 {
            assert_eq!(ob.push_event(&reliable), Push::Queued);
        }
        assert_eq!(
            ob.push_event(&reliable),
            Push::Overflowed(Closed::OverflowWhileAway)
        );
        assert_eq!(
            ob.resume(0, Arc::new(Notify::new())),
            Err(ResumeGap::Closed)
        );
    }
}
