//! Session routes: login, refresh, logout, logout-all, the caller's own account (`/me`) and the
//! published verification keys (`/.well-known/jwks.json`).

use crate::auth::{rate_limit, IssuedTokens};
use crate::error::{ApiError, ErrorBody};
use crate::http::extractor::{AuthUser, CurrentSession};
use crate::http::users::UserDto;
use crate::http::AppState;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(login)
        .service(refresh)
        .service(logout)
        .service(logout_all)
        .service(me)
        .service(jwks);
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// A token pair as clients receive it (OAuth 2.0 token response field names).
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokensDto {
    access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String)]
    token_type: &'static str,
    expires_in: i64,
    refresh_token: String,
    refresh_expires_in: i64,
}

impl From<IssuedTokens> for TokensDto {
    fn from(t: IssuedTokens) -> Self {
        TokensDto {
            access_token: t.access_token,
            token_type: "Bearer",
            expires_in: t.access_expires_in,
            refresh_token: t.refresh_token,
            refresh_expires_in: t.refresh_expires_in,
        }
    }
}

/// The client network rate limits key on (an IPv4 address, an IPv6 /64): from the configured
/// proxy header when it holds an IP (behind Fly's proxy), else the TCP peer. Parsed, so nothing
/// arbitrary reaches a Redis key.
fn client_network(req: &HttpRequest, header: &str) -> String {
    let from_header = (!header.is_empty())
        .then(|| req.headers().get(header))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    from_header
        .or_else(|| req.peer_addr().map(|a| a.ip()))
        .map_or_else(|| "unknown".to_owned(), rate_limit::client_network)
}

fn no_store(tokens: IssuedTokens) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(TokensDto::from(tokens))
}

/// Email and password for an access token and a refresh token.
#[utoipa::path(
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokensDto),
        (status = 401, description = "Wrong email or password (`invalid_credentials`)", body = ErrorBody),
        (status = 403, description = "The user is disabled", body = ErrorBody),
        (status = 429, description = "Too many attempts from this network or for this account (Retry-After)", body = ErrorBody),
        (status = 503, description = "Too busy hashing passwords now (`overloaded`, Retry-After), or a dependency is down", body = ErrorBody),
    )
)]
#[post("/api/v1/auth/login")]
async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let ip = client_network(&req, &state.settings.auth.client_ip_header);
    let tokens = state.auth.login(&body.email, &body.password, &ip).await?;
    Ok(no_store(tokens))
}

/// A refresh token for a new token pair (the old refresh token is used up).
#[utoipa::path(
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = TokensDto),
        (status = 401, description = "Invalid, expired or revoked refresh token; a reused one revokes the session", body = ErrorBody),
        (status = 403, description = "The user is disabled", body = ErrorBody),
        (status = 429, description = "Too many refreshes from this network (Retry-After)", body = ErrorBody),
    )
)]
#[post("/api/v1/auth/refresh")]
async fn refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let network = client_network(&req, &state.settings.auth.client_ip_header);
    let tokens = state.auth.refresh(&body.refresh_token, &network).await?;
    Ok(no_store(tokens))
}

/// Ends the session of the token used.
#[utoipa::path(
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
    )
)]
#[post("/api/v1/auth/logout")]
async fn logout(
    state: web::Data<AppState>,
    session: CurrentSession,
) -> Result<HttpResponse, ApiError> {
    state.auth.logout(&session.claims).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Ends every session of the caller.
#[utoipa::path(
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session revoked"),
    )
)]
#[post("/api/v1/auth/logout-all")]
async fn logout_all(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    state
        .auth
        .revoke_all_sessions(user.organization_id, user.user_id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller's own account.
#[utoipa::path(
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserDto),
        (status = 404, description = "The user no longer exists", body = ErrorBody),
    )
)]
#[get("/api/v1/me")]
async fn me(state: web::Data<AppState>, user: AuthUser) -> Result<web::Json<UserDto>, ApiError> {
    let found = state
        .auth
        .find_user(user.organization_id, user.user_id)
        .await?;
    Ok(web::Json(UserDto::from(&found)))
}

#[get("/.well-known/jwks.json")]
async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .json(state.auth.keys().jwks())
}
