//! A full disk is loud and recoverable: the real `huddle` binary keeps its
//! data directory on a small tmpfs that the test fills up during a chat.
//! While it is full, sends are refused with the retryable
//! STORE_UNAVAILABLE (never acknowledged and dropped) and `/readyz` says
//! why; once space returns, sends succeed again by themselves; SIGTERM on
//! a full disk still exits; and every acknowledged message is stored once.
//!
//! Needs root (mount); skipped with a message elsewhere.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use huddle::backend::store::HistoryStore;
use huddle_client::{Client, ClientConfig, ClientError, ContentType, ErrorCode};

/// A tmpfs of `mib` MiB, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left with one file.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The gateway process, killed if the test fails midway (before the
/// tmpfs under it goes).
struct Child(common::Served);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

fn spawn(data: &Path) -> Child {
    let mut cmd = common::huddle_serve(data);
    cmd.env("HUDDLE_STORE__CACHE_MB", "4")
        .env("HUDDLE_SESSION__RATE_PER_S", "1000000")
        .env("HUDDLE_SESSION__RATE_BURST", "1000000");
    Child(common::serve(&mut cmd))
}

async fn client(ws: &str, user: &str) -> Client {
    let mut config = ClientConfig::new(ws.to_string(), common::token(user));
    config.reconnect = false;
    config.request_timeout = Duration::from_secs(2);
    let (client, mut events) = Client::connect(config).await.expect("connects");
    tokio::spawn(async move { while events.next().await.is_some() {} });
    client
}

async fn readyz(admin: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Sends until a send is refused with STORE_UNAVAILABLE (true) or `max`
/// sends were acknowledged (false), recording each acknowledgement.
async fn send_until_refused(
    c: &Client,
    chat: &str,
    next: &mut u32,
    max: u32,
    acked: &mut BTreeMap<String, u64>,
) -> bool {
    for _ in 0..max {
        let content = format!("message {:06} {}", *next, "x".repeat(200));
        *next += 1;
        match c.chat_send(chat, &content, ContentType::TEXT, None).await {
            Ok(ack) => {
                acked.insert(content, ack.message_id);
            }
            Err(ClientError::Server {
                code, retryable, ..
            }) if code == ErrorCode::STORE_UNAVAILABLE => {
                assert!(retryable, "STORE_UNAVAILABLE is retryable");
                return true;
            }
            // In flight when the disk filled: its acknowledgement waits
            // for the disk, so it is neither acknowledged nor refused here.
            Err(ClientError::Timeout) => {}
            Err(e) => panic!("unexpected answer to a send: {e}"),
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_loses_nothing_and_recovers() {
    let Some(disk) = Tmpfs::mount(24) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = disk.path().join("data");
    let chat = "direct:ann:ben";
    let mut acked = BTreeMap::new();
    let mut next = 0;

    let mut served = spawn(&data);
    let served = &mut served.0;
    let ann = client(&served.ws, "ann").await;
    ann.chat_join(chat).await.unwrap();
    assert!(!send_until_refused(&ann, chat, &mut next, 200, &mut acked).await);

    // The disk fills: sends are refused (some acknowledged ones may still
    // land first), and /readyz says why.
    let filler = disk.fill();
    assert!(
        send_until_refused(&ann, chat, &mut next, 200_000, &mut acked).await,
        "a send is refused once the disk is full"
    );
    let (status, why) = readyz(&served.admin).await;
    assert_eq!(status, 503, "/readyz fails while the store cannot write");
    assert!(why.contains("store failing"), "{why}");
    // What needs no write keeps working meanwhile.
    ann.chat_join("direct:ann:cal")
        .await
        .expect("a join needs no write");
    ann.echo(b"still here")
        .await
        .expect("an echo needs no write");

    // Space returns: the gateway recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    let mut recovered = false;
    for _ in 0..600 {
        if !send_until_refused(&ann, chat, &mut next, 20, &mut acked).await {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "sends succeed again once space returns");
    assert_eq!(readyz(&served.admin).await.0, 200);

    // Full again, and SIGTERM: the process still exits.
    let filler = disk.fill();
    send_until_refused(&ann, chat, &mut next, 200_000, &mut acked).await;
    common::terminate(&mut served.child);
    drop(ann);

    // With space back, a restart recovers anything the journal kept, and
    // every acknowledged message is in the store, once.
    std::fs::remove_file(&filler).unwrap();
    let mut served = spawn(&data);
    let served = &mut served.0;
    assert!(common::terminate(&mut served.child).success());
    let store =
        huddle::backend::store::embedded::EmbeddedStore::open(&data.join("history.redb"), 4 << 20)
            .unwrap();
    let stored = store.messages(chat, 0, 10_000_000).unwrap();
    let mut by_content: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for m in &stored {
        by_content.entry(&m.content).or_default().push(m.id);
    }
    for (content, id) in &acked {
        assert_eq!(
            by_content.get(content.as_str()),
            Some(&vec![*id]),
            "the acknowledged {:?} is stored once",
            &content[..14]
        );
    }
    eprintln!(
        "{} acknowledged, {} stored, all acknowledged ones once",
        acked.len(),
        stored.len()
    );
}
