//! Inbound frame verification: every buffer from the network passes through
//! [`verify_frame`] before anything reads a field of it.
//!
//! Never panics on any input and never allocates for a good frame.

use crate::wire::{self, Body, ErrorCode, Frame};
use crate::PROTOCOL_VERSION;

/// Why an inbound buffer is not a frame the gateway will act on.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Longer than the configured limit; the connection is closed.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Length of the refused frame.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// Not a flatbuffer, or not one of ours.
    #[error("frame failed verification: {0}")]
    Malformed(String),
    /// A union tag this build does not know (a newer client?).
    #[error("unknown frame body type {tag}; this gateway speaks protocol {PROTOCOL_VERSION}")]
    UnknownBody {
        /// The unknown union tag.
        tag: u8,
        /// The frame's request id, so the reply can carry it.
        request_id: u64,
    },
    /// The frame has no body at all.
    #[error("frame has no body")]
    MissingBody {
        /// The frame's request id.
        request_id: u64,
    },
    /// `Frame.version` differs from [`PROTOCOL_VERSION`].
    #[error("protocol version {version} is not supported; this gateway speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion {
        /// The version the frame carried.
        version: u16,
        /// The frame's request id.
        request_id: u64,
    },
}

impl FrameError {
    /// The wire error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            FrameError::Malformed(_)
            | FrameError::UnknownBody { .. }
            | FrameError::MissingBody { .. } => ErrorCode::MALFORMED_FRAME,
            FrameError::UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_VERSION,
        }
    }

    /// The request id of a frame that verified structurally but cannot be
    /// acted on; 0 when the bytes could not be read at all.
    pub fn request_id(&self) -> u64 {
        match self {
            FrameError::UnknownBody { request_id, .. }
            | FrameError::MissingBody { request_id }
            | FrameError::UnsupportedVersion { request_id, .. } => *request_id,
            FrameError::TooLarge { .. } | FrameError::Malformed(_) => 0,
        }
    }
}

/// Verifier limits: a frame of at most 64 KiB never needs more than this, and
/// a hostile one cannot make the verifier walk further.
fn verifier_options(max_len: usize) -> flatbuffers::VerifierOptions {
    flatbuffers::VerifierOptions {
        max_depth: 16,
        max_tables: 4096,
        max_apparent_size: max_len.saturating_mul(2).max(1 << 16),
        ignore_missing_null_terminator: false,
    }
}

/// Verifies `buf` as a Huddle frame of at most `max_len` bytes, with a known
/// body and the current protocol version.
pub fn verify_frame(buf: &[u8], max_len: usize) -> Result<Frame<'_>, FrameError> {
    if buf.len() > max_len {
        return Err(FrameError::TooLarge {
            len: buf.len(),
            max: max_len,
        });
    }
    if buf.len() < 8 || !wire::frame_buffer_has_identifier(buf) {
        return Err(FrameError::Malformed(
            "missing the HDL1 file identifier; is this a Huddle frame?".into(),
        ));
    }
    let frame = wire::root_as_frame_with_opts(&verifier_options(max_len), buf)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let request_id = frame.request_id();
    if frame.version() != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion {
            version: frame.version(),
            request_id,
        });
    }
    let tag = frame.body_type();
    if tag.0 > Body::ENUM_MAX {
        return Err(FrameError::UnknownBody {
            tag: tag.0,
            request_id,
        });
    }
    if tag == Body::NONE || frame.body().is_none() {
        return Err(FrameError::MissingBody { request_id });
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Encoder;

    #[test]
    fn good_frame_verifies() {
        let mut enc = Encoder::new();
        let bytes = enc.ping(0, 7, 1);
        let frame = verify_frame(&bytes, 1024).unwrap();
        assert_eq!(frame.body_as_ping().unwrap().ack_seq(), 7);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for len in 0..200 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert!(verify_frame(&junk, 1024).is_err());
        }
    }

    #[test]
    fn oversize_is_refused_before_parsing() {
        let big = vec![0u8; 2000];
        assert!(matches!(
            verify_frame(&big, 1000),
            Err(FrameError::TooLarge {
                len: 2000,
                max: 1000
            })
        ));
    }

    #[test]
    fn unknown_body_and_version_are_refused() {
        let mut enc = Encoder::new();
        let bytes = enc.raw_frame_for_tests(PROTOCOL_VERSION, 200);
        assert_eq!(
            verify_frame(&bytes, 1024).unwrap_err(),
            FrameError::UnknownBody {
                tag: 200,
                request_id: 1
            }
        );
        let bytes = enc.raw_frame_for_tests(9, Body::Ping.0);
        assert_eq!(
            verify_frame(&bytes, 1024).unwrap_err(),
            FrameError::UnsupportedVersion {
                version: 9,
                request_id: 1
            }
        );
    }
}
