//! Phone numbers owned by organizations. Only an operator assigns or releases a number
//! (`iace admin assign-number`, the operator API); tenants attach their own numbers to agent
//! profiles and use them as caller ID. Ownership is what stops one tenant from answering another
//! tenant's inbound calls or dialling out as another tenant's number.

use crate::store::schema::organization_numbers;
use crate::store::StoreError;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// What [`assign`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    Assigned,
    /// The organization already owned the number.
    AlreadyOwned,
    /// Another organization owns it; nothing changed.
    HeldByAnother,
}

/// Assigns `number` (E.164) to `organization_id` unless another organization owns it.
pub async fn assign(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    number: &str,
) -> Result<Assignment, StoreError> {
    let inserted = diesel::insert_into(organization_numbers::table)
        .values((
            organization_numbers::number.eq(number),
            organization_numbers::organization_id.eq(organization_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        return Ok(Assignment::Assigned);
    }
    let owner: Option<Uuid> = organization_numbers::table
        .filter(organization_numbers::number.eq(number))
        .select(organization_numbers::organization_id)
        .first(conn)
        .await
        .optional()?;
    Ok(if owner == Some(organization_id) {
        Assignment::AlreadyOwned
    } else {
        Assignment::HeldByAnother
    })
}

/// Takes `number` away from `organization_id` (its agent profiles stop answering it). False
/// when the organization did not own it.
pub async fn release(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    number: &str,
) -> Result<bool, StoreError> {
    let n = diesel::delete(organization_numbers::table)
        .filter(organization_numbers::organization_id.eq(organization_id))
        .filter(organization_numbers::number.eq(number))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// The numbers `organization_id` owns, sorted.
pub async fn list(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
) -> Result<Vec<String>, StoreError> {
    Ok(organization_numbers::table
        .filter(organization_numbers::organization_id.eq(organization_id))
        .order(organization_numbers::number.asc())
        .select(organization_numbers::number)
        .load(conn)
        .await?)
}

/// Those of `numbers` that `organization_id` does not own.
pub async fn not_owned(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    numbers: &[String],
) -> Result<Vec<String>, StoreError> {
    if numbers.is_empty() {
        return Ok(Vec::new());
    }
    let owned: Vec<String> = organization_numbers::table
        .filter(organization_numbers::organization_id.eq(organization_id))
        .filter(organization_numbers::number.eq_any(numbers))
        .select(organization_numbers::number)
        .load(conn)
        .await?;
    Ok(numbers
        .iter()
        .filter(|n| !owned.contains(n))
        .cloned()
        .collect())
}

/// True when `organization_id` owns `number`.
pub async fn owns(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    number: &str,
) -> Result<bool, StoreError> {
    Ok(not_owned(conn, organization_id, &[number.to_owned()])
        .await?
        .is_empty())
}
