//! The call's watchdogs with small configured limits: a silent caller is asked whether they
//! are still there and then hung up (`silence`), never while the agent is thinking; a provider
//! that stalls (accepts the request, never answers) gives the call up within the stall limit.

use crate::calls::event_types;
use crate::conversation::utterances;
use crate::helpers::{spawn_voice_app, Tenant, TestApp, VoiceSetup};
use iace::sim::caller::{CallerScript, CallerScripts};
use iace::sim::cartesia::CartesiaFaults;
use iace::sim::deepgram::DeepgramFaults;
use iace::sim::groq::{GroqFaults, GroqSimConfig};
use iace::sim::telnyx::SimCallState;
use serde_json::Value;
use std::time::Duration;

const NUMBER: &str = "+15550810001";

fn texts(call: &Value, speaker: &str) -> Vec<String> {
    utterances(call, speaker)
        .iter()
        .map(|u| u["text"].as_str().unwrap().to_owned())
        .collect()
}

fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value.as_str().unwrap().parse().unwrap()
}

/// The recorded `engine.*` events of `event_type`, in order.
fn events<'a>(call: &'a Value, event_type: &str) -> Vec<&'a Value> {
    call["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == event_type)
        .collect()
}

/// Waits for the engine to end the call at Telnyx; on timeout, fails with what the call did.
async fn wait_for_our_hangup(app: &TestApp, t: &Tenant, id: uuid::Uuid, ccid: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.telnyx.call(ccid).map(|c| c.state) != Some(SimCallState::Ended) {
        if tokio::time::Instant::now() > deadline {
            let call = app.recorded_call(t, id).await;
            let commands: Vec<String> = app
                .telnyx
                .commands()
                .into_iter()
                .map(|c| format!("{} {}", c.action, c.status))
                .collect();
            panic!(
                "the engine did not hang up: {:?}\ncommands {commands:?}\n{call}",
                event_types(&call)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn a_silent_caller_is_asked_if_still_there_then_hung_up_but_never_while_the_agent_thinks() {
    const LIMIT_SECS: u64 = 2;
    let script = CallerScript::new()
        .wait_for_agent(8_000)
        .say("I have a question about my bill.")
        .silence(120_000)
        .hang_up();
    let setup = VoiceSetup {
        // The model thinks for twice the silence limit: the caller must not be asked then.
        groq: GroqSimConfig {
            time_to_first_token: Duration::from_secs(2 * LIMIT_SECS),
            ..GroqSimConfig::default()
        },
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |s| {
        s.calls.silence_limit_secs = LIMIT_SECS;
        s.calls.media_check_interval_ms = 200;
    })
    .await;
    let t = app.create_tenant(NUMBER).await;
    let ccid = app.telnyx.place_inbound_call("+15559990811", NUMBER);
    let id = app.call_id_for(&t, &ccid).await;
    wait_for_our_hangup(&app, &t, id, &ccid).await;
    app.wait_for_status(&t, id, "ended").await;
    let call = app.recorded_call(&t, id).await;

    assert_eq!(call["end_reason"], "silence", "{call}");
    assert_eq!(call["outcome"], "abandoned", "{call}");
    assert_eq!(
        app.telnyx.call(&ccid).unwrap().hangup_source.as_deref(),
        Some("callee"),
        "we hung up"
    );
    let agent = texts(&call, "agent");
    assert_eq!(agent.len(), 3, "greeting, reply, question: {agent:?}");
    assert_eq!(agent[2], "Are you still there?", "{agent:?}");
    assert_eq!(texts(&call, "caller").len(), 1, "{call}");
    // Asked once, hung up once, a whole limit of silence after the question.
    let silence = events(&call, "engine.silence");
    let actions: Vec<&str> = silence
        .iter()
        .map(|e| e["payload"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["asked", "hang_up"], "{call}");
    for e in &silence {
        let quiet_ms = e["payload"]["quiet_ms"].as_u64().unwrap();
        assert!(quiet_ms >= LIMIT_SECS * 1000, "{e}");
    }
    let waited = time(&silence[1]["occurred_at"]) - time(&silence[0]["occurred_at"]);
    assert!(
        waited >= chrono::Duration::seconds(LIMIT_SECS as i64),
        "the second limit ran from the question: {waited}"
    );
}

#[actix_web::test]
async fn all_providers_down_or_stalled_the_call_ends_within_the_stall_limit_of_the_callers_last_words(
) {
    const LIMIT_SECS: i64 = 2;
    let script = CallerScript::new().silence(120_000).hang_up();
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        s.calls.stall_limit_secs = LIMIT_SECS as u64;
        s.calls.media_check_interval_ms = 200;
        // Telnyx speech is timed by its length: keep the last line short in time.
        s.calls.fallback_speech_ms_per_char = 10;
        s.breakers.failures_to_open = 2;
        s.calls.max_duration_secs = 600;
    })
    .await;
    let voice = app.voice.as_ref().unwrap();
    voice.deepgram.set_faults(DeepgramFaults {
        down: true,
        ..Default::default()
    });
    voice.cartesia.set_faults(CartesiaFaults {
        down: true,
        ..Default::default()
    });
    // Groq takes every request and never answers (well past its own request timeout).
    voice.groq.set_faults(GroqFaults {
        stall: Some(Duration::from_secs(300)),
        ..Default::default()
    });
    app.telnyx
        .set_transcripts(vec!["Hello, is anyone there?".to_owned()]);
    // No escalation number: the call given up is hung up, not transferred.
    let agent = serde_json::json!({
        "name": "Support",
        "system_prompt": "You help callers.",
        "greeting": "Hello, how can I help?",
        "voice_id": "voice-1",
        "phone_numbers": [NUMBER],
    });
    let t = app.create_tenant_with_agent(NUMBER, &agent).await;
    let ccid = app.telnyx.place_inbound_call("+15559990812", NUMBER);
    let id = app.call_id_for(&t, &ccid).await;
    wait_for_our_hangup(&app, &t, id, &ccid).await;
    app.wait_for_status(&t, id, "ended").await;
    let call = app.recorded_call(&t, id).await;

    assert_eq!(call["outcome"], "failed", "{call}");
    assert_eq!(call["end_reason"], "provider_failure", "{call}");
    let stall = events(&call, "engine.stall");
    assert_eq!(stall.len(), 1, "{call}");
    assert_eq!(stall[0]["payload"]["stage"], "llm");
    let failed = events(&call, "engine.call_failed");
    assert_eq!(failed[0]["payload"]["stage"], "llm");
    assert!(event_types(&call).contains(&"engine.tts_fallback".to_owned()));
    // The caller heard the last line (through Telnyx: Cartesia is down).
    let spoken: Vec<String> = app
        .telnyx
        .call(&ccid)
        .unwrap()
        .spoken
        .into_iter()
        .map(|s| s.text)
        .collect();
    assert!(
        spoken.last().unwrap().ends_with("Goodbye."),
        "last line: {spoken:?}"
    );
    // From the caller's last words to the recorded end: the stall limit, the short last line
    // and the hang-up round trip; never the time limit, never a silent wait.
    let last_words = events(&call, "call.transcription")
        .last()
        .map(|e| time(&e["occurred_at"]))
        .expect("the caller's words came through Telnyx transcription");
    let ended = time(&call["ended_at"]);
    let gap = ended - last_words;
    let slack = chrono::Duration::seconds(6);
    assert!(
        gap >= chrono::Duration::seconds(LIMIT_SECS),
        "it waited for the limit first: {gap}"
    );
    assert!(
        gap <= chrono::Duration::seconds(LIMIT_SECS) + slack,
        "ended {gap} after the caller's last words"
    );
}
