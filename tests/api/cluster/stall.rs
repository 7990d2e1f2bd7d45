//! A stalled media consumer: Deepgram keeps reading the caller's audio but never answers, for
//! 60 s, while the caller keeps talking into the socket. The audio held for replay stops at its
//! bound, every frame dropped beyond it is counted, and the process's memory stays flat.

use super::{rss_kb, sample};
use crate::helpers::{spawn_voice_app, wait_until, VoiceSetup};
use iace::sim::caller::{CallerScript, CallerScripts};
use iace::sim::deepgram::DeepgramFaults;
use std::time::Duration;

const NUMBER: &str = "+15550311002";
/// `deepgram.replay_buffer_ms` for the test: small, so the bound is reached early in the stall.
const REPLAY_MS: u64 = 2_000;
const STALL: Duration = Duration::from_secs(60);
/// Growth of the test process's resident memory allowed over the stall. Unbounded, the
/// engine's copies of the caller's audio alone grow by far less than this in 60 s; what it
/// guards is the order of magnitude (a leak per frame, a queue that never drains).
const RSS_BOUND_KB: u64 = 16 * 1024;

#[actix_web::test]
async fn a_stalled_speech_to_text_drops_and_counts_old_audio_and_memory_stays_flat() {
    let _exclusive = super::process_exclusive().await;
    // The caller talks (speech and pauses) for longer than the stall, then hangs up.
    let mut script = CallerScript::new().wait_for_agent(15_000);
    for _ in 0..40 {
        script = script
            .say_for("Hello, is anybody there?", 1_500)
            .silence(500);
    }
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script.hang_up())), |s| {
        s.deepgram.replay_buffer_ms = REPLAY_MS;
    })
    .await;
    let t = app.create_tenant(NUMBER).await;
    let voice = app.voice.as_ref().expect("voice sims");
    let ccid = app.telnyx.place_inbound_call("+15559990312", NUMBER);
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;
    wait_until(
        Duration::from_secs(20),
        "speech-to-text connected",
        || async { (!voice.deepgram.connections().is_empty()).then_some(()) },
    )
    .await;

    voice.deepgram.set_faults(DeepgramFaults {
        stall: true,
        ..Default::default()
    });
    let dropped = "iace_stt_audio_dropped_total{reason=\"unconfirmed\"}";
    let frames_in = "iace_media_frames_total{direction=\"in\"}";
    // Past the bound (2 s of audio), then measure from a steady state.
    actix_web::rt::time::sleep(Duration::from_millis(REPLAY_MS + 3_000)).await;
    let (rss_start, dropped_start, in_start) = (
        rss_kb(),
        sample(&app, dropped).await,
        sample(&app, frames_in).await,
    );
    let mut rss_max = rss_start;
    let mut dropped_half = 0;
    for tick in 1..=12 {
        actix_web::rt::time::sleep(STALL / 12).await;
        rss_max = rss_max.max(rss_kb());
        if tick == 6 {
            dropped_half = sample(&app, dropped).await;
        }
    }
    let (dropped_end, in_end) = (sample(&app, dropped).await, sample(&app, frames_in).await);

    // Frames kept arriving (50 a second) and the call is still live.
    let arrived = in_end - in_start;
    assert!(arrived >= 40 * 60, "only {arrived} frames arrived in 60 s");
    let (_, call) = app.get_json(&t.token, &format!("/api/v1/calls/{id}")).await;
    assert_eq!(call["status"], "streaming", "{call}");
    // Everything beyond the bound was dropped and counted, all through the stall.
    let lost = dropped_end - dropped_start;
    assert!(
        lost + 25 >= arrived,
        "{lost} frames dropped of {arrived} arrived past the bound"
    );
    assert!(
        dropped_half > dropped_start && dropped_end > dropped_half,
        "drops stopped: {dropped_start} → {dropped_half} → {dropped_end}"
    );
    // Memory stays flat.
    let growth = rss_max.saturating_sub(rss_start);
    assert!(
        growth <= RSS_BOUND_KB,
        "resident memory grew {growth} kB over the stall ({rss_start} kB → {rss_max} kB)"
    );

    // The stall cost no reconnect: the one socket carried the audio all along.
    assert_eq!(voice.deepgram.connections().len(), 1);
}
