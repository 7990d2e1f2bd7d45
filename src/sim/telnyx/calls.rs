//! Simulated calls: the state each call keeps, what each Call Control command does to it, and the
//! webhooks those changes produce (in the order Telnyx sends them). Events are queued on the call's
//! outbox under the state lock, so a call's webhooks leave in the order they happened.

use super::{delivery, DeliveredWebhook, Faults, Inner, RecordedCommand, StreamStarted};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// Where a simulated call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimCallState {
    /// Incoming, waiting for the engine to answer or reject.
    Parked,
    /// Outgoing, ringing the far end.
    Ringing,
    Answered,
    /// Transferred and connected to the transfer target.
    Bridged,
    Ended,
}

/// A snapshot of one simulated call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimCallInfo {
    pub call_control_id: String,
    pub call_leg_id: String,
    pub call_session_id: String,
    /// `incoming` or `outgoing`.
    pub direction: String,
    pub from: String,
    pub to: String,
    pub state: SimCallState,
    /// The URL media is streamed to, while streaming.
    pub stream_url: Option<String>,
    pub recording: bool,
    pub hangup_cause: Option<String>,
    pub hangup_source: Option<String>,
    /// Where the call was transferred to.
    pub transferred_to: Option<String>,
    /// What Telnyx `speak` said into the call, in order: what the caller heard from Telnyx's
    /// own voice.
    pub spoken: Vec<SpokenText>,
    /// Telnyx transcription is running (between `transcription_start` and `_stop` or hang-up).
    pub transcribing: bool,
}

/// One `speak` command as the caller heard it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpokenText {
    pub text: String,
    pub voice: String,
    pub language: Option<String>,
    /// `playback_stop` cut it off before its end.
    pub stopped: bool,
}

#[derive(Default)]
pub(crate) struct SimState {
    pub calls: HashMap<String, SimCall>,
    pub commands: Vec<RecordedCommand>,
    pub deliveries: Vec<DeliveredWebhook>,
    pub faults: Faults,
    /// What callers say when Telnyx transcribes them: each `transcription_start` sends these as
    /// final `call.transcription` webhooks, one per `transcription_gap_ms`.
    pub transcripts: Vec<String>,
    /// Overrides `TelnyxSimConfig::speech_ms_per_char` (set by a test at run time).
    pub speech_ms_per_char: Option<u64>,
    /// `(call_control_id or "dial", command_id)` of commands already run, with their answer's
    /// `data`: Telnyx runs a repeated `command_id` once.
    pub executed: HashMap<(String, String), Value>,
}

pub(crate) struct SimCall {
    info: SimCallInfo,
    connection_id: String,
    client_state: Option<String>,
    start_time: String,
    recording_started_at: Option<String>,
    /// The `stream_*` fields of the command that started the stream.
    stream_params: HashMap<String, String>,
    /// The dial asked for answering machine detection.
    dial_amd: bool,
    /// Closed (None) once the call has sent its last event, which ends its delivery task.
    outbox: Option<UnboundedSender<Value>>,
    /// The speak or playback now playing (its number), if any: only it may send `.ended`.
    playing: Option<u64>,
    /// Speaks and playbacks started so far on the call.
    media_started: u64,
}

impl SimCall {
    pub fn info(&self) -> SimCallInfo {
        self.info.clone()
    }

    fn is_incoming(&self) -> bool {
        self.info.direction == "incoming"
    }

    fn is_live(&self) -> bool {
        self.info.state != SimCallState::Ended
    }

    /// Queues one webhook: the call's common fields, then `extra` on top.
    fn emit(&self, event_type: &str, extra: Value) {
        let Some(outbox) = &self.outbox else { return };
        let mut payload = Map::new();
        let i = &self.info;
        payload.insert("call_control_id".into(), i.call_control_id.clone().into());
        payload.insert("call_leg_id".into(), i.call_leg_id.clone().into());
        payload.insert("call_session_id".into(), i.call_session_id.clone().into());
        payload.insert("connection_id".into(), self.connection_id.clone().into());
        payload.insert(
            "client_state".into(),
            self.client_state.clone().map_or(Value::Null, Value::from),
        );
        payload.insert("from".into(), i.from.clone().into());
        payload.insert("to".into(), i.to.clone().into());
        payload.insert("direction".into(), i.direction.clone().into());
        payload.insert("start_time".into(), self.start_time.clone().into());
        if let Value::Object(extra) = extra {
            payload.extend(extra);
        }
        let event = json!({
            "record_type": "event",
            "event_type": event_type,
            "id": uuid::Uuid::new_v4().to_string(),
            "occurred_at": now_rfc3339(),
            "payload": payload,
        });
        // A send error means the delivery task is gone (the sim is stopping); nothing to do.
        let _ = outbox.send(event);
    }

    /// Ends the call: stream and recording close first, as on Telnyx, then `call.hangup`.
    fn end(&mut self, cause: &str, source: &str) {
        self.info.transcribing = false;
        if let Some(url) = self.info.stream_url.take() {
            self.emit("streaming.stopped", json!({ "stream_url": url }));
        }
        self.save_recording();
        self.info.state = SimCallState::Ended;
        self.info.hangup_cause = Some(cause.to_owned());
        self.info.hangup_source = Some(source.to_owned());
        self.emit(
            "call.hangup",
            json!({
                "state": "hangup",
                "hangup_cause": cause,
                "hangup_source": source,
                "sip_hangup_cause": if cause == "normal_clearing" { "16" } else { "unspecified" },
            }),
        );
        self.outbox = None;
    }

    fn save_recording(&mut self) {
        let Some(started) = self.recording_started_at.take() else {
            return;
        };
        self.info.recording = false;
        let file = uuid::Uuid::new_v4();
        self.emit(
            "call.recording.saved",
            json!({
                "recording_started_at": started,
                "recording_ended_at": now_rfc3339(),
                "channels": "single",
                "recording_urls": {
                    "mp3": format!("https://sim.invalid/recordings/{file}.mp3"),
                    "wav": format!("https://sim.invalid/recordings/{file}.wav"),
                },
                "public_recording_urls": {},
            }),
        );
    }
}

/// Why the simulator refuses a command, rendered as Telnyx's JSON:API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimError {
    pub status: u16,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
}

impl SimError {
    pub fn body(&self) -> Value {
        json!({"errors": [{"code": self.code, "title": self.title, "detail": self.detail}]})
    }

    fn call_ended() -> Self {
        Self {
            status: 422,
            code: "90018",
            title: "Call has already ended",
            detail: "This call is no longer active and can't receive commands.".into(),
        }
    }

    fn not_found() -> Self {
        Self {
            status: 404,
            code: "10005",
            title: "Resource not found",
            detail: "No call with this call_control_id.".into(),
        }
    }

    fn invalid(detail: impl Into<String>) -> Self {
        Self {
            status: 422,
            code: "10015",
            title: "Invalid parameter",
            detail: detail.into(),
        }
    }

    pub fn unavailable() -> Self {
        Self {
            status: 503,
            code: "10011",
            title: "Service unavailable",
            detail: "Simulated failure.".into(),
        }
    }
}

/// Work to do after the state lock is released.
#[derive(Default)]
pub(crate) struct After {
    timers: Vec<(Duration, Timer)>,
    stream: Option<StreamStarted>,
}

enum Timer {
    /// The far end of an outbound call (or of a transfer) picks up.
    Answer { call_control_id: String },
    /// A speak or playback finished playing (unless stopped or replaced since).
    MediaEnded {
        call_control_id: String,
        event: &'static str,
        number: u64,
    },
    /// The caller finished a sentence Telnyx transcribes.
    Transcript {
        call_control_id: String,
        text: String,
    },
}

impl After {
    /// Arms the timers on the delivery arbiter and runs the stream hook.
    pub fn run(self, inner: &Arc<Inner>) {
        for (delay, timer) in self.timers {
            let inner2 = inner.clone();
            inner.delivery.spawn(async move {
                actix_web::rt::time::sleep(delay).await;
                fire(&inner2, timer);
            });
        }
        if let (Some(stream), Some(hook)) = (self.stream, &inner.config.on_stream_started) {
            hook(stream);
        }
    }
}

fn fire(inner: &Arc<Inner>, timer: Timer) {
    let mut after = After::default();
    {
        let mut state = inner.lock();
        match timer {
            Timer::Answer { call_control_id } => {
                let Some(call) = state.calls.get_mut(&call_control_id) else {
                    return;
                };
                match call.info.state {
                    SimCallState::Ringing => {
                        call.info.state = SimCallState::Answered;
                        call.emit("call.answered", json!({ "state": "answered" }));
                        if let Some(url) = call.info.stream_url.clone() {
                            after.stream = Some(stream_started(call, &url));
                            call.emit("streaming.started", json!({ "stream_url": url }));
                        }
                        if call.dial_amd {
                            call.emit(
                                "call.machine.detection.ended",
                                json!({ "result": inner.config.amd_result }),
                            );
                        }
                    }
                    SimCallState::Answered if call.info.transferred_to.is_some() => {
                        call.info.state = SimCallState::Bridged;
                        let to = call.info.transferred_to.clone();
                        call.emit("call.bridged", json!({ "to": to, "state": "bridged" }));
                    }
                    _ => {}
                }
            }
            Timer::MediaEnded {
                call_control_id,
                event,
                number,
            } => {
                if let Some(call) = state.calls.get_mut(&call_control_id) {
                    if call.is_live() && call.playing == Some(number) {
                        call.playing = None;
                        call.emit(event, json!({ "status": "completed" }));
                    }
                }
            }
            Timer::Transcript {
                call_control_id,
                text,
            } => {
                if let Some(call) = state.calls.get(&call_control_id) {
                    if call.is_live() && call.info.transcribing {
                        call.emit(
                            "call.transcription",
                            json!({ "transcription_data": {
                                "transcript": text,
                                "is_final": true,
                                "confidence": 0.93,
                            }}),
                        );
                    }
                }
            }
        }
    }
    after.run(inner);
}

fn stream_started(call: &SimCall, url: &str) -> StreamStarted {
    StreamStarted {
        call_control_id: call.info.call_control_id.clone(),
        call_session_id: call.info.call_session_id.clone(),
        stream_url: url.to_owned(),
        stream_track: call.stream_params.get("stream_track").cloned(),
        stream_bidirectional_mode: call.stream_params.get("stream_bidirectional_mode").cloned(),
        stream_bidirectional_codec: call
            .stream_params
            .get("stream_bidirectional_codec")
            .cloned(),
        from: call.info.from.clone(),
        to: call.info.to.clone(),
        client_state: call.client_state.clone(),
    }
}

/// Creates a call and starts its webhook delivery task.
fn new_call(
    inner: &Arc<Inner>,
    direction: &str,
    from: &str,
    to: &str,
    connection_id: &str,
    webhook_url: Option<String>,
) -> SimCall {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let url = webhook_url.unwrap_or_else(|| inner.webhook_url());
    delivery::spawn_call_delivery(inner, url, rx);
    SimCall {
        info: SimCallInfo {
            call_control_id: format!("v3:sim-{}", uuid::Uuid::new_v4().simple()),
            call_leg_id: uuid::Uuid::new_v4().to_string(),
            call_session_id: uuid::Uuid::new_v4().to_string(),
            direction: direction.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            state: if direction == "incoming" {
                SimCallState::Parked
            } else {
                SimCallState::Ringing
            },
            stream_url: None,
            recording: false,
            hangup_cause: None,
            hangup_source: None,
            transferred_to: None,
            spoken: Vec::new(),
            transcribing: false,
        },
        connection_id: connection_id.to_owned(),
        client_state: None,
        start_time: now_rfc3339(),
        recording_started_at: None,
        outbox: Some(tx),
        stream_params: HashMap::new(),
        dial_amd: false,
        playing: None,
        media_started: 0,
    }
}

/// A caller dials one of our numbers.
pub(crate) fn place_inbound_call(inner: &Arc<Inner>, from: &str, to: &str) -> String {
    let call = new_call(
        inner,
        "incoming",
        from,
        to,
        &inner.config.connection_id,
        None,
    );
    let id = call.info.call_control_id.clone();
    call.emit("call.initiated", json!({ "state": "parked" }));
    tracing::info!(call_control_id = %id, "telnyx sim: inbound call placed");
    inner.lock().calls.insert(id.clone(), call);
    id
}

/// The far end hangs up.
pub(crate) fn remote_hangup(inner: &Arc<Inner>, call_control_id: &str) -> bool {
    let mut state = inner.lock();
    let Some(call) = state.calls.get_mut(call_control_id) else {
        return false;
    };
    if !call.is_live() {
        return false;
    }
    let (cause, source) = match (call.info.state, call.is_incoming()) {
        (SimCallState::Parked, _) => ("originator_cancel", "caller"),
        (SimCallState::Ringing, _) => ("call_rejected", "callee"),
        (_, true) => ("normal_clearing", "caller"),
        (_, false) => ("normal_clearing", "callee"),
    };
    call.end(cause, source);
    true
}

/// The far end presses keys.
pub(crate) fn remote_dtmf(inner: &Arc<Inner>, call_control_id: &str, digits: &str) -> bool {
    let state = inner.lock();
    let Some(call) = state.calls.get(call_control_id).filter(|c| c.is_live()) else {
        return false;
    };
    for digit in digits.chars() {
        call.emit("call.dtmf.received", json!({ "digit": digit.to_string() }));
    }
    true
}

/// Runs a dial: creates the call, answers `data` as Telnyx does, rings for `answer_delay_ms`.
pub(crate) fn dial(
    inner: &Arc<Inner>,
    state: &mut SimState,
    body: &Map<String, Value>,
    after: &mut After,
) -> Result<Value, SimError> {
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(connection_id), Some(to), Some(from)) =
        (field("connection_id"), field("to"), field("from"))
    else {
        return Err(SimError::invalid("connection_id, to and from are required"));
    };
    let mut call = new_call(
        inner,
        "outgoing",
        from,
        to,
        connection_id,
        field("webhook_url").map(str::to_owned),
    );
    call.client_state = field("client_state").map(str::to_owned);
    call.info.stream_url = field("stream_url").map(str::to_owned);
    call.stream_params = stream_params(body);
    call.dial_amd = field("answering_machine_detection").is_some_and(|m| m != "disabled");
    call.emit("call.initiated", json!({ "state": "bridging" }));
    let id = call.info.call_control_id.clone();
    let data = json!({
        "call_control_id": id,
        "call_leg_id": call.info.call_leg_id,
        "call_session_id": call.info.call_session_id,
        "is_alive": false,
        "record_type": "call",
    });
    state.calls.insert(id.clone(), call);
    after.timers.push((
        Duration::from_millis(inner.config.answer_delay_ms),
        Timer::Answer {
            call_control_id: id,
        },
    ));
    Ok(data)
}

/// Runs one action on a call; answers the response's `data`.
pub(crate) fn action(
    inner: &Arc<Inner>,
    state: &mut SimState,
    call_control_id: &str,
    action: &str,
    body: &Map<String, Value>,
    after: &mut After,
) -> Result<Value, SimError> {
    let state_transcripts = state.transcripts.clone();
    let speech_ms_per_char = state
        .speech_ms_per_char
        .unwrap_or(inner.config.speech_ms_per_char);
    let call = state
        .calls
        .get_mut(call_control_id)
        .ok_or_else(SimError::not_found)?;
    if !call.is_live() {
        return Err(SimError::call_ended());
    }
    if let Some(client_state) = body.get("client_state").and_then(Value::as_str) {
        call.client_state = Some(client_state.to_owned());
    }
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    let answered = matches!(
        call.info.state,
        SimCallState::Answered | SimCallState::Bridged
    );
    let media_delay = Duration::from_millis(inner.config.media_duration_ms);
    match action {
        "answer" => {
            if call.info.state != SimCallState::Parked {
                return Err(SimError::invalid(
                    "only a parked incoming call can be answered",
                ));
            }
            call.info.state = SimCallState::Answered;
            call.emit("call.answered", json!({ "state": "answered" }));
            if let Some(url) = field("stream_url") {
                call.stream_params = stream_params(body);
                call.info.stream_url = Some(url.clone());
                after.stream = Some(stream_started(call, &url));
                call.emit("streaming.started", json!({ "stream_url": url }));
            }
        }
        "reject" => {
            if call.info.state != SimCallState::Parked {
                return Err(SimError::invalid(
                    "only a parked incoming call can be rejected",
                ));
            }
            let cause = match field("cause").as_deref() {
                Some("USER_BUSY") => "user_busy",
                Some("CALL_REJECTED") => "call_rejected",
                _ => {
                    return Err(SimError::invalid(
                        "cause must be CALL_REJECTED or USER_BUSY",
                    ))
                }
            };
            call.end(cause, "callee");
        }
        "hangup" => {
            // We are the caller on an outbound call and the callee on an inbound one.
            let source = if call.is_incoming() {
                "callee"
            } else {
                "caller"
            };
            let cause = if answered || call.is_incoming() {
                "normal_clearing"
            } else {
                "originator_cancel"
            };
            call.end(cause, source);
        }
        "transfer" => {
            let Some(to) = field("to") else {
                return Err(SimError::invalid("to is required"));
            };
            if !answered {
                return Err(SimError::invalid(
                    "only an answered call can be transferred",
                ));
            }
            call.info.transferred_to = Some(to);
            after.timers.push((
                Duration::from_millis(inner.config.answer_delay_ms),
                Timer::Answer {
                    call_control_id: call_control_id.to_owned(),
                },
            ));
        }
        "speak" | "playback_start" => {
            let (started, ended, required) = if action == "speak" {
                ("call.speak.started", "call.speak.ended", "payload")
            } else {
                ("call.playback.started", "call.playback.ended", "audio_url")
            };
            if field(required).is_none() && (action == "speak" || field("media_name").is_none()) {
                return Err(SimError::invalid(format!("{required} is required")));
            }
            // A speak lasts as long as its text takes to say; a file, the configured time.
            let mut lasts = media_delay;
            if action == "speak" {
                let text = field("payload").unwrap_or_default();
                let chars = u64::try_from(text.chars().count()).unwrap_or(u64::MAX);
                lasts = Duration::from_millis(chars.saturating_mul(speech_ms_per_char));
                call.info.spoken.push(SpokenText {
                    text,
                    voice: field("voice").unwrap_or_default(),
                    language: field("language"),
                    stopped: false,
                });
            }
            // A new one replaces what was playing (as a queue with `stop: all` would).
            call.media_started += 1;
            call.playing = Some(call.media_started);
            call.emit(started, json!({}));
            after.timers.push((
                lasts,
                Timer::MediaEnded {
                    call_control_id: call_control_id.to_owned(),
                    event: ended,
                    number: call.media_started,
                },
            ));
        }
        "streaming_start" => {
            let Some(url) = field("stream_url") else {
                return Err(SimError::invalid("stream_url is required"));
            };
            call.stream_params = stream_params(body);
            call.info.stream_url = Some(url.clone());
            after.stream = Some(stream_started(call, &url));
            call.emit("streaming.started", json!({ "stream_url": url }));
        }
        "transcription_start" => {
            if !answered {
                return Err(SimError::invalid(
                    "only an answered call can be transcribed",
                ));
            }
            call.info.transcribing = true;
            let gap = Duration::from_millis(inner.config.transcription_gap_ms);
            for (n, text) in (1u32..).zip(state_transcripts.iter()) {
                after.timers.push((
                    gap * n,
                    Timer::Transcript {
                        call_control_id: call_control_id.to_owned(),
                        text: text.clone(),
                    },
                ));
            }
        }
        "transcription_stop" => call.info.transcribing = false,
        "streaming_stop" => {
            if let Some(url) = call.info.stream_url.take() {
                call.emit("streaming.stopped", json!({ "stream_url": url }));
            }
        }
        "send_dtmf" => {
            if field("digits").is_none() {
                return Err(SimError::invalid("digits is required"));
            }
        }
        "record_start" => {
            call.recording_started_at = Some(now_rfc3339());
            call.info.recording = true;
        }
        "record_stop" => call.save_recording(),
        // Cuts off what is playing: it never sends its `.ended` (the engine stopped it).
        "playback_stop" => {
            if call.playing.take().is_some() {
                if let Some(last) = call.info.spoken.last_mut() {
                    last.stopped = true;
                }
            }
        }
        // Accepted without a simulated effect.
        "record_pause"
        | "record_resume"
        | "client_state_update"
        | "bridge"
        | "gather"
        | "gather_stop" => {}
        _ => {
            return Err(SimError {
                status: 404,
                code: "10005",
                title: "Resource not found",
                detail: format!("unknown action {action}"),
            })
        }
    }
    Ok(json!({ "result": "ok" }))
}

fn stream_params(body: &Map<String, Value>) -> HashMap<String, String> {
    body.iter()
        .filter(|(k, _)| k.starts_with("stream_"))
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

/// RFC 3339 with microseconds and `Z`, like Telnyx's `occurred_at`.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
