//! Live call events (`GET /api/v1/live`): a real simulated call's events reach its organization's
//! stream and no other; tickets are single-use; a reader that stops reading is cut off. (Across
//! instances: `cluster::live`.)

use crate::helpers::{spawn_app_with, spawn_voice_app, wait_until, TestApp, VoiceSetup};
use iace::live::{LiveEvent, Stage};
use iace::sim::caller::{CallerScript, CallerScripts};
use iace::sim::groq::{GroqRule, GroqSimConfig};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const NUMBER_A: &str = "+15550410001";
const NUMBER_B: &str = "+15550410002";
pub const CALLER_LINE: &str = "Hi, my internet keeps dropping every evening.";
pub const AGENT_REPLY: &str = "Please restart your router.";

/// An open SSE stream, read as it comes: every `data:` line parsed as JSON (`event: snapshot`
/// frames are marked with `"type": "snapshot"`).
pub struct Sse {
    response: reqwest::Response,
    buffer: String,
    pub seen: Vec<Value>,
}

impl Sse {
    /// Trades `token` for a ticket at `base` and opens the stream with it.
    pub async fn open(base: &str, token: &str) -> Sse {
        let client = reqwest::Client::new();
        let ticket: Value = client
            .post(format!("{base}/api/v1/live/ticket"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ticket = ticket["ticket"].as_str().expect("a ticket").to_owned();
        let response = client
            .get(format!("{base}/api/v1/live?ticket={ticket}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            response,
            buffer: String::new(),
            seen: Vec::new(),
        }
    }

    /// Reads until an event satisfying `matches` arrives (returned) or `timeout` passes (panics).
    pub async fn until(
        &mut self,
        timeout: Duration,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut checked = 0;
        loop {
            while checked < self.seen.len() {
                checked += 1;
                if matches(&self.seen[checked - 1]) {
                    return self.seen[checked - 1].clone();
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:?}", self.seen))
                .expect("stream readable")
                .unwrap_or_else(|| panic!("stream ended waiting for {what}; saw {:?}", self.seen));
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let snapshot = frame.starts_with("event: snapshot\n");
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                    let mut value: Value = serde_json::from_str(data).expect("JSON data");
                    if snapshot {
                        value["type"] = "snapshot".into();
                    }
                    self.seen.push(value);
                }
            }
        }
    }
}

/// Callers speaking `script`; the simulated LLM answers [`CALLER_LINE`] with
/// [`AGENT_REPLY`].
pub fn router_advice(script: CallerScript) -> VoiceSetup {
    VoiceSetup {
        groq: GroqSimConfig {
            rules: vec![GroqRule::new("dropping", AGENT_REPLY)],
            ..GroqSimConfig::default()
        },
        ..VoiceSetup::new(CallerScripts::new(script))
    }
}

fn of_call(id: Uuid, kind: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == kind && v["call_id"] == id.to_string()
}

#[actix_web::test]
async fn a_calls_events_reach_its_organizations_stream_and_no_other() {
    let script = CallerScript::new()
        .wait_for_agent(15_000)
        .say(CALLER_LINE)
        .wait_for_agent(15_000)
        .hang_up();
    let app = spawn_voice_app(router_advice(script), |_| {}).await;
    let a = app.create_tenant(NUMBER_A).await;
    let b = app.create_tenant(NUMBER_B).await;
    let mut stream_a = Sse::open(&app.address, &a.token).await;
    let mut stream_b = Sse::open(&app.address, &b.token).await;
    let wait = Duration::from_secs(60);
    let snapshot = stream_a
        .until(wait, "A's snapshot", |v| v["type"] == "snapshot")
        .await;
    assert_eq!(snapshot["calls"], serde_json::json!([]));

    let ccid = app.telnyx.place_inbound_call("+15559990401", NUMBER_A);
    let id = app.call_id_for(&a, &ccid).await;
    let started = stream_a
        .until(wait, "call_started", of_call(id, "call_started"))
        .await;
    assert_eq!(started["from"], "+15559990401");
    assert_eq!(started["to"], NUMBER_A);
    assert_eq!(started["direction"], "inbound");
    // A stream opened mid-call starts with the call in its snapshot.
    let mut late_a = Sse::open(&app.address, &a.token).await;
    let snapshot = late_a
        .until(wait, "late snapshot", |v| v["type"] == "snapshot")
        .await;
    assert!(
        snapshot["calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id.to_string()),
        "{snapshot}"
    );

    let line = stream_a
        .until(wait, "the caller's line", |v| {
            of_call(id, "transcript")(v) && v["speaker"] == "caller"
        })
        .await;
    assert_eq!(line["text"], CALLER_LINE);
    let sentiment = stream_a
        .until(wait, "sentiment", of_call(id, "sentiment"))
        .await;
    assert!(
        sentiment["score"].as_f64().unwrap().abs() <= 1.0,
        "{sentiment}"
    );
    stream_a
        .until(wait, "thinking", |v| {
            of_call(id, "stage")(v) && v["stage"] == "thinking"
        })
        .await;
    stream_a
        .until(wait, "speaking", |v| {
            of_call(id, "stage")(v) && v["stage"] == "speaking"
        })
        .await;
    let reply = stream_a
        .until(wait, "the agent's reply", |v| {
            of_call(id, "transcript")(v) && v["text"] == AGENT_REPLY
        })
        .await;
    assert_eq!(reply["speaker"], "agent");
    let latency = stream_a
        .until(wait, "turn latency", of_call(id, "turn_latency"))
        .await;
    assert!(latency["latency_ms"].as_i64().unwrap() >= 0);
    app.voice
        .as_ref()
        .unwrap()
        .callers
        .wait_for_outcomes(1, Duration::from_secs(90))
        .await;
    app.telnyx.caller_hangs_up(&ccid);
    let ended = stream_a
        .until(wait, "call_ended", of_call(id, "call_ended"))
        .await;
    assert!(ended["outcome"].is_string(), "{ended}");
    late_a
        .until(wait, "call_ended (late stream)", of_call(id, "call_ended"))
        .await;

    // B's stream works (this event reaches it), and nothing of A's call came before it.
    let marker = Uuid::new_v4();
    app.state.live.publish(
        b.org,
        &LiveEvent::Stage {
            call_id: marker,
            stage: Stage::Listening,
        },
    );
    stream_b
        .until(wait, "B's own event", of_call(marker, "stage"))
        .await;
    let leaked: Vec<&Value> = stream_b
        .seen
        .iter()
        .filter(|v| v.to_string().contains(&id.to_string()) || v["type"] == "call_started")
        .collect();
    assert!(leaked.is_empty(), "A's call reached B: {leaked:?}");
    assert_eq!(stream_b.seen[0]["calls"], serde_json::json!([]));
}

async fn ticket(app: &TestApp, token: &str) -> String {
    let (status, body) = {
        let res = app
            .client
            .post(app.url("/api/v1/live/ticket"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 30);
    body["ticket"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_live_ticket_is_single_use_and_required() {
    let app = spawn_app_with(|_| {}).await;
    let t = app.create_tenant("+15550410003").await;
    let one = ticket(&app, &t.token).await;
    let first = app.get(&format!("/api/v1/live?ticket={one}")).await;
    assert_eq!(first.status(), 200);
    drop(first);
    let again = app.get(&format!("/api/v1/live?ticket={one}")).await;
    crate::helpers::assert_error(again, 401, "invalid_token").await;
    let forged = app.get("/api/v1/live?ticket=not-a-ticket").await;
    crate::helpers::assert_error(forged, 401, "invalid_token").await;
    let none = app.get("/api/v1/live").await;
    assert_eq!(none.status(), 401);
    // No ticket without a token either.
    let res = app
        .client
        .post(app.url("/api/v1/live/ticket"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Clients that can send headers may use their bearer token directly.
    let res = app
        .client
        .get(app.url("/api/v1/live"))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// The value of an unlabelled counter in the ops `/metrics` text.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.ops_get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn a_reader_that_stops_reading_is_disconnected() {
    let app = spawn_app_with(|s| s.live.client_buffer = 8).await;
    let t = app.create_tenant("+15550410004").await;
    let one = ticket(&app, &t.token).await;
    // A raw socket, so that nothing reads for us: request, then read only the headers.
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    socket
        .write_all(
            format!("GET /api/v1/live?ticket={one} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 512];
    let n = socket.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));

    // Far more than the socket buffers and the stream's queue hold, published as the engine
    // does (through Redis), until the server gives up on this reader.
    let text = "x".repeat(16 * 1024);
    let mut redis = app.state.redis.get().await.unwrap();
    let channel = iace::live::channel(&app.settings.redis.key_prefix, t.org);
    let payload = serde_json::json!({ "type": "transcript", "text": text }).to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metric(&app, "iace_live_clients_dropped_total").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow reader was never cut"
        );
        for _ in 0..200 {
            let _: i64 = deadpool_redis::redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&payload)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
    }
    // The server closed the connection: reading now reaches its end (after what was in flight).
    let mut sink = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was not closed");
    wait_until(Duration::from_secs(10), "no live client left", || async {
        (metric(&app, "iace_live_clients").await == 0.0).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn events_published_after_redis_restarts_still_reach_subscribers() {
    use futures_util::StreamExt;
    let port = crate::helpers::free_port();
    let redis = crate::services::PrivateRedis::start(port);
    let app = spawn_app_with(|s| {
        s.redis.url = iace::config::Secret::new(format!("redis://127.0.0.1:{port}"));
    })
    .await;
    let org = Uuid::new_v4();
    let channel = iace::live::channel(&app.settings.redis.key_prefix, org);
    let client = deadpool_redis::redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let stage = |stage| LiveEvent::Stage {
        call_id: Uuid::nil(),
        stage,
    };
    // Publishes `event` and waits for a subscriber of the channel to receive it.
    let heard = |event: LiveEvent| {
        let (client, channel, live) = (client.clone(), channel.clone(), app.state.live.clone());
        async move {
            let mut pubsub = client.get_async_pubsub().await.unwrap();
            pubsub.subscribe(&channel).await.unwrap();
            live.publish(org, &event);
            let message = tokio::time::timeout(Duration::from_secs(5), async {
                pubsub.on_message().next().await
            })
            .await
            .ok()
            .flatten()?;
            message.get_payload::<String>().ok()
        }
    };
    let first = heard(stage(Stage::Listening)).await.expect("published");
    assert!(first.contains("listening"), "{first}");

    // Redis restarts: the publisher's connection is gone, and the next event still goes out
    // (on a new connection), not only the ones after it.
    drop(redis);
    let _redis = crate::services::PrivateRedis::start(port);
    let next = heard(stage(Stage::Speaking)).await;
    assert!(
        next.as_deref().is_some_and(|p| p.contains("speaking")),
        "the first event after the restart was lost: {next:?}"
    );
}
