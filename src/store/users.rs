//! Users: who may log in, to which organization they belong and with which role. Every query
//! but the login lookup (by email, unique across the service) is scoped to one organization.

use crate::domain::Role;
use crate::store::schema::users;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
struct UserRow {
    id: Uuid,
    organization_id: Uuid,
    email: String,
    password_hash: String,
    role: String,
    disabled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct User {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("organization_id", &self.organization_id)
            .field("role", &self.role)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

impl User {
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        // The column has a CHECK constraint; a mismatch means schema and code disagree.
        let role = row
            .role
            .parse()
            .map_err(|e: crate::domain::UnknownRole| StoreError::Corrupt(e.to_string()))?;
        Ok(User {
            id: row.id,
            organization_id: row.organization_id,
            email: row.email,
            password_hash: row.password_hash,
            role,
            disabled_at: row.disabled_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A user to insert; the password is already hashed.
#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
}

/// Inserts a user. A taken email surfaces as a unique violation (see `StoreError::is_unique_violation`).
pub async fn insert(conn: &mut AsyncPgConnection, new: NewUser<'_>) -> Result<User, StoreError> {
    diesel::insert_into(users::table)
        .values(&new)
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await?
        .try_into()
}

/// One user of one organization: the filter every by-id query and update starts from.
type InOrg = diesel::dsl::Filter<
    diesel::dsl::Filter<users::table, diesel::dsl::Eq<users::organization_id, Uuid>>,
    diesel::dsl::Eq<users::id, Uuid>,
>;

fn in_org(organization_id: Uuid, id: Uuid) -> InOrg {
    users::table
        .filter(users::organization_id.eq(organization_id))
        .filter(users::id.eq(id))
}

fn at_most_one(row: Result<UserRow, diesel::result::Error>) -> Result<Option<User>, StoreError> {
    row.optional()?.map(User::try_from).transpose()
}

/// The login lookup: emails are unique service-wide, case-insensitively.
pub async fn find_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> Result<Option<User>, StoreError> {
    at_most_one(
        users::table
            .filter(lower(users::email).eq(email.to_lowercase()))
            .select(UserRow::as_select())
            .first(conn)
            .await,
    )
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<User>, StoreError> {
    at_most_one(
        in_org(organization_id, id)
            .select(UserRow::as_select())
            .first(conn)
            .await,
    )
}

/// Every user of the organization, oldest first.
pub async fn list(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
) -> Result<Vec<User>, StoreError> {
    users::table
        .filter(users::organization_id.eq(organization_id))
        .order((users::created_at.asc(), users::id.asc()))
        .select(UserRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(User::try_from)
        .collect()
}

/// Changes a user's role; `None` when no such user is in the organization.
pub async fn set_role(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
    role: Role,
) -> Result<Option<User>, StoreError> {
    at_most_one(
        diesel::update(in_org(organization_id, id))
            .set((
                users::role.eq(role.as_str()),
                users::updated_at.eq(diesel::dsl::now),
            ))
            .returning(UserRow::as_returning())
            .get_result(conn)
            .await,
    )
}

/// Disables (keeping the first disable time) or re-enables a user; `None` when no such user
/// is in the organization.
pub async fn set_disabled(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
    disabled: bool,
) -> Result<Option<User>, StoreError> {
    let disabled_at = if disabled {
        diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>>(
            "COALESCE(disabled_at, now())",
        )
    } else {
        diesel::dsl::sql("NULL")
    };
    at_most_one(
        diesel::update(in_org(organization_id, id))
            .set((
                users::disabled_at.eq(disabled_at),
                users::updated_at.eq(diesel::dsl::now),
            ))
            .returning(UserRow::as_returning())
            .get_result(conn)
            .await,
    )
}
