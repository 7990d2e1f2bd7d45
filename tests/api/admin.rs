//! `/admin/*` on the ops listener: refused without the operator token and on the public port;
//! each action on a live call (list, detail, hang-up), drain, jobs, log filter, config,
//! migrations, re-processing a stored webhook.

use crate::helpers::{spawn_app_with, TestApp};
use diesel_async::RunQueryDsl;
use serde_json::Value;

const TOKEN: &str = "operator-token-for-tests";

async fn admin_app() -> TestApp {
    spawn_app_with(|s| s.admin.operator_token = iace::config::Secret::new(TOKEN)).await
}

async fn admin(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::Response {
    app.client
        .request(method, format!("{}{path}", app.ops_address))
        .bearer_auth(TOKEN)
        .header("X-Operator", "alice")
        .send()
        .await
        .unwrap()
}

async fn admin_json(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, Value) {
    let res = admin(app, method, path).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn admin_refuses_without_the_operator_token_and_on_the_public_port() {
    let app = admin_app().await;
    for path in [
        "/admin/calls",
        "/admin/config",
        "/admin/jobs",
        "/admin/migrations",
    ] {
        let none = app
            .client
            .get(format!("{}{path}", app.ops_address))
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 401, "{path}");
        let wrong = app
            .client
            .get(format!("{}{path}", app.ops_address))
            .bearer_auth("operator-token-for-testz")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        assert_eq!(
            admin(&app, reqwest::Method::GET, path).await.status(),
            200,
            "{path}"
        );
        // Not on the public port, token or not.
        let public = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(public.status(), 404, "{path}");
    }
}

#[actix_web::test]
async fn admin_is_off_when_no_operator_token_is_configured() {
    let app = spawn_app_with(|_| {}).await;
    let res = app
        .client
        .get(format!("{}/admin/calls", app.ops_address))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[actix_web::test]
async fn operator_lists_reads_and_hangs_up_a_live_call() {
    let app = admin_app().await;
    let t = app.create_tenant("+15550101301").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559991301", "+15550101301");
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;

    let (status, list) = admin_json(&app, reqwest::Method::GET, "/admin/calls").await;
    assert_eq!(status, 200);
    assert_eq!(list["live"], 1, "{list}");
    assert_eq!(list["calls"][0]["id"], id.to_string());
    assert_eq!(list["calls"][0]["organization_id"], t.org.to_string());

    let (status, one) = admin_json(&app, reqwest::Method::GET, &format!("/admin/calls/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["live_here"], true, "{one}");
    assert_eq!(one["status"], "streaming");

    let (status, _) = admin_json(
        &app,
        reqwest::Method::POST,
        &format!("/admin/calls/{id}/hangup"),
    )
    .await;
    assert_eq!(status, 202);
    app.wait_for_status(&t, id, "ended").await;
    let (status, after) = admin_json(
        &app,
        reqwest::Method::POST,
        &format!("/admin/calls/{id}/hangup"),
    )
    .await;
    assert_eq!(status, 409, "{after}");
    let missing = uuid::Uuid::new_v4();
    let (status, _) = admin_json(
        &app,
        reqwest::Method::GET,
        &format!("/admin/calls/{missing}"),
    )
    .await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn drain_turns_readiness_off_and_marks_the_instance_draining() {
    let app = admin_app().await;
    assert_eq!(app.get("/health/ready").await.status(), 200);
    assert!(!app.state.cluster.is_draining());
    let (status, body) = admin_json(&app, reqwest::Method::POST, "/admin/drain").await;
    assert_eq!((status, body["status"].as_str()), (202, Some("draining")));
    let res = app.get("/health/ready").await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "shutting_down");
    // New calls now go to peers: the flag, and the directory entry peers read, say draining.
    assert!(app.state.cluster.is_draining());
    let entry = app
        .state
        .cluster
        .directory()
        .get(app.state.cluster.id())
        .await
        .unwrap()
        .expect("the instance's directory entry");
    assert!(entry.draining);
}

#[actix_web::test]
async fn operator_sees_failed_jobs_and_retries_one() {
    let app = admin_app().await;
    let org = app.create_org("jobs-org").await;
    let job = uuid::Uuid::new_v4();
    let mut conn = app.state.db.get().await.unwrap();
    diesel::sql_query(
        "INSERT INTO jobs (id, organization_id, kind, status, attempts, max_attempts, last_error) \
         VALUES ($1, $2, 'summarize', 'failed', 5, 5, 'groq timed out')",
    )
    .bind::<diesel::sql_types::Uuid, _>(job)
    .bind::<diesel::sql_types::Uuid, _>(org)
    .execute(&mut conn)
    .await
    .unwrap();

    let (status, body) = admin_json(&app, reqwest::Method::GET, "/admin/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(body["counts"]["failed"], 1, "{body}");
    assert_eq!(body["failed"][0]["id"], job.to_string());
    assert_eq!(body["failed"][0]["last_error"], "groq timed out");

    let (status, _) = admin_json(
        &app,
        reqwest::Method::POST,
        &format!("/admin/jobs/{job}/retry"),
    )
    .await;
    assert_eq!(status, 202);
    let (_, body) = admin_json(&app, reqwest::Method::GET, "/admin/jobs").await;
    assert_eq!(body["counts"]["pending"], 1, "{body}");
    assert!(body["counts"]["failed"].is_null(), "{body}");
    // Only a failed job can be retried.
    let (status, _) = admin_json(
        &app,
        reqwest::Method::POST,
        &format!("/admin/jobs/{job}/retry"),
    )
    .await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn config_is_redacted_and_migrations_are_listed() {
    let app = admin_app().await;
    let res = admin(&app, reqwest::Method::GET, "/admin/config").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("ops_port"), "{text}");
    assert!(text.contains("[redacted]"));
    assert!(!text.contains(TOKEN), "{text}");
    assert!(!text.contains(app.settings.database.url.expose()));

    let (status, body) = admin_json(&app, reqwest::Method::GET, "/admin/migrations").await;
    assert_eq!(status, 200);
    let all = body["migrations"].as_array().unwrap();
    assert!(all.len() >= 3, "{body}");
    assert!(all.iter().all(|m| m["applied"] == true), "{body}");
}

#[actix_web::test]
async fn log_filter_changes_at_run_time() {
    // Installs the process's subscriber (silent: the filter lets nothing through).
    let mut quiet = crate::helpers::test_settings();
    quiet.log.level = "off".into();
    iace::telemetry::init(&quiet);
    let app = admin_app().await;
    let res = app
        .client
        .put(format!("{}/admin/log-filter", app.ops_address))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "filter": "off,iace::no_such_module=debug" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_, now) = admin_json(&app, reqwest::Method::GET, "/admin/log-filter").await;
    assert!(
        now["filter"]
            .as_str()
            .unwrap()
            .contains("iace::no_such_module=debug"),
        "{now}"
    );
    let bad = app
        .client
        .put(format!("{}/admin/log-filter", app.ops_address))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "filter": "iace=notalevel" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let _ = iace::telemetry::set_log_filter("off");
}

#[actix_web::test]
async fn operator_reads_forces_open_and_resets_a_circuit_breaker() {
    let app = admin_app().await;
    let (status, body) = admin_json(&app, reqwest::Method::GET, "/admin/breakers").await;
    assert_eq!(status, 200);
    let all = body["breakers"].as_array().unwrap();
    let names: Vec<&str> = all
        .iter()
        .map(|b| b["provider"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "telnyx",
            "deepgram",
            "cartesia",
            "groq_chat",
            "groq_sentiment",
            "groq_post_call",
            "gemini"
        ]
    );
    assert!(all
        .iter()
        .all(|b| b["state"] == "closed" && b["last_trip"].is_null()));

    let (status, opened) =
        admin_json(&app, reqwest::Method::POST, "/admin/breakers/cartesia/open").await;
    assert_eq!(status, 200);
    assert_eq!(opened["state"], "open", "{opened}");
    assert_eq!(opened["forced_open"], true);
    assert!(opened["last_trip"].is_string(), "{opened}");
    // The engine's own breaker refuses now (calls take the TTS fallback), and the gauge says so.
    assert!(!app.state.breakers.cartesia.would_allow());
    let text = app.ops_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        crate::ops::metric_sum(
            &text,
            "iace_circuit_breaker_state",
            &[("provider", "cartesia")]
        ),
        1.0
    );

    let (status, reset) = admin_json(
        &app,
        reqwest::Method::POST,
        "/admin/breakers/cartesia/reset",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(reset["state"], "closed", "{reset}");
    assert_eq!(reset["forced_open"], false);
    assert!(app.state.breakers.cartesia.would_allow());

    let (status, _) = admin_json(&app, reqwest::Method::POST, "/admin/breakers/nope/open").await;
    assert_eq!(status, 404);
    let (status, _) = admin_json(
        &app,
        reqwest::Method::POST,
        "/admin/breakers/cartesia/explode",
    )
    .await;
    assert_eq!(status, 404);
    let anonymous = app
        .client
        .post(format!("{}/admin/breakers/cartesia/open", app.ops_address))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(app.state.breakers.cartesia.snapshot().state, "closed");
}

#[actix_web::test]
async fn webhook_deliveries_are_listed_with_their_verification_outcome_and_counted() {
    use ed25519_dalek::SigningKey;
    use iace::providers::telnyx::webhook::public_key_b64;
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let app = spawn_app_with(|s| {
        s.admin.operator_token = iace::config::Secret::new(TOKEN);
        s.telnyx.webhook_public_key = public_key_b64(&key);
    })
    .await;
    let body = serde_json::to_vec(&serde_json::json!({
        "data": {
            "record_type": "event",
            "event_type": "call.hangup",
            "id": "evt-admin-1",
            "occurred_at": "2026-11-27T10:00:00.000000Z",
            "payload": { "call_control_id": "v3:unknown", "client_state": "c2VjcmV0" }
        },
        "meta": { "attempt": 1 }
    }))
    .unwrap();
    let post = |ts: Option<i64>, sig: Option<String>| {
        let mut req = app
            .client
            .post(app.url("/webhooks/telnyx"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(ts) = ts {
            req = req.header("telnyx-timestamp", ts.to_string());
        }
        if let Some(sig) = sig {
            req = req.header("telnyx-signature-ed25519", sig);
        }
        req.send()
    };
    let now = chrono::Utc::now().timestamp();
    let good = iace::providers::telnyx::sign_webhook(&key, now, &body);
    let other =
        iace::providers::telnyx::sign_webhook(&SigningKey::from_bytes(&[7u8; 32]), now, &body);
    assert_eq!(post(None, None).await.unwrap().status(), 401);
    assert_eq!(post(Some(now), Some(other)).await.unwrap().status(), 401);
    assert_eq!(
        post(Some(now - 3600), Some(good.clone()))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(Some(now), Some(good.clone())).await.unwrap().status(),
        200
    );
    assert_eq!(post(Some(now), Some(good)).await.unwrap().status(), 200);

    let text = app.ops_get("/metrics").await.text().await.unwrap();
    let failures = |reason| {
        crate::ops::metric_sum(
            &text,
            "iace_webhook_verification_failures_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(
        (failures("missing"), failures("invalid"), failures("stale")),
        (1.0, 1.0, 1.0),
        "{text}"
    );

    let res = admin(&app, reqwest::Method::GET, "/admin/webhooks?limit=10").await;
    assert_eq!(res.status(), 200);
    let raw = res.text().await.unwrap();
    // Ids and types only: no payload field, no signature.
    assert!(
        !raw.contains("c2VjcmV0") && !raw.contains("client_state"),
        "{raw}"
    );
    let list: Value = serde_json::from_str(&raw).unwrap();
    let d = list["deliveries"].as_array().unwrap();
    let outcomes: Vec<&str> = d.iter().map(|x| x["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        outcomes,
        ["duplicate", "accepted", "rejected", "rejected", "rejected"],
        "newest first: {list}"
    );
    assert_eq!(d[1]["event_id"], "evt-admin-1");
    assert_eq!(d[1]["event_type"], "call.hangup");
    let reasons: Vec<&str> = d[2..]
        .iter()
        .map(|x| x["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["stale", "invalid", "missing"]);
    assert!(d[2]["event_id"].is_null(), "a refused body is not trusted");
    let (_, one) = admin_json(&app, reqwest::Method::GET, "/admin/webhooks?limit=1").await;
    assert_eq!(one["deliveries"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn cluster_listing_shows_every_live_call_with_its_owner_instance() {
    // No takeover sweep during the test: the peer below never beats in the directory.
    let app = spawn_app_with(|s| {
        s.admin.operator_token = iace::config::Secret::new(TOKEN);
        s.cluster.sweep_interval_ms = 3_600_000;
    })
    .await;
    let t = app.create_tenant("+15550101311").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559991311", "+15550101311");
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;
    // A call another instance owns, as the shared database shows it.
    let mut conn = app.state.db.get().await.unwrap();
    let remote = uuid::Uuid::new_v4();
    diesel::sql_query(
        "INSERT INTO calls (id, organization_id, direction, from_number, to_number, status, \
         owner_instance) VALUES ($1, $2, 'inbound', '+15559991312', '+15550101311', \
         'streaming', 'peer-instance-b')",
    )
    .bind::<diesel::sql_types::Uuid, _>(remote)
    .bind::<diesel::sql_types::Uuid, _>(t.org)
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);

    let me = app.state.cluster.id().to_owned();
    let body = crate::helpers::wait_until(
        std::time::Duration::from_secs(30),
        "this instance in the directory",
        || async {
            let (status, body) =
                admin_json(&app, reqwest::Method::GET, "/admin/cluster/calls").await;
            assert_eq!(status, 200);
            let listed = body["instances"]
                .as_array()
                .is_some_and(|all| all.iter().any(|i| i["id"] == me.as_str()));
            listed.then_some(body)
        },
    )
    .await;
    assert_eq!(body["this_instance"], me.as_str());
    let calls = body["calls"].as_array().unwrap();
    let owner_of = |call: uuid::Uuid| {
        calls
            .iter()
            .find(|c| c["id"] == call.to_string())
            .map(|c| c["owner_instance"].clone())
    };
    assert_eq!(owner_of(id), Some(Value::String(me.clone())), "{body}");
    assert_eq!(
        owner_of(remote),
        Some(Value::String("peer-instance-b".into())),
        "{body}"
    );
    // The per-instance listing shows only the call live here.
    let (_, here) = admin_json(&app, reqwest::Method::GET, "/admin/calls").await;
    assert_eq!(here["live"], 1, "{here}");
}

/// `POST /admin/webhooks/{id}/reprocess` as the operator: its status and body.
async fn reprocess(app: &TestApp, event_id: &str) -> (u16, Value) {
    admin_json(
        app,
        reqwest::Method::POST,
        &format!("/admin/webhooks/{event_id}/reprocess"),
    )
    .await
}

#[actix_web::test]
async fn a_stored_webhook_is_reprocessed_without_doing_anything_twice() {
    let app = admin_app().await;
    let t = app.create_tenant("+15550101303").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559991303", "+15550101303");
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;
    // The inbox's event ids, from the delivery log (this app had no other call).
    let (_, log) = admin_json(&app, reqwest::Method::GET, "/admin/webhooks").await;
    let event_of = |kind: &str| {
        log["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["event_type"] == kind && d["outcome"] == "accepted")
            .and_then(|d| d["event_id"].as_str())
            .unwrap_or_else(|| panic!("no {kind} in {log}"))
            .to_owned()
    };
    let (initiated, answered) = (event_of("call.initiated"), event_of("call.answered"));
    let calls_of_tenant = || async {
        let (_, page) = app.get_json(&t.token, "/api/v1/calls?limit=200").await;
        page["data"].as_array().map_or(0, Vec::len)
    };

    // Without the operator token: refused.
    let res = app
        .client
        .post(format!(
            "{}/admin/webhooks/{answered}/reprocess",
            app.ops_address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(reprocess(&app, "evt-never-stored").await.0, 404);

    // Live here: the call's actor gets it again and stays where it was.
    for event in [&initiated, &answered] {
        let (status, body) = reprocess(&app, event).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outcome"], "delivered_to_live_call", "{body}");
        assert_eq!(body["call_id"], id.to_string());
    }
    let (_, call) = app.get_json(&t.token, &format!("/api/v1/calls/{id}")).await;
    assert_eq!(call["status"], "streaming", "{call}");

    app.telnyx.caller_hangs_up(&ccid);
    app.wait_for_status(&t, id, "ended").await;
    // Over: the initiating event starts no second call, a recorded event is not re-attached.
    let (_, body) = reprocess(&app, &initiated).await;
    assert_eq!(body["outcome"], "call_exists", "{body}");
    assert_eq!(body["event_type"], "call.initiated");
    let (_, body) = reprocess(&app, &answered).await;
    assert_eq!(body["outcome"], "already_recorded", "{body}");
    assert_eq!(calls_of_tenant().await, 1);

    // An event missing from the call's history is attached again.
    let mut conn = app.state.db.get().await.unwrap();
    diesel::sql_query("DELETE FROM call_events WHERE telnyx_event_id = $1")
        .bind::<diesel::sql_types::Text, _>(&answered)
        .execute(&mut conn)
        .await
        .unwrap();
    let (_, body) = reprocess(&app, &answered).await;
    assert_eq!(body["outcome"], "attached_to_call_history", "{body}");
    crate::helpers::wait_until(
        std::time::Duration::from_secs(30),
        "the event back in the call's history",
        || async {
            let (_, body) = reprocess(&app, &answered).await;
            (body["outcome"] == "already_recorded").then_some(())
        },
    )
    .await;

    // An event of no call stays in the inbox.
    let envelope = serde_json::json!({ "data": {
        "record_type": "event", "event_type": "call.hangup", "id": "evt-of-nobody",
        "payload": { "call_control_id": "v3:nobody" }
    }});
    diesel::sql_query(
        "INSERT INTO webhook_events (event_id, event_type, call_control_id, payload) \
         VALUES ('evt-of-nobody', 'call.hangup', 'v3:nobody', $1::jsonb)",
    )
    .bind::<diesel::sql_types::Text, _>(envelope.to_string())
    .execute(&mut conn)
    .await
    .unwrap();
    let (status, body) = reprocess(&app, "evt-of-nobody").await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("no_call")),
        "{body}"
    );
    assert_eq!(calls_of_tenant().await, 1);
}

#[actix_web::test]
async fn live_calls_show_the_stage_the_conversation_is_in() {
    use iace::sim::caller::{CallerScript, CallerScripts};
    let script = CallerScript::new()
        .wait_for_agent(15_000)
        .say("Hi, my internet keeps dropping every evening.")
        .wait_for_agent(15_000)
        // The agent listens meanwhile; the test hangs up once it has seen that.
        .silence(10_000)
        .hang_up();
    let setup = crate::helpers::VoiceSetup {
        // Long enough to be seen thinking by a poll on a loaded machine.
        groq: iace::sim::groq::GroqSimConfig {
            time_to_first_token: std::time::Duration::from_millis(2500),
            ..Default::default()
        },
        ..crate::helpers::VoiceSetup::new(CallerScripts::new(script))
    };
    let app = crate::helpers::spawn_voice_app(setup, |s| {
        s.admin.operator_token = iace::config::Secret::new(TOKEN);
    })
    .await;
    let t = app.create_tenant("+15550101304").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559991304", "+15550101304");
    let id = app.call_id_for(&t, &ccid).await;

    // Every stage the listing shows, in order, until the caller has been answered and the
    // agent waits again.
    let mut seen: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let (status, list) = admin_json(&app, reqwest::Method::GET, "/admin/calls").await;
        assert_eq!(status, 200);
        let stage = list["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id.to_string())
            .map(|c| c["stage"].as_str().unwrap_or("?").to_owned());
        if let Some(stage) = stage {
            if seen.last() != Some(&stage) {
                seen.push(stage);
            }
        }
        let replied = seen
            .iter()
            .position(|s| s == "speaking")
            .is_some_and(|at| seen[at..].iter().any(|s| s == "listening"));
        if replied {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stages seen: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let known = [
        "connecting",
        "greeting",
        "listening",
        "thinking",
        "speaking",
    ];
    assert!(seen.iter().all(|s| known.contains(&s.as_str())), "{seen:?}");
    let order = |stage: &str| seen.iter().position(|s| s == stage);
    let (thinking, speaking) = (order("thinking"), order("speaking"));
    assert!(
        thinking.is_some() && thinking < speaking,
        "thinking before speaking: {seen:?}"
    );

    // The same stage in the call's detail and in the cluster listing (our own call).
    let (_, one) = admin_json(&app, reqwest::Method::GET, &format!("/admin/calls/{id}")).await;
    assert_eq!(one["stage"], "listening", "{one}");
    let (_, cluster) = admin_json(&app, reqwest::Method::GET, "/admin/cluster/calls").await;
    let ours = cluster["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.to_string())
        .cloned()
        .unwrap_or_default();
    assert_eq!(ours["stage"], "listening", "{cluster}");

    app.telnyx.caller_hangs_up(&ccid);
    app.wait_for_status(&t, id, "ended").await;
    let (_, one) = admin_json(&app, reqwest::Method::GET, &format!("/admin/calls/{id}")).await;
    assert!(one["stage"].is_null(), "no stage once over: {one}");
}
