//! The `AuthUser` extractor: a handler that takes one only runs for a valid, unrevoked bearer
//! access token, and gets the caller's id, organization and role from the token (never from the
//! request). Role checks are declared per route with `AuthUser::require`. It lives at the HTTP edge
//! because it reads `AppState`; the checks themselves are `auth::AuthService`.

use crate::auth::tokens::Claims;
use crate::auth::AuthError;
use crate::domain::Role;
use crate::error::ApiError;
use crate::http::AppState;
use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use uuid::Uuid;

/// The authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
}

impl AuthUser {
    /// Passes when the caller's role is at least `min`; 403 `forbidden` otherwise. Call it
    /// first thing in a handler: it is the route's declaration of who may use it.
    pub fn require(&self, min: Role) -> Result<(), ApiError> {
        if self.role.at_least(min) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("requires the {min} role")))
        }
    }
}

impl From<&Claims> for AuthUser {
    fn from(claims: &Claims) -> Self {
        AuthUser {
            user_id: claims.sub,
            organization_id: claims.org,
            role: claims.role,
        }
    }
}

/// The caller plus the claims of the token used, for handlers that act on the session itself
/// (logout needs its `jti` and `sid`).
#[derive(Debug, Clone)]
pub struct CurrentSession {
    pub user: AuthUser,
    pub claims: Claims,
}

/// Takes the token out of `Authorization: Bearer <token>`.
fn bearer_token(req: &HttpRequest) -> Result<String, AuthError> {
    let value = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::InvalidToken("malformed authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::InvalidToken("malformed authorization header"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::InvalidToken("expected a bearer token"));
    }
    Ok(token.to_owned())
}

fn authenticate(req: &HttpRequest) -> LocalBoxFuture<'static, Result<CurrentSession, ApiError>> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let token = bearer_token(req);
    Box::pin(async move {
        let state =
            state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState not registered")))?;
        let claims = state.auth.authenticate(&token?).await?;
        let user = AuthUser::from(&claims);
        let span = tracing::Span::current();
        span.record("user_id", tracing::field::display(user.user_id));
        span.record("org_id", tracing::field::display(user.organization_id));
        Ok(CurrentSession { user, claims })
    })
}

impl FromRequest for CurrentSession {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        authenticate(req)
    }
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = authenticate(req);
        Box::pin(async move { session.await.map(|s| s.user) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn user(role: Role) -> AuthUser {
        AuthUser {
            user_id: Uuid::new_v4(),
            organization_id: Uuid::new_v4(),
            role,
        }
    }

    #[test]
    fn require_means_at_least() {
        assert!(user(Role::Admin).require(Role::Agent).is_ok());
        assert!(user(Role::Agent).require(Role::Agent).is_ok());
        let err = user(Role::Viewer).require(Role::Agent).unwrap_err();
        assert_eq!(err.code(), "forbidden");
    }

    #[test]
    fn bearer_token_is_taken_from_the_header() {
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, "Bearer abc.def.ghi"))
            .to_http_request();
        assert_eq!(bearer_token(&req).unwrap(), "abc.def.ghi");
        let req = TestRequest::default().to_http_request();
        assert!(matches!(bearer_token(&req), Err(AuthError::MissingToken)));
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, "Basic dXNlcjpwdw=="))
            .to_http_request();
        assert!(matches!(
            bearer_token(&req),
            Err(AuthError::InvalidToken(_))
        ));
    }
}
