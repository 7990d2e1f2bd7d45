//! The post-call jobs themselves: what each kind does with the call, Groq and the embedder.
//! Each is safe to run again after a failure part-way (follow-ups are queued once, a memory
//! snapshot is written once per call; a re-run of `extract_patterns` reinforces the patterns
//! its first run stored instead of duplicating them).

use crate::domain::call::Direction;
use crate::learning::{enqueue_once, redact, Embedder, JobKind};
use crate::prompts;
use crate::providers::groq::{ChatMessage, GroqClient};
use crate::providers::ProviderError;
use crate::store::calls::{self, CallRow};
use crate::store::jobs::JobRow;
use crate::store::memory::{self, NewMemorySnapshot};
use crate::store::patterns::{self, NewPattern};
use crate::store::utterances::{self, UtteranceRow};
use crate::store::{DbPool, StoreError};
use diesel_async::AsyncConnection;
use serde::Deserialize;

/// Longest text kept from the model for one field.
const MAX_FIELD_CHARS: usize = 2000;

/// Why a job attempt failed, and whether another attempt may succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Retrying cannot help (the call is gone, the job is malformed).
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    pub fn is_retryable(&self) -> bool {
        match self {
            JobError::Store(_) => true,
            JobError::Provider(e) => e.is_transient(),
            JobError::Permanent(_) => false,
        }
    }
}

/// What the jobs need, shared by every worker.
#[derive(Clone)]
pub struct Pipeline {
    pub db: DbPool,
    pub groq: GroqClient,
    pub embedder: Embedder,
    pub merge_similarity: f64,
    pub ef_search: u32,
    /// Patterns an organization needs before it gets its own HNSW index.
    pub index_min_rows: i64,
    /// A pattern learnt from one call waits for a confirmation before calls are told it.
    pub confirm_patterns: bool,
}

#[derive(Debug, Deserialize)]
struct SummaryAnswer {
    summary: String,
    #[serde(default)]
    outcome: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ExtractAnswer {
    #[serde(default)]
    pairs: Vec<Pair>,
}

#[derive(Debug, Deserialize)]
struct Pair {
    problem: String,
    resolution: String,
}

#[derive(Debug, Deserialize)]
struct MemoryAnswer {
    summary: String,
    #[serde(default)]
    facts: Vec<String>,
}

impl Pipeline {
    /// Runs one claimed job.
    pub async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let kind = JobKind::parse(&job.kind)
            .ok_or_else(|| JobError::Permanent(format!("unknown job kind {:?}", job.kind)))?;
        let call_id = job
            .call_id
            .ok_or_else(|| JobError::Permanent("the job names no call".into()))?;
        let mut conn = self.db.get().await.map_err(StoreError::from)?;
        let call = calls::find(&mut conn, job.organization_id, call_id)
            .await?
            .ok_or_else(|| JobError::Permanent(format!("call {call_id} not found")))?;
        let transcript = utterances::list_for_call(&mut conn, job.organization_id, call_id).await?;
        drop(conn);
        match kind {
            JobKind::SummarizeCall => self.summarize(job, &call, &transcript).await,
            JobKind::ExtractPatterns => self.extract(&call, &transcript).await,
            JobKind::WriteMemory => self.remember(&call, &transcript).await,
        }
    }

    async fn summarize(
        &self,
        job: &JobRow,
        call: &CallRow,
        transcript: &[UtteranceRow],
    ) -> Result<(), JobError> {
        if transcript.is_empty() {
            let mut conn = self.db.get().await.map_err(StoreError::from)?;
            let summary = "The call ended before anything was said.";
            calls::set_summary(&mut conn, call.organization_id, call.id, summary, None).await?;
            return Ok(());
        }
        let answer: SummaryAnswer = self
            .ask(
                prompts::SUMMARY_PROMPT,
                prompts::transcript_text(transcript),
            )
            .await?;
        let summary = clip(&answer.summary);
        if summary.is_empty() {
            return Err(JobError::Provider(ProviderError::Protocol {
                provider: "groq",
                message: "empty summary".into(),
            }));
        }
        let classified = answer
            .outcome
            .as_deref()
            .filter(|o| *o == "resolved")
            .map(|_| "resolved");
        let resolved = call.outcome.as_deref().or(classified) == Some("resolved");
        let (org, call_id, max_attempts) = (call.organization_id, call.id, job.max_attempts);
        // The follow-ups link to the same call trace.
        let traceparent = job.payload[crate::learning::TRACEPARENT_KEY].as_str();
        let has_caller = !remote_party(call).is_empty();
        let mut conn = self.db.get().await.map_err(StoreError::from)?;
        // The summary and its follow-ups commit together: a retry finds them both or neither.
        conn.transaction::<_, StoreError, _>(async |conn| {
            calls::set_summary(conn, org, call_id, &summary, classified).await?;
            if resolved {
                enqueue_once(
                    conn,
                    org,
                    call_id,
                    JobKind::ExtractPatterns,
                    max_attempts,
                    traceparent,
                )
                .await?;
            }
            if has_caller {
                enqueue_once(
                    conn,
                    org,
                    call_id,
                    JobKind::WriteMemory,
                    max_attempts,
                    traceparent,
                )
                .await?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    async fn extract(&self, call: &CallRow, transcript: &[UtteranceRow]) -> Result<(), JobError> {
        if transcript.is_empty() {
            return Ok(());
        }
        let answer: ExtractAnswer = self
            .ask(
                prompts::EXTRACT_PROMPT,
                prompts::transcript_text(transcript),
            )
            .await?;
        let pairs: Vec<(String, String)> = answer
            .pairs
            .into_iter()
            .map(|p| (clip(&p.problem), clip(&p.resolution)))
            .filter(|(p, r)| !p.is_empty() && !r.is_empty())
            .take(3)
            .collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let problems: Vec<String> = pairs.iter().map(|(p, _)| p.clone()).collect();
        let embeddings = self.embedder.embed_documents(&problems).await?;
        let mut conn = self.db.get().await.map_err(StoreError::from)?;
        for ((problem, resolution), embedding) in pairs.into_iter().zip(embeddings) {
            let pattern = NewPattern::new(call.organization_id, problem, resolution, embedding)
                .learnt_from(call.id, remote_party(call), !self.confirm_patterns);
            let merged =
                patterns::merge(&mut conn, &pattern, self.merge_similarity, self.ef_search).await?;
            tracing::debug!(call_id = %call.id, ?merged, "pattern learnt");
        }
        patterns::ensure_org_index(&mut conn, call.organization_id, self.index_min_rows).await?;
        Ok(())
    }

    async fn remember(&self, call: &CallRow, transcript: &[UtteranceRow]) -> Result<(), JobError> {
        let number = remote_party(call);
        if number.is_empty() || transcript.is_empty() {
            return Ok(());
        }
        let mut conn = self.db.get().await.map_err(StoreError::from)?;
        let previous = memory::latest(&mut conn, call.organization_id, number).await?;
        if previous
            .as_ref()
            .is_some_and(|p| p.call_id == Some(call.id))
        {
            return Ok(()); // written by an earlier attempt of this job
        }
        drop(conn);
        let input = prompts::memory_input(previous.as_ref(), call.summary.as_deref(), transcript);
        let answer: MemoryAnswer = self.ask(prompts::MEMORY_PROMPT, input).await?;
        // Whatever the model kept, payment and identity data never reach storage (or a later
        // caller's prompt): numbers are masked, facts about cards, IDs and secrets dropped.
        let summary = redact::mask(&clip(&answer.summary));
        if summary.is_empty() {
            return Err(JobError::Provider(ProviderError::Protocol {
                provider: "groq",
                message: "empty caller memory".into(),
            }));
        }
        let facts: Vec<String> = answer
            .facts
            .iter()
            .map(|f| clip(f))
            .filter(|f| !f.is_empty() && !redact::is_sensitive(f))
            .map(|f| redact::mask(&f))
            .take(8)
            .collect();
        let embedding = self
            .embedder
            .embed_documents(std::slice::from_ref(&summary))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| JobError::Permanent("no embedding for the memory".into()))?;
        let snapshot = NewMemorySnapshot::new(
            call.organization_id,
            number,
            Some(call.id),
            summary,
            &facts,
            embedding,
        );
        let mut conn = self.db.get().await.map_err(StoreError::from)?;
        memory::insert(&mut conn, &snapshot).await?;
        Ok(())
    }

    /// One JSON-mode completion: `system` then `user`, parsed into `T`.
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        system: &str,
        user: String,
    ) -> Result<T, JobError> {
        let mut request = self
            .groq
            .chat_request(vec![ChatMessage::system(system), ChatMessage::user(user)]);
        // Summaries need more room than a spoken reply, and no creativity.
        request.max_completion_tokens = Some(800);
        request.temperature = Some(0.0);
        Ok(self.groq.complete_json(&request).await?)
    }
}

/// The number the call's memory belongs to: the caller inbound, the callee outbound.
fn remote_party(call: &CallRow) -> &str {
    Direction::parse(&call.direction)
        .map_or("", |d| d.remote_party(&call.from_number, &call.to_number))
        .trim()
}

fn clip(text: &str) -> String {
    text.trim().chars().take(MAX_FIELD_CHARS).collect()
}
