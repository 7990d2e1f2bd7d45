//! Request middleware: the request id and timing (plus the HTTP metrics), and the rewrite that
//! gives every error response, actix's own included, the `{"code","message"}` JSON body.

use crate::error::{payload_error_for, ERROR_CODE_HEADER};
use crate::http::AppState;
use crate::telemetry::{RequestId, RequestStart};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use std::time::Instant;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Accepts a caller's request id only if it is short printable ASCII (it ends up in logs).
fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_owned())
}

/// Outermost middleware: picks the request id, stamps the start time, returns the id in the
/// response and records the request in the HTTP metrics.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    req.extensions_mut().insert(RequestStart(started));
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    // Bounded to a fixed set where the metric is recorded (telemetry::metrics::method_label).
    let method = crate::telemetry::metrics::method_label(req.method().as_str());
    let state = req.app_data::<web::Data<AppState>>().cloned();

    let mut res = next.call(req).await?;

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    if let Some(state) = state {
        state.metrics.observe_request(
            &route,
            method,
            res.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(res)
}

/// Innermost middleware: an error response without our JSON body (a 404 for an unknown route,
/// a 405, a payload error raised by actix itself) gets one, with a stable code.
pub async fn json_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map_or(0, |s| s.settings.server.body_limit_bytes);
    let res = next.call(req).await?.map_into_boxed_body();
    let status = res.status();
    let has_code = res.headers().contains_key(ERROR_CODE_HEADER);
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || has_code || is_json {
        return Ok(res);
    }
    let api = payload_error_for(status, limit);
    // Keep headers such as Allow or Retry-After that actix set on the original response.
    let mut rewritten = api.error_response();
    *rewritten.status_mut() = status;
    for (name, value) in res.headers() {
        if name != CONTENT_TYPE && name != actix_web::http::header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(res.into_response(rewritten))
}
