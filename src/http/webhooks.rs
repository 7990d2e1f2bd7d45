//! `POST /webhooks/telnyx`: verify the Ed25519 signature over `timestamp|raw body`, drop
//! redeliveries by event id, store the event, hand it to the registry, answer at once. An event
//! of a call owned by another instance goes to that owner first (`http::routing`).

use crate::error::ApiError;
use crate::http::AppState;
use crate::providers::telnyx::WebhookEvent;
use crate::providers::telnyx::{
    TelnyxEventKind, WebhookEnvelope, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use crate::store::events::{self, NewWebhookEvent};
use crate::telemetry::deliveries::Delivery;
use actix_web::{post, web, HttpRequest, HttpResponse};
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(telnyx_webhook);
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

#[post("/webhooks/telnyx")]
async fn telnyx_webhook(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let verified = state
        .telnyx_verifier
        .as_ref()
        .map_err(|e| *e)
        .and_then(|v| {
            v.verify(
                header(&req, TIMESTAMP_HEADER),
                header(&req, SIGNATURE_HEADER),
                &body,
                chrono::Utc::now().timestamp(),
                state.settings.telnyx.webhook_tolerance_secs,
            )
        });
    if let Err(e) = verified {
        rejected(&state, e.reason(), body.len());
        return Err(ApiError::WebhookSignature(e));
    }
    let envelope: WebhookEnvelope = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidJson(format!("not a Telnyx webhook envelope: {e}")))?;
    let event = envelope.data;
    if event.id.trim().is_empty() {
        return Err(ApiError::Validation("data.id is empty".into()));
    }
    // A call owned by another instance is handled there (before the inbox: the owner stores it).
    if let Some(routed) = crate::http::routing::route_webhook(&state, &req, &body, &event).await {
        delivered(&state, "routed", &event, body.len());
        return Ok(routed);
    }
    // Stored before we answer: once Telnyx hears 200 it will not send this event again.
    let payload: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let record = NewWebhookEvent {
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        call_control_id: event.payload.call_control_id.clone(),
        payload,
        occurred_at: event.occurred_at,
    };
    let mut conn = state.conn().await?;
    let is_new = events::insert_webhook_event(&mut conn, &record).await?;
    drop(conn);
    if !is_new {
        state.metrics.webhooks_duplicate.inc();
        delivered(&state, "duplicate", &event, body.len());
        tracing::debug!(event_id = %event.id, "duplicate webhook delivery dropped");
        return Ok(HttpResponse::Ok().json(json!({ "status": "duplicate" })));
    }
    let kind = event.kind();
    // Unknown types share one label so the metric's cardinality stays bounded.
    let label = if matches!(kind, TelnyxEventKind::Other(_)) {
        "other"
    } else {
        kind.as_str()
    };
    state
        .metrics
        .webhooks_accepted
        .with_label_values(&[label])
        .inc();
    delivered(&state, "accepted", &event, body.len());
    state.registry.route_webhook(event);
    Ok(HttpResponse::Ok().json(json!({ "status": "accepted" })))
}

/// Counts a delivery refused by verification and keeps it in the admin log (no content).
fn rejected(state: &AppState, reason: &'static str, body_bytes: usize) {
    let m = &state.metrics;
    m.webhook_verification_failures
        .with_label_values(&[reason])
        .inc();
    m.webhook_log.push(Delivery {
        received_at: chrono::Utc::now(),
        outcome: "rejected",
        reason: Some(reason),
        event_id: None,
        event_type: None,
        body_bytes,
    });
}

/// Keeps a verified delivery in the admin log.
fn delivered(state: &AppState, outcome: &'static str, event: &WebhookEvent, body_bytes: usize) {
    state.metrics.webhook_log.push(Delivery {
        received_at: chrono::Utc::now(),
        outcome,
        reason: None,
        event_id: Some(event.id.clone()),
        event_type: Some(event.event_type.clone()),
        body_bytes,
    });
}
