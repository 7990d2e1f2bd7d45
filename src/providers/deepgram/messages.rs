//! Deepgram v1 listen messages: the control messages a client sends as text frames and the JSON
//! messages the server answers with (shared by the client and the simulator).

use crate::providers::ws::WsClose;
use serde::{Deserialize, Serialize};

/// Control messages, sent as text frames (audio goes as binary frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ControlMessage {
    /// Keeps the socket open while no audio flows (send every 3–5 s; no reply).
    KeepAlive,
    /// Flushes buffered audio; the resulting `Results` carry `from_finalize: true`.
    Finalize,
    /// Flushes, sends the last `Results` and a `Metadata`, then the server closes.
    CloseStream,
}

/// One message from the server, or the socket's orderly end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SttEvent {
    /// A transcript of a span of audio (interim when `is_final` is false).
    Results(Results),
    /// Voice activity began (needs `vad_events=true`).
    SpeechStarted(SpeechStarted),
    /// A gap after the last finalized word (needs `utterance_end_ms` and `interim_results`).
    UtteranceEnd(UtteranceEnd),
    /// Summary of the session, sent just before the server closes after `CloseStream`.
    Metadata(Metadata),
    /// An error the server reported in JSON (most errors come as a close frame instead).
    Error(ErrorMessage),
    /// The server closed the socket with a close frame. Always the last event.
    #[serde(skip)]
    Closed(WsClose),
    /// A message type this client does not know; ignored.
    #[serde(other)]
    Unknown,
}

/// A `Results` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    #[serde(default)]
    pub channel_index: Vec<u32>,
    /// Start of the transcribed span, in seconds since the stream began.
    pub start: f64,
    /// Length of the transcribed span, in seconds.
    pub duration: f64,
    /// This span won't be revised again.
    #[serde(default)]
    pub is_final: bool,
    /// Endpointing saw a pause after this span: a candidate end of turn.
    #[serde(default)]
    pub speech_final: bool,
    /// This result answers a `Finalize`.
    #[serde(default)]
    pub from_finalize: bool,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl Results {
    /// The best alternative's transcript ("" for silence).
    pub fn transcript(&self) -> &str {
        self.channel
            .alternatives
            .first()
            .map_or("", |a| a.transcript.as_str())
    }

    /// The best alternative's words.
    pub fn words(&self) -> &[Word] {
        self.channel
            .alternatives
            .first()
            .map_or(&[], |a| a.words.as_slice())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub transcript: String,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default)]
    pub words: Vec<Word>,
}

/// One recognised word with its timing (seconds since the stream began).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub punctuated_word: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeechStarted {
    #[serde(default)]
    pub channel: Vec<u32>,
    /// When speech began, in seconds since the stream began.
    pub timestamp: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtteranceEnd {
    #[serde(default)]
    pub channel: Vec<u32>,
    /// End of the last finalized word, in seconds since the stream began.
    pub last_word_end: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Metadata {
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub created: String,
    /// Seconds of audio received.
    #[serde(default)]
    pub duration: f64,
    #[serde(default)]
    pub channels: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ErrorMessage {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub variant: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_parse_from_the_documented_shapes() {
        let results: SttEvent = serde_json::from_str(
            r#"{"type": "Results", "channel_index": [0, 1], "start": 12.34, "duration": 1.02,
             "is_final": true, "speech_final": true, "from_finalize": false,
             "channel": {"alternatives": [{"transcript": "yes that works", "confidence": 0.98,
               "languages": ["en"],
               "words": [{"word": "yes", "start": 12.40, "end": 12.62, "confidence": 0.99, "punctuated_word": "Yes", "speaker": 0}]}]},
             "metadata": {"request_id": "r", "model_uuid": "m"}}"#,
        )
        .unwrap();
        let SttEvent::Results(results) = results else {
            panic!("not results")
        };
        assert!(results.is_final && results.speech_final);
        assert_eq!(results.transcript(), "yes that works");
        assert_eq!(results.words()[0].punctuated_word.as_deref(), Some("Yes"));

        let started: SttEvent = serde_json::from_str(
            r#"{"type": "SpeechStarted", "channel": [0, 1], "timestamp": 12.3}"#,
        )
        .unwrap();
        assert!(matches!(started, SttEvent::SpeechStarted(s) if s.timestamp == 12.3));
        let end: SttEvent = serde_json::from_str(
            r#"{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 13.36}"#,
        )
        .unwrap();
        assert!(matches!(end, SttEvent::UtteranceEnd(u) if u.last_word_end == 13.36));
        let meta: SttEvent = serde_json::from_str(
            r#"{"type": "Metadata", "transaction_key": "deprecated", "request_id": "abc",
             "sha256": "x", "created": "2024-08-29T22:37:55.202Z", "duration": 25.1, "channels": 1}"#,
        )
        .unwrap();
        assert!(matches!(meta, SttEvent::Metadata(m) if m.request_id == "abc"));
        let other: SttEvent = serde_json::from_str(r#"{"type": "Whatever", "x": 1}"#).unwrap();
        assert_eq!(other, SttEvent::Unknown);
    }

    #[test]
    fn control_messages_serialise_as_typed_objects() {
        assert_eq!(
            serde_json::to_string(&ControlMessage::KeepAlive).unwrap(),
            r#"{"type":"KeepAlive"}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlMessage::CloseStream).unwrap(),
            r#"{"type":"CloseStream"}"#
        );
    }
}
