//! `/admin/organizations/{org}/numbers/{number}` (ops listener, `admin.operator_token`):
//! assigning phone numbers to organizations and taking them back, the same store calls as
//! `iace admin assign-number`. Tenants pick agent numbers only among those assigned here.

use super::Operator;
use crate::domain::phone::PhoneNumber;
use crate::error::ApiError;
use crate::http::AppState;
use crate::store::numbers::{self, Assignment};
use crate::store::organizations;
use actix_web::{delete, put, web, HttpResponse};
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(assign_number).service(release_number);
}

/// The organization and the E.164 number a path names.
fn org_and_number(path: web::Path<(Uuid, String)>) -> Result<(Uuid, PhoneNumber), ApiError> {
    let (org, raw) = path.into_inner();
    let number = PhoneNumber::parse(&raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((org, number))
}

/// `PUT /admin/organizations/{org}/numbers/{number}`: 201 assigned, 200 already owned, 409 when
/// another organization owns it (an operator may know that), 404 no such organization.
#[put("/admin/organizations/{org}/numbers/{number}")]
async fn assign_number(
    op: Operator,
    state: web::Data<AppState>,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    let (org, number) = org_and_number(path)?;
    let mut conn = state.conn().await?;
    if organizations::find(&mut conn, org).await?.is_none() {
        return Err(ApiError::NotFound("organization"));
    }
    let body = serde_json::json!({ "organization_id": org, "number": number });
    match numbers::assign(&mut conn, org, number.as_str()).await? {
        Assignment::Assigned => {
            tracing::warn!(operator = %op.name, organization_id = %org, %number, "admin: number assigned");
            Ok(HttpResponse::Created().json(body))
        }
        Assignment::AlreadyOwned => Ok(HttpResponse::Ok().json(body)),
        Assignment::HeldByAnother => Err(ApiError::Conflict(format!(
            "{number} belongs to another organization"
        ))),
    }
}

/// `DELETE /admin/organizations/{org}/numbers/{number}`: 204; the organization's profiles stop
/// answering the number.
#[delete("/admin/organizations/{org}/numbers/{number}")]
async fn release_number(
    op: Operator,
    state: web::Data<AppState>,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    let (org, number) = org_and_number(path)?;
    if numbers::release(&mut *state.conn().await?, org, number.as_str()).await? {
        tracing::warn!(operator = %op.name, organization_id = %org, %number, "admin: number released");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("number"))
    }
}
