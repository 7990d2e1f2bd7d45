//! Providers failing under live calls, through the simulators' fault switches: each stage falls
//! back (Telnyx speak for Cartesia, Telnyx transcription for Deepgram, the fallback model then
//! the apology for Groq) and a call that cannot go on ends with a last line, a transfer or a
//! hang-up and the outcome `failed`, never in silence.

use crate::calls::event_types;
use crate::conversation::utterances;
use crate::helpers::{spawn_voice_app, wait_until, Tenant, TestApp, VoiceSetup};
use iace::config::Settings;
use iace::sim::caller::{CallerScript, CallerScripts};
use iace::sim::cartesia::CartesiaFaults;
use iace::sim::deepgram::DeepgramFaults;
use iace::sim::groq::{GroqFaults, GroqSim, GroqSimConfig};
use iace::sim::telnyx::SimCallState;
use serde_json::Value;
use std::time::Duration;

const NUMBER: &str = "+15550800001";
const FALLBACK_REPLY: &str = "This is the small fallback model speaking.";
const MAIN_REPLY: &str = "I understand. How else can I help you today?";

/// Breakers that open after two failures and probe again after `open_ms`.
fn quick_breakers(s: &mut Settings, open_ms: u64) {
    s.breakers.failures_to_open = 2;
    s.breakers.open_ms = open_ms;
    s.breakers.open_max_ms = open_ms;
    s.calls.max_duration_secs = 600;
}

/// A second Groq simulator standing for the fallback model, answering [`FALLBACK_REPLY`].
fn fallback_model_sim() -> GroqSim {
    GroqSim::start(GroqSimConfig {
        default_reply: FALLBACK_REPLY.into(),
        ..GroqSimConfig::default()
    })
    .unwrap()
}

/// A caller who listens to the greeting, then says `sentences` one after another.
fn caller_saying(sentences: &[&str], wait_ms: u32) -> CallerScript {
    let mut script = CallerScript::new().wait_for_agent(wait_ms);
    for s in sentences {
        script = script.say(*s).wait_for_agent(wait_ms);
    }
    script.hang_up()
}

/// Places one call, waits for its caller to finish, hangs the leg up, and returns the call's
/// detail once recorded, with the Telnyx call id.
async fn run_call(app: &TestApp, t: &Tenant) -> (Value, String) {
    let ccid = app.telnyx.place_inbound_call("+15559990801", NUMBER);
    let id = app.call_id_for(t, &ccid).await;
    let voice = app.voice.as_ref().unwrap();
    let outcomes = voice
        .callers
        .wait_for_outcomes(1, Duration::from_secs(90))
        .await;
    assert!(outcomes[0].is_ok(), "caller: {:?}", outcomes[0]);
    app.telnyx.caller_hangs_up(&ccid);
    app.wait_for_status(t, id, "ended").await;
    (app.recorded_call(t, id).await, ccid)
}

fn spoken(app: &TestApp, ccid: &str) -> Vec<String> {
    app.telnyx
        .call(ccid)
        .unwrap()
        .spoken
        .into_iter()
        .map(|s| s.text)
        .collect()
}

/// How many `transcription_start` commands Telnyx accepted.
fn transcriptions_started(app: &TestApp) -> usize {
    app.telnyx
        .commands()
        .into_iter()
        .filter(|c| c.action == "transcription_start" && c.status == 200)
        .count()
}

fn cartesia_down(app: &TestApp) {
    let voice = app.voice.as_ref().unwrap();
    voice.cartesia.set_faults(CartesiaFaults {
        down: true,
        ..Default::default()
    });
}

fn deepgram_down(app: &TestApp) {
    let voice = app.voice.as_ref().unwrap();
    voice.deepgram.set_faults(DeepgramFaults {
        down: true,
        ..Default::default()
    });
}

fn groq_down(app: &TestApp) {
    let voice = app.voice.as_ref().unwrap();
    voice.groq.set_faults(GroqFaults {
        down: true,
        ..Default::default()
    });
}

#[actix_web::test]
async fn cartesia_down_for_a_whole_call_the_caller_hears_every_answer_through_telnyx_speak() {
    let script = caller_saying(&["My internet is down.", "It is still down."], 4_000);
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        quick_breakers(s, 60_000);
    })
    .await;
    cartesia_down(&app);
    let t = app.create_tenant(NUMBER).await;
    let (call, ccid) = run_call(&app, &t).await;

    let heard = spoken(&app, &ccid);
    assert_eq!(
        heard,
        ["Hello, how can I help?", MAIN_REPLY, MAIN_REPLY],
        "greeting and both replies said by Telnyx"
    );
    let info = app.telnyx.call(&ccid).unwrap();
    assert!(info.spoken.iter().all(|s| s.voice == "Telnyx.KokoroTTS.af"));
    assert_eq!(info.spoken[0].language.as_deref(), Some("en"));
    // Not one audio frame came through the media socket, yet every turn was answered.
    let agent = utterances(&call, "agent");
    assert_eq!(agent.len(), 3, "{call}");
    assert_eq!(utterances(&call, "caller").len(), 2, "{call}");
    assert!(event_types(&call).contains(&"engine.tts_fallback".to_owned()));
    assert_eq!(call["outcome"], "resolved", "{call}");
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"iace_circuit_breaker_state{provider="cartesia"} 1"#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn deepgram_refusing_connections_caller_turns_arrive_through_telnyx_transcription() {
    let sentences = ["My router keeps blinking red.", "Yes, I restarted it."];
    let script = caller_saying(&sentences, 6_000);
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        quick_breakers(s, 60_000);
    })
    .await;
    deepgram_down(&app);
    app.telnyx
        .set_transcripts(sentences.iter().map(|s| s.to_string()).collect());
    let t = app.create_tenant(NUMBER).await;
    let (call, _) = run_call(&app, &t).await;

    let callers: Vec<String> = utterances(&call, "caller")
        .iter()
        .map(|u| u["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(callers, sentences, "{call}");
    // Each was answered (greeting + two replies).
    assert_eq!(utterances(&call, "agent").len(), 3, "{call}");
    assert_eq!(transcriptions_started(&app), 1);
    assert!(event_types(&call).contains(&"engine.stt_fallback".to_owned()));
    assert!(event_types(&call).contains(&"call.transcription".to_owned()));
}

#[actix_web::test]
async fn groq_500_for_10_s_the_fallback_model_answers_then_groq_again() {
    let fallback = fallback_model_sim();
    let sentences = [
        "First question.",
        "Second question.",
        "Third question.",
        "Fourth question.",
        "Fifth question.",
    ];
    let mut script = CallerScript::new().wait_for_agent(4_000);
    for s in sentences {
        script = script.say(s).wait_for_agent(4_000).silence(2_000);
    }
    let fallback_url = fallback.base_url();
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script.hang_up())), |s| {
        quick_breakers(s, 1_500);
        s.groq.fallback_model = "llama-3.1-8b-instant".into();
        s.groq.fallback_base_url = fallback_url;
    })
    .await;
    groq_down(&app);
    let voice = app.voice.as_ref().unwrap();
    let t = app.create_tenant(NUMBER).await;
    let ccid = app.telnyx.place_inbound_call("+15559990802", NUMBER);
    let id = app.call_id_for(&t, &ccid).await;

    // Watch the chat breaker through /metrics while Groq is down for 10 s, then back (its
    // answers held 1.5 s, so the half-open probe is visible).
    let mut seen = Vec::new();
    let watch = |seen: &mut Vec<i64>, text: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(r#"iace_circuit_breaker_state{provider="groq_chat"}"#));
        if let Some(v) = line.and_then(|l| l.rsplit(' ').next()?.parse().ok()) {
            if seen.last() != Some(&v) {
                seen.push(v);
            }
        }
    };
    let back_at = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < back_at {
        watch(
            &mut seen,
            &app.ops_get("/metrics").await.text().await.unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    voice.groq.set_faults(GroqFaults {
        stall: Some(Duration::from_millis(1_500)),
        ..Default::default()
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !(seen.last() == Some(&0) && seen.contains(&2)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "breaker states: {seen:?}"
        );
        watch(
            &mut seen,
            &app.ops_get("/metrics").await.text().await.unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(&seen[..2], &[0, 1], "closed, then open: {seen:?}");
    assert!(seen.contains(&2), "half-open seen: {seen:?}");
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"iace_circuit_breaker_trips_total{provider="groq_chat"}"#));

    let outcomes = voice
        .callers
        .wait_for_outcomes(1, Duration::from_secs(90))
        .await;
    assert!(outcomes[0].is_ok());
    app.telnyx.caller_hangs_up(&ccid);
    app.wait_for_status(&t, id, "ended").await;
    let call = app.recorded_call(&t, id).await;
    let replies: Vec<String> = utterances(&call, "agent")
        .iter()
        .skip(1) // the greeting
        .map(|u| u["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        replies.len(),
        sentences.len(),
        "every turn answered: {call}"
    );
    assert_eq!(replies[0], FALLBACK_REPLY, "{replies:?}");
    assert_eq!(replies.last().unwrap(), MAIN_REPLY, "{replies:?}");
    let models: Vec<String> = fallback
        .requests()
        .iter()
        .filter_map(|r| r.chat().map(|c| c.model))
        .collect();
    assert!(models.iter().all(|m| m == "llama-3.1-8b-instant") && !models.is_empty());
}

/// Deepgram, Cartesia and Groq all down: Telnyx transcribes and speaks, the LLM cannot answer.
async fn all_three_down(escalation_number: Option<&str>) -> (TestApp, Value, String) {
    let sentences = ["Hello?", "Is anyone there?", "Hello again?"];
    let script = caller_saying(&sentences, 6_000);
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        quick_breakers(s, 60_000);
    })
    .await;
    deepgram_down(&app);
    cartesia_down(&app);
    groq_down(&app);
    app.telnyx
        .set_transcripts(sentences.iter().map(|s| s.to_string()).collect());
    let agent = serde_json::json!({
        "name": "Support",
        "system_prompt": "You help callers.",
        "greeting": "Hello, how can I help?",
        "voice_id": "voice-1",
        "phone_numbers": [NUMBER],
        "escalation_number": escalation_number,
        "spoken_lines": { "goodbye": "We are sorry, please call again later. Goodbye." }
    });
    let t = app.create_tenant_with_agent(NUMBER, &agent).await;
    let ccid = app.telnyx.place_inbound_call("+15559990803", NUMBER);
    let id = app.call_id_for(&t, &ccid).await;
    // The engine gives the call up itself (transfer or hang-up), long before any time limit.
    wait_until(
        Duration::from_secs(40),
        "the engine to transfer or hang up",
        || async {
            let info = app.telnyx.call(&ccid)?;
            (info.transferred_to.is_some() || info.state == SimCallState::Ended).then_some(())
        },
    )
    .await;
    // A transferred caller talks to the human, then hangs up.
    app.telnyx.caller_hangs_up(&ccid);
    app.wait_for_status(&t, id, "ended").await;
    let call = app.recorded_call(&t, id).await;
    (app, call, ccid)
}

#[actix_web::test]
async fn all_three_down_with_an_escalation_number_the_caller_hears_a_last_line_and_is_transferred()
{
    let (app, call, ccid) = all_three_down(Some("+15557770000")).await;
    let heard = spoken(&app, &ccid);
    assert_eq!(heard[0], "Hello, how can I help?");
    assert!(
        heard
            .contains(&"Sorry, I'm having trouble right now. Could you say that again?".to_owned()),
        "{heard:?}"
    );
    assert_eq!(
        heard.last().unwrap(),
        "I'm sorry, I'm having a technical problem. Let me connect you with a colleague."
    );
    assert_eq!(
        app.telnyx.call(&ccid).unwrap().transferred_to.as_deref(),
        Some("+15557770000")
    );
    assert_eq!(call["outcome"], "failed", "{call}");
    assert_eq!(call["end_reason"], "provider_failure", "{call}");
    let failed = call["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "engine.call_failed")
        .expect("the failure is in the history");
    assert_eq!(failed["payload"]["stage"], "llm");
}

#[actix_web::test]
async fn all_three_down_without_an_escalation_number_the_caller_hears_goodbye_and_is_hung_up() {
    let (app, call, ccid) = all_three_down(None).await;
    let heard = spoken(&app, &ccid);
    assert_eq!(
        heard.last().unwrap(),
        "We are sorry, please call again later. Goodbye.",
        "the profile's own line: {heard:?}"
    );
    let info = app.telnyx.call(&ccid).unwrap();
    assert_eq!(info.transferred_to, None);
    assert_eq!(info.hangup_source.as_deref(), Some("callee"), "we hung up");
    assert_eq!(call["outcome"], "failed", "{call}");
    assert_eq!(call["end_reason"], "provider_failure", "{call}");
}

#[actix_web::test]
async fn a_line_said_by_telnyx_ends_at_its_call_speak_ended_not_at_the_length_estimate() {
    let script = caller_saying(&["My internet is down."], 4_000);
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        quick_breakers(s, 60_000);
        // The estimate alone would hold the greeting for 44 s: only the webhook can end it.
        s.calls.fallback_speech_ms_per_char = 2_000;
    })
    .await;
    cartesia_down(&app);
    let t = app.create_tenant(NUMBER).await;
    let (call, ccid) = run_call(&app, &t).await;

    assert_eq!(spoken(&app, &ccid), ["Hello, how can I help?", MAIN_REPLY]);
    let agent = utterances(&call, "agent");
    assert_eq!(agent.len(), 2, "{call}");
    for u in &agent {
        let lasted = u["ended_ms"].as_i64().unwrap() - u["started_ms"].as_i64().unwrap();
        assert!(lasted < 20_000, "ended by call.speak.ended: {u}");
    }
    // The greeting had ended when the caller spoke: nothing was talked over, nothing stopped.
    assert_eq!(agent[0]["interrupted"], false, "{call}");
    assert!(!event_types(&call).contains(&"engine.barge_in".to_owned()));
    assert!(app
        .telnyx
        .commands()
        .iter()
        .all(|c| c.action != "playback_stop"));
    let ended = event_types(&call)
        .iter()
        .filter(|e| *e == "call.speak.ended")
        .count();
    assert!(ended >= 2, "{call}");
}

#[actix_web::test]
async fn caller_speech_over_a_telnyx_spoken_line_stops_it_and_the_turn_goes_on() {
    let script = CallerScript::new()
        .silence(1_500)
        .say("I need help with my router.")
        .wait_for_agent(6_000)
        .hang_up();
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        quick_breakers(s, 60_000);
        s.calls.fallback_speech_ms_per_char = 2_000;
    })
    .await;
    cartesia_down(&app);
    // Telnyx speaks slowly: the greeting still plays when the caller starts talking.
    app.telnyx.set_speech_ms_per_char(400);
    let t = app.create_tenant(NUMBER).await;
    let (call, ccid) = run_call(&app, &t).await;

    let stops: Vec<_> = app
        .telnyx
        .commands()
        .into_iter()
        .filter(|c| c.action == "playback_stop")
        .collect();
    assert!(!stops.is_empty(), "the greeting was stopped at Telnyx");
    assert!(stops.iter().all(|c| c.status == 200));
    let info = app.telnyx.call(&ccid).unwrap();
    assert_eq!(info.spoken[0].text, "Hello, how can I help?");
    assert!(info.spoken[0].stopped, "{:?}", info.spoken);
    // The turn went on: the caller's words were heard and answered.
    assert_eq!(info.spoken[1].text, MAIN_REPLY, "{:?}", info.spoken);
    assert_eq!(
        utterances(&call, "caller")[0]["text"],
        "I need help with my router."
    );
    let agent = utterances(&call, "agent");
    assert_eq!(agent[0]["interrupted"], true, "{call}");
    assert!(event_types(&call).contains(&"engine.barge_in".to_owned()));
}

#[actix_web::test]
async fn a_groq_stream_cut_mid_response_counts_on_the_breaker_and_the_turn_falls_back() {
    let fallback = fallback_model_sim();
    let fallback_url = fallback.base_url();
    let script = caller_saying(&["My internet is down."], 6_000);
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        // Counted, not opened: the breaker must see the cut, the turn must survive it.
        s.breakers.failures_to_open = 5;
        s.calls.max_duration_secs = 600;
        s.groq.max_retries = 0;
        s.groq.fallback_model = "llama-3.1-8b-instant".into();
        s.groq.fallback_base_url = fallback_url;
    })
    .await;
    // The answer's head arrives (a success for the breaker), then the connection is cut.
    app.voice.as_ref().unwrap().groq.set_faults(GroqFaults {
        cut_streams: 1,
        ..Default::default()
    });
    let t = app.create_tenant(NUMBER).await;
    let (call, _) = run_call(&app, &t).await;

    let replies: Vec<String> = utterances(&call, "agent")
        .iter()
        .skip(1) // the greeting
        .map(|u| u["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        replies,
        [FALLBACK_REPLY],
        "{:?} {}",
        event_types(&call),
        call["utterances"]
    );
    assert!(event_types(&call).contains(&"engine.llm_fallback".to_owned()));
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"iace_circuit_breaker_failures_total{provider="groq_chat"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"iace_circuit_breaker_state{provider="groq_chat"} 0"#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn deepgram_dropping_its_socket_mid_call_counts_on_the_breaker_and_the_call_falls_back() {
    let sentences = ["My router keeps blinking red.", "Yes, I restarted it."];
    let script = caller_saying(&sentences, 6_000);
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        quick_breakers(s, 60_000);
        // Each socket opens (a success) and then drops (a failure): the run of failures never
        // grows, the share of them does.
        s.breakers.failure_rate_to_open = 0.5;
        s.breakers.min_requests_in_window = 4;
    })
    .await;
    // Every socket drops after a few frames, without a close frame.
    app.voice
        .as_ref()
        .unwrap()
        .deepgram
        .set_faults(DeepgramFaults {
            drop_after_frames: Some(10),
            drop_repeats: 100,
            ..Default::default()
        });
    app.telnyx
        .set_transcripts(sentences.iter().map(|s| s.to_string()).collect());
    let t = app.create_tenant(NUMBER).await;
    let (call, _) = run_call(&app, &t).await;

    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{provider=\"deepgram\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("iace_circuit_breaker_failures_total") >= 2.0,
        "{metrics}"
    );
    assert!(
        value("iace_circuit_breaker_trips_total") >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        app.state.breakers.deepgram.snapshot().state,
        "open",
        "{metrics}"
    );
    assert!(
        app.voice.as_ref().unwrap().deepgram.connections().len() >= 2,
        "the drops came from the simulator"
    );
    // The open breaker refused the next reconnect: the call went on with Telnyx transcription.
    assert!(
        event_types(&call).contains(&"engine.stt_fallback".to_owned()),
        "{:?}",
        event_types(&call)
    );
    assert_eq!(transcriptions_started(&app), 1);
    let callers: Vec<String> = utterances(&call, "caller")
        .iter()
        .map(|u| u["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(!callers.is_empty(), "{call}");
    assert!(
        callers.iter().all(|c| sentences.contains(&c.as_str())),
        "{callers:?}"
    );
}
