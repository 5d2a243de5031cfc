//! What every scenario shares: the process clock, tokens and TLS trust, one
//! connection's handshake (transport connect, `Hello`, `Welcome`) and its
//! heartbeats, and the setup phase's counters and latency histogram.
//!
//! Frames are encoded and verified with `huddle-schema`; bytes move over the
//! SDK's raw transport (`huddle_client::transport`), which keeps per-connection
//! state small: this generator holds tens of thousands of connections in one
//! process, one task each.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use huddle_client::transport::{
    connect_raw, RawConnection, TlsOptions, Transport, MAX_INBOUND_FRAME_BYTES,
};
use huddle_client::ClientError;
use huddle_schema::wire::{Body, Frame};
use huddle_schema::{error_code_name, verify_frame, Encoder, PROTOCOL_VERSION};
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::{interval_at, timeout, Interval, MissedTickBehavior};

use crate::sys;
use crate::Args;

/// Longest a setup (connect, `Hello`, `Welcome` [, joins]) may take.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the minted tokens.
const TOKEN_TTL_S: u64 = 3600;
/// Request id of the `Hello`.
const HELLO_REQUEST_ID: u64 = 1;
/// Heartbeat interval when a `Welcome` carries none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// `Hello.client` of every connection.
const CLIENT_NAME: &str = concat!("huddle-loadtest/", env!("CARGO_PKG_VERSION"));
/// Errors printed one by one before only the counts go on.
const ERRORS_SHOWN: u64 = 10;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Heartbeat `Ping`s sent by all sessions of this process, for the summary.
pub(crate) static PINGS_SENT: AtomicU64 = AtomicU64::new(0);
/// The highest `ack_seq` any of those `Ping`s carried.
pub(crate) static MAX_ACK_SEQ: AtomicU64 = AtomicU64::new(0);

/// Starts the process-wide clock that [`now_ns`] counts from.
pub(crate) fn init_clock() {
    EPOCH.get_or_init(Instant::now);
}

/// Nanoseconds since [`init_clock`].
pub(crate) fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Milliseconds since the Unix epoch, for `Ping.time_ms` / `Pong.time_ms`.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

thread_local! {
    /// One frame builder per runtime thread; encoding never awaits, so a
    /// task never holds it across a suspension point.
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::new());
}

/// Builds one frame with this thread's [`Encoder`].
pub(crate) fn encode(f: impl FnOnce(&mut Encoder) -> Bytes) -> Bytes {
    ENCODER.with(|e| f(&mut e.borrow_mut()))
}

/// The HS256 secret: `--jwt-secret` / `HUDDLE_JWT_SECRET`, else the trimmed
/// contents of `<data-dir>/dev-secret`, as `huddle token` reads it.
pub(crate) fn jwt_secret(args: &Args) -> anyhow::Result<String> {
    if let Some(secret) = &args.jwt_secret {
        return Ok(secret.clone());
    }
    let path = args.data_dir.join("dev-secret");
    let secret = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the token secret from {} (start the gateway once to create it, \
             or pass --data-dir, --jwt-secret or HUDDLE_JWT_SECRET)",
            path.display()
        )
    })?;
    let secret = secret.trim();
    if secret.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(secret.to_owned())
}

/// Which server certificates to trust: `--insecure`, else `--ca-cert`, else
/// for `quic://` the dev gateway's `<data-dir>/tls/cert.pem`; `wss://` without
/// `--ca-cert` trusts the web PKI.
pub(crate) fn tls_options(args: &Args, transport: Transport) -> anyhow::Result<TlsOptions> {
    if args.insecure {
        return Ok(TlsOptions {
            accept_invalid_certs: true,
            ..TlsOptions::default()
        });
    }
    let read = |path: &Path, hint: &str| {
        std::fs::read(path).with_context(|| format!("reading {}{hint}", path.display()))
    };
    let ca_cert_pem = match (&args.ca_cert, transport) {
        (Some(path), _) => Some(read(path, "")?),
        (None, Transport::Quic) => Some(read(
            &args.data_dir.join("tls").join("cert.pem"),
            " (the gateway's self-signed certificate; pass --data-dir, --ca-cert or --insecure)",
        )?),
        (None, Transport::Ws) => None,
    };
    Ok(TlsOptions {
        ca_cert_pem,
        ..TlsOptions::default()
    })
}

/// The transport a URL selects, by its scheme.
pub(crate) fn transport_of(url: &str) -> anyhow::Result<Transport> {
    let mut transport = None;
    for one in urls_of(url) {
        let this = match one.split_once("://").map(|(scheme, _)| scheme) {
            Some("ws" | "wss") => Transport::Ws,
            Some("quic") => Transport::Quic,
            _ => bail!("--url {one}: use ws://HOST:PORT, wss://HOST:PORT or quic://HOST:PORT"),
        };
        if transport.is_some_and(|t| t != this) {
            bail!("--url {url}: every gateway in the list must use the same transport");
        }
        transport = Some(this);
    }
    transport.ok_or_else(|| anyhow::anyhow!("--url is empty: give at least one gateway URL"))
}

/// The gateways of a `--url` list (comma-separated, blanks ignored).
pub(crate) fn urls_of(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}

/// An HDR histogram of microseconds, 1 µs to 60 s at 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// The claims of a load-test token.
#[derive(Serialize)]
struct Claims {
    sub: String,
    name: String,
    exp: u64,
    /// `{"<game>": {"mu": .., "sigma": ..}}`, matchmaking-storm only.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratings: Option<serde_json::Value>,
}

/// Shared state of the setup phase: where and how to connect, the
/// concurrency limit, and what happened so far.
pub(crate) struct Setup {
    /// The gateways; client `i` connects to `urls[i % len]`.
    urls: Vec<String>,
    tls: TlsOptions,
    key: EncodingKey,
    source_ips: u32,
    permits: Semaphore,
    /// Setups that completed.
    pub(crate) ready: AtomicU64,
    /// Setups that failed (refused, server error, timeout, file limit).
    pub(crate) failed: AtomicU64,
    /// Connections lost after a completed setup.
    pub(crate) dropped: AtomicU64,
    /// [`now_ns`] of the last completed connect.
    pub(crate) last_connect_ns: AtomicU64,
    /// Connect + `Hello`/`Welcome` latency, µs.
    pub(crate) connect_us: Mutex<Histogram<u64>>,
    /// Failures and drops by kind, for the summary.
    pub(crate) failures: Mutex<BTreeMap<String, u64>>,
}

impl Setup {
    pub(crate) fn new(args: &Args, transport: Transport, source_ips: u32) -> anyhow::Result<Self> {
        let secret = jwt_secret(args)?;
        Ok(Self {
            urls: urls_of(&args.url),
            tls: tls_options(args, transport)?,
            key: EncodingKey::from_secret(secret.as_bytes()),
            source_ips,
            permits: Semaphore::new(args.concurrency as usize),
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_connect_ns: AtomicU64::new(0),
            connect_us: Mutex::new(histogram()),
            failures: Mutex::new(BTreeMap::new()),
        })
    }

    /// A token for user `u<i>` / `user<i>`, valid for an hour.
    fn token(&self, i: u32) -> anyhow::Result<String> {
        self.mint(format!("u{i}"), format!("user{i}"), None)
    }

    /// A token for user `sub` named `name`, valid for an hour, with a
    /// `ratings` claim when given.
    pub(crate) fn mint(
        &self,
        sub: String,
        name: String,
        ratings: Option<serde_json::Value>,
    ) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub,
            name,
            exp: now + TOKEN_TTL_S,
            ratings,
        };
        Ok(jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &self.key,
        )?)
    }

    /// The gateway client `i` connects to (round-robin over `--url`).
    pub(crate) fn url(&self, i: u32) -> &str {
        &self.urls[i as usize % self.urls.len()]
    }

    /// The server certificates to trust.
    pub(crate) fn tls(&self) -> &TlsOptions {
        &self.tls
    }

    /// Records one completed connect + handshake that took `us`.
    pub(crate) fn record_connect(&self, us: u64) {
        self.connect_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(us.max(1));
        self.last_connect_ns.fetch_max(now_ns(), Relaxed);
    }

    /// The source address of client `i`.
    pub(crate) fn source_ip(&self, i: u32) -> IpAddr {
        sys::source_ip(i, self.source_ips)
    }

    /// Connects client `i` from its source address and completes the
    /// handshake; records the latency from the transport connect to the
    /// `Welcome`.
    pub(crate) async fn open(&self, i: u32) -> Result<Session, Failure> {
        let token = self.token(i).map_err(|e| Failure::new("token", e))?;
        let t0 = Instant::now();
        let mut conn = connect_raw(self.url(i), &self.tls, Some(self.source_ip(i)))
            .await
            .map_err(|e| Failure::client("connect", e))?;
        let hello = encode(|enc| {
            enc.hello(
                HELLO_REQUEST_ID,
                Some(&token),
                CLIENT_NAME,
                PROTOCOL_VERSION,
                None,
                false,
            )
        });
        drop(token);
        conn.send(hello)
            .await
            .map_err(|e| Failure::client("hello", e))?;
        let heartbeat = loop {
            let frame = match conn.recv().await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    return Err(Failure::new(
                        "closed before Welcome",
                        anyhow!("the gateway closed the connection before its Welcome"),
                    ))
                }
                Err(e) => return Err(Failure::client("welcome", e)),
            };
            let parsed = verify_frame(&frame, MAX_INBOUND_FRAME_BYTES)
                .map_err(|e| Failure::new("bad frame", anyhow!("before Welcome: {e}")))?;
            match parsed.body_type() {
                Body::Welcome => {
                    let ms = parsed.body_as_welcome().map_or(0, |w| w.heartbeat_ms());
                    break if ms == 0 {
                        DEFAULT_HEARTBEAT
                    } else {
                        Duration::from_millis(u64::from(ms))
                    };
                }
                Body::Error => {
                    let (code, message) = parsed.body_as_error().map_or(("UNKNOWN", ""), |e| {
                        (error_code_name(e.code()), e.message().unwrap_or_default())
                    });
                    return Err(Failure::new(
                        format!("server {code}"),
                        anyhow!("server error {code}: {message}"),
                    ));
                }
                Body::Ping => {
                    let pong = encode(|enc| enc.pong(0, unix_ms()));
                    conn.send(pong)
                        .await
                        .map_err(|e| Failure::client("hello", e))?;
                }
                _ => {}
            }
        };
        self.record_connect(t0.elapsed().as_micros() as u64);
        let mut ticks = interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Session {
            conn,
            ticks,
            ack_seq: 0,
        })
    }

    /// Runs `setup` for client `i` within a concurrency slot and
    /// [`SETUP_TIMEOUT`]; counts it as ready or failed.
    ///
    /// `setup` comes boxed: a handshake's state is large (about 10 KiB) and
    /// short-lived, and a future passed by value would stay part of the
    /// connection's task for as long as the connection lives.
    pub(crate) async fn run<T>(
        &self,
        i: u32,
        setup: Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + '_>>,
    ) -> Option<T> {
        let result = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|e| Failure::new("semaphore", e.into()))?;
            match timeout(SETUP_TIMEOUT, setup).await {
                Ok(result) => result,
                Err(_) => Err(Failure::new(
                    "timeout",
                    anyhow!("no Welcome within {} s", SETUP_TIMEOUT.as_secs()),
                )),
            }
        }
        .await;
        match result {
            Ok(value) => {
                self.ready.fetch_add(1, Relaxed);
                Some(value)
            }
            Err(failure) => {
                self.count(&self.failed, i, "setup", failure);
                None
            }
        }
    }

    /// Counts a connection lost after its setup.
    pub(crate) fn dropped(&self, i: u32, failure: Failure) {
        self.count(&self.dropped, i, "dropped later", failure);
    }

    fn count(&self, counter: &AtomicU64, i: u32, phase: &str, failure: Failure) {
        let shown = self.failed.load(Relaxed) + self.dropped.load(Relaxed);
        counter.fetch_add(1, Relaxed);
        if shown < ERRORS_SHOWN {
            eprintln!("client {i}: {phase}: {:#}", failure.error);
        }
        *self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(format!("{phase}: {}", failure.kind))
            .or_default() += 1;
    }
}

/// Why a setup failed or a connection dropped: a short kind, to tally, and
/// the full error, to print.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: String,
    error: anyhow::Error,
}

impl Failure {
    pub(crate) fn new(kind: impl Into<String>, error: anyhow::Error) -> Self {
        let mut kind = kind.into();
        if format!("{error:#}").contains("Too many open files") {
            kind = "too many open files".into();
        }
        Self { kind, error }
    }

    /// A failure of the SDK at `stage`; server errors are tallied by code.
    pub(crate) fn client(stage: &str, error: ClientError) -> Self {
        let kind = match &error {
            ClientError::Server { code, .. } => format!("server {}", error_code_name(*code)),
            ClientError::Timeout => format!("{stage}: timed out"),
            ClientError::Disconnected | ClientError::Closed => format!("{stage}: disconnected"),
            ClientError::Transport(_) => format!("{stage}: transport"),
            ClientError::Protocol(_) => format!("{stage}: protocol"),
            ClientError::InvalidUrl(_) => "invalid URL".into(),
        };
        Self::new(kind, anyhow::Error::new(error).context(stage.to_owned()))
    }
}

/// What a [`Session`] waited for.
#[derive(Debug)]
pub(crate) enum Event {
    /// The heartbeat interval passed: time to send a `Ping`.
    Heartbeat,
    /// A frame arrived.
    Frame(Bytes),
}

/// One connection after its `Welcome`.
pub(crate) struct Session {
    conn: RawConnection,
    ticks: Interval,
    /// Highest event `seq` seen, acknowledged in each `Ping`.
    ack_seq: u64,
}

impl Session {
    /// Waits for the next frame or heartbeat. Cancel-safe: it only waits
    /// (the SDK's `recv` loses nothing when dropped), so a scenario may
    /// `select!` it against its own timers; the sending happens in
    /// [`Session::handle`].
    pub(crate) async fn wait(&mut self) -> Result<Event, Failure> {
        tokio::select! {
            frame = self.conn.recv() => match frame {
                Ok(Some(frame)) => Ok(Event::Frame(frame)),
                Ok(None) => Err(Failure::new(
                    "closed by the gateway",
                    anyhow!("the gateway closed the connection"),
                )),
                Err(e) => Err(Failure::client("receive", e)),
            },
            _ = self.ticks.tick() => Ok(Event::Heartbeat),
        }
    }

    /// Acts on `event`: sends the heartbeat `Ping`, answers a server `Ping`
    /// with `Pong`, fails on `GoAway` or a closing `Error`. Any other frame
    /// (replies, events, non-closing errors) goes to `scenario`, already
    /// verified, and its result is returned; `None` when the event was the
    /// session's own business. Not cancel-safe: it may be sending.
    pub(crate) async fn handle<R>(
        &mut self,
        event: Event,
        scenario: impl FnOnce(Frame<'_>) -> R,
    ) -> Result<Option<R>, Failure> {
        let frame = match event {
            Event::Heartbeat => {
                let ack_seq = self.ack_seq;
                let ping = encode(|enc| enc.ping(0, ack_seq, unix_ms()));
                self.send(ping).await?;
                PINGS_SENT.fetch_add(1, Relaxed);
                MAX_ACK_SEQ.fetch_max(ack_seq, Relaxed);
                return Ok(None);
            }
            Event::Frame(frame) => frame,
        };
        let parsed = verify_frame(&frame, MAX_INBOUND_FRAME_BYTES)
            .map_err(|e| Failure::new("bad frame", anyhow!("from the gateway: {e}")))?;
        self.ack_seq = self.ack_seq.max(parsed.seq());
        match parsed.body_type() {
            Body::Ping => {
                let pong = encode(|enc| enc.pong(0, unix_ms()));
                self.send(pong).await?;
                Ok(None)
            }
            Body::Pong => Ok(None),
            Body::GoAway => {
                let reason = parsed
                    .body_as_go_away()
                    .and_then(|g| g.reason())
                    .unwrap_or_default();
                Err(Failure::new("GoAway", anyhow!("GoAway: {reason}")))
            }
            Body::Error if parsed.body_as_error().is_some_and(|e| e.closing()) => {
                let (code, message) = parsed.body_as_error().map_or(("UNKNOWN", ""), |e| {
                    (error_code_name(e.code()), e.message().unwrap_or_default())
                });
                Err(Failure::new(
                    format!("server {code}"),
                    anyhow!("closing server error {code}: {message}"),
                ))
            }
            _ => Ok(Some(scenario(parsed))),
        }
    }

    /// Moves the next heartbeat to `fraction` (0..1) of an interval after
    /// `from`, the later ones one interval apart. Connections that were set
    /// up within moments of each other have their heartbeats fall due
    /// together; a scenario spreads them this way.
    pub(crate) fn spread_heartbeat(&mut self, from: tokio::time::Instant, fraction: f64) {
        let offset = self.ticks.period().mul_f64(fraction.clamp(0.0, 1.0));
        self.ticks.reset_at(from + offset);
    }

    /// Sends one frame.
    pub(crate) async fn send(&mut self, frame: Bytes) -> Result<(), Failure> {
        self.conn
            .send(frame)
            .await
            .map_err(|e| Failure::client("send", e))
    }

    /// Closes the connection cleanly.
    pub(crate) async fn close(self) {
        self.conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_list_spreads_clients_over_one_transport() {
        assert_eq!(
            urls_of("ws://127.0.0.1:7350, ws://127.0.0.1:7360,,"),
            ["ws://127.0.0.1:7350", "ws://127.0.0.1:7360"]
        );
        assert!(matches!(
            transport_of("quic://127.0.0.1:7351,quic://127.0.0.1:7361"),
            Ok(Transport::Quic)
        ));
        let mixed = transport_of("ws://127.0.0.1:7350,quic://127.0.0.1:7361").unwrap_err();
        assert!(mixed.to_string().contains("same transport"), "{mixed}");
        assert!(transport_of(" , ").is_err());
        assert!(transport_of("http://127.0.0.1:7350").is_err());
    }
}
