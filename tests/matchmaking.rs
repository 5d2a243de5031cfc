//! Matchmaking over real sockets with the SDK: two-, ten- and party-based
//! matches ending in a lobby with every player told, the ready check with a
//! decliner, cancel, timeout, status subscriptions, ratings from the token
//! and the game backend (kept across a restart), backfill, attributes and
//! roles, queues reloaded without a restart, and every refusal of the
//! issue's bad-input list.

mod common;

use std::time::Duration;

use common::*;
use huddle_client::{
    Client, ErrorCode, Event, EventStream, MatchRequest, MatchmakingEvent, MatchmakingEventKind,
    NewLobby, TicketState,
};

async fn gateway() -> TestGateway {
    TestGateway::start_with(|c| {
        c.matchmaking.tick_ms = 50;
        let mut ready = queue("ranked", 2, 1);
        ready.ready_check_ms = Some(10_000);
        let mut lonely = queue("lonely", 2, 1);
        lonely.timeout_ms = 600;
        let mut maps = queue("maps", 2, 1);
        maps.attributes = vec![huddle::ops::config::AttributeConfig {
            name: "map".into(),
            rule: huddle::ops::config::AttributeRuleConfig::Match,
            within: 0.0,
        }];
        maps.roles = [("sniper".to_string(), 1)].into();
        c.matchmaking.queues = vec![
            queue("1v1", 2, 1),
            queue("5v5", 2, 5),
            queue("2v2", 2, 2),
            ready,
            lonely,
            maps,
        ];
    })
    .await
}

/// The next matchmaking event of `kind`, skipping everything else.
async fn mm_event(events: &mut EventStream, kind: MatchmakingEventKind) -> MatchmakingEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap_or_else(|_| panic!("hang guard: no {kind:?} event came"))
            .expect("stream open");
        if let Event::Matchmaking { event, .. } = ev {
            if event.kind == kind {
                return event;
            }
        }
    }
}

fn code(err: huddle_client::ClientError) -> ErrorCode {
    err.code()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"))
}

async fn rated(gw: &TestGateway, url: &str, user: &str, mu: f64) -> (Client, EventStream) {
    let mut c = claims(user);
    c.ratings.insert(
        "arena".into(),
        huddle::edge::auth::RatingClaim { mu, sigma: 50.0 },
    );
    gw.client_with(url, &c).await
}

const EU: &[(&str, u32)] = &[("eu", 30), ("us", 120)];

#[tokio::test]
async fn two_players_are_matched_into_a_lobby_over_both_transports() {
    let gw = gateway().await;
    for url in gw.urls() {
        let t = if url.starts_with("quic") { "q" } else { "w" };
        let (a, mut a_ev) = rated(&gw, &url, &format!("ana-{t}"), 1500.0).await;
        let (b, mut b_ev) = rated(&gw, &url, &format!("ben-{t}"), 1580.0).await;
        let ta = a.matchmaking_start("arena", "1v1", EU).await.unwrap();
        assert_eq!(ta.state, TicketState::SEARCHING);
        assert_eq!(ta.players, vec![format!("ana-{t}")]);
        assert!(ta.request_id.ends_with("@arena"), "{}", ta.request_id);
        let tb = b.matchmaking_start("arena", "1v1", EU).await.unwrap();

        let ma = mm_event(&mut a_ev, MatchmakingEventKind::MATCHED).await;
        let mb = mm_event(&mut b_ev, MatchmakingEventKind::MATCHED).await;
        assert_eq!(ma.request_id, ta.request_id);
        assert_eq!(mb.request_id, tb.request_id);
        assert_eq!(ma.lobby_id, mb.lobby_id, "one lobby for the match");
        assert_eq!(ma.match_id, mb.match_id);
        assert!(ma.at_ms > 0);
        let mut teams = [ma.team.unwrap(), mb.team.unwrap()];
        teams.sort_unstable();
        assert_eq!(teams, [0, 1], "one player per team");

        // The lobby exists with both players assigned to their teams.
        let lobby = a.lobby_get(&ma.lobby_id).await.unwrap();
        assert_eq!((lobby.game.as_str(), lobby.mode.as_str()), ("arena", "1v1"));
        assert_eq!(lobby.region, "eu", "the region both play best in");
        assert_eq!(lobby.members.len(), 2);
        for m in &lobby.members {
            let want = if m.user.id == format!("ana-{t}") {
                ma.team
            } else {
                mb.team
            };
            assert_eq!(m.team, want);
        }

        // The ticket is over: its status says so, and a late cancel is
        // refused with the outcome.
        let s = a.matchmaking_status(&ta.request_id).await.unwrap();
        assert_eq!(s.state, TicketState::MATCHED);
        let late = a.matchmaking_cancel(&ta.request_id).await.unwrap_err();
        assert_eq!(code(late), ErrorCode::CANCEL_ERROR);
        // A new ticket for the same game is allowed once the last is over.
        let again = a.matchmaking_start("arena", "1v1", EU).await.unwrap();
        a.matchmaking_cancel(&again.request_id).await.unwrap();
    }
}

#[tokio::test]
async fn ten_players_form_two_full_balanced_teams_in_one_lobby() {
    let gw = gateway().await;
    let url = gw.ws_url.clone();
    let mut players = Vec::new();
    for i in 0..10 {
        let user = format!("p{i}");
        let (c, ev) = rated(&gw, &url, &user, 1400.0 + 20.0 * f64::from(i)).await;
        players.push((user, c, ev));
    }
    for (_, c, _) in &players {
        c.matchmaking_start("arena", "5v5", &[("us", 40)])
            .await
            .unwrap();
    }
    let mut lobby_ids = Vec::new();
    let mut per_team = [0; 2];
    let mut sums = [0.0; 2];
    for (i, (_, _, ev)) in players.iter_mut().enumerate() {
        let m = mm_event(ev, MatchmakingEventKind::MATCHED).await;
        lobby_ids.push(m.lobby_id);
        let team = usize::from(m.team.unwrap());
        per_team[team] += 1;
        sums[team] += 1400.0 + 20.0 * i as f64;
    }
    lobby_ids.dedup();
    assert_eq!(lobby_ids.len(), 1, "everyone is in the same lobby");
    assert_eq!(per_team, [5, 5], "every team exactly full");
    assert!(
        (sums[0] - sums[1]).abs() <= 40.0,
        "teams balanced by summed rating: {sums:?}"
    );
    let lobby = players[0].1.lobby_get(&lobby_ids[0]).await.unwrap();
    assert_eq!(lobby.members.len(), 10);
    assert_eq!((lobby.min, lobby.max), (10, 10));
    assert_eq!(lobby.region, "us");
}

#[tokio::test]
async fn a_lobby_party_queues_together_and_is_never_split() {
    let gw = gateway().await;
    let url = gw.ws_url.clone();
    let (host, mut host_ev) = rated(&gw, &url, "host", 1500.0).await;
    let (mate, mut mate_ev) = rated(&gw, &url, "mate", 1520.0).await;
    let (x, mut x_ev) = rated(&gw, &url, "solo-x", 1490.0).await;
    let (y, mut y_ev) = rated(&gw, &url, "solo-y", 1530.0).await;
    let (z, _z_ev) = rated(&gw, &url, "solo-z", 1530.0).await;
    let party = host
        .lobby_create(&NewLobby::new("arena", "party", "eu", 1, 4))
        .await
        .unwrap();
    mate.lobby_join(&party.id, "").await.unwrap();

    // Only the host may queue the lobby.
    let refused = mate
        .matchmaking_start_party(&party.id, "arena", "2v2", EU)
        .await
        .unwrap_err();
    assert_eq!(code(refused), ErrorCode::NOT_HOST);

    let ticket = host
        .matchmaking_start_party(&party.id, "arena", "2v2", EU)
        .await
        .unwrap();
    assert_eq!(ticket.players, vec!["host".to_string(), "mate".to_string()]);
    let started = mm_event(&mut mate_ev, MatchmakingEventKind::STARTED).await;
    assert_eq!(
        started.request_id, ticket.request_id,
        "the member learns the ticket"
    );
    // The member may follow and cancel the shared ticket, and may not start
    // another for the same game meanwhile.
    mate.matchmaking_subscribe(&ticket.request_id)
        .await
        .unwrap();
    let dup = mate
        .matchmaking_start("arena", "1v1", EU)
        .await
        .unwrap_err();
    assert_eq!(code(dup), ErrorCode::MATCHMAKING_ERROR);

    x.matchmaking_start("arena", "2v2", EU).await.unwrap();
    y.matchmaking_start("arena", "2v2", EU).await.unwrap();
    let h = mm_event(&mut host_ev, MatchmakingEventKind::MATCHED).await;
    let m = mm_event(&mut mate_ev, MatchmakingEventKind::MATCHED).await;
    let mx = mm_event(&mut x_ev, MatchmakingEventKind::MATCHED).await;
    let my = mm_event(&mut y_ev, MatchmakingEventKind::MATCHED).await;
    assert_eq!(h.team, m.team, "the party stays on one team");
    assert_eq!(h.request_id, m.request_id);
    assert_eq!(mx.team, my.team, "so the two solos form the other");
    assert_ne!(h.team, mx.team);
    assert_eq!(h.lobby_id, mx.lobby_id);

    // A party larger than a team is refused and changes nothing.
    let big = z
        .lobby_create(&NewLobby::new("arena", "party", "eu", 1, 4))
        .await
        .unwrap();
    let (w1, _) = gw.client(&url, "w1").await;
    let (w2, _) = gw.client(&url, "w2").await;
    w1.lobby_join(&big.id, "").await.unwrap();
    w2.lobby_join(&big.id, "").await.unwrap();
    let too_big = z
        .matchmaking_start_party(&big.id, "arena", "2v2", EU)
        .await
        .unwrap_err();
    assert_eq!(code(too_big), ErrorCode::INVALID_ARGUMENT);
    let alone = w1.matchmaking_start("arena", "2v2", EU).await.unwrap();
    assert_eq!(
        alone.players,
        vec!["w1".to_string()],
        "w1 has no ticket yet"
    );
}

#[tokio::test]
async fn a_ready_check_with_a_decliner_requeues_the_others_with_their_waiting_time() {
    let gw = gateway().await;
    let url = gw.quic_url.clone();
    let (a, mut a_ev) = rated(&gw, &url, "acc", 1500.0).await;
    let (b, mut b_ev) = rated(&gw, &url, "dec", 1510.0).await;
    let (c, mut c_ev) = rated(&gw, &url, "late", 1490.0).await;
    let ta = a.matchmaking_start("arena", "ranked", EU).await.unwrap();
    let tb = b.matchmaking_start("arena", "ranked", EU).await.unwrap();
    let fa = mm_event(&mut a_ev, MatchmakingEventKind::FOUND).await;
    let fb = mm_event(&mut b_ev, MatchmakingEventKind::FOUND).await;
    assert_eq!(fa.match_id, fb.match_id);
    assert!(fa.deadline_ms > fa.at_ms, "a deadline to answer by");
    // Cancelling is refused once a match is found: decline it instead.
    let cancel = a.matchmaking_cancel(&ta.request_id).await.unwrap_err();
    assert_eq!(code(cancel), ErrorCode::CANCEL_ERROR);

    a.matchmaking_accept(&ta.request_id).await.unwrap();
    let declined = b.matchmaking_decline(&tb.request_id).await.unwrap();
    assert_eq!(declined.state, TicketState::REMOVED);
    let removed = mm_event(&mut b_ev, MatchmakingEventKind::REMOVED).await;
    assert!(removed.reason.contains("declined"), "{}", removed.reason);
    let requeued = mm_event(&mut a_ev, MatchmakingEventKind::REQUEUED).await;
    assert_eq!(requeued.request_id, ta.request_id);
    let status = a.matchmaking_status(&ta.request_id).await.unwrap();
    assert_eq!(status.state, TicketState::SEARCHING);
    assert!(status.waited_ms >= requeued.at_ms as u64 - fa.at_ms as u64);

    // The next player completes the match; both accept.
    let tc = c.matchmaking_start("arena", "ranked", EU).await.unwrap();
    mm_event(&mut a_ev, MatchmakingEventKind::FOUND).await;
    mm_event(&mut c_ev, MatchmakingEventKind::FOUND).await;
    a.matchmaking_accept(&ta.request_id).await.unwrap();
    c.matchmaking_accept(&tc.request_id).await.unwrap();
    let ma = mm_event(&mut a_ev, MatchmakingEventKind::MATCHED).await;
    let mc = mm_event(&mut c_ev, MatchmakingEventKind::MATCHED).await;
    assert_eq!(ma.lobby_id, mc.lobby_id);
    // The decliner's ticket is over and answers say so.
    let over = b.matchmaking_accept(&tb.request_id).await.unwrap_err();
    assert_eq!(code(over), ErrorCode::MATCHMAKING_ERROR);
}

#[tokio::test]
async fn cancel_reaches_every_device_and_a_lonely_ticket_times_out() {
    let gw = gateway().await;
    let url = gw.ws_url.clone();
    let (phone, mut phone_ev) = gw.client(&url, "solo").await;
    let (_pc, mut pc_ev) = gw.client(&url, "solo").await;
    let t = phone.matchmaking_start("arena", "1v1", EU).await.unwrap();
    let cancelled = phone.matchmaking_cancel(&t.request_id).await.unwrap();
    assert_eq!(cancelled.state, TicketState::CANCELLED);
    for ev in [&mut phone_ev, &mut pc_ev] {
        let e = mm_event(ev, MatchmakingEventKind::CANCELLED).await;
        assert_eq!(e.request_id, t.request_id);
    }
    let twice = phone.matchmaking_cancel(&t.request_id).await.unwrap_err();
    assert_eq!(code(twice), ErrorCode::CANCEL_ERROR);

    let t = phone
        .matchmaking_start("arena", "lonely", EU)
        .await
        .unwrap();
    for ev in [&mut phone_ev, &mut pc_ev] {
        let e = mm_event(ev, MatchmakingEventKind::TIMEOUT).await;
        assert_eq!(e.request_id, t.request_id);
    }
    let s = phone.matchmaking_status(&t.request_id).await.unwrap();
    assert_eq!(s.state, TicketState::TIMED_OUT);
    let follow = phone
        .matchmaking_subscribe(&t.request_id)
        .await
        .unwrap_err();
    assert_eq!(code(follow), ErrorCode::SUBSCRIPTION_ERROR);
}

#[tokio::test]
async fn subscribers_get_status_with_windows_position_and_waiting_time() {
    let gw = gateway().await;
    let url = gw.ws_url.clone();
    let (a, mut a_ev) = gw.client(&url, "watcher").await;
    let (a2, mut a2_ev) = gw.client(&url, "watcher").await;
    let t = a.matchmaking_start("arena", "5v5", EU).await.unwrap();
    let followed = a2.matchmaking_subscribe(&t.request_id).await.unwrap();
    assert_eq!(followed.state, TicketState::SEARCHING);
    for ev in [&mut a_ev, &mut a2_ev] {
        let s = mm_event(ev, MatchmakingEventKind::STATUS).await;
        let ticket = s.ticket.expect("status carries the ticket");
        assert!(ticket.waited_ms >= 1_000, "{ticket:?}");
        assert_eq!(ticket.spread, 200);
        assert!(ticket.latency_ms >= 100, "the latency window widens");
        assert_eq!(ticket.ahead_band, 0);
    }
    a2.matchmaking_unsubscribe(&t.request_id).await.unwrap();
    a.matchmaking_cancel(&t.request_id).await.unwrap();
}

#[tokio::test]
async fn every_bad_request_gets_its_code_and_changes_nothing() {
    let gw = gateway().await;
    let url = gw.ws_url.clone();
    let (a, _a_ev) = gw.client(&url, "alice").await;
    let (b, _b_ev) = gw.client(&url, "bob").await;
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, u32)>, ErrorCode);
    let cases: Vec<Case> = vec![
        ("arena", "9v9", EU.to_vec(), ErrorCode::MATCH_NOT_FOUND),
        ("chess", "1v1", EU.to_vec(), ErrorCode::MATCH_NOT_FOUND),
        (
            "arena",
            "1v1",
            vec![("mars", 30)],
            ErrorCode::INVALID_ARGUMENT,
        ),
        ("arena", "1v1", vec![], ErrorCode::INVALID_ARGUMENT),
        ("arena", "1v1", vec![("eu", 0)], ErrorCode::INVALID_ARGUMENT),
        (
            "arena",
            "1v1",
            vec![("eu", 60_000)],
            ErrorCode::INVALID_ARGUMENT,
        ),
        (
            "arena",
            "1v1",
            vec![("eu", 30), ("eu", 40)],
            ErrorCode::INVALID_ARGUMENT,
        ),
        ("", "1v1", EU.to_vec(), ErrorCode::INVALID_ARGUMENT),
    ];
    for (game, mode, lat, want) in cases {
        let err = a.matchmaking_start(game, mode, &lat).await.unwrap_err();
        let msg = err.to_string();
        assert_eq!(code(err), want, "{game}/{mode} {lat:?}: {msg}");
    }
    let t = a.matchmaking_start("arena", "5v5", EU).await.unwrap();
    let second = a.matchmaking_start("arena", "1v1", EU).await.unwrap_err();
    assert_eq!(
        code(second),
        ErrorCode::MATCHMAKING_ERROR,
        "one ticket per game"
    );
    for err in [
        b.matchmaking_cancel(&t.request_id).await.unwrap_err(),
        b.matchmaking_subscribe(&t.request_id).await.unwrap_err(),
        b.matchmaking_status(&t.request_id).await.unwrap_err(),
        a.matchmaking_cancel("not-a-ticket").await.unwrap_err(),
        a.matchmaking_cancel("999@arena").await.unwrap_err(),
    ] {
        assert_eq!(code(err), ErrorCode::MATCH_NOT_FOUND);
    }
    let no_check = a.matchmaking_accept(&t.request_id).await.unwrap_err();
    assert_eq!(code(no_check), ErrorCode::MATCHMAKING_ERROR);
    // Nothing changed: the ticket still searches, owned by alice alone.
    let s = a.matchmaking_status(&t.request_id).await.unwrap();
    assert_eq!(s.state, TicketState::SEARCHING);
    assert_eq!(s.players, vec!["alice".to_string()]);
}

#[tokio::test]
async fn ratings_from_the_backend_and_the_token_decide_who_meets() {
    let gw = gateway().await;
    let url = gw.ws_url.clone();
    let set = admin_post(
        &gw,
        "/v1/ratings",
        r#"{"game":"arena","ratings":[{"user_id":"low","mu":1000},{"user_id":"high","mu":3000,"sigma":40}]}"#,
    )
    .await;
    assert!(set.contains("\"set\":2"), "{set}");
    let bad = admin_post(
        &gw,
        "/v1/ratings",
        r#"{"game":"arena","ratings":[{"user_id":"x","mu":-1,"sigma":-5}]}"#,
    )
    .await;
    assert!(bad.starts_with("HTTP/1.0 400"), "{bad}");
    // The backend's rating wins over the token's.
    let (low, mut low_ev) = rated(&gw, &url, "low", 2990.0).await;
    let (high, mut high_ev) = gw.client(&url, "high").await;
    let (near, mut near_ev) = rated(&gw, &url, "near", 1100.0).await;
    let tl = low.matchmaking_start("arena", "1v1", EU).await.unwrap();
    let th = high.matchmaking_start("arena", "1v1", EU).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = low.matchmaking_status(&tl.request_id).await.unwrap();
    assert_eq!(s.state, TicketState::SEARCHING, "1000 and 3000 never meet");
    near.matchmaking_start("arena", "1v1", EU).await.unwrap();
    let a = mm_event(&mut low_ev, MatchmakingEventKind::MATCHED).await;
    let b = mm_event(&mut near_ev, MatchmakingEventKind::MATCHED).await;
    assert_eq!(a.lobby_id, b.lobby_id, "1000 meets 1100");
    let s = high.matchmaking_status(&th.request_id).await.unwrap();
    assert_eq!(s.state, TicketState::SEARCHING);
    high.matchmaking_cancel(&th.request_id).await.unwrap();
    mm_event(&mut high_ev, MatchmakingEventKind::CANCELLED).await;
}

#[tokio::test]
async fn queues_reload_without_a_restart() {
    let gw = gateway().await;
    let url = gw.ws_url.clone();
    let (a, mut a_ev) = gw.client(&url, "early").await;
    let refused = a.matchmaking_start("arena", "3v3", EU).await.unwrap_err();
    assert_eq!(code(refused), ErrorCode::MATCH_NOT_FOUND);
    let waiting = a.matchmaking_start("arena", "5v5", EU).await.unwrap();

    // A bad set is refused whole and changes nothing.
    let mut bad = queue("3v3", 2, 3);
    bad.teams = 0;
    let body = serde_json::json!({ "queues": [bad] }).to_string();
    let answer = admin_send(&gw, "PUT", "/v1/matchmaking/queues", &body).await;
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(answer.contains("teams"), "{answer}");
    let s = a.matchmaking_status(&waiting.request_id).await.unwrap();
    assert_eq!(s.state, TicketState::SEARCHING);

    // The new set adds 3v3, widens 5v5's spread and drops the rest.
    let mut wide = queue("5v5", 2, 5);
    wide.spread.start = 400.0;
    wide.spread.max = 400.0;
    let body = serde_json::json!({ "queues": [queue("3v3", 2, 3), wide] }).to_string();
    let answer = admin_send(&gw, "PUT", "/v1/matchmaking/queues", &body).await;
    assert!(answer.contains("\"queues\":2"), "{answer}");
    let s = a.matchmaking_status(&waiting.request_id).await.unwrap();
    assert_eq!(
        s.state,
        TicketState::SEARCHING,
        "the waiting ticket kept its place"
    );
    assert_eq!(s.spread, 400, "under the new rules");
    let (b, _b_ev) = gw.client(&url, "late").await;
    b.matchmaking_start("arena", "3v3", EU).await.unwrap();
    let gone = b.matchmaking_start("arena", "1v1", EU).await.unwrap_err();
    assert_eq!(code(gone), ErrorCode::MATCH_NOT_FOUND);
    a.matchmaking_cancel(&waiting.request_id).await.unwrap();
    mm_event(&mut a_ev, MatchmakingEventKind::CANCELLED).await;
}

#[tokio::test]
async fn a_running_match_that_lost_a_player_is_backfilled_first() {
    let gw = gateway().await;
    let url = gw.ws_url.clone();
    let (a, mut a_ev) = rated(&gw, &url, "stay", 1500.0).await;
    let (b, mut b_ev) = rated(&gw, &url, "quit", 1520.0).await;
    a.matchmaking_start("arena", "1v1", EU).await.unwrap();
    b.matchmaking_start("arena", "1v1", EU).await.unwrap();
    let ma = mm_event(&mut a_ev, MatchmakingEventKind::MATCHED).await;
    let mb = mm_event(&mut b_ev, MatchmakingEventKind::MATCHED).await;
    let lobby = ma.lobby_id.clone();
    let started = admin_post(
        &gw,
        "/v1/lobbies/start",
        &format!(r#"{{"lobby_id":"{lobby}","connection":"10.0.0.7:7777"}}"#),
    )
    .await;
    assert!(started.starts_with("HTTP/1.0 200"), "{started}");
    b.lobby_leave(&lobby).await.unwrap();

    // Bad backfills change nothing.
    for (body, want) in [
        (
            format!(
                r#"{{"lobby_id":"{lobby}","game":"arena","mode":"9v9","region":"eu","rating":1500,"open":[0,1]}}"#
            ),
            "404",
        ),
        (
            format!(
                r#"{{"lobby_id":"{lobby}","game":"arena","mode":"1v1","region":"eu","rating":1500,"open":[0,0]}}"#
            ),
            "400",
        ),
        (
            format!(
                r#"{{"lobby_id":"{lobby}","game":"arena","mode":"1v1","region":"mars","rating":1500,"open":[0,1]}}"#
            ),
            "400",
        ),
    ] {
        let answer = admin_post(&gw, "/v1/matchmaking/backfill", &body).await;
        assert!(answer.starts_with(&format!("HTTP/1.0 {want}")), "{answer}");
    }
    let open: Vec<u16> = if mb.team == Some(0) {
        vec![1, 0]
    } else {
        vec![0, 1]
    };
    let body = serde_json::json!({
        "lobby_id": lobby, "game": "arena", "mode": "1v1", "region": "eu",
        "rating": 1510.0, "open": open, "match_id": ma.match_id,
    })
    .to_string();
    let answer = admin_post(&gw, "/v1/matchmaking/backfill", &body).await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");

    // Two newcomers wait; the backfill takes one before they could form a
    // new match together.
    let (c, mut c_ev) = rated(&gw, &url, "sub", 1530.0).await;
    let (d, _d_ev) = rated(&gw, &url, "other", 1490.0).await;
    let tc = c.matchmaking_start("arena", "1v1", EU).await.unwrap();
    let td = d.matchmaking_start("arena", "1v1", EU).await.unwrap();
    let mc = mm_event(&mut c_ev, MatchmakingEventKind::MATCHED).await;
    assert_eq!(mc.lobby_id, lobby, "placed into the running match");
    assert_eq!(mc.team, mb.team, "into the slot that was open");
    assert_eq!(mc.match_id, ma.match_id);
    assert_eq!(mc.request_id, tc.request_id);
    let state = a.lobby_get(&lobby).await.unwrap();
    assert_eq!(state.members.len(), 2);
    assert!(state
        .members
        .iter()
        .any(|m| m.user.id == "sub" && m.team == mb.team));
    let s = d.matchmaking_status(&td.request_id).await.unwrap();
    assert_eq!(
        s.state,
        TicketState::SEARCHING,
        "no new match was formed first"
    );

    // The backfill is done: nothing left to cancel.
    let body = format!(r#"{{"lobby_id":"{lobby}","game":"arena"}}"#);
    let answer = admin_post(&gw, "/v1/matchmaking/backfill/cancel", &body).await;
    assert!(answer.starts_with("HTTP/1.0 404"), "{answer}");
}

#[tokio::test]
async fn players_only_meet_on_the_map_they_asked_for() {
    let gw = gateway().await;
    let url = gw.quic_url.clone();
    let ask = |map: &str, role: &str| MatchRequest {
        game: "arena".into(),
        mode: "maps".into(),
        latencies: vec![("eu".into(), 30)],
        texts: vec![("map".into(), map.into())],
        role: role.into(),
        ..Default::default()
    };
    let (a, mut a_ev) = rated(&gw, &url, "docks-1", 1500.0).await;
    let (b, _b_ev) = rated(&gw, &url, "ruins-1", 1500.0).await;
    let (c, mut c_ev) = rated(&gw, &url, "docks-2", 1520.0).await;
    // Missing, unknown and mistyped preferences are refused.
    let mut bare = ask("docks", "");
    bare.texts.clear();
    let err = a.matchmaking_start_with(&bare).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::INVALID_ARGUMENT);
    let err = a
        .matchmaking_start_with(&ask("docks", "medic"))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::INVALID_ARGUMENT);
    let mut numeric = ask("docks", "");
    numeric.texts.clear();
    numeric.numbers = vec![("map".into(), 3.0)];
    let err = a.matchmaking_start_with(&numeric).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::INVALID_ARGUMENT);

    a.matchmaking_start_with(&ask("docks", "sniper"))
        .await
        .unwrap();
    let tb = b.matchmaking_start_with(&ask("ruins", "")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.matchmaking_start_with(&ask("docks", "sniper"))
        .await
        .unwrap();
    let ma = mm_event(&mut a_ev, MatchmakingEventKind::MATCHED).await;
    let mc = mm_event(&mut c_ev, MatchmakingEventKind::MATCHED).await;
    assert_eq!(ma.lobby_id, mc.lobby_id, "the two on the docks meet");
    assert_ne!(ma.team, mc.team, "one sniper per team");
    let s = b.matchmaking_status(&tb.request_id).await.unwrap();
    assert_eq!(s.state, TicketState::SEARCHING, "the ruins player waits");
}

#[tokio::test]
async fn ratings_from_the_backend_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tweak = |c: &mut huddle::ops::config::Config| {
        c.matchmaking.tick_ms = 50;
        c.matchmaking.queues = vec![queue("1v1", 2, 1)];
    };
    let gw = TestGateway::start_in(dir.path(), tweak).await;
    let set = admin_post(
        &gw,
        "/v1/ratings",
        r#"{"game":"arena","ratings":[{"user_id":"vet","mu":1000,"sigma":30}]}"#,
    )
    .await;
    assert!(set.contains("\"set\":1"), "{set}");
    assert!(gw.shutdown().await);

    let gw = TestGateway::start_in(dir.path(), tweak).await;
    let url = gw.ws_url.clone();
    // The stored 1000 wins over the token's 2990, so vet meets a 1050.
    let (vet, mut vet_ev) = rated(&gw, &url, "vet", 2990.0).await;
    let (rookie, mut rookie_ev) = rated(&gw, &url, "rookie", 1050.0).await;
    vet.matchmaking_start("arena", "1v1", EU).await.unwrap();
    rookie.matchmaking_start("arena", "1v1", EU).await.unwrap();
    let a = mm_event(&mut vet_ev, MatchmakingEventKind::MATCHED).await;
    let b = mm_event(&mut rookie_ev, MatchmakingEventKind::MATCHED).await;
    assert_eq!(a.lobby_id, b.lobby_id);
}
