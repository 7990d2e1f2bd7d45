//! User administration within the caller's own organization (admins only): list, create, read,
//! change role, disable, revoke sessions. A user of another organization is "not found".

use crate::auth::UserChanges;
use crate::domain::Role;
use crate::error::{ApiError, ErrorBody};
use crate::http::extractor::AuthUser;
use crate::http::AppState;
use crate::store::users::User;
use actix_web::{get, patch, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_users)
        .service(create_user)
        .service(get_user)
        .service(update_user)
        .service(revoke_user_sessions);
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserDto {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl From<&User> for UserDto {
    fn from(u: &User) -> Self {
        UserDto {
            id: u.id,
            organization_id: u.organization_id,
            email: u.email.clone(),
            role: u.role,
            disabled: u.is_disabled(),
            created_at: u.created_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserList {
    users: Vec<UserDto>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The sign-in address (unique service-wide).
    email: String,
    role: Role,
    /// Generated (and returned once) when absent.
    password: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedUser {
    user: UserDto,
    /// Present only when the server generated the password: shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    role: Option<Role>,
    disabled: Option<bool>,
}

/// The users of the caller's organization.
#[utoipa::path(
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The users", body = UserList),
        (status = 403, description = "Requires the admin role", body = ErrorBody),
    )
)]
#[get("/api/v1/users")]
async fn list_users(
    state: web::Data<AppState>,
    caller: AuthUser,
) -> Result<web::Json<UserList>, ApiError> {
    caller.require(Role::Admin)?;
    let users = state.auth.list_users(caller.organization_id).await?;
    Ok(web::Json(UserList {
        users: users.iter().map(UserDto::from).collect(),
    }))
}

/// Creates a user in the caller's organization.
#[utoipa::path(
    tag = "users",
    security(("bearer" = [])),
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created; the generated password is shown this once", body = CreatedUser),
        (status = 403, description = "Requires the admin role", body = ErrorBody),
        (status = 422, description = "Invalid email, role or password, or an address that cannot be used", body = ErrorBody),
    )
)]
#[post("/api/v1/users")]
async fn create_user(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: web::Json<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let body = body.into_inner();
    let (user, password) = state
        .auth
        .create_user(
            caller.organization_id,
            &body.email,
            body.role,
            body.password,
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/users/{}", user.id)))
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedUser {
            user: UserDto::from(&user),
            password,
        }))
}

/// One user of the caller's organization.
#[utoipa::path(
    tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserDto),
        (status = 403, description = "Requires the admin role", body = ErrorBody),
        (status = 404, description = "No such user in this organization", body = ErrorBody),
    )
)]
#[get("/api/v1/users/{id}")]
async fn get_user(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<Uuid>,
) -> Result<web::Json<UserDto>, ApiError> {
    caller.require(Role::Admin)?;
    let user = state
        .auth
        .find_user(caller.organization_id, id.into_inner())
        .await?;
    Ok(web::Json(UserDto::from(&user)))
}

/// Changes a user's role or disables them.
#[utoipa::path(
    tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The user as changed", body = UserDto),
        (status = 403, description = "Requires the admin role", body = ErrorBody),
        (status = 404, description = "No such user in this organization", body = ErrorBody),
        (status = 409, description = "Admins cannot change their own role or disable themselves", body = ErrorBody),
    )
)]
#[patch("/api/v1/users/{id}")]
async fn update_user(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<Uuid>,
    body: web::Json<UpdateUser>,
) -> Result<web::Json<UserDto>, ApiError> {
    caller.require(Role::Admin)?;
    let id = id.into_inner();
    // An admin demoting or disabling themselves could leave the organization with no admin.
    if id == caller.user_id {
        return Err(ApiError::Conflict(
            "admins cannot change their own role or disable themselves".into(),
        ));
    }
    let changes = UserChanges {
        role: body.role,
        disabled: body.disabled,
    };
    let user = state
        .auth
        .update_user(caller.organization_id, id, changes)
        .await?;
    Ok(web::Json(UserDto::from(&user)))
}

/// Signs a user out everywhere.
#[utoipa::path(
    tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Every session of the user revoked"),
        (status = 403, description = "Requires the admin role", body = ErrorBody),
        (status = 404, description = "No such user in this organization", body = ErrorBody),
    )
)]
#[post("/api/v1/users/{id}/revoke-sessions")]
async fn revoke_user_sessions(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    state
        .auth
        .revoke_all_sessions(caller.organization_id, id.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
