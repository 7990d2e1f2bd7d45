//! Refresh tokens, stored as hashes. A family is one login; each rotation adds a row to it and
//! marks the previous one rotated. Revoking a family revokes every row in it.

use crate::store::schema::refresh_tokens;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshToken {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub family_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct NewRefreshToken<'a> {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub family_id: Uuid,
    pub token_hash: &'a [u8],
    pub expires_at: DateTime<Utc>,
}

/// When family `family_id` began: its first token's creation (the login).
pub async fn family_started(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    family_id: Uuid,
) -> Result<DateTime<Utc>, StoreError> {
    let started: Option<DateTime<Utc>> = refresh_tokens::table
        .filter(refresh_tokens::organization_id.eq(organization_id))
        .filter(refresh_tokens::family_id.eq(family_id))
        .select(diesel::dsl::min(refresh_tokens::created_at))
        .first(conn)
        .await?;
    started.ok_or(StoreError::Query(diesel::result::Error::NotFound))
}

pub async fn insert(
    conn: &mut AsyncPgConnection,
    new: NewRefreshToken<'_>,
) -> Result<RefreshToken, StoreError> {
    Ok(diesel::insert_into(refresh_tokens::table)
        .values(&new)
        .returning(RefreshToken::as_returning())
        .get_result(conn)
        .await?)
}

/// Finds a token by its hash and locks the row, so two concurrent uses of one token are
/// serialized (the second sees it rotated). The hash is the credential, so no organization
/// filter applies here; the row then names its organization.
pub async fn find_by_hash_for_update(
    conn: &mut AsyncPgConnection,
    token_hash: &[u8],
) -> Result<Option<RefreshToken>, StoreError> {
    Ok(refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(token_hash))
        .select(RefreshToken::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

pub async fn mark_rotated(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<(), StoreError> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::organization_id.eq(organization_id))
            .filter(refresh_tokens::id.eq(id)),
    )
    .set(refresh_tokens::rotated_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes every live token of one family; returns how many rows it revoked.
pub async fn revoke_family(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    family_id: Uuid,
) -> Result<usize, StoreError> {
    Ok(diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::organization_id.eq(organization_id))
            .filter(refresh_tokens::family_id.eq(family_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?)
}

/// Revokes every live token of a user (all sessions); returns how many rows it revoked.
pub async fn revoke_all_for_user(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    user_id: Uuid,
) -> Result<usize, StoreError> {
    Ok(diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::organization_id.eq(organization_id))
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?)
}
