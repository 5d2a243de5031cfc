use huddle_client::{Client, ClientConfig, Event};
use std::time::Duration;

async fn run(url: &str, ta: &str, tb: &str) -> anyhow::Result<()> {
    let mut ca = ClientConfig::new(url, ta);
    ca.tls.accept_invalid_certs = true;
    let mut cb = ClientConfig::new(url, tb);
    cb.tls.accept_invalid_certs = true;
    let (a, _ea) = Client::connect(ca).await?;
    let (b, mut eb) = Client::connect(cb).await?;
    let bid = b.session().user_id.clone();
    let sid = b.session().session_id.clone();
    for i in 0..3u8 { a.echo_to(&bid, &[i], false).await?; }
    for _ in 0..3 { println!("B got {:?}", tokio::time::timeout(Duration::from_secs(3), eb.next()).await?); }
    b.drop_connection_for_tests();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 3..6u8 { let r = a.echo_to(&bid, &[i], false).await?; println!("A sent {i} delivered={}", r.delivered); }
    a.echo_to(&bid, b"vol", true).await?;
    let mut seqs = vec![];
    while seqs.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), eb.next()).await?;
        println!("B got {ev:?}");
        if let Some(Event::Echo { seq, .. }) = ev { if seq != 0 { seqs.push(seq) } }
    }
    println!("same session: {} last_seq={}", b.session().session_id == sid, b.last_seq());
    let p = a.presence(&[bid.as_str()]).await?;
    println!("presence {:?}", p);
    a.close().await; b.close().await;
    println!("B after close: {:?}", eb.next().await);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ta = std::env::var("TA")?; let tb = std::env::var("TB")?;
    for url in ["ws://127.0.0.1:7350", "quic://127.0.0.1:7351"] { println!("== {url}"); run(url, &ta, &tb).await?; }
    Ok(())
}
