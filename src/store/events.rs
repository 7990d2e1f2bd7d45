//! Webhook inbox (every accepted Telnyx delivery, deduplicated by its event id) and the per-call
//! event history.

use crate::store::schema::{call_events, webhook_events};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = webhook_events)]
pub struct NewWebhookEvent {
    pub event_id: String,
    pub event_type: String,
    pub call_control_id: Option<String>,
    pub payload: serde_json::Value,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Stores a delivery; returns false when this event id was already stored (a redelivery, from
/// Telnyx or through another instance), in which case nothing else must happen.
pub async fn insert_webhook_event(
    conn: &mut AsyncPgConnection,
    event: &NewWebhookEvent,
) -> Result<bool, StoreError> {
    let redacted;
    let event = match without_tokens(&event.payload) {
        Some(payload) => {
            redacted = NewWebhookEvent {
                payload,
                ..event.clone()
            };
            &redacted
        }
        None => event,
    };
    let inserted = diesel::insert_into(webhook_events::table)
        .values(event)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

#[derive(Debug, Clone, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = call_events)]
// As `NewUtterance`: a `None` is a bound NULL (the column has no default), so the insert is
// prepared once per connection instead of on every call event.
#[diesel(treat_none_as_default_value = false)]
pub struct NewCallEvent {
    pub organization_id: Uuid,
    pub call_id: Uuid,
    pub event_type: String,
    pub telnyx_event_id: Option<String>,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = call_events)]
pub struct CallEventRow {
    pub id: i64,
    pub event_type: String,
    pub telnyx_event_id: Option<String>,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// The payload with media tokens redacted, when it carries any (the `stream_url` Telnyx echoes
/// in `streaming.*` events is a bearer secret; viewers read these payloads).
fn without_tokens(payload: &serde_json::Value) -> Option<serde_json::Value> {
    if !payload.to_string().contains("token=") {
        return None;
    }
    let mut payload = payload.clone();
    crate::auth::media_token::redact(&mut payload);
    Some(payload)
}

/// Appends to a call's history and marks the inbox row with its tenant. Idempotent per Telnyx
/// event id.
pub async fn insert_call_event(
    conn: &mut AsyncPgConnection,
    event: &NewCallEvent,
) -> Result<(), StoreError> {
    let redacted;
    let event = match without_tokens(&event.payload) {
        Some(payload) => {
            redacted = NewCallEvent {
                payload,
                ..event.clone()
            };
            &redacted
        }
        None => event,
    };
    diesel::insert_into(call_events::table)
        .values(event)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if let Some(event_id) = &event.telnyx_event_id {
        diesel::update(webhook_events::table)
            .filter(webhook_events::event_id.eq(event_id))
            .set(webhook_events::organization_id.eq(event.organization_id))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// A call's history in the order things happened.
pub async fn list_call_events(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    call_id: Uuid,
) -> Result<Vec<CallEventRow>, StoreError> {
    Ok(call_events::table
        .filter(call_events::organization_id.eq(organization_id))
        .filter(call_events::call_id.eq(call_id))
        .order((call_events::occurred_at.asc(), call_events::id.asc()))
        .select(CallEventRow::as_select())
        .load(conn)
        .await?)
}
