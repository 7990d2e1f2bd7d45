//! The ops listener: `/metrics` and `/admin/*` answer there and not on the public port, and
//! the HTTP method label stays bounded.

use crate::helpers::spawn_app;

#[actix_web::test]
async fn metrics_are_served_on_the_ops_port_and_not_on_the_public_port() {
    let app = spawn_app().await;
    assert_eq!(app.get("/metrics").await.status(), 404);
    let res = app.ops_get("/metrics").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("iace_live_calls"), "{text}");
    // The ops listener serves nothing of the public API.
    assert_eq!(app.ops_get("/health").await.status(), 404);
}

#[actix_web::test]
async fn random_http_methods_do_not_grow_metrics() {
    let app = spawn_app().await;
    for n in 0..5 {
        let method = reqwest::Method::from_bytes(format!("BREW{n}").as_bytes()).unwrap();
        let res = app
            .client
            .request(method, format!("{}/health", app.address))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    let text = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(!text.contains("BREW"), "{text}");
    let other: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("iace_http_requests_total{") && l.contains(r#"method="other""#))
        .collect();
    assert_eq!(other.len(), 1, "{other:?}");
    assert!(other[0].ends_with(" 5"), "{other:?}");
}

/// The sum of the samples of `name` whose labels include every `k="v"` of `labels` (0 when
/// none): `name{...}` lines, or `name value` for an unlabelled family.
pub(crate) fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (family, rest) = match series.split_once('{') {
                Some((f, rest)) => (f, rest),
                None => (series, ""),
            };
            (family == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

async fn scrape(app: &crate::helpers::TestApp) -> String {
    app.ops_get("/metrics").await.text().await.unwrap()
}

/// One scripted inbound call (a sentence, then 0 pressed for a human, over a Deepgram socket
/// that drops once) moves every launch family: calls, duration, turn latency, sentiment,
/// escalations, provider requests, errors and reconnects, database query time, jobs.
#[actix_web::test]
async fn a_scripted_call_moves_the_launch_metric_families() {
    use crate::helpers::{spawn_voice_app, wait_until, VoiceSetup};
    use iace::sim::caller::{CallerScript, CallerScripts};
    use iace::sim::groq::{GroqRule, GroqSimConfig};
    use std::time::Duration;

    const NUMBER: &str = "+15550301301";
    let script = CallerScript::new()
        .wait_for_agent(15_000)
        .say("Hi, my internet keeps dropping every evening.")
        .wait_for_agent(15_000)
        .dtmf("0")
        .silence(9000)
        .hang_up();
    let setup = VoiceSetup {
        groq: GroqSimConfig {
            rules: vec![GroqRule::new(
                "dropping",
                "I'm sorry to hear that. Please restart your router.",
            )],
            time_to_first_token: Duration::from_millis(100),
            ..GroqSimConfig::default()
        },
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |s| s.learning.workers = 1).await;
    let voice = app.voice.as_ref().unwrap();
    voice
        .deepgram
        .set_faults(iace::sim::deepgram::DeepgramFaults {
            drop_after_frames: Some(60),
            ..Default::default()
        });
    let before = scrape(&app).await;
    assert_eq!(metric_sum(&before, "iace_calls_started_total", &[]), 0.0);
    assert_eq!(
        metric_sum(&before, "iace_jobs", &[("kind", "summarize_call")]),
        0.0
    );
    assert_eq!(
        metric_sum(&before, "iace_call_duration_seconds_count", &[]),
        0.0
    );

    let t = app.create_tenant(NUMBER).await;
    let ccid = app.telnyx.place_inbound_call("+15559991302", NUMBER);
    let id = app.call_id_for(&t, &ccid).await;
    let call = app.finish_scripted_call(&t, &ccid, id).await;
    assert_eq!(call["outcome"], "escalated", "{call}");

    let text = wait_until(
        Duration::from_secs(60),
        "job gauge and call end",
        || async {
            let text = scrape(&app).await;
            (metric_sum(&text, "iace_calls_ended_total", &[]) >= 1.0
                && metric_sum(&text, "iace_jobs", &[("kind", "summarize_call")]) >= 1.0)
                .then_some(text)
        },
    )
    .await;
    let m = |name: &str, labels: &[(&str, &str)]| metric_sum(&text, name, labels);
    assert_eq!(
        m("iace_calls_started_total", &[("direction", "inbound")]),
        1.0
    );
    assert_eq!(
        m("iace_calls_ended_total", &[("outcome", "escalated")]),
        1.0,
        "{text}"
    );
    assert_eq!(m("iace_call_duration_seconds_count", &[]), 1.0);
    assert!(
        m("iace_call_duration_seconds_sum", &[]) > 1.0,
        "answered for seconds"
    );
    assert!(m("iace_turn_latency_seconds_count", &[]) >= 1.0, "{text}");
    assert_eq!(m("iace_call_sentiment_count", &[]), 1.0, "{text}");
    assert_eq!(m("iace_escalations_total", &[("cause", "dtmf_0")]), 1.0);
    // Jobs by kind and state, both from fixed sets.
    assert!(
        m("iace_jobs", &[("kind", "summarize_call")]) >= 1.0,
        "{text}"
    );
    let kinds = [
        "summarize_call",
        "extract_patterns",
        "write_memory",
        "other",
    ];
    let states = ["pending", "running", "succeeded", "failed", "other"];
    for line in text.lines().filter(|l| l.starts_with("iace_jobs{")) {
        assert!(
            kinds
                .iter()
                .any(|k| line.contains(&format!("kind=\"{k}\"")))
                && states
                    .iter()
                    .any(|s| line.contains(&format!("state=\"{s}\""))),
            "{line}"
        );
    }
    for provider in ["telnyx", "deepgram", "cartesia", "groq_chat"] {
        assert!(
            m(
                "iace_provider_request_duration_seconds_count",
                &[("provider", provider), ("result", "ok")]
            ) >= 1.0,
            "{provider}: {text}"
        );
    }
    assert!(
        m(
            "iace_provider_reconnects_total",
            &[("provider", "deepgram")]
        ) >= 1.0,
        "{text}"
    );
    assert!(m("iace_provider_errors_total", &[("provider", "deepgram")]) >= 1.0);
    for query in ["insert_calls", "update_calls", "insert_utterances"] {
        assert!(
            m("iace_db_query_duration_seconds_count", &[("query", query)]) >= 1.0,
            "{query}: {text}"
        );
    }
    // Bounded labels: no query label carries a value or an id.
    assert!(!text.contains(&id.to_string()), "no call id in any label");
}
