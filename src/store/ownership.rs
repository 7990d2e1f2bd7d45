//! Which instance owns which live call, for the orphan sweeper. These are the engine's own
//! housekeeping queries across every organization (like `calls::find_by_control_id` for webhook
//! routing): they never serve a tenant's request, and the rows they return are only used to end
//! the calls they name.

use crate::store::calls::{CallChanges, CallRow};
use crate::store::schema::calls;
use crate::store::StoreError;
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// Rows a sweep looks at, at most (the rest wait for the next sweep).
const SWEEP_BATCH: i64 = 500;

/// Live calls owned by any instance but `me`.
pub async fn live_calls_owned_elsewhere(
    conn: &mut AsyncPgConnection,
    me: &str,
) -> Result<Vec<CallRow>, StoreError> {
    Ok(calls::table
        .filter(calls::status.ne("ended"))
        .filter(calls::owner_instance.is_not_null())
        .filter(calls::owner_instance.ne(me))
        .order(calls::created_at.asc())
        .limit(SWEEP_BATCH)
        .select(CallRow::as_select())
        .load(conn)
        .await?)
}

/// Live calls with no owner recorded, created before `before` (rows written before
/// `owner_instance` existed).
pub async fn live_calls_without_owner(
    conn: &mut AsyncPgConnection,
    before: chrono::DateTime<Utc>,
) -> Result<Vec<CallRow>, StoreError> {
    Ok(calls::table
        .filter(calls::status.ne("ended"))
        .filter(calls::owner_instance.is_null())
        .filter(calls::created_at.lt(before))
        .order(calls::created_at.asc())
        .limit(SWEEP_BATCH)
        .select(CallRow::as_select())
        .load(conn)
        .await?)
}

/// Live calls owned by `owner` created before `before` (an instance reconciling what an
/// earlier run left behind, not the calls it has started since).
pub async fn live_calls_owned_by(
    conn: &mut AsyncPgConnection,
    owner: &str,
    before: chrono::DateTime<Utc>,
) -> Result<Vec<CallRow>, StoreError> {
    Ok(calls::table
        .filter(calls::status.ne("ended"))
        .filter(calls::owner_instance.eq(owner))
        .filter(calls::created_at.lt(before))
        .order(calls::created_at.asc())
        .limit(SWEEP_BATCH)
        .select(CallRow::as_select())
        .load(conn)
        .await?)
}

/// Who owns the call now (a live row), for routing when Redis has no lease.
pub async fn owner_of(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(calls::table
        .filter(calls::organization_id.eq(organization_id))
        .filter(calls::id.eq(id))
        .filter(calls::status.ne("ended"))
        .select(calls::owner_instance)
        .first::<Option<String>>(conn)
        .await
        .optional()?
        .flatten())
}

/// Applies `changes` (an end) only while the row is still live; true when it was.
pub async fn end_if_live(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
    changes: &CallChanges,
) -> Result<bool, StoreError> {
    let mut changes = changes.clone();
    changes.updated_at = Some(Utc::now());
    let n = diesel::update(calls::table)
        .filter(calls::organization_id.eq(organization_id))
        .filter(calls::id.eq(id))
        .filter(calls::status.ne("ended"))
        .set(&changes)
        .execute(conn)
        .await?;
    Ok(n == 1)
}
