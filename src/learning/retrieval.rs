//! Retrieval during a call: at each caller turn, the patterns nearest to what the caller said
//! and what we remember about the caller, fetched in parallel within a latency budget. Late
//! results are skipped, never waited for (their tasks finish in the background and still warm
//! the cache). Hot contexts are cached in Redis.
//! ```ignore
//! let context = retriever.context_for_turn(org, &caller, &turn_text, budget).await;
//! let system_prompt = format!("{base_prompt}\n\n{}", context.prompt_section());
//! ```

use crate::config::LearningSettings;
use crate::learning::Embedder;
use crate::store::memory::{self, MemorySnapshot};
use crate::store::patterns::{self, PatternHit};
use crate::store::{DbPool, RedisPool, StoreError};
use crate::telemetry::otlp::in_current_trace;
use deadpool_redis::redis;
use futures_util::future::{LocalBoxFuture, Shared};
use futures_util::FutureExt;
use prometheus::HistogramVec;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The caller's memory being fetched, shared by a call's turns: `None` once it failed (a later
/// turn fetches again), `Some(None)` when there is none.
pub type MemoryFetch = Shared<LocalBoxFuture<'static, Option<Option<MemorySnapshot>>>>;

/// The longest a memory fetch may take before it counts as failed (turns stop waiting for it at
/// their retrieval budget long before).
const MEMORY_FETCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What retrieval found for one turn.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RetrievedContext {
    /// Nearest patterns of the organization, most similar first.
    pub patterns: Vec<PatternHit>,
    /// The caller's newest memory snapshot.
    pub memory: Option<MemorySnapshot>,
    /// Some part did not finish within the budget and was skipped.
    pub timed_out: bool,
}

impl RetrievedContext {
    /// The text to append to the LLM's system prompt; empty when nothing was found (rendered
    /// by [`crate::prompts::retrieved_context`]).
    pub fn prompt_section(&self) -> String {
        crate::prompts::retrieved_context(self)
    }
}

/// Fetches turn contexts. Cheap to clone and `Send`; call it on an actix arbiter (the
/// embedding request uses awc), e.g. from a call actor.
#[derive(Clone)]
pub struct Retriever {
    embedder: Embedder,
    db: DbPool,
    redis: RedisPool,
    key_prefix: String,
    top_k: i64,
    min_similarity: f64,
    cache_ttl_secs: u64,
    duration: HistogramVec,
}

impl Retriever {
    /// `duration` is the `retrieval_duration_seconds` histogram (label `result`).
    pub fn new(
        embedder: Embedder,
        db: DbPool,
        redis: RedisPool,
        key_prefix: &str,
        settings: &LearningSettings,
        duration: HistogramVec,
    ) -> Self {
        Self {
            embedder,
            db,
            redis,
            key_prefix: format!("{key_prefix}:learning:ctx"),
            top_k: settings.retrieval_top_k,
            min_similarity: settings.min_similarity,
            cache_ttl_secs: settings.cache_ttl_secs,
            duration,
        }
    }

    /// The patterns nearest to `text` and the memory of `caller_number` in `organization_id`,
    /// whatever of them is ready within `budget`. Never fails: a part that errs or is late is
    /// simply missing (`timed_out` tells the late case).
    pub async fn context_for_turn(
        &self,
        organization_id: Uuid,
        caller_number: &str,
        text: &str,
        budget: Duration,
    ) -> RetrievedContext {
        let memory = self.memory_of(organization_id, caller_number);
        self.context_with_memory(organization_id, memory, text, budget)
            .await
    }

    /// Starts fetching the memory of `caller_number` (`None` when there is no number). A call
    /// fetches it once and hands it to each [`Self::context_with_memory`]: memory is written when
    /// a call ends, so it does not change during one (another call of the same caller ending
    /// meanwhile is seen by the next call).
    pub fn memory_of(&self, organization_id: Uuid, caller_number: &str) -> Option<MemoryFetch> {
        if caller_number.trim().is_empty() {
            return None;
        }
        // Spawned, so a late fetch runs to its end (its connection comes back clean) while the
        // turn goes on without it; in the current trace.
        let this = self.clone();
        let number = caller_number.to_owned();
        let task = actix_web::rt::spawn(in_current_trace(async move {
            // A fetch that hangs (a stuck connection) ends as a failure, so a later turn of the
            // call fetches again instead of sharing it for the rest of the call.
            tokio::time::timeout(MEMORY_FETCH_LIMIT, this.memory(organization_id, &number))
                .await
                .unwrap_or_else(|_| Err(StoreError::Pool("memory fetch timed out".into())))
        }));
        let fetch: LocalBoxFuture<'static, _> =
            Box::pin(async move { settled(task.await, "memory") });
        Some(fetch.shared())
    }

    /// As [`Self::context_for_turn`], with the caller's memory already being fetched (or not
    /// wanted: `None`).
    pub async fn context_with_memory(
        &self,
        organization_id: Uuid,
        memory: Option<MemoryFetch>,
        text: &str,
        budget: Duration,
    ) -> RetrievedContext {
        let started = Instant::now();
        let deadline = started + budget;
        // Spawned, so a late part runs to its end (connections come back clean, the cache
        // gets warm) while this turn goes on without it; in the turn's trace (the embedding
        // request is the turn's child).
        let patterns = (!text.trim().is_empty()).then(|| {
            let this = self.clone();
            let text = text.to_owned();
            let task = actix_web::rt::spawn(in_current_trace(async move {
                this.patterns(organization_id, &text).await
            }));
            async move { settled(task.await, "patterns") }
        });
        let (memory, patterns) = futures_util::future::join(
            within(deadline, memory, "memory"),
            within(deadline, patterns, "patterns"),
        )
        .await;
        let context = RetrievedContext {
            timed_out: memory.is_none() || patterns.is_none(),
            memory: memory.flatten().flatten(),
            patterns: patterns.flatten().unwrap_or_default(),
        };
        let result = if context.timed_out {
            "timed_out"
        } else {
            "complete"
        };
        self.duration
            .with_label_values(&[result])
            .observe(started.elapsed().as_secs_f64());
        context
    }

    async fn memory(
        &self,
        organization_id: Uuid,
        caller_number: &str,
    ) -> Result<Option<MemorySnapshot>, StoreError> {
        let mut conn = self.db.get().await?;
        memory::latest(&mut conn, organization_id, caller_number).await
    }

    async fn patterns(
        &self,
        organization_id: Uuid,
        text: &str,
    ) -> Result<Vec<PatternHit>, StoreError> {
        let text_hash = text_hash(text);
        let preferred =
            self.cache_key(organization_id, self.embedder.preferred_model(), &text_hash);
        let (cached, generation) = self.cached(organization_id, &preferred).await;
        if let Some(hits) = cached {
            return Ok(hits);
        }
        let query = self.embedder.embed_query(text).await;
        let mut conn = self.db.get().await?;
        let hits = patterns::search(
            &mut conn,
            organization_id,
            &query,
            self.top_k,
            self.min_similarity,
        )
        .await?;
        let ids: Vec<Uuid> = hits.iter().map(|h| h.pattern.id).collect();
        if let Err(err) = patterns::mark_used(&mut conn, organization_id, &ids).await {
            tracing::warn!(error = %err, "could not count pattern uses");
        }
        drop(conn);
        let key = self.cache_key(organization_id, &query.model, &text_hash);
        if let Some(generation) = generation {
            self.cache(&key, &hits, generation).await;
        }
        Ok(hits)
    }

    fn cache_key(&self, organization_id: Uuid, model: &str, text_hash: &str) -> String {
        format!("{}:{organization_id}:{model}:{text_hash}", self.key_prefix)
    }

    /// The counter of an organization's pattern writes: a cached context made under an older
    /// value is never served.
    fn generation_key(&self, organization_id: Uuid) -> String {
        format!("{}:generation:{organization_id}", self.key_prefix)
    }

    /// Forgets every cached context of `organization_id`, at once: called on each pattern
    /// write (edit, disable, delete, import), so a pattern taken out of service is not served
    /// from the cache for the rest of its TTL. Redis trouble is logged; the cache then cannot
    /// be read either.
    pub async fn invalidate(&self, organization_id: Uuid) {
        let bumped: Result<i64, String> = async {
            let mut conn = self.redis.get().await.map_err(|e| e.to_string())?;
            redis::cmd("INCR")
                .arg(self.generation_key(organization_id))
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(error) = bumped {
            tracing::warn!(%error, %organization_id, "could not invalidate the turn-context cache");
        }
    }

    /// A cached context still valid for the organization's current generation, and that
    /// generation (`None` when Redis could not say: then nothing is cached either). Redis
    /// trouble is a miss, not an error.
    async fn cached(
        &self,
        organization_id: Uuid,
        key: &str,
    ) -> (Option<Vec<PatternHit>>, Option<u64>) {
        let Ok(mut conn) = self.redis.get().await else {
            return (None, None);
        };
        let read: Result<(Option<String>, Option<u64>), _> = redis::cmd("MGET")
            .arg(key)
            .arg(self.generation_key(organization_id))
            .query_async(&mut conn)
            .await;
        let Ok((raw, generation)) = read else {
            return (None, None);
        };
        let generation = generation.unwrap_or(0);
        let hits = raw
            .and_then(|raw| serde_json::from_str::<CachedContext>(&raw).ok())
            .filter(|c| c.generation == generation)
            .map(|c| c.hits);
        (hits, Some(generation))
    }

    /// Caches `hits` as of `generation` (read before the search: a write during the search
    /// makes this entry stale at once, never the reverse).
    async fn cache(&self, key: &str, hits: &[PatternHit], generation: u64) {
        // "Nothing found" is not cached: a pattern learned a minute later must be found at once.
        if hits.is_empty() {
            return;
        }
        let Ok(json) = serde_json::to_string(&CachedContext {
            generation,
            hits: hits.to_vec(),
        }) else {
            return;
        };
        let Ok(mut conn) = self.redis.get().await else {
            return;
        };
        let stored: Result<(), _> = redis::cmd("SET")
            .arg(key)
            .arg(json)
            .arg("EX")
            .arg(self.cache_ttl_secs.max(1))
            .query_async(&mut conn)
            .await;
        if let Err(err) = stored {
            tracing::debug!(error = %err, "could not cache a turn context");
        }
    }
}

/// A cached turn context, tagged with the organization's pattern generation.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedContext {
    generation: u64,
    hits: Vec<PatternHit>,
}

/// `Some(result)` if `part` ended by `deadline` (`Some(None)`: it failed, see [`settled`]),
/// `None` if it was late. No part (nothing to fetch) counts as found.
async fn within<T: Default>(
    deadline: Instant,
    part: Option<impl std::future::Future<Output = Option<T>>>,
    what: &str,
) -> Option<Option<T>> {
    let Some(part) = part else {
        return Some(Some(T::default()));
    };
    match tokio::time::timeout_at(deadline, part).await {
        Err(_) => {
            tracing::debug!(part = what, "retrieval part skipped: over the budget");
            None
        }
        Ok(value) => Some(value),
    }
}

/// A retrieval part's task, ended: its value, or `None` once why it has none is logged.
fn settled<T>(
    joined: Result<Result<T, StoreError>, tokio::task::JoinError>,
    what: &str,
) -> Option<T> {
    match joined {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            tracing::warn!(part = what, error = %err, "retrieval part failed");
            None
        }
        Err(err) => {
            tracing::warn!(part = what, error = %err, "retrieval task died");
            None
        }
    }
}

/// The cache identity of a turn: case and spacing do not matter.
fn text_hash(text: &str) -> String {
    let normalised = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let digest = Sha256::digest(normalised.as_bytes());
    digest[..16].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_ignores_case_and_spacing() {
        assert_eq!(
            text_hash("My  router\tis DOWN"),
            text_hash("my router is down")
        );
        assert_ne!(text_hash("router down"), text_hash("router up"));
    }

    #[test]
    fn an_empty_context_adds_nothing_to_the_prompt() {
        assert_eq!(RetrievedContext::default().prompt_section(), "");
    }
}
