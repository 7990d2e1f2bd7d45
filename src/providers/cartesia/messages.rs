//! Cartesia TTS WebSocket messages: generation and cancel requests (client → server) and the
//! `type`-tagged server messages (shared by the client and the simulator).

use crate::domain::audio::{Codec, UnsupportedCodec, SAMPLE_RATE};
use crate::providers::ws::WsClose;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// One piece of text to speak on a context. Send the sentences of a turn on one `context_id`
/// with `continue: true`, and end the context with `continue: false` (an empty transcript is
/// fine), which the server answers with `done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub model_id: String,
    pub transcript: String,
    pub voice: Voice,
    pub output_format: OutputFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    pub context_id: String,
    /// More text follows on this context.
    #[serde(rename = "continue", default)]
    pub continue_: bool,
    /// Ask for `timestamps` messages (word start and end times).
    #[serde(default)]
    pub add_timestamps: bool,
    /// How long the server may wait for more text before it starts (0–5000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_buffer_delay_ms: Option<u32>,
    /// Generate what is buffered now; answered by `flush_done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush: Option<bool>,
}

/// The voice, by id (`{"mode": "id", "id": ...}`, accepted by every API version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Voice {
    #[serde(default = "voice_mode_id")]
    pub mode: String,
    pub id: String,
}

fn voice_mode_id() -> String {
    "id".into()
}

impl Voice {
    pub fn id(id: impl Into<String>) -> Self {
        Self {
            mode: voice_mode_id(),
            id: id.into(),
        }
    }
}

/// Raw audio format of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFormat {
    pub container: String,
    pub encoding: String,
    pub sample_rate: u32,
}

impl OutputFormat {
    /// Raw G.711 at 8000 Hz in the call's codec, so the bytes go straight to the caller.
    pub fn telephony(codec: Codec) -> Self {
        Self {
            container: "raw".into(),
            encoding: codec.cartesia_encoding().into(),
            sample_rate: SAMPLE_RATE,
        }
    }

    /// The G.711 codec this format names, if it names one.
    pub fn codec(&self) -> Result<Codec, UnsupportedCodec> {
        Codec::from_cartesia(&self.encoding)
    }
}

/// Stops generation on a context. Chunks already in flight may still arrive: drop them by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub context_id: String,
    pub cancel: bool,
}

/// Anything a client sends (what a server parses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClientMessage {
    Cancel(CancelRequest),
    Generate(GenerationRequest),
}

/// One message from the server, or the socket's orderly end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TtsEvent {
    /// A piece of audio for a context.
    Chunk(Chunk),
    /// Word timings for a context (seconds from the start of the context's audio).
    Timestamps(Timestamps),
    /// The buffered text was generated (answers `flush: true`).
    FlushDone(FlushDone),
    /// The context is finished: all its audio has been sent.
    Done(Done),
    /// A request failed.
    Error(TtsError),
    /// The server closed the socket with a close frame. Always the last event.
    #[serde(skip)]
    Closed(WsClose),
    /// A message type this client does not use (e.g. `phoneme_timestamps`).
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub context_id: String,
    /// Base64 of the audio bytes; see [`Chunk::audio`].
    pub data: String,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub status_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_id: Option<u32>,
}

impl Chunk {
    /// The audio, decoded from base64.
    pub fn audio(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.data)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timestamps {
    pub context_id: String,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub status_code: u16,
    pub word_timestamps: WordTimestamps,
}

/// Parallel lists: word `i` is spoken from `start[i]` to `end[i]` seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WordTimestamps {
    pub words: Vec<String>,
    pub start: Vec<f64>,
    pub end: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlushDone {
    pub context_id: String,
    #[serde(default)]
    pub flush_id: u32,
    #[serde(default)]
    pub status_code: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub context_id: String,
    #[serde(default)]
    pub status_code: u16,
}

/// An error message. Newer API versions send `title`/`message`/`error_code`, older ones a single
/// `error` string: [`TtsError::describe`] handles both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TtsError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    #[serde(default)]
    pub status_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl TtsError {
    /// One line for logs, whichever shape the server used.
    /// Whether the error is Cartesia's (5xx, overload, our key refused) rather than a request
    /// it rejected as malformed (another 4xx): only the former counts on its breaker.
    pub fn is_provider_fault(&self) -> bool {
        !matches!(self.status_code, 400..=499) || matches!(self.status_code, 401 | 403 | 408 | 429)
    }

    pub fn describe(&self) -> String {
        let parts: Vec<&str> = [&self.title, &self.message, &self.error, &self.error_code]
            .into_iter()
            .filter_map(|p| p.as_deref())
            .collect();
        if parts.is_empty() {
            format!("status {}", self.status_code)
        } else {
            format!("status {}: {}", self.status_code, parts.join(": "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_request_matches_the_documented_shape() {
        let request = GenerationRequest {
            model_id: "sonic-3".into(),
            transcript: "Thanks for calling. ".into(),
            voice: Voice::id("a0e9"),
            output_format: OutputFormat::telephony(Codec::Pcmu),
            language: Some("en".into()),
            context_id: "turn-7f3c".into(),
            continue_: true,
            add_timestamps: true,
            max_buffer_delay_ms: Some(0),
            flush: None,
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "model_id": "sonic-3",
                "transcript": "Thanks for calling. ",
                "voice": {"mode": "id", "id": "a0e9"},
                "output_format": {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000},
                "language": "en",
                "context_id": "turn-7f3c",
                "continue": true,
                "add_timestamps": true,
                "max_buffer_delay_ms": 0
            })
        );
        let parsed: ClientMessage = serde_json::from_value(json).unwrap();
        assert_eq!(parsed, ClientMessage::Generate(request));
        let cancel: ClientMessage =
            serde_json::from_str(r#"{"context_id": "turn-7f3c", "cancel": true}"#).unwrap();
        assert!(matches!(cancel, ClientMessage::Cancel(c) if c.cancel));
    }

    #[test]
    fn server_messages_parse_in_both_error_shapes() {
        let chunk: TtsEvent = serde_json::from_str(
            r#"{"type": "chunk", "context_id": "c", "data": "AAEC", "done": false, "status_code": 206, "step_time": 41.2, "flush_id": 1}"#,
        )
        .unwrap();
        assert!(matches!(&chunk, TtsEvent::Chunk(c) if c.audio().unwrap() == vec![0, 1, 2]));
        let ts: TtsEvent = serde_json::from_str(
            r#"{"type": "timestamps", "context_id": "c", "done": false, "status_code": 206,
                "word_timestamps": {"words": ["Thanks", "for"], "start": [0.0, 0.31], "end": [0.29, 0.45]}}"#,
        )
        .unwrap();
        assert!(matches!(ts, TtsEvent::Timestamps(t) if t.word_timestamps.words.len() == 2));
        let done: TtsEvent = serde_json::from_str(
            r#"{"type": "done", "context_id": "c", "done": true, "status_code": 206}"#,
        )
        .unwrap();
        assert!(matches!(done, TtsEvent::Done(d) if d.context_id == "c"));
        let new_error: TtsEvent = serde_json::from_str(
            r#"{"type": "error", "context_id": "c", "done": true, "status_code": 400, "title": "Bad", "message": "no voice", "error_code": "x"}"#,
        )
        .unwrap();
        let TtsEvent::Error(e) = new_error else {
            panic!()
        };
        assert_eq!(e.describe(), "status 400: Bad: no voice: x");
        let old_error: TtsEvent =
            serde_json::from_str(r#"{"type": "error", "status_code": 500, "error": "boom"}"#)
                .unwrap();
        let TtsEvent::Error(e) = old_error else {
            panic!()
        };
        assert_eq!(e.describe(), "status 500: boom");
        let other: TtsEvent =
            serde_json::from_str(r#"{"type": "phoneme_timestamps", "context_id": "c"}"#).unwrap();
        assert_eq!(other, TtsEvent::Unknown);
    }
}
