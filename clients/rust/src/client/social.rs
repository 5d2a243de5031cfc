//! The friends and notifications requests on [`Client`]: `friend:request`,
//! `accept`, `reject`, `cancel`, `remove`, `block`, `unblock`, the friend
//! list, notification pages, mark-read and delete.
//!
//! Owns building each request; the replies decode in [`crate::social`] and
//! the request plumbing is the parent's. It never touches the connection.

use huddle_schema::wire::FriendAction;

use super::Client;
use crate::error::ClientError;
use crate::social::{
    decode_friend_list_page, decode_friend_op_done, decode_notification_counts,
    decode_notification_page, Friend, FriendOpDone, NotificationCounts, NotificationPage,
};

impl Client {
    /// `friend:request`: ask `user_id` to be friends. When they already asked
    /// this user, this accepts their request instead. Both users get
    /// [`Event::FriendUpdate`](crate::Event::FriendUpdate). FRIEND_ERROR
    /// when it does not fit the current relation (e.g. befriending oneself).
    pub async fn friend_request(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::REQUEST, user_id).await
    }

    /// `friend:accept`: accept `user_id`'s request. FRIEND_ERROR when there
    /// is none.
    pub async fn friend_accept(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::ACCEPT, user_id).await
    }

    /// `friend:reject`: turn down `user_id`'s request. FRIEND_ERROR when
    /// there is none.
    pub async fn friend_reject(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::REJECT, user_id).await
    }

    /// `friend:cancel`: withdraw this user's request to `user_id`.
    /// FRIEND_ERROR when there is none.
    pub async fn friend_cancel(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::CANCEL, user_id).await
    }

    /// `friend:remove`: stop being friends with `user_id`. FRIEND_ERROR when
    /// not friends.
    pub async fn friend_remove(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::REMOVE, user_id).await
    }

    /// `friend:block`: block `user_id` (ends any friendship or request). The
    /// blocked user sees NONE and is never told.
    pub async fn block(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::BLOCK, user_id).await
    }

    /// `friend:unblock`: lift this user's block on `user_id`. FRIEND_ERROR
    /// when not blocked.
    pub async fn unblock(&self, user_id: &str) -> Result<FriendOpDone, ClientError> {
        self.friend_op(FriendAction::UNBLOCK, user_id).await
    }

    async fn friend_op(
        &self,
        action: FriendAction,
        user_id: &str,
    ) -> Result<FriendOpDone, ClientError> {
        let buf = self
            .request(|enc, id| enc.friend_op(id, action, user_id))
            .await?;
        decode_friend_op_done(&buf)
    }

    /// This user's friends, requests both ways and blocks, each with
    /// presence (OFFLINE for anyone but friends).
    pub async fn friends(&self) -> Result<Vec<Friend>, ClientError> {
        let buf = self.request(|enc, id| enc.friend_list(id)).await?;
        decode_friend_list_page(&buf)
    }

    /// A page of this user's notifications, newest first: older than
    /// `before_id` (0 = from the newest), at most `limit` (1..=100), only
    /// unread ones with `unread_only`.
    pub async fn notifications(
        &self,
        before_id: u64,
        limit: u16,
        unread_only: bool,
    ) -> Result<NotificationPage, ClientError> {
        let buf = self
            .request(|enc, id| enc.notification_list(id, before_id, limit, unread_only))
            .await?;
        decode_notification_page(&buf)
    }

    /// Mark one notification read; returns the counts afterwards (also sent
    /// as [`Event::NotificationCount`](crate::Event::NotificationCount)).
    /// NOTIFICATION_NOT_FOUND when this user has no such notification.
    pub async fn notification_mark_read(
        &self,
        notification_id: u64,
    ) -> Result<NotificationCounts, ClientError> {
        let buf = self
            .request(|enc, id| enc.notification_mark_read(id, notification_id, false))
            .await?;
        decode_notification_counts(&buf)
    }

    /// Mark every notification of this user read; returns the counts
    /// afterwards.
    pub async fn notification_mark_all_read(&self) -> Result<NotificationCounts, ClientError> {
        let buf = self
            .request(|enc, id| enc.notification_mark_read(id, 0, true))
            .await?;
        decode_notification_counts(&buf)
    }

    /// Delete one notification; returns the counts afterwards.
    /// NOTIFICATION_NOT_FOUND when this user has no such notification.
    pub async fn notification_delete(
        &self,
        notification_id: u64,
    ) -> Result<NotificationCounts, ClientError> {
        let buf = self
            .request(|enc, id| enc.notification_delete(id, notification_id))
            .await?;
        decode_notification_counts(&buf)
    }
}
