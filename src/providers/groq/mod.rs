//! Groq chat completions (OpenAI-compatible HTTP): full answers, JSON-mode answers parsed into a
//! type, and streamed answers as a `Stream` of text tokens (SSE).
//!
//! There are no automatic retries: on a live call a 429 or a 5xx is better answered at once
//! (another model, a canned reply) than by sleeping, so the caller gets a typed error
//! ([`ProviderError::RateLimited`] carries the `retry-after` hint) and decides.
//! ```ignore
//! let groq = GroqClient::new(&settings.groq);
//! let tokens = groq.stream(groq.chat_request(history)).await?;   // LocalBoxStream of tokens
//! ctx.add_stream(tokens);                                          // feed a SentenceSplitter
//! ```

pub mod messages;
pub mod sse;

pub use messages::{ChatCompletion, ChatMessage, ChatRequest, ResponseFormat, Role};

use crate::config::{GroqSettings, Secret};
use crate::providers::breaker::{guarded, Breaker};
use crate::providers::{http, ProviderError};
use futures_util::stream::LocalBoxStream;
use futures_util::StreamExt;
use messages::{ChatChunk, ErrorBody};
use serde::de::DeserializeOwned;
use sse::{SseEvent, SseParser};
use std::collections::VecDeque;
use std::time::Duration;

const PROVIDER: &str = "groq";
/// Largest non-streamed answer read.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The streamed text of one answer, token by token. Ends after `[DONE]`; a failure mid-stream is
/// its last item. Not `Send`: consume it on the arbiter that created it.
pub type TokenStream = LocalBoxStream<'static, Result<String, ProviderError>>;

/// Calls Groq chat completions. Cheap to clone; HTTP connections are pooled per thread.
#[derive(Debug, Clone)]
pub struct GroqClient {
    endpoint: String,
    api_key: Secret,
    model: String,
    temperature: f32,
    max_completion_tokens: u32,
    request_timeout: Duration,
    stream_idle_timeout: Duration,
    breaker: Option<Breaker>,
}

impl GroqClient {
    pub fn new(settings: &GroqSettings) -> Self {
        Self {
            endpoint: format!(
                "{}/chat/completions",
                settings.base_url.trim_end_matches('/')
            ),
            api_key: settings.api_key.clone(),
            model: settings.model.clone(),
            temperature: settings.temperature,
            max_completion_tokens: settings.max_completion_tokens,
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            stream_idle_timeout: Duration::from_millis(settings.stream_idle_timeout_ms),
            breaker: None,
        }
    }

    /// Requests go out only while `breaker` allows, and each one counts on it (a stream counts
    /// as a success once its response head arrived, and as a failure too if it then breaks
    /// off: cut, stalled past the idle timeout, or an error event).
    pub fn with_breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The breaker guarding this client's requests, if any.
    pub fn breaker(&self) -> Option<&Breaker> {
        self.breaker.as_ref()
    }

    /// The same client for another model, at another OpenAI-compatible base URL and key
    /// (the fallback model). Keeps the timeouts; takes no breaker of its own.
    pub fn for_model(&self, base_url: &str, api_key: &Secret, model: &str) -> Self {
        Self {
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key: api_key.clone(),
            model: model.to_owned(),
            breaker: None,
            ..self.clone()
        }
    }

    /// The same client with another time budget (e.g. the short one of sentiment requests).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A request for `messages` with the configured model, temperature and token limit.
    pub fn chat_request(&self, messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: self.model.clone(),
            messages,
            temperature: Some(self.temperature),
            max_completion_tokens: Some(self.max_completion_tokens),
            stream: false,
            response_format: None,
            seed: None,
        }
    }

    /// The whole answer, within the request timeout.
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatCompletion, ProviderError> {
        let request = ChatRequest {
            stream: false,
            ..request.clone()
        };
        let call = async {
            let mut response = self.send(&request).await?;
            response
                .json::<ChatCompletion>()
                .limit(MAX_BODY_BYTES)
                .await
                .map_err(|e| ProviderError::Protocol {
                    provider: PROVIDER,
                    message: format!("unreadable answer: {e}"),
                })
        };
        let bounded = async {
            actix_web::rt::time::timeout(self.request_timeout, call)
                .await
                .map_err(|_| self.timeout())?
        };
        guarded(self.breaker.as_ref(), PROVIDER, bounded).await
    }

    /// A JSON-mode answer (`response_format: json_object`) parsed into `T`. The prompt must ask
    /// for JSON and describe its shape.
    pub async fn complete_json<T: DeserializeOwned>(
        &self,
        request: &ChatRequest,
    ) -> Result<T, ProviderError> {
        let request = ChatRequest {
            response_format: Some(ResponseFormat::json_object()),
            ..request.clone()
        };
        let completion = self.complete(&request).await?;
        serde_json::from_str(completion.content()).map_err(|e| ProviderError::Protocol {
            provider: PROVIDER,
            message: format!("JSON answer does not fit the expected shape: {e}"),
        })
    }

    /// Streams the answer: resolves once the response headers arrive (within the request
    /// timeout); then each chunk must follow the previous one within the stream idle timeout.
    pub async fn stream(&self, request: ChatRequest) -> Result<TokenStream, ProviderError> {
        let request = ChatRequest {
            stream: true,
            ..request
        };
        let head = async {
            actix_web::rt::time::timeout(self.request_timeout, self.send(&request))
                .await
                .map_err(|_| self.timeout())?
        };
        let response = guarded(self.breaker.as_ref(), PROVIDER, head).await?;
        let state = TokenState {
            body: response,
            parser: SseParser::new(),
            pending: VecDeque::new(),
            finished: false,
            drain: false,
            idle_timeout: self.stream_idle_timeout,
            breaker: self.breaker.clone(),
        };
        Ok(futures_util::stream::unfold(state, next_token).boxed_local())
    }

    /// Sends `request` and returns the response if its status is a success.
    #[tracing::instrument(name = "provider_request", skip_all, fields(provider = PROVIDER))]
    async fn send(
        &self,
        request: &ChatRequest,
    ) -> Result<
        awc::ClientResponse<
            impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>,
        >,
        ProviderError,
    > {
        let mut builder = http::traced(http::client().post(&self.endpoint))
            .timeout(self.request_timeout)
            .insert_header(("accept", "application/json, text/event-stream"));
        if !self.api_key.is_empty() {
            builder = builder.bearer_auth(self.api_key.expose());
        }
        let mut response = builder
            .send_json(request)
            .await
            .map_err(|e| http::send_error(PROVIDER, e, self.request_timeout))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = http::retry_after(response.headers());
        let body = response.body().limit(64 * 1024).await.unwrap_or_default();
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(300).collect());
        Err(http::status_error(PROVIDER, status, message, retry_after))
    }

    fn timeout(&self) -> ProviderError {
        ProviderError::Timeout {
            provider: PROVIDER,
            after: self.request_timeout,
        }
    }
}

/// The state of a token stream between two items.
struct TokenState<S> {
    body: S,
    parser: SseParser,
    pending: VecDeque<Result<String, ProviderError>>,
    /// Nothing more is read: `[DONE]`, an error, or the end of the body was seen.
    finished: bool,
    /// `[DONE]` was seen: the rest of the body is read (see [`drain`]) once the stream ends.
    drain: bool,
    idle_timeout: Duration,
    /// The breaker that let the request through: a stream that breaks off after its head was
    /// counted a success is a failure of the provider too.
    breaker: Option<Breaker>,
}

impl<S> TokenState<S> {
    /// The stream broke off with `err` (cut, stalled, or an error event): the last item.
    fn broke_off(&mut self, err: ProviderError) {
        if let Some(breaker) = self
            .breaker
            .as_ref()
            .filter(|_| err.counts_against_provider())
        {
            breaker.failure();
        }
        self.pending.push_back(Err(err));
        self.finished = true;
    }
}

async fn next_token<S>(
    mut state: TokenState<S>,
) -> Option<(Result<String, ProviderError>, TokenState<S>)>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>
        + Unpin
        + 'static,
{
    loop {
        if let Some(item) = state.pending.pop_front() {
            return Some((item, state));
        }
        if state.finished {
            if state.drain {
                // In a task of its own: the answer ends now, whenever the body does.
                let mut body = state.body;
                actix_web::rt::spawn(async move { drain(&mut body).await });
            }
            return None;
        }
        let lost = |message: String| ProviderError::Disconnected {
            provider: PROVIDER,
            message,
        };
        match actix_web::rt::time::timeout(state.idle_timeout, state.body.next()).await {
            Err(_) => {
                let after = state.idle_timeout;
                state.broke_off(ProviderError::Timeout {
                    provider: PROVIDER,
                    after,
                });
            }
            Ok(None) => state.broke_off(lost("stream ended before [DONE]".into())),
            Ok(Some(Err(err))) => state.broke_off(lost(err.to_string())),
            Ok(Some(Ok(bytes))) => {
                for event in state.parser.push(&bytes) {
                    match interpret(&event) {
                        Streamed::Token(token) => state.pending.push_back(Ok(token)),
                        Streamed::Nothing => {}
                        Streamed::Done => {
                            state.finished = true;
                            state.drain = true;
                        }
                        Streamed::Failed(err) => state.broke_off(err),
                    }
                    if state.finished {
                        break;
                    }
                }
            }
        }
    }
}

/// How long the end of a body may take after `[DONE]`, and how much of it is read.
const DRAIN_WITHIN: Duration = Duration::from_millis(100);
const DRAIN_LIMIT: usize = 16 * 1024;

/// Reads what follows `[DONE]` to the body's end (normally nothing, and already here), so awc
/// gives the connection back to its pool: a response dropped mid-body closes its connection,
/// and every turn's answer then paid a new connection (and, to the real Groq, a TLS
/// handshake). A server that keeps the body open or keeps sending is given [`DRAIN_WITHIN`];
/// its connection is then closed as before.
async fn drain<S>(body: &mut S)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    let _ = actix_web::rt::time::timeout(DRAIN_WITHIN, async {
        let mut read = 0;
        while let Some(Ok(bytes)) = body.next().await {
            read += bytes.len();
            if read > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

/// What one SSE event means for the token stream.
enum Streamed {
    Token(String),
    Nothing,
    Done,
    Failed(ProviderError),
}

fn interpret(event: &SseEvent) -> Streamed {
    let data = event.data.trim();
    if data == "[DONE]" {
        return Streamed::Done;
    }
    let failed = |message: String| {
        Streamed::Failed(ProviderError::Server {
            provider: PROVIDER,
            status: 200,
            message,
        })
    };
    if event.event.as_deref() == Some("error") {
        return failed(data.to_owned());
    }
    if let Ok(error) = serde_json::from_str::<ErrorBody>(data) {
        return failed(error.error.message);
    }
    match serde_json::from_str::<ChatChunk>(data) {
        Ok(chunk) => match chunk
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.delta.content)
        {
            Some(token) if !token.is_empty() => Streamed::Token(token),
            _ => Streamed::Nothing,
        },
        Err(e) => Streamed::Failed(ProviderError::Protocol {
            provider: PROVIDER,
            message: format!("undecodable chunk: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    #[test]
    fn chunks_become_tokens_and_done_ends_the_stream() {
        let role = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert!(matches!(interpret(&event(role)), Streamed::Nothing));
        let token =
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"Sure"},"finish_reason":null}]}"#;
        assert!(matches!(interpret(&event(token)), Streamed::Token(t) if t == "Sure"));
        let last = r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"r"}}"#;
        assert!(matches!(interpret(&event(last)), Streamed::Nothing));
        assert!(matches!(interpret(&event("[DONE]")), Streamed::Done));
    }

    #[test]
    fn errors_inside_the_stream_fail_it() {
        let body = r#"{"error":{"message":"overloaded","type":"server_error"}}"#;
        assert!(
            matches!(interpret(&event(body)), Streamed::Failed(ProviderError::Server { message, .. }) if message == "overloaded")
        );
        let named = SseEvent {
            event: Some("error".into()),
            data: "boom".into(),
        };
        assert!(matches!(interpret(&named), Streamed::Failed(_)));
        assert!(matches!(
            interpret(&event("{not json")),
            Streamed::Failed(ProviderError::Protocol { .. })
        ));
    }
}
