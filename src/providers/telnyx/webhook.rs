//! Telnyx webhooks: Ed25519 signature verification over `telnyx-timestamp|raw body`, and the serde
//! types of the event envelope. Every payload field is optional, so unknown or new event types still
//! parse and can be stored as they are.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Header carrying the base64 Ed25519 signature (match case-insensitively; actix does).
pub const SIGNATURE_HEADER: &str = "telnyx-signature-ed25519";
/// Header carrying the Unix time in seconds the signature was made at.
pub const TIMESTAMP_HEADER: &str = "telnyx-timestamp";
/// The replay window of both official SDKs, in seconds, in either direction.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a webhook's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature or the timestamp header is absent or empty.
    #[error("the signature or timestamp header is missing")]
    Missing,
    /// A header is present but is not a decimal timestamp or a base64 64-byte signature.
    #[error("the signature or timestamp header is malformed")]
    Malformed,
    /// The signature does not match the body and timestamp under the configured key.
    #[error("the signature does not match")]
    Invalid,
    /// The timestamp is further from now than the tolerance allows (replay protection).
    #[error("the timestamp is outside the accepted window")]
    Stale,
    /// The configured public key is not base64 of a valid 32-byte Ed25519 key: a configuration
    /// error on our side, not the sender's fault.
    #[error("the configured webhook public key is invalid")]
    BadPublicKey,
}

impl SignatureError {
    /// The `reason` label of `iace_webhook_verification_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::Malformed => "malformed",
            SignatureError::Invalid => "invalid",
            SignatureError::Stale => "stale",
            SignatureError::BadPublicKey => "bad_public_key",
        }
    }
}

/// A verifier holding the parsed public key, so a hot endpoint decodes it once.
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    key: VerifyingKey,
}

impl WebhookVerifier {
    /// Parses base64 of the raw 32-byte Ed25519 public key (as shown in the Telnyx portal).
    pub fn new(public_key_b64: &str) -> Result<Self, SignatureError> {
        let bytes = BASE64
            .decode(public_key_b64.trim())
            .map_err(|_| SignatureError::BadPublicKey)?;
        let raw: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::BadPublicKey)?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| SignatureError::BadPublicKey)?;
        Ok(Self { key })
    }

    /// Checks, in order: both headers present, both well formed, the timestamp within
    /// `tolerance_secs` of `now_unix`, and the signature over `timestamp|raw_body`.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature_b64: Option<&str>,
        raw_body: &[u8],
        now_unix: i64,
        tolerance_secs: i64,
    ) -> Result<(), SignatureError> {
        let timestamp = timestamp.map(str::trim).filter(|t| !t.is_empty());
        let signature_b64 = signature_b64.map(str::trim).filter(|s| !s.is_empty());
        let (Some(timestamp), Some(signature_b64)) = (timestamp, signature_b64) else {
            return Err(SignatureError::Missing);
        };
        let ts: i64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
        let sig_bytes = BASE64
            .decode(signature_b64)
            .map_err(|_| SignatureError::Malformed)?;
        let signature = Signature::from_slice(&sig_bytes).map_err(|_| SignatureError::Malformed)?;
        if now_unix.abs_diff(ts) > tolerance_secs.unsigned_abs() {
            return Err(SignatureError::Stale);
        }
        // The signed message is the header text exactly as received, not a re-rendered number.
        self.key
            .verify(&signed_message(timestamp, raw_body), &signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// One-shot verification: parses the key, then [`WebhookVerifier::verify`].
pub fn verify_signature(
    public_key_b64: &str,
    timestamp: Option<&str>,
    signature_b64: Option<&str>,
    raw_body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    WebhookVerifier::new(public_key_b64)?.verify(
        timestamp,
        signature_b64,
        raw_body,
        now_unix,
        tolerance_secs,
    )
}

/// Signs a webhook body the way Telnyx does: base64 of the Ed25519 signature over
/// `timestamp|body`. Used by the simulator and by tests.
pub fn sign_webhook(key: &SigningKey, timestamp: i64, raw_body: &[u8]) -> String {
    let signature = key.sign(&signed_message(&timestamp.to_string(), raw_body));
    BASE64.encode(signature.to_bytes())
}

/// Base64 of the raw 32-byte public key, the format `telnyx.webhook_public_key` expects.
pub fn public_key_b64(key: &SigningKey) -> String {
    BASE64.encode(key.verifying_key().to_bytes())
}

fn signed_message(timestamp: &str, raw_body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + 1 + raw_body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'|');
    message.extend_from_slice(raw_body);
    message
}

/// The body of every webhook: the event plus delivery metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookEnvelope {
    pub data: WebhookEvent,
    /// Seen in real deliveries though absent from the SDK models, hence optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<WebhookMeta>,
}

/// Delivery metadata: which attempt this is and where it was sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookMeta {
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(default)]
    pub delivered_to: Option<String>,
}

/// One event. `id` is unique per event (redeliveries repeat it): the deduplication key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    pub event_type: String,
    #[serde(default)]
    pub record_type: Option<String>,
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub payload: CallPayload,
}

impl WebhookEvent {
    /// The event type as an enum; unknown types are `Other`.
    pub fn kind(&self) -> TelnyxEventKind {
        TelnyxEventKind::parse(&self.event_type)
    }
}

/// The payload of a call event. Every field is optional because each event type carries a different
/// subset; fields not named here are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallPayload {
    #[serde(default)]
    pub call_control_id: Option<String>,
    #[serde(default)]
    pub call_leg_id: Option<String>,
    #[serde(default)]
    pub call_session_id: Option<String>,
    /// Base64 as the last command set it; see [`CallPayload::client_state_decoded`].
    #[serde(default)]
    pub client_state: Option<String>,
    #[serde(default)]
    pub connection_id: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// `incoming` or `outgoing`.
    #[serde(default)]
    pub direction: Option<String>,
    /// `parked`/`bridging` (initiated), `answered`, `hangup`; often absent.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    /// `call.hangup`: `normal_clearing`, `call_rejected`, `originator_cancel`, `timeout`, ...
    #[serde(default)]
    pub hangup_cause: Option<String>,
    /// `call.hangup`: `caller`, `callee` or `unknown`.
    #[serde(default)]
    pub hangup_source: Option<String>,
    #[serde(default)]
    pub sip_hangup_cause: Option<String>,
    /// `call.dtmf.received`: one character.
    #[serde(default)]
    pub digit: Option<String>,
    /// Answering machine detection: `human`, `machine`, `not_sure`, ...
    #[serde(default)]
    pub result: Option<String>,
    /// `call.playback.ended` / `call.speak.ended`: `completed`, `call_hangup`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// `streaming.*`.
    #[serde(default)]
    pub stream_url: Option<String>,
    #[serde(default)]
    pub stream_id: Option<String>,
    /// `streaming.failed`.
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// `call.transcription`: what Telnyx heard the caller say.
    #[serde(default)]
    pub transcription_data: Option<TranscriptionData>,
    /// `call.recording.saved` (links valid for 10 minutes).
    #[serde(default)]
    pub recording_urls: Option<RecordingUrls>,
    #[serde(default)]
    pub public_recording_urls: Option<RecordingUrls>,
    #[serde(default)]
    pub recording_started_at: Option<String>,
    #[serde(default)]
    pub recording_ended_at: Option<String>,
    /// Everything else the event carried (codecs, call quality stats, stream params, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl CallPayload {
    /// `client_state` decoded from base64 to text; `None` when unset, empty or not valid.
    pub fn client_state_decoded(&self) -> Option<String> {
        let raw = self.client_state.as_deref().filter(|s| !s.is_empty())?;
        let bytes = BASE64.decode(raw).ok()?;
        String::from_utf8(bytes).ok()
    }

    /// True for a call a caller placed to one of our numbers.
    pub fn is_incoming(&self) -> bool {
        self.direction.as_deref() == Some("incoming")
    }
}

/// The transcript of `call.transcription`; a caller turn is its final transcripts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionData {
    #[serde(default)]
    pub transcript: String,
    #[serde(default)]
    pub is_final: bool,
    #[serde(default)]
    pub confidence: Option<f64>,
}

/// Recording links of `call.recording.saved`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingUrls {
    #[serde(default)]
    pub mp3: Option<String>,
    #[serde(default)]
    pub wav: Option<String>,
}

/// The event types the engine acts on; anything else is `Other` (stored, acknowledged).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TelnyxEventKind {
    CallInitiated,
    CallAnswered,
    CallHangup,
    CallBridged,
    StreamingStarted,
    StreamingStopped,
    StreamingFailed,
    DtmfReceived,
    MachineDetectionEnded,
    RecordingSaved,
    SpeakStarted,
    SpeakEnded,
    PlaybackStarted,
    PlaybackEnded,
    /// A transcript of the caller from Telnyx's own STT (after `transcription_start`).
    Transcription,
    Other(String),
}

impl TelnyxEventKind {
    const KNOWN: [(&'static str, TelnyxEventKind); 15] = [
        ("call.initiated", Self::CallInitiated),
        ("call.answered", Self::CallAnswered),
        ("call.hangup", Self::CallHangup),
        ("call.bridged", Self::CallBridged),
        // Streaming events carry no `call.` prefix.
        ("streaming.started", Self::StreamingStarted),
        ("streaming.stopped", Self::StreamingStopped),
        ("streaming.failed", Self::StreamingFailed),
        ("call.dtmf.received", Self::DtmfReceived),
        ("call.machine.detection.ended", Self::MachineDetectionEnded),
        ("call.recording.saved", Self::RecordingSaved),
        ("call.speak.started", Self::SpeakStarted),
        ("call.speak.ended", Self::SpeakEnded),
        ("call.playback.started", Self::PlaybackStarted),
        ("call.playback.ended", Self::PlaybackEnded),
        ("call.transcription", Self::Transcription),
    ];

    /// Maps a wire `event_type` to its kind.
    pub fn parse(event_type: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|(name, _)| *name == event_type)
            .map_or_else(
                || Self::Other(event_type.to_owned()),
                |(_, kind)| kind.clone(),
            )
    }

    /// The wire name of the event type.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(name) => name,
            known => Self::KNOWN
                .iter()
                .find(|(_, kind)| kind == known)
                .map_or("", |(name, _)| name),
        }
    }
}

impl std::fmt::Display for TelnyxEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    const NOW: i64 = 1_763_868_600;

    #[test]
    fn a_signed_body_verifies() {
        let body = br#"{"data":{"id":"1"}}"#;
        let sig = sign_webhook(&key(), NOW, body);
        let pk = public_key_b64(&key());
        assert_eq!(
            verify_signature(&pk, Some(&NOW.to_string()), Some(&sig), body, NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn a_tampered_body_or_timestamp_is_invalid() {
        let body = br#"{"data":{"id":"1"}}"#;
        let sig = sign_webhook(&key(), NOW, body);
        let pk = public_key_b64(&key());
        let ts = NOW.to_string();
        assert_eq!(
            verify_signature(
                &pk,
                Some(&ts),
                Some(&sig),
                br#"{"data":{"id":"2"}}"#,
                NOW,
                300
            ),
            Err(SignatureError::Invalid)
        );
        let other_ts = (NOW + 1).to_string();
        assert_eq!(
            verify_signature(&pk, Some(&other_ts), Some(&sig), body, NOW, 300),
            Err(SignatureError::Invalid)
        );
        let other_key = public_key_b64(&SigningKey::from_bytes(&[8u8; 32]));
        assert_eq!(
            verify_signature(&other_key, Some(&ts), Some(&sig), body, NOW, 300),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_told_apart() {
        let pk = public_key_b64(&key());
        let sig = sign_webhook(&key(), NOW, b"{}");
        let ts = NOW.to_string();
        assert_eq!(
            verify_signature(&pk, None, Some(&sig), b"{}", NOW, 300),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(&pk, Some(&ts), Some(""), b"{}", NOW, 300),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(&pk, Some("yesterday"), Some(&sig), b"{}", NOW, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(&pk, Some(&ts), Some("not base64!"), b"{}", NOW, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(&pk, Some(&ts), Some("AAAA"), b"{}", NOW, 300),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn timestamps_outside_the_window_are_stale_in_both_directions() {
        let pk = public_key_b64(&key());
        for ts in [NOW - 301, NOW + 301] {
            let sig = sign_webhook(&key(), ts, b"{}");
            assert_eq!(
                verify_signature(&pk, Some(&ts.to_string()), Some(&sig), b"{}", NOW, 300),
                Err(SignatureError::Stale)
            );
        }
        let edge = NOW - 300;
        let sig = sign_webhook(&key(), edge, b"{}");
        assert_eq!(
            verify_signature(&pk, Some(&edge.to_string()), Some(&sig), b"{}", NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn a_bad_configured_key_is_reported_as_such() {
        assert_eq!(
            WebhookVerifier::new("c2hvcnQ=").err(),
            Some(SignatureError::BadPublicKey)
        );
        assert_eq!(
            WebhookVerifier::new("%%%").err(),
            Some(SignatureError::BadPublicKey)
        );
    }

    #[test]
    fn the_protocols_call_initiated_example_parses() {
        let body = r#"{
          "data": {
            "record_type": "event",
            "event_type": "call.initiated",
            "id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
            "occurred_at": "2025-11-23T03:30:00.076316Z",
            "payload": {
              "call_control_id": "v3:2EC...",
              "call_leg_id": "b0e6224c-...",
              "call_session_id": "b0e6141e-...",
              "connection_id": "2811212257810187875",
              "client_state": null,
              "from": "+18125550100",
              "to": "+13055550199",
              "direction": "incoming",
              "state": "parked",
              "start_time": "2025-11-23T03:30:00.076316Z",
              "caller_id_name": "+18125550100",
              "connection_codecs": "PCMA,PCMU",
              "offered_codecs": "PCMU,G729"
            }
          },
          "meta": {"attempt": 1, "delivered_to": "https://engine.example.com/telnyx/webhook"}
        }"#;
        let env: WebhookEnvelope = serde_json::from_str(body).unwrap();
        assert_eq!(env.data.kind(), TelnyxEventKind::CallInitiated);
        assert_eq!(env.data.id, "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0");
        assert_eq!(
            env.data.occurred_at.unwrap().to_rfc3339(),
            "2025-11-23T03:30:00.076316+00:00"
        );
        let p = &env.data.payload;
        assert_eq!(p.call_control_id.as_deref(), Some("v3:2EC..."));
        assert!(p.is_incoming());
        assert_eq!(p.state.as_deref(), Some("parked"));
        assert_eq!(p.client_state, None);
        assert_eq!(p.extra["offered_codecs"], "PCMU,G729");
        assert_eq!(env.meta.unwrap().attempt, Some(1));
    }

    #[test]
    fn hangup_dtmf_recording_and_unknown_events_parse() {
        let hangup: WebhookEnvelope = serde_json::from_value(serde_json::json!({
            "data": {"id": "a", "event_type": "call.hangup", "payload": {
                "call_control_id": "v3:x", "hangup_cause": "normal_clearing",
                "hangup_source": "caller", "sip_hangup_cause": "16",
                "client_state": "aGVsbG8=",
                "call_quality_stats": {"inbound": {"mos": "4.5"}}}}
        }))
        .unwrap();
        assert_eq!(hangup.data.kind(), TelnyxEventKind::CallHangup);
        assert_eq!(
            hangup.data.payload.hangup_cause.as_deref(),
            Some("normal_clearing")
        );
        assert_eq!(
            hangup.data.payload.client_state_decoded().as_deref(),
            Some("hello")
        );
        assert!(hangup.meta.is_none());

        let saved: WebhookEnvelope = serde_json::from_value(serde_json::json!({
            "data": {"id": "b", "event_type": "call.recording.saved", "payload": {
                "call_leg_id": "leg", "channels": "single",
                "recording_urls": {"mp3": "https://r/1.mp3", "wav": "https://r/1.wav"}}}
        }))
        .unwrap();
        assert_eq!(saved.data.kind(), TelnyxEventKind::RecordingSaved);
        assert_eq!(
            saved.data.payload.recording_urls.unwrap().mp3.as_deref(),
            Some("https://r/1.mp3")
        );

        let unknown: WebhookEnvelope = serde_json::from_value(serde_json::json!({
            "data": {"id": "c", "event_type": "call.cost", "payload": {"total_cost": 0.12}}
        }))
        .unwrap();
        assert_eq!(
            unknown.data.kind(),
            TelnyxEventKind::Other("call.cost".into())
        );
    }

    #[test]
    fn event_kinds_round_trip_through_their_wire_names() {
        for (name, kind) in TelnyxEventKind::KNOWN.iter() {
            assert_eq!(&TelnyxEventKind::parse(name), kind);
            assert_eq!(kind.as_str(), *name);
        }
        assert_eq!(
            TelnyxEventKind::parse("conference.created").as_str(),
            "conference.created"
        );
    }
}
