//! Admin views across the engine: the providers' circuit breakers (read, force open, reset),
//! the recent webhook deliveries, and the live calls of the whole cluster.

use super::{live_call_json, stage_here, Operator};
use crate::domain::call::CallId;
use crate::error::ApiError;
use crate::http::AppState;
use crate::store::admin as store;
use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(breakers)
        .service(breaker_action)
        .service(webhooks)
        .service(cluster_calls);
}

/// `GET /admin/breakers`: every provider's breaker on this instance.
#[get("/admin/breakers")]
async fn breakers(op: Operator, state: web::Data<AppState>) -> HttpResponse {
    let all: Vec<_> = state.breakers.all().iter().map(|b| b.snapshot()).collect();
    tracing::info!(operator = %op.name, "admin: read breakers");
    HttpResponse::Ok().json(serde_json::json!({ "breakers": all }))
}

/// `POST /admin/breakers/{provider}/open` (refuse every request to it until reset: the engine
/// takes its fallbacks) or `/reset` (closed, counters cleared).
#[post("/admin/breakers/{provider}/{action}")]
async fn breaker_action(
    op: Operator,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (provider, action) = path.into_inner();
    let breaker = state
        .breakers
        .by_label(&provider)
        .ok_or(ApiError::NotFound("breaker"))?;
    match action.as_str() {
        "open" => breaker.force_open(),
        "reset" => breaker.reset(),
        _ => return Err(ApiError::RouteNotFound),
    }
    tracing::warn!(operator = %op.name, provider = %provider, action = %action, "admin: circuit breaker changed");
    Ok(HttpResponse::Ok().json(breaker.snapshot()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<usize>,
}

/// `GET /admin/webhooks?limit=50`: the newest deliveries to this instance, newest first, with
/// their verification outcome (ids and types only, never a payload).
#[get("/admin/webhooks")]
async fn webhooks(
    op: Operator,
    state: web::Data<AppState>,
    query: web::Query<Limit>,
) -> HttpResponse {
    let limit = query
        .limit
        .unwrap_or(50)
        .min(crate::telemetry::deliveries::WebhookLog::CAPACITY);
    let deliveries = state.metrics.webhook_log.recent(limit);
    tracing::info!(operator = %op.name, "admin: read webhook deliveries");
    HttpResponse::Ok().json(serde_json::json!({ "deliveries": deliveries }))
}

/// How many live calls the cluster listing shows at most.
const CLUSTER_CALLS_LIMIT: i64 = 1000;

/// `GET /admin/cluster/calls`: every instance in the shared directory, and every call not yet
/// ended on any of them (from the database), with its owner instance.
#[get("/admin/cluster/calls")]
async fn cluster_calls(op: Operator, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let instances = match state.cluster.directory().list().await {
        Ok(list) => serde_json::to_value(list).map_err(ApiError::internal)?,
        Err(e) => {
            tracing::warn!(error = %e.0, "admin: cluster directory unreadable");
            serde_json::Value::Null
        }
    };
    let rows = store::live_calls(&mut *state.conn().await?, CLUSTER_CALLS_LIMIT).await?;
    let mut calls = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut call = live_call_json(row);
        call["owner_instance"] = row.owner_instance.clone().into();
        call["sentiment"] = row.sentiment_avg.into();
        // Known for this instance's own calls only (a peer's stage lives in its memory).
        call["stage"] = if row.owner_instance.as_deref() == Some(state.cluster.id()) {
            stage_here(&state, CallId(row.id)).await
        } else {
            serde_json::Value::Null
        };
        calls.push(call);
    }
    tracing::info!(operator = %op.name, live = calls.len(), "admin: listed cluster calls");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "this_instance": state.cluster.id(),
        "instances": instances,
        "live": calls.len(),
        "calls": calls,
    })))
}
