//! The Telnyx Call Control client against the in-process Telnyx simulator over real sockets:
//! commands, auth, retries and the "call already ended" answer; and the simulator's signed webhooks
//! as a receiver sees them (verification, redelivery, duplicate and reordered deliveries).

use crate::helpers::{free_port, project_dir, serve_routes};
use actix_web::{web, HttpRequest, HttpResponse};
use iace::config::{Secret, TelnyxSettings};
use iace::providers::telnyx::webhook::{verify_signature, WebhookEnvelope};
use iace::providers::telnyx::{
    AnswerRequest, CallControl, DialRequest, PlaybackRequest, RecordRequest, RejectCause,
    SpeakRequest, StreamCodec, StreamSettings, TelnyxClient, TelnyxError, TransferRequest,
};
use iace::sim::telnyx::{
    Faults, SimCallState, StreamStarted, TelnyxSim, TelnyxSimConfig, TelnyxSimHandle,
};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const API_KEY: &str = "KEY-test-telnyx";

/// One webhook as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    timestamp: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
}

impl Received {
    fn envelope(&self) -> WebhookEnvelope {
        serde_json::from_slice(&self.body).expect("webhook body is an envelope")
    }
}

/// A tiny webhook endpoint that records raw bodies and headers and answers with planned statuses
/// (200 once the plan is used up).
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    plan: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start() -> (Self, String) {
        let receiver = Self::default();
        let state = receiver.clone();
        let port = serve_routes(move |cfg| {
            cfg.app_data(web::Data::new(state.clone()))
                .route("/webhooks/telnyx", web::post().to(receive));
        });
        (receiver, format!("http://127.0.0.1:{port}/webhooks/telnyx"))
    }

    fn answer_next_with(&self, statuses: &[u16]) {
        self.plan.lock().unwrap().extend(statuses);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn event_types(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.envelope().data.event_type)
            .collect()
    }

    /// Waits until at least `n` webhooks arrived; fails the test with what it saw otherwise.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} webhooks, got {:?}",
                self.event_types()
            );
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Receiver>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    state.received.lock().unwrap().push(Received {
        timestamp: header("telnyx-timestamp"),
        signature: header("telnyx-signature-ed25519"),
        body: body.to_vec(),
    });
    let status = state.plan.lock().unwrap().pop_front().unwrap_or(200);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

fn sim_config(webhook_url: &str) -> TelnyxSimConfig {
    TelnyxSimConfig {
        webhook_url: webhook_url.to_owned(),
        api_key: API_KEY.to_owned(),
        answer_delay_ms: 20,
        media_duration_ms: 20,
        webhook_retry_backoff_ms: 10,
        ..TelnyxSimConfig::default()
    }
}

async fn start_sim(webhook_url: &str) -> TelnyxSimHandle {
    TelnyxSim::start(sim_config(webhook_url))
        .await
        .expect("the simulator starts")
}

fn client_for(sim: &TelnyxSimHandle, api_key: &str) -> TelnyxClient {
    TelnyxClient::new(&TelnyxSettings {
        api_key: Secret::new(api_key),
        base_url: sim.base_url(),
        webhook_public_key: sim.public_key_b64(),
        connection_id: "conn-test".into(),
        request_timeout_ms: 1000,
        max_retries: 2,
        retry_backoff_ms: 10,
        webhook_tolerance_secs: 300,
    })
}

/// Waits until the simulated call reaches `state`.
async fn wait_for_state(sim: &TelnyxSimHandle, id: &str, state: SimCallState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while sim.call(id).map(|c| c.state) != Some(state) {
        assert!(
            Instant::now() < deadline,
            "call {id} never reached {state:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_web::test]
async fn every_command_reaches_the_simulator_with_its_body_and_a_fresh_command_id() {
    let (_receiver, url) = Receiver::start().await;
    let sim = start_sim(&url).await;
    let telnyx = client_for(&sim, API_KEY);
    let control: &dyn CallControl = &telnyx;

    let dialed = control
        .dial(DialRequest {
            to: "+15550002222".into(),
            from: "+15550001111".into(),
            client_state: Some("call-1".into()),
            timeout_secs: Some(30),
            ..DialRequest::default()
        })
        .await
        .expect("dial succeeds");
    assert!(dialed.call_control_id.starts_with("v3:"));
    let out = dialed.call_control_id.as_str();
    wait_for_state(&sim, out, SimCallState::Answered).await;

    control
        .speak(
            out,
            SpeakRequest {
                payload: "Hello".into(),
                voice: "AWS.Polly.Joanna-Neural".into(),
                language: None,
            },
        )
        .await
        .unwrap();
    control
        .playback_start(
            out,
            PlaybackRequest {
                audio_url: "https://example.com/a.mp3".into(),
                overlay: false,
            },
        )
        .await
        .unwrap();
    let stream = StreamSettings::bidirectional("wss://engine/media/1", StreamCodec::Pcma);
    control.streaming_start(out, stream).await.unwrap();
    control.streaming_stop(out).await.unwrap();
    control.send_dtmf(out, "12#").await.unwrap();
    control
        .record_start(out, RecordRequest::default())
        .await
        .unwrap();
    control.record_stop(out).await.unwrap();
    control
        .transfer(
            out,
            TransferRequest {
                to: "+15550003333".into(),
                from: None,
            },
        )
        .await
        .unwrap();
    control.hangup(out).await.unwrap();

    let inbound = sim.place_inbound_call("+15550004444", "+15550005555");
    control
        .answer(
            &inbound,
            AnswerRequest {
                stream: Some(StreamSettings::bidirectional(
                    "wss://engine/media/2",
                    StreamCodec::Pcmu,
                )),
                client_state: None,
            },
        )
        .await
        .unwrap();
    let rejected = sim.place_inbound_call("+15550006666", "+15550005555");
    control
        .reject(&rejected, RejectCause::UserBusy)
        .await
        .unwrap();

    let commands = sim.commands();
    let actions: Vec<&str> = commands.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "dial",
            "speak",
            "playback_start",
            "streaming_start",
            "streaming_stop",
            "send_dtmf",
            "record_start",
            "record_stop",
            "transfer",
            "hangup",
            "answer",
            "reject"
        ]
    );
    assert!(commands.iter().all(|c| c.status == 200), "{commands:?}");
    let ids: HashSet<_> = commands.iter().map(|c| c.command_id.clone()).collect();
    assert_eq!(ids.len(), commands.len(), "every command has its own id");
    assert!(ids
        .iter()
        .all(|id| id.as_deref().is_some_and(|i| i.len() == 36)));

    let body = |action: &str| {
        commands
            .iter()
            .find(|c| c.action == action)
            .map(|c| c.body.clone())
            .unwrap()
    };
    let dial = body("dial");
    assert_eq!(dial["connection_id"], "conn-test");
    assert_eq!(dial["to"], "+15550002222");
    assert_eq!(dial["timeout_secs"], 30);
    assert_eq!(dial["client_state"], "Y2FsbC0x", "client_state is base64");
    assert_eq!(commands[0].call_control_id.as_deref(), Some(out));
    assert_eq!(body("speak")["voice"], "AWS.Polly.Joanna-Neural");
    assert_eq!(
        body("streaming_start")["stream_bidirectional_codec"],
        "PCMA"
    );
    assert_eq!(body("send_dtmf")["digits"], "12#");
    assert_eq!(body("record_start")["channels"], "single");
    assert_eq!(body("transfer")["to"], "+15550003333");
    assert_eq!(body("reject")["cause"], "USER_BUSY");
    let answer = body("answer");
    assert_eq!(answer["stream_url"], "wss://engine/media/2");
    assert_eq!(answer["stream_track"], "inbound_track");
    assert_eq!(answer["stream_bidirectional_mode"], "rtp");
    assert_eq!(answer["stream_bidirectional_codec"], "PCMU");

    let ended = sim.call(out).unwrap();
    assert_eq!(ended.state, SimCallState::Ended);
    assert_eq!(ended.hangup_source.as_deref(), Some("caller"));
    assert_eq!(
        sim.call(&rejected).unwrap().hangup_cause.as_deref(),
        Some("user_busy")
    );
    sim.stop().await;
}

#[actix_web::test]
async fn a_wrong_api_key_is_unauthorized() {
    let (_receiver, url) = Receiver::start().await;
    let sim = start_sim(&url).await;
    let err = client_for(&sim, "KEY-wrong")
        .dial(DialRequest {
            to: "+15550002222".into(),
            from: "+15550001111".into(),
            ..DialRequest::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TelnyxError::Unauthorized), "{err:?}");
    assert!(sim.commands().is_empty());
}

#[actix_web::test]
async fn a_command_on_an_ended_call_is_call_ended_and_not_retried() {
    let (_receiver, url) = Receiver::start().await;
    let sim = start_sim(&url).await;
    let telnyx = client_for(&sim, API_KEY);
    let id = sim.place_inbound_call("+15550001111", "+15550002222");
    assert!(sim.caller_hangs_up(&id));

    let err = telnyx.hangup(&id).await.unwrap_err();
    assert!(matches!(err, TelnyxError::CallEnded), "{err:?}");
    let commands = sim.commands();
    assert_eq!(commands.len(), 1, "exactly one attempt: {commands:?}");
    assert_eq!(commands[0].status, 422);

    let err = telnyx
        .hangup("v3:no-such-call")
        .await
        .expect_err("unknown call");
    assert!(
        matches!(err, TelnyxError::Rejected { status: 404, .. }),
        "{err:?}"
    );
}

#[actix_web::test]
async fn a_server_error_is_retried_with_the_same_command_id() {
    let (_receiver, url) = Receiver::start().await;
    let sim = start_sim(&url).await;
    let telnyx = client_for(&sim, API_KEY);
    let id = sim.place_inbound_call("+15550001111", "+15550002222");
    sim.set_faults(Faults {
        fail_next_commands_with_5xx: 2,
        ..Faults::default()
    });

    telnyx
        .answer(&id, AnswerRequest::default())
        .await
        .expect("the third attempt succeeds");

    let commands = sim.commands();
    let statuses: Vec<u16> = commands.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    assert!(commands[0].command_id.is_some());
    assert!(commands
        .iter()
        .all(|c| c.command_id == commands[0].command_id));
    assert_eq!(sim.call(&id).unwrap().state, SimCallState::Answered);

    // More failures than retries: the last status comes back.
    sim.set_faults(Faults {
        fail_next_commands_with_5xx: 3,
        ..Faults::default()
    });
    let err = telnyx.hangup(&id).await.unwrap_err();
    assert!(
        matches!(err, TelnyxError::Rejected { status: 503, .. }),
        "{err:?}"
    );
}

#[actix_web::test]
async fn a_timed_out_command_is_retried_and_runs_once() {
    let (receiver, url) = Receiver::start().await;
    let sim = start_sim(&url).await;
    let telnyx = TelnyxClient::new(&TelnyxSettings {
        api_key: Secret::new(API_KEY),
        base_url: format!("{}/v2", sim.base_url()),
        webhook_public_key: String::new(),
        connection_id: "conn-test".into(),
        request_timeout_ms: 100,
        max_retries: 1,
        retry_backoff_ms: 10,
        webhook_tolerance_secs: 300,
    });
    let id = sim.place_inbound_call("+15550001111", "+15550002222");
    receiver.wait_for(1).await;
    sim.set_faults(Faults {
        command_delay_ms: 300,
        ..Faults::default()
    });

    let started = Instant::now();
    let err = telnyx
        .answer(&id, AnswerRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TelnyxError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(600));

    // Both attempts reach Telnyx eventually; the repeated command_id runs only once.
    sim.wait_for_webhook(&id, "call.answered", Duration::from_secs(2))
        .await
        .expect("the call is answered");
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    let commands = sim.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!(commands[0].command_id, commands[1].command_id);
    assert!(commands.iter().all(|c| c.status == 200), "{commands:?}");
    let answered = receiver
        .event_types()
        .iter()
        .filter(|t| *t == "call.answered")
        .count();
    assert_eq!(answered, 1);
}

#[actix_web::test]
async fn webhooks_are_signed_with_the_simulators_key_and_describe_the_call() {
    let (receiver, url) = Receiver::start().await;
    let streams: Arc<Mutex<Vec<StreamStarted>>> = Arc::default();
    let seen = streams.clone();
    let sim = TelnyxSim::start(TelnyxSimConfig {
        on_stream_started: Some(Arc::new(move |s| seen.lock().unwrap().push(s))),
        ..sim_config(&url)
    })
    .await
    .unwrap();
    let telnyx = client_for(&sim, API_KEY);

    let id = sim.place_inbound_call("+15550001111", "+15550002222");
    receiver.wait_for(1).await;
    telnyx
        .answer(
            &id,
            AnswerRequest {
                stream: Some(StreamSettings::bidirectional(
                    "wss://engine/media/x",
                    StreamCodec::Pcmu,
                )),
                client_state: Some("org-7".into()),
            },
        )
        .await
        .unwrap();
    assert!(sim.caller_presses(&id, "5"));
    receiver.wait_for(4).await;
    assert!(sim.caller_hangs_up(&id));
    let got = receiver.wait_for(6).await;

    let now = chrono::Utc::now().timestamp();
    for webhook in &got {
        assert_eq!(
            verify_signature(
                &sim.public_key_b64(),
                webhook.timestamp.as_deref(),
                webhook.signature.as_deref(),
                &webhook.body,
                now,
                300,
            ),
            Ok(()),
            "{}",
            String::from_utf8_lossy(&webhook.body)
        );
    }
    assert_eq!(
        receiver.event_types(),
        [
            "call.initiated",
            "call.answered",
            "streaming.started",
            "call.dtmf.received",
            "streaming.stopped",
            "call.hangup"
        ]
    );
    let envelopes: Vec<WebhookEnvelope> = got.iter().map(Received::envelope).collect();
    let ids: HashSet<_> = envelopes.iter().map(|e| e.data.id.clone()).collect();
    assert_eq!(ids.len(), envelopes.len(), "every event has its own id");
    assert!(envelopes.iter().all(|e| e.data.occurred_at.is_some()));
    assert!(envelopes
        .iter()
        .all(|e| e.data.payload.call_control_id.as_deref() == Some(id.as_str())));

    let initiated = &envelopes[0].data.payload;
    assert!(initiated.is_incoming());
    assert_eq!(initiated.state.as_deref(), Some("parked"));
    assert_eq!(initiated.from.as_deref(), Some("+15550001111"));
    assert_eq!(initiated.to.as_deref(), Some("+15550002222"));
    assert_eq!(
        envelopes[2].data.payload.stream_url.as_deref(),
        Some("wss://engine/media/x")
    );
    assert_eq!(envelopes[3].data.payload.digit.as_deref(), Some("5"));
    let hangup = &envelopes[5].data.payload;
    assert_eq!(hangup.hangup_cause.as_deref(), Some("normal_clearing"));
    assert_eq!(hangup.hangup_source.as_deref(), Some("caller"));
    assert_eq!(
        hangup.client_state_decoded().as_deref(),
        Some("org-7"),
        "client_state comes back as the last command set it"
    );

    let streams = streams.lock().unwrap().clone();
    assert_eq!(streams.len(), 1, "the stream hook ran once");
    assert_eq!(streams[0].stream_url, "wss://engine/media/x");
    assert_eq!(
        streams[0].stream_bidirectional_codec.as_deref(),
        Some("PCMU")
    );
}

#[actix_web::test]
async fn an_outbound_call_rings_then_answers_and_reports_machine_detection() {
    let (receiver, url) = Receiver::start().await;
    let sim = start_sim(&url).await;
    let telnyx = client_for(&sim, API_KEY);
    let dialed = telnyx
        .dial(DialRequest {
            to: "+15550002222".into(),
            from: "+15550001111".into(),
            answering_machine_detection: Some("detect".into()),
            stream: Some(StreamSettings::bidirectional(
                "wss://engine/media/o",
                StreamCodec::Pcmu,
            )),
            ..DialRequest::default()
        })
        .await
        .unwrap();
    receiver.wait_for(4).await;
    assert_eq!(
        receiver.event_types(),
        [
            "call.initiated",
            "call.answered",
            "streaming.started",
            "call.machine.detection.ended"
        ]
    );
    let got = receiver.received();
    let initiated = got[0].envelope().data.payload;
    assert_eq!(initiated.direction.as_deref(), Some("outgoing"));
    assert_eq!(
        initiated.call_control_id.as_deref(),
        Some(dialed.call_control_id.as_str())
    );
    assert_eq!(
        got[3].envelope().data.payload.result.as_deref(),
        Some("human")
    );

    sim.caller_hangs_up(&dialed.call_control_id);
    let hangup = receiver.wait_for(6).await[5].envelope().data.payload;
    assert_eq!(hangup.hangup_source.as_deref(), Some("callee"));
}

#[actix_web::test]
async fn a_webhook_answered_with_500_is_redelivered_with_the_same_id() {
    let (receiver, url) = Receiver::start().await;
    // The receiver's address is set after start, as a test engine on port 0 would.
    let sim = start_sim("http://127.0.0.1:9/unset").await;
    sim.set_webhook_url(&url);
    receiver.answer_next_with(&[500, 503]);

    let id = sim.place_inbound_call("+15550001111", "+15550002222");
    let got = receiver.wait_for(3).await;

    let envelopes: Vec<WebhookEnvelope> = got.iter().map(Received::envelope).collect();
    assert!(envelopes.iter().all(|e| e.data.id == envelopes[0].data.id));
    let attempts: Vec<Option<u32>> = envelopes
        .iter()
        .map(|e| e.meta.as_ref().and_then(|m| m.attempt))
        .collect();
    assert_eq!(attempts, [Some(1), Some(2), Some(3)]);
    let accepted = sim
        .wait_for_webhook(&id, "call.initiated", Duration::from_secs(2))
        .await
        .expect("delivered in the end");
    assert_eq!(accepted.attempt, 3);
    let statuses: Vec<Option<u16>> = sim.webhooks_delivered().iter().map(|d| d.status).collect();
    assert_eq!(statuses, [Some(500), Some(503), Some(200)]);
}

#[actix_web::test]
async fn delivery_faults_duplicate_and_reorder_webhooks() {
    let (receiver, url) = Receiver::start().await;
    let sim = start_sim(&url).await;
    sim.set_faults(Faults {
        duplicate_webhooks: true,
        ..Faults::default()
    });
    let first = sim.place_inbound_call("+15550001111", "+15550002222");
    let got = receiver.wait_for(2).await;
    assert_eq!(got[0].envelope().data.id, got[1].envelope().data.id);
    assert_eq!(
        got[1].envelope().data.payload.call_control_id.as_deref(),
        Some(first.as_str())
    );

    sim.set_faults(Faults {
        reorder_webhooks: true,
        ..Faults::default()
    });
    let second = sim.place_inbound_call("+15550003333", "+15550002222");
    sim.caller_presses(&second, "1");
    receiver.wait_for(4).await;
    let types: Vec<String> = receiver.event_types()[2..].to_vec();
    assert_eq!(types, ["call.dtmf.received", "call.initiated"]);
}

/// `iace sim` serves on its address with the development key, and `iace sim call` makes it place
/// an inbound call.
#[test]
fn the_sim_subcommand_serves_and_places_calls_on_request() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let port = free_port();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_iace"))
        .current_dir(project_dir())
        .env("APP_ENV", "test")
        .args(["sim", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start iace sim");
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let key_line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("public key"))
        .expect("the sim prints its public key");
    assert!(
        key_line.contains(&iace::providers::telnyx::dev_key::dev_public_key_b64()),
        "{key_line}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_iace"))
        .current_dir(project_dir())
        .env("APP_ENV", "test")
        .args([
            "sim",
            "call",
            "--from",
            "+15550001111",
            "--to",
            "+15550002222",
        ])
        .args(["--sim-url", &format!("http://127.0.0.1:{port}")])
        .output()
        .expect("run iace sim call");
    let _ = sim.kill();
    let _ = sim.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim()
        .starts_with("v3:"));
}

#[actix_web::test]
async fn two_hundred_concurrent_calls_each_deliver_their_whole_lifecycle() {
    let (receiver, url) = Receiver::start().await;
    let sim = start_sim(&url).await;
    let telnyx = client_for(&sim, API_KEY);
    let ids: Vec<String> = (0..200)
        .map(|i| sim.place_inbound_call(&format!("+1555100{i:04}"), "+15550002222"))
        .collect();
    let results = futures_util::future::join_all(ids.iter().map(|id| {
        let telnyx = telnyx.clone();
        async move {
            telnyx.answer(id, AnswerRequest::default()).await?;
            telnyx.hangup(id).await
        }
    }))
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let got = receiver.wait_for(600).await;
    for id in &ids {
        let types: Vec<String> = got
            .iter()
            .map(Received::envelope)
            .filter(|e| e.data.payload.call_control_id.as_deref() == Some(id.as_str()))
            .map(|e| e.data.event_type)
            .collect();
        assert_eq!(
            types,
            ["call.initiated", "call.answered", "call.hangup"],
            "{id}"
        );
    }
}
