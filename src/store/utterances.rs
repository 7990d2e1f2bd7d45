//! Utterances: what the caller and the agent said, with timing, sentiment and latency.

use crate::store::schema::utterances;
use crate::store::StoreError;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

#[derive(Debug, Clone, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = utterances)]
// A `None` goes in as a bound NULL, not as `DEFAULT` (these columns have no default): the
// statement's text is then the same for every row, so each connection prepares it once. With
// `DEFAULT` diesel cannot cache it and every insert pays a second round trip to prepare it.
#[diesel(treat_none_as_default_value = false)]
pub struct NewUtterance {
    pub organization_id: Uuid,
    pub call_id: Uuid,
    pub seq: i32,
    pub speaker: String,
    pub text: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub sentiment_score: Option<f32>,
    pub sentiment_label: Option<String>,
    pub rolling_sentiment: Option<f32>,
    pub interrupted: bool,
    pub latency_ms: Option<i32>,
}

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = utterances)]
pub struct UtteranceRow {
    pub seq: i32,
    pub speaker: String,
    pub text: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub sentiment_score: Option<f32>,
    pub sentiment_label: Option<String>,
    pub rolling_sentiment: Option<f32>,
    pub interrupted: bool,
    pub latency_ms: Option<i32>,
}

pub async fn insert(conn: &mut AsyncPgConnection, u: &NewUtterance) -> Result<(), StoreError> {
    diesel::insert_into(utterances::table)
        .values(u)
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

/// Stores many turns at once; a turn already stored (same call and seq) is left alone.
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
