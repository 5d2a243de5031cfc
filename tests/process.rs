//! The `huddle` binary as an operator runs it: embedded defaults plus
//! environment overrides, `huddle token` minting a usable token (with the
//! config's `iss` and `aud`, saying where it read that config), logs fit for
//! a pipe (no colour codes, JSON lines on request), start-up errors that name
//! the path at fault, and SIGTERM turning `/readyz` to 503 before draining
//! clients with GoAway and a clean
//! exit.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wait_bounded;
use huddle_client::{Client, ClientConfig, Event};

struct Proc {
    child: Child,
    ws: String,
    quic: String,
    /// host:port of the admin listener.
    admin: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn huddle(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_huddle"));
    cmd.env("HUDDLE_SERVER__DATA_DIR", data_dir)
        .env("HUDDLE_SERVER__WS_ADDR", "127.0.0.1:0")
        .env("HUDDLE_SERVER__QUIC_ADDR", "127.0.0.1:0")
        .env("HUDDLE_SERVER__ADMIN_ADDR", "127.0.0.1:0")
        .env("HUDDLE_SHARDS__PIN", "false")
        .env("HUDDLE_SERVER__DRAIN_READYZ_MS", "500")
        .env("HUDDLE_LOG", "warn")
        .env_remove("HUDDLE_CONFIG")
        .env_remove("HUDDLE_LOG__FORMAT");
    cmd
}

fn spawn(data_dir: &std::path::Path) -> Proc {
    spawn_with(huddle(data_dir).arg("serve"))
}

/// Spawns `cmd` (a `huddle serve` command line); killed when dropped.
fn spawn_with(cmd: &mut Command) -> Proc {
    let served = common::serve(cmd);
    Proc {
        ws: served.ws,
        quic: served.quic,
        admin: served.admin,
        child: served.child,
    }
}

/// What `huddle token` printed: the token (stdout) and its notes (stderr).
struct Minted {
    token: String,
    stderr: String,
}

/// Runs `cmd` (a `huddle` command line, before its subcommand) as
/// `token --user USER`.
fn mint_with(cmd: &mut Command, user: &str) -> Minted {
    let out = cmd
        .args(["token", "--user", user, "--ttl", "10m"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    Minted {
        token: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        stderr,
    }
}

fn mint(data_dir: &std::path::Path, user: &str) -> String {
    mint_with(&mut huddle(data_dir), user).token
}

/// A JWT's claims: its middle part, base64url JSON.
fn payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("header.payload.signature");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&json).expect("JSON claims")
}

fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// Everything a child wrote to its piped stderr, once it has exited.
fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

/// Runs `cmd` (a `huddle serve` that must not start) to its exit; its stderr.
fn refused_start(cmd: &mut Command) -> String {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let status = wait_bounded(&mut child);
    assert!(!status.success(), "huddle started: {status}");
    stderr_of(&mut child)
}

/// The status code `GET /readyz` answers; `None` once nothing answers.
async fn readyz(admin: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
    s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn sigterm_sends_goaway_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn(dir.path());
    let token = mint(dir.path(), "operator-test");
    let cert = std::fs::read(dir.path().join("tls/cert.pem")).expect("dev certificate generated");
    let mut streams = Vec::new();
    for url in [proc.ws.clone(), proc.quic.clone()] {
        let mut config = ClientConfig::new(url, token.clone());
        config.tls.ca_cert_pem = Some(cert.clone());
        config.reconnect = false;
        let (client, events) = Client::connect(config)
            .await
            .expect("minted token connects");
        assert_eq!(client.session().user_id, "operator-test");
        streams.push((client, events));
    }
    assert_eq!(readyz(&proc.admin).await, Some(200));
    let pid = proc.child.id().to_string();
    let admin = proc.admin.clone();
    let not_ready = tokio::spawn(async move {
        loop {
            match readyz(&admin).await {
                Some(503) => return Some(tokio::time::Instant::now()),
                Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                None => return None,
            }
        }
    });
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut goaway_at = Vec::new();
    for (_client, events) in &mut streams {
        let mut saw_goaway = false;
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(20), events.next()).await
        {
            if let Event::GoAway {
                reconnect_after_ms, ..
            } = ev
            {
                goaway_at.push(tokio::time::Instant::now());
                assert!(reconnect_after_ms > 0);
                saw_goaway = true;
                break;
            }
        }
        assert!(saw_goaway, "every client is told to go away");
    }
    let not_ready = not_ready
        .await
        .unwrap()
        .expect("/readyz answered 503 before the admin API went away");
    assert!(
        goaway_at.iter().all(|at| not_ready < *at),
        "a load balancer saw 503 before any client heard GoAway"
    );
    let status = wait_bounded(&mut proc.child);
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn public_bind_without_keys_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused_start(huddle(dir.path()).env("HUDDLE_SERVER__WS_ADDR", "0.0.0.0:0"));
    assert!(stderr.contains("non-loopback"), "{stderr}");
}

#[tokio::test]
async fn a_data_dir_that_is_a_file_is_named_in_the_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "").unwrap();
    let stderr = refused_start(huddle(&file).arg("serve"));
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("server.data_dir"),
        "names the path and the setting: {stderr}"
    );
}

#[tokio::test]
async fn huddle_token_mints_iss_and_aud_from_the_config_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("huddle.toml");
    std::fs::write(
        &config,
        "[auth]\nissuer = \"https://auth.studio.test\"\naudience = \"huddle-game\"\n",
    )
    .unwrap();
    let minted = mint_with(huddle(dir.path()).arg("--config").arg(&config), "carol");
    let config_path = std::fs::canonicalize(&config).unwrap();
    assert!(
        minted.stderr.contains(&config_path.display().to_string()),
        "says which config it read: {}",
        minted.stderr
    );
    let claims = payload(&minted.token);
    assert_eq!(claims["iss"], "https://auth.studio.test", "{claims}");
    assert_eq!(claims["aud"], "huddle-game", "{claims}");

    let mut proc = spawn_with(huddle(dir.path()).arg("--config").arg(&config).arg("serve"));
    let mut client_config = ClientConfig::new(proc.ws.clone(), minted.token);
    client_config.reconnect = false;
    let (client, _events) = Client::connect(client_config)
        .await
        .expect("the gateway on the same config accepts the minted token");
    assert_eq!(client.session().user_id, "carol");
    client.close().await;
    sigterm(&proc.child);
    assert!(wait_bounded(&mut proc.child).success());

    let defaults = mint_with(&mut huddle(dir.path()), "dave");
    assert!(
        defaults.stderr.contains("built-in defaults"),
        "says no config file was read: {}",
        defaults.stderr
    );
    let claims = payload(&defaults.token);
    assert!(claims.get("iss").is_none() && claims.get("aud").is_none());
}

#[tokio::test]
async fn logs_on_a_pipe_carry_no_colour_codes_and_json_lines_on_request() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let mut proc = spawn_with(
            huddle(dir.path())
                .env("HUDDLE_LOG", "info")
                .env("HUDDLE_LOG__FORMAT", format)
                .stderr(Stdio::piped())
                .arg("serve"),
        );
        sigterm(&proc.child);
        assert!(wait_bounded(&mut proc.child).success());
        let log = stderr_of(&mut proc.child);
        assert!(
            log.contains("shutting down"),
            "{format}: the log has the shutdown events: {log}"
        );
        assert!(!log.contains("\x1b["), "{format}: no ANSI escapes: {log:?}");
        if format == "json" {
            for line in log.lines() {
                let event: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
                assert!(event["level"].is_string(), "{line}");
            }
        }
    }
}
