//! What every reply decoder shares: verifying a reply frame, turning an
//! `Error` reply into [`ClientError::Server`], the error for a reply of the
//! wrong type, and the presence rows several replies carry.
//!
//! Owns no state and never panics on a frame from the network. It sits right
//! above the transport (for the inbound frame cap) and below every feature's
//! reply types, so it must never refer to the client, the driver or events.

use huddle_schema::encode::PresenceEntry;
use huddle_schema::verify_frame;
use huddle_schema::wire::{self, Frame};

use crate::error::ClientError;
use crate::transport::MAX_INBOUND_FRAME_BYTES;

/// Verifies a reply frame and turns an `Error` reply into
/// [`ClientError::Server`].
pub(crate) fn reply_frame(buf: &[u8]) -> Result<Frame<'_>, ClientError> {
    let frame = verify_frame(buf, MAX_INBOUND_FRAME_BYTES)
        .map_err(|e| ClientError::Protocol(format!("bad reply: {e}")))?;
    if let Some(err) = frame.body_as_error() {
        return Err(ClientError::from_wire(&err));
    }
    Ok(frame)
}

/// The error for a verified reply whose body is not the `wanted` table.
pub(crate) fn unexpected(frame: &Frame<'_>, wanted: &str) -> ClientError {
    ClientError::Protocol(format!(
        "expected {wanted} in reply, got {:?}",
        frame.body_type()
    ))
}

/// One user's presence as the wire carries it (missing fields: defaults).
pub(crate) fn presence_entry(u: wire::UserPresence<'_>) -> PresenceEntry {
    PresenceEntry {
        user_id: u.user_id().unwrap_or_default().to_owned(),
        status: u.status(),
        connections: u.connections(),
        last_active_ms: u.last_active_ms(),
        text: u.text().unwrap_or_default().to_owned(),
    }
}
