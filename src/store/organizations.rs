//! Organizations (tenants): every other row belongs to one.

use crate::store::schema::organizations;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = organizations)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = organizations)]
struct NewOrganization<'a> {
    id: Uuid,
    name: &'a str,
}

pub async fn insert(conn: &mut AsyncPgConnection, name: &str) -> Result<Organization, StoreError> {
    Ok(diesel::insert_into(organizations::table)
        .values(NewOrganization {
            id: Uuid::now_v7(),
            name,
        })
        .returning(Organization::as_returning())
        .get_result(conn)
        .await?)
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<Organization>, StoreError> {
    Ok(organizations::table
        .find(id)
        .select(Organization::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The destination prefixes the organization's calls may start with; `None` when it has none of
/// its own (the deployment's default applies).
pub async fn allowed_destination_prefixes(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<Vec<String>>, StoreError> {
    Ok(organizations::table
        .find(id)
        .select(organizations::allowed_destination_prefixes)
        .first::<Option<Vec<String>>>(conn)
        .await
        .optional()?
        .flatten())
}

/// Sets (or, with `None`, clears) the organization's own destination prefixes; false when
/// there is no such organization.
pub async fn set_allowed_destination_prefixes(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    prefixes: Option<Vec<String>>,
) -> Result<bool, StoreError> {
    let updated = diesel::update(organizations::table.find(id))
        .set((
            organizations::allowed_destination_prefixes.eq(prefixes),
            organizations::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}
