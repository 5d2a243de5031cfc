//! [`ClientConfig`]: how to reach a gateway (URL, token, TLS trust, local
//! address) and how to behave when the connection drops (timeouts,
//! reconnect backoff, event buffer).
//!
//! Owns the settings and their defaults only; it never dials, never reads
//! the network and refers to nothing above `tls`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::tls::TlsOptions;

/// How to reach a gateway and how to behave when the connection drops.
///
/// Its `Debug` output leaves the token out.
#[derive(Clone)]
pub struct ClientConfig {
    /// `ws://HOST:PORT/`, `wss://…` or `quic://HOST:PORT`.
    pub url: String,
    /// The JWT sent in `Hello`.
    pub token: String,
    /// Sent as `Hello.client`; defaults to `huddle-client-rust/<version>`.
    pub client_name: String,
    /// How long a request waits for its reply (default 5 s).
    pub request_timeout: Duration,
    /// How long dialing plus the `Hello`/`Welcome` handshake may take
    /// (default 10 s).
    pub connect_timeout: Duration,
    /// Reconnect (and resume) after a drop (default true).
    pub reconnect: bool,
    /// First reconnect delay (default 200 ms); doubles per failed attempt.
    pub backoff_initial: Duration,
    /// Largest reconnect delay (default 10 s).
    pub backoff_max: Duration,
    /// Which server certificates to trust for `wss://` and `quic://`.
    pub tls: TlsOptions,
    /// Accept volatile events as QUIC datagrams (default true; QUIC only).
    pub datagrams: bool,
    /// Bind the local end of the connection to this address.
    pub local_addr: Option<IpAddr>,
    /// Capacity of the [`EventStream`](crate::EventStream) buffer (default
    /// 1024; at least 1).
    pub event_buffer: usize,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("client_name", &self.client_name)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("tls", &self.tls)
            .field("datagrams", &self.datagrams)
            .field("local_addr", &self.local_addr)
            .field("event_buffer", &self.event_buffer)
            .finish()
    }
}

impl ClientConfig {
    /// A configuration with every default filled in.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            client_name: concat!("huddle-client-rust/", env!("CARGO_PKG_VERSION")).into(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            reconnect: true,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            tls: TlsOptions::default(),
            datagrams: true,
            local_addr: None,
            event_buffer: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults() {
        let c = ClientConfig::new("ws://127.0.0.1:7350", "jwt");
        assert_eq!(c.url, "ws://127.0.0.1:7350");
        assert_eq!(c.token, "jwt");
        assert!(c.client_name.starts_with("huddle-client-rust/"));
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert!(c.reconnect);
        assert_eq!(c.backoff_initial, Duration::from_millis(200));
        assert_eq!(c.backoff_max, Duration::from_secs(10));
        assert_eq!(c.tls, TlsOptions::default());
        assert!(c.datagrams);
        assert_eq!(c.local_addr, None);
        assert_eq!(c.event_buffer, 1024);
        assert!(
            !format!("{c:?}").contains("jwt"),
            "Debug must not leak the token"
        );
    }
}
