//! `POST /webhooks/telnyx`: signatures, replay window, redeliveries, unknown events and calls.

use crate::helpers::{assert_error, spawn_app_with, TestApp};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use ed25519_dalek::SigningKey;
use iace::providers::telnyx::sign_webhook;
use iace::providers::telnyx::webhook::public_key_b64;
use iace::store::schema::{calls, webhook_events};
use serde_json::json;

fn our_key() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

async fn app_trusting_our_key() -> TestApp {
    spawn_app_with(|s| s.telnyx.webhook_public_key = public_key_b64(&our_key())).await
}

fn event(id: &str, event_type: &str, ccid: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "data": {
            "record_type": "event",
            "event_type": event_type,
            "id": id,
            "occurred_at": "2026-11-27T10:00:00.000000Z",
            "payload": { "call_control_id": ccid, "from": "+15551112222", "to": "+15553334444" }
        },
        "meta": { "attempt": 1 }
    }))
    .unwrap()
}

async fn post(
    app: &TestApp,
    body: &[u8],
    ts: Option<i64>,
    sig: Option<String>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/webhooks/telnyx"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(ts) = ts {
        req = req.header("telnyx-timestamp", ts.to_string());
    }
    if let Some(sig) = sig {
        req = req.header("telnyx-signature-ed25519", sig);
    }
    req.send().await.unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn stored_events(app: &TestApp, id: &str) -> i64 {
    let mut conn = app.state.db.get().await.unwrap();
    webhook_events::table
        .filter(webhook_events::event_id.eq(id))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap()
}

#[actix_web::test]
async fn missing_malformed_wrong_and_stale_signatures_are_refused() {
    let app = app_trusting_our_key().await;
    let body = event("ev-1", "call.hangup", "v3:unknown");
    let ts = now();
    let good = sign_webhook(&our_key(), ts, &body);

    assert_error(
        post(&app, &body, None, None).await,
        401,
        "signature_missing",
    )
    .await;
    assert_error(
        post(&app, &body, Some(ts), None).await,
        401,
        "signature_missing",
    )
    .await;
    assert_error(
        post(&app, &body, Some(ts), Some("not base64!".into())).await,
        401,
        "signature_malformed",
    )
    .await;
    let other = sign_webhook(&SigningKey::from_bytes(&[1u8; 32]), ts, &body);
    assert_error(
        post(&app, &body, Some(ts), Some(other)).await,
        401,
        "signature_invalid",
    )
    .await;
    // The signature covers the body: a tampered body fails.
    let tampered = event("ev-1", "call.answered", "v3:unknown");
    assert_error(
        post(&app, &tampered, Some(ts), Some(good.clone())).await,
        401,
        "signature_invalid",
    )
    .await;
    // And the timestamp: replaying an old signature under a new timestamp fails too.
    assert_error(
        post(&app, &body, Some(ts + 1), Some(good)).await,
        401,
        "signature_invalid",
    )
    .await;
    for stale in [ts - 301, ts + 301] {
        let sig = sign_webhook(&our_key(), stale, &body);
        assert_error(
            post(&app, &body, Some(stale), Some(sig)).await,
            401,
            "timestamp_stale",
        )
        .await;
    }
    assert_eq!(
        stored_events(&app, "ev-1").await,
        0,
        "nothing refused was stored"
    );
}

#[actix_web::test]
async fn a_redelivered_event_is_stored_once_and_acknowledged_twice() {
    let app = app_trusting_our_key().await;
    let body = event("ev-2", "call.hangup", "v3:nobody");
    let ts = now();
    let res = post(
        &app,
        &body,
        Some(ts),
        Some(sign_webhook(&our_key(), ts, &body)),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["status"],
        "accepted"
    );
    let ts2 = now();
    let res = post(
        &app,
        &body,
        Some(ts2),
        Some(sign_webhook(&our_key(), ts2, &body)),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["status"],
        "duplicate"
    );
    assert_eq!(stored_events(&app, "ev-2").await, 1);
}

#[actix_web::test]
async fn unknown_event_types_and_unknown_calls_are_stored_and_acknowledged() {
    let app = app_trusting_our_key().await;
    for (id, kind) in [("ev-3", "call.cost"), ("ev-4", "call.answered")] {
        let body = event(id, kind, "v3:never-seen");
        let ts = now();
        let res = post(
            &app,
            &body,
            Some(ts),
            Some(sign_webhook(&our_key(), ts, &body)),
        )
        .await;
        assert_eq!(res.status(), 200, "{kind}");
        assert_eq!(stored_events(&app, id).await, 1);
    }
    let mut conn = app.state.db.get().await.unwrap();
    let n: i64 = calls::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(n, 0, "no call is invented for an unknown call id");
    let health = app.get("/health").await;
    assert_eq!(health.status(), 200);
}

#[actix_web::test]
async fn a_signed_body_that_is_not_an_envelope_is_a_400() {
    let app = app_trusting_our_key().await;
    for body in [&b"{not json"[..], &br#"{"data": 5}"#[..]] {
        let ts = now();
        let res = post(
            &app,
            body,
            Some(ts),
            Some(sign_webhook(&our_key(), ts, body)),
        )
        .await;
        assert_error(res, 400, "invalid_json").await;
    }
}
