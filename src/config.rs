//! Settings: one typed tree loaded from `config/default.toml`, `config/{APP_ENV}.toml` and
//! `IACE__SECTION__KEY` environment variables, validated once at start-up.

use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The raw value, for the one place that needs it (a connection or an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which configuration layer is active, from `APP_ENV`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Test => "test",
            Environment::Production => "production",
        }
    }

    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value {
            "development" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" => Ok(Self::Production),
            other => Err(ConfigError(format!(
                "APP_ENV: unknown environment {other:?} (expected development, test or production)"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(skip_deserializing, default = "default_env")]
    pub environment: Environment,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub log: LogSettings,
    pub health: HealthSettings,
    pub sentry: SentrySettings,
    pub telemetry: TelemetrySettings,
    pub telnyx: TelnyxSettings,
    pub deepgram: DeepgramSettings,
    pub cartesia: CartesiaSettings,
    pub groq: GroqSettings,
    pub gemini: GeminiSettings,
    pub learning: LearningSettings,
    pub calls: CallSettings,
    pub recorder: RecorderSettings,
    pub auth: AuthSettings,
    pub breakers: BreakerSettings,
    pub cluster: ClusterSettings,
    pub admin: AdminSettings,
    pub outbound: OutboundSettings,
    pub live: LiveSettings,
}

/// Bounds on what one organization can dial (toll fraud): how many outbound calls at once and
/// per window, and where calls may go (outbound calls, transfers, escalation numbers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSettings {
    /// Outbound calls of one organization not yet ended; the next is answered 429.
    pub max_live_per_org: i64,
    /// Outbound calls one organization may place per window (all instances, Redis-counted).
    pub per_org: RateLimit,
    /// Destinations must start with one of these (`+1`: NANP); empty allows every country. An
    /// organization may have its own list instead (`/admin/organizations/{org}/outbound-policy`).
    pub allowed_prefixes: Vec<String>,
    /// Never dialled whatever `allowed_prefixes` says: premium-rate and high-risk ranges.
    pub blocked_prefixes: Vec<String>,
}

/// Live call events for the dashboard (`crate::live`, `GET /api/v1/live`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveSettings {
    /// Events an instance queues for Redis; beyond it they are dropped (and counted), never
    /// waited for.
    pub publish_buffer: usize,
    /// Events queued for one browser; a browser this far behind is disconnected.
    pub client_buffer: usize,
    /// Lifetime of the single-use ticket that opens a live stream.
    pub ticket_ttl_secs: u64,
    /// A comment line this often keeps proxies from closing an idle stream.
    pub keepalive_secs: u64,
}

/// The operator surface (`/admin/*` on the ops listener).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token of operators (every `/admin/*` endpoint, number assignment included);
    /// empty disables them all (401).
    pub operator_token: Secret,
}

fn default_env() -> Environment {
    Environment::Development
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Private listener of `/metrics` and `/admin/*` (0: any free port, for tests).
    pub ops_port: u16,
    pub public_url: String,
    pub workers: usize,
    pub body_limit_bytes: usize,
    pub shutdown_timeout_secs: u64,
    pub readiness_grace_ms: u64,
    /// On SIGTERM, how long live calls may go on before they are ended politely (fly.toml's
    /// `kill_timeout` must be longer).
    pub drain_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub pool_max_size: usize,
    pub pool_timeout_ms: u64,
    /// Run `SELECT 1` on a connection that leaves the pool after `verify_idle_ms` unused, so a
    /// dead one is replaced unseen. false never runs it; a connection the server closed is still
    /// never handed out (its socket's end is seen without a round trip), but one cut off silently
    /// fails its first query (one request errors) and is discarded.
    pub verify_connections: bool,
    /// A connection taken from the pool within this long of its last use is not verified (its
    /// socket's end would have been seen): busy connections pay no extra round trip per request.
    /// 0 verifies every checkout.
    pub verify_idle_ms: u64,
    pub auto_migrate: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: Secret,
    pub pool_max_size: usize,
    pub pool_timeout_ms: u64,
    /// Prepended to every key this instance writes, so instances (or test runs) sharing one
    /// Redis can be kept apart.
    pub key_prefix: String,
    /// PEM file of the CA that signed the server's certificate, for `rediss://` URLs whose server
    /// is not under a public root (empty: webpki roots).
    pub tls_ca_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    pub check_timeout_ms: u64,
    /// Readiness also checks that every provider's host accepts a connection.
    pub probe_providers: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentrySettings {
    pub dsn: Secret,
    pub traces_sample_rate: f32,
}

/// Trace export over OTLP/HTTP JSON (`telemetry::otlp`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Collector base URL (`http://host:4318`); spans go to `{otlp_endpoint}/v1/traces`.
    /// Empty: no export.
    pub otlp_endpoint: String,
    /// Share of new traces recorded, 0.0 to 1.0 (an incoming `traceparent`'s sampled flag wins).
    pub trace_sample_ratio: f64,
    /// Finished spans waiting for export at most; more are dropped and counted.
    pub trace_queue_spans: usize,
    /// Connect, write and read timeout of one export POST.
    pub otlp_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelnyxSettings {
    pub api_key: Secret,
    pub base_url: String,
    /// Base64 of the raw 32-byte Ed25519 key Telnyx signs webhooks with.
    pub webhook_public_key: String,
    pub connection_id: String,
    /// Deadline of one Call Control request attempt, response body included.
    pub request_timeout_ms: u64,
    /// Further attempts after a 5xx or a timeout (same `command_id`, so Telnyx runs it once).
    pub max_retries: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub retry_backoff_ms: u64,
    /// Webhooks signed further than this from now (either way) are refused as replays.
    pub webhook_tolerance_secs: i64,
}

/// Deepgram live speech-to-text. `base_url` is the socket origin (`wss://api.deepgram.com`);
/// the client appends `/v1/listen`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepgramSettings {
    pub api_key: Secret,
    pub base_url: String,
    /// Default model when the agent profile names none (e.g. `nova-3`).
    pub model: String,
    /// Default language when the agent profile names none (e.g. `en-US`).
    pub language: String,
    /// Silence (ms) after speech before Deepgram marks `speech_final`.
    pub endpointing_ms: u32,
    /// Gap (ms) after the last word before Deepgram sends `UtteranceEnd`.
    pub utterance_end_ms: u32,
    pub connect_timeout_ms: u64,
    /// How often to send `KeepAlive` while no audio flows (Deepgram closes after 10 s).
    pub keepalive_interval_ms: u64,
    /// Caller audio a call keeps for replay after a reconnect: audio that arrived while
    /// disconnected is held to this much, and audio sent but not yet finalised to
    /// `unconfirmed_buffer_ms` (never more than this). Beyond them (Deepgram stalled, or away for
    /// long) the oldest is dropped and counted, so memory stays flat.
    pub replay_buffer_ms: u64,
    /// A tighter bound for the first of those: audio sent on a live connection and not yet
    /// finalised. Deepgram finalises speech within seconds and silence with empty finals, so
    /// more than this unfinalised means a lagging provider; holding it to `replay_buffer_ms`
    /// (sized for an outage's backlog) would cost every such call up to a megabyte.
    pub unconfirmed_buffer_ms: u64,
    /// Caller frames (20 ms each) per audio message to Deepgram: 1 sends each frame as it comes;
    /// 2 halves the socket writes and holds every other frame 20 ms longer (see BENCHMARKS.md).
    pub audio_frames_per_message: usize,
}

/// Cartesia streaming text-to-speech. `base_url` is the socket origin (`wss://api.cartesia.ai`);
/// the client appends `/tts/websocket`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartesiaSettings {
    pub api_key: Secret,
    pub base_url: String,
    /// The pinned API version (`cartesia_version` query parameter).
    pub version: String,
    /// Default model when the agent profile names none (e.g. `sonic-3`).
    pub model_id: String,
    /// Default voice id when the agent profile names none.
    pub voice_id: String,
    pub language: String,
    /// How long the server may buffer text before it starts (0 = start at once; we send whole
    /// sentences, so waiting for more text only adds latency).
    pub max_buffer_delay_ms: u32,
    pub connect_timeout_ms: u64,
}

/// Groq chat completions. `base_url` is the OpenAI-compatible base
/// (`https://api.groq.com/openai/v1`); the client appends `/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroqSettings {
    pub api_key: Secret,
    pub base_url: String,
    pub model: String,
    /// Time allowed until the response headers arrive (non-streaming: the whole answer).
    pub request_timeout_ms: u64,
    /// Longest gap allowed between two streamed chunks.
    pub stream_idle_timeout_ms: u64,
    /// Budget of one sentiment request (short: a late score is useless).
    pub sentiment_timeout_ms: u64,
    pub temperature: f32,
    pub max_completion_tokens: u32,
    /// Retries of a reply turn after a 5xx or a timeout, before the fallback model.
    pub max_retries: u32,
    /// The model tried when `model` fails a turn (or its breaker is open); empty: none, the
    /// scripted apology follows at once. Same OpenAI-compatible API.
    pub fallback_model: String,
    /// Where the fallback model is served (empty: `base_url`), and its key (empty: `api_key`).
    pub fallback_base_url: String,
    pub fallback_api_key: Secret,
}

/// Gemini embeddings. `base_url` is the API root with its version
/// (`https://generativelanguage.googleapis.com/v1beta`); the client appends
/// `/models/{model}:embedContent`. An empty key with a non-loopback URL means "unconfigured":
/// the local embedder serves instead.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeminiSettings {
    pub api_key: Secret,
    pub base_url: String,
    pub model: String,
    /// Deadline of one embedding request, answer included.
    pub request_timeout_ms: u64,
    /// Texts per `batchEmbedContents` call (the API takes at most 100).
    pub batch_size: usize,
}

/// Retrieval during calls and the post-call learning jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningSettings {
    /// How long a caller turn may wait for patterns and memory; late results are skipped.
    pub retrieval_budget_ms: u64,
    /// Patterns given to the dialogue per turn.
    pub retrieval_top_k: i64,
    /// Patterns less similar than this (cosine, -1..1) are not worth a place in the prompt.
    pub min_similarity: f64,
    /// A new pattern at least this similar to an existing one reinforces it instead.
    pub merge_similarity: f64,
    /// `hnsw.ef_search` for pattern searches (candidate list size: recall against speed).
    pub ef_search: u32,
    /// An organization with at least this many patterns gets its own HNSW index; below it,
    /// its searches compare every row (exact, and cheap at that size).
    pub index_min_rows: i64,
    /// A pattern learnt from one call is served only once confirmed (reinforced by a resolved
    /// call from another number, or approved by a user), so one caller cannot teach the agent
    /// what every later caller hears. false: served at once.
    pub confirm_patterns: bool,
    /// Lifetime of a cached turn context in Redis.
    pub cache_ttl_secs: u64,
    /// Job workers (tasks) on this instance; 0 runs none (jobs wait for another instance).
    pub workers: usize,
    /// How often an idle worker looks for due jobs.
    pub poll_interval_ms: u64,
    /// A `running` job locked longer than this is presumed lost (a crash) and run again.
    pub lease_secs: u64,
    /// First retry delay; doubles per attempt, with jitter, up to the maximum.
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// How long shutdown waits for running jobs before leaving them to the lease.
    pub shutdown_timeout_ms: u64,
}

/// Limits and timers of live calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSettings {
    /// Registry shards (one arbiter thread each); 0 = one per core.
    pub registry_shards: usize,
    /// A call is hung up when it reaches this length (also sent to Telnyx as time_limit_secs).
    pub max_duration_secs: u32,
    /// Outbound ring time before Telnyx gives up.
    pub ring_timeout_secs: u32,
    /// An answered call that hears no media for this long is hung up.
    pub no_media_timeout_secs: u64,
    pub media_check_interval_ms: u64,
    /// After we hang up, how long to wait for Telnyx's `call.hangup` before closing anyway.
    pub hangup_confirm_timeout_secs: u64,
    /// Life of the token in the media stream URL (covers ringing before Telnyx connects).
    pub media_token_ttl_secs: u64,
    /// Media frames larger than this are counted and dropped (a 20 ms frame is ~300 bytes).
    pub media_max_frame_bytes: usize,
    /// Reply turns in a row the LLM (model and fallback) cannot answer before the call is
    /// given up: a last line, then a transfer (or hang-up), outcome `failed`.
    pub max_failed_replies: u32,
    /// Voice for Telnyx `speak` when Cartesia is down (e.g. `Telnyx.KokoroTTS.af`,
    /// `AWS.Polly.Joanna-Neural`).
    pub fallback_voice: String,
    /// A line said by Telnyx `speak` ends at its `call.speak.ended`; should that webhook never
    /// come, the line is taken as played after this long per character (a safety timeout).
    pub fallback_speech_ms_per_char: u64,
    /// The caller says nothing for this long (the agent neither speaking nor thinking): the
    /// agent asks once whether they are still there; as long again and the call ends
    /// (`silence`). 0 = off.
    pub silence_limit_secs: u64,
    /// A stage waiting on a provider (a Deepgram final after words were heard, LLM tokens,
    /// Cartesia audio) with no progress for this long has failed: Deepgram and Cartesia fall
    /// back to Telnyx, a stalled LLM gives the call up (last line, transfer or hang-up,
    /// `provider_failure`). 0 = off.
    pub stall_limit_secs: u64,
    /// Admission control: above this many live calls, new calls go to a peer with room or are
    /// refused (`USER_BUSY`, API 503 `at_capacity`). 0 = no limit.
    pub max_live_per_instance: usize,
    /// Admission control's CPU watermark: while this process used at least this share (percent
    /// of all cores) over the last heartbeat, new calls go elsewhere as above. 0 = off.
    pub max_cpu_percent: u32,
    /// Outbound audio frames queued for one media socket; when its reader stalls the oldest
    /// are dropped (and counted), so memory stays flat. 50 frames = 1 s.
    pub media_out_queue_frames: usize,
    /// Caller frames waiting for one call's Deepgram socket beyond which new ones are dropped
    /// (counted as `iace_stt_audio_dropped_total{reason="backpressure"}`).
    pub media_in_queue_frames: usize,
    /// What a call still live at the end of a drain hears before the hangup.
    pub drain_goodbye_line: String,
    /// Test-only fault hook (`InjectPanic` makes a call actor panic). Refused in production.
    pub fault_injection: bool,
}

/// How a call's routing to its owner works between instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingSetting {
    /// `fly-replay` when `FLY_MACHINE_ID` is set, else `forward`.
    Auto,
    /// Answer with `fly-replay: instance=<owner>`; Fly's proxy replays the request there.
    FlyReplay,
    /// Forward webhooks and API commands to the owner's private URL over HTTP.
    Forward,
}

/// Several instances as one engine: identity, heartbeat and call leases in Redis, orphan
/// take-over, routing to a call's owner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Empty: `FLY_MACHINE_ID`, else generated at start (and logged).
    pub instance_id: String,
    /// Empty: `FLY_REGION`, else `local`.
    pub region: String,
    pub routing: RoutingSetting,
    /// How peers reach this instance (forwarded webhooks and commands). Empty: on Fly
    /// `http://{FLY_MACHINE_ID}.vm.{FLY_APP_NAME}.internal:{port}`, else `http://{host}:{port}`.
    pub private_url: String,
    pub heartbeat_interval_ms: u64,
    /// An instance whose heartbeat is older than this is presumed dead; its calls are taken over.
    pub heartbeat_ttl_ms: u64,
    /// Life of a call's lease in Redis; the owner renews it every `lease_renew_interval_ms`.
    pub lease_ttl_ms: u64,
    pub lease_renew_interval_ms: u64,
    /// How often each instance looks for calls whose owner's heartbeat lapsed.
    pub sweep_interval_ms: u64,
    /// A live row with no `owner_instance` (written before the column existed, or by an older
    /// release mid rolling deploy) and no lease is ended `instance_lost` once older than this.
    pub ownerless_grace_secs: u64,
    /// Deadline of one forwarded request to a peer.
    pub forward_timeout_ms: u64,
}

/// Circuit breakers, the same thresholds for every provider (one breaker each per instance).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Failures in a row that open a breaker.
    pub failures_to_open: u32,
    /// Share of failed requests (0..1) over `window_secs` that opens a breaker, once at least
    /// `min_requests_in_window` requests were seen in the window.
    pub failure_rate_to_open: f64,
    pub window_secs: u64,
    pub min_requests_in_window: u32,
    /// How long a breaker stays open before a probe is let through (half-open); doubles on each
    /// failed probe up to `open_max_ms`.
    pub open_ms: u64,
    pub open_max_ms: u64,
}

/// Batching and retries of the recorder (call records written off the hot path).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderSettings {
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub max_attempts_per_write: u32,
    /// Writes held in memory while the database is away; later ones go to `spill_file`.
    pub buffer_max_writes: usize,
    /// Append-only file (JSON lines) for writes past the memory buffer, replayed in order when
    /// the database returns (or at the next start). One per instance.
    pub spill_file: String,
}

/// Accounts and tokens: signing keys, token lifetimes, password hashing cost, rate limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Ed25519 private key, PKCS#8 PEM. Empty: generated at start-up in development only.
    pub signing_key: Secret,
    /// Key id of `signing_key`, written in every token header.
    pub kid: String,
    /// Public keys of former signing keys, still accepted so a rotation logs nobody out.
    pub verification_keys: Vec<VerificationKey>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// argon2id cost of new password hashes (memory in KiB, passes).
    pub password_memory_kib: u32,
    pub password_iterations: u32,
    /// Header holding the client address when behind a proxy (e.g. `Fly-Client-IP`);
    /// empty means the TCP peer address.
    pub client_ip_header: String,
    /// Login attempts per client network (an IPv4 address, an IPv6 /64).
    pub login_per_ip: RateLimit,
    /// Failed logins per account and client network: only failures count, and only from the
    /// same network, so a stranger's wrong passwords never lock the owner out.
    pub login_per_account: RateLimit,
    pub refresh_per_family: RateLimit,
    /// Refreshes per client network.
    pub refresh_per_ip: RateLimit,
    /// Password hashes run at once (argon2 takes `password_memory_kib` each); 0: one per core.
    pub password_concurrency: usize,
    /// How long a login waits for a hashing slot before 503 `overloaded` with `Retry-After`.
    pub password_wait_ms: u64,
    /// A refresh token presented again this soon after its rotation (a lost response) gets
    /// the same new pair instead of counting as reuse.
    pub refresh_grace_secs: u64,
    /// Absolute lifetime of a session (refresh family) from its login, however often refreshed.
    pub session_max_age_secs: u64,
}

/// An older public key that tokens may still be signed with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationKey {
    pub kid: String,
    /// Ed25519 public key, SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key: String,
}

/// At most `max` attempts per `window_secs` (a fixed window).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max: u64,
    pub window_secs: u64,
}

/// A configuration problem, rendered as one line that names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Loads the layers from `config_dir` for the environment named by `APP_ENV`
    /// (default `development`), then `IACE__SECTION__KEY` variables, then validates.
    pub fn load(config_dir: &Path) -> Result<Self, ConfigError> {
        let env_name = std::env::var("APP_ENV").unwrap_or_else(|_| "development".to_owned());
        let environment = Environment::parse(&env_name)?;
        Self::load_for(config_dir, environment)
    }

    pub fn load_for(config_dir: &Path, environment: Environment) -> Result<Self, ConfigError> {
        let default_file = config_dir.join("default.toml");
        if !default_file.exists() {
            return Err(ConfigError(format!(
                "{} not found (run from the project root or set IACE_CONFIG_DIR)",
                default_file.display()
            )));
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(default_file))
            .add_source(
                config::File::from(config_dir.join(format!("{}.toml", environment.as_str())))
                    .required(false),
            )
            .add_source(
                config::Environment::with_prefix("IACE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| ConfigError(e.to_string()))?;
        let mut settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.environment = environment;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: ranges, URL schemes, values that only make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.server.body_limit_bytes == 0 {
            return fail("server.body_limit_bytes", "must be greater than 0");
        }
        if self.database.pool_max_size == 0 {
            return fail("database.pool_max_size", "must be greater than 0");
        }
        if self.redis.pool_max_size == 0 {
            return fail("redis.pool_max_size", "must be greater than 0");
        }
        if !self.database.url.expose().starts_with("postgres://")
            && !self.database.url.expose().starts_with("postgresql://")
        {
            return fail(
                "database.url",
                "must start with postgres:// or postgresql://",
            );
        }
        if !self.redis.url.expose().starts_with("redis://")
            && !self.redis.url.expose().starts_with("rediss://")
        {
            return fail("redis.url", "must start with redis:// or rediss://");
        }
        if !self.server.public_url.starts_with("http://")
            && !self.server.public_url.starts_with("https://")
        {
            return fail("server.public_url", "must start with http:// or https://");
        }
        if !(0.0..=1.0).contains(&self.sentry.traces_sample_rate) {
            return fail("sentry.traces_sample_rate", "must be between 0.0 and 1.0");
        }
        let t = &self.telemetry;
        if !(0.0..=1.0).contains(&t.trace_sample_ratio) {
            return fail(
                "telemetry.trace_sample_ratio",
                "must be between 0.0 and 1.0",
            );
        }
        if !t.otlp_endpoint.is_empty() && !t.otlp_endpoint.starts_with("http://") {
            return fail(
                "telemetry.otlp_endpoint",
                "must start with http:// (for TLS, run a collector next to the engine)",
            );
        }
        if t.trace_queue_spans == 0 || t.otlp_timeout_ms == 0 {
            return fail(
                "telemetry.trace_queue_spans",
                "trace_queue_spans and otlp_timeout_ms must be greater than 0",
            );
        }
        if self.telnyx.request_timeout_ms == 0 {
            return fail("telnyx.request_timeout_ms", "must be greater than 0");
        }
        if !(1..=5).contains(&self.deepgram.audio_frames_per_message) {
            return fail(
                "deepgram.audio_frames_per_message",
                "must be between 1 and 5 (each frame held adds 20 ms)",
            );
        }
        if self.calls.max_duration_secs == 0 || self.calls.max_duration_secs > 14_400 {
            return fail(
                "calls.max_duration_secs",
                "must be between 1 and 14400 (Telnyx's limit)",
            );
        }
        if self.calls.max_cpu_percent > 100 {
            return fail(
                "calls.max_cpu_percent",
                "must be between 0 (off) and 100 (percent of all cores)",
            );
        }
        if !(5..=600).contains(&self.calls.ring_timeout_secs) {
            return fail("calls.ring_timeout_secs", "must be between 5 and 600");
        }
        let prefixes = self
            .outbound
            .allowed_prefixes
            .iter()
            .chain(&self.outbound.blocked_prefixes);
        if !prefixes
            .into_iter()
            .all(|p| crate::domain::destination::DestinationPolicy::valid_prefix(p))
        {
            return fail(
                "outbound.allowed_prefixes",
                "allowed and blocked prefixes are + then 1 to 15 digits",
            );
        }
        if self.outbound.max_live_per_org < 1 || self.outbound.per_org.max == 0 {
            return fail(
                "outbound.max_live_per_org",
                "max_live_per_org and per_org.max must be at least 1",
            );
        }
        if self.calls.media_check_interval_ms == 0 {
            return fail("calls.media_check_interval_ms", "must be greater than 0");
        }
        if self.recorder.batch_size == 0 || self.recorder.flush_interval_ms == 0 {
            return fail(
                "recorder.batch_size",
                "batch_size and flush_interval_ms must be greater than 0",
            );
        }
        if self.environment == Environment::Production {
            if self.telnyx.webhook_public_key.is_empty() {
                return fail("telnyx.webhook_public_key", "required in production");
            }
            if self.telnyx.api_key.is_empty() {
                return fail("telnyx.api_key", "required in production");
            }
        }
        if self.gemini.request_timeout_ms == 0 || !(1..=100).contains(&self.gemini.batch_size) {
            return fail(
                "gemini.batch_size",
                "batch_size must be 1..=100 and request_timeout_ms greater than 0",
            );
        }
        let learning = &self.learning;
        if learning.retrieval_top_k < 1 {
            return fail("learning.retrieval_top_k", "must be at least 1");
        }
        if !(-1.0..=1.0).contains(&learning.min_similarity)
            || !(-1.0..=1.0).contains(&learning.merge_similarity)
        {
            return fail(
                "learning.min_similarity",
                "similarities must be between -1.0 and 1.0",
            );
        }
        if learning.poll_interval_ms == 0 || learning.lease_secs == 0 || learning.ef_search == 0 {
            return fail(
                "learning.poll_interval_ms",
                "poll_interval_ms, lease_secs and ef_search must be greater than 0",
            );
        }
        let b = &self.breakers;
        if b.failures_to_open == 0 || b.open_ms == 0 || b.window_secs == 0 {
            return fail(
                "breakers.failures_to_open",
                "failures_to_open, open_ms and window_secs must be greater than 0",
            );
        }
        if !(0.0..=1.0).contains(&b.failure_rate_to_open) || b.open_max_ms < b.open_ms {
            return fail(
                "breakers.failure_rate_to_open",
                "must be between 0.0 and 1.0, and open_max_ms at least open_ms",
            );
        }
        self.validate_cluster()?;
        if self.health.check_timeout_ms == 0 {
            return fail("health.check_timeout_ms", "must be greater than 0");
        }
        self.validate_auth()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        let c = &self.cluster;
        if c.heartbeat_interval_ms == 0
            || c.lease_renew_interval_ms == 0
            || c.sweep_interval_ms == 0
        {
            return fail(
                "cluster.heartbeat_interval_ms",
                "heartbeat, lease renewal and sweep intervals must be greater than 0",
            );
        }
        if c.heartbeat_ttl_ms < 2 * c.heartbeat_interval_ms {
            return fail(
                "cluster.heartbeat_ttl_ms",
                "must be at least twice heartbeat_interval_ms (one lost beat is not a death)",
            );
        }
        if c.lease_ttl_ms < 2 * c.lease_renew_interval_ms {
            return fail(
                "cluster.lease_ttl_ms",
                "must be at least twice lease_renew_interval_ms",
            );
        }
        if !c.private_url.is_empty()
            && !c.private_url.starts_with("http://")
            && !c.private_url.starts_with("https://")
        {
            return fail("cluster.private_url", "must start with http:// or https://");
        }
        if c.instance_id.contains([':', '/', ';', ' ', '@']) {
            return fail(
                "cluster.instance_id",
                "must not contain ':', '/', ';', '@' or spaces",
            );
        }
        if self.calls.media_out_queue_frames == 0 || self.calls.media_in_queue_frames == 0 {
            return fail(
                "calls.media_out_queue_frames",
                "media queues must hold at least one frame",
            );
        }
        if self.calls.fault_injection && self.environment == Environment::Production {
            return fail("calls.fault_injection", "never in production");
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("auth.{key}: {why}")));
        let auth = &self.auth;
        if auth.signing_key.is_empty() && self.environment != Environment::Development {
            return fail(
                "signing_key",
                "required outside development (generate one with `iace admin gen-key`)",
            );
        }
        if auth.kid.is_empty() {
            return fail("kid", "must not be empty");
        }
        if auth.issuer.is_empty() || auth.audience.is_empty() {
            return fail("issuer", "issuer and audience must not be empty");
        }
        if auth.access_ttl_secs == 0 || auth.refresh_ttl_secs == 0 {
            return fail("access_ttl_secs", "token lifetimes must be greater than 0");
        }
        if auth.session_max_age_secs == 0 || auth.password_wait_ms == 0 {
            return fail(
                "session_max_age_secs",
                "session_max_age_secs and password_wait_ms must be greater than 0",
            );
        }
        if auth.password_memory_kib < 8 || auth.password_iterations == 0 {
            return fail("password_memory_kib", "argon2 needs >= 8 KiB and >= 1 pass");
        }
        for (name, limit) in [
            ("login_per_ip", auth.login_per_ip),
            ("login_per_account", auth.login_per_account),
            ("refresh_per_family", auth.refresh_per_family),
            ("refresh_per_ip", auth.refresh_per_ip),
        ] {
            if limit.max == 0 || limit.window_secs == 0 {
                return fail(name, "max and window_secs must be greater than 0");
            }
        }
        // Parsing the keys here turns a bad PEM into one line at start-up, not a failed login.
        let keys = if auth.signing_key.is_empty() {
            crate::auth::keys::KeySet::generated(auth)
        } else {
            crate::auth::keys::KeySet::from_settings(auth)
        };
        keys.map(|_| ()).map_err(|e| ConfigError(e.to_string()))
    }
}

/// True when `url` points at this machine, i.e. at a local simulator.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or("");
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(is_loopback_url("http://127.0.0.1:8790"));
        assert!(is_loopback_url("ws://localhost:1/v1/listen"));
        assert!(!is_loopback_url("https://api.telnyx.com/v2"));
    }

    #[test]
    fn unknown_environment_is_rejected_with_the_key() {
        let err = Environment::parse("staging").unwrap_err();
        assert!(err.to_string().contains("APP_ENV"));
    }
}
