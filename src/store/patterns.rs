//! Patterns: what resolved a kind of problem, per organization, with the embedding of the
//! problem (pgvector). Search is top-k within one organization and one embedding model; a new
//! pattern close enough to an existing one reinforces it instead.
//!
//! Indexing is per organization, because a search never crosses one: an organization with
//! fewer than `learning.index_min_rows` patterns is searched exactly (every row compared, a
//! few milliseconds at that size), a larger one gets its own partial HNSW index
//! (`ensure_org_index`). One global HNSW index filtered by organization returned none of the
//! true neighbours for some queries (BENCHMARKS.md, "Vector search").
//! Only confirmed patterns are served to calls: one learnt from a single call waits until a
//! resolved call from another number reinforces it, or a user approves it.

use crate::domain::embedding::Embedding;
use crate::store::calls::Cursor;
use crate::store::schema::patterns;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use pgvector::{Vector, VectorExpressionMethods};
use uuid::Uuid;

/// A pattern to store (or to merge into a near-duplicate).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = patterns)]
pub struct NewPattern {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub problem: String,
    pub resolution: String,
    pub embedding: Vector,
    pub embedding_model: String,
    /// On a merge, added to the existing pattern's counts.
    pub success_count: i32,
    pub failure_count: i32,
    pub source_call_id: Option<Uuid>,
    /// Served to calls. True for what users import or write; false for what one call taught.
    pub confirmed: bool,
    /// The remote party of the call it was learnt from.
    pub source_caller: Option<String>,
}

impl NewPattern {
    /// A pattern of `organization_id` with `embedding` (of the problem) and a new id.
    pub fn new(
        organization_id: Uuid,
        problem: impl Into<String>,
        resolution: impl Into<String>,
        embedding: Embedding,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            organization_id,
            problem: problem.into(),
            resolution: resolution.into(),
            embedding: Vector::from(embedding.values),
            embedding_model: embedding.model,
            success_count: 1,
            failure_count: 0,
            source_call_id: None,
            confirmed: true,
            source_caller: None,
        }
    }

    /// Marks the pattern as learnt from call `call_id` with `caller`: unconfirmed unless
    /// `confirmed` (the `learning.confirm_patterns = false` setting).
    pub fn learnt_from(mut self, call_id: Uuid, caller: &str, confirmed: bool) -> Self {
        self.source_call_id = Some(call_id);
        self.source_caller = Some(caller.to_owned());
        self.confirmed = confirmed;
        self
    }

    /// True when this pattern, reinforcing `existing`, is independent evidence for it: it
    /// comes from another call and another remote party (the same caller calling twice
    /// confirms nothing), or from a user.
    fn confirms(&self, existing: &PatternRow) -> bool {
        self.confirmed
            || (self.source_call_id != existing.source_call_id
                && self.source_caller.is_some()
                && self.source_caller != existing.source_caller)
    }
}

/// A pattern as read back (without its vector: nobody reads 768 numbers).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = patterns)]
pub struct PatternRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub problem: String,
    pub resolution: String,
    pub embedding_model: String,
    pub success_count: i32,
    pub failure_count: i32,
    pub usage_count: i32,
    pub source_call_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub confirmed: bool,
    pub source_caller: Option<String>,
}

/// A search result: the pattern and its cosine similarity to the query (-1..1).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PatternHit {
    pub pattern: PatternRow,
    pub similarity: f64,
}

/// A partial update; `None` leaves a column alone. A new problem needs its new embedding.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = patterns)]
pub struct PatternChanges {
    pub problem: Option<String>,
    pub resolution: Option<String>,
    pub embedding: Option<Vector>,
    pub embedding_model: Option<String>,
    pub success_count: Option<i32>,
    pub failure_count: Option<i32>,
    /// A user approving (or withdrawing) a pattern.
    pub confirmed: Option<bool>,
}

/// What [`merge`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(tag = "action", content = "id", rename_all = "snake_case")]
pub enum Merged {
    Inserted(Uuid),
    /// An existing pattern this similar was reinforced instead.
    Reinforced(Uuid),
}

impl Merged {
    pub fn id(self) -> Uuid {
        match self {
            Merged::Inserted(id) | Merged::Reinforced(id) => id,
        }
    }
}

pub async fn insert(conn: &mut AsyncPgConnection, pattern: &NewPattern) -> Result<(), StoreError> {
    diesel::insert_into(patterns::table)
        .values(pattern)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<PatternRow>, StoreError> {
    Ok(patterns::table
        .filter(patterns::organization_id.eq(organization_id))
        .filter(patterns::id.eq(id))
        .select(PatternRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// One page of an organization's patterns, newest first, after `after`.
pub async fn list(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Vec<PatternRow>, StoreError> {
    let mut query = patterns::table
        .filter(patterns::organization_id.eq(organization_id))
        .select(PatternRow::as_select())
        .order((patterns::created_at.desc(), patterns::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(c) = after {
        query = query.filter(
            patterns::created_at
                .lt(c.created_at)
                .or(patterns::created_at
                    .eq(c.created_at)
                    .and(patterns::id.lt(c.id))),
        );
    }
    Ok(query.load(conn).await?)
}

/// Applies `changes`; `None` when the pattern is not in this organization.
pub async fn update(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
    changes: &PatternChanges,
) -> Result<Option<PatternRow>, StoreError> {
    Ok(diesel::update(patterns::table)
        .filter(patterns::organization_id.eq(organization_id))
        .filter(patterns::id.eq(id))
        .set((changes, patterns::updated_at.eq(Utc::now())))
        .returning(PatternRow::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// Deletes one pattern; false when it is not in this organization.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<bool, StoreError> {
    let n = diesel::delete(patterns::table)
        .filter(patterns::organization_id.eq(organization_id))
        .filter(patterns::id.eq(id))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Counts one more use of each pattern (they were put in a prompt).
pub async fn mark_used(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    ids: &[Uuid],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    diesel::update(patterns::table)
        .filter(patterns::organization_id.eq(organization_id))
        .filter(patterns::id.eq_any(ids))
        .set(patterns::usage_count.eq(patterns::usage_count + 1))
        .execute(conn)
        .await?;
    Ok(())
}

/// The session settings every connection that searches patterns carries: `hnsw.ef_search`
/// (the HNSW candidate list) and iterative scans, which keep an HNSW scan going until `k` rows
/// pass the model/confirmed filters (rows may then come slightly out of order; they are
/// re-sorted here). The pool runs this on each new connection (`store::pool::db_pool`), so a
/// search needs no transaction around it. Both settings touch HNSW scans only, and pattern
/// search is the only query that makes one.
pub fn session_settings(ef_search: u32) -> String {
    hnsw_settings("SET", ef_search)
}

/// The HNSW settings as `SET` (the session) or `SET LOCAL` (the transaction) statements.
fn hnsw_settings(set: &str, ef_search: u32) -> String {
    // SET takes no bind parameters; ef_search is a number, so formatting it is safe.
    format!(
        "{set} hnsw.ef_search = {}; {set} hnsw.iterative_scan = relaxed_order",
        ef_search.clamp(1, 1000)
    )
}

/// Applies [`session_settings`] to a connection that did not come from the pool.
pub async fn configure_session(
    conn: &mut AsyncPgConnection,
    ef_search: u32,
) -> Result<(), StoreError> {
    Ok(conn.batch_execute(&session_settings(ef_search)).await?)
}

/// The `k` confirmed patterns of `organization_id` nearest to `query` (same model only), most
/// similar first, none less similar than `min_similarity`: what a call may be told. The
/// connection carries [`session_settings`] (every pooled one does).
///
/// The plan is exact for a small organization and its own partial HNSW index for a large one.
/// One statement, two round trips (prepare, execute), no transaction: see [`nearest`].
pub async fn search(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    query: &Embedding,
    k: i64,
    min_similarity: f64,
) -> Result<Vec<PatternHit>, StoreError> {
    nearest(conn, organization_id, query, k, min_similarity, true).await
}

/// [`search`] inside a caller's transaction (the merge), with the HNSW settings made local to
/// it, so the merge does not depend on how its connection was set up.
async fn search_in_transaction(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    query: &Embedding,
    k: i64,
    min_similarity: f64,
    confirmed_only: bool,
    ef_search: u32,
) -> Result<Vec<PatternHit>, StoreError> {
    conn.batch_execute(&hnsw_settings("SET LOCAL", ef_search))
        .await?;
    nearest(
        conn,
        organization_id,
        query,
        k,
        min_similarity,
        confirmed_only,
    )
    .await
}

/// The exact top-k (no vector index: every pattern of the organization is compared). The
/// reference for recall measurements; too slow for a live call on a large organization.
pub async fn search_exact(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    query: &Embedding,
    k: i64,
) -> Result<Vec<PatternHit>, StoreError> {
    conn.transaction::<_, StoreError, _>(async |conn| {
        conn.batch_execute("SET LOCAL enable_indexscan = off")
            .await?;
        nearest(conn, organization_id, query, k, -1.0, true).await
    })
    .await
}

/// The ordered top-k query (only confirmed patterns when `confirmed_only`); the plan (index or
/// not) is up to the caller's settings.
///
/// The statement is deliberately not cached: prepared for this one execution, Postgres plans it
/// with this organization's id, which is what lets it match that organization's partial index
/// (a cached statement's generic plan could not). That costs a prepare round trip and a plan
/// per search, the price `plan_cache_mode = force_custom_plan` paid before without needing a
/// transaction to scope it.
async fn nearest(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    query: &Embedding,
    k: i64,
    min_similarity: f64,
    confirmed_only: bool,
) -> Result<Vec<PatternHit>, StoreError> {
    let vector = Vector::from(query.values.clone());
    let mut rows = patterns::table
        .filter(patterns::organization_id.eq(organization_id))
        .filter(patterns::embedding_model.eq(&query.model))
        // A literal fragment marks the statement unsafe to cache (diesel then prepares it for
        // this execution only): see above.
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>("TRUE"))
        .into_boxed();
    if confirmed_only {
        rows = rows.filter(patterns::confirmed.eq(true));
    }
    let rows: Vec<(PatternRow, f64)> = rows
        .select((
            PatternRow::as_select(),
            patterns::embedding.cosine_distance(vector.clone()),
        ))
        .order(patterns::embedding.cosine_distance(vector))
        .limit(k)
        .load(conn)
        .await?;
    Ok(rank(rows, min_similarity))
}

/// Name of the partial HNSW index of one organization's patterns.
pub fn org_index_name(organization_id: Uuid) -> String {
    format!("patterns_hnsw_org_{}", organization_id.simple())
}

/// Gives `organization_id` its own partial HNSW index once it has at least `min_rows`
/// patterns, and answers whether it has one (valid) now. Built with `CREATE INDEX
/// CONCURRENTLY`, so writes and searches go on meanwhile (seconds for a few thousand rows);
/// it needs a connection outside any transaction. A session advisory lock makes concurrent
/// callers (two instances' learning jobs) build it once; a build left invalid by a crash is
/// dropped and redone.
pub async fn ensure_org_index(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    min_rows: i64,
) -> Result<bool, StoreError> {
    use diesel::sql_types::{Bool, Nullable, Text};
    #[derive(QueryableByName)]
    struct Valid {
        #[diesel(sql_type = Nullable<Bool>)]
        valid: Option<bool>,
    }
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = Bool)]
        locked: bool,
    }
    let name = org_index_name(organization_id);
    let index_state = async |conn: &mut AsyncPgConnection| -> Result<Option<bool>, StoreError> {
        let rows: Vec<Valid> = diesel::sql_query(
            "SELECT i.indisvalid AS valid FROM pg_class c \
             JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = $1",
        )
        .bind::<Text, _>(&name)
        .load(conn)
        .await?;
        Ok(rows.into_iter().next().and_then(|r| r.valid))
    };
    if index_state(conn).await? == Some(true) {
        return Ok(true);
    }
    let rows: i64 = patterns::table
        .filter(patterns::organization_id.eq(organization_id))
        .count()
        .get_result(conn)
        .await?;
    if rows < min_rows {
        return Ok(false);
    }
    let key = format!("patterns-index:{organization_id}");
    let lock: Locked =
        diesel::sql_query("SELECT pg_try_advisory_lock(hashtextextended($1, 7)) AS locked")
            .bind::<Text, _>(&key)
            .get_result(conn)
            .await?;
    if !lock.locked {
        return Ok(false); // another session is building it
    }
    let built = async {
        if index_state(conn).await? == Some(false) {
            conn.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                .await?;
        }
        // Both names are made here from a UUID (hex digits and dashes only): nothing a
        // caller wrote reaches the statement, which cannot take bind parameters.
        conn.batch_execute(&format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON patterns \
             USING hnsw (embedding vector_cosine_ops) WHERE organization_id = '{organization_id}'"
        ))
        .await?;
        // Fresh statistics, so the planner weighs the new index against an exact scan with
        // the organization's real size (autovacuum would get there, later).
        conn.batch_execute("ANALYZE patterns").await?;
        Ok::<_, StoreError>(index_state(conn).await? == Some(true))
    }
    .await;
    diesel::sql_query("SELECT pg_advisory_unlock(hashtextextended($1, 7))")
        .bind::<Text, _>(&key)
        .execute(conn)
        .await?;
    built
}

/// How many index scans the organization's own HNSW index has served (`pg_stat_user_indexes`,
/// which the server updates up to a second after the searching session goes idle); `None`
/// when the organization has no index. Benchmarks and tests read it to see which plan
/// searches took.
pub async fn org_index_scans(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
) -> Result<Option<i64>, StoreError> {
    #[derive(QueryableByName)]
    struct Scans {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        scans: i64,
    }
    let rows: Vec<Scans> = diesel::sql_query(
        "SELECT idx_scan AS scans FROM pg_stat_user_indexes WHERE indexrelname = $1",
    )
    .bind::<diesel::sql_types::Text, _>(org_index_name(organization_id))
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(|r| r.scans))
}

/// Distance → similarity, threshold, and the strict order `relaxed_order` does not promise.
fn rank(rows: Vec<(PatternRow, f64)>, min_similarity: f64) -> Vec<PatternHit> {
    let mut hits: Vec<PatternHit> = rows
        .into_iter()
        .map(|(pattern, distance)| PatternHit {
            pattern,
            similarity: 1.0 - distance,
        })
        .filter(|hit| hit.similarity >= min_similarity)
        .collect();
    hits.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    hits
}

/// Stores `pattern`, unless a pattern of the same organization and model is at least
/// `threshold` similar: then that one is reinforced (its counts grow by the new pattern's)
/// and keeps its text. Merges of one organization are serialised by an advisory lock, so two
/// concurrent near-duplicates cannot both be inserted.
pub async fn merge(
    conn: &mut AsyncPgConnection,
    pattern: &NewPattern,
    threshold: f64,
    ef_search: u32,
) -> Result<Merged, StoreError> {
    conn.transaction::<_, StoreError, _>(async |conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 6))")
            .bind::<diesel::sql_types::Text, _>(format!("patterns:{}", pattern.organization_id))
            .execute(conn)
            .await?;
        let query = Embedding {
            model: pattern.embedding_model.clone(),
            values: pattern.embedding.to_vec(),
        };
        // Confirmed or not: a second call's near-duplicate is what confirms the first.
        let nearest = search_in_transaction(
            conn,
            pattern.organization_id,
            &query,
            1,
            threshold,
            false,
            ef_search,
        )
        .await?;
        if let Some(hit) = nearest.into_iter().next() {
            let confirmed = hit.pattern.confirmed || pattern.confirms(&hit.pattern);
            diesel::update(patterns::table)
                .filter(patterns::organization_id.eq(pattern.organization_id))
                .filter(patterns::id.eq(hit.pattern.id))
                .set((
                    patterns::success_count.eq(patterns::success_count + pattern.success_count),
                    patterns::failure_count.eq(patterns::failure_count + pattern.failure_count),
                    patterns::confirmed.eq(confirmed),
                    patterns::updated_at.eq(Utc::now()),
                ))
                .execute(conn)
                .await?;
            return Ok(Merged::Reinforced(hit.pattern.id));
        }
        insert(conn, pattern).await?;
        Ok(Merged::Inserted(pattern.id))
    })
    .await
}
