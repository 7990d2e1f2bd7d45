//! Trace export: a loopback OTLP/HTTP collector (a real HTTP server in this process) receives the
//! engine's spans, an incoming `traceparent` is continued, provider requests carry one, a call
//! is one trace (the request that created it, the call, its turns and their provider requests,
//! a linked post-call job), and a collector that never answers costs requests nothing (spans
//! dropped and counted).
//!
//! The tracing subscriber and the exporter are process-wide, so these tests take turns
//! ([`EXPORTER_TURN`]) and find their own spans by trace id (other tests' spans may arrive too).

use crate::helpers::{spawn_app_with, start_body_sink, ReceivedBodies, TestApp};
use iace::telemetry::trace_context::TraceContext;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

static EXPORTER_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Installs the application's global subscriber (with its exporter layer), as `iace serve`
/// does, with the log lines off; whichever test of this binary installs it first, every test
/// gets the same one.
fn install_subscriber() {
    let mut quiet = crate::helpers::test_settings();
    quiet.log.level = "off".into();
    iace::telemetry::init(&quiet);
}

/// A loopback OTLP/HTTP collector: its endpoint and what it received.
fn start_collector() -> (String, ReceivedBodies) {
    let (port, received) = start_body_sink("/v1/traces");
    (format!("http://127.0.0.1:{port}"), received)
}

/// Every exported span so far, each with its resource's attributes under `"resource"`.
fn spans(received: &ReceivedBodies) -> Vec<Value> {
    let bodies = received.lock().unwrap().clone();
    let mut out = Vec::new();
    for body in bodies {
        let body: Value = serde_json::from_slice(&body).expect("OTLP JSON body");
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    let mut span = span.clone();
                    span["resource"] = rs["resource"]["attributes"].clone();
                    out.push(span);
                }
            }
        }
    }
    out
}

/// Waits (generously) for an exported span that `matches`.
async fn wait_for_span(received: &ReceivedBodies, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(span) = spans(received).into_iter().find(|s| matches(s)) {
            return span;
        }
        assert!(
            Instant::now() < deadline,
            "no matching span exported; got {:#}",
            json!(spans(received))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attribute<'a>(attributes: &'a Value, key: &str) -> Option<&'a Value> {
    attributes
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

/// `GET /health` (with `query`) carrying `traceparent`; asserts the 200 and returns the response.
async fn health_with(app: &TestApp, query: &str, traceparent: &str) -> reqwest::Response {
    let res = app
        .client
        .get(format!("{}/health{query}", app.address))
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res
}

/// The exported span a provider request's `traceparent` names: a sampled `provider_request`
/// (SPAN_KIND_CLIENT) of `provider`.
async fn provider_span_of(received: &ReceivedBodies, traceparent: &str, provider: &str) -> Value {
    let ctx = TraceContext::parse(traceparent).expect("a valid traceparent");
    assert!(ctx.sampled);
    let trace = format!("{:032x}", ctx.trace_id);
    let span_id = format!("{:016x}", ctx.span_id);
    let span = wait_for_span(received, |s| {
        s["traceId"] == trace.as_str() && s["spanId"] == span_id.as_str()
    })
    .await;
    assert_eq!(span["name"], "provider_request");
    assert_eq!(span["kind"], 3, "SPAN_KIND_CLIENT");
    assert_eq!(
        attribute(&span["attributes"], "iace.provider"),
        Some(&json!({ "stringValue": provider }))
    );
    span
}

async fn app_exporting_to(endpoint: String) -> TestApp {
    install_subscriber();
    spawn_app_with(move |s| {
        s.telemetry.otlp_endpoint = endpoint;
        s.telemetry.trace_sample_ratio = 1.0;
    })
    .await
}

#[actix_web::test]
async fn an_incoming_traceparent_is_continued_by_the_exported_request_span() {
    let _turn = EXPORTER_TURN.lock().await;
    let (endpoint, received) = start_collector();
    let app = app_exporting_to(endpoint).await;
    let trace = format!("{:032x}", uuid::Uuid::new_v4().as_u128() | 1);
    let parent = "00f067aa0ba902b7";

    health_with(
        &app,
        "?token=query-secret-t1",
        &format!("00-{trace}-{parent}-01"),
    )
    .await;

    let span = wait_for_span(&received, |s| s["traceId"] == trace.as_str()).await;
    assert_eq!(span["parentSpanId"], parent);
    assert_eq!(span["name"], "http_request");
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
    let span_id = span["spanId"].as_str().unwrap();
    assert_eq!(span_id.len(), 16);
    assert_ne!(span_id, parent, "the request span gets its own id");
    assert_eq!(
        attribute(&span["attributes"], "http.route"),
        Some(&json!({ "stringValue": "/health" }))
    );
    assert_eq!(
        attribute(&span["attributes"], "http.response.status_code"),
        Some(&json!({ "intValue": "200" }))
    );
    let start: u128 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u128 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 0 && end >= start);
    assert_eq!(
        attribute(&span["resource"], "service.name"),
        Some(&json!({ "stringValue": "iace" }))
    );
    assert!(attribute(&span["resource"], "service.instance.id").is_some());
    assert!(
        !span.to_string().contains("query-secret"),
        "the query string never reaches a span: {span}"
    );

    // A request without a (valid) traceparent starts its own trace.
    let res = health_with(&app, "", &format!("00-{trace}-0000000000000000-01")).await;
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_owned();
    let fresh = wait_for_span(&received, |s| {
        attribute(&s["attributes"], "iace.request_id")
            == Some(&json!({ "stringValue": request_id.as_str() }))
    })
    .await;
    assert_ne!(fresh["traceId"], trace.as_str());
    assert!(fresh.get("parentSpanId").is_none(), "a root span: {fresh}");
}

#[actix_web::test]
async fn an_unsampled_incoming_traceparent_is_not_exported() {
    let _turn = EXPORTER_TURN.lock().await;
    let (endpoint, received) = start_collector();
    let app = app_exporting_to(endpoint).await;
    let unsampled = format!("{:032x}", uuid::Uuid::new_v4().as_u128() | 1);
    let sampled = format!("{:032x}", uuid::Uuid::new_v4().as_u128() | 1);
    for (trace, flags) in [(&unsampled, "00"), (&sampled, "01")] {
        let res = app
            .client
            .get(format!("{}/health", app.address))
            .header(
                "traceparent",
                format!("00-{trace}-00f067aa0ba902b7-{flags}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    // The sampled one was sent last; once it is in, the unsampled one would have been too.
    wait_for_span(&received, |s| s["traceId"] == sampled.as_str()).await;
    assert!(spans(&received)
        .iter()
        .all(|s| s["traceId"] != unsampled.as_str()));
}

#[actix_web::test]
async fn an_outbound_call_joins_its_api_requests_trace_and_its_commands_carry_it() {
    let _turn = EXPORTER_TURN.lock().await;
    let (endpoint, received) = start_collector();
    let app = app_exporting_to(endpoint).await;
    let t = app.create_tenant("+15550107701").await;

    let res = app
        .place_call(
            &t.token,
            &json!({ "to": "+15558887701", "from": "+15550107701", "agent_profile_id": t.agent_id }),
        )
        .await;
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().expect("the call's id").to_owned();

    let deadline = Instant::now() + Duration::from_secs(60);
    let dial = loop {
        if let Some(dial) = app
            .telnyx
            .commands()
            .into_iter()
            .find(|c| c.action == "dial")
        {
            break dial;
        }
        assert!(Instant::now() < deadline, "no dial reached the simulator");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let header = dial.traceparent.expect("the dial carries a traceparent");
    let span = provider_span_of(&received, &header, "telnyx").await;
    assert!(
        !span.to_string().contains("test-telnyx-key"),
        "no credential in a span"
    );

    // The dial is the call's child, the call the child of `POST /api/v1/calls` (its span is
    // exported once the call is over).
    let res = app
        .client
        .post(app.url(&format!("/api/v1/calls/{id}/hangup")))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "hang-up: {}", res.status());
    let call = wait_for_span(&received, |s| {
        s["name"] == "call"
            && attribute(&s["attributes"], "iace.call_id") == Some(&json!({ "stringValue": id }))
    })
    .await;
    assert_eq!(span["parentSpanId"], call["spanId"], "{span}");
    assert_eq!(span["traceId"], call["traceId"]);
    assert_eq!(
        attribute(&call["attributes"], "iace.call.direction"),
        Some(&json!({ "stringValue": "outbound" }))
    );
    let request = wait_for_span(&received, |s| {
        s["traceId"] == call["traceId"] && s["spanId"] == call["parentSpanId"]
    })
    .await;
    assert_eq!(request["name"], "http_request");
    assert_eq!(
        attribute(&request["attributes"], "http.route"),
        Some(&json!({ "stringValue": "/api/v1/calls" }))
    );
    assert_eq!(
        attribute(&request["attributes"], "http.request.method"),
        Some(&json!({ "stringValue": "POST" }))
    );
}

#[test]
fn telemetry_settings_out_of_range_are_refused() {
    let refused = |tweak: fn(&mut iace::config::Settings)| {
        let mut s = crate::helpers::test_settings();
        tweak(&mut s);
        s.validate().unwrap_err().to_string()
    };
    assert!(refused(|s| s.telemetry.trace_sample_ratio = 1.5).contains("trace_sample_ratio"));
    assert!(refused(|s| s.telemetry.trace_sample_ratio = -0.1).contains("trace_sample_ratio"));
    assert!(
        refused(|s| s.telemetry.otlp_endpoint = "https://tempo:4318".into())
            .contains("otlp_endpoint")
    );
    assert!(refused(|s| s.telemetry.trace_queue_spans = 0).contains("trace_queue_spans"));
    let mut ok = crate::helpers::test_settings();
    ok.telemetry.otlp_endpoint = "http://tempo:4318".into();
    ok.telemetry.trace_sample_ratio = 0.25;
    assert!(ok.validate().is_ok());
}

async fn dropped(app: &TestApp) -> f64 {
    let text = app.ops_get("/metrics").await.text().await.unwrap();
    crate::ops::metric_sum(&text, "iace_trace_spans_dropped_total", &[])
}

#[actix_web::test]
async fn a_collector_that_never_answers_drops_spans_and_does_not_block_requests() {
    let _turn = EXPORTER_TURN.lock().await;
    // Accepts connections (the kernel does) and never reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    install_subscriber();
    let app = spawn_app_with(move |s| {
        s.telemetry.otlp_endpoint = format!("http://127.0.0.1:{port}");
        s.telemetry.trace_queue_spans = 4;
        // Far longer than any request below may take.
        s.telemetry.otlp_timeout_ms = 600_000;
    })
    .await;
    let before = dropped(&app).await;

    for _ in 0..40 {
        let res = app
            .client
            .get(format!("{}/health", app.address))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("requests are answered while the collector hangs");
        assert_eq!(res.status().as_u16(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while dropped(&app).await <= before {
        assert!(Instant::now() < deadline, "no span was counted as dropped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(silent);
}

fn span_id(span: &Value) -> &str {
    span["spanId"].as_str().unwrap_or_default()
}

fn int_attribute(span: &Value, key: &str) -> Option<i64> {
    attribute(&span["attributes"], key)?["intValue"]
        .as_str()?
        .parse()
        .ok()
}

#[actix_web::test]
async fn one_call_is_one_trace_from_its_webhook_through_its_turns_and_a_linked_job() {
    use iace::sim::caller::{CallerScript, CallerScripts};
    let _turn = EXPORTER_TURN.lock().await;
    let (endpoint, received) = start_collector();
    install_subscriber();
    // The second caller turn talks over the first reply (a barge-in).
    let script = CallerScript::new()
        .wait_for_agent(15_000)
        .say("Hi, my internet keeps dropping every evening.")
        .interrupt(400, "Wait, it is only on my laptop.", 1200)
        .wait_for_agent(15_000)
        .hang_up();
    let gemini = crate::learning::start_gemini();
    let app = crate::helpers::spawn_voice_app(
        crate::helpers::VoiceSetup::new(CallerScripts::new(script)),
        move |s| {
            s.telemetry.otlp_endpoint = endpoint;
            s.telemetry.trace_sample_ratio = 1.0;
            s.gemini = crate::learning::gemini_settings(&gemini, 100);
            s.learning.workers = 1;
            s.learning.retrieval_budget_ms = 3000;
        },
    )
    .await;
    let voice = app.voice.as_ref().expect("voice app");
    let t = app.create_tenant("+15550307702").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559997702", "+15550307702");
    let id = app.call_id_for(&t, &ccid).await;
    app.finish_scripted_call(&t, &ccid, id).await;

    // The call's span: exported when the call actor stops.
    let call = wait_for_span(&received, |s| {
        s["name"] == "call"
            && attribute(&s["attributes"], "iace.call_id")
                == Some(&json!({ "stringValue": id.to_string() }))
    })
    .await;
    let trace = call["traceId"].as_str().unwrap().to_owned();
    assert_eq!(
        attribute(&call["attributes"], "iace.call.direction"),
        Some(&json!({ "stringValue": "inbound" }))
    );
    // Its parent: the `call.initiated` webhook request's span, in the same trace.
    let webhook = wait_for_span(&received, |s| {
        s["traceId"] == trace.as_str() && s["spanId"] == call["parentSpanId"]
    })
    .await;
    assert_eq!(webhook["name"], "http_request");
    assert_eq!(
        attribute(&webhook["attributes"], "http.route"),
        Some(&json!({ "stringValue": "/webhooks/telnyx" }))
    );

    // Two caller turns, each the call's child, with their timings.
    let turns = crate::helpers::wait_until(Duration::from_secs(60), "two turn spans", || {
        let all = spans(&received);
        let trace = trace.clone();
        let call_id = span_id(&call).to_owned();
        async move {
            let turns: Vec<Value> = all
                .into_iter()
                .filter(|s| s["traceId"] == trace.as_str() && s["name"] == "turn")
                .collect();
            assert!(
                turns.iter().all(|s| s["parentSpanId"] == call_id.as_str()),
                "every turn is the call's child: {turns:#?}"
            );
            (turns.len() >= 2).then_some(turns)
        }
    })
    .await;
    let mut indexes: Vec<i64> = turns
        .iter()
        .filter_map(|s| int_attribute(s, "iace.turn.index"))
        .collect();
    indexes.sort_unstable();
    assert_eq!(&indexes[..2], &[1, 2], "{turns:#?}");
    let barge_in = |index: i64| {
        let turn = turns
            .iter()
            .find(|s| int_attribute(s, "iace.turn.index") == Some(index))
            .unwrap();
        attribute(&turn["attributes"], "iace.turn.barge_in").cloned()
    };
    assert_eq!(barge_in(1), Some(json!({ "boolValue": false })));
    assert_eq!(
        barge_in(2),
        Some(json!({ "boolValue": true })),
        "{turns:#?}"
    );
    for turn in &turns {
        assert!(
            int_attribute(turn, "iace.turn.first_audio_ms").is_some(),
            "{turn}"
        );
        assert!(
            int_attribute(turn, "iace.turn.final_to_llm_ms").is_some(),
            "{turn}"
        );
        assert!(
            int_attribute(turn, "iace.turn.llm_first_token_ms").is_some(),
            "{turn}"
        );
    }

    // Each turn's LLM request and Cartesia stream start are its children.
    let in_trace = |s: &Value| s["traceId"] == trace.as_str();
    let provider = |s: &Value, name: &str| {
        s["name"] == "provider_request"
            && attribute(&s["attributes"], "iace.provider") == Some(&json!({ "stringValue": name }))
    };
    for turn in &turns {
        let turn_id = span_id(turn).to_owned();
        for name in ["groq", "cartesia"] {
            let child = wait_for_span(&received, |s| {
                in_trace(s) && provider(s, name) && s["parentSpanId"] == turn_id.as_str()
            })
            .await;
            assert_eq!(child["kind"], 3, "SPAN_KIND_CLIENT");
        }
    }
    // The Groq requests went out with a `traceparent` naming an exported span of this trace,
    // a turn's (the replies) or the call's (sentiment scoring), or of a post-call job's trace
    // (the summary), which links to this one.
    let sent: Vec<String> = voice
        .groq
        .requests()
        .into_iter()
        .filter_map(|r| r.traceparent)
        .collect();
    assert!(sent.len() >= 2, "{sent:?}");
    let turn_ids: Vec<String> = turns.iter().map(|t| span_id(t).to_owned()).collect();
    let mut from_turns = 0;
    for header in &sent {
        let span = provider_span_of(&received, header, "groq").await;
        if span["traceId"] != trace.as_str() {
            let job = wait_for_span(&received, |s| {
                s["traceId"] == span["traceId"] && s["spanId"] == span["parentSpanId"]
            })
            .await;
            assert_eq!(job["name"], "job", "{span}");
            assert_eq!(job["links"][0]["traceId"], trace.as_str(), "{job}");
            continue;
        }
        from_turns += usize::from(turn_ids.iter().any(|t| span["parentSpanId"] == t.as_str()));
    }
    assert!(from_turns >= 2, "each reply's request is its turn's child");
    // Requests made for the call outside a turn are the call's children, not traces of
    // their own: Telnyx commands and the speech sockets' handshakes.
    let call_span_id = span_id(&call).to_owned();
    for name in ["telnyx", "deepgram", "cartesia"] {
        wait_for_span(&received, |s| {
            in_trace(s) && provider(s, name) && s["parentSpanId"] == call_span_id.as_str()
        })
        .await;
    }
    // Retrieval's embedding request is in the trace too (a turn's, or the call's when it was
    // prefetched while the caller spoke), though retrieval runs it in a task of its own.
    wait_for_span(&received, |s| in_trace(s) && provider(s, "gemini")).await;
    // Every provider request of the trace hangs off the call or one of its turns.
    let members: Vec<String> = std::iter::once(call_span_id.clone())
        .chain(turns.iter().map(|t| span_id(t).to_owned()))
        .collect();
    for s in spans(&received).iter().filter(|s| in_trace(s)) {
        if s["name"] == "provider_request" {
            let parent = s["parentSpanId"].as_str().unwrap_or_default();
            assert!(
                members.iter().any(|m| m == parent),
                "stray provider span {s}"
            );
        }
    }

    // The post-call job runs in a trace of its own, linked to the call's span.
    let job = wait_for_span(&received, |s| {
        s["name"] == "job" && s["links"][0]["traceId"] == trace.as_str()
    })
    .await;
    assert_eq!(job["links"][0]["spanId"], call_span_id.as_str());
    assert_eq!(job["kind"], 5, "SPAN_KIND_CONSUMER");
    assert_eq!(
        attribute(&job["attributes"], "iace.job.kind"),
        Some(&json!({ "stringValue": "summarize_call" }))
    );
}
