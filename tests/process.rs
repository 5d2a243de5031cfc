//! The `huddle` binary as an operator runs it: embedded defaults plus
//! environment overrides, `huddle token` minting a usable token, and SIGTERM
//! turning `/readyz` to 503 before draining clients with GoAway and a clean
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
        .env("HUDDLE_LOG", "warn");
    cmd
}

fn spawn(data_dir: &std::path::Path) -> Proc {
    let served = common::serve(
        huddle(data_dir)
            .env("HUDDLE_SERVER__DRAIN_READYZ_MS", "500")
            .arg("serve"),
    );
    Proc {
        ws: served.ws,
        quic: served.quic,
        admin: served.admin,
        child: served.child,
    }
}

fn mint(data_dir: &std::path::Path, user: &str) -> String {
    let out = huddle(data_dir)
        .args(["token", "--user", user, "--ttl", "10m"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
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
    let mut child = huddle(dir.path())
        .env("HUDDLE_SERVER__WS_ADDR", "0.0.0.0:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child);
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("non-loopback"), "{stderr}");
}
