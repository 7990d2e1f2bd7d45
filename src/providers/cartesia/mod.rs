//! Cartesia streaming text-to-speech over one WebSocket: the client that opens it, typed
//! generation and cancel requests, and the server's messages.
//!
//! One socket multiplexes many contexts: use one `context_id` per agent turn, send its sentences
//! with `continue: true`, end it with `continue: false`, and cancel it on barge-in.
//! ```ignore
//! let conn = CartesiaClient::new(&settings.cartesia).connect().await?;
//! ctx.add_stream(conn.events);                 // StreamHandler<Result<TtsEvent, ProviderError>>
//! conn.sender.generate(client.request("turn-1", "Hello.", Codec::Pcmu, true))?;
//! conn.sender.cancel("turn-1")?;
//! ```

pub mod messages;

pub use messages::{
    CancelRequest, Chunk, Done, GenerationRequest, OutputFormat, Timestamps, TtsError, TtsEvent,
    Voice, WordTimestamps,
};

use crate::config::{CartesiaSettings, Secret};
use crate::domain::audio::Codec;
use crate::providers::breaker::{guarded, Breaker};
use crate::providers::ws::{
    self, WsClose, WsConnection, WsEvents, WsOptions, WsProtocol, WsSender,
};
use crate::providers::{percent_encode, ProviderError};
use awc::ws::Message;
use std::time::Duration;

/// What the caller can send on a TTS socket.
#[derive(Debug, Clone, PartialEq)]
pub enum TtsCommand {
    Generate(GenerationRequest),
    Cancel { context_id: String },
}

/// An open TTS socket: `sender` for requests, `events` for audio and word timings.
pub type CartesiaConnection = WsConnection<TtsCommand, TtsEvent>;
/// Queues generation and cancel requests (cloneable, never awaits).
pub type CartesiaSender = WsSender<TtsCommand>;
/// The parsed messages of a TTS socket; ends with [`TtsEvent::Closed`] or an `Err`.
pub type CartesiaEvents = WsEvents<TtsEvent>;

impl WsSender<TtsCommand> {
    /// Queues a generation request.
    pub fn generate(&self, request: GenerationRequest) -> Result<(), ProviderError> {
        self.send(TtsCommand::Generate(request))
    }
    /// Cancels a context: nothing more is generated for it.
    pub fn cancel(&self, context_id: impl Into<String>) -> Result<(), ProviderError> {
        self.send(TtsCommand::Cancel {
            context_id: context_id.into(),
        })
    }
}

/// Opens Cartesia TTS sockets and builds requests with the configured model, voice and language.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct CartesiaClient {
    base_url: String,
    api_key: Secret,
    version: String,
    model_id: String,
    voice_id: String,
    language: String,
    max_buffer_delay_ms: u32,
    options: WsOptions,
    breaker: Option<Breaker>,
}

impl CartesiaClient {
    pub fn new(settings: &CartesiaSettings) -> Self {
        Self {
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone(),
            version: settings.version.clone(),
            model_id: settings.model_id.clone(),
            voice_id: settings.voice_id.clone(),
            language: settings.language.clone(),
            max_buffer_delay_ms: settings.max_buffer_delay_ms,
            options: WsOptions {
                connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
                ..WsOptions::default()
            },
            breaker: None,
        }
    }

    /// Sockets open only while `breaker` allows, and each attempt counts on it.
    pub fn with_breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The breaker guarding this client's sockets, if any: a socket that breaks off after it
    /// opened (counted a success then) is a failure too, which its reader records here.
    pub fn breaker(&self) -> Option<&Breaker> {
        self.breaker.as_ref()
    }

    /// Overrides queue sizes and timeouts.
    pub fn with_options(mut self, options: WsOptions) -> Self {
        self.options = options;
        self
    }

    /// The socket URL (the version goes in the query, which wins over the header).
    pub fn socket_url(&self) -> String {
        format!(
            "{}/tts/websocket?cartesia_version={}",
            self.base_url,
            percent_encode(&self.version)
        )
    }

    /// A request for `transcript` on `context_id` in `codec` at 8000 Hz, with word timestamps,
    /// using the configured model, voice and language. `more_follows` sets `continue`.
    /// Fields are public: a profile may change the voice or model afterwards.
    pub fn request(
        &self,
        context_id: &str,
        transcript: &str,
        codec: Codec,
        more_follows: bool,
    ) -> GenerationRequest {
        GenerationRequest {
            model_id: self.model_id.clone(),
            transcript: transcript.to_owned(),
            voice: Voice::id(self.voice_id.clone()),
            output_format: OutputFormat::telephony(codec),
            language: Some(self.language.clone()),
            context_id: context_id.to_owned(),
            continue_: more_follows,
            add_timestamps: true,
            max_buffer_delay_ms: Some(self.max_buffer_delay_ms),
            flush: None,
        }
    }

    /// Opens a TTS socket (`X-API-Key` and `Cartesia-Version` headers; no key header when the
    /// key is empty, which only a local simulator accepts). Must run on an actix arbiter.
    pub async fn connect(&self) -> Result<CartesiaConnection, ProviderError> {
        let mut request = ws::client(self.options.connect_timeout)
            .ws(self.socket_url())
            .header("Cartesia-Version", self.version.as_str());
        if !self.api_key.is_empty() {
            request = request.header("X-API-Key", self.api_key.expose());
        }
        let open = ws::open::<Cartesia>(request, self.options, "x-request-id");
        guarded(self.breaker.as_ref(), "cartesia", open).await
    }
}

/// The TTS protocol's framing: every message is JSON text.
struct Cartesia;

impl WsProtocol for Cartesia {
    type Command = TtsCommand;
    type Event = TtsEvent;
    const PROVIDER: &'static str = "cartesia";

    fn encode(command: TtsCommand) -> Result<Message, ProviderError> {
        match command {
            TtsCommand::Generate(request) => ws::json_message(Self::PROVIDER, &request),
            TtsCommand::Cancel { context_id } => ws::json_message(
                Self::PROVIDER,
                &CancelRequest {
                    context_id,
                    cancel: true,
                },
            ),
        }
    }

    fn decode(text: &str) -> Result<TtsEvent, ProviderError> {
        ws::parse_json(Self::PROVIDER, text)
    }

    fn closed(close: WsClose) -> TtsEvent {
        TtsEvent::Closed(close)
    }
}
