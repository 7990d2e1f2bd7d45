//! What the engine learnt from calls, read-only: a call's summary, a caller's memory and the
//! state of a call's post-call jobs. Tenant-scoped, viewer role.

use crate::domain::phone::PhoneNumber;
use crate::domain::role::Role;
use crate::error::{ApiError, ErrorBody};
use crate::http::extractor::AuthUser;
use crate::http::AppState;
use crate::store::{calls, jobs, memory};
use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get_call_summary)
        .service(list_call_jobs)
        .service(get_caller_memory);
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SummaryDto {
    call_id: Uuid,
    /// `null` until the `summarize_call` job has run.
    summary: Option<String>,
    outcome: Option<String>,
}

/// A call's post-call summary and outcome.
#[utoipa::path(
    tag = "calls",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The call's id")),
    responses(
        (status = 200, description = "The summary (null until summarised)", body = SummaryDto),
        (status = 404, description = "No such call in this organization", body = ErrorBody),
    )
)]
#[get("/api/v1/calls/{id}/summary")]
async fn get_call_summary(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let mut conn = state.conn().await?;
    let call = calls::find(&mut conn, user.organization_id, path.into_inner())
        .await?
        .ok_or(ApiError::NotFound("call"))?;
    Ok(HttpResponse::Ok().json(SummaryDto {
        call_id: call.id,
        summary: call.summary,
        outcome: call.outcome,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobDto {
    id: Uuid,
    kind: String,
    status: String,
    attempts: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobList {
    data: Vec<JobDto>,
}

/// The post-call jobs of a call and their state.
#[utoipa::path(
    tag = "calls",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The call's id")),
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 404, description = "No such call in this organization", body = ErrorBody),
    )
)]
#[get("/api/v1/calls/{id}/jobs")]
async fn list_call_jobs(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let call_id = path.into_inner();
    let mut conn = state.conn().await?;
    calls::find(&mut conn, user.organization_id, call_id)
        .await?
        .ok_or(ApiError::NotFound("call"))?;
    let rows = jobs::list_for_call(&mut conn, user.organization_id, call_id).await?;
    Ok(HttpResponse::Ok().json(JobList {
        data: rows
            .into_iter()
            .map(|j| JobDto {
                id: j.id,
                kind: j.kind,
                status: j.status,
                attempts: j.attempts,
                max_attempts: j.max_attempts,
                run_at: j.run_at,
                last_error: j.last_error,
                created_at: j.created_at,
                updated_at: j.updated_at,
            })
            .collect(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MemoryDto {
    caller_number: String,
    summary: String,
    facts: Vec<String>,
    call_id: Option<Uuid>,
    embedding_model: String,
    created_at: DateTime<Utc>,
}

/// What the engine remembers of a caller, by number.
#[utoipa::path(
    tag = "knowledge",
    security(("bearer" = [])),
    params(("number" = PhoneNumber, Path, description = "The caller's E.164 number (`+` may be sent as %2B)")),
    responses(
        (status = 200, description = "The latest memory of the caller", body = MemoryDto),
        (status = 400, description = "Not an E.164 number", body = ErrorBody),
        (status = 404, description = "Nothing remembered of this caller", body = ErrorBody),
    )
)]
#[get("/api/v1/callers/{number}/memory")]
async fn get_caller_memory(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    // actix leaves `%2B` encoded in paths; a client may send the `+` either way.
    let raw = path.into_inner().replace("%2B", "+").replace("%2b", "+");
    let number =
        PhoneNumber::parse(raw.trim()).map_err(|e| ApiError::BadRequest(format!("number: {e}")))?;
    let mut conn = state.conn().await?;
    let snapshot = memory::latest(&mut conn, user.organization_id, number.as_str())
        .await?
        .ok_or(ApiError::NotFound("caller memory"))?;
    Ok(HttpResponse::Ok().json(MemoryDto {
        facts: snapshot.fact_list(),
        caller_number: snapshot.caller_number,
        summary: snapshot.summary,
        call_id: snapshot.call_id,
        embedding_model: snapshot.embedding_model,
        created_at: snapshot.created_at,
    }))
}
