//! Operator reads and repairs for `/admin/*`. These cross organizations on purpose (the operator
//! runs the whole instance); nothing here is reachable with a tenant's token.

use crate::store::calls::CallRow;
use crate::store::jobs::JobRow;
use crate::store::schema::{call_events, calls, jobs, webhook_events};
use crate::store::StoreError;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// A call by id, whatever its organization.
pub async fn call(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<CallRow>, StoreError> {
    Ok(calls::table
        .filter(calls::id.eq(id))
        .select(CallRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Calls not yet ended on any instance (their `owner_instance` says where), oldest first.
pub async fn live_calls(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<CallRow>, StoreError> {
    Ok(calls::table
        .filter(calls::status.ne("ended"))
        .order(calls::started_at.asc())
        .limit(limit)
        .select(CallRow::as_select())
        .load(conn)
        .await?)
}

/// Jobs by status (pending, running, succeeded, failed).
pub async fn job_counts(conn: &mut AsyncPgConnection) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(jobs::table
        .group_by(jobs::status)
        .select((jobs::status, diesel::dsl::count_star()))
        .order(jobs::status)
        .load(conn)
        .await?)
}

/// Jobs by kind and status.
pub async fn job_counts_by_kind(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(jobs::table
        .group_by((jobs::kind, jobs::status))
        .select((jobs::kind, jobs::status, diesel::dsl::count_star()))
        .load(conn)
        .await?)
}

/// The most recently failed jobs, newest first.
pub async fn failed_jobs(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<JobRow>, StoreError> {
    Ok(jobs::table
        .filter(jobs::status.eq("failed"))
        .order(jobs::updated_at.desc())
        .limit(limit)
        .select(JobRow::as_select())
        .load(conn)
        .await?)
}

/// Puts a failed job back in the queue, due now, with its attempts reset. False when no failed
/// job has that id.
pub async fn retry_job(conn: &mut AsyncPgConnection, id: Uuid) -> Result<bool, StoreError> {
    let now = chrono::Utc::now();
    let updated = diesel::update(jobs::table)
        .filter(jobs::id.eq(id))
        .filter(jobs::status.eq("failed"))
        .set((
            jobs::status.eq("pending"),
            jobs::attempts.eq(0),
            jobs::run_at.eq(now),
            jobs::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

/// A stored webhook delivery's envelope (as kept in the inbox, media tokens redacted).
pub async fn webhook_payload(
    conn: &mut AsyncPgConnection,
    event_id: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    Ok(webhook_events::table
        .filter(webhook_events::event_id.eq(event_id))
        .select(webhook_events::payload)
        .first(conn)
        .await
        .optional()?)
}

/// Whether a Telnyx event is already in some call's history.
pub async fn call_event_recorded(
    conn: &mut AsyncPgConnection,
    event_id: &str,
) -> Result<bool, StoreError> {
    Ok(diesel::select(diesel::dsl::exists(
        call_events::table.filter(call_events::telnyx_event_id.eq(event_id)),
    ))
    .get_result(conn)
    .await?)
}
