//! Learning from calls: embeddings (Gemini, with a local fallback), retrieval of patterns and
//! caller memory during a call, and the post-call pipeline run as durable jobs.
//!
//! The loop: when a call ends, [`enqueue_post_call`] queues `summarize_call`; its worker writes
//! `calls.summary` and queues `extract_patterns` (resolved calls only: problem/resolution pairs,
//! embedded and merged into the patterns) and `write_memory` (a snapshot of what we know about
//! the remote party's number: the caller inbound, the callee outbound; redacted by
//! [`redact`] before it is stored). On each later turn, [`retrieval::Retriever::context_for_turn`] embeds
//! what the caller said and brings back the nearest patterns and that caller's memory, within
//! a latency budget, for the LLM prompt.

pub mod embedder;
pub mod pipeline;
pub mod redact;
pub mod retrieval;
pub mod worker;

pub use embedder::Embedder;
pub use retrieval::{MemoryFetch, RetrievedContext, Retriever};

use crate::store::jobs::{self, NewJob, DEFAULT_MAX_ATTEMPTS};
use crate::store::StoreError;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

/// What the HTTP handlers and the call actors reach: the embedder and the retriever.
#[derive(Clone)]
pub struct Learning {
    pub embedder: Embedder,
    pub retriever: Retriever,
    /// Retrieval and merge settings (top-k, similarities, ef_search, budget).
    pub settings: crate::config::LearningSettings,
}

/// The kinds of post-call job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Groq summary of the transcript → `calls.summary`; then queues the next two.
    SummarizeCall,
    /// Resolved calls: problem/resolution pairs → embedded → merged into the patterns.
    ExtractPatterns,
    /// Summary, facts and embedding for the caller's number → a memory snapshot.
    WriteMemory,
}

impl JobKind {
    /// Every kind (the `iace_jobs` gauge's `kind` values, with `other` for anything else).
    pub const ALL: [JobKind; 3] = [
        JobKind::SummarizeCall,
        JobKind::ExtractPatterns,
        JobKind::WriteMemory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SummarizeCall => "summarize_call",
            JobKind::ExtractPatterns => "extract_patterns",
            JobKind::WriteMemory => "write_memory",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "summarize_call" => Some(JobKind::SummarizeCall),
            "extract_patterns" => Some(JobKind::ExtractPatterns),
            "write_memory" => Some(JobKind::WriteMemory),
            _ => None,
        }
    }
}

/// Queues the post-call pipeline of a call that has ended (its utterances and outcome
/// written). Idempotent: a call whose pipeline is already queued gets no second one. Returns
/// whether a job was queued. Cheap (one or two small queries): call it from the call's end.
pub async fn enqueue_post_call(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    call_id: Uuid,
) -> Result<bool, StoreError> {
    enqueue_post_call_traced(conn, organization_id, call_id, None).await
}

/// [`enqueue_post_call`] remembering the call's span (`traceparent`) in the job's payload, so
/// the job's span links to the call's trace on whichever instance runs it.
pub async fn enqueue_post_call_traced(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    call_id: Uuid,
    traceparent: Option<&str>,
) -> Result<bool, StoreError> {
    enqueue_once(
        conn,
        organization_id,
        call_id,
        JobKind::SummarizeCall,
        DEFAULT_MAX_ATTEMPTS,
        traceparent,
    )
    .await
}

/// The payload key holding the call's `traceparent`.
pub const TRACEPARENT_KEY: &str = "traceparent";

/// Queues a job of `kind` for a call unless it has one already.
pub(crate) async fn enqueue_once(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    call_id: Uuid,
    kind: JobKind,
    max_attempts: i32,
    traceparent: Option<&str>,
) -> Result<bool, StoreError> {
    if jobs::exists_for_call(conn, organization_id, call_id, kind.as_str()).await? {
        return Ok(false);
    }
    let mut job = NewJob::for_call(organization_id, call_id, kind.as_str(), max_attempts);
    if let Some(traceparent) = traceparent {
        job.payload = serde_json::json!({ TRACEPARENT_KEY: traceparent });
    }
    jobs::enqueue(conn, &job).await?;
    // One idle worker of this process looks now instead of at its next poll.
    JOBS_QUEUED.notify_one();
    Ok(true)
}

/// Rung when this process queues a job: an idle worker polls at once. Idle workers otherwise
/// poll less and less often (see `worker`), so an idle engine is not woken several times a
/// second by its job queue; jobs queued by other instances wait at most one idle poll.
pub(crate) static JOBS_QUEUED: tokio::sync::Notify = tokio::sync::Notify::const_new();
