//! The simulated caller against a small fake engine media socket (actix-ws): Telnyx's frames in
//! real time, playback honouring `mark` and `clear`, barge-in, turn latency, the deadline; and the
//! simulator suite whose Telnyx simulator starts a caller for every streamed call.

use crate::helpers::serve_routes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use iace::domain::audio::{Codec, FRAME_BYTES, SPEECH_ENERGY_THRESHOLD};
use iace::providers::telnyx::media::{InboundFrame, OutboundFrame};
use iace::sim::caller::{
    CallEnd, CallerConfig, CallerError, CallerScript, CallerScripts, CallerSim, ReceivedFrame,
    SentFrame,
};
use iace::sim::suite::{SimSuite, SimSuiteConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake engine does on its socket.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    /// On `start`: this much audio at once, then a mark named `greeting`.
    greeting_ms: Option<u32>,
    /// This long after the greeting was sent: `clear`.
    clear_after_ms: Option<u64>,
    /// Once the caller stops speaking (three silent frames after speech): wait, then this much
    /// audio and a mark named `reply-N`.
    reply: Option<(u64, u32)>,
    /// On `start`, before anything else: an unknown event and a media frame that is not base64.
    junk: bool,
}

/// Something the fake engine saw or did, with when.
#[derive(Debug, Clone)]
enum Event {
    /// A text frame from the caller, parsed.
    In(InboundFrame),
    /// Something it sent: `audio`, `mark:<name>` or `clear`.
    Out(String),
    Closed,
}

/// Everything the fake engine saw and did, in order.
type Log = Arc<Mutex<Vec<(Instant, Event)>>>;

#[derive(Clone)]
struct FakeEngine {
    url: String,
    log: Log,
}

impl FakeEngine {
    async fn start(behaviour: Behaviour) -> Self {
        let log: Log = Arc::default();
        let state = (log.clone(), behaviour);
        let port = serve_routes(move |cfg| {
            cfg.app_data(web::Data::new(state.clone()))
                .route("/media/{token}", web::get().to(media_socket));
        });
        Self {
            url: format!("ws://127.0.0.1:{port}/media/test-token"),
            log,
        }
    }

    fn events(&self) -> Vec<(Instant, Event)> {
        self.log.lock().unwrap().clone()
    }

    fn inbound(&self) -> Vec<(Instant, InboundFrame)> {
        self.events()
            .into_iter()
            .filter_map(|(at, e)| match e {
                Event::In(frame) => Some((at, frame)),
                _ => None,
            })
            .collect()
    }

    fn when_sent(&self, what: &str) -> Instant {
        self.events()
            .iter()
            .find_map(|(at, e)| matches!(e, Event::Out(w) if w == what).then_some(*at))
            .unwrap_or_else(|| panic!("the engine never sent {what}"))
    }

    fn when_mark_echoed(&self, name: &str) -> Instant {
        self.inbound()
            .iter()
            .find_map(|(at, f)| match f {
                InboundFrame::Mark { mark, .. } if mark.name == name => Some(*at),
                _ => None,
            })
            .unwrap_or_else(|| panic!("mark {name} was never echoed: {:?}", self.events()))
    }
}

async fn media_socket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<(Log, Behaviour)>,
) -> actix_web::Result<HttpResponse> {
    let (response, session, mut messages) = actix_ws::handle(&req, body)?;
    let (log, behaviour) = state.get_ref().clone();
    actix_web::rt::spawn(async move {
        let record = |e: Event| log.lock().unwrap().push((Instant::now(), e));
        let mut codec = Codec::Pcmu;
        let (mut spoke, mut silent_after, mut replies) = (false, 0, 0);
        while let Some(Ok(message)) = messages.next().await {
            let actix_ws::Message::Text(text) = message else {
                if let actix_ws::Message::Close(_) = message {
                    record(Event::Closed);
                    break;
                }
                continue;
            };
            let frame: InboundFrame = serde_json::from_str(&text).expect("a Telnyx frame");
            record(Event::In(frame.clone()));
            match frame {
                InboundFrame::Start { start, .. } => {
                    codec = Codec::from_telnyx(&start.media_format.encoding).unwrap();
                    if behaviour.junk {
                        let mut session = session.clone();
                        session.text(r#"{"event":"bogus"}"#).await.unwrap();
                        let bad = r#"{"event":"media","media":{"payload":"not base64!"}}"#;
                        session.text(bad).await.unwrap();
                    }
                    if let Some(ms) = behaviour.greeting_ms {
                        send_audio(session.clone(), codec, ms, "greeting", &record).await;
                        if let Some(after) = behaviour.clear_after_ms {
                            let mut session = session.clone();
                            let log = log.clone();
                            actix_web::rt::spawn(async move {
                                actix_web::rt::time::sleep(Duration::from_millis(after)).await;
                                log.lock()
                                    .unwrap()
                                    .push((Instant::now(), Event::Out("clear".into())));
                                session.text(OutboundFrame::Clear.to_json()).await.unwrap();
                            });
                        }
                    }
                }
                InboundFrame::Media { media, .. } => {
                    let audio = media.audio().unwrap();
                    if codec.energy(&audio) > SPEECH_ENERGY_THRESHOLD {
                        spoke = true;
                        silent_after = 0;
                    } else if spoke {
                        silent_after += 1;
                    }
                    if spoke && silent_after == 3 {
                        spoke = false;
                        if let Some((delay, ms)) = behaviour.reply {
                            replies += 1;
                            actix_web::rt::time::sleep(Duration::from_millis(delay)).await;
                            let mark = format!("reply-{replies}");
                            send_audio(session.clone(), codec, ms, &mark, &record).await;
                        }
                    }
                }
                _ => {}
            }
        }
    });
    Ok(response)
}

/// `ms` of agent audio as 20 ms media frames, all at once, then a mark.
async fn send_audio(
    mut session: actix_ws::Session,
    codec: Codec,
    ms: u32,
    mark: &str,
    record: &impl Fn(Event),
) {
    record(Event::Out("audio".into()));
    for frame in codec.speech_like(ms).chunks(FRAME_BYTES) {
        session
            .text(OutboundFrame::media(frame).to_json())
            .await
            .unwrap();
    }
    record(Event::Out(format!("mark:{mark}")));
    session
        .text(OutboundFrame::mark(mark).to_json())
        .await
        .unwrap();
}

fn config(codec: Codec, script: CallerScript) -> CallerConfig {
    CallerConfig {
        call_control_id: "v3:caller-test".into(),
        from: "+15550001111".into(),
        to: "+15550002222".into(),
        deadline: Duration::from_secs(10),
        ..CallerConfig::new(codec, script)
    }
}

async fn run(engine: &FakeEngine, config: CallerConfig) -> iace::sim::caller::CallerReport {
    match CallerSim::run(&engine.url, config).await {
        Ok(report) => report,
        Err(err) => panic!("{err}"),
    }
}

async fn caller_speaks_its_script_in_real_time(codec: Codec) {
    let engine = FakeEngine::start(Behaviour::default()).await;
    let script = CallerScript::new()
        .say_for("I would like to book an appointment.", 600)
        .dtmf("5")
        .silence(400)
        .hang_up();
    let report = run(&engine, config(codec, script)).await;
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;

    let frames = engine.inbound();
    assert!(matches!(frames[0].1, InboundFrame::Connected { .. }));
    match &frames[1].1 {
        InboundFrame::Start {
            stream_id,
            start,
            sequence_number,
        } => {
            assert_eq!(stream_id, &report.stream_id);
            assert_eq!(sequence_number.as_deref(), Some("1"));
            assert_eq!(start.media_format.encoding, codec.telnyx_name());
            assert_eq!(start.media_format.sample_rate, 8000);
            assert_eq!(start.media_format.channels, 1);
            assert_eq!(start.call_control_id.as_deref(), Some("v3:caller-test"));
            assert_eq!(start.from.as_deref(), Some("+15550001111"));
            assert_eq!(start.to.as_deref(), Some("+15550002222"));
        }
        other => panic!("expected start, got {other:?}"),
    }
    let media: Vec<_> = frames
        .iter()
        .filter_map(|(at, f)| match f {
            InboundFrame::Media {
                media,
                sequence_number,
                stream_id,
            } => Some((*at, media.clone(), sequence_number.clone(), stream_id)),
            _ => None,
        })
        .collect();
    assert_eq!(media.len(), 50, "600 ms of speech and 400 ms of silence");
    for (i, (_, payload, sequence, stream_id)) in media.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(stream_id, &&report.stream_id);
        assert_eq!(payload.track.as_deref(), Some("inbound"));
        assert_eq!(payload.chunk.as_deref(), Some(n.to_string().as_str()));
        assert_eq!(
            payload.timestamp.as_deref(),
            Some(((n - 1) * 20).to_string().as_str())
        );
        assert_eq!(sequence.as_deref(), Some((n + 1).to_string().as_str()));
        let audio = payload.audio().unwrap();
        assert_eq!(audio.len(), FRAME_BYTES);
        let speech = codec.energy(&audio) > SPEECH_ENERGY_THRESHOLD;
        assert_eq!(speech, i < 30, "frame {i}");
    }
    let spread = media.last().unwrap().0 - media[0].0;
    assert!(
        spread >= Duration::from_millis(49 * 20 * 8 / 10) && spread <= Duration::from_millis(1200),
        "50 frames spread over {spread:?}"
    );
    let dtmf = frames
        .iter()
        .position(|(_, f)| matches!(f, InboundFrame::Dtmf { dtmf, .. } if dtmf.digit == "5"))
        .expect("a dtmf frame");
    assert_eq!(dtmf, 2 + 30, "the key is pressed right after the speech");
    assert!(matches!(
        frames.last().unwrap().1,
        InboundFrame::Stop { ref sequence_number, .. } if sequence_number.as_deref() == Some("52")
    ));
    assert!(matches!(engine.events().last().unwrap().1, Event::Closed));

    assert_eq!(report.ended, CallEnd::HungUp);
    assert!(report.script_completed);
    assert_eq!(report.codec, codec);
    assert_eq!(report.media_frames_sent(), 50);
    assert_eq!(report.turns.len(), 1);
    assert_eq!(report.turns[0].text, "I would like to book an appointment.");
    let turn = &report.turns[0];
    let spoken = turn.ended_at_ms.unwrap() - turn.started_at_ms;
    assert!((560..=720).contains(&spoken), "spoke for {spoken} ms");
    assert_eq!(report.turn_latencies_ms(), [None]);
    assert!(report.received.is_empty() || report.agent_audio_bytes() == 0);
    assert!(matches!(report.sent.last().unwrap().frame, SentFrame::Stop));
}

#[actix_web::test]
async fn caller_speaks_its_script_in_real_time_20ms_pcmu_frames() {
    caller_speaks_its_script_in_real_time(Codec::Pcmu).await;
}

#[actix_web::test]
async fn caller_speaks_its_script_in_real_time_20ms_pcma_frames() {
    caller_speaks_its_script_in_real_time(Codec::Pcma).await;
}

#[actix_web::test]
async fn caller_echoes_marks_after_playback_and_reports_turn_latency() {
    let engine = FakeEngine::start(Behaviour {
        greeting_ms: Some(400),
        reply: Some((150, 300)),
        ..Behaviour::default()
    })
    .await;
    let script = CallerScript::new()
        .wait_for_agent(3000)
        .say_for("My internet keeps dropping.", 400)
        .wait_for_agent(3000)
        .hang_up();
    let report = run(&engine, config(Codec::Pcmu, script)).await;

    // The greeting's mark comes back once its 400 ms have played, not when it arrived.
    let played = engine.when_mark_echoed("greeting") - engine.when_sent("mark:greeting");
    assert!(
        played >= Duration::from_millis(340) && played <= Duration::from_millis(700),
        "greeting mark echoed after {played:?}"
    );
    let echoed = engine.inbound().into_iter().find_map(|(_, f)| match f {
        InboundFrame::Mark { stream_id, mark } => Some((stream_id, mark.name)),
        _ => None,
    });
    assert_eq!(echoed, Some((report.stream_id.clone(), "greeting".into())));
    // The caller starts speaking only after the greeting played out and went quiet.
    let first_speech = report
        .sent
        .iter()
        .find(|f| matches!(f.frame, SentFrame::Media { speech: true, .. }))
        .unwrap()
        .at_ms;
    assert!(
        first_speech >= 600,
        "spoke at {first_speech} ms:\n{}",
        report.summary()
    );
    engine.when_mark_echoed("reply-1");

    assert_eq!(report.ended, CallEnd::HungUp);
    assert_eq!(report.marks_echoed, ["greeting", "reply-1"]);
    assert_eq!(report.waits.len(), 2);
    assert!(
        report.waits.iter().all(|w| w.agent_finished),
        "{:?}",
        report.waits
    );
    assert_eq!(report.agent_turns.len(), 2);
    assert_eq!(report.agent_turns[0].audio_ms(), 400);
    assert_eq!(report.agent_turns[0].played_ms(), 400);
    assert_eq!(report.agent_turns[0].marks, ["greeting"]);
    assert_eq!(report.agent_turns[1].audio_ms(), 300);
    assert_eq!(report.agent_turns[1].played_ms(), 300);
    // Three silent frames (60 ms) for the fake engine to notice, then its 150 ms delay.
    let latency = report.turns[0].first_agent_audio_after_ms.unwrap();
    assert!(
        (150..=600).contains(&latency),
        "turn latency {latency} ms:\n{}",
        report.summary()
    );
    assert_eq!(report.agent_audio_bytes(), 700 * 8);
}

#[actix_web::test]
async fn caller_honours_clear_by_dropping_queued_audio_and_returning_marks() {
    let engine = FakeEngine::start(Behaviour {
        greeting_ms: Some(2000),
        clear_after_ms: Some(300),
        ..Behaviour::default()
    })
    .await;
    let script = CallerScript::new().wait_for_agent(3000).hang_up();
    let report = run(&engine, config(Codec::Pcma, script)).await;

    // The pending mark comes back with the clear, long before the 2 s would have played.
    let after_clear = engine.when_mark_echoed("greeting") - engine.when_sent("clear");
    assert!(
        after_clear <= Duration::from_millis(150),
        "mark echoed {after_clear:?} after the clear"
    );
    assert_eq!(report.clears(), 1);
    assert_eq!(report.marks_echoed, ["greeting"]);
    let turn = &report.agent_turns[0];
    assert_eq!(turn.audio_ms(), 2000);
    assert_eq!(turn.clears, 1);
    assert!(
        (200..=500).contains(&turn.played_ms()),
        "played {} ms:\n{}",
        turn.played_ms(),
        report.summary()
    );
    assert_eq!(turn.bytes_played + turn.bytes_cleared, turn.bytes_received);
    // The wait ended because the agent went quiet, well before its 3 s limit.
    assert!(report.waits[0].agent_finished);
    assert!(report.duration_ms < 2000, "{}", report.summary());
}

#[actix_web::test]
async fn caller_interrupts_the_agent_while_it_is_still_speaking() {
    let engine = FakeEngine::start(Behaviour {
        greeting_ms: Some(3000),
        ..Behaviour::default()
    })
    .await;
    let script = CallerScript::new()
        .interrupt(400, "Sorry, can I stop you there?", 500)
        .silence(100)
        .hang_up();
    let report = run(&engine, config(Codec::Pcmu, script)).await;

    let greeting = engine.when_sent("audio");
    let first_speech = engine
        .inbound()
        .into_iter()
        .find_map(|(at, f)| match f {
            InboundFrame::Media { media, .. }
                if Codec::Pcmu.energy(&media.audio().unwrap()) > SPEECH_ENERGY_THRESHOLD =>
            {
                Some(at)
            }
            _ => None,
        })
        .expect("the caller spoke");
    let into_agent = first_speech - greeting;
    assert!(
        into_agent >= Duration::from_millis(360) && into_agent <= Duration::from_millis(800),
        "barged in {into_agent:?} into the agent's audio"
    );
    assert_eq!(report.turns.len(), 1);
    assert!(report.turns[0].interrupted_agent);
    assert_eq!(report.turns[0].text, "Sorry, can I stop you there?");
    // No clear came, so the mark is still pending when the caller hangs up.
    assert!(report.marks_echoed.is_empty());
    assert_eq!(report.ended, CallEnd::HungUp);
}

#[actix_web::test]
async fn caller_stays_on_the_line_after_its_script_until_the_engine_closes() {
    let engine = FakeEngine::start(Behaviour::default()).await;
    let script = CallerScript::new().say_for("Hello?", 200);
    let config = CallerConfig {
        deadline: Duration::from_millis(600),
        ..config(Codec::Pcmu, script)
    };
    let err = CallerSim::run(&engine.url, config).await.unwrap_err();
    let CallerError::Deadline { report, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(report.ended, CallEnd::Deadline);
    assert!(report.script_completed);
    // Still streaming (silence) until the deadline.
    assert!(report.media_frames_sent() >= 25, "{}", report.summary());
    let shown = err.to_string();
    assert!(shown.contains("missed its deadline"), "{shown}");
    assert!(shown.contains("Start"), "every frame is shown: {shown}");
    assert!(
        !shown.contains("payload"),
        "no audio in the report: {shown}"
    );
}

#[actix_web::test]
async fn caller_records_every_frame_it_receives_including_ones_it_does_not_understand() {
    let engine = FakeEngine::start(Behaviour {
        greeting_ms: Some(100),
        junk: true,
        ..Behaviour::default()
    })
    .await;
    let report = run(
        &engine,
        config(
            Codec::Pcmu,
            CallerScript::new().wait_for_agent(2000).hang_up(),
        ),
    )
    .await;
    let kinds: Vec<_> = report.received.iter().map(|f| &f.frame).collect();
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    assert_eq!(
        *kinds[0],
        ReceivedFrame::Unknown {
            text: r#"{"event":"bogus"}"#.into()
        }
    );
    assert_eq!(*kinds[1], ReceivedFrame::BadMedia);
    assert!(kinds[2..7]
        .iter()
        .all(|k| **k == ReceivedFrame::Media { bytes: 160 }));
    assert_eq!(report.agent_audio_bytes(), 800);
    assert_eq!(
        *kinds[7],
        ReceivedFrame::Mark {
            name: "greeting".into()
        }
    );
}

/// Answers a simulated inbound call with a bidirectional stream to `stream_url`.
async fn answer(base_url: &str, call_control_id: &str, stream_url: &str, codec: &str) {
    let response = reqwest::Client::new()
        .post(format!(
            "{base_url}/v2/calls/{call_control_id}/actions/answer"
        ))
        .bearer_auth("any-key")
        .json(&serde_json::json!({
            "stream_url": stream_url,
            "stream_track": "inbound_track",
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": codec,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

#[actix_web::test]
async fn sim_suite_starts_every_simulator_and_runs_a_caller_for_each_streamed_call() {
    let engine = FakeEngine::start(Behaviour {
        greeting_ms: Some(200),
        ..Behaviour::default()
    })
    .await;
    let short = CallerScript::new()
        .wait_for_agent(2000)
        .say_for("Hi, my internet keeps dropping every evening.", 300)
        .silence(100)
        .hang_up();
    let scripts = CallerScripts::new(CallerScript::new().hang_up()).with("+15550003333", short);
    let suite = SimSuite::start(SimSuiteConfig::ephemeral(scripts))
        .await
        .unwrap();

    // Every simulator answers on its own port.
    let groq = reqwest::Client::new()
        .post(format!("{}/chat/completions", suite.groq.base_url()))
        .json(&serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "my internet keeps dropping"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(groq.status(), 200);
    for port in [suite.deepgram.port(), suite.cartesia.port()] {
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("the simulator listens");
    }
    assert!(suite.telnyx.base_url().starts_with("http://127.0.0.1:"));

    let id = suite
        .telnyx
        .place_inbound_call("+15550004444", "+15550003333");
    answer(&suite.telnyx.base_url(), &id, &engine.url, "PCMA").await;
    let outcomes = suite
        .callers
        .wait_for_outcomes(1, Duration::from_secs(5))
        .await;
    assert_eq!(outcomes.len(), 1);
    let report = match &outcomes[0] {
        Ok(report) => report.clone(),
        Err(err) => panic!("{err}"),
    };
    assert_eq!(report.call_control_id, id);
    assert_eq!(report.codec, Codec::Pcma);
    assert_eq!(report.from, "+15550004444");
    assert_eq!(report.to, "+15550003333");
    assert_eq!(report.turns.len(), 1, "the script for the number dialled");
    assert_eq!(report.marks_echoed, ["greeting"]);
    assert_eq!(suite.caller_reports().len(), 1);
    match &engine.inbound()[1].1 {
        InboundFrame::Start { start, .. } => {
            assert_eq!(start.call_control_id.as_deref(), Some(id.as_str()));
            assert_eq!(start.media_format.encoding, "PCMA");
        }
        other => panic!("expected start, got {other:?}"),
    }
    suite.stop().await;
}
