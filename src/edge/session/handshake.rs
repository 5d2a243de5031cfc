//! The handshake: the first frame must be a good `Hello`; its token is
//! verified, the session attached (fresh) or resumed on the user's shard,
//! and `Welcome` sent — or the connection is refused with one closing
//! `Error`.
//!
//! [`parse_hello`] holds every check of the first frame that needs no
//! authenticator and no socket (verification, decoding, request id,
//! protocol version, the resume ids), so a fuzzer can drive it with bytes
//! alone. It must stay pure: no I/O, no metrics, no panics on any input.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use huddle_schema::encode::WelcomeFields;
use huddle_schema::wire::{Body, ErrorCode};
use huddle_schema::{verify_frame, CloseCode, PROTOCOL_VERSION};
use tokio::sync::{oneshot, Notify};
use tokio::time::timeout;

use super::{
    connection::detach, encode, error_frame, too_large_message, unix_ms, Attached, FrameReader,
    FrameWriter, Inbound, FINAL_WRITE,
};
use crate::core::engine::chat::Author;
use crate::core::engine::SessionId;
use crate::core::outbox::Outbox;
use crate::core::shard::{ResumeFailure, ShardMsg};
use crate::edge::auth::Identity;
use crate::edge::request::{self, Request};
use crate::edge::Edge;
use crate::telemetry::metrics::metrics;

/// A first frame that passed every check [`parse_hello`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Non-zero; `Welcome` (or the refusal) carries it.
    pub request_id: u64,
    /// The JWT, for the authenticator (absent: TOKEN_MISSING).
    pub token: Option<&'a str>,
    /// Free-form client name and version.
    pub client: Option<&'a str>,
    /// The client takes volatile events as QUIC datagrams.
    pub datagrams: bool,
    /// `None`: a fresh session. `Some(Err(..))`: a resume whose ids do not
    /// parse, refused only once the token verified, so that a bad token is
    /// always what a client hears first.
    pub resume: Option<Result<ResumeTicket, HandshakeRefusal>>,
}

/// A resume with readable ids; whether it is granted is the shard's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeTicket {
    pub session: SessionId,
    pub resume_token: u128,
    /// Highest `seq` the client saw.
    pub last_seq: u64,
}

/// Why a connection is refused during the handshake: the closing `Error`
/// it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRefusal {
    pub request_id: u64,
    pub code: ErrorCode,
    pub message: String,
    /// The body of the frame when it verified (`None`: it did not), for
    /// the frames-in metric.
    pub verified_body: Option<Body>,
}

impl HandshakeRefusal {
    fn new(request_id: u64, code: ErrorCode, message: impl Into<String>, body: Body) -> Self {
        Self {
            request_id,
            code,
            message: message.into(),
            verified_body: Some(body),
        }
    }
}

/// Checks a connection's first frame as far as it can without the
/// authenticator: it verifies (at most `max_frame_bytes`), carries a
/// non-zero request id, is a `Hello` of this protocol version, and names a
/// resume (if any) with ids that parse. Never panics.
pub fn parse_hello(bytes: &[u8], max_frame_bytes: usize) -> Result<Hello<'_>, HandshakeRefusal> {
    let frame = verify_frame(bytes, max_frame_bytes).map_err(|e| HandshakeRefusal {
        request_id: e.request_id(),
        code: e.code(),
        message: e.to_string(),
        verified_body: None,
    })?;
    let body = frame.body_type();
    let request_id = frame.request_id();
    if request_id == 0 {
        let msg = "Hello needs a non-zero request_id";
        return Err(HandshakeRefusal::new(
            0,
            ErrorCode::MALFORMED_FRAME,
            msg,
            body,
        ));
    }
    let Ok(Request::Hello(hello)) = Request::from_frame(&frame) else {
        let msg = "the first frame must be Hello";
        return Err(HandshakeRefusal::new(
            request_id,
            ErrorCode::MALFORMED_FRAME,
            msg,
            body,
        ));
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let msg = format!(
            "protocol version {} is not supported; this gateway speaks version {PROTOCOL_VERSION}",
            hello.protocol_version
        );
        return Err(HandshakeRefusal::new(
            request_id,
            ErrorCode::UNSUPPORTED_VERSION,
            msg,
            body,
        ));
    }
    Ok(Hello {
        request_id,
        token: hello.token,
        client: hello.client,
        datagrams: hello.datagrams,
        resume: hello.resume.map(|r| resume_ticket(request_id, r)),
    })
}

fn resume_ticket(
    request_id: u64,
    r: request::Resume<'_>,
) -> Result<ResumeTicket, HandshakeRefusal> {
    let session = r.session_id.and_then(|s| u64::from_str_radix(s, 16).ok());
    let token = r
        .resume_token
        .and_then(|s| u128::from_str_radix(s, 16).ok());
    match (session, token) {
        (Some(session), Some(resume_token)) => Ok(ResumeTicket {
            session,
            resume_token,
            last_seq: r.last_seq,
        }),
        _ => Err(HandshakeRefusal::new(
            request_id,
            ErrorCode::RESUME_FAILED,
            "resume needs the session_id and resume_token from Welcome",
            Body::Hello,
        )),
    }
}

async fn refuse<W: FrameWriter>(wr: &mut W, request_id: u64, code: ErrorCode, message: &str) {
    let frame = error_frame(request_id, code, message, false, true);
    let _ = timeout(FINAL_WRITE, wr.send(&[frame])).await;
    wr.close(CloseCode::Error(code), message).await;
}

async fn refuse_with<W: FrameWriter>(wr: &mut W, refusal: &HandshakeRefusal) {
    refuse(wr, refusal.request_id, refusal.code, &refusal.message).await;
}

/// The first frame's bytes, or `None` once the connection was refused (or
/// left) instead.
async fn first_frame<R: FrameReader, W: FrameWriter>(
    edge: &Edge,
    rd: &mut R,
    wr: &mut W,
) -> Option<Bytes> {
    let cfg = &edge.session;
    let limit = Duration::from_millis(cfg.handshake_timeout_ms.into());
    match timeout(limit, rd.recv()).await {
        Ok(Inbound::Frame(bytes)) => Some(bytes),
        Ok(Inbound::TooLarge(n)) => {
            let msg = too_large_message(n, cfg.max_frame_bytes);
            refuse(wr, 0, ErrorCode::FRAME_TOO_LARGE, &msg).await;
            None
        }
        Ok(Inbound::NotBinary) => {
            let msg = "text messages are not frames; send binary";
            refuse(wr, 0, ErrorCode::MALFORMED_FRAME, msg).await;
            None
        }
        Ok(Inbound::Closed | Inbound::Failed(_)) => None,
        Err(_) => {
            let msg = format!(
                "no Hello within {} ms of connecting",
                cfg.handshake_timeout_ms
            );
            refuse(wr, 0, ErrorCode::MALFORMED_FRAME, &msg).await;
            None
        }
    }
}

/// A session attached or resumed on its user's shard.
struct Established {
    session: SessionId,
    resume_token: u128,
    outbox: Arc<Outbox>,
    generation: u64,
    /// `Some` when an earlier session carried on.
    resumed: Option<Resumption>,
}

pub(super) async fn handshake<R: FrameReader, W: FrameWriter>(
    edge: &Arc<Edge>,
    rd: &mut R,
    wr: &mut W,
) -> Option<Attached> {
    let first = first_frame(edge, rd, wr).await?;
    let hello = match parse_hello(&first, edge.session.max_frame_bytes as usize) {
        Ok(hello) => hello,
        Err(refusal) => {
            metrics().frame_in(refusal.verified_body);
            refuse_with(wr, &refusal).await;
            return None;
        }
    };
    metrics().frame_in(Some(Body::Hello));
    let request_id = hello.request_id;
    let identity = match edge.auth.verify(hello.token) {
        Ok(id) => id,
        Err(e) => {
            refuse(wr, request_id, e.code(), &e.to_string()).await;
            return None;
        }
    };
    let wake = Arc::new(Notify::new());
    let established = match hello.resume {
        Some(Err(refusal)) => {
            refuse_with(wr, &refusal).await;
            return None;
        }
        Some(Ok(ticket)) => resume(edge, wr, request_id, &identity, ticket, &wake).await?,
        None => attach(edge, &identity, &wake).await,
    };
    let welcome = welcome_frame(edge, request_id, &identity, &established);
    metrics().frame_out(Body::Welcome);
    let resumed = established.resumed.is_some();
    let attached = attached(identity, established, wake, hello.datagrams);
    let handshake_limit = Duration::from_millis(edge.session.handshake_timeout_ms.into());
    if !matches!(
        timeout(handshake_limit, wr.send(&[welcome])).await,
        Ok(Ok(()))
    ) {
        // A fresh session whose Welcome never arrived cannot be resumed.
        detach(edge, &attached, resumed).await;
        return None;
    }
    // The matchmaker learns the token's ratings now, so a party queued by
    // another member's lobby host is matched on them too. Best effort: a
    // player's own start carries them again.
    for (game, rating) in &attached.ratings {
        let cmd = crate::core::engine::matchmaking::Command::SetRatings {
            game: game.clone(),
            ratings: vec![(attached.user.clone(), *rating)],
            from_token: true,
        };
        let msg = ShardMsg::Matchmaking {
            cmd: Box::new(cmd),
            reply_to: None,
            watcher: None,
        };
        let _ = edge.shards.try_send(edge.shards.of_game(game), msg);
    }
    Some(attached)
}

/// A fresh session on the user's shard.
async fn attach(edge: &Edge, identity: &Identity, wake: &Arc<Notify>) -> Established {
    let session = rand::random::<u64>() | 1;
    let token = rand::random::<u128>();
    let outbox = Arc::new(Outbox::new(edge.outbox_limits(), wake.clone()));
    let msg = ShardMsg::Attach {
        session,
        user: identity.user_id.clone(),
        resume_token: token,
        outbox: outbox.clone(),
    };
    edge.shards
        .send(edge.shards.of_user(&identity.user_id), msg)
        .await;
    Established {
        session,
        resume_token: token,
        outbox,
        generation: 1,
        resumed: None,
    }
}

/// Asks the user's shard to carry the session on; `None` once refused.
async fn resume<W: FrameWriter>(
    edge: &Edge,
    wr: &mut W,
    request_id: u64,
    identity: &Identity,
    ticket: ResumeTicket,
    wake: &Arc<Notify>,
) -> Option<Established> {
    let (tx, rx) = oneshot::channel();
    let next_token = rand::random::<u128>();
    let msg = ShardMsg::Resume {
        session: ticket.session,
        user: identity.user_id.clone(),
        resume_token: ticket.resume_token,
        next_token,
        last_seq: ticket.last_seq,
        wake: wake.clone(),
        reply: tx,
    };
    edge.shards
        .send(edge.shards.of_user(&identity.user_id), msg)
        .await;
    match rx.await {
        Ok(Ok(r)) => {
            // Exact: the superseded connection reads no more requests.
            let last_request_id = r.outbox.last_request_id();
            Some(Established {
                session: ticket.session,
                resume_token: next_token,
                outbox: r.outbox,
                generation: r.generation,
                resumed: Some(Resumption {
                    replayed: r.replayed,
                    last_request_id,
                }),
            })
        }
        Ok(Err(failure)) => {
            let msg = match failure {
                ResumeFailure::Refused(r) => {
                    format!("cannot resume: {r}; connect without resume and re-sync")
                }
                ResumeFailure::Gap(g) => {
                    format!("cannot resume exactly: {g}; connect without resume and re-sync")
                }
            };
            refuse(wr, request_id, ErrorCode::RESUME_FAILED, &msg).await;
            None
        }
        Err(_) => {
            let msg = "shard unavailable (shutting down?)";
            refuse(wr, request_id, ErrorCode::INTERNAL, msg).await;
            None
        }
    }
}

fn attached(
    identity: Identity,
    established: Established,
    wake: Arc<Notify>,
    datagrams: bool,
) -> Attached {
    let operator = identity
        .roles
        .iter()
        .any(|r| r == "operator" || r == "moderator");
    let username: Arc<str> = Arc::from(identity.username.as_str());
    // Usually the same text: share it rather than hold it twice.
    let display_name = if identity.display_name == identity.username {
        username.clone()
    } else {
        Arc::from(identity.display_name.as_str())
    };
    Attached {
        session: established.session,
        author: Author {
            id: identity.user_id.clone(),
            username,
            display_name,
        },
        operator,
        ratings: identity.ratings,
        user: identity.user_id,
        outbox: established.outbox,
        generation: established.generation,
        wake,
        datagrams,
    }
}

/// What a `Welcome` tells a client whose session carried on.
struct Resumption {
    /// Events and replies that follow with `seq > last_seq`.
    replayed: u32,
    /// The highest request id read on the session: the client re-sends
    /// only requests above it.
    last_request_id: u64,
}

fn welcome_frame(edge: &Edge, request_id: u64, id: &Identity, established: &Established) -> Bytes {
    let cfg = &edge.session;
    let session_id = format!("{:016x}", established.session);
    let token = format!("{:032x}", established.resume_token);
    let resumed = established.resumed.as_ref();
    encode(|e| {
        e.welcome(
            request_id,
            &WelcomeFields {
                session_id: &session_id,
                user_id: &id.user_id,
                username: &id.username,
                display_name: &id.display_name,
                roles: &id.roles,
                resume_token: &token,
                heartbeat_ms: cfg.heartbeat_ms,
                heartbeat_timeout_ms: cfg.heartbeat_timeout_ms,
                server_time_ms: unix_ms(),
                resumed: resumed.is_some(),
                replayed: resumed.map_or(0, |r| r.replayed),
                max_frame_bytes: cfg.max_frame_bytes,
                resume_window_ms: cfg.resume_window_ms,
                last_request_id: resumed.map_or(0, |r| r.last_request_id),
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use huddle_schema::encode::ResumeFields;
    use huddle_schema::Encoder;

    use super::*;

    const MAX: usize = 64 * 1024;

    fn refusal(bytes: &[u8]) -> (u64, ErrorCode, String, Option<Body>) {
        let r = parse_hello(bytes, MAX).unwrap_err();
        (r.request_id, r.code, r.message, r.verified_body)
    }

    #[test]
    fn a_good_hello_parses() {
        let mut e = Encoder::new();
        let bytes = e.hello(5, Some("jwt"), "sdk/1", PROTOCOL_VERSION, None, true);
        assert_eq!(
            parse_hello(&bytes, MAX),
            Ok(Hello {
                request_id: 5,
                token: Some("jwt"),
                client: Some("sdk/1"),
                datagrams: true,
                resume: None,
            })
        );
        let resume = ResumeFields {
            session_id: "00000000000000ab",
            resume_token: "00000000000000000000000000000cd0",
            last_seq: 12,
        };
        let bytes = e.hello(5, None, "sdk/1", PROTOCOL_VERSION, Some(resume), false);
        let hello = parse_hello(&bytes, MAX).unwrap();
        assert_eq!(hello.token, None, "the authenticator answers TOKEN_MISSING");
        assert_eq!(
            hello.resume,
            Some(Ok(ResumeTicket {
                session: 0xab,
                resume_token: 0xcd0,
                last_seq: 12,
            }))
        );
    }

    #[test]
    fn each_bad_first_frame_gets_its_refusal() {
        let mut e = Encoder::new();
        let junk = b"not a frame at all";
        let verifier = verify_frame(junk, MAX).unwrap_err();
        assert_eq!(
            refusal(junk),
            (0, ErrorCode::MALFORMED_FRAME, verifier.to_string(), None),
            "the verifier's words, and no body for the metric"
        );
        let big = vec![0u8; MAX + 1];
        assert_eq!(refusal(&big).1, ErrorCode::FRAME_TOO_LARGE);
        let hello = e.hello(0, Some("t"), "c", PROTOCOL_VERSION, None, false);
        assert_eq!(
            refusal(&hello),
            (
                0,
                ErrorCode::MALFORMED_FRAME,
                "Hello needs a non-zero request_id".into(),
                Some(Body::Hello)
            )
        );
        let join = e.chat_join(3, "c");
        assert_eq!(
            refusal(&join),
            (
                3,
                ErrorCode::MALFORMED_FRAME,
                "the first frame must be Hello".into(),
                Some(Body::ChatJoin)
            )
        );
        let old = e.hello(4, Some("t"), "c", 9, None, false);
        assert_eq!(
            refusal(&old),
            (
                4,
                ErrorCode::UNSUPPORTED_VERSION,
                format!("protocol version 9 is not supported; this gateway speaks version {PROTOCOL_VERSION}"),
                Some(Body::Hello)
            )
        );
    }

    #[test]
    fn an_unreadable_resume_is_refused_after_the_token() {
        let mut e = Encoder::new();
        let resume = ResumeFields {
            session_id: "not hex",
            resume_token: "ff",
            last_seq: 0,
        };
        let bytes = e.hello(6, Some("t"), "c", PROTOCOL_VERSION, Some(resume), false);
        let hello = parse_hello(&bytes, MAX).expect("the frame itself is good");
        let refusal = hello.resume.unwrap().unwrap_err();
        assert_eq!(
            (refusal.request_id, refusal.code, refusal.message.as_str()),
            (
                6,
                ErrorCode::RESUME_FAILED,
                "resume needs the session_id and resume_token from Welcome"
            )
        );
    }

    #[test]
    fn garbage_is_refused_never_a_panic() {
        for len in 0..300 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 73 + 5) as u8).collect();
            assert!(parse_hello(&junk, MAX).is_err());
        }
    }
}
