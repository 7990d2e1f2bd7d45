//! The Telnyx Call Control v2 client: typed commands over awc with Bearer auth, a `command_id` on
//! every command (the same one on each retry, so Telnyx runs it once), per-attempt timeouts,
//! jittered retries on 5xx and timeouts only, and typed errors that tell "the call has already
//! ended" apart from real failures.
//!
//! awc's client is `!Send` (it holds `Rc`s), so `TelnyxClient` only holds its settings and uses one
//! awc client per thread. The futures it returns are `!Send`: run them on an actix arbiter.

use crate::config::{Secret, TelnyxSettings};
use crate::providers::breaker::Breaker;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::future::LocalBoxFuture;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Telnyx's error code for a command on a call that has already ended (sent with HTTP 422).
pub const CALL_ENDED_CODE: &str = "90018";
/// Responses larger than this are not read (command answers are a few hundred bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What can go wrong with a Call Control command.
#[derive(Debug, thiserror::Error)]
pub enum TelnyxError {
    /// The call is gone (HTTP 422, code 90018). Not retried; callers treat it as "already done"
    /// for a hang-up and as a lost race otherwise.
    #[error("the call has already ended")]
    CallEnded,
    /// The API key was refused (HTTP 401).
    #[error("Telnyx refused the API key")]
    Unauthorized,
    /// Telnyx answered with an error (4xx, or 5xx after the retries ran out).
    #[error("Telnyx answered {status} ({}): {detail}", code.as_deref().unwrap_or("no code"))]
    Rejected {
        status: u16,
        code: Option<String>,
        detail: String,
    },
    /// No answer within the request timeout, on every attempt.
    #[error("Telnyx did not answer in time")]
    Timeout,
    /// The request could not be sent or the answer could not be read.
    #[error("transport error talking to Telnyx: {0}")]
    Transport(String),
    /// Not sent: Telnyx's circuit breaker is open (its API failed repeatedly just now).
    #[error("Telnyx circuit breaker is open")]
    CircuitOpen,
}

impl TelnyxError {
    /// Whether another attempt with the same `command_id` may succeed.
    fn is_retryable(&self) -> bool {
        match self {
            TelnyxError::Rejected { status, .. } => *status >= 500,
            TelnyxError::Timeout => true,
            TelnyxError::CallEnded
            | TelnyxError::Unauthorized
            | TelnyxError::Transport(_)
            | TelnyxError::CircuitOpen => false,
        }
    }

    /// The `kind` label of `iace_provider_errors_total`.
    fn kind(&self) -> &'static str {
        match self {
            TelnyxError::CallEnded => "call_ended",
            TelnyxError::Unauthorized => "unauthorized",
            TelnyxError::Rejected { status, .. } if *status >= 500 => "server",
            TelnyxError::Rejected { .. } => "rejected",
            TelnyxError::Timeout => "timeout",
            TelnyxError::Transport(_) => "connect",
            TelnyxError::CircuitOpen => "circuit_open",
        }
    }

    /// Whether Telnyx's circuit breaker counts it: the API was down, slow or refused our key.
    /// An ended call or a rejected command is an answer, not an outage.
    fn counts_against_telnyx(&self) -> bool {
        match self {
            TelnyxError::Rejected { status, .. } => *status >= 500,
            TelnyxError::Timeout | TelnyxError::Transport(_) | TelnyxError::Unauthorized => true,
            TelnyxError::CallEnded | TelnyxError::CircuitOpen => false,
        }
    }
}

/// The Call Control commands a call needs, object safe so a call actor can hold
/// `Rc<dyn CallControl>` (or `Arc<dyn CallControl + Send + Sync>`) and tests can substitute it.
pub trait CallControl {
    /// Places an outbound call (`POST /v2/calls`). Dialling is asynchronous: the call's progress
    /// arrives as webhooks.
    fn dial(&self, req: DialRequest) -> LocalBoxFuture<'_, Result<DialResponse, TelnyxError>>;
    /// Answers an incoming call, optionally starting the media stream with it.
    fn answer(
        &self,
        call_control_id: &str,
        req: AnswerRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Refuses an incoming call without answering it.
    fn reject(
        &self,
        call_control_id: &str,
        cause: RejectCause,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Hangs up the call.
    fn hangup(&self, call_control_id: &str) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Transfers the call to another number (a human agent, say).
    fn transfer(
        &self,
        call_control_id: &str,
        req: TransferRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Speaks text with Telnyx's own TTS (the fallback when our TTS provider is down).
    fn speak(
        &self,
        call_control_id: &str,
        req: SpeakRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Starts Telnyx's own transcription of the caller (the fallback when our STT provider is
    /// down); transcripts arrive as `call.transcription` webhooks.
    fn transcription_start(
        &self,
        call_control_id: &str,
        req: TranscriptionRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Stops Telnyx's transcription.
    fn transcription_stop(
        &self,
        call_control_id: &str,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Stops what Telnyx is playing or speaking into the call (`stop: all`): the caller talks
    /// over a line said by Telnyx `speak`.
    fn playback_stop(&self, call_control_id: &str) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Plays an audio file into the call.
    fn playback_start(
        &self,
        call_control_id: &str,
        req: PlaybackRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Starts the media stream on an answered call.
    fn streaming_start(
        &self,
        call_control_id: &str,
        stream: StreamSettings,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Stops every media stream of the call.
    fn streaming_stop(&self, call_control_id: &str) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Sends DTMF digits (0-9, A-D, `*`, `#`, `w`/`W` pauses).
    fn send_dtmf(
        &self,
        call_control_id: &str,
        digits: &str,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Starts recording the call.
    fn record_start(
        &self,
        call_control_id: &str,
        req: RecordRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
    /// Stops recording; Telnyx then sends `call.recording.saved`.
    fn record_stop(&self, call_control_id: &str) -> LocalBoxFuture<'_, Result<(), TelnyxError>>;
}

/// `stream_track`: which audio Telnyx streams to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamTrack {
    InboundTrack,
    OutboundTrack,
    BothTracks,
}

/// `stream_bidirectional_mode`: `rtp` sends raw codec audio back; `mp3` (Telnyx's default) queues
/// whole files and is too slow for a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BidirectionalMode {
    Rtp,
    Mp3,
}

/// The G.711 codecs the engine streams in (case sensitive on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamCodec {
    #[serde(rename = "PCMU")]
    Pcmu,
    #[serde(rename = "PCMA")]
    Pcma,
}

/// Media streaming settings, flattened into answer, dial and streaming_start bodies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSettings {
    pub stream_url: String,
    pub stream_track: StreamTrack,
    pub stream_bidirectional_mode: BidirectionalMode,
    pub stream_bidirectional_codec: StreamCodec,
}

impl StreamSettings {
    /// The engine's usual stream: the caller's audio in, raw `rtp` audio back in `codec`.
    pub fn bidirectional(stream_url: impl Into<String>, codec: StreamCodec) -> Self {
        Self {
            stream_url: stream_url.into(),
            stream_track: StreamTrack::InboundTrack,
            stream_bidirectional_mode: BidirectionalMode::Rtp,
            stream_bidirectional_codec: codec,
        }
    }
}

/// An outbound call. `connection_id` comes from the settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DialRequest {
    pub to: String,
    pub from: String,
    /// Plain text; sent base64-encoded and echoed in every webhook of the call.
    pub client_state: Option<String>,
    /// Ring time before giving up (5..600).
    pub timeout_secs: Option<u32>,
    /// Hard limit on the call's length (max 14400).
    pub time_limit_secs: Option<u32>,
    /// `detect`, `premium`, ... (see PROTOCOLS.md 1.2); `None` disables detection.
    pub answering_machine_detection: Option<String>,
    pub stream: Option<StreamSettings>,
    /// Overrides the connection's webhook URL for this call.
    pub webhook_url: Option<String>,
}

/// Telnyx's identifiers of a dialled call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DialResponse {
    pub call_control_id: String,
    #[serde(default)]
    pub call_leg_id: Option<String>,
    #[serde(default)]
    pub call_session_id: Option<String>,
}

/// Answering an incoming call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnswerRequest {
    pub stream: Option<StreamSettings>,
    /// Plain text; sent base64-encoded.
    pub client_state: Option<String>,
}

/// Why an incoming call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectCause {
    CallRejected,
    UserBusy,
}

/// Transferring a call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TransferRequest {
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Telnyx text-to-speech.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SpeakRequest {
    /// Text or SSML, at most 3000 characters.
    pub payload: String,
    /// For example `AWS.Polly.Joanna-Neural`.
    pub voice: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// Starting Telnyx transcription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptionRequest {
    /// BCP 47, e.g. `en-US`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `inbound` (the caller), `outbound` or `both`.
    pub transcription_tracks: String,
    pub interim_results: bool,
}

impl TranscriptionRequest {
    /// The caller's side, final transcripts only.
    pub fn caller(language: Option<String>) -> Self {
        Self {
            language,
            transcription_tracks: "inbound".into(),
            interim_results: false,
        }
    }
}

/// Playing an audio file by URL.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlaybackRequest {
    pub audio_url: String,
    /// `true` plays it over the call's audio instead of replacing it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overlay: bool,
}

/// Recording the call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordRequest {
    /// `single` or `dual`.
    pub channels: String,
    /// `wav` or `mp3`.
    pub format: String,
}

impl Default for RecordRequest {
    fn default() -> Self {
        Self {
            channels: "single".into(),
            format: "mp3".into(),
        }
    }
}

/// The Call Control client. Cheap to clone, `Send + Sync`: it holds only its settings.
#[derive(Debug, Clone)]
pub struct TelnyxClient {
    inner: Arc<ClientSettings>,
    breaker: Option<Breaker>,
}

#[derive(Debug)]
struct ClientSettings {
    /// `{base_url}/v2`, without a trailing slash.
    api_url: String,
    api_key: Secret,
    connection_id: String,
    request_timeout: Duration,
    max_retries: u32,
    retry_backoff: Duration,
}

thread_local! {
    // One awc client per thread: awc is !Send, and sharing it per thread keeps its connection
    // pool (and TLS sessions) across commands.
    static HTTP: awc::Client = {
        crate::install_crypto_provider();
        awc::Client::builder()
            .connector(crate::providers::http::connector())
            .disable_redirects()
            .finish()
    };
}

impl TelnyxClient {
    /// A client for `settings.base_url` (with or without the `/v2` suffix).
    pub fn new(settings: &TelnyxSettings) -> Self {
        let root = settings.base_url.trim_end_matches('/');
        let api_url = if root.ends_with("/v2") {
            root.to_owned()
        } else {
            format!("{root}/v2")
        };
        Self {
            inner: Arc::new(ClientSettings {
                api_url,
                api_key: settings.api_key.clone(),
                connection_id: settings.connection_id.clone(),
                request_timeout: Duration::from_millis(settings.request_timeout_ms),
                max_retries: settings.max_retries,
                retry_backoff: Duration::from_millis(settings.retry_backoff_ms),
            }),
            breaker: None,
        }
    }

    /// Commands go out only while `breaker` allows; each command (its retries included)
    /// counts once on it.
    pub fn with_breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Places an outbound call.
    pub async fn dial(&self, req: DialRequest) -> Result<DialResponse, TelnyxError> {
        #[derive(Serialize)]
        struct Body<'a> {
            connection_id: &'a str,
            to: &'a str,
            from: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            timeout_secs: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            time_limit_secs: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            answering_machine_detection: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            webhook_url: Option<&'a str>,
            #[serde(flatten, skip_serializing_if = "Option::is_none")]
            stream: Option<&'a StreamSettings>,
        }
        let body = Body {
            connection_id: &self.inner.connection_id,
            to: &req.to,
            from: &req.from,
            timeout_secs: req.timeout_secs,
            time_limit_secs: req.time_limit_secs,
            answering_machine_detection: req.answering_machine_detection.as_deref(),
            webhook_url: req.webhook_url.as_deref(),
            stream: req.stream.as_ref(),
        };
        let url = format!("{}/calls", self.inner.api_url);
        let data = self
            .send(&url, command_body(&body, req.client_state.as_deref())?)
            .await?;
        serde_json::from_value(data)
            .map_err(|e| TelnyxError::Transport(format!("unexpected dial response: {e}")))
    }

    /// Runs `action` on a call: `POST /v2/calls/{id}/actions/{action}`.
    async fn action(
        &self,
        call_control_id: &str,
        action: &str,
        body: &impl Serialize,
        client_state: Option<&str>,
    ) -> Result<(), TelnyxError> {
        tracing::debug!(call_control_id, action, "telnyx command");
        let url = format!(
            "{}/calls/{}/actions/{action}",
            self.inner.api_url,
            encode_path_segment(call_control_id)
        );
        self.send(&url, command_body(body, client_state)?)
            .await
            .map(drop)
    }

    /// Sends one command with its `command_id`, retrying with jittered exponential backoff while
    /// the failure is retryable. Returns the response's `data`.
    async fn send(
        &self,
        url: &str,
        body: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, TelnyxError> {
        if let Some(breaker) = &self.breaker {
            if !breaker.allows() {
                breaker.refused();
                return Err(TelnyxError::CircuitOpen);
            }
        }
        let started = std::time::Instant::now();
        let result = self.send_with_retries(url, body).await;
        if let Some(breaker) = &self.breaker {
            breaker.observe(
                started.elapsed(),
                result.as_ref().err().map(TelnyxError::kind),
            );
            breaker.record(matches!(&result, Err(e) if e.counts_against_telnyx()));
        }
        result
    }

    async fn send_with_retries(
        &self,
        url: &str,
        mut body: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, TelnyxError> {
        // Fixed before the first attempt: a retry of a command Telnyx did run is then ignored.
        let command_id = uuid::Uuid::new_v4().to_string();
        body.insert("command_id".into(), command_id.clone().into());
        let body = serde_json::Value::Object(body);
        let mut attempt = 0;
        loop {
            let result = self.attempt(url, &body).await;
            match result {
                Err(err) if err.is_retryable() && attempt < self.inner.max_retries => {
                    attempt += 1;
                    tracing::warn!(%command_id, attempt, error = %err, "Telnyx command failed, retrying");
                    actix_web::rt::time::sleep(self.backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// `retry_backoff * 2^(attempt-1)`, then a random value between half and all of it, so that
    /// many calls retrying at once spread out.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .inner
            .retry_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(6));
        base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    #[tracing::instrument(name = "provider_request", skip_all, fields(provider = "telnyx"))]
    async fn attempt(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, TelnyxError> {
        let request = crate::providers::http::traced(HTTP.with(|http| http.post(url)))
            .bearer_auth(self.inner.api_key.expose())
            .timeout(self.inner.request_timeout);
        let exchange = async {
            let mut response = request.send_json(body).await.map_err(|e| match e {
                awc::error::SendRequestError::Timeout => TelnyxError::Timeout,
                other => TelnyxError::Transport(other.to_string()),
            })?;
            let status = response.status().as_u16();
            let bytes = response
                .body()
                .limit(MAX_RESPONSE_BYTES)
                .await
                .map_err(|e| TelnyxError::Transport(format!("reading the response: {e}")))?;
            Ok::<_, TelnyxError>((status, bytes))
        };
        // The deadline covers reading the body too, not only the response head.
        let (status, bytes) = actix_web::rt::time::timeout(self.inner.request_timeout, exchange)
            .await
            .map_err(|_| TelnyxError::Timeout)??;
        interpret(status, &bytes)
    }
}

/// Maps an HTTP answer to the response's `data` or a typed error.
fn interpret(status: u16, bytes: &[u8]) -> Result<serde_json::Value, TelnyxError> {
    if (200..300).contains(&status) {
        let value: serde_json::Value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(bytes)
                .map_err(|e| TelnyxError::Transport(format!("response is not JSON: {e}")))?
        };
        return Ok(value
            .get("data")
            .cloned()
            .unwrap_or(serde_json::Value::Null));
    }
    if status == 401 {
        return Err(TelnyxError::Unauthorized);
    }
    let (code, detail) = first_error(bytes);
    if code.as_deref() == Some(CALL_ENDED_CODE) {
        return Err(TelnyxError::CallEnded);
    }
    Err(TelnyxError::Rejected {
        status,
        code,
        detail,
    })
}

/// The code and text of the first entry of a JSON:API `errors` list, if the body has one.
fn first_error(bytes: &[u8]) -> (Option<String>, String) {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: Option<serde_json::Value>,
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        detail: Option<String>,
    }
    let Some(entry) = serde_json::from_slice::<Errors>(bytes)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
    else {
        return (
            None,
            String::from_utf8_lossy(bytes).chars().take(200).collect(),
        );
    };
    // Codes are strings in the docs, but accept numbers rather than lose the code.
    let code = entry.code.map(|c| match c {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    });
    let detail = entry.detail.or(entry.title).unwrap_or_default();
    (code, detail)
}

/// Serialises a command body and adds the base64 `client_state` when there is one.
fn command_body(
    body: &impl Serialize,
    client_state: Option<&str>,
) -> Result<serde_json::Map<String, serde_json::Value>, TelnyxError> {
    let mut map = match serde_json::to_value(body) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => serde_json::Map::new(),
        Err(e) => return Err(TelnyxError::Transport(format!("encoding the command: {e}"))),
    };
    if let Some(state) = client_state {
        map.insert("client_state".into(), BASE64.encode(state).into());
    }
    Ok(map)
}

/// Call control ids look like `v3:AbC-_...`; escape anything outside the URL-safe set so an odd
/// id cannot change the path.
fn encode_path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Serialize)]
struct Empty {}

impl TelnyxClient {
    /// Boxes an action for the trait: the id is copied so the future borrows only `self`.
    fn boxed_action<'a, B: Serialize + 'a>(
        &'a self,
        call_control_id: &str,
        action: &'static str,
        body: B,
        client_state: Option<String>,
    ) -> LocalBoxFuture<'a, Result<(), TelnyxError>> {
        let id = call_control_id.to_owned();
        Box::pin(async move {
            self.action(&id, action, &body, client_state.as_deref())
                .await
        })
    }
}

#[derive(Serialize)]
struct AnswerBody {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    stream: Option<StreamSettings>,
}

#[derive(Serialize)]
struct RejectBody {
    cause: RejectCause,
}

#[derive(Serialize)]
struct DtmfBody {
    digits: String,
}

impl CallControl for TelnyxClient {
    fn dial(&self, req: DialRequest) -> LocalBoxFuture<'_, Result<DialResponse, TelnyxError>> {
        Box::pin(TelnyxClient::dial(self, req))
    }

    fn answer(
        &self,
        call_control_id: &str,
        req: AnswerRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        let body = AnswerBody { stream: req.stream };
        self.boxed_action(call_control_id, "answer", body, req.client_state)
    }

    fn reject(
        &self,
        call_control_id: &str,
        cause: RejectCause,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(call_control_id, "reject", RejectBody { cause }, None)
    }

    fn hangup(&self, call_control_id: &str) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(call_control_id, "hangup", Empty {}, None)
    }

    fn transfer(
        &self,
        call_control_id: &str,
        req: TransferRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(call_control_id, "transfer", req, None)
    }

    fn speak(
        &self,
        call_control_id: &str,
        req: SpeakRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(call_control_id, "speak", req, None)
    }

    fn playback_start(
        &self,
        call_control_id: &str,
        req: PlaybackRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(call_control_id, "playback_start", req, None)
    }

    fn playback_stop(&self, call_control_id: &str) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(
            call_control_id,
            "playback_stop",
            serde_json::json!({ "stop": "all" }),
            None,
        )
    }

    fn transcription_start(
        &self,
        call_control_id: &str,
        req: TranscriptionRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(call_control_id, "transcription_start", req, None)
    }

    fn transcription_stop(
        &self,
        call_control_id: &str,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(
            call_control_id,
            "transcription_stop",
            serde_json::json!({}),
            None,
        )
    }

    fn streaming_start(
        &self,
        call_control_id: &str,
        stream: StreamSettings,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(call_control_id, "streaming_start", stream, None)
    }

    fn streaming_stop(&self, call_control_id: &str) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(call_control_id, "streaming_stop", Empty {}, None)
    }

    fn send_dtmf(
        &self,
        call_control_id: &str,
        digits: &str,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        let body = DtmfBody {
            digits: digits.to_owned(),
        };
        self.boxed_action(call_control_id, "send_dtmf", body, None)
    }

    fn record_start(
        &self,
        call_control_id: &str,
        req: RecordRequest,
    ) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(call_control_id, "record_start", req, None)
    }

    fn record_stop(&self, call_control_id: &str) -> LocalBoxFuture<'_, Result<(), TelnyxError>> {
        self.boxed_action(call_control_id, "record_stop", Empty {}, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ended_is_recognised_by_its_code() {
        let body =
            br#"{"errors":[{"code":"90018","title":"Call has already ended","detail":"x"}]}"#;
        assert!(matches!(interpret(422, body), Err(TelnyxError::CallEnded)));
    }

    #[test]
    fn other_errors_keep_status_code_and_detail() {
        let body =
            br#"{"errors":[{"code":10015,"title":"Invalid value","detail":"to is invalid"}]}"#;
        match interpret(422, body) {
            Err(TelnyxError::Rejected {
                status,
                code,
                detail,
            }) => {
                assert_eq!(status, 422);
                assert_eq!(code.as_deref(), Some("10015"));
                assert_eq!(detail, "to is invalid");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            interpret(401, b""),
            Err(TelnyxError::Unauthorized)
        ));
        assert!(matches!(
            interpret(502, b"<html>bad gateway</html>"),
            Err(TelnyxError::Rejected {
                status: 502,
                code: None,
                ..
            })
        ));
    }

    #[test]
    fn only_server_errors_and_timeouts_are_retryable() {
        let rejected = |status| TelnyxError::Rejected {
            status,
            code: None,
            detail: String::new(),
        };
        assert!(rejected(503).is_retryable());
        assert!(TelnyxError::Timeout.is_retryable());
        assert!(!rejected(422).is_retryable());
        assert!(!TelnyxError::CallEnded.is_retryable());
        assert!(!TelnyxError::Unauthorized.is_retryable());
    }

    #[test]
    fn stream_settings_use_the_wire_names() {
        let body = command_body(
            &StreamSettings::bidirectional("wss://e/media", StreamCodec::Pcmu),
            Some("call-1"),
        )
        .unwrap();
        assert_eq!(
            serde_json::Value::Object(body),
            serde_json::json!({
                "stream_url": "wss://e/media",
                "stream_track": "inbound_track",
                "stream_bidirectional_mode": "rtp",
                "stream_bidirectional_codec": "PCMU",
                "client_state": "Y2FsbC0x",
            })
        );
    }

    #[test]
    fn odd_characters_in_ids_are_escaped() {
        assert_eq!(encode_path_segment("v3:Ab-_c"), "v3:Ab-_c");
        assert_eq!(encode_path_segment("a/b?c"), "a%2Fb%3Fc");
    }
}
