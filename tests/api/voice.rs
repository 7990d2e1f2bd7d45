//! The speech and language providers: each real client against its in-process simulator over a
//! real socket (Deepgram listen, Cartesia TTS, Groq chat completions).

use futures_util::{Stream, StreamExt};
use iace::config::{CartesiaSettings, DeepgramSettings, GroqSettings, Secret};
use iace::domain::audio::{Codec, FRAME_BYTES, SPEECH_ENERGY_THRESHOLD};
use iace::domain::text::SentenceSplitter;
use iace::providers::cartesia::{CartesiaClient, TtsEvent};
use iace::providers::deepgram::{DeepgramClient, ListenParams, SttEvent};
use iace::providers::groq::{ChatMessage, GroqClient, Role};
use iace::providers::ProviderError;
use iace::sim::cartesia::{CartesiaFaults, CartesiaSim, CartesiaSimConfig};
use iace::sim::deepgram::{DeepgramFaults, DeepgramSim, DeepgramSimConfig};
use iace::sim::groq::{GroqFaults, GroqRule, GroqSim, GroqSimConfig};
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
        replay_buffer_ms: 120_000,
        unconfirmed_buffer_ms: 20_000,
        audio_frames_per_message: 1,
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

#[actix_web::test]
async fn deepgram_stalled_server_sends_nothing_and_an_absent_server_is_a_connect_error() {
    let (sim, client) = start_deepgram(DeepgramSimConfig {
        script: vec!["Hello?".into()],
        ..DeepgramSimConfig::default()
    });
    sim.set_faults(DeepgramFaults {
        stall: true,
        ..DeepgramFaults::default()
    });
    let settings = deepgram_settings(sim.base_url(), "dg-test-key");
    let mut conn = client
        .connect(&ListenParams::for_call(&settings, Codec::Pcmu))
        .await
        .expect("connects");
    for frame in frames(Codec::Pcmu, &[(true, 500), (false, 500)]) {
        conn.sender.audio(frame).expect("queued");
    }
    let quiet = tokio::time::timeout(Duration::from_millis(500), conn.events.next()).await;
    assert!(
        quiet.is_err(),
        "a stalled server answers nothing: {quiet:?}"
    );
    assert_eq!(
        sim.connections()[0].frames,
        50,
        "but it still reads the audio"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = deepgram_settings(format!("ws://127.0.0.1:{port}"), "k");
    let err = DeepgramClient::new(&nowhere)
        .connect(&ListenParams::for_call(&nowhere, Codec::Pcmu))
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(err, ProviderError::Connect { .. }) && err.is_transient(),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Cartesia

fn start_cartesia(config: CartesiaSimConfig) -> (CartesiaSim, CartesiaClient) {
    let sim = CartesiaSim::start(CartesiaSimConfig {
        api_key: Some("cartesia-test-key".into()),
        ..config
    })
    .expect("cartesia simulator starts");
    let client = CartesiaClient::new(&CartesiaSettings {
        api_key: Secret::new("cartesia-test-key"),
        base_url: sim.base_url(),
        version: "2026-03-01".into(),
        model_id: "sonic-3".into(),
        voice_id: "voice-1".into(),
        language: "en".into(),
        max_buffer_delay_ms: 0,
        connect_timeout_ms: 2000,
    });
    (sim, client)
}

#[actix_web::test]
async fn cartesia_context_with_two_continued_sentences_yields_audio_timestamps_and_done() {
    let (sim, client) = start_cartesia(CartesiaSimConfig::default());
    let mut conn = client.connect().await.expect("connects");
    let codec = Codec::Pcmu;
    for (text, more) in [
        ("Hello there.", true),
        ("How can I help you today?", true),
        ("", false),
    ] {
        conn.sender
            .generate(client.request("turn-1", text, codec, more))
            .expect("queued");
    }

    let mut audio = Vec::new();
    let mut chunks = 0;
    let mut timestamps = Vec::new();
    loop {
        match next_within(&mut conn.events, 5)
            .await
            .expect("open")
            .expect("no error")
        {
            TtsEvent::Chunk(chunk) => {
                assert_eq!(chunk.context_id, "turn-1");
                let bytes = chunk.audio().expect("base64");
                assert!(
                    codec.energy(&bytes) > SPEECH_ENERGY_THRESHOLD,
                    "audible μ-law"
                );
                audio.extend(bytes);
                chunks += 1;
            }
            TtsEvent::Timestamps(t) => timestamps.push(t.word_timestamps),
            TtsEvent::Done(done) => {
                assert_eq!(done.context_id, "turn-1");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // 60 ms per character, each word counting one more for its gap: 13 + 26 characters.
    assert_eq!(
        audio.len(),
        (13 + 26) * 60 * 8,
        "audio length follows the text"
    );
    assert!(chunks >= 20, "sent as several chunks: {chunks}");
    assert_eq!(timestamps.len(), 2, "one timestamps message per sentence");
    assert_eq!(timestamps[0].words, vec!["Hello", "there."]);
    assert_eq!(timestamps[1].words.len(), 6);
    assert!(
        (timestamps[1].start[0] - 0.78).abs() < 1e-9,
        "timestamps run on across the context"
    );
    assert!((timestamps[1].end[5] - 2.34).abs() < 1e-9);

    let recorded = sim.connections();
    assert!(recorded[0].authorized);
    assert_eq!(recorded[0].version.as_deref(), Some("2026-03-01"));
    let continues: Vec<bool> = recorded[0].requests.iter().map(|r| r.continue_).collect();
    assert_eq!(continues, vec![true, true, false]);
    assert_eq!(recorded[0].requests[0].output_format.encoding, "pcm_mulaw");
    assert!(recorded[0].requests[0].add_timestamps);
}

#[actix_web::test]
async fn cartesia_cancel_stops_a_context_while_another_completes() {
    let (sim, client) = start_cartesia(CartesiaSimConfig {
        chunk_interval: Duration::from_millis(20),
        ..CartesiaSimConfig::default()
    });
    let mut conn = client.connect().await.expect("connects");
    let long = "This is a long answer that the caller will interrupt halfway through. ".repeat(4);
    conn.sender
        .generate(client.request("turn-a", &long, Codec::Pcma, false))
        .expect("queued");

    let mut a_chunks_after_cancel = 0;
    let mut cancelled = false;
    let mut b_audio = 0;
    loop {
        match next_within(&mut conn.events, 5)
            .await
            .expect("open")
            .expect("no error")
        {
            TtsEvent::Chunk(chunk) if chunk.context_id == "turn-a" => {
                if cancelled {
                    a_chunks_after_cancel += 1;
                } else {
                    conn.sender.cancel("turn-a").expect("queued");
                    conn.sender
                        .generate(client.request("turn-b", "Sorry, go ahead.", Codec::Pcma, false))
                        .expect("queued");
                    cancelled = true;
                }
            }
            TtsEvent::Chunk(chunk) => b_audio += chunk.audio().expect("base64").len(),
            TtsEvent::Done(done) => {
                assert_eq!(
                    done.context_id, "turn-b",
                    "a cancelled context never finishes"
                );
                break;
            }
            TtsEvent::Timestamps(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        a_chunks_after_cancel <= 2,
        "at most in-flight chunks: {a_chunks_after_cancel}"
    );
    assert_eq!(b_audio, (7 + 3 + 7) * 60 * 8);
    // Nothing more arrives for the cancelled context.
    let late = tokio::time::timeout(Duration::from_millis(300), conn.events.next()).await;
    assert!(late.is_err(), "no more messages: {late:?}");
    assert_eq!(sim.connections()[0].cancels, vec!["turn-a"]);
}

#[actix_web::test]
async fn cartesia_socket_dropped_mid_sentence_is_reported_as_an_error() {
    let (sim, client) = start_cartesia(CartesiaSimConfig::default());
    sim.set_faults(CartesiaFaults {
        drop_after_chunks: Some(3),
        ..CartesiaFaults::default()
    });
    let mut conn = client.connect().await.expect("connects");
    conn.sender
        .generate(client.request(
            "turn-1",
            "A sentence long enough for many chunks.",
            Codec::Pcmu,
            false,
        ))
        .expect("queued");
    let mut chunks = 0;
    let last = loop {
        match next_within(&mut conn.events, 5).await {
            Some(Ok(TtsEvent::Chunk(_))) => chunks += 1,
            Some(Ok(TtsEvent::Timestamps(_))) => {}
            other => break other,
        }
    };
    assert_eq!(chunks, 3);
    assert!(
        matches!(last, Some(Err(ProviderError::Disconnected { .. }))),
        "got {last:?}"
    );
    // A new connection works: the fault was used once.
    let mut again = client.connect().await.expect("reconnects");
    again
        .sender
        .generate(client.request("turn-2", "Hi.", Codec::Pcmu, false))
        .expect("queued");
    loop {
        match next_within(&mut again.events, 5)
            .await
            .expect("open")
            .expect("no error")
        {
            TtsEvent::Done(_) => break,
            _ => continue,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Groq

fn groq_settings(base_url: String, key: &str) -> GroqSettings {
    GroqSettings {
        api_key: Secret::new(key),
        base_url,
        model: "llama-3.3-70b-versatile".into(),
        request_timeout_ms: 2000,
        stream_idle_timeout_ms: 1000,
        sentiment_timeout_ms: 500,
        temperature: 0.3,
        max_completion_tokens: 200,
        max_retries: 1,
        fallback_model: String::new(),
        fallback_base_url: String::new(),
        fallback_api_key: Secret::new(""),
    }
}

fn start_groq(config: GroqSimConfig) -> (GroqSim, GroqClient) {
    let sim = GroqSim::start(GroqSimConfig {
        api_key: Some("groq-test-key".into()),
        ..config
    })
    .expect("groq simulator starts");
    let client = GroqClient::new(&groq_settings(sim.base_url(), "groq-test-key"));
    (sim, client)
}

#[actix_web::test]
async fn groq_streamed_tokens_are_cut_into_sentences_and_the_prompt_is_recorded() {
    let (sim, client) = start_groq(GroqSimConfig {
        rules: vec![GroqRule::new(
            "appointment",
            "Sure, Dr. Lee can see you at 3.5 p.m. on Friday. Does that work for you? Great!",
        )],
        time_to_first_token: Duration::from_millis(150),
        ..GroqSimConfig::default()
    });
    let request = client.chat_request(vec![
        ChatMessage::system("You are the receptionist of Acme Dental."),
        ChatMessage::assistant("Hello, how can I help?"),
        ChatMessage::user("I would like an appointment."),
    ]);
    let started = std::time::Instant::now();
    let mut tokens = client.stream(request).await.expect("stream opens");
    let mut splitter = SentenceSplitter::new();
    let mut sentences = Vec::new();
    let mut count = 0;
    let mut first_token_after = None;
    while let Some(token) = next_within(&mut tokens, 5).await {
        let token = token.expect("no error");
        first_token_after.get_or_insert_with(|| started.elapsed());
        count += 1;
        sentences.extend(splitter.push(&token));
    }
    sentences.extend(splitter.finish());
    assert!(count > 10, "streamed token by token: {count}");
    assert!(first_token_after.unwrap() >= Duration::from_millis(150));
    assert_eq!(
        sentences,
        vec![
            "Sure, Dr. Lee can see you at 3.5 p.m. on Friday.",
            "Does that work for you?",
            "Great!"
        ]
    );

    let recorded = sim.requests();
    assert_eq!(recorded.len(), 1);
    let sent = recorded[0].chat().expect("a chat request");
    assert!(sent.stream);
    assert_eq!(sent.model, "llama-3.3-70b-versatile");
    let roles: Vec<Role> = sent.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, vec![Role::System, Role::Assistant, Role::User]);
    assert_eq!(
        sent.messages[0].content,
        "You are the receptionist of Acme Dental."
    );
}

#[actix_web::test]
async fn a_finished_answer_stream_leaves_its_connection_for_the_next_request() {
    let (sim, client) = start_groq(GroqSimConfig {
        rules: vec![GroqRule::new("hours", "We open at nine. See you then!")],
        ..GroqSimConfig::default()
    });
    let request = client.chat_request(vec![ChatMessage::user("What are your hours?")]);
    for turn in 0..3 {
        let mut tokens = client.stream(request.clone()).await.expect("stream opens");
        let mut text = String::new();
        while let Some(token) = next_within(&mut tokens, 5).await {
            text.push_str(&token.expect("no error"));
        }
        assert_eq!(text, "We open at nine. See you then!", "turn {turn}");
        // The body's end is read by a task of its own once the answer is over; let it run.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A stream dropped at `[DONE]` with its body unread would close its connection, and each
    // turn would open a new one.
    assert_eq!(sim.requests().len(), 3);
    assert_eq!(
        sim.connections(),
        1,
        "every answer on the one pooled connection"
    );
}

#[derive(Debug, serde::Deserialize)]
struct Sentiment {
    score: f64,
    label: String,
}

#[actix_web::test]
async fn groq_json_mode_sentiment_answer_parses_into_a_type() {
    let (sim, client) = start_groq(GroqSimConfig {
        time_to_first_token: Duration::from_millis(20),
        ..GroqSimConfig::default()
    });
    let prompt = "Rate the caller's sentiment. Answer in JSON: {\"score\": -1..1, \"label\": ...}";
    let client = client.with_timeout(Duration::from_millis(500));
    let angry: Sentiment = client
        .complete_json(&client.chat_request(vec![
            ChatMessage::system(prompt),
            ChatMessage::user("This is ridiculous, I am furious and want a manager."),
        ]))
        .await
        .expect("sentiment");
    assert!(angry.score <= -0.5, "{angry:?}");
    assert_eq!(angry.label, "negative");
    let happy: Sentiment = client
        .complete_json(&client.chat_request(vec![
            ChatMessage::system(prompt),
            ChatMessage::user("Great, thanks so much!"),
        ]))
        .await
        .expect("sentiment");
    assert_eq!(happy.label, "positive");
    let sent = sim.requests()[0].body.clone();
    assert_eq!(
        sent["response_format"],
        serde_json::json!({"type": "json_object"})
    );
    assert_eq!(sent["stream"], serde_json::json!(false));
}

#[actix_web::test]
async fn groq_rate_limit_carries_retry_after_then_the_next_request_succeeds() {
    let (sim, client) = start_groq(GroqSimConfig {
        default_reply: "Happy to help.".into(),
        time_to_first_token: Duration::from_millis(10),
        ..GroqSimConfig::default()
    });
    sim.set_faults(GroqFaults {
        rate_limit_next: 1,
        retry_after_secs: 7,
        fail_next: 1,
        ..GroqFaults::default()
    });
    let request = client.chat_request(vec![ChatMessage::user("hi")]);
    let err = client.stream(request.clone()).await.err().expect("429");
    match err {
        ProviderError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    let err = client.complete(&request).await.expect_err("503");
    assert!(
        matches!(err, ProviderError::Server { status: 503, .. }) && err.is_transient(),
        "{err:?}"
    );
    let answer = client.complete(&request).await.expect("answers");
    assert_eq!(answer.content(), "Happy to help.");
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 503, 200]);
}

#[actix_web::test]
async fn groq_stall_times_out_and_a_wrong_key_is_refused() {
    let (sim, client) = start_groq(GroqSimConfig::default());
    sim.set_faults(GroqFaults {
        stall: Some(Duration::from_secs(3)),
        ..GroqFaults::default()
    });
    let request = client.chat_request(vec![ChatMessage::user("hello?")]);
    let err = client
        .clone()
        .with_timeout(Duration::from_millis(300))
        .complete(&request)
        .await
        .expect_err("times out");
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");

    sim.set_faults(GroqFaults::default());
    let wrong = GroqClient::new(&groq_settings(sim.base_url(), "wrong"));
    let err = wrong.complete(&request).await.expect_err("refused");
    assert!(
        matches!(err, ProviderError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
}
