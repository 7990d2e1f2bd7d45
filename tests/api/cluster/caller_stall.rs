//! A caller whose phone stops reading its media socket while the agent speaks (a long answer):
//! the engine's outbound queue for that socket stays at its bound (older frames dropped and
//! counted), the call actors are not held up (a second call on the same registry shard gets
//! every turn answered meanwhile, and the stalled call still ends on its hang-up), and the
//! process's memory stays flat.

use super::{rss_kb, sample};
use crate::helpers::{spawn_voice_app, wait_until, VoiceSetup};
use iace::sim::caller::{CallerOutcome, CallerScript, CallerScripts};
use iace::sim::groq::{GroqRule, GroqSimConfig};
use std::time::Duration;

const STALLED: &str = "+15550311008";
const OTHER: &str = "+15550311009";
const STALL_MS: u32 = 60_000;
/// Queued outbound frames per socket in the test (a frame is a 100 ms chunk here).
const QUEUE: usize = 50;
/// Growth of the test process's resident memory allowed while the socket is stalled (as in the
/// stalled speech-to-text test): what it guards is the order of magnitude.
const RSS_BOUND_KB: u64 = 16 * 1024;
const TURNS: usize = 3;

/// About 20 minutes of speech at the simulators' pace: more than the stall lets through.
fn long_answer() -> String {
    (0..400)
        .map(|n| format!("Here is one more detail about our plans, detail number {n}."))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ccid_of(outcome: &CallerOutcome) -> String {
    outcome
        .as_ref()
        .map(|r| r.call_control_id.clone())
        .or_else(|e| e.report().map(|r| r.call_control_id.clone()).ok_or(()))
        .unwrap_or_default()
}

#[actix_web::test]
async fn a_caller_that_stops_reading_costs_bounded_memory_and_blocks_no_call() {
    let _exclusive = super::process_exclusive().await;
    let stall_sentence = "Please tell me everything about your plans.";
    let staller = CallerScript::new()
        .wait_for_agent(15_000)
        .say(stall_sentence)
        .stop_reading(STALL_MS)
        .hang_up();
    let mut other = CallerScript::new().wait_for_agent(15_000);
    for n in 0..TURNS {
        other = other
            .say(format!("Question number {n} about my invoice."))
            .wait_for_agent(20_000)
            .silence(500);
    }
    let other = other.hang_up();
    let setup = VoiceSetup {
        groq: GroqSimConfig {
            rules: vec![GroqRule::new("everything", long_answer())],
            tokens_per_second: 2_000.0,
            ..GroqSimConfig::default()
        },
        ..VoiceSetup::new(CallerScripts::new(other.clone()).with(STALLED, staller))
    };
    let app = spawn_voice_app(setup, |s| {
        s.calls.media_out_queue_frames = QUEUE;
        // Both calls on one shard (one thread): a call actor held up by its socket would hold
        // the other call up too.
        s.calls.registry_shards = 1;
    })
    .await;
    let voice = app.voice.as_ref().unwrap();
    // The answer's audio comes as fast as the simulator makes it (20x real time).
    voice.cartesia.set_first_chunk_latency(Duration::ZERO);
    let mut heard = vec![stall_sentence.to_owned()];
    heard.extend(other.utterances());
    voice.deepgram.set_script(heard);
    let stalled_t = app.create_tenant(STALLED).await;
    let other_t = app.create_tenant(OTHER).await;

    let stalled_ccid = app.telnyx.place_inbound_call("+15559990315", STALLED);
    let stalled_id = app.call_id_for(&stalled_t, &stalled_ccid).await;
    app.wait_for_status(&stalled_t, stalled_id, "streaming")
        .await;
    // The caller asked, stopped reading, and the answer is piling up: frames get dropped.
    let dropped = "iace_media_out_frames_dropped_total";
    let frames_out = "iace_media_frames_total{direction=\"out\"}";
    wait_until(
        Duration::from_secs(60),
        "outbound frames dropped",
        || async { (sample(&app, dropped).await > 0).then_some(()) },
    )
    .await;
    let (rss_start, dropped_start, out_start) = (
        rss_kb(),
        sample(&app, dropped).await,
        sample(&app, frames_out).await,
    );

    // A second call meanwhile, on the same shard: every turn answered.
    let other_ccid = app.telnyx.place_inbound_call("+15559990316", OTHER);
    let other_id = app.call_id_for(&other_t, &other_ccid).await;
    let mut rss_max = rss_start;
    let first = wait_until(Duration::from_secs(120), "the second caller done", || {
        rss_max = rss_max.max(rss_kb());
        let outcomes = voice.callers.outcomes();
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            outcomes.first().cloned()
        }
    })
    .await;
    assert_eq!(ccid_of(&first), other_ccid, "the second call ended first");
    let report = first.expect("the second caller finished its script");
    let answered = report.turn_latencies_ms().iter().flatten().count();
    assert_eq!(answered, TURNS, "{}", report.summary());
    app.telnyx.caller_hangs_up(&other_ccid);
    app.wait_for_status(&other_t, other_id, "ended").await;
    let (dropped_end, out_end) = (sample(&app, dropped).await, sample(&app, frames_out).await);
    rss_max = rss_max.max(rss_kb());

    // The stalled socket still stalled: what was sent into it beyond the queue and the socket
    // buffers was dropped and counted.
    let (_, call) = app
        .get_json(&stalled_t.token, &format!("/api/v1/calls/{stalled_id}"))
        .await;
    assert_eq!(call["status"], "streaming", "{call}");
    let sent = out_end - out_start;
    let lost = dropped_end - dropped_start;
    assert!(
        sent > 10 * QUEUE as u64,
        "only {sent} frames sent meanwhile"
    );
    // The socket buffers were full before (frames were being dropped): from then on, all was
    // dropped but the second call's own frames (a few short answers) and a queue's worth.
    assert!(
        lost + 4 * QUEUE as u64 >= sent,
        "{lost} frames dropped of {sent} sent into a stalled socket"
    );
    let growth = rss_max.saturating_sub(rss_start);
    assert!(
        growth <= RSS_BOUND_KB,
        "resident memory grew {growth} kB while {sent} frames went to a stalled socket \
         ({lost} dropped; {rss_start} kB → {rss_max} kB)"
    );

    // The stalled caller reads again and hangs up; its call ends on it (the actor answers).
    let outcomes = voice
        .callers
        .wait_for_outcomes(2, Duration::from_secs(120))
        .await;
    assert_eq!(outcomes.len(), 2, "the stalled caller finished");
    app.telnyx.caller_hangs_up(&stalled_ccid);
    let row = app.wait_for_status(&stalled_t, stalled_id, "ended").await;
    assert_eq!(row["end_reason"], "hangup", "{row}");
}
