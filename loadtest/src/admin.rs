//! The gateway's operator API, as far as the load generator needs it:
//! `POST /v1/channels` to create the public channels chat-fanout's rooms talk
//! in, and `PUT /v1/matchmaking/queues` to set the queue matchmaking-storm
//! plays in. A minimal HTTP/1.1 client over a tokio `TcpStream` (one request per
//! connection, `Connection: close`, plain `http://` only): the operator API
//! listens on loopback by default and this is setup, never the measured path.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest one request (connect, send, whole response) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most response bytes read; an operator API answer is a line or two.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Where the operator API is and how to authenticate to it.
#[derive(Debug)]
pub(crate) struct AdminApi {
    /// `host:port`, for the connect and the `Host` header.
    authority: String,
    /// Path the API is mounted under ("" for the root), no trailing `/`.
    base_path: String,
    /// Bearer token (`server.admin_token`), when the gateway wants one.
    token: Option<String>,
}

impl AdminApi {
    /// Parses `http://HOST[:PORT][/PATH]` (port 80 by default).
    pub(crate) fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            anyhow!("--admin-url {url}: use http://HOST:PORT (https is not supported)")
        })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() {
            bail!("--admin-url {url} names no host");
        }
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.contains(']'));
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            base_path: path.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Creates (or reconfigures) the public channel `channel:<name>`.
    pub(crate) async fn create_channel(&self, name: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({ "name": name }).to_string();
        let (status, answer) = self.post_json("/v1/channels", &body).await?;
        if !(200..300).contains(&status) {
            bail!("POST /v1/channels {body}: HTTP {status}: {}", answer.trim());
        }
        Ok(())
    }

    /// Replaces every matchmaking queue of the gateway with `queues` (a JSON
    /// array of the gateway's `QueueConfig`s).
    pub(crate) async fn put_queues(&self, queues: &serde_json::Value) -> anyhow::Result<()> {
        let body = serde_json::json!({ "queues": queues }).to_string();
        let path = "/v1/matchmaking/queues";
        let (status, answer) = self.send_json("PUT", path, &body).await?;
        if !(200..300).contains(&status) {
            bail!("PUT {path} {body}: HTTP {status}: {}", answer.trim());
        }
        Ok(())
    }

    /// Sends one `POST` with a JSON body; returns the status code and the
    /// response body.
    async fn post_json(&self, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        self.send_json("POST", path, body).await
    }

    /// Sends one request with a JSON body; returns the status code and the
    /// response body.
    async fn send_json(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let auth = self
            .token
            .as_deref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {base}{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\nConnection: close\r\n{auth}\r\n{body}",
            base = self.base_path,
            host = self.authority,
            len = body.len(),
        );
        let exchange = async {
            let mut stream = TcpStream::connect(self.authority.as_str())
                .await
                .with_context(|| format!("connecting to the admin API at {}", self.authority))?;
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            (&mut stream)
                .take(MAX_RESPONSE_BYTES)
                .read_to_end(&mut response)
                .await?;
            anyhow::Ok(response)
        };
        let response = timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| {
            anyhow!(
                "the admin API at {} did not answer within {} s",
                self.authority,
                REQUEST_TIMEOUT.as_secs()
            )
        })??;
        parse_response(&response)
    }
}

/// The status code and body of a whole HTTP/1.x response.
fn parse_response(response: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {status_line:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn parses_admin_urls() {
        let api = AdminApi::new("http://127.0.0.1:7352", None).unwrap();
        assert_eq!(
            (api.authority.as_str(), api.base_path.as_str()),
            ("127.0.0.1:7352", "")
        );
        let api = AdminApi::new("http://localhost/ops/", None).unwrap();
        assert_eq!(
            (api.authority.as_str(), api.base_path.as_str()),
            ("localhost:80", "/ops")
        );
        let api = AdminApi::new("http://[::1]:9000/", None).unwrap();
        assert_eq!(api.authority, "[::1]:9000");
        let api = AdminApi::new("http://[::1]", None).unwrap();
        assert_eq!(api.authority, "[::1]:80");
        assert!(AdminApi::new("https://127.0.0.1:7352", None).is_err());
        assert!(AdminApi::new("http:///v1", None).is_err());
    }

    #[test]
    fn reads_status_and_body() {
        let (status, body) =
            parse_response(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 4\r\n\r\nbad\n").unwrap();
        assert_eq!((status, body.as_str()), (400, "bad\n"));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"").is_err());
    }

    /// One exchange against a stand-in server: the request it sees, and a
    /// refusal turned into an error that carries the server's words.
    #[tokio::test]
    async fn posts_a_channel_and_reports_refusals() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for answer in ["200 OK", "400 Bad Request"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0; 4096];
                let mut got = 0;
                // Headers and the (short) body arrive in one write.
                while !String::from_utf8_lossy(&buf[..got]).contains("}") {
                    got += s.read(&mut buf[got..]).await.unwrap();
                }
                requests.push(String::from_utf8_lossy(&buf[..got]).into_owned());
                let reply = format!("HTTP/1.1 {answer}\r\ncontent-length: 5\r\n\r\nnope\n");
                s.write_all(reply.as_bytes()).await.unwrap();
            }
            requests
        });
        let api = AdminApi::new(&format!("http://{addr}"), Some("t0k".into())).unwrap();
        api.create_channel("7-lt-room-0").await.unwrap();
        let err = api.create_channel("7-lt-room-1").await.unwrap_err();
        assert!(format!("{err:#}").contains("HTTP 400: nope"), "{err:#}");
        let requests = server.await.unwrap();
        let first = &requests[0];
        assert!(
            first.starts_with("POST /v1/channels HTTP/1.1\r\n"),
            "{first}"
        );
        assert!(first.contains("Authorization: Bearer t0k\r\n"), "{first}");
        assert!(first.contains("Content-Length: 22\r\n"), "{first}");
        assert!(
            first.ends_with("\r\n\r\n{\"name\":\"7-lt-room-0\"}"),
            "{first}"
        );
    }

    /// The queues go out as one `PUT` with `{"queues": [...]}`.
    #[tokio::test]
    async fn puts_the_queues() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let mut got = 0;
            while !String::from_utf8_lossy(&buf[..got]).ends_with("]}") {
                got += s.read(&mut buf[got..]).await.unwrap();
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"queues\":1}\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..got]).into_owned()
        });
        let api = AdminApi::new(&format!("http://{addr}"), None).unwrap();
        api.put_queues(&serde_json::json!([{ "game": "lt" }]))
            .await
            .unwrap();
        let request = server.await.unwrap();
        assert!(
            request.starts_with("PUT /v1/matchmaking/queues HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.ends_with("\r\n\r\n{\"queues\":[{\"game\":\"lt\"}]}"),
            "{request}"
        );
    }
}
