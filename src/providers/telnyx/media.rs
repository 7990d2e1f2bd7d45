//! The Telnyx media streaming WebSocket (PROTOCOLS.md section 2): the JSON text frames Telnyx
//! sends (`connected`, `start`, `media`, `dtmf`, `mark`, `stop`, `error`) and those the app sends
//! back (`media`, `mark`, `clear`). Counters are JSON strings on the wire.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A frame from Telnyx (or the caller simulator) to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum InboundFrame {
    Connected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    Start {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        stream_id: String,
        start: StartPayload,
    },
    Media {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        stream_id: String,
        media: MediaPayload,
    },
    Dtmf {
        stream_id: String,
        dtmf: DtmfPayload,
    },
    Mark {
        stream_id: String,
        mark: MarkPayload,
    },
    Stop {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        stream_id: String,
        #[serde(default)]
        stop: serde_json::Value,
    },
    /// Shape unconfirmed: kept whole for the log.
    Error {
        #[serde(flatten)]
        body: serde_json::Map<String, serde_json::Value>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_control_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub media_format: MediaFormat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaFormat {
    /// `PCMU`, `PCMA`, ... (read it, never assume it).
    pub encoding: String,
    pub sample_rate: u32,
    #[serde(default = "one")]
    pub channels: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaPayload {
    /// `inbound` (the caller) or `outbound` (what we play).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Base64 of the codec bytes (no RTP header).
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtmfPayload {
    pub digit: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkPayload {
    pub name: String,
}

/// A frame from the engine to Telnyx.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum OutboundFrame {
    Media { media: OutboundMedia },
    Mark { mark: MarkPayload },
    Clear,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundMedia {
    pub payload: String,
}

/// What a `media` frame's JSON holds around its payload (written by hand on the hot path).
const MEDIA_PREFIX: &str = r#"{"event":"media","media":{"payload":""#;
const MEDIA_SUFFIX: &str = r#""}}"#;

impl OutboundFrame {
    /// Audio in the caller's codec, base64-encoded for the wire. The payload's buffer has room
    /// for the frame's JSON around it, so [`into_json`](Self::into_json) allocates nothing.
    pub fn media(audio: &[u8]) -> Self {
        let encoded = base64::encoded_len(audio.len(), true).unwrap_or(0);
        let mut payload = String::with_capacity(MEDIA_PREFIX.len() + encoded + MEDIA_SUFFIX.len());
        BASE64.encode_string(audio, &mut payload);
        OutboundFrame::Media {
            media: OutboundMedia { payload },
        }
    }

    /// The frame as its wire text, consuming it: a `media` frame's JSON is written around its
    /// payload in place (base64 needs no escaping).
    pub fn into_json(self) -> String {
        match self {
            OutboundFrame::Media {
                media: OutboundMedia { mut payload },
            } => {
                payload.reserve_exact(MEDIA_PREFIX.len() + MEDIA_SUFFIX.len());
                payload.insert_str(0, MEDIA_PREFIX);
                payload.push_str(MEDIA_SUFFIX);
                payload
            }
            other => other.to_json(),
        }
    }

    pub fn mark(name: impl Into<String>) -> Self {
        OutboundFrame::Mark {
            mark: MarkPayload { name: name.into() },
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The fields of a `media` frame the engine uses, borrowed from the frame's text: the per-frame
/// path parses these (no owned strings; other fields are skipped unread) and parses every other
/// kind of frame whole, as an [`InboundFrame`].
#[derive(Debug, Deserialize)]
pub struct MediaFrameRef<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    pub stream_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub media: Option<MediaPayloadRef<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct MediaPayloadRef<'a> {
    #[serde(borrow, default)]
    pub track: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
}

impl<'a> MediaFrameRef<'a> {
    /// `(stream_id, media)` of a well-formed `media` frame; `None` for any other text.
    pub fn parse(text: &'a str) -> Option<(Cow<'a, str>, MediaPayloadRef<'a>)> {
        let frame: MediaFrameRef<'a> = serde_json::from_str(text).ok()?;
        if frame.event != "media" {
            return None;
        }
        Some((frame.stream_id?, frame.media?))
    }
}

impl MediaPayload {
    /// The audio bytes, or `None` when the payload is not valid base64.
    pub fn audio(&self) -> Option<Vec<u8>> {
        BASE64.decode(self.payload.as_bytes()).ok()
    }

    /// True for the caller's own audio (frames without a track are the caller's).
    pub fn is_inbound(&self) -> bool {
        self.track.as_deref().is_none_or(|t| t == "inbound")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol_examples() {
        let start = r#"{"event": "start", "sequence_number": "1", "stream_id": "32de",
            "start": {"user_id": "u", "call_control_id": "v3:Md", "call_session_id": "s",
            "client_state": "aGk=", "from": "+15559870000", "to": "+15551230000",
            "custom_parameters": {"campaign": "42"},
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}"#;
        match serde_json::from_str::<InboundFrame>(start).unwrap() {
            InboundFrame::Start {
                stream_id, start, ..
            } => {
                assert_eq!(stream_id, "32de");
                assert_eq!(start.media_format.encoding, "PCMU");
                assert_eq!(start.call_control_id.as_deref(), Some("v3:Md"));
            }
            other => panic!("{other:?}"),
        }
        let media = r#"{"event": "media", "sequence_number": "4", "stream_id": "32de",
            "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "/w=="}}"#;
        match serde_json::from_str::<InboundFrame>(media).unwrap() {
            InboundFrame::Media { media, .. } => {
                assert!(media.is_inbound());
                assert_eq!(media.audio().unwrap(), vec![0xff]);
            }
            other => panic!("{other:?}"),
        }
        let err = r#"{"event": "error", "payload": {"code": 1}}"#;
        assert!(matches!(
            serde_json::from_str::<InboundFrame>(err).unwrap(),
            InboundFrame::Error { .. }
        ));
        assert!(serde_json::from_str::<InboundFrame>(r#"{"event":"bogus"}"#).is_err());
    }

    #[test]
    fn outbound_frames_have_the_wire_shape() {
        assert_eq!(OutboundFrame::Clear.to_json(), r#"{"event":"clear"}"#);
        assert_eq!(
            OutboundFrame::mark("utt-1").to_json(),
            r#"{"event":"mark","mark":{"name":"utt-1"}}"#
        );
        assert_eq!(
            OutboundFrame::media(&[0xff]).to_json(),
            r#"{"event":"media","media":{"payload":"/w=="}}"#
        );
        // The hand-written path says the same as serde.
        for frame in [
            OutboundFrame::media(&[0xff, 0, 7]),
            OutboundFrame::mark("m"),
            OutboundFrame::Clear,
        ] {
            assert_eq!(frame.clone().into_json(), frame.to_json());
        }
    }

    #[test]
    fn the_media_fast_path_reads_media_frames_only() {
        let media = r#"{"event": "media", "sequence_number": "4", "stream_id": "32de",
            "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "/w=="}}"#;
        let (stream_id, payload) = MediaFrameRef::parse(media).expect("a media frame");
        assert_eq!(stream_id, "32de");
        assert_eq!(payload.track.as_deref(), Some("inbound"));
        assert_eq!(payload.payload, "/w==");
        // Borrowed, not copied, when nothing is escaped.
        assert!(matches!(payload.payload, Cow::Borrowed(_)));
        // Other frames, and media frames missing a field, go to the whole parse.
        assert!(MediaFrameRef::parse(r#"{"event":"stop","stream_id":"32de"}"#).is_none());
        assert!(MediaFrameRef::parse(r#"{"event":"media","stream_id":"32de"}"#).is_none());
        assert!(MediaFrameRef::parse(r#"{"event":"media","media":{"payload":"/w=="}}"#).is_none());
        assert!(MediaFrameRef::parse("not json").is_none());
    }
}
