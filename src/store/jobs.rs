//! The durable job queue: rows of `jobs` claimed with `FOR UPDATE SKIP LOCKED` (so any number
//! of workers on any number of instances never take the same job), retried with backoff,
//! `failed` after their last attempt, and reclaimed when the worker holding one was lost.

use crate::store::schema::jobs;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// Tries of a job unless its creator says otherwise (the column's default as well).
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = jobs)]
pub struct NewJob {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub call_id: Option<Uuid>,
    pub kind: String,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
}

impl NewJob {
    /// A job of `kind` about `call_id`, due now.
    pub fn for_call(organization_id: Uuid, call_id: Uuid, kind: &str, max_attempts: i32) -> Self {
        Self {
            id: Uuid::now_v7(),
            organization_id,
            call_id: Some(call_id),
            kind: kind.to_owned(),
            payload: serde_json::json!({}),
            max_attempts,
            run_at: Utc::now(),
        }
    }
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, serde::Serialize)]
#[diesel(table_name = jobs)]
pub struct JobRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub call_id: Option<Uuid>,
    pub kind: String,
    pub payload: serde_json::Value,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub locked_at: Option<DateTime<Utc>>,
    pub locked_by: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn enqueue(conn: &mut AsyncPgConnection, job: &NewJob) -> Result<(), StoreError> {
    diesel::insert_into(jobs::table)
        .values(job)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether `call_id` already has a job of `kind` (in any state): enqueuing is idempotent.
pub async fn exists_for_call(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    call_id: Uuid,
    kind: &str,
) -> Result<bool, StoreError> {
    let n: i64 = jobs::table
        .filter(jobs::organization_id.eq(organization_id))
        .filter(jobs::call_id.eq(call_id))
        .filter(jobs::kind.eq(kind))
        .count()
        .get_result(conn)
        .await?;
    Ok(n > 0)
}

/// Takes the oldest due pending job for `worker`: `running`, locked now, one more attempt.
/// Rows locked by another claim in progress are skipped, not waited for.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    worker: &str,
) -> Result<Option<JobRow>, StoreError> {
    Ok(diesel::sql_query(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_at = now(), \
                locked_by = $1, updated_at = now() \
         WHERE id = (SELECT id FROM jobs WHERE status = 'pending' AND run_at <= now() \
                     ORDER BY run_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING *",
    )
    .bind::<Text, _>(worker)
    .get_result::<JobRow>(conn)
    .await
    .optional()?)
}

/// Marks a job done. Only the worker holding it may: after a lease expiry the job may belong
/// to another worker, whose result wins.
pub async fn succeed(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    worker: &str,
) -> Result<(), StoreError> {
    diesel::update(jobs::table)
        .filter(jobs::id.eq(id))
        .filter(jobs::locked_by.eq(worker))
        .filter(jobs::status.eq("running"))
        .set((
            jobs::status.eq("succeeded"),
            jobs::locked_at.eq(None::<DateTime<Utc>>),
            jobs::last_error.eq(None::<String>),
            jobs::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a failed attempt: back to `pending` until `retry_at`, or `failed` for good when
/// `retry_at` is `None`.
pub async fn fail(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    worker: &str,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let (status, run_at) = match retry_at {
        Some(at) => ("pending", at),
        None => ("failed", Utc::now()),
    };
    release(conn, id, worker, status, run_at, error, false).await
}

/// Puts a job back to `pending` until `run_at` without spending an attempt: it was not tried
/// (the provider's circuit breaker is open), so the attempt its claim counted is given back.
pub async fn defer(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    worker: &str,
    reason: &str,
    run_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    release(conn, id, worker, "pending", run_at, reason, true).await
}

/// Unlocks a job `worker` holds into `status`, due at `run_at`, with `error` kept; its claim's
/// attempt given back when `give_back_attempt`.
async fn release(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    worker: &str,
    status: &str,
    run_at: DateTime<Utc>,
    error: &str,
    give_back_attempt: bool,
) -> Result<(), StoreError> {
    diesel::update(jobs::table)
        .filter(jobs::id.eq(id))
        .filter(jobs::locked_by.eq(worker))
        .filter(jobs::status.eq("running"))
        .set((
            jobs::status.eq(status),
            jobs::attempts.eq(jobs::attempts - i32::from(give_back_attempt)),
            jobs::run_at.eq(run_at),
            jobs::locked_at.eq(None::<DateTime<Utc>>),
            jobs::locked_by.eq(None::<String>),
            jobs::last_error.eq(error.chars().take(2000).collect::<String>()),
            jobs::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts back `running` jobs locked longer than `lease_secs` ago (their worker died: a crash or
/// a restart), or fails them if that was their last attempt. Returns how many.
pub async fn reclaim_stale(
    conn: &mut AsyncPgConnection,
    lease_secs: u64,
) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(
        "UPDATE jobs SET \
            status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END, \
            last_error = 'lease expired: the worker running it was lost', \
            locked_at = NULL, locked_by = NULL, run_at = now(), updated_at = now() \
         WHERE status = 'running' AND locked_at < now() - make_interval(secs => $1)",
    )
    .bind::<BigInt, _>(i64::try_from(lease_secs).unwrap_or(i64::MAX))
    .execute(conn)
    .await?)
}

/// A call's jobs, oldest first.
pub async fn list_for_call(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    call_id: Uuid,
) -> Result<Vec<JobRow>, StoreError> {
    Ok(jobs::table
        .filter(jobs::organization_id.eq(organization_id))
        .filter(jobs::call_id.eq(call_id))
        .order((jobs::created_at.asc(), jobs::id.asc()))
        .select(JobRow::as_select())
        .load(conn)
        .await?)
}
