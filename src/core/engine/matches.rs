//! What a formed match becomes once it reaches its lobby's shard: the
//! lobby command that seats its players ([`lobby_command`]), what each
//! player hears ([`player_events`]), and, when the lobby refused them, the
//! command that ends their tickets ([`match_failed`]).
//!
//! The meeting point of the lobby and matchmaking engines, so neither
//! imports the other. Pure functions: no state, no I/O, no clock.

use std::sync::Arc;

use super::chat::Author;
use super::lobbies::{self, LobbySpec, Visibility};
use super::matchmaking::{self, EventKind, FormedMatch, MatchEvent};
use super::{Event, UserId};

/// The lobby command for a formed match: a backfill seats its players in
/// the running match's lobby ([`lobbies::Command::Assign`]); a new match
/// creates an invite-only lobby sized to its players, with chat, the
/// match's game, mode and region, its `match_id` in the settings, and the
/// teams assigned ([`lobbies::Command::Create`], request 0, no host).
pub fn lobby_command(matched: &FormedMatch, lobby_id: &Arc<str>) -> lobbies::Command {
    let assigned: Vec<(Author, Option<u8>)> = matched
        .players
        .iter()
        .map(|p| (p.author.clone(), Some(p.team)))
        .collect();
    if matched.backfill_lobby.is_some() {
        return lobbies::Command::Assign {
            lobby_id: lobby_id.clone(),
            players: assigned,
        };
    }
    let size = u16::try_from(matched.players.len()).unwrap_or(u16::MAX);
    let spec = LobbySpec {
        game: matched.game.to_string(),
        mode: matched.mode.to_string(),
        region: matched.region.to_string(),
        min: size,
        max: size,
        visibility: Visibility::InviteOnly,
        password: None,
        chat: true,
        settings: [("match_id".to_string(), matched.match_id.to_string())].into(),
    };
    lobbies::Command::Create {
        request_id: 0,
        lobby_id: lobby_id.clone(),
        host: None,
        spec,
        assigned,
    }
}

/// What the players of a formed match hear, one event per ticket and team
/// (a party's members share theirs), in the order the players come: MATCHED
/// with the lobby and the team, or, when the lobby refused them
/// (`refused`: the lobby's message), REMOVED with the reason.
pub fn player_events(
    matched: &FormedMatch,
    lobby_id: &Arc<str>,
    refused: Option<&str>,
) -> Vec<(Event, Vec<UserId>)> {
    let mut groups: Vec<(Arc<str>, u8, Vec<UserId>)> = Vec::new();
    for p in &matched.players {
        match groups
            .iter_mut()
            .find(|(r, t, _)| *r == p.request_id && *t == p.team)
        {
            Some(g) => g.2.push(p.author.id.clone()),
            None => groups.push((p.request_id.clone(), p.team, vec![p.author.id.clone()])),
        }
    }
    groups
        .into_iter()
        .map(|(request_id, team, users)| {
            let kind = if refused.is_some() {
                EventKind::Removed
            } else {
                EventKind::Matched
            };
            let mut event = MatchEvent::new(kind, request_id, matched.matched_at_ms);
            event.match_id = matched.match_id.clone();
            if let Some(why) = refused {
                event.reason = format!("the match's lobby could not be created: {why}");
            } else {
                event.lobby_id = lobby_id.clone();
                event.team = i16::from(team);
            }
            (Event::Matchmaking(Arc::new(event)), users)
        })
        .collect()
}

/// The command that tells the game's queues a formed match's lobby refused
/// its players: their tickets (each once; a ticket's players come together)
/// end, and a backfill into that lobby is withdrawn.
pub fn match_failed(matched: &FormedMatch) -> matchmaking::Command {
    let mut request_ids: Vec<Arc<str>> = matched
        .players
        .iter()
        .map(|p| p.request_id.clone())
        .collect();
    request_ids.dedup();
    matchmaking::Command::MatchFailed {
        game: matched.game.clone(),
        request_ids,
        backfill_lobby: matched.backfill_lobby.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use matchmaking::MatchedPlayer;

    fn player(id: &str, team: u8, ticket: &str) -> MatchedPlayer {
        MatchedPlayer {
            author: Author {
                id: UserId::from(id),
                username: Arc::from(id),
                display_name: Arc::from(id),
            },
            team,
            request_id: Arc::from(ticket),
        }
    }

    /// A 2v2: a party of two (ticket 1@arena) on team 0, two solos on team 1.
    fn two_v_two(backfill_lobby: Option<&str>) -> FormedMatch {
        FormedMatch {
            match_id: Arc::from("m7"),
            game: Arc::from("arena"),
            mode: Arc::from("duo"),
            region: Arc::from("eu"),
            teams: 2,
            players: vec![
                player("ann", 0, "1@arena"),
                player("ben", 0, "1@arena"),
                player("cid", 1, "2@arena"),
                player("dot", 1, "3@arena"),
            ],
            matched_at_ms: 1_700_000_000_000,
            spread: 40,
            allowed_spread: 100,
            backfill_lobby: backfill_lobby.map(Arc::from),
        }
    }

    fn events(list: &[(Event, Vec<UserId>)]) -> Vec<(&MatchEvent, Vec<&str>)> {
        list.iter()
            .map(|(event, users)| {
                let Event::Matchmaking(e) = event else {
                    panic!("not a matchmaking event: {event:?}");
                };
                (&**e, users.iter().map(|u| &**u).collect())
            })
            .collect()
    }

    #[test]
    fn a_new_match_creates_an_invite_only_lobby_sized_to_its_players() {
        let lobby_id: Arc<str> = Arc::from("m00000000000abc");
        let lobbies::Command::Create {
            request_id,
            lobby_id: id,
            host,
            spec,
            assigned,
        } = lobby_command(&two_v_two(None), &lobby_id)
        else {
            panic!("a new match creates its lobby");
        };
        assert_eq!((request_id, &id, host), (0, &lobby_id, None));
        assert_eq!(
            spec,
            LobbySpec {
                game: "arena".into(),
                mode: "duo".into(),
                region: "eu".into(),
                min: 4,
                max: 4,
                visibility: Visibility::InviteOnly,
                password: None,
                chat: true,
                settings: [("match_id".to_string(), "m7".to_string())].into(),
            }
        );
        let teams: Vec<(&str, Option<u8>)> = assigned.iter().map(|(a, t)| (&*a.id, *t)).collect();
        assert_eq!(
            teams,
            vec![
                ("ann", Some(0)),
                ("ben", Some(0)),
                ("cid", Some(1)),
                ("dot", Some(1))
            ]
        );
    }

    #[test]
    fn a_backfill_assigns_its_players_to_the_running_lobby() {
        let lobby_id: Arc<str> = Arc::from("running");
        let mut matched = two_v_two(Some("running"));
        matched.players.truncate(1);
        let lobbies::Command::Assign {
            lobby_id: id,
            players,
        } = lobby_command(&matched, &lobby_id)
        else {
            panic!("a backfill assigns");
        };
        assert_eq!(id, lobby_id);
        assert_eq!(players.len(), 1);
        assert_eq!((&*players[0].0.id, players[0].1), ("ann", Some(0)));
    }

    #[test]
    fn a_lobby_of_more_than_u16_max_players_is_capped() {
        let mut matched = two_v_two(None);
        let one = matched.players[0].clone();
        matched.players = vec![one; usize::from(u16::MAX) + 1];
        let lobbies::Command::Create { spec, .. } = lobby_command(&matched, &Arc::from("x")) else {
            panic!("a new match creates its lobby");
        };
        assert_eq!((spec.min, spec.max), (u16::MAX, u16::MAX));
    }

    #[test]
    fn matched_players_hear_one_event_per_ticket_and_team() {
        let lobby_id: Arc<str> = Arc::from("L1");
        let list = player_events(&two_v_two(None), &lobby_id, None);
        let seen = events(&list);
        assert_eq!(seen.len(), 3, "the party shares one event");
        let who: Vec<_> = seen
            .iter()
            .map(|(e, u)| (&*e.request_id, u.clone()))
            .collect();
        assert_eq!(
            who,
            vec![
                ("1@arena", vec!["ann", "ben"]),
                ("2@arena", vec!["cid"]),
                ("3@arena", vec!["dot"])
            ]
        );
        for ((e, _), team) in seen.iter().zip([0, 1, 1]) {
            assert_eq!(e.kind, EventKind::Matched);
            assert_eq!(&*e.match_id, "m7");
            assert_eq!(&*e.lobby_id, "L1");
            assert_eq!(e.team, team);
            assert_eq!(e.reason, "");
            assert_eq!(e.at_ms, 1_700_000_000_000);
            assert_eq!(e.ticket, None);
        }
    }

    #[test]
    fn a_ticket_split_over_two_teams_hears_once_per_team() {
        let mut matched = two_v_two(None);
        matched.players[1].team = 1;
        let list = player_events(&matched, &Arc::from("L1"), None);
        let seen = events(&list);
        let who: Vec<_> = seen
            .iter()
            .map(|(e, u)| (&*e.request_id, e.team, u.clone()))
            .collect();
        assert_eq!(
            who,
            vec![
                ("1@arena", 0, vec!["ann"]),
                ("1@arena", 1, vec!["ben"]),
                ("2@arena", 1, vec!["cid"]),
                ("3@arena", 1, vec!["dot"])
            ]
        );
    }

    #[test]
    fn a_refused_lobby_removes_the_players_with_its_reason() {
        let list = player_events(&two_v_two(None), &Arc::from("L1"), Some("L1 is full"));
        let seen = events(&list);
        assert_eq!(seen.len(), 3);
        for (e, _) in seen {
            assert_eq!(e.kind, EventKind::Removed);
            assert_eq!(&*e.match_id, "m7");
            assert_eq!(&*e.lobby_id, "", "no lobby to join");
            assert_eq!(e.team, -1);
            assert_eq!(
                e.reason,
                "the match's lobby could not be created: L1 is full"
            );
        }
    }

    #[test]
    fn a_failed_match_ends_each_ticket_once_and_its_backfill() {
        let matchmaking::Command::MatchFailed {
            game,
            request_ids,
            backfill_lobby,
        } = match_failed(&two_v_two(Some("running")))
        else {
            panic!("MatchFailed");
        };
        assert_eq!(&*game, "arena");
        let ids: Vec<&str> = request_ids.iter().map(|r| &**r).collect();
        assert_eq!(ids, vec!["1@arena", "2@arena", "3@arena"]);
        assert_eq!(backfill_lobby.as_deref(), Some("running"));
        let matchmaking::Command::MatchFailed { backfill_lobby, .. } =
            match_failed(&two_v_two(None))
        else {
            panic!("MatchFailed");
        };
        assert_eq!(backfill_lobby, None);
    }
}
