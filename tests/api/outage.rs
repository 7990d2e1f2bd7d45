//! Outside dependencies going away under live calls: the database (a private Postgres stopped
//! and started again) and Redis (a private redis-server stopped mid-call).

use crate::conversation::utterances as utterances_of;
use crate::helpers::{free_port, spawn_voice_app, wait_until, TestApp, VoiceSetup};
use crate::services::{PrivatePostgres, PrivateRedis};
use diesel::RunQueryDsl;
use iace::config::Secret;
use iace::sim::caller::{CallerScript, CallerScripts};
use iace::sim::groq::GroqSimConfig;
use serde_json::Value;
use std::time::Duration;

const NUMBER: &str = "+15550900001";

async fn readiness(app: &TestApp) -> Value {
    app.get("/health/ready").await.json().await.unwrap()
}

/// A caller who keeps talking for about `turns` exchanges, a few seconds apart.
fn chatty_caller(turns: usize) -> CallerScript {
    let mut script = CallerScript::new().wait_for_agent(10_000);
    for n in 0..turns {
        script = script
            .say(format!("This is sentence number {n} about my internet."))
            .wait_for_agent(10_000)
            .silence(2_000);
    }
    script.hang_up()
}

#[actix_web::test]
async fn postgres_stopped_for_30_s_under_20_live_calls_loses_no_row_and_keeps_their_order() {
    const CALLS: usize = 20;
    let pg = PrivatePostgres::start(None);
    let db_url = pg.migrated_database("iace_outage");
    let setup = VoiceSetup {
        groq: GroqSimConfig {
            time_to_first_token: Duration::from_millis(50),
            ..GroqSimConfig::default()
        },
        ..VoiceSetup::new(CallerScripts::new(chatty_caller(8)))
    };
    let app = spawn_voice_app(setup, |s| {
        s.database.url = Secret::new(db_url);
        s.database.pool_timeout_ms = 1000;
        // A small memory buffer, so the outage must spill to the file.
        s.recorder.buffer_max_writes = 20;
        s.recorder.retry_backoff_max_ms = 500;
        s.calls.no_media_timeout_secs = 120;
    })
    .await;
    // The Deepgram simulator hears one script for all its sockets, in order: every caller's
    // sentences, as many times as there are callers.
    let sentences = chatty_caller(8).utterances();
    let heard = sentences
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.clone(), CALLS))
        .collect();
    app.voice.as_ref().unwrap().deepgram.set_script(heard);
    let t = app.create_tenant(NUMBER).await;
    let mut calls = Vec::new();
    for n in 0..CALLS {
        let ccid = app
            .telnyx
            .place_inbound_call(&format!("+1555999{n:04}"), NUMBER);
        calls.push(ccid);
    }
    let mut ids = Vec::new();
    for ccid in &calls {
        let id = app.call_id_for(&t, ccid).await;
        app.wait_for_status(&t, id, "streaming").await;
        ids.push(id);
    }

    // Mid-conversation: the database goes away for 30 s.
    pg.stop();
    let spill = std::path::PathBuf::from(&app.settings.recorder.spill_file);
    let mut spilled_bytes = 0;
    let outage_end = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut saw_not_ready = false;
    while tokio::time::Instant::now() < outage_end {
        let body = readiness(&app).await;
        saw_not_ready |= body["checks"]["database"] == false;
        spilled_bytes = spilled_bytes.max(std::fs::metadata(&spill).map_or(0, |m| m.len()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(saw_not_ready, "readiness reported database:false");
    assert!(
        spilled_bytes > 0,
        "writes past the buffer went to {spill:?}"
    );
    pg.start_again();

    // The callers finish their scripts; the calls went on all along.
    let voice = app.voice.as_ref().unwrap();
    let outcomes = voice
        .callers
        .wait_for_outcomes(CALLS, Duration::from_secs(120))
        .await;
    for outcome in &outcomes {
        let report = outcome.as_ref().expect("caller finished its script");
        let answered = report.turn_latencies_ms().iter().flatten().count();
        assert!(answered >= 8, "every turn answered: {}", report.summary());
    }
    for ccid in &calls {
        app.telnyx.caller_hangs_up(ccid);
    }
    for id in &ids {
        app.wait_for_status(&t, *id, "ended").await;
    }
    app.state
        .recorder
        .send(iace::actors::recorder::Flush)
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&spill).map_or(0, |m| m.len()), 0);

    for id in &ids {
        let (_, call) = app.get_json(&t.token, &format!("/api/v1/calls/{id}")).await;
        let utterances = call["utterances"].as_array().unwrap();
        let seqs: Vec<i64> = utterances
            .iter()
            .map(|u| u["seq"].as_i64().unwrap())
            .collect();
        // Greeting + 8 caller sentences + 8 replies, numbered without a gap.
        assert!(seqs.len() >= 17, "{call}");
        assert_eq!(
            seqs,
            (seqs[0]..seqs[0] + seqs.len() as i64).collect::<Vec<_>>(),
            "no utterance lost: {call}"
        );
        let callers = utterances
            .iter()
            .filter(|u| u["speaker"] == "caller")
            .count();
        assert_eq!(callers, 8, "{call}");
        // Written in the order they were made: each starts no earlier than the one before.
        let starts: Vec<i64> = utterances
            .iter()
            .map(|u| u["started_ms"].as_i64().unwrap())
            .collect();
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    }
    assert_eq!(readiness(&app).await["checks"]["database"], true);
}

#[actix_web::test]
async fn redis_stopped_mid_call_leaves_the_call_going_and_recorded() {
    let port = free_port();
    let redis = PrivateRedis::start(port);
    let setup = VoiceSetup::new(CallerScripts::new(chatty_caller(3)));
    let app = spawn_voice_app(setup, |s| {
        s.redis.url = Secret::new(format!("redis://127.0.0.1:{port}"));
    })
    .await;
    let t = app.create_tenant(NUMBER).await;
    let ccid = app.telnyx.place_inbound_call("+15559990001", NUMBER);
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;
    drop(redis);
    wait_until(
        Duration::from_secs(5),
        "readiness to see redis gone",
        || async { (readiness(&app).await["checks"]["redis"] == false).then_some(()) },
    )
    .await;
    let voice = app.voice.as_ref().unwrap();
    let outcomes = voice
        .callers
        .wait_for_outcomes(1, Duration::from_secs(90))
        .await;
    let report = outcomes[0].as_ref().expect("caller finished");
    let answered = report.turn_latencies_ms().iter().flatten().count();
    assert_eq!(answered, 3, "{}", report.summary());
    app.telnyx.caller_hangs_up(&ccid);
    app.wait_for_status(&t, id, "ended").await;
    let call = app.recorded_call(&t, id).await;
    assert_eq!(utterances_of(&call, "caller").len(), 3, "{call}");
}

/// Checkouts of the app's Postgres pool that were verified (`SELECT 1`) so far. Counted by
/// the pool itself: the query histogram is one for the whole test process, where other tests'
/// apps run their own checks at the same time.
fn liveness_queries(app: &TestApp) -> f64 {
    app.state.db.manager().verified_checkouts() as f64
}

/// The liveness queries run while an organization's calls are listed `n` times.
async fn liveness_queries_over(app: &TestApp, token: &str, n: usize) -> f64 {
    let before = liveness_queries(app);
    list_calls(app, token, n).await;
    liveness_queries(app) - before
}

/// Lists an organization's calls `n` times, each answered 200.
async fn list_calls(app: &TestApp, token: &str, n: usize) {
    for _ in 0..n {
        let (status, body) = app.get_json(token, "/api/v1/calls").await;
        assert_eq!(status, 200, "{body}");
    }
}

#[actix_web::test]
async fn busy_pool_connections_skip_the_liveness_query_and_ones_the_server_closed_are_replaced() {
    // Trusted for a minute after use: nothing in this test is verified by `SELECT 1`.
    let app = crate::helpers::spawn_app_with(|s| s.database.verify_idle_ms = 60_000).await;
    let t = app.create_tenant("+15550900011").await;
    list_calls(&app, &t.token, 3).await;
    let trusted = liveness_queries_over(&app, &t.token, 10).await;
    assert!(
        trusted == 0.0,
        "connections used moments ago went out with a SELECT 1 in front ({trusted} queries)"
    );

    // The server ends every connection of the engine's database (a restart, a failover): none
    // of them is handed out again, though none is verified.
    let killed: Vec<bool> = diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
         WHERE datname = '{}' AND pid <> pg_backend_pid()",
        app.db_name
    ))
    .load::<Killed>(&mut crate::helpers::admin_connection())
    .expect("terminate the engine's connections")
    .into_iter()
    .map(|k| k.killed)
    .collect();
    assert!(killed.iter().any(|k| *k), "the engine held connections");
    // The close reaches each connection's task at once; give it a moment to be read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    list_calls(&app, &t.token, 5).await;

    // With no trust window, every checkout is verified.
    let strict = crate::helpers::spawn_app_with(|s| s.database.verify_idle_ms = 0).await;
    let t = strict.create_tenant("+15550900012").await;
    list_calls(&strict, &t.token, 2).await;
    assert!(
        liveness_queries_over(&strict, &t.token, 10).await >= 10.0,
        "verify_idle_ms = 0 verifies every checkout"
    );
}

#[derive(diesel::QueryableByName)]
struct Killed {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    killed: bool,
}

#[derive(diesel::QueryableByName)]
struct Prepared {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    statements: i64,
}

/// Statements of `table`'s inserts that stay prepared on this connection.
async fn prepared_inserts(conn: &mut diesel_async::AsyncPgConnection, table: &str) -> i64 {
    let query = diesel::sql_query(
        "SELECT count(*) AS statements FROM pg_prepared_statements WHERE statement LIKE $1",
    )
    .bind::<diesel::sql_types::Text, _>(format!("INSERT INTO \"{table}\"%"));
    let rows: Vec<Prepared> = diesel_async::RunQueryDsl::load(query, conn).await.unwrap();
    rows[0].statements
}

#[actix_web::test]
async fn a_live_calls_utterance_and_event_inserts_are_prepared_once_per_connection() {
    // The recorder writes these for every turn, one at a time. A statement diesel cannot cache
    // is prepared (a round trip) and closed again for every row; a cached one stays prepared.
    use iace::store::events::{self, NewCallEvent};
    use iace::store::utterances::{self, NewUtterance};
    let app = crate::helpers::spawn_app().await;
    let org = app.create_org("prepared").await;
    let call = crate::helpers::seed_call(
        &app,
        org,
        crate::helpers::SeededCall {
            agent: None,
            from: "+15550900101",
            to: "+15550900102",
            at: chrono::Utc::now(),
            outcome: None,
            sentiment: None,
            ended: false,
            utterances: vec![],
        },
    )
    .await;
    let mut conn = app.state.db.get().await.unwrap();
    for seq in 0..3 {
        // Optional fields both absent and present: the same statement either way.
        let scored = seq % 2 == 1;
        let utterance = NewUtterance {
            organization_id: org,
            call_id: call,
            seq,
            speaker: "caller".into(),
            text: format!("turn {seq}"),
            started_ms: i64::from(seq) * 1000,
            ended_ms: i64::from(seq) * 1000 + 500,
            sentiment_score: scored.then_some(0.5),
            sentiment_label: scored.then(|| "positive".to_owned()),
            rolling_sentiment: scored.then_some(0.4),
            interrupted: false,
            latency_ms: scored.then_some(300),
        };
        utterances::insert(&mut conn, &utterance).await.unwrap();
        let event = NewCallEvent {
            organization_id: org,
            call_id: call,
            event_type: "engine.test".into(),
            telnyx_event_id: scored.then(|| format!("evt-{call}-{seq}")),
            payload: serde_json::json!({ "seq": seq }),
            occurred_at: chrono::Utc::now(),
        };
        events::insert_call_event(&mut conn, &event).await.unwrap();
    }
    assert_eq!(prepared_inserts(&mut conn, "utterances").await, 1);
    assert_eq!(prepared_inserts(&mut conn, "call_events").await, 1);
    // And the rows went in with their NULLs and values.
    let stored = utterances::list_for_call(&mut conn, org, call)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0].sentiment_score, None);
    assert_eq!(stored[1].sentiment_score, Some(0.5));
}
