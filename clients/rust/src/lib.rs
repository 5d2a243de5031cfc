//! Rust SDK for Huddle, the binary-protocol game gateway.
//!
//! The crate owns the client side of the session contract in
//! `schema/PROTOCOL.md`: dialing a gateway over WebSocket (`ws://`, `wss://`)
//! or QUIC (`quic://`), the `Hello`/`Welcome` handshake, typed requests with
//! timeouts, in-order, exactly-once delivery of reliable events, heartbeats,
//! and reconnecting with session resume. Every frame is built with
//! [`huddle_schema::Encoder`] and every inbound frame is verified with
//! [`huddle_schema::verify_frame`] before it is read; nothing from the network
//! can make it panic.
//!
//! ```no_run
//! # async fn demo() -> Result<(), huddle_client::ClientError> {
//! use huddle_client::{Client, ClientConfig, Event};
//!
//! let (client, mut events) =
//!     Client::connect(ClientConfig::new("ws://127.0.0.1:7350", "<jwt>")).await?;
//! let reply = client.echo(b"hello").await?;
//! println!("echoed by shard {}", reply.shard);
//! while let Some(event) = events.next().await {
//!     if let Event::Echo { from_user, payload, .. } = event {
//!         println!("{from_user}: {} bytes", payload.len());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Modules depend only on modules listed before them (no cycles):
//! - `error`: [`ClientError`], the one error type; `seq`: the pure sequence
//!   tracker behind exactly-once delivery; `backoff`: jittered exponential
//!   reconnect delays.
//! - `tls`: [`TlsOptions`] and the rustls configurations (web PKI, one PEM
//!   file, or dev-only accept-anything).
//! - [`transport`]: raw connections ([`connect_raw`], [`RawConnection`]) that
//!   move whole frames without interpreting them; for tests and the load
//!   generator too.
//! - `reply`: verifying reply frames, `Error` replies as [`ClientError`].
//! - [`chat`], [`social`], [`lobby`], [`matchmaking`]: each feature's reply
//!   and event types and the decoding of its tables and replies.
//! - `event`: [`Event`] and the decoding of server event frames.
//! - `config` ([`ClientConfig`]) and `session` ([`SessionInfo`]).
//! - `shared`: the state a client's handles share with its connection task,
//!   and the request plumbing (ids, reply matching, timeouts).
//! - `driver`: the per-client connection task — handshake, read loop, writer
//!   and heartbeats, reconnect and resume.
//! - [`client`]: the high-level API — [`Client`] with every typed request
//!   (one child module per feature), [`EventStream`], [`EchoReply`] — and
//!   re-exports of [`ClientConfig`], [`SessionInfo`] and [`Event`].

#![warn(missing_docs)]

mod backoff;
pub mod chat;
pub mod client;
mod config;
mod driver;
mod error;
mod event;
pub mod lobby;
#[cfg(test)]
mod loopback_tests;
pub mod matchmaking;
mod reply;
mod seq;
mod session;
mod shared;
pub mod social;
mod tls;
pub mod transport;

pub use chat::{
    ChatHistoryPage, ChatJoined, ChatMessage, ChatReadAck, ChatSent, ChatUnreadCount, ChatUser,
};
pub use client::{Client, ClientConfig, EchoReply, Event, EventStream, SessionInfo};
pub use error::ClientError;
pub use huddle_schema::encode::PresenceEntry;
pub use huddle_schema::wire::{
    ChatKind, ContentType, DeliveryChannel, DeliveryState, ErrorCode, FriendAction, LobbyEventKind,
    LobbyOpKind, LobbyStatus, LobbyVisibility, MatchmakingEventKind, PresenceStatus, Relation,
    TicketState,
};
pub use huddle_schema::CloseCode;
pub use lobby::{
    Lobby, LobbyChanges, LobbyEvent, LobbyListPage, LobbyMember, LobbySummary, NewLobby,
};
pub use matchmaking::{MatchRequest, MatchmakingEvent, Ticket};
pub use social::{
    ChannelStatus, Friend, FriendOpDone, Notification, NotificationCounts, NotificationPage,
};
pub use transport::{
    connect_raw, PeerClose, RawConnection, RawReceiver, RawSender, TlsOptions, Transport,
    MAX_INBOUND_FRAME_BYTES,
};
