//! Session routes: login, refresh, logout, logout-all, the caller's own account (`/me`) and the
//! published verification keys (`/.well-known/jwks.json`).

use crate::auth::{rate_limit, IssuedTokens};
use crate::error::ApiError;
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

#[derive(Deserialize)]
struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct RefreshRequest {
    refresh_token: String,
}

/// A token pair as clients receive it (OAuth 2.0 token response field names).
#[derive(Serialize)]
struct TokensDto {
    access_token: String,
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

#[post("/api/v1/auth/logout")]
async fn logout(
    state: web::Data<AppState>,
    session: CurrentSession,
) -> Result<HttpResponse, ApiError> {
    state.auth.logout(&session.claims).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[post("/api/v1/auth/logout-all")]
async fn logout_all(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    state
        .auth
        .revoke_all_sessions(user.organization_id, user.user_id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

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
