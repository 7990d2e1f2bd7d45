//! Creating organizations and users: shared by `iace admin`, the admin REST routes and the test
//! helpers, so an account made any of these ways is the same.

use crate::auth::password::{PasswordError, PasswordHasher};
use crate::auth::AuthError;
use crate::domain::Role;
use crate::store::organizations::{self, Organization};
use crate::store::users::{self, NewUser, User};
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

/// Longest email address accepted (RFC 5321's path limit).
const MAX_EMAIL_LEN: usize = 254;

/// Trims and lowercases an address and checks it has the shape `local@domain`.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    let well_formed = email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if well_formed {
        Ok(email)
    } else {
        Err(AuthError::Validation("email is not a valid address".into()))
    }
}

pub async fn create_org(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> Result<Organization, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AuthError::Validation(
            "organization name must be 1 to 200 characters".into(),
        ));
    }
    Ok(organizations::insert(conn, name).await?)
}

/// Creates a user in `organization_id` with an argon2id hash of `password`. The hash is
/// computed before the insert, on the blocking pool.
pub async fn create_user(
    conn: &mut AsyncPgConnection,
    hasher: &PasswordHasher,
    organization_id: Uuid,
    email: &str,
    role: Role,
    password: &str,
) -> Result<User, AuthError> {
    let email = normalize_email(email)?;
    let password_hash = hasher
        .hash_off_thread(password.to_owned())
        .await
        .map_err(|e| match e {
            PasswordError::Policy => AuthError::Validation(e.to_string()),
            other => AuthError::Internal(other.into()),
        })?;
    let new = NewUser {
        id: Uuid::now_v7(),
        organization_id,
        email: &email,
        password_hash: &password_hash,
        role: role.as_str(),
    };
    users::insert(conn, new).await.map_err(|e| {
        if e.is_unique_violation() {
            AuthError::EmailTaken
        } else if is_foreign_key_violation(&e) {
            AuthError::NotFound("organization")
        } else {
            e.into()
        }
    })
}

fn is_foreign_key_violation(err: &crate::store::StoreError) -> bool {
    matches!(
        err,
        crate::store::StoreError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _
        ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@localhost",
            "a da@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
