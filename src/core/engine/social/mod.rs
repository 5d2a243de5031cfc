//! Friends and blocks, in two halves that each live on the shard owning
//! their key:
//!
//! - [`Pairs`] decides. One pair of users is keyed like their direct chat
//!   (`direct:<a>:<b>`, ids in byte order), so every transition of a pair is
//!   decided on one shard, atomically, and the direct chat on that same
//!   shard checks blocks without a hop.
//! - [`Rosters`] remembers. Each user's view (friends, requests both ways,
//!   blocks) lives on the user's shard, updated by [`Effect::RelationChanged`]
//!   from the pair's shard; it serves the friend list and tells the shard
//!   whom to push `user:status` to. On a friend operation's way to the
//!   pair's shard, [`Rosters::advance`] checks the actor's and the
//!   target's caps ([`FriendStage`]).
//!
//! [`Pairs::check_invite`] is the pair's word on a lobby invitation.
//! A blocked user is never told: they see the relation as NONE. Never does
//! I/O; records for the store go out as [`Effect::Persist`] of a
//! [`Record::Relation`].

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::chat::direct_chat_id;
use super::{DomainEvent, Effect, Failure, Now, Record, Refusal, Reply, UserId};

/// A relation as one user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Relation {
    #[default]
    None,
    Friend,
    RequestSent,
    RequestReceived,
    /// This user blocked the other.
    Blocked,
}

/// A friend operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Request,
    Accept,
    Reject,
    Cancel,
    Remove,
    Block,
    Unblock,
}

/// What one side of a pair has done. Stored as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Side {
    #[default]
    None,
    /// Asked the other to be friends.
    Requested,
    /// Friends (both sides say so).
    Friend,
    /// Blocked the other.
    Blocked,
}

/// One pair's state: `lo` is the side of the smaller user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PairState {
    pub lo: Side,
    pub hi: Side,
    /// When the current friendship, request or block began.
    pub lo_since_ms: i64,
    pub hi_since_ms: i64,
}

impl PairState {
    fn is_empty(&self) -> bool {
        self.lo == Side::None && self.hi == Side::None
    }

    /// (mine, theirs, my since) for `user`, which is `lo` when `is_lo`.
    fn sides(&self, is_lo: bool) -> (Side, Side, i64) {
        if is_lo {
            (self.lo, self.hi, self.lo_since_ms)
        } else {
            (self.hi, self.lo, self.hi_since_ms)
        }
    }

    fn set(&mut self, is_lo: bool, side: Side, since_ms: i64) {
        if is_lo {
            self.lo = side;
            self.lo_since_ms = since_ms;
        } else {
            self.hi = side;
            self.hi_since_ms = since_ms;
        }
    }

    /// The relation as the `lo` (or `hi`) user sees it, with its start.
    pub fn view(&self, is_lo: bool) -> (Relation, i64) {
        let (mine, theirs, since) = self.sides(is_lo);
        let theirs_since = self.sides(!is_lo).2;
        match (mine, theirs) {
            (Side::Blocked, _) => (Relation::Blocked, since),
            (_, Side::Blocked) => (Relation::None, 0),
            (Side::Friend, _) => (Relation::Friend, since),
            (Side::Requested, _) => (Relation::RequestSent, since),
            (_, Side::Requested) => (Relation::RequestReceived, theirs_since),
            _ => (Relation::None, 0),
        }
    }
}

/// A stored relationship row: the whole pair, written once under each
/// user's partition so either user's list is one partition read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelationRecord {
    /// The partition: the user whose list this row belongs to.
    pub user: UserId,
    /// The clustering key: the other user.
    pub other: UserId,
    /// `None` deletes the row (nothing left between the two).
    pub pair: Option<PairState>,
}

/// Relations one user may hold; a request or block past it is refused
/// (the user's own shard checks before the pair's shard decides).
pub const MAX_RELATIONS: usize = 1000;
/// Friend requests one user may have waiting; more are refused until they
/// answer some (the target's shard checks).
pub const MAX_INCOMING: usize = 500;

/// Commands the pair authority accepts.
#[derive(Debug, Clone)]
pub struct OpCommand {
    pub request_id: u64,
    pub actor: UserId,
    pub target: UserId,
    pub op: Op,
}

/// Where a friend operation is on its way to the pair's shard: the actor's
/// shard checks the actor's cap, the target's shard (requests only) the
/// target's, and the pair's shard decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FriendStage {
    /// On the actor's shard.
    Actor,
    /// On the target's shard (requests only).
    Target,
    /// On the pair's shard, which decides.
    Decide,
}

/// The friend/block authority for the pairs this shard owns.
#[derive(Debug, Default)]
pub struct Pairs {
    pairs: HashMap<Arc<str>, PairState>,
}

fn friend_error(out: &mut Vec<Effect>, request_id: u64, message: String) {
    out.push(Effect::Fail {
        request_id,
        failure: Failure::new(Refusal::FriendError, message),
    });
}

impl Pairs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a stored pair (at start-up).
    pub fn restore(&mut self, a: &str, b: &str, state: PairState) {
        if !state.is_empty() {
            self.pairs.insert(Arc::from(direct_chat_id(a, b)), state);
        }
    }

    fn state(&self, a: &str, b: &str) -> (PairState, bool) {
        let key = direct_chat_id(a, b);
        (
            self.pairs.get(key.as_str()).copied().unwrap_or_default(),
            a < b,
        )
    }

    /// Why `sender` may not message `recipient` directly, if they may not.
    pub fn direct_block(&self, sender: &str, recipient: &str) -> Option<String> {
        let (pair, sender_is_lo) = self.state(sender, recipient);
        let (mine, theirs, _) = pair.sides(sender_is_lo);
        if theirs == Side::Blocked {
            Some(format!(
                "{recipient} does not accept direct messages from you"
            ))
        } else if mine == Side::Blocked {
            Some(format!(
                "you blocked {recipient}; unblock them to send messages"
            ))
        } else {
            None
        }
    }

    /// Whether `by` blocked `user` (invites and requests are refused then).
    pub fn blocked(&self, by: &str, user: &str) -> bool {
        let (pair, by_is_lo) = self.state(by, user);
        pair.sides(by_is_lo).0 == Side::Blocked
    }

    /// The relation `user` sees towards `other`.
    pub fn relation(&self, user: &str, other: &str) -> Relation {
        let (pair, is_lo) = self.state(user, other);
        pair.view(is_lo).0
    }

    /// Whether `inviter` may invite `invitee` to a lobby: never when the
    /// invitee blocked the inviter, and only a friend when `friends_only`
    /// (a lobby that is not public).
    pub fn check_invite(
        &self,
        inviter: &str,
        invitee: &str,
        friends_only: bool,
    ) -> Result<(), Failure> {
        if self.blocked(invitee, inviter) {
            return Err(Failure::new(
                Refusal::AccessDenied,
                format!("{invitee} does not accept invitations from you"),
            ));
        }
        if friends_only && self.relation(inviter, invitee) != Relation::Friend {
            return Err(Failure::new(
                Refusal::AccessDenied,
                format!(
                    "{invitee} is not your friend; only friends may be invited to a lobby that is not public"
                ),
            ));
        }
        Ok(())
    }

    pub fn handle(&mut self, now: Now, cmd: OpCommand, out: &mut Vec<Effect>) {
        let OpCommand {
            request_id,
            actor,
            target,
            op,
        } = cmd;
        if actor == target {
            return friend_error(
                out,
                request_id,
                "you cannot be your own friend, nor block yourself".into(),
            );
        }
        let (before, actor_is_lo) = self.state(&actor, &target);
        let (mine, theirs, _) = before.sides(actor_is_lo);
        let mut after = before;
        let at = now.unix_ms;
        let mut domain = None;
        let t = &target;
        match op {
            Op::Request => {
                if theirs == Side::Blocked {
                    return out.push(Effect::Fail {
                        request_id,
                        failure: Failure::new(
                            Refusal::AccessDenied,
                            format!("{t} does not accept friend requests from you"),
                        ),
                    });
                }
                match mine {
                    Side::Blocked => {
                        return friend_error(
                            out,
                            request_id,
                            format!("you blocked {t}; unblock them before sending a request"),
                        )
                    }
                    Side::Friend => {
                        return friend_error(out, request_id, format!("{t} is already your friend"))
                    }
                    Side::Requested => {}
                    Side::None if theirs == Side::Requested => {
                        after.set(actor_is_lo, Side::Friend, at);
                        after.set(!actor_is_lo, Side::Friend, at);
                        domain = Some(DomainEvent::FriendshipAccepted {
                            by: actor.clone(),
                            requester: target.clone(),
                        });
                    }
                    Side::None => {
                        after.set(actor_is_lo, Side::Requested, at);
                        domain = Some(DomainEvent::FriendshipRequested {
                            from: actor.clone(),
                            to: target.clone(),
                        });
                    }
                }
            }
            Op::Accept | Op::Reject => {
                if theirs != Side::Requested || mine == Side::Blocked {
                    let what = if op == Op::Accept { "accept" } else { "reject" };
                    return friend_error(
                        out,
                        request_id,
                        format!("there is no friend request from {t} to {what}"),
                    );
                }
                if op == Op::Accept {
                    after.set(actor_is_lo, Side::Friend, at);
                    after.set(!actor_is_lo, Side::Friend, at);
                    domain = Some(DomainEvent::FriendshipAccepted {
                        by: actor.clone(),
                        requester: target.clone(),
                    });
                } else {
                    after.set(!actor_is_lo, Side::None, 0);
                    domain = Some(DomainEvent::FriendshipRejected {
                        by: actor.clone(),
                        requester: target.clone(),
                    });
                }
            }
            Op::Cancel => {
                if mine != Side::Requested {
                    return friend_error(
                        out,
                        request_id,
                        format!("you have no pending friend request to {t} to cancel"),
                    );
                }
                after.set(actor_is_lo, Side::None, 0);
            }
            Op::Remove => {
                if mine != Side::Friend {
                    return friend_error(out, request_id, format!("{t} is not your friend"));
                }
                after.set(actor_is_lo, Side::None, 0);
                after.set(!actor_is_lo, Side::None, 0);
            }
            Op::Block => {
                if mine != Side::Blocked {
                    after.set(actor_is_lo, Side::Blocked, at);
                    // A block ends any friendship and request between them.
                    if theirs != Side::Blocked {
                        after.set(!actor_is_lo, Side::None, 0);
                    }
                }
            }
            Op::Unblock => {
                if mine != Side::Blocked {
                    return friend_error(out, request_id, format!("{t} is not blocked"));
                }
                after.set(actor_is_lo, Side::None, 0);
            }
        }
        let (relation, since_ms) = after.view(actor_is_lo);
        out.push(Effect::Reply {
            request_id,
            reply: Reply::FriendOpDone {
                user_id: target.clone(),
                relation,
                since_ms,
            },
        });
        if after == before {
            return;
        }
        let key: Arc<str> = Arc::from(direct_chat_id(&actor, &target));
        if after.is_empty() {
            self.pairs.remove(&key);
        } else {
            self.pairs.insert(key, after);
        }
        for (user, other, is_lo) in [
            (&actor, &target, actor_is_lo),
            (&target, &actor, !actor_is_lo),
        ] {
            out.push(Effect::Persist(Record::Relation(RelationRecord {
                user: user.clone(),
                other: other.clone(),
                pair: (!after.is_empty()).then_some(after),
            })));
            let seen = after.view(is_lo);
            if seen != before.view(is_lo) {
                out.push(Effect::RelationChanged {
                    user: user.clone(),
                    other: other.clone(),
                    relation: seen.0,
                    since_ms: seen.1,
                });
            }
        }
        if let Some(event) = domain {
            out.push(Effect::Domain(event));
        }
    }
}

/// One row of a user's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEntry {
    pub user_id: UserId,
    pub relation: Relation,
    pub since_ms: i64,
}

/// Each user's view of their relations, for the users this shard owns.
#[derive(Debug, Default)]
pub struct Rosters {
    users: HashMap<UserId, HashMap<UserId, (Relation, i64)>>,
}

impl Rosters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what the pair's shard decided (or what the store held).
    pub fn set(&mut self, user: &UserId, other: &UserId, relation: Relation, since_ms: i64) {
        if relation == Relation::None {
            if let Some(list) = self.users.get_mut(user) {
                list.remove(other);
                if list.is_empty() {
                    self.users.remove(user);
                }
            }
        } else {
            self.users
                .entry(user.clone())
                .or_default()
                .insert(other.clone(), (relation, since_ms));
        }
    }

    /// How many relations `user` has (friends, requests both ways, blocks).
    pub fn count(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, HashMap::len)
    }

    /// Friend requests waiting for `user`'s answer.
    pub fn incoming(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, |l| {
            l.values()
                .filter(|(r, _)| *r == Relation::RequestReceived)
                .count()
        })
    }

    /// Checks the cap that `stage` of a friend operation checks on this
    /// shard and names the stage that comes next. On the actor's shard a
    /// request or block is refused when the actor already holds
    /// [`MAX_RELATIONS`]; a request goes on to the target's shard, anything
    /// else to the pair's. On the target's shard a request is refused when
    /// the target has [`MAX_INCOMING`] waiting; otherwise the pair's shard
    /// decides. `Decide` stays `Decide`: the pair authority ([`Pairs`])
    /// decides, not the roster.
    pub fn advance(&self, cmd: &OpCommand, stage: FriendStage) -> Result<FriendStage, Failure> {
        match stage {
            FriendStage::Decide => Ok(FriendStage::Decide),
            FriendStage::Actor => {
                let adds = matches!(cmd.op, Op::Request | Op::Block);
                if adds && self.count(&cmd.actor) >= MAX_RELATIONS {
                    return Err(Failure::new(
                        Refusal::FriendError,
                        format!(
                            "you have {MAX_RELATIONS} friends, requests and blocks, the most allowed; remove some first"
                        ),
                    ));
                }
                if cmd.op == Op::Request {
                    Ok(FriendStage::Target)
                } else {
                    Ok(FriendStage::Decide)
                }
            }
            FriendStage::Target => {
                if self.incoming(&cmd.target) >= MAX_INCOMING {
                    return Err(Failure::new(
                        Refusal::FriendError,
                        format!(
                            "{} has {} friend requests waiting, the most allowed; try again later",
                            cmd.target, MAX_INCOMING
                        ),
                    ));
                }
                Ok(FriendStage::Decide)
            }
        }
    }

    /// `user`'s friends.
    pub fn friends<'a>(&'a self, user: &str) -> impl Iterator<Item = &'a UserId> + 'a {
        self.users
            .get(user)
            .into_iter()
            .flat_map(|l| l.iter())
            .filter(|(_, (r, _))| *r == Relation::Friend)
            .map(|(u, _)| u)
    }

    /// Everything `user` has: friends, requests both ways, blocks; friends
    /// first, then by user id.
    pub fn list(&self, user: &str) -> Vec<RosterEntry> {
        let mut rows: Vec<RosterEntry> = self
            .users
            .get(user)
            .into_iter()
            .flat_map(|l| l.iter())
            .map(|(u, (relation, since_ms))| RosterEntry {
                user_id: u.clone(),
                relation: *relation,
                since_ms: *since_ms,
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.relation != Relation::Friend, &a.user_id)
                .cmp(&(b.relation != Relation::Friend, &b.user_id))
        });
        rows
    }
}

#[cfg(test)]
mod tests;
