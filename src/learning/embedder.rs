//! The embedder the engine uses: Gemini when configured, the local hashed embedder otherwise
//! or when Gemini cannot be reached. Every vector carries its model, and searches filter by
//! it, so a fallback vector is only ever compared with other fallback vectors.

use crate::config::GeminiSettings;
use crate::domain::embedding::{local_embedding, Embedding, LOCAL_MODEL};
use crate::providers::gemini::GeminiClient;
use crate::providers::ProviderError;

/// Gemini with a local fallback. Cheap to clone and `Send`; its futures use awc, so they run
/// on an actix arbiter.
#[derive(Debug, Clone)]
pub struct Embedder {
    gemini: Option<GeminiClient>,
}

impl Embedder {
    /// Gemini if `settings` make it usable (a key, or a local simulator), else local only.
    pub fn new(settings: &GeminiSettings) -> Self {
        let client = GeminiClient::new(settings);
        Self {
            gemini: client.is_configured().then_some(client),
        }
    }

    /// Gemini requests go through `breaker`: while it is open, queries take the local embedder
    /// at once and document jobs wait for a retry.
    pub fn with_breaker(mut self, breaker: crate::providers::breaker::Breaker) -> Self {
        self.gemini = self.gemini.map(|g| g.with_breaker(breaker));
        self
    }

    /// The local embedder alone (benchmarks, development without Gemini).
    pub fn local() -> Self {
        Self { gemini: None }
    }

    /// The model vectors come from when all is well.
    pub fn preferred_model(&self) -> &str {
        self.gemini
            .as_ref()
            .map_or(LOCAL_MODEL, GeminiClient::model)
    }

    /// Embeds a caller's question. Never fails: on any Gemini error the local embedder
    /// answers (a live turn would rather search the local vectors than nothing).
    pub async fn embed_query(&self, text: &str) -> Embedding {
        if let Some(gemini) = &self.gemini {
            match gemini.embed_query(text).await {
                Ok(embedding) => return embedding,
                Err(err) => {
                    tracing::warn!(error = %err, "query embedding failed; using the local embedder")
                }
            }
        }
        local_embedding(text)
    }

    /// Embeds texts to store, in order. Falls back to the local embedder only when Gemini is
    /// unconfigured or unreachable; other failures (429, 5xx, timeouts) are returned so a job
    /// retries later, rather than filing the texts under the fallback model for good.
    pub async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Embedding>, ProviderError> {
        if let Some(gemini) = &self.gemini {
            match gemini.embed_documents(texts).await {
                Ok(embeddings) => return Ok(embeddings),
                Err(err @ ProviderError::Connect { .. }) => {
                    tracing::warn!(error = %err, "Gemini unreachable; using the local embedder")
                }
                Err(err) => return Err(err),
            }
        }
        Ok(texts.iter().map(|t| local_embedding(t)).collect())
    }
}
