//! The live conversation: the media socket Telnyx opens, and whole calls through every
//! simulator (Telnyx, the simulated caller, Deepgram, Groq, Cartesia).

use crate::helpers::{assert_error, spawn_app};

#[actix_web::test]
async fn a_media_socket_without_a_valid_token_is_refused_before_the_upgrade() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15550200001").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990101", "+15550200001");
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;
    let answer = app
        .telnyx
        .commands()
        .into_iter()
        .find(|c| c.action == "answer")
        .unwrap();
    let stream_url = answer.body["stream_url"].as_str().unwrap().to_owned();
    let good_token = stream_url.split("token=").nth(1).unwrap().to_owned();

    let path = format!("/media/telnyx/{id}");
    assert_error(app.get(&path).await, 401, "invalid_media_token").await;
    assert_error(
        app.get(&format!("{path}?token=garbage")).await,
        401,
        "invalid_media_token",
    )
    .await;
    // A valid token opens only its own call's socket.
    let other = format!("/media/telnyx/{}?token={good_token}", uuid::Uuid::new_v4());
    assert_error(app.get(&other).await, 401, "invalid_media_token").await;
    // An access token is not a media token.
    let access = app.token_for(t.org, iace::domain::Role::Admin).await;
    assert_error(
        app.get(&format!("{path}?token={access}")).await,
        401,
        "invalid_media_token",
    )
    .await;
    // The right token without a WebSocket handshake is a clear 400, not a crash.
    let res = app.get(&format!("{path}?token={good_token}")).await;
    assert_eq!(res.status(), 400);
}

/// A WebSocket upgrade request to a route that is not the media socket is answered as that
/// route answers (all upgrades pass through the upgrade service), then the connection closes.
#[actix_web::test]
async fn a_websocket_upgrade_on_another_route_gets_that_routes_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let t = app.create_tenant("+15550200002").await;
    let ask = |token: Option<String>| {
        let address = app.address.trim_start_matches("http://").to_owned();
        async move {
            let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
            let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
            let request = format!(
                "GET /api/v1/calls HTTP/1.1\r\nHost: {address}\r\n{auth}Upgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            socket.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
                .await
                .expect("the connection closes after the answer")
                .unwrap();
            let answer = String::from_utf8(answer).unwrap();
            let (head, body) = answer.split_once("\r\n\r\n").expect("a whole response");
            let body: Value = serde_json::from_str(body).expect("a JSON body");
            (head.to_owned(), body)
        }
    };
    let (head, body) = ask(None).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(body["code"].is_string(), "{body}");
    let token = app.token_for(t.org, iace::domain::Role::Admin).await;
    let (head, body) = ask(Some(token)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(body.is_object() || body.is_array(), "{body}");
}

use crate::helpers::Tenant;
use crate::helpers::{spawn_voice_app, TestApp, VoiceSetup};
use iace::domain::audio::Codec;
use iace::sim::caller::{CallerConfig, CallerReport, CallerScript, CallerScripts, CallerSim};
use iace::sim::groq::{GroqRule, GroqSimConfig};
use serde_json::Value;
use std::time::Duration;

const NUMBER: &str = "+15550300001";
const WAIT_MS: u32 = 15_000;

fn support_rules() -> GroqSimConfig {
    GroqSimConfig {
        rules: vec![
            GroqRule::new(
                "dropping",
                "I'm sorry to hear that. Please restart your router and wait two minutes.",
            ),
            GroqRule::new(
                "restarted",
                "Thanks for trying that. I have reset your line from our side.",
            ),
            GroqRule::new("thank", "You're welcome. Have a great evening."),
        ],
        time_to_first_token: Duration::from_millis(100),
        ..GroqSimConfig::default()
    }
}

/// Places a simulated inbound call, waits for the caller to finish its script, hangs the
/// Telnyx leg up as the caller's phone would, and returns the caller's report and the call.
async fn converse(app: &TestApp, t: &Tenant) -> (CallerReport, Value) {
    let voice = app.voice.as_ref().expect("voice app");
    let ccid = app.telnyx.place_inbound_call("+15559990301", NUMBER);
    let id = app.call_id_for(t, &ccid).await;
    let outcomes = voice
        .callers
        .wait_for_outcomes(1, Duration::from_secs(90))
        .await;
    let report = match outcomes.into_iter().next().expect("one caller") {
        Ok(report) => report,
        Err(e) => panic!("caller failed: {e}"),
    };
    app.telnyx.caller_hangs_up(&ccid);
    app.wait_for_status(t, id, "ended").await;
    let call = app.recorded_call(t, id).await;
    (report, call)
}

/// The utterances of one speaker (`caller` or `agent`) in a call's detail.
pub(crate) fn utterances(call: &Value, speaker: &str) -> Vec<Value> {
    call["utterances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["speaker"] == speaker)
        .cloned()
        .collect()
}

#[actix_web::test]
async fn a_whole_conversation_runs_through_every_simulator_and_is_recorded() {
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .say("Hi, my internet keeps dropping every evening.")
        .wait_for_agent(WAIT_MS)
        .say("Great, thank you, that fixed it.")
        .wait_for_agent(WAIT_MS)
        .hang_up();
    let setup = VoiceSetup {
        groq: support_rules(),
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    let t = app.create_tenant(NUMBER).await;
    let (report, call) = converse(&app, &t).await;

    assert!(report.script_completed, "{}", report.summary());
    assert!(
        report.agent_turns.len() >= 3,
        "greeting and two replies: {}",
        report.summary()
    );
    assert!(
        report.turn_latencies_ms().iter().all(Option::is_some),
        "{}",
        report.summary()
    );
    assert!(!report.marks_echoed.is_empty(), "marks after sentences");

    let caller = utterances(&call, "caller");
    let agent = utterances(&call, "agent");
    assert_eq!(caller.len(), 2, "{call}");
    assert_eq!(
        caller[0]["text"],
        "Hi, my internet keeps dropping every evening."
    );
    assert_eq!(caller[1]["text"], "Great, thank you, that fixed it.");
    for u in &caller {
        assert!(
            u["sentiment_score"].is_number() && u["rolling_sentiment"].is_number(),
            "{u}"
        );
    }
    assert!(
        caller[1]["sentiment_score"].as_f64().unwrap() > 0.0,
        "thanks is positive"
    );
    assert!(agent.len() >= 3, "{call}");
    assert!(
        agent[0]["text"]
            .as_str()
            .unwrap()
            .contains("how can I help"),
        "greeting first: {agent:?}"
    );
    assert!(agent
        .iter()
        .any(|u| u["text"].as_str().unwrap().contains("restart your router")));
    assert!(
        agent.iter().filter(|u| u["latency_ms"].is_number()).count() >= 2,
        "per-turn latency"
    );
    assert_eq!(call["outcome"], "resolved");

    // What `iace sim call --wait` prints for this call.
    let printed = iace::demo::follow_call(
        &app.settings,
        &report.call_control_id,
        Duration::from_secs(10),
    )
    .await
    .expect("the demo follows the call");
    assert!(
        printed.contains("caller: Hi, my internet keeps dropping every evening."),
        "{printed}"
    );
    assert!(printed.contains("outcome: resolved"), "{printed}");
    assert!(
        printed.contains("sentiment track: ") && printed.contains(" ms"),
        "{printed}"
    );

    let voice = app.voice.as_ref().unwrap();
    let dg = &voice.deepgram.connections()[0];
    assert!(
        dg.query
            .iter()
            .any(|(k, v)| k == "encoding" && v == "mulaw"),
        "{:?}",
        dg.query
    );
    assert!(dg
        .query
        .iter()
        .any(|(k, v)| k == "sample_rate" && v == "8000"));
    let prompts = voice.groq.requests();
    let reply = prompts
        .iter()
        .filter_map(|r| r.chat())
        .find(|c| {
            c.stream
                && c.last_user_message()
                    .is_some_and(|m| m.contains("dropping"))
        })
        .expect("an LLM turn for the first question");
    assert!(
        reply.system_prompt().unwrap().contains("internet service"),
        "the profile's prompt"
    );
}

#[actix_web::test]
async fn barge_in_clears_playback_cancels_the_context_and_keeps_only_played_words() {
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .say("Hi, my internet keeps dropping every evening.")
        .interrupt(400, "Wait, it is only on my laptop.", 1200)
        .wait_for_agent(WAIT_MS)
        .hang_up();
    let mut groq = support_rules();
    groq.rules[0] = GroqRule::new(
        "dropping",
        "I'm sorry to hear that. First, please find your router. It is usually a small box with blinking lights. Then unplug it and wait two full minutes before plugging it back in.",
    );
    let setup = VoiceSetup {
        groq,
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    let t = app.create_tenant(NUMBER).await;
    let (report, call) = converse(&app, &t).await;

    assert!(report.clears() >= 1, "clear sent: {}", report.summary());
    let agent = utterances(&call, "agent");
    let cut = agent
        .iter()
        .find(|u| u["interrupted"] == true)
        .expect("an interrupted agent turn");
    let cut_text = cut["text"].as_str().unwrap();
    assert!(
        !cut_text.contains("plugging it back in"),
        "unplayed words dropped: {cut_text}"
    );
    let cancelled = app
        .voice
        .as_ref()
        .unwrap()
        .cartesia
        .connections()
        .iter()
        .any(|c| !c.cancels.is_empty());
    assert!(cancelled, "the Cartesia context was cancelled");
    let caller = utterances(&call, "caller");
    assert!(caller
        .iter()
        .any(|u| u["text"] == "Wait, it is only on my laptop."));
}

#[actix_web::test]
async fn souring_sentiment_escalates_to_the_profiles_human_number() {
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .say("This is terrible, my internet is broken again.")
        .wait_for_agent(WAIT_MS)
        .say("I am furious, this is the worst service, useless.")
        .wait_for_agent(WAIT_MS)
        .silence(2000)
        .hang_up();
    let setup = VoiceSetup {
        groq: support_rules(),
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    let t = app.create_tenant(NUMBER).await;
    let (_, call) = converse(&app, &t).await;
    let transfer = app
        .telnyx
        .commands()
        .into_iter()
        .find(|c| c.action == "transfer")
        .expect("transfer");
    assert_eq!(transfer.body["to"], "+15557770000");
    assert_eq!(call["outcome"], "escalated");
    let agent = utterances(&call, "agent");
    assert!(
        agent
            .iter()
            .any(|u| u["text"].as_str().unwrap().contains("connecting you")),
        "hand-off line said"
    );
}

#[actix_web::test]
async fn pressing_zero_escalates() {
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .dtmf("0")
        .silence(9000)
        .hang_up();
    let setup = VoiceSetup {
        groq: support_rules(),
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    let t = app.create_tenant(NUMBER).await;
    let (_, call) = converse(&app, &t).await;
    assert!(app.telnyx.commands().iter().any(|c| c.action == "transfer"));
    assert_eq!(call["outcome"], "escalated");
}

#[actix_web::test]
async fn a_dropped_deepgram_socket_loses_no_caller_words() {
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .say("Hi, my internet keeps dropping every evening.")
        .wait_for_agent(WAIT_MS)
        .hang_up();
    let setup = VoiceSetup {
        groq: support_rules(),
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    // Drop the socket in the middle of the caller's sentence (frames of the greeting's
    // silence come first, then about 2 s of speech).
    app.voice
        .as_ref()
        .unwrap()
        .deepgram
        .set_faults(iace::sim::deepgram::DeepgramFaults {
            drop_after_frames: Some(60),
            ..Default::default()
        });
    let t = app.create_tenant(NUMBER).await;
    let (_, call) = converse(&app, &t).await;
    assert!(
        app.voice.as_ref().unwrap().deepgram.connections().len() >= 2,
        "reconnected"
    );
    let caller = utterances(&call, "caller");
    assert_eq!(caller.len(), 1, "{call}");
    assert_eq!(
        caller[0]["text"],
        "Hi, my internet keeps dropping every evening."
    );
}

#[actix_web::test]
async fn a_dropped_cartesia_socket_mid_sentence_still_gets_the_reply_out() {
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .say("Hi, my internet keeps dropping every evening.")
        .wait_for_agent(WAIT_MS)
        .hang_up();
    let setup = VoiceSetup {
        groq: support_rules(),
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    app.voice
        .as_ref()
        .unwrap()
        .cartesia
        .set_faults(iace::sim::cartesia::CartesiaFaults {
            drop_after_chunks: Some(2),
            ..Default::default()
        });
    let t = app.create_tenant(NUMBER).await;
    let (report, call) = converse(&app, &t).await;
    assert!(
        app.voice.as_ref().unwrap().cartesia.connections().len() >= 2,
        "reconnected"
    );
    assert!(report.agent_turns.len() >= 2, "{}", report.summary());
    let agent = utterances(&call, "agent");
    assert!(
        agent
            .iter()
            .any(|u| u["text"].as_str().unwrap().contains("restart your router")),
        "{call}"
    );
}

#[actix_web::test]
async fn groq_rate_limiting_then_answering_still_answers_the_caller() {
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .say("Hi, my internet keeps dropping every evening.")
        .wait_for_agent(WAIT_MS)
        .hang_up();
    let setup = VoiceSetup {
        groq: support_rules(),
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    let groq = &app.voice.as_ref().unwrap().groq;
    let t = app.create_tenant(NUMBER).await;
    // Rate limit the very next requests (the sentiment score and the first reply attempt).
    groq.set_faults(iace::sim::groq::GroqFaults {
        rate_limit_next: 2,
        retry_after_secs: 0,
        ..Default::default()
    });
    let (_, call) = converse(&app, &t).await;
    assert!(
        groq.requests().iter().any(|r| r.status == 429),
        "the simulator did answer 429"
    );
    let agent = utterances(&call, "agent");
    assert!(
        agent
            .iter()
            .any(|u| u["text"].as_str().unwrap().contains("restart your router")),
        "{call}"
    );
    let caller = utterances(&call, "caller");
    assert!(
        caller[0]["sentiment_score"].is_number(),
        "lexicon fallback scored it"
    );
}

#[actix_web::test]
async fn a_pcma_call_runs_end_to_end_without_transcoding() {
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .say("Hi, my internet keeps dropping every evening.")
        .wait_for_agent(WAIT_MS)
        .hang_up();
    let setup = VoiceSetup {
        groq: support_rules(),
        callers_on_stream: false,
        ..VoiceSetup::new(CallerScripts::new(script.clone()))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    let t = app.create_tenant(NUMBER).await;
    let ccid = app.telnyx.place_inbound_call("+15559990302", NUMBER);
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;
    let answer = app
        .telnyx
        .commands()
        .into_iter()
        .find(|c| c.action == "answer")
        .unwrap();
    let stream_url = answer.body["stream_url"].as_str().unwrap().to_owned();
    // This caller's leg is A-law: the engine must read it from `start`, not assume PCMU.
    let mut config = CallerConfig::new(Codec::Pcma, script);
    config.call_control_id = ccid.clone();
    let report = CallerSim::run(&stream_url, config)
        .await
        .expect("caller runs");
    assert!(report.script_completed, "{}", report.summary());
    assert!(report.agent_audio_bytes() > 0);
    app.telnyx.caller_hangs_up(&ccid);
    app.wait_for_status(&t, id, "ended").await;
    app.state
        .recorder
        .send(iace::actors::recorder::Flush)
        .await
        .unwrap();

    let voice = app.voice.as_ref().unwrap();
    let dg = &voice.deepgram.connections()[0];
    assert!(
        dg.query.iter().any(|(k, v)| k == "encoding" && v == "alaw"),
        "{:?}",
        dg.query
    );
    // (The greeting made before pickup is μ-law, the codec we ask Telnyx for; on this A-law leg
    // the call speaks it through its live A-law stream instead.)
    let live: Vec<_> = voice
        .cartesia
        .requests()
        .into_iter()
        .filter(|r| !r.context_id.starts_with("greeting-"))
        .collect();
    assert!(!live.is_empty());
    assert!(live.iter().all(|r| r.output_format.encoding == "pcm_alaw"));
    let (_, call) = app.get_json(&t.token, &format!("/api/v1/calls/{id}")).await;
    let caller = utterances(&call, "caller");
    assert_eq!(
        caller[0]["text"],
        "Hi, my internet keeps dropping every evening."
    );
}

/// Places an inbound call from `from` and opens its media socket as Telnyx would (the test
/// speaks for Telnyx: no simulated caller is on the stream): the call's id and the socket.
async fn open_media_socket(
    app: &TestApp,
    t: &Tenant,
    from: &str,
) -> (
    uuid::Uuid,
    actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
) {
    let ccid = app.telnyx.place_inbound_call(from, NUMBER);
    let id = app.call_id_for(t, &ccid).await;
    app.wait_for_status(t, id, "streaming").await;
    let answer = app
        .telnyx
        .commands()
        .into_iter()
        .find(|c| c.action == "answer")
        .unwrap();
    let stream_url = answer.body["stream_url"].as_str().unwrap().to_owned();
    let (_, ws) = awc::Client::new()
        .ws(stream_url)
        .connect()
        .await
        .expect("socket opens");
    (id, ws)
}

#[actix_web::test]
async fn malformed_media_frames_are_counted_and_leave_the_call_alive() {
    use futures_util::{SinkExt, StreamExt};
    let setup = VoiceSetup {
        callers_on_stream: false,
        ..VoiceSetup::new(CallerScripts::new(CallerScript::new()))
    };
    let app = spawn_voice_app(setup, |s| s.calls.media_max_frame_bytes = 2048).await;
    let t = app.create_tenant(NUMBER).await;
    let (id, mut ws) = open_media_socket(&app, &t, "+15559990303").await;
    let text = |s: String| awc::ws::Message::Text(s.into());
    let start = r#"{"event":"start","stream_id":"s1","start":{"call_control_id":"x","media_format":{"encoding":"PCMU","sample_rate":8000,"channels":1}}}"#;
    let media = |stream: &str, payload: &str| {
        format!(
            r#"{{"event":"media","stream_id":"{stream}","media":{{"track":"inbound","payload":"{payload}"}}}}"#
        )
    };
    for frame in [
        r#"{"event":"connected","version":"1.0.0"}"#.to_owned(),
        start.to_owned(),
        "this is not json".to_owned(),
        r#"{"event":"bogus"}"#.to_owned(),
        media("s1", "!!! not base64 !!!"),
        media("another-stream", "/////w=="),
        media("s1", &"A".repeat(4096)),
        media("s1", "/////w=="),
    ] {
        ws.send(text(frame)).await.unwrap();
    }
    ws.send(awc::ws::Message::Binary(bytes::Bytes::from_static(
        b"\x00\x01",
    )))
    .await
    .unwrap();
    // Whatever the engine says back (greeting audio), the socket and the call stay up.
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    for reason in [
        "malformed",
        "bad_payload",
        "wrong_stream",
        "oversized",
        "binary",
    ] {
        let line = format!(r#"iace_media_frames_rejected_total{{reason="{reason}"}}"#);
        assert!(metrics.contains(&line), "{reason} counted:\n{metrics}");
    }
    let (_, call) = app.get_json(&t.token, &format!("/api/v1/calls/{id}")).await;
    assert_eq!(call["status"], "streaming", "the call is alive");
    assert_eq!(app.state.registry.live_count().await, 1);
}

/// The value of one metric series in the ops endpoint's text (`None` when absent).
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse::<f64>().ok())
    })
}

#[actix_web::test]
async fn the_media_socket_answers_pings_reassembles_fragments_and_closes_cleanly() {
    use actix_http::ws::Item;
    use awc::ws::{CloseCode, CloseReason, Frame, Message};
    use futures_util::{SinkExt, StreamExt};
    let setup = VoiceSetup {
        callers_on_stream: false,
        ..VoiceSetup::new(CallerScripts::new(CallerScript::new()))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    let t = app.create_tenant(NUMBER).await;
    let (_, mut ws) = open_media_socket(&app, &t, "+15559990304").await;
    // The first frame past the agent's audio (text frames) within 5 s.
    async fn next_control<S, E>(ws: &mut S) -> Option<Frame>
    where
        S: futures_util::Stream<Item = Result<Frame, E>> + Unpin,
        E: std::fmt::Display,
    {
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(frame) = ws.next().await {
                match frame {
                    Ok(Frame::Text(_)) => continue,
                    Ok(other) => return Some(other),
                    Err(e) => panic!("socket error: {e}"),
                }
            }
            None
        })
        .await
        .expect("an answer within 5 s")
    }

    ws.send(Message::Ping(bytes::Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    match next_control(&mut ws).await {
        Some(Frame::Pong(payload)) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected the ping's pong, got {other:?}"),
    }

    // `start` in three fragments: only once it is whole does the stream id exist, so the media
    // frame after it is the caller's (counted in) rather than a wrong stream's.
    let start = r#"{"event":"start","stream_id":"s1","start":{"call_control_id":"x","media_format":{"encoding":"PCMU","sample_rate":8000,"channels":1}}}"#;
    let (a, rest) = start.split_at(20);
    let (b, c) = rest.split_at(40);
    for item in [
        Item::FirstText(bytes::Bytes::copy_from_slice(a.as_bytes())),
        Item::Continue(bytes::Bytes::copy_from_slice(b.as_bytes())),
        Item::Last(bytes::Bytes::copy_from_slice(c.as_bytes())),
    ] {
        ws.send(Message::Continuation(item)).await.unwrap();
    }
    let media =
        r#"{"event":"media","stream_id":"s1","media":{"track":"inbound","payload":"/////w=="}}"#;
    ws.send(Message::Text(media.into())).await.unwrap();
    let frames_in = r#"iace_media_frames_total{direction="in"}"#;
    crate::helpers::wait_until(
        Duration::from_secs(5),
        "the media frame counted",
        || async {
            let metrics = app.ops_get("/metrics").await.text().await.unwrap();
            (metric(&metrics, frames_in) == Some(1.0)).then_some(())
        },
    )
    .await;
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            r#"iace_media_frames_rejected_total{reason="wrong_stream"}"#
        )
        .unwrap_or(0.0),
        0.0,
        "the fragmented start was put back together:\n{metrics}"
    );

    // The client closes: the engine answers with a close frame and ends the connection.
    ws.send(Message::Close(Some(CloseReason::from(CloseCode::Normal))))
        .await
        .unwrap();
    match next_control(&mut ws).await {
        Some(Frame::Close(_)) => {}
        other => panic!("expected the close handshake's answer, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the connection ends")
            .is_none(),
        "nothing follows the close"
    );
}

#[actix_web::test]
async fn the_caller_hanging_up_mid_sentence_closes_everything() {
    let mut groq = support_rules();
    groq.rules[0] = GroqRule::new(
        "dropping",
        "I'm sorry to hear that. Let me walk you through a few checks, one at a time, slowly and carefully, starting with the cables behind your router.",
    );
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .say("Hi, my internet keeps dropping every evening.")
        .silence(1200)
        .hang_up();
    let setup = VoiceSetup {
        groq,
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    let t = app.create_tenant(NUMBER).await;
    let (_, call) = converse(&app, &t).await;
    assert_eq!(call["status"], "ended");
    assert_eq!(
        app.state.registry.live_count().await,
        0,
        "the call actor is gone"
    );
    let voice = app.voice.as_ref().unwrap();
    crate::helpers::wait_until(
        Duration::from_secs(5),
        "provider sockets closed",
        || async {
            let dg = voice
                .deepgram
                .connections()
                .iter()
                .all(|c| c.ended.is_some());
            let ca = voice
                .cartesia
                .connections()
                .iter()
                .all(|c| c.ended.is_some());
            (dg && ca).then_some(())
        },
    )
    .await;
    let agent = utterances(&call, "agent");
    assert!(
        agent.iter().any(|u| u["interrupted"] == true),
        "the cut reply is recorded as such: {call}"
    );
}

#[actix_web::test]
async fn the_greeting_is_synthesised_before_pickup_once_per_profile_and_cached_in_redis() {
    let script = CallerScript::new().wait_for_agent(WAIT_MS).hang_up();
    let setup = VoiceSetup {
        groq: support_rules(),
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |_| {}).await;
    let t = app.create_tenant(NUMBER).await;
    let voice = app.voice.as_ref().unwrap();
    for n in 1..=2 {
        let ccid = app.telnyx.place_inbound_call("+15559990304", NUMBER);
        let id = app.call_id_for(&t, &ccid).await;
        let outcomes = voice
            .callers
            .wait_for_outcomes(n, Duration::from_secs(30))
            .await;
        let report = outcomes[n - 1].as_ref().expect("caller ok");
        // The greeting is ready when the stream starts: it arrives in one piece, at once.
        let first = &report.agent_turns[0];
        assert!(first.audio_ms() > 500, "{}", report.summary());
        app.telnyx.caller_hangs_up(&ccid);
        app.wait_for_status(&t, id, "ended").await;
    }
    let greetings = voice
        .cartesia
        .requests()
        .into_iter()
        .filter(|r| r.context_id.starts_with("greeting-"))
        .count();
    assert_eq!(greetings, 1, "synthesised once, then served from Redis");
    let mut conn = app.state.redis.get().await.unwrap();
    let keys: Vec<String> = deadpool_redis::redis::cmd("KEYS")
        .arg(format!("{}:greeting:*", app.settings.redis.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
}

#[actix_web::test]
async fn a_solved_problem_and_the_callers_memory_reach_the_prompt_of_their_next_call() {
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .say("Hi, my internet keeps dropping every evening.")
        .wait_for_agent(WAIT_MS)
        .say("Great, thank you, that fixed it.")
        .wait_for_agent(WAIT_MS)
        .hang_up();
    let gemini = crate::learning::start_gemini();
    let setup = VoiceSetup {
        groq: support_rules(),
        ..VoiceSetup::new(CallerScripts::new(script.clone()))
    };
    let app = spawn_voice_app(setup, |s| {
        s.gemini = crate::learning::gemini_settings(&gemini, 100);
        s.learning.workers = 2;
        // The same caller twice would never confirm a pattern (see security.rs): serve at once.
        s.learning.confirm_patterns = false;
        // A loaded test machine: give retrieval room (the budget itself is tested in learning.rs).
        s.learning.retrieval_budget_ms = 3000;
    })
    .await;
    let t = app.create_tenant(NUMBER).await;
    let voice = app.voice.as_ref().unwrap();

    // First call: resolved; the post-call jobs learn a pattern and a memory of this caller.
    let (_, first) = converse(&app, &t).await;
    assert_eq!(first["outcome"], "resolved");
    crate::helpers::wait_until(Duration::from_secs(30), "the caller's memory", || async {
        let (status, _) = app
            .get_json(&t.token, "/api/v1/callers/+15559990301/memory")
            .await;
        (status == 200).then_some(())
    })
    .await;
    crate::helpers::wait_until(Duration::from_secs(30), "a learned pattern", || async {
        let (_, page) = app.get_json(&t.token, "/api/v1/patterns").await;
        let n = page["data"].as_array().map_or(0, Vec::len);
        (n > 0).then_some(())
    })
    .await;

    // Second call from the same number with the same problem.
    voice.deepgram.set_script(script.utterances());
    let before = voice.groq.requests().len();
    let ccid = app.telnyx.place_inbound_call("+15559990301", NUMBER);
    let id = app.call_id_for(&t, &ccid).await;
    let outcomes = voice
        .callers
        .wait_for_outcomes(2, Duration::from_secs(90))
        .await;
    assert!(outcomes[1].is_ok(), "second caller ran");
    app.telnyx.caller_hangs_up(&ccid);
    app.wait_for_status(&t, id, "ended").await;
    // The system prompt of the second call's reply to the caller line containing `words`.
    let prompt_of_reply_to = |words: &str| {
        voice.groq.requests()[before..]
            .iter()
            .filter_map(|r| r.chat())
            .find(|c| c.stream && c.last_user_message().is_some_and(|m| m.contains(words)))
            .and_then(|c| c.system_prompt().map(str::to_owned))
            .unwrap_or_else(|| panic!("no reply to {words:?} in the second call"))
    };
    let system = prompt_of_reply_to("dropping");
    assert!(
        system.contains("## This caller"),
        "memory in the prompt:\n{system}"
    );
    assert!(
        system.contains("## Solutions that worked"),
        "pattern in the prompt:\n{system}"
    );
    // The memory is fetched once per call and serves its later turns too.
    let system = prompt_of_reply_to("fixed it");
    assert!(
        system.contains("## This caller"),
        "memory in the second turn's prompt:\n{system}"
    );
}

#[actix_web::test]
async fn embeddings_down_during_a_call_do_not_hold_the_turn_up() {
    let script = CallerScript::new()
        .wait_for_agent(WAIT_MS)
        .say("Hi, my internet keeps dropping every evening.")
        .wait_for_agent(WAIT_MS)
        .hang_up();
    let gemini = crate::learning::start_gemini();
    // Every embedding request hangs far longer than the retrieval budget.
    gemini.set_faults(iace::sim::gemini::GeminiFaults {
        stall: Some(Duration::from_secs(30)),
        ..Default::default()
    });
    let setup = VoiceSetup {
        groq: support_rules(),
        ..VoiceSetup::new(CallerScripts::new(script))
    };
    let app = spawn_voice_app(setup, |s| {
        s.gemini = crate::learning::gemini_settings(&gemini, 100);
        s.learning.retrieval_budget_ms = 150;
    })
    .await;
    let t = app.create_tenant(NUMBER).await;
    let (report, call) = converse(&app, &t).await;
    assert!(report.script_completed, "{}", report.summary());
    let agent = utterances(&call, "agent");
    assert!(
        agent
            .iter()
            .any(|u| u["text"].as_str().unwrap().contains("restart your router")),
        "{call}"
    );
    // The turn went on without retrieval: the retrieval was cut at its budget.
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"iace_retrieval_duration_seconds_count{result="timed_out"}"#),
        "{metrics}"
    );
}
