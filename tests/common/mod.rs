//! Test harness: a real gateway on loopback ports chosen by the OS, tokens
//! minted with its key, and raw connections for frame-level assertions.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use huddle::edge::auth::Claims;
use huddle::ops::config::{Config, QueueConfig, WideningConfig};
use huddle::ops::gateway::{self, Running};
use huddle_client::transport::{connect_raw, RawConnection, TlsOptions};
use huddle_client::{Client, ClientConfig, EventStream};
use huddle_schema::wire::{self, ErrorCode};
use huddle_schema::{verify_frame, CloseCode, Encoder, PROTOCOL_VERSION};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

pub const SECRET: &str = "integration-test-secret";

/// A gateway running in this process on ephemeral loopback ports.
pub struct TestGateway {
    pub running: Option<Running>,
    pub ws_url: String,
    pub quic_url: String,
    pub cert_pem: Vec<u8>,
    _dir: Option<tempfile::TempDir>,
}

/// A config with ephemeral ports, a temp data dir and a fixed secret.
pub fn base_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.ws_addr = "127.0.0.1:0".parse().unwrap();
    c.server.quic_addr = "127.0.0.1:0".parse().unwrap();
    c.server.admin_addr = "127.0.0.1:0".parse().unwrap();
    c.server.data_dir = dir.to_path_buf();
    c.server.shutdown_timeout_ms = 3_000;
    // Shutdown goes straight to GoAway; the drain tests set a window.
    c.server.drain_readyz_ms = 0;
    c.auth.secret = Some(SECRET.into());
    c.shards.count = 2;
    c.shards.pin = false;
    // HUDDLE_TEST_STORE=scylla runs the suite over the CQL server at
    // HUDDLE_TEST_CQL (scripts/test does, for the history tests).
    if std::env::var("HUDDLE_TEST_STORE").as_deref() == Ok("scylla") {
        c.store.kind = huddle::ops::config::StoreKind::Scylla;
        c.store.scylla.nodes = vec![std::env::var("HUDDLE_TEST_CQL")
            .expect("HUDDLE_TEST_STORE=scylla needs HUDDLE_TEST_CQL=host:port")];
        // A keyspace of this test process's own: chat ids repeat across runs.
        static KEYSPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        c.store.scylla.keyspace = KEYSPACE
            .get_or_init(|| {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                format!("huddle_it_{:x}_{}", nanos % (1 << 40), std::process::id())
            })
            .clone();
    }
    c
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut gw = Self::start_in(dir.path(), tweak).await;
        gw._dir = Some(dir);
        gw
    }

    /// A gateway whose data (dev secret, certificate, history) lives in
    /// `dir`, which outlives it: start another on the same `dir` to restart.
    pub async fn start_in(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = base_config(dir);
        tweak(&mut config);
        // Several nodes creating one keyspace's tables at once can leave a
        // CQL server's schema in disagreement: one start at a time.
        static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let one = STARTING.lock().await;
        let running = gateway::start(config).await.expect("gateway starts");
        drop(one);
        let cert_pem = std::fs::read(&running.cert_path).unwrap();
        Self {
            ws_url: format!("ws://{}", running.ws_addr),
            quic_url: format!("quic://{}", running.quic_addr),
            cert_pem,
            running: Some(running),
            _dir: None,
        }
    }

    /// Both transports' URLs: every behaviour is checked over each.
    pub fn urls(&self) -> [String; 2] {
        [self.ws_url.clone(), self.quic_url.clone()]
    }

    pub fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_cert_pem: Some(self.cert_pem.clone()),
            ..TlsOptions::default()
        }
    }

    pub fn client_config(&self, url: &str, user: &str) -> ClientConfig {
        let mut c = ClientConfig::new(url, token(user));
        c.tls = self.tls();
        c.request_timeout = Duration::from_secs(10);
        c
    }

    /// A client whose token carries `claims` (ratings, roles, ...).
    pub async fn client_with(&self, url: &str, claims: &Claims) -> (Client, EventStream) {
        let token = sign(
            claims,
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        );
        let mut c = ClientConfig::new(url, token);
        c.tls = self.tls();
        c.request_timeout = Duration::from_secs(10);
        Client::connect(c)
            .await
            .unwrap_or_else(|e| panic!("{} connects over {url}: {e}", claims.sub))
    }

    pub async fn client(&self, url: &str, user: &str) -> (Client, EventStream) {
        Client::connect(self.client_config(url, user))
            .await
            .unwrap_or_else(|e| panic!("{user} connects over {url}: {e}"))
    }

    pub async fn raw(&self, url: &str) -> RawConnection {
        connect_raw(url, &self.tls(), None)
            .await
            .expect("raw connect")
    }

    /// A raw connection past the handshake, with its Welcome.
    pub async fn raw_session(&self, url: &str, user: &str) -> (RawConnection, WelcomeInfo) {
        let mut conn = self.raw(url).await;
        let reply = hello(&mut conn, Some(&token(user)), None).await;
        let welcome = parse_welcome(&reply).expect("Welcome");
        (conn, welcome)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.running.as_ref().unwrap().admin_addr)
    }

    pub async fn shutdown(mut self) -> bool {
        self.running.take().unwrap().shutdown().await
    }
}

/// A matchmaking queue of the game `arena` played in `eu` and `us`: a
/// fixed rating spread of 200, latency widening from 100 to 300 ms, a
/// minute's timeout and no ready check.
pub fn queue(mode: &str, teams: u16, team_size: u16) -> QueueConfig {
    QueueConfig {
        game: "arena".into(),
        mode: mode.into(),
        teams,
        team_size,
        regions: vec!["eu".into(), "us".into()],
        spread: WideningConfig {
            start: 200.0,
            step: 0.0,
            every_ms: 1_000,
            max: 200.0,
        },
        latency: WideningConfig {
            start: 100.0,
            step: 50.0,
            every_ms: 1_000,
            max: 300.0,
        },
        timeout_ms: 60_000,
        ready_check_ms: None,
        attributes: Vec::new(),
        roles: Default::default(),
    }
}

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn claims(user: &str) -> Claims {
    Claims {
        sub: user.into(),
        name: Some(format!("name-{user}")),
        display_name: None,
        roles: vec![],
        status: None,
        exp: now_s() + 3600,
        iat: Some(now_s()),
        nbf: None,
        iss: None,
        aud: None,
        ratings: Default::default(),
    }
}

pub fn sign(claims: &Claims, alg: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

pub fn token(user: &str) -> String {
    sign(
        &claims(user),
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Sends a Hello and returns the reply frame's bytes.
pub async fn hello(
    conn: &mut RawConnection,
    token: Option<&str>,
    resume: Option<huddle_schema::encode::ResumeFields<'_>>,
) -> Bytes {
    let frame = Encoder::new().hello(1, token, "huddle-tests", PROTOCOL_VERSION, resume, true);
    conn.send(frame).await.expect("send Hello");
    next_frame(conn).await.expect("a reply to Hello")
}

/// The next frame, skipping heartbeats; None when the connection ended.
pub async fn next_frame(conn: &mut RawConnection) -> Option<Bytes> {
    loop {
        let got = tokio::time::timeout(Duration::from_secs(20), conn.recv())
            .await
            .expect("no frame within 20 s (test hang guard)");
        match got {
            Ok(Some(bytes)) => {
                let f = verify_frame(&bytes, 1 << 20).expect("gateway frames verify");
                if matches!(f.body_type(), wire::Body::Ping | wire::Body::Pong) {
                    continue;
                }
                return Some(bytes);
            }
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Reads until the connection ends (bounded), returning every frame.
pub async fn read_to_end(conn: &mut RawConnection) -> Vec<Bytes> {
    let mut frames = Vec::new();
    while let Some(f) = next_frame(conn).await {
        frames.push(f);
    }
    frames
}

#[derive(Debug, Clone)]
pub struct WelcomeInfo {
    pub session_id: String,
    pub resume_token: String,
    pub user_id: String,
    pub resumed: bool,
    pub replayed: u32,
    pub last_request_id: u64,
}

pub fn parse_welcome(bytes: &[u8]) -> Option<WelcomeInfo> {
    let f = verify_frame(bytes, 1 << 20).ok()?;
    let w = f.body_as_welcome()?;
    Some(WelcomeInfo {
        session_id: w.session_id()?.to_string(),
        resume_token: w.resume_token()?.to_string(),
        user_id: w.user()?.id()?.to_string(),
        resumed: w.resumed(),
        replayed: w.replayed(),
        last_request_id: w.last_request_id(),
    })
}

/// (request_id, code, closing) of an Error frame.
pub fn parse_error(bytes: &[u8]) -> Option<(u64, ErrorCode, bool, String)> {
    let f = verify_frame(bytes, 1 << 20).ok()?;
    let e = f.body_as_error()?;
    Some((
        f.request_id(),
        e.code(),
        e.closing(),
        e.message().unwrap_or("").to_string(),
    ))
}

/// Asserts the connection answered with `code` and then closed with the
/// close code derived from it (WebSocket status / QUIC application code
/// `4000 + code`).
pub async fn expect_refusal(conn: &mut RawConnection, reply: &[u8], code: ErrorCode, what: &str) {
    let (_, got, closing, message) =
        parse_error(reply).unwrap_or_else(|| panic!("{what}: expected an Error frame"));
    assert_eq!(got, code, "{what}: {message}");
    assert!(closing, "{what}: the error says the connection closes");
    assert!(!message.is_empty(), "{what}: the error explains itself");
    assert!(
        next_frame(conn).await.is_none(),
        "{what}: the gateway closes the connection"
    );
    expect_closed_with(conn, CloseCode::Error(code), what).await;
}

/// Asserts the gateway closed `conn` (already read to its end) with `want`
/// and a reason.
pub async fn expect_closed_with(conn: &mut RawConnection, want: CloseCode, what: &str) {
    let close = conn
        .peer_close()
        .await
        .unwrap_or_else(|| panic!("{what}: the gateway closed without a close code"));
    assert_eq!(close.meaning, Some(want), "{what}: closed with {close:?}");
    let number = match conn.transport() {
        huddle_client::Transport::Ws => u64::from(want.ws_status()),
        huddle_client::Transport::Quic => u64::from(want.quic_code()),
    };
    assert_eq!(close.code, number, "{what}");
    assert!(!close.reason.is_empty(), "{what}: the close says why");
}

/// Error frames of `code` this process has sent so far (the gateway's
/// metrics are per process: tests comparing counts must not overlap).
pub fn errors_sent(code: ErrorCode) -> u64 {
    let series = format!(
        "huddle_errors_total{{code=\"{}\"}} ",
        huddle_schema::error_code_name(code)
    );
    huddle::telemetry::metrics::metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// POSTs JSON to the operator API; the raw HTTP response.
pub async fn admin_post(gw: &TestGateway, path: &str, body: &str) -> String {
    admin_send(gw, "POST", path, body).await
}

/// Sends JSON to the operator API with `method`; the raw HTTP response.
pub async fn admin_send(gw: &TestGateway, method: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gw.running.as_ref().unwrap().admin_addr;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// `huddle serve` over `data` on free loopback ports, two unpinned shards,
/// the test secret, no drain window (SIGTERM goes straight to GoAway), a
/// 3 s shutdown bound and warnings only; add to it before [`serve`].
#[allow(dead_code)]
pub fn huddle_serve(data: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_huddle"));
    cmd.arg("serve")
        .env("HUDDLE_SERVER__DATA_DIR", data)
        .env("HUDDLE_SERVER__WS_ADDR", "127.0.0.1:0")
        .env("HUDDLE_SERVER__QUIC_ADDR", "127.0.0.1:0")
        .env("HUDDLE_SERVER__ADMIN_ADDR", "127.0.0.1:0")
        .env("HUDDLE_SERVER__SHUTDOWN_TIMEOUT_MS", "3000")
        .env("HUDDLE_SERVER__DRAIN_READYZ_MS", "0")
        .env("HUDDLE_SHARDS__PIN", "false")
        .env("HUDDLE_SHARDS__COUNT", "2")
        .env("HUDDLE_AUTH__SECRET", SECRET)
        .env("HUDDLE_LOG", "warn");
    cmd
}

/// SIGTERM, then the exit status (bounded by [`wait_bounded`]).
#[allow(dead_code)]
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_bounded(child)
}

/// A `huddle serve` child process and the addresses its banner printed.
pub struct Served {
    pub child: std::process::Child,
    pub ws: String,
    pub quic: String,
    /// host:port of the admin listener.
    pub admin: String,
}

/// Spawns `cmd` (a `huddle serve` command line) and reads its banner.
pub fn serve(cmd: &mut std::process::Command) -> Served {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("huddle starts");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    // Keep reading so the gateway never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    // "huddle listening ws=ws://A quic=quic://B admin=http://C shards=N"
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| {
                panic!("banner has {key} (did huddle start? see its log above): {line:?}")
            })
            .to_string()
    };
    Served {
        ws: field("ws="),
        quic: field("quic="),
        admin: field("admin=http://"),
        child,
    }
}

/// Waits for the child to exit; kills it and fails after a generous bound
/// (a hang guard, not a timing assertion).
pub fn wait_bounded(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("huddle did not exit within 30 s");
}
