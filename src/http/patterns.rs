//! The patterns API: search by text, list, read, edit and delete patterns, and bulk import of
//! known problem/resolution pairs (a knowledge base to start from). Tenant-scoped by the
//! caller's token; reading needs viewer, writing agent, deleting admin.

use crate::domain::role::Role;
use crate::error::{ApiError, ErrorBody};
use crate::http::calls::{decode_cursor, encode_cursor};
use crate::http::extractor::AuthUser;
use crate::http::AppState;
use crate::store::calls::Cursor;
use crate::store::patterns::{self, Merged, NewPattern, PatternChanges, PatternRow};
use actix_web::{delete, get, patch, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use pgvector::Vector;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Pairs accepted by one import request.
const MAX_IMPORT: usize = 1000;
/// Longest problem or resolution accepted.
const MAX_TEXT: usize = 2000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The fixed paths first: `/patterns/search` must not be taken for a pattern id.
    cfg.service(search_patterns)
        .service(import_patterns)
        .service(list_patterns)
        .service(get_pattern)
        .service(update_pattern)
        .service(delete_pattern);
}

/// A pattern as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PatternDto {
    pub id: Uuid,
    pub problem: String,
    pub resolution: String,
    pub embedding_model: String,
    pub success_count: i32,
    pub failure_count: i32,
    pub usage_count: i32,
    pub source_call_id: Option<Uuid>,
    /// Served to calls (see `learning.confirm_patterns`); PATCH `{"confirmed": true}` approves.
    pub confirmed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<PatternRow> for PatternDto {
    fn from(p: PatternRow) -> Self {
        Self {
            id: p.id,
            problem: p.problem,
            resolution: p.resolution,
            embedding_model: p.embedding_model,
            success_count: p.success_count,
            failure_count: p.failure_count,
            usage_count: p.usage_count,
            source_call_id: p.source_call_id,
            confirmed: p.confirmed,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The text to search for (1 to 2000 characters).
    #[param(min_length = 1, max_length = 2000, pattern = r"\S")]
    pub q: String,
    /// Hits to return, 1 to 50 (default 5).
    #[param(minimum = 1, maximum = 50)]
    pub k: Option<i64>,
    /// Lowest cosine similarity, -1 to 1 (default: `learning.min_similarity`).
    #[param(minimum = -1.0, maximum = 1.0)]
    pub min_similarity: Option<f64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    #[serde(flatten)]
    pattern: PatternDto,
    similarity: f64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    /// The model the query was embedded with (only patterns of that model were searched).
    model: String,
    data: Vec<SearchHit>,
}

/// The organization's patterns most similar to a text.
#[utoipa::path(
    tag = "knowledge",
    security(("bearer" = [])),
    params(SearchQuery),
    responses(
        (status = 200, description = "The hits, most similar first", body = SearchResults),
        (status = 400, description = "`q`, `k` or `min_similarity` out of bounds", body = ErrorBody),
    )
)]
#[get("/api/v1/patterns/search")]
async fn search_patterns(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let text = query.q.trim();
    if text.is_empty() || text.len() > MAX_TEXT {
        return Err(ApiError::BadRequest(format!(
            "q: between 1 and {MAX_TEXT} characters"
        )));
    }
    let k = query.k.unwrap_or(5);
    if !(1..=50).contains(&k) {
        return Err(ApiError::BadRequest("k: between 1 and 50".into()));
    }
    let min_similarity = query
        .min_similarity
        .unwrap_or(state.learning.settings.min_similarity);
    if !(-1.0..=1.0).contains(&min_similarity) {
        return Err(ApiError::BadRequest(
            "min_similarity: between -1 and 1".into(),
        ));
    }
    let embedding = state.learning.embedder.embed_query(text).await;
    let mut conn = state.conn().await?;
    let hits = patterns::search(
        &mut conn,
        user.organization_id,
        &embedding,
        k,
        min_similarity,
    )
    .await?;
    Ok(HttpResponse::Ok().json(SearchResults {
        model: embedding.model,
        data: hits
            .into_iter()
            .map(|h| SearchHit {
                pattern: h.pattern.into(),
                similarity: h.similarity,
            })
            .collect(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportPair {
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    pub problem: String,
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    pub resolution: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    #[schema(min_items = 1, max_items = 1000)]
    pub pairs: Vec<ImportPair>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ImportResult {
    inserted: usize,
    reinforced: usize,
    /// One entry per pair, in order: `{"action": "inserted" | "reinforced", "id": ...}`.
    results: Vec<Merged>,
}

/// Imports known problem/resolution pairs (near-duplicates reinforce existing patterns).
#[utoipa::path(
    tag = "knowledge",
    security(("bearer" = [])),
    request_body = ImportBody,
    responses(
        (status = 200, description = "What each pair did", body = ImportResult),
        (status = 403, description = "Requires the agent role", body = ErrorBody),
        (status = 422, description = "No pairs, over 1000, or an empty or over-long text", body = ErrorBody),
    )
)]
#[post("/api/v1/patterns/import")]
async fn import_patterns(
    user: AuthUser,
    state: web::Data<AppState>,
    body: web::Json<ImportBody>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Agent)?;
    let pairs = body.into_inner().pairs;
    if pairs.is_empty() || pairs.len() > MAX_IMPORT {
        return Err(ApiError::Validation(format!(
            "pairs: between 1 and {MAX_IMPORT} pairs"
        )));
    }
    let mut cleaned = Vec::with_capacity(pairs.len());
    for (i, pair) in pairs.into_iter().enumerate() {
        crate::http::reject_nul(
            &format!("pairs[{i}]"),
            [pair.problem.as_str(), pair.resolution.as_str()],
        )?;
        let (problem, resolution) = (pair.problem.trim(), pair.resolution.trim());
        if problem.is_empty() || resolution.is_empty() {
            return Err(ApiError::Validation(format!(
                "pairs[{i}]: problem and resolution must not be empty"
            )));
        }
        if problem.len() > MAX_TEXT || resolution.len() > MAX_TEXT {
            return Err(ApiError::Validation(format!(
                "pairs[{i}]: at most {MAX_TEXT} characters each"
            )));
        }
        cleaned.push((problem.to_owned(), resolution.to_owned()));
    }
    let problems: Vec<String> = cleaned.iter().map(|(p, _)| p.clone()).collect();
    // Batched by the client (at most `gemini.batch_size` texts per request).
    let embeddings = state
        .learning
        .embedder
        .embed_documents(&problems)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let mut conn = state.conn().await?;
    let mut results = Vec::with_capacity(cleaned.len());
    // One by one, so a pair also merges with a near-duplicate earlier in the same import.
    for ((problem, resolution), embedding) in cleaned.into_iter().zip(embeddings) {
        let pattern = NewPattern::new(user.organization_id, problem, resolution, embedding);
        let merged = patterns::merge(
            &mut conn,
            &pattern,
            state.learning.settings.merge_similarity,
            state.learning.settings.ef_search,
        )
        .await?;
        results.push(merged);
    }
    drop(conn);
    invalidate_contexts(&state, user.organization_id).await;
    let inserted = results
        .iter()
        .filter(|m| matches!(m, Merged::Inserted(_)))
        .count();
    if inserted > 0 {
        // A large import may take the organization over the exact-search size: its index is
        // built in the background (seconds), searches stay exact until it is ready.
        let (db, org) = (state.db.clone(), user.organization_id);
        let min_rows = state.learning.settings.index_min_rows;
        actix_web::rt::spawn(async move {
            let built = match db.get().await {
                Ok(mut conn) => patterns::ensure_org_index(&mut conn, org, min_rows)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = built {
                tracing::warn!(organization_id = %org, %error, "pattern index not built");
            }
        });
    }
    Ok(HttpResponse::Ok().json(ImportResult {
        inserted,
        reinforced: results.len() - inserted,
        results,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PatternPage {
    data: Vec<PatternDto>,
    next_cursor: Option<String>,
}

/// The organization's patterns, newest first, cursor-paged.
#[utoipa::path(
    tag = "knowledge",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page of patterns", body = PatternPage),
        (status = 400, description = "Malformed cursor or limit out of bounds", body = ErrorBody),
    )
)]
#[get("/api/v1/patterns")]
async fn list_patterns(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest("limit: between 1 and 200".into()));
    }
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut conn = state.conn().await?;
    // One extra row tells whether another page exists.
    let mut rows = patterns::list(&mut conn, user.organization_id, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(50));
    let next_cursor = rows.last().filter(|_| more).map(|r| {
        encode_cursor(&Cursor {
            created_at: r.created_at,
            id: r.id,
        })
    });
    Ok(HttpResponse::Ok().json(PatternPage {
        data: rows.into_iter().map(PatternDto::from).collect(),
        next_cursor,
    }))
}

/// One pattern.
#[utoipa::path(
    tag = "knowledge",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The pattern's id")),
    responses(
        (status = 200, description = "The pattern", body = PatternDto),
        (status = 404, description = "No such pattern in this organization", body = ErrorBody),
    )
)]
#[get("/api/v1/patterns/{id}")]
async fn get_pattern(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let mut conn = state.conn().await?;
    let row = patterns::find(&mut conn, user.organization_id, path.into_inner())
        .await?
        .ok_or(ApiError::NotFound("pattern"))?;
    Ok(HttpResponse::Ok().json(PatternDto::from(row)))
}

/// After a pattern write: calls stop being told what was withdrawn at once (the turn-context
/// cache would otherwise serve it for its TTL).
async fn invalidate_contexts(state: &AppState, organization_id: Uuid) {
    state.learning.retriever.invalidate(organization_id).await;
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternPatch {
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    pub problem: Option<String>,
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    pub resolution: Option<String>,
    #[schema(minimum = 0)]
    pub success_count: Option<i32>,
    #[schema(minimum = 0)]
    pub failure_count: Option<i32>,
    /// Approve a learnt pattern (true) or stop serving it (false).
    pub confirmed: Option<bool>,
}

/// Edits a pattern (a new problem text is embedded again), or confirms it.
#[utoipa::path(
    tag = "knowledge",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The pattern's id")),
    request_body = PatternPatch,
    responses(
        (status = 200, description = "The pattern as changed", body = PatternDto),
        (status = 403, description = "Requires the agent role", body = ErrorBody),
        (status = 404, description = "No such pattern in this organization", body = ErrorBody),
        (status = 422, description = "An empty or over-long text, or a negative count", body = ErrorBody),
    )
)]
#[patch("/api/v1/patterns/{id}")]
async fn update_pattern(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
    body: web::Json<PatternPatch>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Agent)?;
    let patch = body.into_inner();
    let text = |field: &str, value: Option<String>| -> Result<Option<String>, ApiError> {
        match value.map(|v| v.trim().to_owned()) {
            Some(v) if v.is_empty() || v.len() > MAX_TEXT => Err(ApiError::Validation(format!(
                "{field}: between 1 and {MAX_TEXT} characters"
            ))),
            other => Ok(other),
        }
    };
    crate::http::reject_nul(
        "problem, resolution",
        [&patch.problem, &patch.resolution]
            .into_iter()
            .flatten()
            .map(String::as_str),
    )?;
    let problem = text("problem", patch.problem)?;
    let resolution = text("resolution", patch.resolution)?;
    if patch.success_count.is_some_and(|n| n < 0) || patch.failure_count.is_some_and(|n| n < 0) {
        return Err(ApiError::Validation("counts must not be negative".into()));
    }
    let mut changes = PatternChanges {
        resolution,
        success_count: patch.success_count,
        failure_count: patch.failure_count,
        confirmed: patch.confirmed,
        ..PatternChanges::default()
    };
    if let Some(problem) = problem {
        // The vector follows the problem: a pattern is found by what its problem says.
        let embedding = state
            .learning
            .embedder
            .embed_documents(std::slice::from_ref(&problem))
            .await
            .map_err(|e| ApiError::Unavailable(e.into()))?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no embedding returned")))?;
        changes.embedding = Some(Vector::from(embedding.values));
        changes.embedding_model = Some(embedding.model);
        changes.problem = Some(problem);
    }
    let mut conn = state.conn().await?;
    let row = patterns::update(&mut conn, user.organization_id, path.into_inner(), &changes)
        .await?
        .ok_or(ApiError::NotFound("pattern"))?;
    drop(conn);
    invalidate_contexts(&state, user.organization_id).await;
    Ok(HttpResponse::Ok().json(PatternDto::from(row)))
}

/// Deletes a pattern.
#[utoipa::path(
    tag = "knowledge",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The pattern's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Requires the admin role", body = ErrorBody),
        (status = 404, description = "No such pattern in this organization", body = ErrorBody),
    )
)]
#[delete("/api/v1/patterns/{id}")]
async fn delete_pattern(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Admin)?;
    let mut conn = state.conn().await?;
    if !patterns::delete(&mut conn, user.organization_id, path.into_inner()).await? {
        return Err(ApiError::NotFound("pattern"));
    }
    drop(conn);
    invalidate_contexts(&state, user.organization_id).await;
    Ok(HttpResponse::NoContent().finish())
}
