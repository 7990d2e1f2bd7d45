//! Utterances: the transcript of a call, one row per turn, read back in order.

use crate::store::schema::utterances;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = utterances)]
pub struct NewUtterance {
    pub organization_id: Uuid,
    pub call_id: Uuid,
    pub seq: i32,
    /// `caller` or `agent`.
    pub speaker: String,
    pub text: String,
    pub started_ms: i64,
    pub ended_ms: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = utterances)]
pub struct UtteranceRow {
    pub seq: i32,
    pub speaker: String,
    pub text: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub sentiment_score: Option<f32>,
    pub created_at: DateTime<Utc>,
}

/// Stores turns; a turn already stored (same call and seq) is left alone.
pub async fn insert_many(
    conn: &mut AsyncPgConnection,
    rows: &[NewUtterance],
) -> Result<(), StoreError> {
    diesel::insert_into(utterances::table)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// A call's transcript in order.
pub async fn list_for_call(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    call_id: Uuid,
) -> Result<Vec<UtteranceRow>, StoreError> {
    Ok(utterances::table
        .filter(utterances::organization_id.eq(organization_id))
        .filter(utterances::call_id.eq(call_id))
        .order(utterances::seq.asc())
        .select(UtteranceRow::as_select())
        .load(conn)
        .await?)
}
