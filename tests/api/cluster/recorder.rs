//! The recorder under its test-only fault hook: an actor that panics mid-stream of writes during
//! live calls is restarted with its queue (memory buffer and spill file), so every row lands once
//! and in order; a write that panics it twice is given up as poisoned, and the recorder goes on.

use super::sample;
use crate::conversation::utterances;
use crate::helpers::{spawn_voice_app, wait_until, Tenant, TestApp, VoiceSetup};
use iace::sim::caller::{CallerScript, CallerScripts};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

const NUMBER: &str = "+15550311004";
const POISON_NUMBER: &str = "+15550311005";

/// A caller who keeps talking for `turns` exchanges.
fn chatty_caller(turns: usize) -> CallerScript {
    let mut script = CallerScript::new().wait_for_agent(15_000);
    for n in 0..turns {
        script = script
            .say(format!("This is sentence number {n} about my invoice."))
            .wait_for_agent(15_000)
            .silence(1_000);
    }
    script.hang_up()
}

async fn wait_for_sample(app: &TestApp, series: &str, at_least: u64) {
    wait_until(Duration::from_secs(60), series, || async {
        (sample(app, series).await >= at_least).then_some(())
    })
    .await;
}

/// `turns` callers, with the recorder's fault hook on and a memory buffer of 2 writes (so writes
/// go through the spill file as well).
async fn app_with_calls(
    number: &str,
    calls: usize,
    turns: usize,
) -> (TestApp, Tenant, Vec<(String, Uuid)>) {
    let app = spawn_voice_app(
        VoiceSetup::new(CallerScripts::new(chatty_caller(turns))),
        |s| {
            s.calls.fault_injection = true;
            s.recorder.buffer_max_writes = 2;
            s.calls.no_media_timeout_secs = 120;
        },
    )
    .await;
    let sentences = chatty_caller(turns).utterances();
    let heard = sentences
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.clone(), calls))
        .collect();
    app.voice.as_ref().unwrap().deepgram.set_script(heard);
    let t = app.create_tenant(number).await;
    let mut placed = Vec::new();
    for n in 0..calls {
        let ccid = app
            .telnyx
            .place_inbound_call(&format!("+1555998{n:04}"), number);
        let id = app.call_id_for(&t, &ccid).await;
        placed.push((ccid, id));
    }
    (app, t, placed)
}

/// Every caller finished its script; then each call is hung up, ended, and everything written.
async fn finish(app: &TestApp, t: &Tenant, placed: &[(String, Uuid)], turns: usize) -> Vec<Value> {
    let voice = app.voice.as_ref().unwrap();
    let outcomes = voice
        .callers
        .wait_for_outcomes(placed.len(), Duration::from_secs(180))
        .await;
    for outcome in &outcomes {
        let report = outcome.as_ref().expect("caller finished its script");
        let answered = report.turn_latencies_ms().iter().flatten().count();
        assert_eq!(answered, turns, "every turn answered: {}", report.summary());
    }
    for (ccid, _) in placed {
        app.telnyx.caller_hangs_up(ccid);
    }
    let mut rows = Vec::new();
    for (_, id) in placed {
        app.wait_for_status(t, *id, "ended").await;
        rows.push(app.recorded_call(t, *id).await);
    }
    rows
}

#[actix_web::test]
async fn a_recorder_panicking_mid_stream_during_live_calls_loses_and_repeats_no_write() {
    let _exclusive = super::process_exclusive().await;
    const CALLS: usize = 4;
    const TURNS: usize = 4;
    let (app, t, placed) = app_with_calls(NUMBER, CALLS, TURNS).await;
    for (_, id) in &placed {
        app.wait_for_status(&t, *id, "streaming").await;
    }

    // Mid-conversation, twice: the next write the recorder applies panics it. Between the two,
    // the successor has retried that write (else the second panic could hit the same write,
    // which would then be poisoned, as the next test shows).
    for restarts in 1..=2 {
        app.state.recorder.inject_panic(1);
        wait_for_sample(&app, "iace_recorder_restarts_total", restarts).await;
        app.state
            .recorder
            .send(iace::actors::recorder::Flush)
            .await
            .expect("the successor flushes");
    }

    let rows = finish(&app, &t, &placed, TURNS).await;
    for call in &rows {
        let all = call["utterances"].as_array().unwrap();
        let seqs: Vec<i64> = all.iter().map(|u| u["seq"].as_i64().unwrap()).collect();
        // Greeting + the caller's sentences + the replies, numbered without a gap or a repeat.
        assert!(seqs.len() > 2 * TURNS, "{call}");
        assert_eq!(
            seqs,
            (seqs[0]..seqs[0] + seqs.len() as i64).collect::<Vec<_>>(),
            "no utterance lost or repeated: {call}"
        );
        let said: Vec<String> = utterances(call, "caller")
            .iter()
            .map(|u| u["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(said.len(), TURNS, "{call}");
        let starts: Vec<i64> = all
            .iter()
            .map(|u| u["started_ms"].as_i64().unwrap())
            .collect();
        assert!(
            starts.windows(2).all(|w| w[0] <= w[1]),
            "in order: {starts:?}"
        );
        // Each event once (an event written twice would show with a new id only).
        let events = call["events"].as_array().unwrap();
        let distinct: HashSet<String> = events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.as_object_mut().unwrap().remove("id");
                e.to_string()
            })
            .collect();
        assert_eq!(
            distinct.len(),
            events.len(),
            "an event written twice: {call}"
        );
        let ended = events
            .iter()
            .filter(|e| e["event_type"] == "call.hangup")
            .count();
        assert!(ended <= 1, "{call}");
        // The outcome: the end of the call, written after everything else.
        assert!(!call["ended_at"].is_null(), "{call}");
        assert!(!call["end_reason"].is_null(), "{call}");
    }

    // Metrics: the restarts, writes through the spill file, all back and nothing left waiting.
    assert_eq!(sample(&app, "iace_recorder_restarts_total").await, 2);
    assert_eq!(
        sample(&app, r#"iace_recorder_writes_total{kind="poisoned"}"#).await,
        0
    );
    let spilled = sample(&app, r#"iace_recorder_writes_total{kind="spilled"}"#).await;
    assert!(spilled > 0, "a buffer of 2 writes spilled the rest");
    assert_eq!(
        sample(&app, r#"iace_recorder_writes_total{kind="replayed"}"#).await,
        spilled,
        "every spilled write read back once"
    );
    assert_eq!(sample(&app, "iace_recorder_buffered_writes").await, 0);
    assert_eq!(sample(&app, "iace_recorder_spill_file_writes").await, 0);
    let spill = std::path::PathBuf::from(&app.settings.recorder.spill_file);
    assert_eq!(std::fs::metadata(&spill).map_or(0, |m| m.len()), 0);
}

#[actix_web::test]
async fn a_write_that_panics_the_recorder_twice_is_poisoned_and_the_rest_is_recorded() {
    let _exclusive = super::process_exclusive().await;
    const TURNS: usize = 3;
    let (app, t, placed) = app_with_calls(POISON_NUMBER, 1, TURNS).await;
    app.wait_for_status(&t, placed[0].1, "streaming").await;

    // The next write panics the recorder, and again when its successor retries it.
    app.state.recorder.inject_panic(2);
    wait_for_sample(&app, r#"iace_recorder_writes_total{kind="poisoned"}"#, 1).await;
    assert_eq!(sample(&app, "iace_recorder_restarts_total").await, 2);

    // Retried once, not forever: the recorder goes on and the call's end is written.
    let rows = finish(&app, &t, &placed, TURNS).await;
    let call = &rows[0];
    assert!(!call["ended_at"].is_null(), "{call}");
    assert_eq!(
        sample(&app, r#"iace_recorder_writes_total{kind="poisoned"}"#).await,
        1
    );
    assert_eq!(sample(&app, "iace_recorder_buffered_writes").await, 0);
}
