//! The HTTP edge's error type: every failure a client can see, one table of stable codes and
//! statuses, and the `{"code","message"}` body used for all of them (actix's own errors included).

use crate::auth::AuthError;
use crate::providers::telnyx::SignatureError;
use crate::store::agents::AgentWriteError;
use crate::store::StoreError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The JSON body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`not_found`, `validation_failed`, ...).
    #[schema(example = "not_found")]
    pub code: String,
    /// A human-readable explanation; not stable.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    Validation(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthorized(String),
    #[error("missing bearer token")]
    MissingToken,
    #[error("{0}")]
    InvalidToken(String),
    #[error("token expired")]
    TokenExpired,
    #[error("token revoked")]
    TokenRevoked,
    #[error("refresh token already used; the session has been revoked")]
    RefreshTokenReused,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("user disabled")]
    UserDisabled,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("no route matches this path")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("the call has already ended")]
    CallEnded,
    #[error("media token is missing, invalid or expired")]
    MediaToken,
    #[error("this media token has already opened a socket")]
    MediaTokenUsed,
    #[error("the call already has a media socket")]
    MediaStreamAttached,
    #[error("the call is not live on this instance")]
    CallNotLive,
    #[error("webhook rejected: {0}")]
    WebhookSignature(#[from] SignatureError),
    #[error("too many requests, retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("too busy to take this request now, retry after {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("every instance is at capacity, retry after {retry_after_secs} s")]
    AtCapacity { retry_after_secs: u64 },
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The one table of codes and statuses. Codes are stable API: clients match on them.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            ApiError::BadRequest(_) => ("bad_request", StatusCode::BAD_REQUEST),
            ApiError::InvalidJson(_) => ("invalid_json", StatusCode::BAD_REQUEST),
            ApiError::Validation(_) => ("validation_failed", StatusCode::UNPROCESSABLE_ENTITY),
            ApiError::PayloadTooLarge { .. } => {
                ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE)
            }
            ApiError::Unauthorized(_) => ("unauthorized", StatusCode::UNAUTHORIZED),
            ApiError::MissingToken => ("missing_token", StatusCode::UNAUTHORIZED),
            ApiError::InvalidToken(_) => ("invalid_token", StatusCode::UNAUTHORIZED),
            ApiError::TokenExpired => ("token_expired", StatusCode::UNAUTHORIZED),
            ApiError::TokenRevoked => ("token_revoked", StatusCode::UNAUTHORIZED),
            ApiError::RefreshTokenReused => ("refresh_token_reused", StatusCode::UNAUTHORIZED),
            ApiError::InvalidCredentials => ("invalid_credentials", StatusCode::UNAUTHORIZED),
            ApiError::UserDisabled => ("user_disabled", StatusCode::FORBIDDEN),
            ApiError::Forbidden(_) => ("forbidden", StatusCode::FORBIDDEN),
            ApiError::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            ApiError::RouteNotFound => ("route_not_found", StatusCode::NOT_FOUND),
            ApiError::MethodNotAllowed => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
            ApiError::Conflict(_) => ("conflict", StatusCode::CONFLICT),
            ApiError::CallEnded => ("call_ended", StatusCode::CONFLICT),
            ApiError::MediaToken => ("invalid_media_token", StatusCode::UNAUTHORIZED),
            ApiError::MediaTokenUsed => ("media_token_used", StatusCode::CONFLICT),
            ApiError::MediaStreamAttached => ("media_stream_attached", StatusCode::CONFLICT),
            ApiError::CallNotLive => ("call_not_live", StatusCode::CONFLICT),
            ApiError::WebhookSignature(e) => {
                use SignatureError as S;
                match e {
                    S::Missing => ("signature_missing", StatusCode::UNAUTHORIZED),
                    S::Malformed => ("signature_malformed", StatusCode::UNAUTHORIZED),
                    S::Invalid => ("signature_invalid", StatusCode::UNAUTHORIZED),
                    S::Stale => ("timestamp_stale", StatusCode::UNAUTHORIZED),
                    S::BadPublicKey => ("webhook_key_invalid", StatusCode::SERVICE_UNAVAILABLE),
                }
            }
            ApiError::RateLimited { .. } => ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
            ApiError::Overloaded { .. } => ("overloaded", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::ShuttingDown => ("shutting_down", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::AtCapacity { .. } => ("at_capacity", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::Unavailable(_) => ("service_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::Internal(_) => ("internal_error", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    pub fn code(&self) -> &'static str {
        self.code_and_status().0
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }
}

// Lower layers own their errors; each one's mapping to the table above lives here, at the edge.

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Query(diesel::result::Error::NotFound) => ApiError::NotFound("resource"),
            StoreError::Pool(_) | StoreError::Connection(_) | StoreError::Redis(_) => {
                ApiError::Unavailable(err.into())
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::MissingToken => ApiError::MissingToken,
            AuthError::InvalidToken(why) => ApiError::InvalidToken(why.to_owned()),
            AuthError::TokenExpired => ApiError::TokenExpired,
            AuthError::TokenRevoked => ApiError::TokenRevoked,
            AuthError::RefreshTokenReused => ApiError::RefreshTokenReused,
            AuthError::InvalidCredentials => ApiError::InvalidCredentials,
            AuthError::UserDisabled => ApiError::UserDisabled,
            AuthError::NotFound(what) => ApiError::NotFound(what),
            // A generic validation error: a conflict would tell an admin of one tenant that
            // the address has an account somewhere (addresses are unique service-wide).
            AuthError::EmailTaken => {
                ApiError::Validation("email: this address cannot be used".into())
            }
            AuthError::Validation(why) => ApiError::Validation(why),
            AuthError::RateLimited { retry_after_secs } => {
                ApiError::RateLimited { retry_after_secs }
            }
            AuthError::Overloaded { retry_after_secs } => ApiError::Overloaded { retry_after_secs },
            AuthError::Store(e) => e.into(),
            AuthError::Redis(e) => ApiError::Unavailable(e.into()),
            AuthError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<AgentWriteError> for ApiError {
    fn from(e: AgentWriteError) -> Self {
        match e {
            // Both within the caller's own organization: nothing about other tenants leaks.
            AgentWriteError::NumberTaken(_) => ApiError::Conflict(e.to_string()),
            AgentWriteError::NumberNotOwned(_) => ApiError::Validation(format!(
                "phone_numbers: {e} (numbers are assigned by an operator)"
            )),
            AgentWriteError::Store(s) => s.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code_and_status().1
    }

    fn error_response(&self) -> HttpResponse {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            // The full cause chain goes to the log, never to the client.
            tracing::error!(error.code = code, error.cause = ?anyhow_chain(self), "request failed");
        }
        let mut builder = HttpResponse::build(status);
        if let ApiError::RateLimited { retry_after_secs }
        | ApiError::Overloaded { retry_after_secs }
        | ApiError::AtCapacity { retry_after_secs } = self
        {
            builder.insert_header(("Retry-After", retry_after_secs.to_string()));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: tell the client which scheme, and why the token was refused.
            let challenge = match self {
                ApiError::MissingToken | ApiError::InvalidCredentials => "Bearer".to_owned(),
                _ => format!("Bearer error=\"invalid_token\", error_description=\"{code}\""),
            };
            builder.insert_header(("WWW-Authenticate", challenge));
        }
        builder
            .insert_header((ERROR_CODE_HEADER, code))
            .json(ErrorBody {
                code: code.to_owned(),
                message: self.to_string(),
            })
    }
}

/// Response header naming the error code, so the request log line (and proxies) can see it.
pub const ERROR_CODE_HEADER: &str = "x-error-code";

fn anyhow_chain(err: &ApiError) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Maps actix's JSON extractor errors to our body (`invalid_json` / `payload_too_large`).
pub fn json_error_handler(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::OverflowKnownLength { limit, .. } | E::Overflow { limit } => {
            ApiError::PayloadTooLarge { limit: *limit }
        }
        E::ContentType => ApiError::BadRequest("Content-Type must be application/json".to_owned()),
        E::Deserialize(e) if e.is_data() => ApiError::Validation(e.to_string()),
        other => ApiError::InvalidJson(other.to_string()),
    };
    api.into()
}

/// Maps actix's path extractor errors (a malformed id in the URL, say) to our body.
pub fn path_error_handler(
    err: actix_web::error::PathError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid path parameter: {err}")).into()
}

/// Maps actix's query extractor errors to our body.
pub fn query_error_handler(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query string: {err}")).into()
}

/// Maps raw payload errors (overflow of the body cap) to our body.
pub fn payload_error_for(status: StatusCode, limit: usize) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit },
        StatusCode::NOT_FOUND => ApiError::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        s if s.is_server_error() => {
            ApiError::Internal(anyhow::anyhow!("unhandled server error {s}"))
        }
        s => ApiError::BadRequest(s.canonical_reason().unwrap_or("bad request").to_lowercase()),
    }
}
