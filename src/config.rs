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
    pub telnyx: TelnyxSettings,
    pub deepgram: DeepgramSettings,
    pub cartesia: CartesiaSettings,
    pub groq: GroqSettings,
    pub gemini: GeminiSettings,
}

fn default_env() -> Environment {
    Environment::Development
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub public_url: String,
    pub workers: usize,
    pub body_limit_bytes: usize,
    pub shutdown_timeout_secs: u64,
    pub readiness_grace_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub pool_max_size: usize,
    pub pool_timeout_ms: u64,
    pub auto_migrate: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: Secret,
    pub pool_max_size: usize,
    pub pool_timeout_ms: u64,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentrySettings {
    pub dsn: Secret,
    pub traces_sample_rate: f32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelnyxSettings {
    pub api_key: Secret,
    pub base_url: String,
    /// Base64 of the raw 32-byte Ed25519 key Telnyx signs webhooks with.
    pub webhook_public_key: String,
    pub connection_id: String,
    pub request_timeout_ms: u64,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeminiSettings {
    pub api_key: Secret,
    pub base_url: String,
    pub model: String,
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
        if self.health.check_timeout_ms == 0 {
            return fail("health.check_timeout_ms", "must be greater than 0");
        }
        Ok(())
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
