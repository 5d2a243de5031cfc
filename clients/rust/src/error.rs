//! The one error type of the SDK, [`ClientError`].
//!
//! Owns the mapping from a wire `Error` to a Rust error; never decides whether
//! to retry (callers read [`ClientError::Server::retryable`] for that).

use huddle_schema::wire::{self, ErrorCode};

/// Everything that can go wrong talking to a Huddle gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The gateway answered with an `Error` frame.
    #[error("server error {}: {message}", huddle_schema::error_code_name(*.code))]
    Server {
        /// The wire error code.
        code: ErrorCode,
        /// The gateway's human-readable explanation.
        message: String,
        /// Whether the same request may succeed later.
        retryable: bool,
    },
    /// No answer within the configured timeout.
    #[error("timed out")]
    Timeout,
    /// The request was not sent because the connection is being
    /// re-established (nothing happened), or it was in flight and the
    /// session could not be resumed (it may or may not have been processed:
    /// re-sync). A resumed session never fails a request this way.
    #[error("disconnected from the gateway")]
    Disconnected,
    /// The client was closed, by [`crate::Client::close`] or because it gave up
    /// reconnecting.
    #[error("client is closed")]
    Closed,
    /// Dialing, TLS or I/O failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// The gateway sent something this client cannot make sense of, or a
    /// request is too large to send.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The URL is not `ws://`, `wss://` or `quic://HOST:PORT`.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
}

impl ClientError {
    /// The wire error code, for [`ClientError::Server`]; `None` otherwise.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Builds [`ClientError::Server`] from a wire `Error` table.
    pub(crate) fn from_wire(err: &wire::Error<'_>) -> Self {
        ClientError::Server {
            code: err.code(),
            message: err.message().unwrap_or_default().to_owned(),
            retryable: err.retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_only_for_server_errors() {
        let e = ClientError::Server {
            code: ErrorCode::RATE_LIMITED,
            message: "slow down".into(),
            retryable: true,
        };
        assert_eq!(e.code(), Some(ErrorCode::RATE_LIMITED));
        assert_eq!(e.to_string(), "server error RATE_LIMITED: slow down");
        assert_eq!(ClientError::Timeout.code(), None);
    }
}
