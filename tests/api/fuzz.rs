//! Property tests of every parser that takes bytes from the network: the Telnyx webhook
//! signature check and envelope, media socket frames, Deepgram and Cartesia messages, Groq's SSE
//! stream and its chunks. Arbitrary and mutated valid inputs: no panic, bad input is an error
//! value, buffers stay bounded. `IACE_PROPTEST_CASES` sets the cases per property (default 2000,
//! what `scripts/test` runs); raise it for a longer search.

use base64::Engine as _;
use iace::providers::cartesia::TtsEvent;
use iace::providers::deepgram::SttEvent;
use iace::providers::groq::messages::ChatChunk;
use iace::providers::groq::sse::{SseParser, MAX_EVENT_BYTES};
use iace::providers::telnyx::media::InboundFrame;
use iace::providers::telnyx::webhook::{public_key_b64, sign_webhook, WebhookVerifier};
use iace::providers::telnyx::{SignatureError, WebhookEnvelope};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("IACE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const NOW: i64 = 1_790_000_000;

fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

const WEBHOOK: &str = r#"{"data":{"event_type":"call.initiated","id":"e1","occurred_at":"2026-11-27T10:00:00Z","payload":{"call_control_id":"v3:abc","direction":"incoming","from":"+15550001111","to":"+15550002222","state":"parked"},"record_type":"event"},"meta":{"attempt":1,"delivered_to":"http://x"}}"#;
const MEDIA: &str = r#"{"event":"media","sequence_number":"4","stream_id":"s1","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"////"}}"#;
const DEEPGRAM: &str = r#"{"type":"Results","channel_index":[0,1],"duration":1.0,"start":0.0,"is_final":true,"speech_final":true,"channel":{"alternatives":[{"transcript":"hello there","confidence":0.9,"words":[{"word":"hello","start":0.1,"end":0.4,"confidence":0.9}]}]}}"#;
const CARTESIA: &str =
    r#"{"type":"chunk","context_id":"c1","data":"AAAA","done":false,"status_code":206}"#;
const GROQ_CHUNK: &str = r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;

/// `text` with one byte changed at `at` (wrapping) to `to`.
fn mutate(text: &str, at: usize, to: u8) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    let i = at % bytes.len();
    bytes[i] = to;
    bytes
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn webhook_signature_check_never_panics_and_refuses_garbage(
        ts in proptest::option::of(".{0,24}"),
        sig in proptest::option::of(".{0,120}"),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let verifier = WebhookVerifier::new(&public_key_b64(&signing_key())).unwrap();
        let verdict = verifier.verify(ts.as_deref(), sig.as_deref(), &body, NOW, 300);
        prop_assert!(verdict.is_err());
    }

    #[test]
    fn a_signed_webhook_with_any_byte_changed_is_refused(at in 0usize..4096, to in any::<u8>()) {
        let key = signing_key();
        let verifier = WebhookVerifier::new(&public_key_b64(&key)).unwrap();
        let ts = NOW.to_string();
        let sig = sign_webhook(&key, NOW, WEBHOOK.as_bytes());
        prop_assert_eq!(verifier.verify(Some(&ts), Some(&sig), WEBHOOK.as_bytes(), NOW, 300), Ok(()));
        let body = mutate(WEBHOOK, at, to);
        if body != WEBHOOK.as_bytes() {
            let verdict = verifier.verify(Some(&ts), Some(&sig), &body, NOW, 300);
            prop_assert_eq!(verdict, Err(SignatureError::Invalid));
        }
        let mut raw = base64::engine::general_purpose::STANDARD.decode(&sig).unwrap();
        let i = at % raw.len();
        raw[i] ^= to | 1;
        let bad = base64::engine::general_purpose::STANDARD.encode(&raw);
        prop_assert!(verifier.verify(Some(&ts), Some(&bad), WEBHOOK.as_bytes(), NOW, 300).is_err());
    }

    #[test]
    fn network_json_parsers_take_arbitrary_bytes_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let _ = serde_json::from_slice::<WebhookEnvelope>(&bytes);
        let _ = serde_json::from_slice::<InboundFrame>(&bytes);
        let _ = serde_json::from_slice::<SttEvent>(&bytes);
        let _ = serde_json::from_slice::<TtsEvent>(&bytes);
        let _ = serde_json::from_slice::<ChatChunk>(&bytes);
    }

    #[test]
    fn mutated_valid_messages_parse_or_fail_cleanly(at in 0usize..4096, to in any::<u8>()) {
        if let Ok(envelope) = serde_json::from_slice::<WebhookEnvelope>(&mutate(WEBHOOK, at, to)) {
            let _ = envelope.data.kind();
            let _ = envelope.data.payload.client_state_decoded();
        }
        if let Ok(InboundFrame::Media { media, .. }) =
            serde_json::from_slice::<InboundFrame>(&mutate(MEDIA, at, to))
        {
            let _ = media.audio();
        }
        if let Ok(SttEvent::Results(r)) = serde_json::from_slice::<SttEvent>(&mutate(DEEPGRAM, at, to)) {
            let _ = (r.transcript(), r.words());
        }
        if let Ok(TtsEvent::Chunk(c)) = serde_json::from_slice::<TtsEvent>(&mutate(CARTESIA, at, to)) {
            let _ = c.audio();
        }
        let _ = serde_json::from_slice::<ChatChunk>(&mutate(GROQ_CHUNK, at, to));
    }

    #[test]
    fn media_payloads_of_any_text_decode_or_fail_cleanly(payload in ".{0,400}") {
        let frame = serde_json::json!({
            "event": "media", "stream_id": "s1",
            "media": { "track": "inbound", "payload": payload },
        });
        if let Ok(InboundFrame::Media { media, .. }) = serde_json::from_value::<InboundFrame>(frame) {
            let _ = media.audio();
        }
    }

    #[test]
    fn sse_events_do_not_depend_on_how_the_stream_is_split(
        datas in proptest::collection::vec("[^\r\n]{0,40}", 1..6),
        cuts in proptest::collection::vec(1usize..17, 1..40),
    ) {
        let stream: String = datas.iter().map(|d| format!("data: {d}\r\n\r\n")).collect();
        let mut whole = SseParser::new();
        let expected = whole.push(stream.as_bytes());
        let mut split = SseParser::new();
        let mut got = Vec::new();
        let mut rest = stream.as_bytes();
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*cut).min(rest.len()));
            got.extend(split.push(piece));
            rest = tail;
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn sse_parser_takes_arbitrary_bytes_and_stays_bounded(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 0..16),
    ) {
        let mut parser = SseParser::new();
        for chunk in &chunks {
            for event in parser.push(chunk) {
                prop_assert!(event.data.len() <= MAX_EVENT_BYTES);
            }
            prop_assert!(parser.buffered_bytes() <= 2 * MAX_EVENT_BYTES);
        }
    }
}

/// A server that never sends a newline cannot make the parser hold more than the cap.
#[test]
fn an_endless_sse_line_is_dropped_not_buffered() {
    let mut parser = SseParser::new();
    let junk = vec![b'x'; 64 * 1024];
    for _ in 0..(3 * MAX_EVENT_BYTES / junk.len()) {
        assert!(parser.push(&junk).is_empty());
        assert!(parser.buffered_bytes() <= MAX_EVENT_BYTES);
    }
    // The overlong line is skipped to its end; the stream goes on after it.
    let events = parser.push(b"\ndata: ok\n\n");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data, "ok");
}

/// The samples the mutations start from are valid, so the mutations explore near-valid input.
#[test]
fn the_valid_samples_parse() {
    assert!(serde_json::from_str::<WebhookEnvelope>(WEBHOOK).is_ok());
    assert!(matches!(
        serde_json::from_str::<InboundFrame>(MEDIA),
        Ok(InboundFrame::Media { .. })
    ));
    assert!(matches!(
        serde_json::from_str::<SttEvent>(DEEPGRAM),
        Ok(SttEvent::Results(_))
    ));
    assert!(matches!(
        serde_json::from_str::<TtsEvent>(CARTESIA),
        Ok(TtsEvent::Chunk(_))
    ));
    assert!(serde_json::from_str::<ChatChunk>(GROQ_CHUNK).is_ok());
}
