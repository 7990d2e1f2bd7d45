//! What an operator decides per organization, on the ops listener behind
//! `admin.operator_token`: the phone numbers it owns (`/admin/organizations/{org}/numbers/{n}`,
//! the same store calls as `iace admin assign-number`; tenants pick agent numbers only among
//! them) and where its calls may go (`/admin/organizations/{org}/outbound-policy`).

use super::Operator;
use crate::domain::destination::DestinationPolicy;
use crate::domain::phone::PhoneNumber;
use crate::error::ApiError;
use crate::http::AppState;
use crate::store::numbers::{self, Assignment};
use crate::store::organizations;
use actix_web::{delete, put, web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(assign_number)
        .service(release_number)
        .service(set_outbound_policy);
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboundPolicyBody {
    /// E.164 prefixes (country codes) the organization's calls may go to; `null`: the
    /// deployment's `outbound.allowed_prefixes`.
    allowed_prefixes: Option<Vec<String>>,
}

/// `PUT /admin/organizations/{org}/outbound-policy` `{"allowed_prefixes": ["+1", "+44"]}`: the
/// countries this organization may dial (null: the deployment's default). The blocked
/// premium-rate ranges apply whatever it says. 200 with the effective policy.
#[put("/admin/organizations/{org}/outbound-policy")]
async fn set_outbound_policy(
    op: Operator,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
    body: web::Json<OutboundPolicyBody>,
) -> Result<HttpResponse, ApiError> {
    let org = path.into_inner();
    let prefixes = body.into_inner().allowed_prefixes;
    if let Some(list) = &prefixes {
        if list.len() > 100 || !list.iter().all(|p| DestinationPolicy::valid_prefix(p)) {
            return Err(ApiError::Validation(
                "allowed_prefixes: at most 100, each + then 1 to 15 digits".into(),
            ));
        }
    }
    let mut conn = state.conn().await?;
    if !organizations::set_allowed_destination_prefixes(&mut conn, org, prefixes.clone()).await? {
        return Err(ApiError::NotFound("organization"));
    }
    tracing::warn!(operator = %op.name, organization_id = %org, ?prefixes, "admin: outbound policy set");
    let outbound = &state.settings.outbound;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "organization_id": org,
        "allowed_prefixes": prefixes.unwrap_or_else(|| outbound.allowed_prefixes.clone()),
        "blocked_prefixes": outbound.blocked_prefixes,
    })))
}
