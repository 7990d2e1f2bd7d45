//! Caller memory: what we learnt about a caller (by number) after each of their calls, newest
//! snapshot first, always within one organization.

use crate::domain::embedding::Embedding;
use crate::store::schema::memory_snapshots;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use pgvector::Vector;
use uuid::Uuid;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = memory_snapshots)]
pub struct NewMemorySnapshot {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub caller_number: String,
    pub call_id: Option<Uuid>,
    pub summary: String,
    /// A JSON array of short strings.
    pub facts: serde_json::Value,
    pub embedding: Vector,
    pub embedding_model: String,
}

impl NewMemorySnapshot {
    pub fn new(
        organization_id: Uuid,
        caller_number: impl Into<String>,
        call_id: Option<Uuid>,
        summary: impl Into<String>,
        facts: &[String],
        embedding: Embedding,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            organization_id,
            caller_number: caller_number.into(),
            call_id,
            summary: summary.into(),
            facts: serde_json::Value::from(facts.to_vec()),
            embedding: Vector::from(embedding.values),
            embedding_model: embedding.model,
        }
    }
}

/// A snapshot as read back (without its vector).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = memory_snapshots)]
pub struct MemorySnapshot {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub caller_number: String,
    pub call_id: Option<Uuid>,
    pub summary: String,
    pub facts: serde_json::Value,
    pub embedding_model: String,
    pub created_at: DateTime<Utc>,
}

impl MemorySnapshot {
    /// The facts as strings (anything else in the array is skipped).
    pub fn fact_list(&self) -> Vec<String> {
        self.facts
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub async fn insert(
    conn: &mut AsyncPgConnection,
    snapshot: &NewMemorySnapshot,
) -> Result<(), StoreError> {
    diesel::insert_into(memory_snapshots::table)
        .values(snapshot)
        .execute(conn)
        .await?;
    Ok(())
}

/// The newest snapshot of `caller_number` in this organization.
pub async fn latest(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    caller_number: &str,
) -> Result<Option<MemorySnapshot>, StoreError> {
    Ok(memory_snapshots::table
        .filter(memory_snapshots::organization_id.eq(organization_id))
        .filter(memory_snapshots::caller_number.eq(caller_number))
        .order((
            memory_snapshots::created_at.desc(),
            memory_snapshots::id.desc(),
        ))
        .select(MemorySnapshot::as_select())
        .first(conn)
        .await
        .optional()?)
}
