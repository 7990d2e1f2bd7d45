//! Sentry hygiene: events reach a test DSN server (Sentry's envelope endpoint, in this process)
//! without request bodies, query strings or secrets.

use crate::helpers::{free_port, spawn_app_with, start_body_sink, ReceivedBodies};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

/// A DSN whose envelopes (`/api/1/envelope/`) land in a body sink in this process.
fn start_dsn_server() -> (String, ReceivedBodies) {
    let (port, received) = start_body_sink("/api/{project}/envelope/");
    (format!("http://public@127.0.0.1:{port}/1"), received)
}

#[actix_web::test]
async fn sentry_events_never_carry_the_request_body_query_or_secrets() {
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

    let all = received
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
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
