//! [`SessionInfo`]: the session the gateway granted in its latest
//! `Welcome`, as the driver parses it and [`crate::Client::session`] hands it
//! out.
//!
//! Plain data: it never touches the network and refers to nothing else in
//! the crate.

/// The session the gateway granted, from its latest `Welcome`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id (what a resume presents).
    pub session_id: String,
    /// The user id from the token.
    pub user_id: String,
    /// The login name from the token.
    pub username: String,
    /// The name to show, from the token.
    pub display_name: String,
    /// The roles the gateway granted (from the token).
    pub roles: Vec<String>,
    /// The client pings at least this often.
    pub heartbeat_ms: u32,
    /// Silence after which either side gives the connection up.
    pub heartbeat_timeout_ms: u32,
    /// How long a dropped session can be resumed.
    pub resume_window_ms: u32,
    /// Largest frame the gateway accepts.
    pub max_frame_bytes: u32,
}
