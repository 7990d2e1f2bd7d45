//! Session routes: login, refresh, logout, logout-all, the caller's own account (`/me`) and the
//! published verification keys (`/.well-known/jwks.json`).
//!
//! The web app (`/app/`) keeps its refresh token in a cookie no script can read: its login and
//! refresh requests carry the [`WEB_CLIENT_HEADER`]; the answer then sets [`REFRESH_COOKIE`]
//! (HttpOnly, Secure, SameSite=Strict, path [`REFRESH_PATH`]) instead of returning the token in
//! the body. A cookie refresh needs that header too, which a cross-site form cannot send (CSRF).
//! JSON clients are unchanged.

use crate::auth::{rate_limit, IssuedTokens};
use crate::error::{ApiError, ErrorBody};
use crate::http::extractor::{AuthUser, CurrentSession};
use crate::http::users::UserDto;
use crate::http::AppState;
use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::guard::GuardContext;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The cookie refresh first: its guard picks the web app's requests.
    cfg.service(login)
        .service(refresh_from_cookie)
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

/// The web app's refresh token cookie.
pub const REFRESH_COOKIE: &str = "iace_refresh";
/// The only path the browser sends the cookie to.
pub const REFRESH_PATH: &str = "/api/v1/auth/refresh";
/// Sent by the web app on login, refresh and logout (any value): the refresh token goes in the
/// cookie.
pub const WEB_CLIENT_HEADER: &str = "x-iace-web";

fn is_web_client(ctx: &GuardContext) -> bool {
    ctx.head().headers().contains_key(WEB_CLIENT_HEADER)
}

/// A token pair as clients receive it (OAuth 2.0 token response field names). The web app's
/// answer has no `refresh_token`: it is in the cookie.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokensDto {
    access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String)]
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    refresh_expires_in: i64,
}

impl From<IssuedTokens> for TokensDto {
    fn from(t: IssuedTokens) -> Self {
        TokensDto {
            access_token: t.access_token,
            token_type: "Bearer",
            expires_in: t.access_expires_in,
            refresh_token: Some(t.refresh_token),
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

fn refresh_cookie(value: String, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(REFRESH_COOKIE, value)
        .path(REFRESH_PATH)
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .max_age(time::Duration::seconds(max_age_secs))
        .finish()
}

/// The web app's answer: the refresh token moves to the cookie.
fn to_web_client(tokens: IssuedTokens) -> HttpResponse {
    let cookie = refresh_cookie(tokens.refresh_token.clone(), tokens.refresh_expires_in);
    let mut body = TokensDto::from(tokens);
    body.refresh_token = None;
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .cookie(cookie)
        .json(body)
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
    if req.headers().contains_key(WEB_CLIENT_HEADER) {
        return Ok(to_web_client(tokens));
    }
    Ok(no_store(tokens))
}

#[post("/api/v1/auth/refresh", guard = "is_web_client")]
async fn refresh_from_cookie(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let cookie = req.cookie(REFRESH_COOKIE).ok_or(ApiError::MissingToken)?;
    let network = client_network(&req, &state.settings.auth.client_ip_header);
    let tokens = state.auth.refresh(cookie.value(), &network).await?;
    Ok(to_web_client(tokens))
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
    // The web app's cookie goes too (harmless for other clients, which have none).
    Ok(HttpResponse::NoContent()
        .cookie(refresh_cookie(String::new(), 0))
        .finish())
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
