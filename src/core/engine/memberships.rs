//! The lobby index of the users one shard owns: which lobbies each user is
//! in, with their game and the lobby version each membership began at,
//! oldest first. It keeps a user to `lobbies_per_game` lobbies of one game
//! and [`MAX_LOBBIES_PER_USER`] in all: a join past either cap supersedes
//! the oldest, which the caller then takes the user out of.
//!
//! Only an index, never the authority: a lobby's own engine decides who
//! is in it. No I/O, no clock.

use std::collections::HashMap;
use std::sync::Arc;

use super::UserId;

/// Lobbies one user may be in at once, over all games; joining one more
/// leaves the oldest.
pub const MAX_LOBBIES_PER_USER: usize = 16;

/// One membership: (lobby, game, the lobby's version when it began).
type Membership = (Arc<str>, Arc<str>, u64);

/// The lobbies of each user this shard owns, oldest first.
#[derive(Debug)]
pub struct UserLobbies {
    lobbies_per_game: usize,
    by_user: HashMap<UserId, Vec<Membership>>,
}

impl UserLobbies {
    /// An empty index keeping each user to `lobbies_per_game` lobbies of
    /// one game.
    pub fn new(lobbies_per_game: usize) -> Self {
        Self {
            lobbies_per_game,
            by_user: HashMap::new(),
        }
    }

    /// `user` joined `lobby_id` (of `game`) at `since_version`; a membership
    /// of theirs in that lobby already is replaced. Returns the memberships
    /// this one supersedes, each with the version it began at, oldest
    /// first: the oldest of the same game past `lobbies_per_game`, then the
    /// oldest others past [`MAX_LOBBIES_PER_USER`] (never the new one).
    pub fn joined(
        &mut self,
        user: &UserId,
        lobby_id: Arc<str>,
        game: Arc<str>,
        since_version: u64,
    ) -> Vec<(Arc<str>, u64)> {
        let list = self.by_user.entry(user.clone()).or_default();
        list.retain(|(l, _, _)| *l != lobby_id);
        list.push((lobby_id.clone(), game.clone(), since_version));
        let same = list.iter().filter(|(_, g, _)| *g == game).count();
        let mut extra_same = same.saturating_sub(self.lobbies_per_game);
        let mut extra_all = list.len().saturating_sub(MAX_LOBBIES_PER_USER);
        let mut superseded = Vec::new();
        list.retain(|(l, g, v)| {
            let drop = if *g == game && extra_same > 0 {
                extra_same -= 1;
                true
            } else if extra_all > 0 && *l != lobby_id {
                extra_all -= 1;
                true
            } else {
                false
            };
            if drop {
                superseded.push((l.clone(), *v));
            }
            !drop
        });
        if list.is_empty() {
            self.by_user.remove(user);
        }
        superseded
    }

    /// `user` left `lobby_id` (or was never indexed in it).
    pub fn left(&mut self, user: &str, lobby_id: &str) {
        if let Some(list) = self.by_user.get_mut(user) {
            list.retain(|(l, _, _)| &**l != lobby_id);
            if list.is_empty() {
                self.by_user.remove(user);
            }
        }
    }

    /// The lobbies `user` is in, oldest first.
    pub fn lobbies_of<'a>(&'a self, user: &str) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        self.by_user
            .get(user)
            .into_iter()
            .flatten()
            .map(|(lobby_id, _, _)| lobby_id)
    }

    /// How many users are in at least one lobby (no user is kept without).
    pub fn users(&self) -> usize {
        self.by_user.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(id: &str) -> UserId {
        UserId::from(id)
    }

    fn lobbies(index: &UserLobbies, who: &str) -> Vec<String> {
        index.lobbies_of(who).map(|l| l.to_string()).collect()
    }

    fn superseded(list: Vec<(Arc<str>, u64)>) -> Vec<(String, u64)> {
        list.into_iter().map(|(l, v)| (l.to_string(), v)).collect()
    }

    #[test]
    fn one_lobby_per_game_the_oldest_gives_way() {
        let mut index = UserLobbies::new(1);
        let ann = user("ann");
        assert!(index
            .joined(&ann, "a1".into(), "arena".into(), 3)
            .is_empty());
        assert!(index.joined(&ann, "k1".into(), "kart".into(), 5).is_empty());
        assert_eq!(
            superseded(index.joined(&ann, "a2".into(), "arena".into(), 9)),
            vec![("a1".to_string(), 3)],
            "the superseded membership carries the version it began at"
        );
        assert_eq!(lobbies(&index, "ann"), vec!["k1", "a2"]);
    }

    #[test]
    fn up_to_the_per_game_cap_nothing_is_superseded() {
        let mut index = UserLobbies::new(3);
        let ann = user("ann");
        for (i, lobby) in ["a1", "a2", "a3"].into_iter().enumerate() {
            assert!(index
                .joined(&ann, lobby.into(), "arena".into(), i as u64)
                .is_empty());
        }
        assert_eq!(
            superseded(index.joined(&ann, "a4".into(), "arena".into(), 7)),
            vec![("a1".to_string(), 0)],
            "one over the cap supersedes the oldest"
        );
        assert_eq!(lobbies(&index, "ann"), vec!["a2", "a3", "a4"]);
    }

    #[test]
    fn rejoining_a_lobby_replaces_its_membership() {
        let mut index = UserLobbies::new(1);
        let ann = user("ann");
        index.joined(&ann, "a1".into(), "arena".into(), 3);
        assert!(
            index
                .joined(&ann, "a1".into(), "arena".into(), 8)
                .is_empty(),
            "a lobby never supersedes itself"
        );
        index.joined(&ann, "k1".into(), "kart".into(), 1);
        assert_eq!(
            superseded(index.joined(&ann, "a2".into(), "arena".into(), 2)),
            vec![("a1".to_string(), 8)],
            "the newer membership is the one kept"
        );
    }

    #[test]
    fn sixteen_lobbies_in_all_the_oldest_gives_way() {
        let mut index = UserLobbies::new(MAX_LOBBIES_PER_USER + 4);
        let ann = user("ann");
        for i in 0..MAX_LOBBIES_PER_USER {
            let game = if i % 2 == 0 { "arena" } else { "kart" };
            assert!(index
                .joined(&ann, format!("l{i}").into(), game.into(), i as u64)
                .is_empty());
        }
        assert_eq!(index.lobbies_of("ann").count(), MAX_LOBBIES_PER_USER);
        assert_eq!(
            superseded(index.joined(&ann, "new".into(), "chess".into(), 99)),
            vec![("l0".to_string(), 0)],
            "the seventeenth supersedes the oldest, whatever its game"
        );
        let now = lobbies(&index, "ann");
        assert_eq!(now.len(), MAX_LOBBIES_PER_USER);
        assert_eq!(now.first().map(String::as_str), Some("l1"));
        assert_eq!(now.last().map(String::as_str), Some("new"));
    }

    #[test]
    fn leaving_forgets_the_lobby_and_a_user_without_any() {
        let mut index = UserLobbies::new(2);
        let (ann, ben) = (user("ann"), user("ben"));
        index.joined(&ann, "a1".into(), "arena".into(), 1);
        index.joined(&ann, "a2".into(), "arena".into(), 2);
        index.joined(&ben, "a1".into(), "arena".into(), 3);
        assert_eq!(index.users(), 2);
        index.left("ann", "a1");
        assert_eq!(lobbies(&index, "ann"), vec!["a2"]);
        assert_eq!(lobbies(&index, "ben"), vec!["a1"], "ben's stays");
        index.left("ann", "nope");
        index.left("zed", "a1");
        assert_eq!(lobbies(&index, "ann"), vec!["a2"]);
        index.left("ann", "a2");
        assert_eq!(index.lobbies_of("ann").count(), 0);
        assert_eq!(index.users(), 1, "a user with no lobby is not kept");
    }

    #[derive(Debug, Clone)]
    enum Step {
        Join { user: u8, lobby: u8 },
        Leave { user: u8, lobby: u8 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u8..3, 0u8..64).prop_map(|(user, lobby)| Step::Join { user, lobby }),
            1 => (0u8..3, 0u8..64).prop_map(|(user, lobby)| Step::Leave { user, lobby }),
        ]
    }

    proptest! {
        #[test]
        fn the_caps_hold_and_the_latest_join_is_kept(
            per_game in 1usize..6,
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut index = UserLobbies::new(per_game);
            // Eight games: enough that the cap over all games comes into play.
            let game_of = |lobby: u8| Arc::<str>::from(format!("g{}", lobby % 8));
            let mut version = 0u64;
            for step in steps {
                match step {
                    Step::Join { user: u, lobby } => {
                        version += 1;
                        let who = user(&format!("u{u}"));
                        let id: Arc<str> = Arc::from(format!("l{lobby}"));
                        let before: Vec<Arc<str>> = index.lobbies_of(&who).cloned().collect();
                        let gone = index.joined(&who, id.clone(), game_of(lobby), version);
                        let after: Vec<Arc<str>> = index.lobbies_of(&who).cloned().collect();
                        prop_assert_eq!(after.last(), Some(&id), "the latest joined lobby is kept, newest last");
                        for (old, _) in &gone {
                            prop_assert!(before.contains(old), "only what was there is superseded");
                            prop_assert!(!after.contains(old), "a superseded lobby is gone");
                            prop_assert_ne!(old, &id, "never the lobby just joined");
                        }
                    }
                    Step::Leave { user: u, lobby } => {
                        let (who, id) = (format!("u{u}"), format!("l{lobby}"));
                        index.left(&who, &id);
                        let still = index.lobbies_of(&who).any(|l| **l == *id);
                        prop_assert!(!still, "a lobby left is gone");
                    }
                }
                let mut indexed = 0;
                for u in 0..3u8 {
                    let mine: Vec<&Arc<str>> = index.lobbies_of(&format!("u{u}")).collect();
                    indexed += usize::from(!mine.is_empty());
                    prop_assert!(mine.len() <= MAX_LOBBIES_PER_USER, "at most 16 in all");
                    let mut unique = mine.clone();
                    unique.sort();
                    unique.dedup();
                    prop_assert_eq!(unique.len(), mine.len(), "a lobby once");
                    for g in 0..8u8 {
                        let same = mine
                            .iter()
                            .filter(|l| l[1..].parse::<u8>().map(|n| n % 8) == Ok(g))
                            .count();
                        prop_assert!(same <= per_game, "at most {} of one game", per_game);
                    }
                }
                prop_assert_eq!(index.users(), indexed, "a user without lobbies is not kept");
            }
        }
    }
}
