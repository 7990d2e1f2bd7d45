//! `iace bench api` and `iace bench idle` end to end at a small size: the real binary makes a
//! scratch database, starts an engine child on it and loads the calls API (or leaves the engine
//! idle); its JSON report must add up.

use crate::helpers::run_bench;
use serde_json::Value;

fn number(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {report}"))
}

#[test]
fn bench_api_reports_consistent_latencies_and_no_errors_over_seeded_calls() {
    let (report, stdout) = run_bench(&[
        "api",
        "--calls",
        "2000",
        "--orgs",
        "2",
        "--transcripts",
        "200",
        "--clients",
        "8",
        "--requests",
        "300",
        "--warmup",
        "0",
        "--db-pool",
        "4",
        "--engine-workers",
        "1",
    ]);

    assert_eq!(report["calls"], 2000);
    assert_eq!(report["orgs"], 2);
    assert!(number(&report, "transcripts") > 0.0, "{report}");
    assert_eq!(
        number(&report, "call_events"),
        number(&report, "transcripts") * 8.0
    );
    assert_eq!(report["requests"], 300, "{report}");
    assert_eq!(report["errors"], 0, "errors: {}", report["error_kinds"]);
    assert_eq!(
        number(&report, "requests"),
        number(&report, "completed") + number(&report, "errors")
    );

    let overall = &report["overall"];
    let (p50, p95, p99) = (
        number(overall, "p50_ms"),
        number(overall, "p95_ms"),
        number(overall, "p99_ms"),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{overall}");
    assert_eq!(overall["count"], report["completed"]);

    let kinds = report["kinds"].as_array().expect("kinds");
    let names: Vec<&str> = kinds.iter().filter_map(|k| k["kind"].as_str()).collect();
    assert_eq!(names, ["list", "list_filtered", "list_next", "detail"]);
    let requests: f64 = kinds.iter().map(|k| number(k, "requests")).sum();
    assert_eq!(requests, number(&report, "requests"));
    for kind in kinds {
        let latency = &kind["latency"];
        assert_eq!(latency["count"], kind["requests"], "{kind}");
        if number(kind, "requests") > 0.0 {
            assert!(
                number(latency, "p50_ms") <= number(latency, "p99_ms"),
                "{kind}"
            );
            assert!(number(kind, "mean_body_bytes") > 0.0, "{kind}");
        }
    }
    assert!(number(&report, "throughput_rps") > 0.0);
    assert!(number(&report, "engine_rss_kib_after") > 0.0);
    assert_eq!(report["engine_stopped_cleanly"], true, "{report}");
    assert!(stdout.contains("| detail"), "{stdout}");
}

#[test]
fn bench_idle_reports_the_engines_cpu_share_and_wake_ups_per_thread() {
    let (report, _) = run_bench(&["idle", "--duration", "3", "--settle", "1"]);

    assert!(number(&report, "duration_secs") >= 3.0, "{report}");
    let cpu = number(&report, "cpu_percent_of_core");
    assert!((0.0..=200.0).contains(&cpu), "{report}");
    assert!(number(&report, "rss_kib") > 0.0, "{report}");
    let threads = report["threads"].as_array().expect("threads");
    assert!(!threads.is_empty(), "{report}");
    let total: f64 = threads.iter().map(|t| number(t, "wakeups_per_sec")).sum();
    assert!(
        (total - number(&report, "wakeups_per_sec")).abs() < 1e-6,
        "{report}"
    );
    // Even an idle engine beats its heartbeat into Redis every second: something woke.
    assert!(total > 0.0, "{report}");
    assert!(
        threads.iter().all(|t| number(t, "count") >= 1.0
            && t["thread"].as_str().is_some_and(|n| !n.is_empty())
            && number(t, "cpu_us_per_sec") >= 0.0),
        "{report}"
    );
    // The engine's threads carry their names, so the table says which part woke.
    let names = |threads: &serde_json::Value| -> Vec<String> {
        threads
            .as_array()
            .expect("threads")
            .iter()
            .filter_map(|t| t["thread"].as_str().map(str::to_owned))
            .collect()
    };
    let engine_threads = names(&report["threads"]);
    for name in [
        "iace-http",
        "iace-ops",
        "iace-shard-0",
        "iace-recorder",
        "iace-jobs",
    ] {
        assert!(
            engine_threads.iter().any(|n| n == name),
            "{name} missing: {report}"
        );
    }
    // The stack floor is the two bare listeners, measured over the same window: their
    // workers wake (actix-http's date timer), and the engine's own share is the difference.
    let floor = &report["stack_floor"];
    let floor_threads = names(&floor["threads"]);
    assert!(
        floor_threads.iter().any(|n| n == "iace-http")
            && floor_threads.iter().any(|n| n == "iace-ops"),
        "{report}"
    );
    assert!(number(floor, "wakeups_per_sec") > 0.0, "{report}");
    let own = number(&report, "engine_own_percent_of_core");
    let expected = cpu - number(floor, "cpu_percent_of_core");
    assert!((own - expected).abs() < 1e-9, "{report}");
}

#[test]
fn bench_floor_relays_every_frame_of_every_stream_and_reports_its_cost() {
    assert_floor_relays_every_frame(&[], "bare");
}

#[test]
fn bench_floor_on_the_engines_stack_relays_every_frame_through_actix_ws_and_awc() {
    assert_floor_relays_every_frame(&["--stack"], "stack");
}

#[test]
fn bench_floor_with_the_media_socket_taken_raw_at_its_upgrade_relays_every_frame() {
    assert_floor_relays_every_frame(&["--stack", "--raw-media"], "stack-raw");
}

fn assert_floor_relays_every_frame(extra: &[&str], relay: &str) {
    let mut args = vec!["floor", "--streams", "4", "--duration", "2", "--ramp", "1"];
    args.extend_from_slice(extra);
    let (report, stdout) = run_bench(&args);
    assert_eq!(report["relay"], relay, "{report}");

    // 4 streams x 50 caller frames a second x 2 s come back through the relay, give or take
    // the frames in flight at the window's edges; agent frames are a tenth of that.
    let window = number(&report, "window_secs");
    let expected = 4.0 * 50.0 * window;
    let caller = number(&report, "caller_frames");
    assert!(
        (caller - expected).abs() <= 0.05 * expected + 8.0,
        "{report}"
    );
    let agent = number(&report, "agent_frames");
    assert!(
        (agent - expected / 10.0).abs() <= 0.1 * expected / 10.0 + 8.0,
        "{report}"
    );
    // Each round trip crossed the relay carrying its send time: positive, and (a misread
    // stamp would be hours) well under a second.
    let p50 = number(&report, "round_trip_p50_ms");
    assert!(
        p50 > 0.0 && p50 <= number(&report, "round_trip_max_ms") && p50 < 1000.0,
        "{report}"
    );
    assert!(number(&report, "relay_cpu_secs") >= 0.0, "{report}");
    assert!(stdout.contains("| CPU per call-second"), "{stdout}");
}

#[test]
fn bench_floor_with_the_conversation_answers_every_caller_turn_and_records_it() {
    // Two streams, a caller turn every 9 s: each stream's first turn (final at 3.1 s, done
    // within a second) ends well before the relay is killed at 8 s, and none starts a second.
    let (report, stdout) = run_bench(&[
        "floor",
        "--stack",
        "--raw-media",
        "--turns",
        "--streams",
        "2",
        "--duration",
        "5",
        "--ramp",
        "1",
        "--turn-every-ms",
        "9000",
    ]);
    assert_eq!(report["relay"], "stack-raw", "{report}");
    assert_eq!(report["turns"], true, "{report}");
    // Per caller turn: two retrievals (prefetches at 3 and 6 of 9 words), a reply and a
    // sentiment rating from Groq, the caller's and the agent's transcript rows; per call its
    // rolling sentiment.
    let tally = &report["tally"];
    assert_eq!(tally["embeddings"], 4, "{report}");
    assert_eq!(tally["llm_requests"], 4, "{report}");
    assert_eq!(tally["utterances"], 4, "{report}");
    assert_eq!(tally["scored_calls"], 2, "{report}");
    // The reply's audio reached the Telnyx side with a mark after each of its two sentences.
    let marks = number(&report, "marks_echoed");
    assert!(
        (2.0..=4.0).contains(&marks) && marks % 2.0 == 0.0,
        "{report}"
    );
    assert!(number(&report, "agent_frames") > 0.0, "{report}");
    assert!(stdout.contains("with the conversation"), "{stdout}");
}
