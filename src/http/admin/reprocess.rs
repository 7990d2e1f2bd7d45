//! `POST /admin/webhooks/{event_id}/reprocess`: runs one stored Telnyx event through the
//! registry again, as the webhook handler did after storing it (the inbox's deduplication is
//! what it skips: the operator asks for the repeat). Idempotent where it matters: a
//! `call.initiated` never starts a second call, an event already in a call's history is not
//! attached twice, and a call live on another instance is left to its owner. The response says
//! which of these happened.

use super::Operator;
use crate::domain::call::CallId;
use crate::error::ApiError;
use crate::http::AppState;
use crate::providers::telnyx::{TelnyxEventKind, WebhookEnvelope};
use crate::store::{admin as store, calls};
use actix_web::{post, web, HttpResponse};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(reprocess);
}

/// What reprocessing did (the response's `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The call is live here: its actor got the event again (its state machine ignores a
    /// transition already made).
    DeliveredToLiveCall,
    /// A `call.initiated` whose call exists already: a call is started once.
    CallExists,
    /// The call is live on another instance: reprocess it there.
    OwnedByOtherInstance,
    /// The call is over (or lost) and the event is in its history already: nothing to do.
    AlreadyRecorded,
    /// The call is over (or lost) and the event was missing from its history: attached now
    /// (and a live call whose owner is gone is adopted, as for any late event).
    AttachedToCallHistory,
    /// A `call.initiated` that never became a call: it is started now (admission applies).
    CallStarted,
    /// No call has this event's call control id: it stays in the inbox only.
    NoCall,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::DeliveredToLiveCall => "delivered_to_live_call",
            Self::CallExists => "call_exists",
            Self::OwnedByOtherInstance => "owned_by_other_instance",
            Self::AlreadyRecorded => "already_recorded",
            Self::AttachedToCallHistory => "attached_to_call_history",
            Self::CallStarted => "call_started",
            Self::NoCall => "no_call",
        }
    }

    /// Whether the event goes to the registry again.
    fn routes(self) -> bool {
        matches!(
            self,
            Self::DeliveredToLiveCall | Self::AttachedToCallHistory | Self::CallStarted
        )
    }
}

#[post("/admin/webhooks/{event_id}/reprocess")]
async fn reprocess(
    op: Operator,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let event_id = path.into_inner();
    let mut conn = state.conn().await?;
    let payload = store::webhook_payload(&mut conn, &event_id)
        .await?
        .ok_or(ApiError::NotFound("webhook event"))?;
    let event = serde_json::from_value::<WebhookEnvelope>(payload)
        .map_err(|e| {
            ApiError::Validation(format!("the stored event is not a Telnyx webhook: {e}"))
        })?
        .data;
    let call = match event.payload.call_control_id.as_deref() {
        Some(ccid) => calls::find_by_control_id(&mut conn, ccid).await?,
        None => None,
    };
    let recorded = store::call_event_recorded(&mut conn, &event_id).await?;
    drop(conn);
    let initiated = event.kind() == TelnyxEventKind::CallInitiated && event.payload.is_incoming();
    let this_instance = state.cluster.id();
    // Live here: bound to its control id (even before its row is written), or by its id.
    let live_here = match (&call, event.payload.call_control_id.as_deref()) {
        (_, Some(ccid)) if state.registry.lookup_control_id(ccid).is_some() => true,
        (Some(row), _) => state.registry.find(CallId(row.id)).await.is_ok(),
        _ => false,
    };
    let outcome = match &call {
        _ if live_here => Outcome::DeliveredToLiveCall,
        Some(_) if initiated => Outcome::CallExists,
        Some(row)
            if row.status != crate::domain::call::CallState::Ended.as_str()
                && row
                    .owner_instance
                    .as_deref()
                    .is_some_and(|o| o != this_instance) =>
        {
            Outcome::OwnedByOtherInstance
        }
        Some(_) if recorded => Outcome::AlreadyRecorded,
        Some(_) => Outcome::AttachedToCallHistory,
        None if initiated => Outcome::CallStarted,
        None => Outcome::NoCall,
    };
    let event_type = event.event_type.clone();
    if outcome.routes() {
        state.registry.route_webhook(event);
    }
    tracing::warn!(operator = %op.name, %event_id, %event_type, outcome = outcome.as_str(),
        "admin: webhook reprocessed");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "event_id": event_id,
        "event_type": event_type,
        "outcome": outcome.as_str(),
        "call_id": call.as_ref().map(|c| c.id),
        "owner_instance": call.as_ref().and_then(|c| c.owner_instance.clone()),
    })))
}
