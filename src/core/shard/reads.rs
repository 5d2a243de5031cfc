//! History reads a shard asks of the store, and what it does with what
//! comes back: the page or join reply to encode and push, and the state to
//! hand back to the chat's shard. The store only reads; it never sees an
//! outbox or a frame. Finishing runs on whichever thread the read
//! completed on, with that thread's encoder.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use huddle_schema::wire::Body;
use huddle_schema::Encoder;

use super::ShardMsg;
use crate::core::engine::chat::{self, Message};
use crate::core::engine::{Failure, Refusal, Reply, UserId};
use crate::core::outbox::Outbox;
use crate::core::wire;

thread_local! {
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::new());
}

/// A read the shard wants done.
pub enum ReadOp {
    Page(PageRead),
    Warm(WarmRead),
}

/// A history page the chat engine could not fill from its recent buffer.
pub struct PageRead {
    pub request_id: u64,
    pub chat_id: Arc<str>,
    /// What the recent buffer held, newest first.
    pub partial: Vec<Arc<Message>>,
    /// Messages still wanted, older than the oldest in `partial` (or than
    /// `before_id` when `partial` is empty).
    pub before_id: u64,
    pub limit: usize,
    pub reply_to: Arc<Outbox>,
}

/// A cold chat's stored past, asked for by a join.
pub struct WarmRead {
    pub request_id: u64,
    pub chat_id: Arc<str>,
    pub user: UserId,
    /// Newest messages wanted (0: the cursor only).
    pub recent: usize,
    /// The join's reply, its cursor to be merged with the stored one.
    pub joined: Reply,
    pub reply_to: Arc<Outbox>,
}

/// A reply to push once the shard has what was read.
pub struct Answer {
    outbox: Arc<Outbox>,
    bytes: Bytes,
    body: Body,
}

impl Answer {
    /// Queues the reply to its session.
    pub fn push(self) {
        self.outbox.push_reply(self.bytes, self.body);
    }
}

impl PageRead {
    /// The store's rows wanted: messages older than this id, newest first.
    pub fn older_than(&self) -> u64 {
        self.partial.last().map_or(self.before_id, |m| m.id)
    }

    /// How many rows to ask for: one more than wanted, to know whether
    /// there are more.
    pub fn rows(&self) -> usize {
        self.limit + 1
    }

    /// Answers the page with what was read (`None`: the store failed).
    pub fn finish(self, read: Option<Vec<Arc<Message>>>) -> Option<Answer> {
        let frame = ENCODER.with(|enc| {
            let enc = &mut enc.borrow_mut();
            match read {
                Some(mut older) => {
                    let has_more = older.len() > self.limit;
                    older.truncate(self.limit);
                    let mut messages = self.partial;
                    messages.extend(older);
                    let reply = Reply::ChatHistory {
                        chat_id: self.chat_id,
                        messages,
                        has_more,
                    };
                    wire::reply_frame(enc, self.request_id, &reply)
                }
                None => {
                    let f = Failure::new(
                        Refusal::RateLimited,
                        "history is unavailable right now; retry shortly",
                    );
                    Some((wire::failure_frame(enc, self.request_id, &f), Body::Error))
                }
            }
        });
        answer(self.request_id, self.reply_to, frame)
    }
}

impl WarmRead {
    /// What was read (`None`: the store failed; the join is answered from
    /// memory and the chat stays cold, so the next join asks again): the
    /// message for the chat's shard, to be handled before the join's reply
    /// is pushed, so any request the client sends after the reply sees it.
    pub fn finish(
        self,
        read: Option<(Option<u64>, Vec<Arc<Message>>)>,
    ) -> (ShardMsg, Option<Answer>) {
        let mut joined = self.joined;
        let cmd = match read {
            Some((cursor, messages)) => {
                if let (Reply::ChatJoined { read_up_to, .. }, Some(stored)) = (&mut joined, cursor)
                {
                    *read_up_to = (*read_up_to).max(stored);
                }
                chat::Command::Warmed {
                    chat_id: self.chat_id,
                    user: self.user,
                    cursor,
                    messages,
                }
            }
            None => chat::Command::WarmFailed {
                chat_id: self.chat_id,
                user: self.user,
            },
        };
        let frame =
            ENCODER.with(|enc| wire::reply_frame(&mut enc.borrow_mut(), self.request_id, &joined));
        let msg = ShardMsg::Chat {
            cmd: Box::new(cmd),
            reply_to: self.reply_to.clone(),
            member: None,
        };
        (msg, answer(self.request_id, self.reply_to, frame))
    }
}

/// Request 0 is a join made on the client's behalf (a lobby's chat), whose
/// reply the client never asked for.
fn answer(request_id: u64, outbox: Arc<Outbox>, frame: Option<(Bytes, Body)>) -> Option<Answer> {
    let (bytes, body) = frame?;
    (request_id != 0).then_some(Answer {
        outbox,
        bytes,
        body,
    })
}
