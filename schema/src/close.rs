//! How the gateway closes a connection, as the transports carry it: the
//! WebSocket close status and the QUIC application error code. The mapping
//! from wire [`ErrorCode`]s lives here and nowhere else, so the gateway, the
//! SDK and the load generator read a close the same way.
//!
//! | close | WebSocket status | QUIC code |
//! | --- | --- | --- |
//! | [`CloseCode::Normal`] | 1000 | 0 |
//! | [`CloseCode::GoingAway`] (after `GoAway`) | 1001 | 1001 |
//! | [`CloseCode::HeartbeatTimeout`] (no `Error` frame) | 4000 | 4000 |
//! | [`CloseCode::Error`] (after `Error { closing }`) | 4000 + code | 4000 + code |

use crate::wire::ErrorCode;

/// Why a connection was closed; see the module docs for the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// Nothing wrong: the session ended, the client closed, or a newer
    /// connection resumed the session.
    Normal,
    /// The gateway is shutting down or draining; it sent `GoAway` first.
    /// The session can be resumed on another node (or this one, later).
    GoingAway,
    /// The client sent nothing for `heartbeat_timeout_ms`; the session stays
    /// resumable for the resume window. `4000` is `4000 + NONE`: no wire
    /// error code applies.
    HeartbeatTimeout,
    /// Closed for a protocol violation, a refused handshake or slowness: the
    /// `Error` frame sent just before carried this code (when it got
    /// through; the close carries it anyway).
    Error(ErrorCode),
}

/// The first close number derived from a wire error code (`4000 + code`).
pub const ERROR_CLOSE_BASE: u16 = 4000;

/// Longest close reason either transport carries, in bytes: a WebSocket
/// close frame holds 123 bytes of reason (125 less the status).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

const WS_NORMAL: u16 = 1000;
const WS_GOING_AWAY: u16 = 1001;

impl CloseCode {
    /// The WebSocket close status.
    pub fn ws_status(self) -> u16 {
        match self {
            CloseCode::Normal => WS_NORMAL,
            CloseCode::GoingAway => WS_GOING_AWAY,
            CloseCode::HeartbeatTimeout => ERROR_CLOSE_BASE,
            // Codes stay below 1000 (the schema's are under 200), so the
            // status stays in the private 4000–4999 range.
            CloseCode::Error(code) => ERROR_CLOSE_BASE + code.0.min(999),
        }
    }

    /// The QUIC application error code: the WebSocket status, except that a
    /// normal close is 0.
    pub fn quic_code(self) -> u32 {
        match self {
            CloseCode::Normal => 0,
            other => other.ws_status().into(),
        }
    }

    /// Reads a WebSocket close status; `None` for one Huddle never sends.
    pub fn from_ws_status(status: u16) -> Option<Self> {
        match status {
            WS_NORMAL => Some(CloseCode::Normal),
            WS_GOING_AWAY => Some(CloseCode::GoingAway),
            ERROR_CLOSE_BASE => Some(CloseCode::HeartbeatTimeout),
            s if (ERROR_CLOSE_BASE + 1..ERROR_CLOSE_BASE + 1000).contains(&s) => {
                Some(CloseCode::Error(ErrorCode(s - ERROR_CLOSE_BASE)))
            }
            _ => None,
        }
    }

    /// Reads a QUIC application error code; `None` for one Huddle never
    /// sends.
    pub fn from_quic_code(code: u64) -> Option<Self> {
        match code {
            0 => Some(CloseCode::Normal),
            c => u16::try_from(c).ok().and_then(Self::from_ws_status),
        }
    }

    /// The wire error code this close carries, if any.
    pub fn error_code(self) -> Option<ErrorCode> {
        match self {
            CloseCode::Error(code) => Some(code),
            _ => None,
        }
    }
}

/// `reason` cut to [`MAX_CLOSE_REASON_BYTES`] at a character boundary.
pub fn close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_4000_plus_their_value_and_back() {
        let cases = [
            (ErrorCode::SLOW_CONSUMER, 4108),
            (ErrorCode::FRAME_TOO_LARGE, 4106),
            (ErrorCode::TOKEN_INVALID, 4101),
            (ErrorCode::MALFORMED_FRAME, 4105),
        ];
        for (code, status) in cases {
            let close = CloseCode::Error(code);
            assert_eq!(close.ws_status(), status);
            assert_eq!(close.quic_code(), u32::from(status));
            assert_eq!(CloseCode::from_ws_status(status), Some(close));
            assert_eq!(CloseCode::from_quic_code(status.into()), Some(close));
            assert_eq!(close.error_code(), Some(code));
        }
    }

    #[test]
    fn normal_going_away_and_silence_have_their_own_numbers() {
        for (close, ws, quic) in [
            (CloseCode::Normal, 1000, 0),
            (CloseCode::GoingAway, 1001, 1001),
            (CloseCode::HeartbeatTimeout, 4000, 4000),
        ] {
            assert_eq!((close.ws_status(), close.quic_code()), (ws, quic));
            assert_eq!(CloseCode::from_ws_status(ws), Some(close));
            assert_eq!(CloseCode::from_quic_code(quic.into()), Some(close));
            assert_eq!(close.error_code(), None);
        }
        for foreign in [1005, 1011, 3000, 5000] {
            assert_eq!(CloseCode::from_ws_status(foreign), None);
        }
        assert_eq!(CloseCode::from_quic_code(1), None);
        assert_eq!(CloseCode::from_quic_code(u64::MAX), None);
    }

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON_BYTES);
        assert_eq!(cut.len(), 122, "61 two-byte characters");
    }
}
