//! Webhook delivery: one task per simulated call posts that call's events in order, signed like
//! Telnyx signs them, redelivering on non-2xx answers; the delivery faults (delay, duplicates,
//! reordering) are applied here.

use super::{DeliveredWebhook, Inner};
use crate::providers::telnyx::webhook::{sign_webhook, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// With `reorder_webhooks`, how long an event waits for the next one to overtake it.
const REORDER_WINDOW: Duration = Duration::from_millis(300);

thread_local! {
    // The delivery arbiter's one HTTP client (awc is !Send), reused for every call's deliveries.
    static HTTP: awc::Client = awc::Client::builder().disable_redirects().finish();
}

/// Starts the delivery task of one call on the delivery arbiter.
pub(super) fn spawn_call_delivery(
    inner: &Arc<Inner>,
    url: String,
    events: UnboundedReceiver<Value>,
) {
    let inner2 = inner.clone();
    // The task's future is !Send (awc), so it is created on the arbiter's own thread.
    inner.delivery.spawn_fn(move || {
        actix_web::rt::spawn(deliver_events(inner2, url, events));
    });
}

async fn deliver_events(inner: Arc<Inner>, url: String, mut events: UnboundedReceiver<Value>) {
    while let Some(event) = events.recv().await {
        if inner.lock().faults.reorder_webhooks {
            if let Ok(Some(next)) =
                actix_web::rt::time::timeout(REORDER_WINDOW, events.recv()).await
            {
                deliver(&inner, &url, &next).await;
            }
        }
        deliver(&inner, &url, &event).await;
    }
}

/// Delivers one event (twice with `duplicate_webhooks`), each time with redelivery.
async fn deliver(inner: &Arc<Inner>, url: &str, event: &Value) {
    let faults = inner.lock().faults.clone();
    let copies = if faults.duplicate_webhooks { 2 } else { 1 };
    for _ in 0..copies {
        if faults.webhook_delay_ms > 0 {
            actix_web::rt::time::sleep(Duration::from_millis(faults.webhook_delay_ms)).await;
        }
        deliver_with_retries(inner, url, event).await;
    }
}

async fn deliver_with_retries(inner: &Arc<Inner>, url: &str, event: &Value) {
    let config = &inner.config;
    let attempts = config.webhook_attempts.max(1);
    for attempt in 1..=attempts {
        let envelope = json!({
            "data": event,
            "meta": {"attempt": attempt, "delivered_to": url},
        });
        let status = post_signed(inner, url, &envelope).await;
        let record = DeliveredWebhook {
            event_id: text(&event["id"]),
            event_type: text(&event["event_type"]),
            call_control_id: event["payload"]["call_control_id"]
                .as_str()
                .map(str::to_owned),
            attempt,
            status,
            body: envelope,
        };
        let accepted = record.accepted();
        if !accepted {
            tracing::debug!(
                event_type = %record.event_type, attempt, ?status,
                "telnyx sim: webhook not accepted"
            );
        }
        inner.lock().deliveries.push(record);
        if accepted {
            return;
        }
        if attempt < attempts {
            let backoff = config
                .webhook_retry_backoff_ms
                .saturating_mul(u64::from(attempt));
            actix_web::rt::time::sleep(Duration::from_millis(backoff)).await;
        }
    }
}

/// Posts the envelope with Telnyx's signature headers; the receiver's status, if it answered.
async fn post_signed(inner: &Arc<Inner>, url: &str, envelope: &Value) -> Option<u16> {
    let body = serde_json::to_vec(envelope).ok()?;
    let timestamp = chrono::Utc::now().timestamp();
    let signature = sign_webhook(&inner.key, timestamp, &body);
    let request = HTTP
        .with(|http| http.post(url))
        .insert_header((SIGNATURE_HEADER, signature))
        .insert_header((TIMESTAMP_HEADER, timestamp.to_string()))
        .insert_header(("content-type", "application/json"))
        .timeout(Duration::from_millis(inner.config.webhook_timeout_ms));
    match request.send_body(body).await {
        Ok(response) => Some(response.status().as_u16()),
        Err(_) => None,
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}
