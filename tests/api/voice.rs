//! The speech and language providers: each real client against its in-process simulator over a
//! real socket (Deepgram listen, Cartesia TTS, Groq chat completions).

use futures_util::{Stream, StreamExt};
use iace::config::{DeepgramSettings, Secret};
use iace::domain::audio::{Codec, FRAME_BYTES};
use iace::providers::deepgram::{DeepgramClient, ListenParams, SttEvent};
use iace::providers::ProviderError;
use iace::sim::deepgram::{DeepgramFaults, DeepgramSim, DeepgramSimConfig};
use std::time::Duration;

/// Waits for the next item of `stream`, failing the test after `secs` seconds.
async fn next_within<S: Stream + Unpin>(stream: &mut S, secs: u64) -> Option<S::Item> {
    tokio::time::timeout(Duration::from_secs(secs), stream.next())
        .await
        .expect("the provider answered in time")
}

// ---------------------------------------------------------------------------------------------
// Deepgram

fn deepgram_settings(base_url: String, key: &str) -> DeepgramSettings {
    DeepgramSettings {
        api_key: Secret::new(key),
        base_url,
        model: "nova-3".into(),
        language: "en-US".into(),
        endpointing_ms: 300,
        utterance_end_ms: 1000,
        connect_timeout_ms: 2000,
        keepalive_interval_ms: 4000,
    }
}

fn start_deepgram(config: DeepgramSimConfig) -> (DeepgramSim, DeepgramClient) {
    let sim = DeepgramSim::start(DeepgramSimConfig {
        api_key: Some("dg-test-key".into()),
        ..config
    })
    .expect("deepgram simulator starts");
    let client = DeepgramClient::new(&deepgram_settings(sim.base_url(), "dg-test-key"));
    (sim, client)
}

/// Speech and silence as 20 ms frames, the way a call delivers them.
fn frames(codec: Codec, pattern: &[(bool, u32)]) -> Vec<bytes::Bytes> {
    let audio: Vec<u8> = pattern
        .iter()
        .flat_map(|&(speech, ms)| {
            if speech {
                codec.speech_like(ms)
            } else {
                codec.silence(ms)
            }
        })
        .collect();
    audio
        .chunks(FRAME_BYTES)
        .map(bytes::Bytes::copy_from_slice)
        .collect()
}

/// Streams one utterance and checks the full Deepgram sequence comes back, then closes.
async fn deepgram_hears_one_utterance(codec: Codec) {
    let (sim, client) = start_deepgram(DeepgramSimConfig {
        script: vec!["I would like to book an appointment.".into()],
        ..DeepgramSimConfig::default()
    });
    let settings = deepgram_settings(sim.base_url(), "dg-test-key");
    let mut conn = client
        .connect(&ListenParams::for_call(&settings, codec))
        .await
        .expect("connects");
    assert!(
        conn.request_id.is_some(),
        "dg-request-id is read from the handshake"
    );
    for frame in frames(codec, &[(false, 200), (true, 1200), (false, 1600)]) {
        conn.sender.audio(frame).expect("audio queued");
    }

    let mut seen = Vec::new();
    let mut interims = 0;
    let mut final_transcript = None;
    loop {
        let event = next_within(&mut conn.events, 5).await.expect("stream open");
        match event.expect("no error") {
            SttEvent::SpeechStarted(s) => {
                assert!((s.timestamp - 0.2).abs() < 0.03, "speech starts at 200 ms");
                seen.push("speech_started");
            }
            SttEvent::Results(r) if !r.is_final => {
                assert!(!r.speech_final);
                interims += 1;
                seen.push("interim");
            }
            SttEvent::Results(r) => {
                assert!(r.speech_final, "endpointing marks the end of speech");
                assert_eq!(r.words().len(), 7);
                final_transcript = Some(r.transcript().to_owned());
                seen.push("final");
            }
            SttEvent::UtteranceEnd(u) => {
                assert!(u.last_word_end > 1.3 && u.last_word_end < 1.5);
                seen.push("utterance_end");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.dedup();
    assert_eq!(
        seen,
        vec!["speech_started", "interim", "final", "utterance_end"]
    );
    assert!(interims >= 2, "interims while speaking: {interims}");
    assert_eq!(
        final_transcript.as_deref(),
        Some("I would like to book an appointment.")
    );

    conn.sender.close_stream().expect("queued");
    let metadata = next_within(&mut conn.events, 5).await.expect("metadata");
    assert!(matches!(metadata, Ok(SttEvent::Metadata(m)) if (m.duration - 3.0).abs() < 0.05));
    let closed = next_within(&mut conn.events, 5).await.expect("close");
    assert!(matches!(closed, Ok(SttEvent::Closed(c)) if c.is_normal()));
    assert!(
        next_within(&mut conn.events, 5).await.is_none(),
        "stream ends"
    );

    let recorded = sim.connections();
    assert_eq!(recorded.len(), 1);
    let conn = &recorded[0];
    assert!(conn.authorized);
    assert_eq!(conn.param("encoding"), Some(codec.deepgram_encoding()));
    assert_eq!(conn.param("sample_rate"), Some("8000"));
    assert_eq!(conn.param("endpointing"), Some("300"));
    assert_eq!(conn.audio.len(), 3000 * 8, "every byte arrived untouched");
    assert_eq!(conn.frames, 150);
    assert_eq!(conn.controls, vec![r#"{"type":"CloseStream"}"#]);
    assert_eq!(sim.utterances_heard(), 1);
}

#[actix_web::test]
async fn deepgram_streams_a_mulaw_utterance_and_receives_interim_final_and_utterance_end() {
    deepgram_hears_one_utterance(Codec::Pcmu).await;
}

#[actix_web::test]
async fn deepgram_streams_an_alaw_utterance_and_receives_interim_final_and_utterance_end() {
    deepgram_hears_one_utterance(Codec::Pcma).await;
}

#[actix_web::test]
async fn deepgram_keep_alive_holds_the_socket_open_and_silence_times_it_out() {
    let (sim, client) = start_deepgram(DeepgramSimConfig {
        idle_timeout: Duration::from_millis(400),
        ..DeepgramSimConfig::default()
    });
    let settings = deepgram_settings(sim.base_url(), "dg-test-key");
    let params = ListenParams::for_call(&settings, Codec::Pcmu);

    let mut kept = client.connect(&params).await.expect("connects");
    let mut idle = client.connect(&params).await.expect("connects");
    for _ in 0..8 {
        kept.sender.keep_alive().expect("queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The idle socket got no KeepAlive: the server closed it with NET-0001.
    let closed = next_within(&mut idle.events, 5).await.expect("close");
    match closed {
        Ok(SttEvent::Closed(close)) => {
            assert_eq!(close.code, Some(1011));
            assert!(close.reason.unwrap_or_default().contains("NET-0001"));
        }
        other => panic!("expected an idle close, got {other:?}"),
    }
    // The other one is still open after 800 ms, and CloseStream closes it normally.
    assert!(!kept.sender.is_closed());
    kept.sender.close_stream().expect("queued");
    assert!(matches!(
        next_within(&mut kept.events, 5).await,
        Some(Ok(SttEvent::Metadata(_)))
    ));
    assert!(matches!(
        next_within(&mut kept.events, 5).await,
        Some(Ok(SttEvent::Closed(c))) if c.is_normal()
    ));
    let recorded = sim.connections();
    assert_eq!(
        recorded[0].controls.len(),
        9,
        "8 KeepAlive and a CloseStream"
    );
    assert_eq!(
        recorded[1].ended.as_deref(),
        Some("idle timeout (NET-0001)")
    );
}

#[actix_web::test]
async fn deepgram_dropped_socket_is_reported_as_an_error_and_a_new_connection_works() {
    let (sim, client) = start_deepgram(DeepgramSimConfig {
        script: vec!["Are you still there?".into()],
        ..DeepgramSimConfig::default()
    });
    sim.set_faults(DeepgramFaults {
        drop_after_frames: Some(10),
        ..DeepgramFaults::default()
    });
    let settings = deepgram_settings(sim.base_url(), "dg-test-key");
    let params = ListenParams::for_call(&settings, Codec::Pcmu);
    let mut conn = client.connect(&params).await.expect("connects");
    let audio = frames(Codec::Pcmu, &[(true, 600), (false, 800)]);
    for frame in audio.iter().take(10) {
        conn.sender.audio(frame.clone()).expect("queued");
    }
    let mut last = None;
    while let Some(event) = next_within(&mut conn.events, 5).await {
        last = Some(event);
    }
    assert!(
        matches!(last, Some(Err(ProviderError::Disconnected { .. }))),
        "the stream ends with a lost connection, got {last:?}"
    );
    assert!(conn.sender.audio(audio[10].clone()).is_err() || conn.sender.is_closed());

    // The fault was used once: a new connection hears the whole utterance.
    let mut again = client.connect(&params).await.expect("reconnects");
    for frame in audio {
        again.sender.audio(frame).expect("queued");
    }
    loop {
        match next_within(&mut again.events, 5).await.expect("open") {
            Ok(SttEvent::Results(r)) if r.is_final => {
                assert_eq!(r.transcript(), "Are you still there?");
                break;
            }
            Ok(_) => {}
            Err(err) => panic!("unexpected error {err}"),
        }
    }
    assert_eq!(
        sim.connections()[0].ended.as_deref(),
        Some("dropped (fault)")
    );
}

#[actix_web::test]
async fn deepgram_wrong_key_is_refused_at_the_handshake() {
    let (sim, _) = start_deepgram(DeepgramSimConfig::default());
    let settings = deepgram_settings(sim.base_url(), "wrong-key");
    let client = DeepgramClient::new(&settings);
    let err = client
        .connect(&ListenParams::for_call(&settings, Codec::Pcmu))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ProviderError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(sim.connections().is_empty());
}
