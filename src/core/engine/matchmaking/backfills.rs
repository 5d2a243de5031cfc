//! Backfills: a running match's open slots, filled before new matches
//! form, one open backfill per lobby, withdrawn on request. Part of
//! [`Queues`]; never does I/O and never reads a clock.

use super::super::{Effect, Refusal, Reply};
use super::{fail, matcher, BackfillInfo, BackfillRequest, Queues, MAX_BACKFILLS};

impl Queues {
    /// Withdraws a lobby's open backfill; false when it has none.
    pub(super) fn cancel_backfill(&mut self, game: &str, lobby_id: &str) -> bool {
        let Some((&id, _)) = self
            .backfills
            .iter()
            .find(|(_, b)| &*b.game == game && &*b.lobby_id == lobby_id)
        else {
            return false;
        };
        if let Some(b) = self.backfills.remove(&id) {
            if let Some((_, life)) = self
                .queues
                .get_mut(&b.game)
                .and_then(|m| m.get_mut(&b.mode))
            {
                life.cancel_backfill(id);
            }
        }
        true
    }

    pub(super) fn backfill(&mut self, now: u64, b: BackfillRequest, out: &mut Vec<Effect>) {
        let known = self
            .queues
            .get(&*b.game)
            .is_some_and(|m| m.contains_key(&*b.mode));
        if !known {
            return fail(
                out,
                0,
                Refusal::MatchNotFound,
                format!("no matchmaking queue {}/{}", b.game, b.mode),
            );
        }
        let replaces = self
            .backfills
            .values()
            .any(|x| x.game == b.game && x.lobby_id == b.lobby_id);
        if !replaces && self.backfills.len() >= MAX_BACKFILLS {
            return fail(
                out,
                0,
                Refusal::RateLimited,
                format!("{MAX_BACKFILLS} backfills are open on this shard, the most allowed"),
            );
        }
        let id = self.next_ticket;
        let spec = matcher::BackfillSpec {
            id,
            region: b.region.clone(),
            rating: b.rating,
            open: b.open,
            attributes: b.attributes,
        };
        let life = match self
            .queues
            .get_mut(&*b.game)
            .and_then(|m| m.get_mut(&*b.mode))
        {
            Some((_, life)) => life,
            None => return,
        };
        if let Err(f) = life.backfill(now, spec) {
            return out.push(Effect::Fail {
                request_id: 0,
                failure: f,
            });
        }
        self.next_ticket += 1;
        // Accepted: it replaces the lobby's earlier backfill, if any.
        self.cancel_backfill(&b.game, &b.lobby_id);
        self.backfills.insert(
            id,
            BackfillInfo {
                game: b.game.clone(),
                mode: b.mode.clone(),
                lobby_id: b.lobby_id,
                match_id: b.match_id,
                region: b.region,
            },
        );
        out.push(Effect::Reply {
            request_id: 0,
            reply: Reply::Done,
        });
    }
}
