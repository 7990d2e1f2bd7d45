//! Gemini API embeddings (`gemini-embedding-001` truncated to 768 dimensions): one query through
//! `:embedContent`, documents through `:batchEmbedContents` in chunks of at most `batch_size`.
//! Every vector comes back L2-normalised (Google only normalises the full 3072 dimensions) and
//! labelled with the model that made it.
//!
//! No automatic retries here either: a live turn would rather fall back to the local embedder
//! (see `learning::embedder`), and a post-call job retries as a whole with backoff.

pub mod messages;

use crate::config::{is_loopback_url, GeminiSettings, Secret};
use crate::domain::embedding::{Embedding, EMBEDDING_DIMS};
use crate::providers::breaker::{guarded, Breaker};
use crate::providers::{http, ProviderError};
use messages::{
    BatchEmbedContentsRequest, BatchEmbedContentsResponse, Content, EmbedContentRequest,
    EmbedContentResponse, ErrorBody, TaskType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

const PROVIDER: &str = "gemini";
/// The API's cap on one `batchEmbedContents` call.
pub const MAX_BATCH: usize = 100;
/// Largest answer read: 100 vectors of 768 numbers as JSON fit easily.
const MAX_BODY_BYTES: usize = 8 << 20;

/// Calls the Gemini embeddings API. Cheap to clone and `Send`; HTTP connections are pooled per
/// thread, so its futures must run on an actix arbiter.
#[derive(Debug, Clone)]
pub struct GeminiClient {
    base_url: String,
    api_key: Secret,
    model: String,
    request_timeout: Duration,
    batch_size: usize,
    breaker: Option<Breaker>,
}

impl GeminiClient {
    pub fn new(settings: &GeminiSettings) -> Self {
        Self {
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone(),
            model: settings.model.trim_start_matches("models/").to_owned(),
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            batch_size: settings.batch_size.clamp(1, MAX_BATCH),
            breaker: None,
        }
    }

    /// Requests go out only while `breaker` allows, and each one counts on it.
    pub fn with_breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The model name stored beside each vector it makes.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// False when there is neither a key nor a local simulator to talk to: callers then use
    /// the local embedder without trying.
    pub fn is_configured(&self) -> bool {
        !self.api_key.is_empty() || is_loopback_url(&self.base_url)
    }

    /// The same client with another time budget.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Embeds a question (`RETRIEVAL_QUERY`) through `:embedContent`.
    pub async fn embed_query(&self, text: &str) -> Result<Embedding, ProviderError> {
        let request = EmbedContentRequest {
            model: Some(self.model_path()),
            ..self.item(text, TaskType::RetrievalQuery)
        };
        let response: EmbedContentResponse = self.post("embedContent", &request).await?;
        self.embedding(response.embedding.values)
    }

    /// Embeds texts to store (`RETRIEVAL_DOCUMENT`) through `:batchEmbedContents`, at most
    /// `batch_size` per request; the result is in input order.
    pub async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Embedding>, ProviderError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size) {
            let request = BatchEmbedContentsRequest {
                requests: chunk
                    .iter()
                    .map(|text| EmbedContentRequest {
                        model: Some(self.model_path()),
                        ..self.item(text, TaskType::RetrievalDocument)
                    })
                    .collect(),
            };
            let response: BatchEmbedContentsResponse =
                self.post("batchEmbedContents", &request).await?;
            if response.embeddings.len() != chunk.len() {
                return Err(protocol(format!(
                    "{} embeddings for {} texts",
                    response.embeddings.len(),
                    chunk.len()
                )));
            }
            for e in response.embeddings {
                out.push(self.embedding(e.values)?);
            }
        }
        Ok(out)
    }

    fn model_path(&self) -> String {
        format!("models/{}", self.model)
    }

    fn item(&self, text: &str, task: TaskType) -> EmbedContentRequest {
        EmbedContentRequest {
            model: None,
            content: Content::text(text),
            task_type: Some(task),
            title: None,
            output_dimensionality: Some(EMBEDDING_DIMS as u32),
        }
    }

    fn embedding(&self, values: Vec<f32>) -> Result<Embedding, ProviderError> {
        if values.len() != EMBEDDING_DIMS {
            return Err(protocol(format!(
                "{} dimensions, expected {EMBEDDING_DIMS}",
                values.len()
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(protocol("a vector holds a non-finite number".into()));
        }
        Ok(Embedding::new(self.model.clone(), values))
    }

    /// POSTs `body` to `models/{model}:{method}` and parses the answer, all within the timeout.
    #[tracing::instrument(name = "provider_request", skip_all, fields(provider = PROVIDER))]
    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        body: &B,
    ) -> Result<T, ProviderError> {
        let url = format!("{}/models/{}:{method}", self.base_url, self.model);
        let call = async {
            let mut builder = http::traced(http::client().post(&url))
                .timeout(self.request_timeout)
                .insert_header(("accept", "application/json"));
            if !self.api_key.is_empty() {
                builder = builder.insert_header(("x-goog-api-key", self.api_key.expose()));
            }
            let mut response = builder
                .send_json(body)
                .await
                .map_err(|e| http::send_error(PROVIDER, e, self.request_timeout))?;
            let status = response.status();
            if !status.is_success() {
                let retry_after = http::retry_after(response.headers());
                let body = response.body().limit(64 * 1024).await.unwrap_or_default();
                let message = serde_json::from_slice::<ErrorBody>(&body)
                    .map(|b| b.error.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(300).collect());
                return Err(http::status_error(PROVIDER, status, message, retry_after));
            }
            response
                .json::<T>()
                .limit(MAX_BODY_BYTES)
                .await
                .map_err(|e| protocol(format!("unreadable answer: {e}")))
        };
        let bounded = async {
            actix_web::rt::time::timeout(self.request_timeout, call)
                .await
                .map_err(|_| ProviderError::Timeout {
                    provider: PROVIDER,
                    after: self.request_timeout,
                })?
        };
        guarded(self.breaker.as_ref(), PROVIDER, bounded).await
    }
}

fn protocol(message: String) -> ProviderError {
    ProviderError::Protocol {
        provider: PROVIDER,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_camel_case_with_the_task_type_in_capitals() {
        let client = GeminiClient::new(&GeminiSettings {
            api_key: Secret::new("k"),
            base_url: "https://generativelanguage.googleapis.com/v1beta/".into(),
            model: "models/gemini-embedding-001".into(),
            request_timeout_ms: 1000,
            batch_size: 500,
        });
        assert_eq!(client.model(), "gemini-embedding-001");
        assert_eq!(client.batch_size, MAX_BATCH);
        let body = serde_json::to_value(EmbedContentRequest {
            model: Some(client.model_path()),
            ..client.item("hi", TaskType::RetrievalQuery)
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "hi"}]},
                "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 768})
        );
    }
}
