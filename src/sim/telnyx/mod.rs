//! The Telnyx simulator: a Call Control v2 server (same paths, Bearer auth and answers as
//! PROTOCOLS.md section 1) that runs simulated calls and delivers their webhooks, signed with its
//! own Ed25519 key, to one URL with Telnyx-like redelivery. Tests start it in-process
//! ([`TelnyxSim::start`]); `iace sim` runs it standalone.
//!
//! Layout: `calls` is the per-call state machine (commands in, events out), `delivery` posts the
//! events, `routes` is the HTTP surface (Call Control plus a `/_sim` control API).

mod calls;
mod delivery;
mod routes;

use crate::providers::telnyx::webhook::public_key_b64;
use actix::{Arbiter, ArbiterHandle};
use actix_web::dev::ServerHandle;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use calls::{SimCallInfo, SimCallState, SpokenText};

/// Called when a simulated call starts streaming media: the extension point where a simulated
/// caller connects to `stream_url` and talks like Telnyx does. Runs on a server thread; keep it
/// short (spawn the real work).
pub type StreamHook = Arc<dyn Fn(StreamStarted) + Send + Sync>;

/// What a stream hook learns about the stream Telnyx would open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStarted {
    pub call_control_id: String,
    pub call_session_id: String,
    pub stream_url: String,
    /// `inbound_track`, `outbound_track` or `both_tracks`, as requested.
    pub stream_track: Option<String>,
    /// `rtp` or `mp3`, as requested.
    pub stream_bidirectional_mode: Option<String>,
    /// `PCMU`, `PCMA`, ... as requested.
    pub stream_bidirectional_codec: Option<String>,
    pub from: String,
    pub to: String,
    /// Base64, as the last command set it.
    pub client_state: Option<String>,
}

/// How the simulator is started.
#[derive(Clone)]
pub struct TelnyxSimConfig {
    /// Listen address; port 0 picks a free one.
    pub bind: String,
    /// Where every webhook goes (unless a dial names its own `webhook_url`); see also
    /// [`TelnyxSimHandle::set_webhook_url`].
    pub webhook_url: String,
    /// The API key commands must carry as `Bearer`. Empty accepts any Bearer token (development,
    /// where the engine has no key either).
    pub api_key: String,
    /// The `connection_id` of simulated inbound calls.
    pub connection_id: String,
    /// How long a dialled number rings before it answers (and a transfer before it bridges).
    pub answer_delay_ms: u64,
    /// How long `playback_start` "plays" before its `.ended` event.
    pub media_duration_ms: u64,
    /// How long `speak` takes per character of its text before `call.speak.ended` (about
    /// 15 characters a second, a usual speaking rate).
    pub speech_ms_per_char: u64,
    /// After `transcription_start`, the pause before each scripted caller sentence arrives as a
    /// `call.transcription` webhook (see [`TelnyxSimHandle::set_transcripts`]).
    pub transcription_gap_ms: u64,
    /// `result` of `call.machine.detection.ended` for dials that asked for detection.
    pub amd_result: String,
    /// Delivery attempts per webhook (the first included) while the receiver answers non-2xx.
    pub webhook_attempts: u32,
    /// Pause before redelivery, times the attempt number.
    pub webhook_retry_backoff_ms: u64,
    /// How long a delivery waits for the receiver's answer.
    pub webhook_timeout_ms: u64,
    /// The webhook signing key; `None` generates a fresh one.
    pub signing_key: Option<SigningKey>,
    /// See [`StreamHook`].
    pub on_stream_started: Option<StreamHook>,
}

impl Default for TelnyxSimConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:0".into(),
            webhook_url: "http://127.0.0.1:8080/webhooks/telnyx".into(),
            api_key: String::new(),
            connection_id: "iace-dev-connection".into(),
            answer_delay_ms: 200,
            media_duration_ms: 100,
            speech_ms_per_char: 65,
            transcription_gap_ms: 1500,
            amd_result: "human".into(),
            webhook_attempts: 3,
            webhook_retry_backoff_ms: 100,
            webhook_timeout_ms: 2000,
            signing_key: None,
            on_stream_started: None,
        }
    }
}

impl fmt::Debug for TelnyxSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The API key and the signing key stay out of logs.
        f.debug_struct("TelnyxSimConfig")
            .field("bind", &self.bind)
            .field("webhook_url", &self.webhook_url)
            .field("answer_delay_ms", &self.answer_delay_ms)
            .field("webhook_attempts", &self.webhook_attempts)
            .finish_non_exhaustive()
    }
}

/// Faults to inject from now on; `set_faults` replaces the previous set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// The next N authenticated commands answer 503 without running.
    pub fail_next_commands_with_5xx: u32,
    /// Commands with these action names (`speak`, `transcription_start`, ...) answer 503
    /// without running, until the faults are replaced.
    pub refuse_actions: Vec<String>,
    /// Every command waits this long before it runs and answers (client timeouts).
    pub command_delay_ms: u64,
    /// Every webhook is delivered twice (same `data.id`).
    pub duplicate_webhooks: bool,
    /// Webhooks of a call are delivered in pairs, the later event first.
    pub reorder_webhooks: bool,
    /// Every delivery waits this long first.
    pub webhook_delay_ms: u64,
}

/// A Call Control request the simulator answered (authenticated ones only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedCommand {
    /// `None` for a dial that failed before a call existed.
    pub call_control_id: Option<String>,
    /// `dial`, or the action name (`answer`, `hangup`, ...).
    pub action: String,
    pub body: serde_json::Value,
    pub command_id: Option<String>,
    /// The HTTP status the simulator answered.
    pub status: u16,
    /// The request's `traceparent` header, if any.
    pub traceparent: Option<String>,
}

/// One webhook delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveredWebhook {
    pub event_id: String,
    pub event_type: String,
    pub call_control_id: Option<String>,
    /// `meta.attempt`: 1 for the first delivery of an event.
    pub attempt: u32,
    /// The receiver's status, `None` when it did not answer.
    pub status: Option<u16>,
    /// The envelope as sent.
    pub body: serde_json::Value,
}

impl DeliveredWebhook {
    /// Whether the receiver accepted this attempt.
    pub fn accepted(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Shared by the HTTP workers, the delivery arbiter and the handle.
pub(crate) struct Inner {
    config: TelnyxSimConfig,
    key: SigningKey,
    base_url: String,
    /// The thread that delivers webhooks and runs timers: awc futures are `!Send`, so they live on
    /// one arbiter instead of whichever worker received the command.
    delivery: ArbiterHandle,
    /// Starts as `config.webhook_url`; settable, because a test's engine may only learn its own
    /// port after the simulator is running.
    webhook_url: Mutex<String>,
    state: Mutex<calls::SimState>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, calls::SimState> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn webhook_url(&self) -> String {
        self.webhook_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Starts simulators.
pub struct TelnyxSim;

impl TelnyxSim {
    /// Binds `config.bind` and starts serving. Must run inside an actix `System`.
    pub async fn start(config: TelnyxSimConfig) -> anyhow::Result<TelnyxSimHandle> {
        crate::install_crypto_provider();
        let listener = TcpListener::bind(&config.bind)
            .map_err(|e| anyhow::anyhow!("telnyx sim cannot listen on {}: {e}", config.bind))?;
        let addr = listener.local_addr()?;
        let key = config
            .signing_key
            .clone()
            .unwrap_or_else(|| SigningKey::generate(&mut rand::rngs::OsRng));
        let arbiter = Arbiter::new();
        let webhook_url = Mutex::new(config.webhook_url.clone());
        let inner = Arc::new(Inner {
            config,
            key,
            base_url: format!("http://{addr}"),
            delivery: arbiter.handle(),
            webhook_url,
            state: Mutex::new(calls::SimState::default()),
        });
        let server = routes::server(listener, inner.clone())?;
        let server_handle = server.handle();
        actix_web::rt::spawn(server);
        tracing::info!(%addr, webhook_url = %inner.webhook_url(), "telnyx sim listening");
        Ok(TelnyxSimHandle {
            inner,
            server: server_handle,
            addr,
        })
    }
}

/// Controls a running simulator. Cheap to clone.
#[derive(Clone)]
pub struct TelnyxSimHandle {
    inner: Arc<Inner>,
    server: ServerHandle,
    addr: SocketAddr,
}

impl TelnyxSimHandle {
    /// `http://127.0.0.1:{port}`: the `telnyx.base_url` to give the engine.
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base64 of the raw public key webhooks are signed with (`telnyx.webhook_public_key`).
    pub fn public_key_b64(&self) -> String {
        public_key_b64(&self.inner.key)
    }

    /// Every authenticated command so far, in the order answered.
    pub fn commands(&self) -> Vec<RecordedCommand> {
        self.inner.lock().commands.clone()
    }

    /// Every webhook delivery attempt so far, in the order made.
    pub fn webhooks_delivered(&self) -> Vec<DeliveredWebhook> {
        self.inner.lock().deliveries.clone()
    }

    /// A simulated call's current state.
    pub fn call(&self, call_control_id: &str) -> Option<SimCallInfo> {
        self.inner
            .lock()
            .calls
            .get(call_control_id)
            .map(|c| c.info())
    }

    /// Sends the webhooks of calls created from now on to `url`.
    pub fn set_webhook_url(&self, url: &str) {
        *self
            .inner
            .webhook_url
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = url.to_owned();
    }

    /// Replaces the active faults.
    pub fn set_faults(&self, faults: Faults) {
        self.inner.lock().faults = faults;
    }

    /// What callers say when the engine falls back to Telnyx transcription: each later
    /// `transcription_start` sends these sentences as final `call.transcription` webhooks.
    pub fn set_transcripts(&self, sentences: Vec<String>) {
        self.inner.lock().transcripts = sentences;
    }

    /// How long `speak` takes per character from now on (see
    /// [`TelnyxSimConfig::speech_ms_per_char`]).
    pub fn set_speech_ms_per_char(&self, ms: u64) {
        self.inner.lock().speech_ms_per_char = Some(ms);
    }

    /// A simulated caller dials `to` (one of our numbers): sends `call.initiated` (incoming,
    /// parked) and waits for the engine to answer or reject. Returns the call's `call_control_id`.
    pub fn place_inbound_call(&self, from: &str, to: &str) -> String {
        calls::place_inbound_call(&self.inner, from, to)
    }

    /// The simulated person on the other end hangs up (`hangup_source` caller for an inbound call,
    /// callee for an outbound one). False when the call is unknown or already ended.
    pub fn caller_hangs_up(&self, call_control_id: &str) -> bool {
        calls::remote_hangup(&self.inner, call_control_id)
    }

    /// The simulated person presses keys: one `call.dtmf.received` per digit. False when the call
    /// is unknown or ended.
    pub fn caller_presses(&self, call_control_id: &str, digits: &str) -> bool {
        calls::remote_dtmf(&self.inner, call_control_id, digits)
    }

    /// Waits until a webhook of `event_type` for the call has been accepted by the receiver.
    pub async fn wait_for_webhook(
        &self,
        call_control_id: &str,
        event_type: &str,
        timeout: Duration,
    ) -> Option<DeliveredWebhook> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self
                .inner
                .lock()
                .deliveries
                .iter()
                .find(|d| {
                    d.accepted()
                        && d.event_type == event_type
                        && d.call_control_id.as_deref() == Some(call_control_id)
                })
                .cloned();
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the HTTP server and the webhook deliveries.
    pub async fn stop(&self) {
        self.server.stop(false).await;
        self.inner.delivery.stop();
    }
}

/// Asks a running simulator (at `sim_base_url`) to place an inbound call through its control API
/// (`POST /_sim/calls`); returns the new call's `call_control_id`. Used by `iace sim call`.
pub async fn request_inbound_call(
    sim_base_url: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<String> {
    crate::install_crypto_provider();
    let root = sim_base_url.trim_end_matches('/').trim_end_matches("/v2");
    let url = format!("{root}/_sim/calls");
    let mut response = awc::Client::new()
        .post(&url)
        .timeout(Duration::from_secs(5))
        .send_json(&serde_json::json!({ "from": from, "to": to }))
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the telnyx sim at {url}: {e}"))?;
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| anyhow::anyhow!("unexpected answer from the telnyx sim: {e}"))?;
    body["call_control_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the telnyx sim answered {} without a call id",
                response.status()
            )
        })
}
