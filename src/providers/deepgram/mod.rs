//! Deepgram live speech-to-text (v1 listen WebSocket): typed query parameters, the client that
//! opens the socket, and the messages exchanged on it.
//!
//! Driving it from an actor:
//! ```ignore
//! let conn = DeepgramClient::new(&settings.deepgram).connect(&params).await?;
//! ctx.add_stream(conn.events);        // StreamHandler<Result<SttEvent, ProviderError>>
//! self.stt = Some(conn.sender);       // .audio(bytes), .keep_alive(), .close_stream()
//! ```

pub mod messages;

pub use messages::{
    ControlMessage, Metadata, Results, SpeechStarted, SttEvent, UtteranceEnd, Word,
};

use crate::config::{DeepgramSettings, Secret};
use crate::domain::audio::{Codec, SAMPLE_RATE};
use crate::providers::breaker::{guarded, Breaker};
use crate::providers::ws::{
    self, WsClose, WsConnection, WsEvents, WsOptions, WsProtocol, WsSender,
};
use crate::providers::{percent_encode, ProviderError};
use awc::ws::Message;
use bytes::Bytes;
use std::time::Duration;

/// What the caller can send on a listen socket.
#[derive(Debug, Clone, PartialEq)]
pub enum SttCommand {
    /// Raw audio in the declared encoding, forwarded as one binary frame.
    Audio(Bytes),
    Control(ControlMessage),
}

/// An open listen socket: `sender` for audio and control, `events` for what Deepgram hears.
pub type DeepgramConnection = WsConnection<SttCommand, SttEvent>;
/// Queues audio and control messages on a listen socket (cloneable, never awaits).
pub type DeepgramSender = WsSender<SttCommand>;
/// The parsed messages of a listen socket; ends with [`SttEvent::Closed`] or an `Err`.
pub type DeepgramEvents = WsEvents<SttEvent>;

impl WsSender<SttCommand> {
    /// Queues one frame of audio (bytes as received from the call, not transcoded).
    pub fn audio(&self, audio: Bytes) -> Result<(), ProviderError> {
        self.send(SttCommand::Audio(audio))
    }
    /// Keeps the socket open while no audio flows.
    pub fn keep_alive(&self) -> Result<(), ProviderError> {
        self.send(SttCommand::Control(ControlMessage::KeepAlive))
    }
    /// Asks for the buffered audio to be transcribed now.
    pub fn finalize(&self) -> Result<(), ProviderError> {
        self.send(SttCommand::Control(ControlMessage::Finalize))
    }
    /// Ends the session: the last results and a `Metadata` follow, then the server closes.
    pub fn close_stream(&self) -> Result<(), ProviderError> {
        self.send(SttCommand::Control(ControlMessage::CloseStream))
    }
}

/// The query parameters of a listen socket. `endpointing: None` sends `endpointing=false`;
/// `utterance_end_ms: None` leaves it out.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenParams {
    pub model: String,
    pub language: String,
    pub encoding: Codec,
    pub sample_rate: u32,
    pub channels: u16,
    pub interim_results: bool,
    pub endpointing: Option<u32>,
    pub utterance_end_ms: Option<u32>,
    pub vad_events: bool,
    pub smart_format: bool,
    pub punctuate: bool,
    /// Words to boost (nova-3 `keyterm`, repeated).
    pub keyterms: Vec<String>,
    /// Free label echoed in Deepgram's usage reports (e.g. the call id).
    pub tag: Option<String>,
}

impl ListenParams {
    /// The parameters for one phone call in `codec`: 8000 Hz mono, interim results, endpointing,
    /// utterance ends and VAD events on, model and language from the settings.
    pub fn for_call(settings: &DeepgramSettings, codec: Codec) -> Self {
        Self {
            model: settings.model.clone(),
            language: settings.language.clone(),
            encoding: codec,
            sample_rate: SAMPLE_RATE,
            channels: 1,
            interim_results: true,
            endpointing: Some(settings.endpointing_ms),
            utterance_end_ms: Some(settings.utterance_end_ms),
            vad_events: true,
            smart_format: true,
            punctuate: true,
            keyterms: Vec::new(),
            tag: None,
        }
    }

    /// The parameters as `(name, value)` pairs, in a stable order.
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("model", self.model.clone()),
            ("language", self.language.clone()),
            ("encoding", self.encoding.deepgram_encoding().to_owned()),
            ("sample_rate", self.sample_rate.to_string()),
            ("channels", self.channels.to_string()),
            ("interim_results", self.interim_results.to_string()),
            (
                "endpointing",
                self.endpointing
                    .map_or_else(|| "false".to_owned(), |ms| ms.to_string()),
            ),
        ];
        if let Some(ms) = self.utterance_end_ms {
            pairs.push(("utterance_end_ms", ms.to_string()));
        }
        pairs.push(("vad_events", self.vad_events.to_string()));
        pairs.push(("smart_format", self.smart_format.to_string()));
        pairs.push(("punctuate", self.punctuate.to_string()));
        for term in &self.keyterms {
            pairs.push(("keyterm", term.clone()));
        }
        if let Some(tag) = &self.tag {
            pairs.push(("tag", tag.clone()));
        }
        pairs
    }

    /// The encoded query string (without `?`).
    pub fn to_query(&self) -> String {
        self.query_pairs()
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Reads parameters back from decoded query pairs (what a server sees). Missing optional
    /// values take Deepgram's defaults; `encoding` must be `mulaw` or `alaw`.
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut params = ListenParams {
            model: String::new(),
            language: "en".into(),
            encoding: Codec::Pcmu,
            sample_rate: 0,
            channels: 1,
            interim_results: false,
            endpointing: Some(10),
            utterance_end_ms: None,
            vad_events: false,
            smart_format: false,
            punctuate: false,
            keyterms: Vec::new(),
            tag: None,
        };
        let mut encoding_seen = false;
        let flag = |name: &str, v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("{name}: expected true or false, got {v:?}")),
        };
        let number = |name: &str, v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{name}: expected a number, got {v:?}"))
        };
        for (name, value) in pairs {
            match name {
                "model" => params.model = value.to_owned(),
                "language" => params.language = value.to_owned(),
                "encoding" => {
                    params.encoding = Codec::from_deepgram(value).map_err(|e| e.to_string())?;
                    encoding_seen = true;
                }
                "sample_rate" => params.sample_rate = number(name, value)?,
                "channels" => {
                    params.channels = u16::try_from(number(name, value)?)
                        .map_err(|_| "channels: too large".to_owned())?
                }
                "interim_results" => params.interim_results = flag(name, value)?,
                "endpointing" => {
                    params.endpointing = match value {
                        "false" => None,
                        "true" => Some(10),
                        ms => Some(number(name, ms)?),
                    }
                }
                "utterance_end_ms" => params.utterance_end_ms = Some(number(name, value)?),
                "vad_events" => params.vad_events = flag(name, value)?,
                "smart_format" => params.smart_format = flag(name, value)?,
                "punctuate" => params.punctuate = flag(name, value)?,
                "keyterm" => params.keyterms.push(value.to_owned()),
                "tag" => params.tag = Some(value.to_owned()),
                _ => {}
            }
        }
        if !encoding_seen {
            return Err("encoding: required (mulaw or alaw)".into());
        }
        if params.sample_rate == 0 {
            return Err("sample_rate: required with encoding".into());
        }
        Ok(params)
    }
}

/// Opens Deepgram listen sockets. Cheap to clone; the socket itself lives on the arbiter that
/// calls [`connect`](Self::connect).
#[derive(Debug, Clone)]
pub struct DeepgramClient {
    base_url: String,
    api_key: Secret,
    options: WsOptions,
    breaker: Option<Breaker>,
}

impl DeepgramClient {
    pub fn new(settings: &DeepgramSettings) -> Self {
        Self {
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone(),
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

    /// Messages (audio frames, mostly) that may wait to be written on each socket.
    pub fn with_command_queue(mut self, messages: usize) -> Self {
        self.options.command_queue = messages.max(1);
        self
    }

    /// The socket URL for `params`.
    pub fn listen_url(&self, params: &ListenParams) -> String {
        format!("{}/v1/listen?{}", self.base_url, params.to_query())
    }

    /// Opens a listen socket (`Authorization: Token <key>`; no header when the key is empty,
    /// which only a local simulator accepts). Must run on an actix arbiter.
    pub async fn connect(
        &self,
        params: &ListenParams,
    ) -> Result<DeepgramConnection, ProviderError> {
        let mut request = ws::client(self.options.connect_timeout).ws(self.listen_url(params));
        if !self.api_key.is_empty() {
            request = request.header("Authorization", format!("Token {}", self.api_key.expose()));
        }
        let open = ws::open::<Deepgram>(request, self.options, "dg-request-id");
        guarded(self.breaker.as_ref(), "deepgram", open).await
    }
}

/// The listen protocol's framing.
struct Deepgram;

impl WsProtocol for Deepgram {
    type Command = SttCommand;
    type Event = SttEvent;
    const PROVIDER: &'static str = "deepgram";

    fn encode(command: SttCommand) -> Result<Message, ProviderError> {
        match command {
            SttCommand::Audio(bytes) => Ok(Message::Binary(bytes)),
            SttCommand::Control(control) => ws::json_message(Self::PROVIDER, &control),
        }
    }

    fn decode(text: &str) -> Result<SttEvent, ProviderError> {
        ws::parse_json(Self::PROVIDER, text)
    }

    fn closed(close: WsClose) -> SttEvent {
        SttEvent::Closed(close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DeepgramSettings {
        DeepgramSettings {
            api_key: Secret::new("k"),
            base_url: "wss://api.deepgram.com/".into(),
            model: "nova-3".into(),
            language: "en-US".into(),
            endpointing_ms: 300,
            utterance_end_ms: 1000,
            connect_timeout_ms: 5000,
            keepalive_interval_ms: 4000,
            replay_buffer_ms: 120_000,
            unconfirmed_buffer_ms: 20_000,
            audio_frames_per_message: 1,
        }
    }

    #[test]
    fn call_parameters_build_the_documented_url() {
        let client = DeepgramClient::new(&settings());
        let params = ListenParams::for_call(&settings(), Codec::Pcmu);
        assert_eq!(
            client.listen_url(&params),
            "wss://api.deepgram.com/v1/listen?model=nova-3&language=en-US&encoding=mulaw\
             &sample_rate=8000&channels=1&interim_results=true&endpointing=300\
             &utterance_end_ms=1000&vad_events=true&smart_format=true&punctuate=true"
        );
    }

    #[test]
    fn query_round_trips_through_from_query() {
        let mut params = ListenParams::for_call(&settings(), Codec::Pcma);
        params.endpointing = None;
        params.keyterms = vec!["Acme Dental".into()];
        params.tag = Some("call-1".into());
        let query = params.to_query();
        assert!(query.contains("encoding=alaw"));
        assert!(query.contains("endpointing=false"));
        assert!(query.contains("keyterm=Acme%20Dental"));
        let decoded: Vec<(String, String)> = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.replace("%20", " "))
            })
            .collect();
        let back = ListenParams::from_query(decoded.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap();
        assert_eq!(back, params);
    }

    #[test]
    fn from_query_requires_a_supported_encoding_and_rate() {
        assert!(ListenParams::from_query([("sample_rate", "8000")]).is_err());
        assert!(ListenParams::from_query([("encoding", "opus"), ("sample_rate", "8000")]).is_err());
        assert!(ListenParams::from_query([("encoding", "mulaw")]).is_err());
        let p = ListenParams::from_query([("encoding", "mulaw"), ("sample_rate", "8000")]).unwrap();
        assert_eq!(p.endpointing, Some(10), "Deepgram's default endpointing");
    }
}
