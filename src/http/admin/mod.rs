//! Operator endpoints under `/admin/` (ops listener only). Every request needs
//! `Authorization: Bearer {admin.operator_token}` (compared in constant time; an empty setting
//! disables them all); `X-Operator` names the person acting, and every action is logged with it.

use crate::domain::call::CallId;
use crate::error::ApiError;
use crate::http::AppState;
use crate::store::{admin as store, migrations};
use actix_web::dev::Payload;
use actix_web::{get, post, put, web, FromRequest, HttpRequest, HttpResponse};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::future::{ready, Ready};
use uuid::Uuid;

pub mod numbers;
mod observe;
mod reprocess;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(observe::configure);
    cfg.configure(numbers::configure);
    cfg.configure(reprocess::configure);
    cfg.service(list_calls)
        .service(call_detail)
        .service(hangup)
        .service(drain)
        .service(jobs)
        .service(retry_job)
        .service(get_log_filter)
        .service(set_log_filter)
        .service(config)
        .service(migration_status);
}

/// An authenticated operator: who, for the audit log.
pub struct Operator {
    pub name: String,
}

/// Equal in time independent of where the inputs differ (both are hashed to 32 bytes first).
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let expected = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.settings.admin.operator_token.clone())
            .unwrap_or_default();
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let result = match given {
            Some(token) if !expected.is_empty() && same_secret(token, expected.expose()) => {
                let name = req
                    .headers()
                    .get("x-operator")
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty() && v.len() <= 64)
                    .unwrap_or("operator")
                    .to_owned();
                Ok(Operator { name })
            }
            _ => {
                tracing::warn!(path = %req.path(), "admin request without a valid operator token");
                Err(ApiError::Unauthorized("operator token required".into()))
            }
        };
        ready(result)
    }
}

/// `GET /admin/calls`: the calls live on this instance, with their stored state.
#[get("/admin/calls")]
async fn list_calls(op: Operator, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ids = state.registry.live_ids().await;
    let mut conn = state.conn().await?;
    let mut calls = Vec::with_capacity(ids.len());
    for id in &ids {
        let mut call = if let Some(row) = store::call(&mut conn, id.0).await? {
            live_call_json(&row)
        } else {
            // Live but not yet recorded (the recorder batches writes).
            serde_json::json!({ "id": id.0, "status": "starting" })
        };
        call["stage"] = stage_here(&state, *id).await;
        calls.push(call);
    }
    tracing::info!(operator = %op.name, live = calls.len(), "admin: listed live calls");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "live": calls.len(), "calls": calls })))
}

/// The stage of a call live on this instance, from its actor (`null` when not live here).
async fn stage_here(state: &AppState, id: CallId) -> serde_json::Value {
    state
        .registry
        .snapshot(id)
        .await
        .map_or(serde_json::Value::Null, |s| s.stage.into())
}

fn live_call_json(row: &crate::store::calls::CallRow) -> serde_json::Value {
    let duration_secs = (chrono::Utc::now() - row.created_at).num_seconds();
    serde_json::json!({
        "id": row.id,
        "organization_id": row.organization_id,
        "agent_profile_id": row.agent_profile_id,
        "direction": row.direction,
        "status": row.status,
        "duration_secs": duration_secs,
    })
}

/// `GET /admin/calls/{id}`: one call, and whether it is live here.
#[get("/admin/calls/{id}")]
async fn call_detail(
    op: Operator,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let live = state.registry.find(CallId(id)).await.is_ok();
    let mut conn = state.conn().await?;
    let row = store::call(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("call"))?;
    let mut body = live_call_json(&row);
    body["live_here"] = live.into();
    body["stage"] = stage_here(&state, CallId(id)).await;
    body["hangup_cause"] = row.hangup_cause.clone().into();
    tracing::info!(operator = %op.name, call_id = %id, "admin: read call");
    Ok(HttpResponse::Ok().json(body))
}

/// `POST /admin/calls/{id}/hangup`: force a live call on this instance to end.
#[post("/admin/calls/{id}/hangup")]
async fn hangup(
    op: Operator,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mut conn = state.conn().await?;
    let row = store::call(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("call"))?;
    drop(conn);
    state
        .registry
        .hang_up(row.organization_id, CallId(id))
        .await
        .map_err(|_| ApiError::CallNotLive)?;
    tracing::warn!(operator = %op.name, call_id = %id, "admin: forced hang-up");
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "id": id, "status": "hanging_up" })))
}

/// `POST /admin/drain`: this instance reports not ready (`/health/ready` 503) and marks itself
/// draining in the cluster directory, so new calls go to peers (or are refused `USER_BUSY` when
/// none has room); live calls carry on until they end. The process keeps running: stopping it
/// (SIGTERM) then ends whatever is still live politely, as in README "Shutdown".
#[post("/admin/drain")]
async fn drain(op: Operator, state: web::Data<AppState>) -> HttpResponse {
    state.readiness.begin_shutdown();
    state.cluster.begin_drain().await;
    tracing::warn!(operator = %op.name, "admin: draining (readiness off)");
    HttpResponse::Accepted().json(serde_json::json!({ "status": "draining" }))
}

/// `GET /admin/jobs`: post-call jobs by status and the latest failures.
#[get("/admin/jobs")]
async fn jobs(op: Operator, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let counts: serde_json::Map<String, serde_json::Value> = store::job_counts(&mut conn)
        .await?
        .into_iter()
        .map(|(status, n)| (status, n.into()))
        .collect();
    let failed = store::failed_jobs(&mut conn, 50).await?;
    tracing::info!(operator = %op.name, "admin: listed jobs");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "counts": counts, "failed": failed })))
}

/// `POST /admin/jobs/{id}/retry`: a failed job runs again.
#[post("/admin/jobs/{id}/retry")]
async fn retry_job(
    op: Operator,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mut conn = state.conn().await?;
    if !store::retry_job(&mut conn, id).await? {
        return Err(ApiError::NotFound("failed job"));
    }
    tracing::warn!(operator = %op.name, job_id = %id, "admin: job queued again");
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "id": id, "status": "pending" })))
}

/// `GET /admin/log-filter`: the log filter in force.
#[get("/admin/log-filter")]
async fn get_log_filter(_op: Operator) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "filter": crate::telemetry::log_filter() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFilterBody {
    filter: String,
}

/// `PUT /admin/log-filter` `{"filter":"info,iace::actors=debug"}`: replaces it at run time.
#[put("/admin/log-filter")]
async fn set_log_filter(
    op: Operator,
    body: web::Json<LogFilterBody>,
) -> Result<HttpResponse, ApiError> {
    let filter = crate::telemetry::set_log_filter(&body.filter).map_err(ApiError::Validation)?;
    tracing::warn!(operator = %op.name, %filter, "admin: log filter changed");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "filter": filter })))
}

/// `GET /admin/config`: the effective settings; secrets print as `[redacted]`.
#[get("/admin/config")]
async fn config(op: Operator, state: web::Data<AppState>) -> HttpResponse {
    tracing::info!(operator = %op.name, "admin: read config");
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!("{:#?}", state.settings))
}

/// `GET /admin/migrations`: every migration and whether it is applied.
#[get("/admin/migrations")]
async fn migration_status(
    op: Operator,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let url = state.settings.database.url.expose().to_owned();
    // diesel's migration harness is synchronous.
    let states = web::block(move || migrations::status(&url))
        .await
        .map_err(ApiError::internal)??;
    tracing::info!(operator = %op.name, "admin: read migrations");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "migrations": states })))
}
