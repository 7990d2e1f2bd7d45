//! `iace bench calls` at a small size: the real binary runs an engine child process and two
//! simulated calls, and its report is well formed and consistent (frames add up, every stage is
//! measured, the simulators' delays are the ones asked for). No wall-clock limit is asserted.

use crate::helpers::run_bench;
use serde_json::Value;

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

#[test]
fn bench_calls_runs_small_and_reports_consistent_numbers() {
    let (r, stdout) = run_bench(&[
        "calls",
        "--calls",
        "2",
        "--duration",
        "14",
        "--ramp",
        "1",
        "--sample-every",
        "1",
        "--tts-first-audio-ms",
        "50",
    ]);
    assert!(stdout.contains("| engine: per-turn overhead"), "{stdout}");

    assert_eq!(f(&r, "/calls"), 2.0);
    assert_eq!(f(&r, "/calls_established"), 2.0, "{stdout}");
    assert_eq!(f(&r, "/calls_completed"), 2.0, "{stdout}");
    assert_eq!(f(&r, "/errors"), 0.0, "{stdout}");
    assert!(r["engine_exited_cleanly"].as_bool().unwrap());

    // Every caller turn was answered, and each answer's latency was measured.
    let turns = f(&r, "/caller_turns");
    assert!(turns >= 2.0, "{stdout}");
    assert_eq!(f(&r, "/turns_answered"), turns, "{stdout}");
    assert_eq!(f(&r, "/turns_unanswered"), 0.0);
    assert_eq!(f(&r, "/turn_latency/count"), turns);

    // Frames add up both ways.
    let sent = f(&r, "/frames/caller_sent");
    assert!(sent > 100.0, "{stdout}");
    assert_eq!(
        f(&r, "/frames/engine_received") + f(&r, "/frames/lost_in"),
        sent
    );
    let out_sent = f(&r, "/frames/engine_sent");
    assert!(out_sent > 0.0);
    assert_eq!(
        f(&r, "/frames/caller_received") + f(&r, "/frames/lost_out"),
        out_sent
    );
    assert_eq!(f(&r, "/frames/rejected"), 0.0);

    // Every engine stage was observed, with ordered percentiles.
    for stage in [
        "media_in_to_stt",
        "final_to_llm",
        "llm_sentence_to_tts",
        "tts_to_media",
        "turn_overhead",
    ] {
        let at = |p: &str| f(&r, &format!("/stages/{stage}/{p}"));
        assert!(at("count") > 0.0, "{stage} not observed: {stdout}");
        assert!(
            at("p50_ms") <= at("p95_ms") && at("p95_ms") <= at("p99_ms"),
            "{stage}"
        );
    }
    assert_eq!(f(&r, "/stages/turn_overhead/count"), turns);

    // The simulators' delays are the ones asked for: (300 endpointing - one 20 ms frame) +
    // (350 + 3 token gaps of 5 ms) + 50.
    assert_eq!(f(&r, "/simulator_delays/tts_first_audio_ms"), 50.0);
    assert_eq!(f(&r, "/simulator_delays/total_ms"), 280.0 + 365.0 + 50.0);
    assert_eq!(
        f(&r, "/turn_latency_minus_simulators/p50_ms"),
        f(&r, "/turn_latency/p50_ms") - 695.0
    );

    // The engine's cost was sampled from its process.
    assert!(f(&r, "/engine/cpu_secs") > 0.0);
    assert!(f(&r, "/engine/rss_idle_kib") > 0.0);
    assert!(f(&r, "/engine/rss_peak_kib") >= f(&r, "/engine/rss_idle_kib"));
    let memory = r["memory"].as_array().expect("memory samples");
    assert!(memory.len() >= 5, "{stdout}");
    assert!(f(&r, "/memory_trend/samples") >= 3.0);
}
