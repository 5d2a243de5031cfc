//! One decoder per client body, each reading its table's fields into its
//! [`Request`] variant; `None` when the frame's body is not that table.
//! Listed, with every other body, in `super::BODIES`.

use flatbuffers::{ForwardsUOffset, Vector};
use huddle_schema::wire;

use super::{
    ChatSend, Echo, Hello, List, LobbyCreate, LobbyList, LobbyOp, LobbyUpdate, MatchAttribute,
    MatchmakingStart, RegionLatency, Request, Resume, SetStatus, Settings, Strings,
};

fn text(s: Option<&str>) -> &str {
    s.unwrap_or("")
}

fn strings<'a>(v: Option<Vector<'a, ForwardsUOffset<&'a str>>>) -> Strings<'a> {
    List::new(v, |s| s)
}

fn settings<'a>(v: Option<Vector<'a, ForwardsUOffset<wire::Setting<'a>>>>) -> Settings<'a> {
    List::new(v, |s| (text(s.key()), text(s.value())))
}

pub(super) fn hello<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let h = f.body_as_hello()?;
    Some(Request::Hello(Hello {
        token: h.token(),
        client: h.client(),
        protocol_version: h.protocol_version(),
        resume: h.resume().map(|r| Resume {
            session_id: r.session_id(),
            resume_token: r.resume_token(),
            last_seq: r.last_seq(),
        }),
        datagrams: h.datagrams(),
    }))
}

pub(super) fn ping<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let p = f.body_as_ping()?;
    Some(Request::Ping {
        ack_seq: p.ack_seq(),
    })
}

pub(super) fn pong<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    f.body_as_pong().map(|_| Request::Pong)
}

pub(super) fn echo<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let e = f.body_as_echo_request()?;
    Some(Request::Echo(Echo {
        payload: e.payload().map_or(&[][..], |p| p.bytes()),
        to_user: e.to_user(),
        volatile: e.volatile(),
    }))
}

pub(super) fn presence_query<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let q = f.body_as_presence_query()?;
    Some(Request::PresenceQuery {
        user_ids: strings(q.user_ids()),
    })
}

pub(super) fn follow<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let q = f.body_as_follow()?;
    Some(Request::Follow {
        user_ids: strings(q.user_ids()),
    })
}

pub(super) fn unfollow<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let q = f.body_as_unfollow()?;
    Some(Request::Unfollow {
        user_ids: strings(q.user_ids()),
    })
}

pub(super) fn set_status<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let s = f.body_as_set_status()?;
    Some(Request::SetStatus(SetStatus {
        status: s.status(),
        text: s.text(),
        invisible: s.invisible(),
    }))
}

pub(super) fn chat_join<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let j = f.body_as_chat_join()?;
    Some(Request::ChatJoin {
        chat_id: text(j.chat_id()),
    })
}

pub(super) fn chat_leave<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let l = f.body_as_chat_leave()?;
    Some(Request::ChatLeave {
        chat_id: text(l.chat_id()),
    })
}

pub(super) fn chat_send<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let m = f.body_as_chat_send()?;
    Some(Request::ChatSend(ChatSend {
        chat_id: text(m.chat_id()),
        content: text(m.content()),
        content_type: m.content_type(),
        nonce: m.nonce(),
    }))
}

pub(super) fn chat_typing<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let t = f.body_as_chat_typing()?;
    Some(Request::ChatTyping {
        chat_id: text(t.chat_id()),
        typing: t.typing(),
    })
}

pub(super) fn chat_read<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let r = f.body_as_chat_read()?;
    Some(Request::ChatRead {
        chat_id: text(r.chat_id()),
        message_id: r.message_id(),
    })
}

pub(super) fn chat_history<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let h = f.body_as_chat_history()?;
    Some(Request::ChatHistory {
        chat_id: text(h.chat_id()),
        before_id: h.before_id(),
        limit: h.limit(),
    })
}

pub(super) fn chat_edit<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let e = f.body_as_chat_edit()?;
    Some(Request::ChatEdit {
        chat_id: text(e.chat_id()),
        message_id: e.message_id(),
        content: text(e.content()),
    })
}

pub(super) fn chat_delete<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let d = f.body_as_chat_delete()?;
    Some(Request::ChatDelete {
        chat_id: text(d.chat_id()),
        message_id: d.message_id(),
    })
}

pub(super) fn chat_mute<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let m = f.body_as_chat_mute()?;
    Some(Request::ChatMute {
        chat_id: text(m.chat_id()),
        user_id: text(m.user_id()),
        duration_ms: m.duration_ms(),
    })
}

pub(super) fn chat_unread<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let q = f.body_as_chat_unread()?;
    Some(Request::ChatUnread {
        chat_ids: strings(q.chat_ids()),
    })
}

pub(super) fn friend_op<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let op = f.body_as_friend_op()?;
    Some(Request::FriendOp {
        action: op.action(),
        user_id: text(op.user_id()),
    })
}

pub(super) fn friend_list<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    f.body_as_friend_list().map(|_| Request::FriendList)
}

pub(super) fn notification_list<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let l = f.body_as_notification_list()?;
    Some(Request::NotificationList {
        before_id: l.before_id(),
        limit: l.limit(),
        unread_only: l.unread_only(),
    })
}

pub(super) fn notification_mark_read<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let m = f.body_as_notification_mark_read()?;
    Some(Request::NotificationMarkRead {
        id: m.id(),
        all: m.all(),
    })
}

pub(super) fn notification_delete<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let d = f.body_as_notification_delete()?;
    Some(Request::NotificationDelete { id: d.id() })
}

pub(super) fn lobby_create<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let c = f.body_as_lobby_create()?;
    Some(Request::LobbyCreate(LobbyCreate {
        game: text(c.game()),
        mode: text(c.mode()),
        region: text(c.region()),
        min: c.min(),
        max: c.max(),
        visibility: c.visibility(),
        password: c.password(),
        chat: c.chat(),
        settings: settings(c.settings()),
    }))
}

pub(super) fn lobby_join<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let j = f.body_as_lobby_join()?;
    Some(Request::LobbyJoin {
        lobby_id: text(j.lobby_id()),
        password: j.password(),
    })
}

pub(super) fn lobby_update<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let u = f.body_as_lobby_update()?;
    Some(Request::LobbyUpdate(LobbyUpdate {
        lobby_id: text(u.lobby_id()),
        set_settings: u.set_settings(),
        settings: settings(u.settings()),
        min: u.min(),
        max: u.max(),
        set_visibility: u.set_visibility(),
        visibility: u.visibility(),
        set_password: u.set_password(),
        password: u.password(),
        lock: u.lock(),
    }))
}

pub(super) fn lobby_op<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let op = f.body_as_lobby_op()?;
    Some(Request::LobbyOp(LobbyOp {
        op: op.op(),
        lobby_id: text(op.lobby_id()),
        user_id: text(op.user_id()),
        text: text(op.text()),
    }))
}

pub(super) fn lobby_list<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let q = f.body_as_lobby_list()?;
    Some(Request::LobbyList(LobbyList {
        game: text(q.game()),
        mode: text(q.mode()),
        region: text(q.region()),
        min_free: q.min_free(),
        after: text(q.after()),
        limit: q.limit(),
    }))
}

pub(super) fn matchmaking_start<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let s = f.body_as_matchmaking_start()?;
    Some(Request::MatchmakingStart(MatchmakingStart {
        game: text(s.game()),
        mode: text(s.mode()),
        latencies: List::new(s.latencies(), |row| RegionLatency {
            region: text(row.region()),
            ms: row.ms(),
        }),
        lobby_id: text(s.lobby_id()),
        attributes: List::new(s.attributes(), |a| MatchAttribute {
            name: text(a.name()),
            text: text(a.text()),
            number: a.number(),
            is_number: a.is_number(),
        }),
        role: s.role(),
    }))
}

pub(super) fn matchmaking_op<'a>(f: &wire::Frame<'a>) -> Option<Request<'a>> {
    let op = f.body_as_matchmaking_op()?;
    Some(Request::MatchmakingOp {
        op: op.op(),
        ticket: text(op.request_id()),
    })
}
