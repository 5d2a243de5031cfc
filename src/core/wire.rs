//! The edge between engine types and flatbuffers: encodes engine replies,
//! events and refusals into frames, and maps refusals to wire error codes.
//!
//! The only module besides the session shell that knows the wire format;
//! engines never see it. Events are encoded once per fan-out here.

use bytes::Bytes;
use huddle_schema::encode::{
    ChannelFields, JoinedFields, LobbyEventFields, LobbyStateFields, MatchmakingEventFields,
    MemberFields, MessageFields, NotificationFields, TicketFields, UserFields,
};
use huddle_schema::wire::{
    Body, ChatKind, ContentType, DeliveryChannel, DeliveryState, ErrorCode, LobbyEventKind,
    MatchmakingEventKind, PresenceStatus, TicketState,
};
use huddle_schema::{Encoder, EventFrame};

use crate::core::engine::chat::{Author, Kind, Message};
use crate::core::engine::lobbies::{self, EventKind, Snapshot};
use crate::core::engine::matchmaking;
use crate::core::engine::notifications::{self, Channel, Notification};
use crate::core::engine::social::Relation;
use crate::core::engine::{Event, Failure, Refusal, Reply, Status};
use crate::telemetry::metrics::metrics;

/// The wire code of an engine refusal.
pub fn refusal_code(r: Refusal) -> ErrorCode {
    match r {
        Refusal::ChatNotFound => ErrorCode::CHAT_NOT_FOUND,
        Refusal::AccessDenied => ErrorCode::ACCESS_DENIED,
        Refusal::JoinError => ErrorCode::JOIN_ERROR,
        Refusal::NotInChat => ErrorCode::NOT_IN_CHAT,
        Refusal::MessageError => ErrorCode::MESSAGE_ERROR,
        Refusal::RateLimited => ErrorCode::RATE_LIMITED,
        Refusal::InvalidArgument => ErrorCode::INVALID_ARGUMENT,
        Refusal::FriendError => ErrorCode::FRIEND_ERROR,
        Refusal::NotificationNotFound => ErrorCode::NOTIFICATION_NOT_FOUND,
        Refusal::LobbyNotFound => ErrorCode::LOBBY_NOT_FOUND,
        Refusal::LobbyError => ErrorCode::LOBBY_ERROR,
        Refusal::NotHost => ErrorCode::NOT_HOST,
        Refusal::KickError => ErrorCode::KICK_ERROR,
        Refusal::ReadyError => ErrorCode::READY_ERROR,
        Refusal::MatchNotFound => ErrorCode::MATCH_NOT_FOUND,
        Refusal::CancelError => ErrorCode::CANCEL_ERROR,
        Refusal::SubscriptionError => ErrorCode::SUBSCRIPTION_ERROR,
        Refusal::MatchmakingError => ErrorCode::MATCHMAKING_ERROR,
    }
}

/// An `Error` reply for a refused request. Rate limits are retryable.
pub fn failure_frame(enc: &mut Encoder, request_id: u64, f: &Failure) -> Bytes {
    let code = refusal_code(f.refusal);
    metrics().error(code);
    enc.error(
        request_id,
        code,
        &f.message,
        f.refusal == Refusal::RateLimited,
        false,
    )
}

fn user(a: &Author) -> UserFields<'_> {
    UserFields {
        id: &a.id,
        username: &a.username,
        display_name: &a.display_name,
    }
}

fn message(m: &Message) -> MessageFields<'_> {
    MessageFields {
        id: m.id,
        chat_id: &m.chat_id,
        sender: user(&m.sender),
        content: &m.content,
        content_type: ContentType(m.content_type),
        created_at_ms: m.created_at_ms,
        edited_at_ms: m.edited_at_ms,
        deleted: m.deleted,
    }
}

fn kind(k: Kind) -> ChatKind {
    match k {
        Kind::Direct => ChatKind::DIRECT,
        Kind::Lobby => ChatKind::LOBBY,
        Kind::Channel => ChatKind::CHANNEL,
    }
}

/// The wire form of a relation.
pub fn relation(r: Relation) -> huddle_schema::wire::Relation {
    use huddle_schema::wire::Relation as W;
    match r {
        Relation::None => W::NONE,
        Relation::Friend => W::FRIEND,
        Relation::RequestSent => W::REQUEST_SENT,
        Relation::RequestReceived => W::REQUEST_RECEIVED,
        Relation::Blocked => W::BLOCKED,
    }
}

/// The engine form of a wire delivery channel (unknown values: none).
pub fn channel_from_wire(c: DeliveryChannel) -> Option<Channel> {
    Some(match c {
        DeliveryChannel::IN_APP => Channel::InApp,
        DeliveryChannel::PUSH => Channel::Push,
        DeliveryChannel::EMAIL => Channel::Email,
        _ => return None,
    })
}

fn notification(n: &Notification) -> NotificationFields<'_> {
    NotificationFields {
        id: n.id,
        kind: &n.kind,
        title: &n.title,
        body: &n.body,
        data: &n.data,
        created_at_ms: n.created_at_ms,
        read: n.read,
        channels: n
            .channels
            .iter()
            .map(|c| ChannelFields {
                channel: match c.channel {
                    Channel::InApp => DeliveryChannel::IN_APP,
                    Channel::Push => DeliveryChannel::PUSH,
                    Channel::Email => DeliveryChannel::EMAIL,
                },
                state: match c.state {
                    notifications::DeliveryState::Pending => DeliveryState::PENDING,
                    notifications::DeliveryState::Sent => DeliveryState::SENT,
                    notifications::DeliveryState::Failed => DeliveryState::FAILED,
                },
                error: c.error.as_deref().unwrap_or(""),
                attempts: c.attempts,
                updated_at_ms: c.updated_at_ms,
            })
            .collect(),
    }
}

/// The wire form of a lobby visibility.
pub fn visibility(v: lobbies::Visibility) -> huddle_schema::wire::LobbyVisibility {
    use huddle_schema::wire::LobbyVisibility as W;
    match v {
        lobbies::Visibility::Public => W::PUBLIC,
        lobbies::Visibility::Private => W::PRIVATE,
        lobbies::Visibility::InviteOnly => W::INVITE_ONLY,
    }
}

/// The engine form of a wire visibility (unknown values: none).
pub fn visibility_from_wire(
    v: huddle_schema::wire::LobbyVisibility,
) -> Option<lobbies::Visibility> {
    use huddle_schema::wire::LobbyVisibility as W;
    Some(match v {
        W::PUBLIC => lobbies::Visibility::Public,
        W::PRIVATE => lobbies::Visibility::Private,
        W::INVITE_ONLY => lobbies::Visibility::InviteOnly,
        _ => return None,
    })
}

/// The wire form of a lobby status.
pub fn lobby_status(s: lobbies::Status) -> huddle_schema::wire::LobbyStatus {
    use huddle_schema::wire::LobbyStatus as W;
    match s {
        lobbies::Status::Open => W::OPEN,
        lobbies::Status::Ready => W::READY,
        lobbies::Status::InGame => W::IN_GAME,
    }
}

fn lobby_state(l: &Snapshot) -> LobbyStateFields<'_> {
    LobbyStateFields {
        id: &l.id,
        game: &l.game,
        mode: &l.mode,
        region: &l.region,
        min: l.min,
        max: l.max,
        visibility: visibility(l.visibility),
        has_password: l.has_password,
        chat: l.chat,
        locked: l.locked,
        status: lobby_status(l.status),
        host: l.host.as_deref().unwrap_or(""),
        members: l
            .members
            .iter()
            .map(|m| MemberFields {
                user: user(&m.user),
                ready: m.ready,
                connected: m.connected,
                team: m.team.map_or(-1, i16::from),
                joined_at_ms: m.joined_at_ms,
            })
            .collect(),
        settings: l
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        connection: l.connection.as_deref().unwrap_or(""),
        version: l.version,
        created_at_ms: l.created_at_ms,
        updated_at_ms: l.updated_at_ms,
    }
}

fn event_kind(k: EventKind) -> LobbyEventKind {
    match k {
        EventKind::MemberJoined => LobbyEventKind::MEMBER_JOINED,
        EventKind::MemberLeft => LobbyEventKind::MEMBER_LEFT,
        EventKind::HostChanged => LobbyEventKind::HOST_CHANGED,
        EventKind::MemberReady => LobbyEventKind::MEMBER_READY,
        EventKind::AllReady => LobbyEventKind::ALL_READY,
        EventKind::NotReady => LobbyEventKind::NOT_READY,
        EventKind::MemberKicked => LobbyEventKind::MEMBER_KICKED,
        EventKind::Kicked => LobbyEventKind::KICKED,
        EventKind::Updated => LobbyEventKind::UPDATED,
        EventKind::Started => LobbyEventKind::STARTED,
        EventKind::Closed => LobbyEventKind::CLOSED,
        EventKind::MemberDisconnected => LobbyEventKind::MEMBER_DISCONNECTED,
        EventKind::MemberReconnected => LobbyEventKind::MEMBER_RECONNECTED,
    }
}

/// The wire form of a presence status.
pub fn presence_status(s: Status) -> PresenceStatus {
    match s {
        Status::Offline => PresenceStatus::OFFLINE,
        Status::Online => PresenceStatus::ONLINE,
        Status::Away => PresenceStatus::AWAY,
        Status::Busy => PresenceStatus::BUSY,
        Status::InGame => PresenceStatus::IN_GAME,
    }
}

/// The engine form of a wire presence status (unknown values: none).
pub fn status_from_wire(s: PresenceStatus) -> Option<Status> {
    Some(match s {
        PresenceStatus::OFFLINE => Status::Offline,
        PresenceStatus::ONLINE => Status::Online,
        PresenceStatus::AWAY => Status::Away,
        PresenceStatus::BUSY => Status::Busy,
        PresenceStatus::IN_GAME => Status::InGame,
        _ => return None,
    })
}

/// Encodes an event once for every recipient.
pub fn event_frame(enc: &mut Encoder, event: &Event, reliable: bool) -> EventFrame {
    match event {
        Event::Echo { from_user, payload } => enc.echo_event(from_user, payload, reliable),
        Event::ChatMessage(m) => enc.chat_message_event(&message(m)),
        Event::ChatMember {
            chat_id,
            user: u,
            joined,
        } => enc.chat_member_event(chat_id, user(u), *joined),
        Event::ChatTyping {
            chat_id,
            user: u,
            typing,
        } => enc.chat_typing_event(chat_id, user(u), *typing),
        Event::ChatRead {
            chat_id,
            user_id,
            read_up_to,
        } => enc.chat_read_event(chat_id, user_id, *read_up_to),
        Event::ChatMessageUpdated(m) => enc.chat_message_updated_event(&message(m)),
        Event::UserStatus {
            user_id,
            status,
            text,
            at_ms,
        } => enc.user_status_event(
            user_id,
            presence_status(*status),
            text.as_deref().unwrap_or(""),
            *at_ms,
        ),
        Event::ChatMessageDeleted {
            chat_id,
            message_id,
            by,
        } => enc.chat_message_deleted_event(chat_id, *message_id, by),
        Event::FriendUpdate {
            user_id,
            relation: r,
            since_ms,
        } => enc.friend_event(user_id, relation(*r), *since_ms),
        Event::Notification(n) => enc.notification_event(&notification(n)),
        Event::NotificationCount { total, unread } => enc.notification_count_event(*total, *unread),
        Event::Lobby(e) => enc.lobby_event(&LobbyEventFields {
            lobby_id: &e.lobby_id,
            version: e.version,
            kind: event_kind(e.kind),
            user: e.user.as_ref().map(user),
            ready: e.ready,
            reason: e.reason.as_deref().unwrap_or(""),
            lobby: e.snapshot.as_deref().map(lobby_state),
            at_ms: e.at_ms,
        }),
        Event::Matchmaking(e) => enc.matchmaking_event(&MatchmakingEventFields {
            kind: match e.kind {
                matchmaking::EventKind::Status => MatchmakingEventKind::STATUS,
                matchmaking::EventKind::Found => MatchmakingEventKind::FOUND,
                matchmaking::EventKind::Matched => MatchmakingEventKind::MATCHED,
                matchmaking::EventKind::Cancelled => MatchmakingEventKind::CANCELLED,
                matchmaking::EventKind::TimedOut => MatchmakingEventKind::TIMEOUT,
                matchmaking::EventKind::Requeued => MatchmakingEventKind::REQUEUED,
                matchmaking::EventKind::Removed => MatchmakingEventKind::REMOVED,
                matchmaking::EventKind::Started => MatchmakingEventKind::STARTED,
            },
            request_id: &e.request_id,
            ticket: e.ticket.as_ref().map(ticket),
            match_id: &e.match_id,
            lobby_id: &e.lobby_id,
            team: e.team,
            deadline_ms: e.deadline_ms,
            reason: &e.reason,
            at_ms: e.at_ms,
        }),
    }
}

fn ticket(t: &matchmaking::TicketView) -> TicketFields<'_> {
    TicketFields {
        request_id: &t.request_id,
        game: &t.game,
        mode: &t.mode,
        state: match t.state {
            matchmaking::TicketState::Searching => TicketState::SEARCHING,
            matchmaking::TicketState::Found => TicketState::FOUND,
            matchmaking::TicketState::Matched => TicketState::MATCHED,
            matchmaking::TicketState::Cancelled => TicketState::CANCELLED,
            matchmaking::TicketState::TimedOut => TicketState::TIMED_OUT,
            matchmaking::TicketState::Removed => TicketState::REMOVED,
        },
        waited_ms: t.waited_ms,
        spread: t.spread,
        latency_ms: t.latency_ms,
        ahead_band: t.ahead_band,
        estimated_wait_ms: t
            .estimated_wait_ms
            .map_or(-1, |w| w.min(i64::MAX as u64) as i64),
        players: t.players.iter().map(|p| &**p).collect(),
    }
}

/// Encodes a typed reply; `None` for replies that never reach a client.
pub fn reply_frame(enc: &mut Encoder, request_id: u64, reply: &Reply) -> Option<(Bytes, Body)> {
    Some(match reply {
        Reply::Echo {
            payload,
            shard,
            delivered,
        } => (
            enc.echo_reply(request_id, payload, *shard, *delivered),
            Body::EchoReply,
        ),
        Reply::ChatJoined {
            chat_id,
            kind: k,
            members,
            read_only,
            slow_mode_ms,
            read_up_to,
        } => (
            enc.chat_joined(
                request_id,
                &JoinedFields {
                    chat_id,
                    kind: kind(*k),
                    members: *members,
                    read_only: *read_only,
                    slow_mode_ms: *slow_mode_ms,
                    read_up_to: *read_up_to,
                },
            ),
            Body::ChatJoined,
        ),
        Reply::ChatLeft { chat_id } => (enc.chat_left(request_id, chat_id), Body::ChatLeft),
        Reply::ChatSent {
            chat_id,
            message_id,
            created_at_ms,
            duplicate,
        } => (
            enc.chat_sent(request_id, chat_id, *message_id, *created_at_ms, *duplicate),
            Body::ChatSent,
        ),
        Reply::ChatRead {
            chat_id,
            read_up_to,
            unread,
        } => (
            enc.chat_read_ack(request_id, chat_id, *read_up_to, *unread),
            Body::ChatReadAck,
        ),
        Reply::ChatHistory {
            chat_id,
            messages,
            has_more,
        } => {
            let rows: Vec<MessageFields<'_>> = messages.iter().map(|m| message(m)).collect();
            (
                enc.chat_history_page(request_id, chat_id, &rows, *has_more),
                Body::ChatHistoryPage,
            )
        }
        Reply::ChatUpdated {
            chat_id,
            message_id,
            at_ms,
        } => (
            enc.chat_updated(request_id, chat_id, *message_id, *at_ms),
            Body::ChatUpdated,
        ),
        Reply::ChatMuted {
            chat_id,
            user_id,
            until_ms,
        } => (
            enc.chat_muted(request_id, chat_id, user_id, *until_ms),
            Body::ChatMuted,
        ),
        Reply::StatusSet {
            status,
            text,
            invisible,
        } => (
            enc.set_status(
                request_id,
                presence_status(*status),
                text.as_deref().unwrap_or(""),
                *invisible,
                true,
            ),
            Body::StatusSet,
        ),
        Reply::FriendOpDone {
            user_id,
            relation: r,
            since_ms,
        } => (
            enc.friend_op_done(request_id, user_id, relation(*r), *since_ms),
            Body::FriendOpDone,
        ),
        Reply::NotificationPage {
            notifications,
            has_more,
            total,
            unread,
        } => {
            let rows: Vec<_> = notifications.iter().map(|n| notification(n)).collect();
            (
                enc.notification_page(request_id, &rows, *has_more, *total, *unread),
                Body::NotificationPage,
            )
        }
        Reply::NotificationCounts { total, unread } => (
            enc.notification_counts(request_id, *total, *unread),
            Body::NotificationCounts,
        ),
        Reply::Lobby(l) => (
            enc.lobby_reply(request_id, &lobby_state(l)),
            Body::LobbyReply,
        ),
        Reply::LobbyLeft { lobby_id } => (enc.lobby_left(request_id, lobby_id), Body::LobbyLeft),
        Reply::LobbyInvited { lobby_id, user_id } => (
            enc.lobby_invited(request_id, lobby_id, user_id),
            Body::LobbyInvited,
        ),
        Reply::Matchmaking(t) => (
            enc.matchmaking_reply(request_id, &ticket(t)),
            Body::MatchmakingReply,
        ),
        Reply::Done => return None,
    })
}
