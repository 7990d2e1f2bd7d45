//! Sentry hygiene: events reach a test DSN server (Sentry's envelope endpoint, in this process)
//! without request bodies, query strings or secrets; a call actor's panic is one of them.

use crate::helpers::{
    free_port, spawn_app_with, spawn_voice_app, start_body_sink, wait_until, ReceivedBodies,
    VoiceSetup,
};
use iace::actors::call::messages::InjectPanic;
use iace::domain::call::CallId;
use iace::sim::caller::{CallerScript, CallerScripts};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

/// A DSN whose envelopes (`/api/1/envelope/`) land in a body sink in this process.
fn start_dsn_server() -> (String, ReceivedBodies) {
    let (port, received) = start_body_sink("/api/{project}/envelope/");
    (format!("http://public@127.0.0.1:{port}/1"), received)
}

/// The envelopes received so far, as text.
fn texts(received: &ReceivedBodies) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

#[actix_web::test]
async fn sentry_events_never_carry_the_request_body_query_or_secrets() {
    // Both Sentry tests bind the process-wide hub: never at the same time.
    let _exclusive = crate::cluster::process_exclusive().await;
    let (dsn, received) = start_dsn_server();
    let dead = free_port();
    // No database: the login fails with a 5xx, which sentry-actix reports.
    let app = spawn_app_with(|s| {
        s.database.url =
            iace::config::Secret::new(format!("postgres://iace:iace@127.0.0.1:{dead}/nothing"));
        s.database.pool_timeout_ms = 300;
        s.sentry.dsn = iace::config::Secret::new(dsn);
    })
    .await;
    let guard = iace::telemetry::sentry::init(&app.settings).expect("a DSN is set");
    let client = sentry::Hub::current().client().expect("client bound");
    // The middleware reports through the process hub.
    sentry::Hub::main().bind_client(Some(client.clone()));

    let res = app
        .client
        .post(format!(
            "{}/api/v1/auth/login?token=query-secret-q1&api_key=query-secret-q2",
            app.address
        ))
        .json(&serde_json::json!({"email": "ops@example.com", "password": "body-secret-p1"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_server_error(), "{}", res.status());

    // An error logged by a call (through the tracing layer), with secrets in its fields.
    let subscriber = tracing_subscriber::registry().with(iace::telemetry::sentry::layers());
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(api_key = "field-secret-f1", "provider slow");
        tracing::error!(
            call_id = "call-under-test",
            password = "field-secret-f2",
            "call failed: wss://api.deepgram.test/v1/listen?token=url-secret-u1 closed"
        );
    });

    assert!(client.flush(Some(Duration::from_secs(10))));
    sentry::Hub::main().bind_client(None);
    drop(guard);

    let all = texts(&received).join("\n");
    assert!(all.contains("/api/v1/auth/login"), "no HTTP event: {all}");
    assert!(all.contains("call-under-test"), "no tracing event: {all}");
    assert!(all.contains("call failed: wss://api.deepgram.test/v1/listen closed"));
    for secret in [
        "body-secret-p1",
        "query-secret-q1",
        "query-secret-q2",
        "field-secret-f1",
        "field-secret-f2",
        "url-secret-u1",
    ] {
        assert!(!all.contains(secret), "{secret} reached Sentry: {all}");
    }
}

#[actix_web::test]
async fn a_call_actor_panic_reaches_sentry_without_secrets() {
    // The fault hooks and the process-wide Sentry hub: never beside another fault-hook test.
    let _exclusive = crate::cluster::process_exclusive().await;
    let (dsn, received) = start_dsn_server();
    let script = CallerScript::new()
        .wait_for_agent(15_000)
        .say("Could you tell me when my order will arrive?")
        .silence(60_000)
        .hang_up();
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        s.calls.fault_injection = true;
        s.sentry.dsn = iace::config::Secret::new(dsn);
    })
    .await;
    let guard = iace::telemetry::sentry::init(&app.settings).expect("a DSN is set");
    let client = sentry::Hub::current().client().expect("client bound");
    // The panic hook reports through the hub of the panicking (shard) thread, made from this one.
    sentry::Hub::main().bind_client(Some(client.clone()));

    let t = app.create_tenant("+15550311006").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990313", "+15550311006");
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;
    let call = app
        .state
        .registry
        .find(CallId(id))
        .await
        .expect("live here");
    call.do_send(InjectPanic);
    let row = app.wait_for_status(&t, id, "ended").await;
    assert_eq!(row["end_reason"], "internal_error", "{row}");

    let needle = format!("injected fault in call {id}");
    wait_until(
        Duration::from_secs(30),
        "the panic at the DSN server",
        || {
            client.flush(Some(Duration::from_secs(1)));
            let found = texts(&received).iter().any(|e| e.contains(&needle));
            async move { found.then_some(()) }
        },
    )
    .await;
    sentry::Hub::main().bind_client(None);
    drop(guard);

    let all = texts(&received).join("\n");
    let s = &app.settings;
    let secrets = [
        s.telnyx.api_key.expose(),
        s.deepgram.api_key.expose(),
        s.cartesia.api_key.expose(),
        s.groq.api_key.expose(),
        s.groq.fallback_api_key.expose(),
        s.gemini.api_key.expose(),
        s.auth.signing_key.expose(),
        s.database.url.expose(),
        s.redis.url.expose(),
        t.token.as_str(),
    ];
    for secret in secrets.into_iter().filter(|v| v.len() >= 8) {
        assert!(!all.contains(secret), "a secret reached Sentry: {all}");
    }
}
