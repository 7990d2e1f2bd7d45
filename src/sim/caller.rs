//! The simulated caller: a WebSocket client that connects to the engine's media `stream_url`
//! exactly as Telnyx does (PROTOCOLS.md section 2) and speaks a [`CallerScript`] in real time, one
//! 20 ms `media` frame per tick, while it plays back what the engine sends: audio through a
//! real-time playback buffer, `clear` dropping what has not played yet, and each `mark` echoed
//! once the audio queued before it has played. It records every frame and the turn latency as a
//! caller perceives it, and hands back a [`CallerReport`].
//!
//! [`CallerSim::run`] drives one call on the current arbiter (awc sockets are `!Send`);
//! [`CallerHook`] runs one per simulated call from the Telnyx simulator's stream hook.

use super::lock;
use super::telnyx::{StreamHook, StreamStarted};
use crate::domain::audio::{bytes_for_ms, ms_for_bytes, Codec, FRAME_BYTES, FRAME_MS, SAMPLE_RATE};
use crate::providers::telnyx::media::{
    DtmfPayload, InboundFrame, MarkPayload, MediaFormat, MediaPayload, OutboundFrame, StartPayload,
};
use actix::ArbiterHandle;
use awc::ws::{CloseCode, Frame, Message};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::{Sink, SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// Speech per character of a [`CallerStep::Say`] whose length is not given: about 150 words a
/// minute, the pace of a calm caller.
const SPEECH_MS_PER_CHAR: u32 = 65;
/// Shortest utterance a caller makes when the length is derived from the text.
const MIN_SPEECH_MS: u32 = 400;
/// How long a hanging-up caller waits for the engine's close frame.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// Longest text frame kept verbatim in a report (unknown frames are shown cut to this).
const MAX_KEPT_TEXT: usize = 200;

/// One thing the caller does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerStep {
    /// Speech-like audio for `duration_ms`. The words are what the Deepgram simulator is scripted
    /// to "hear" for this segment (see [`CallerScript::utterances`]). Two `Say` steps in a row
    /// sound like one segment to an energy detector: put a silence or a wait between them.
    Say { text: String, duration_ms: u32 },
    /// Silence for `ms`.
    Silence { ms: u32 },
    /// A key press: one `dtmf` frame (the media keeps flowing).
    Dtmf { digit: String },
    /// Silence until the agent's audio for this turn has played out (some arrived, and nothing
    /// has arrived or played for [`CallerConfig::agent_quiet_ms`]), or `max_ms`.
    WaitForAgent { max_ms: u32 },
    /// Silence until the agent's current turn has played `after_agent_ms` of audio, then speech
    /// for `duration_ms` over it (barge-in).
    Interrupt {
        after_agent_ms: u32,
        text: String,
        duration_ms: u32,
    },
    /// Silence for `ms` during which the caller does not read its socket at all (a phone whose
    /// network stalled): what the engine sends piles up in the socket buffers and behind them.
    StopReading { ms: u32 },
    /// `stop`, then close the socket.
    HangUp,
}

/// What a caller says and does, step by step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerScript {
    pub steps: Vec<CallerStep>,
}

impl CallerScript {
    /// An empty script (a caller who stays silent until the engine ends the call).
    pub fn new() -> Self {
        Self::default()
    }

    /// Says `text` for a duration that follows its length.
    pub fn say(self, text: impl Into<String>) -> Self {
        let text = text.into();
        let duration_ms = speech_ms_for(&text);
        self.say_for(text, duration_ms)
    }

    /// Says `text` for `duration_ms`.
    pub fn say_for(mut self, text: impl Into<String>, duration_ms: u32) -> Self {
        self.steps.push(CallerStep::Say {
            text: text.into(),
            duration_ms,
        });
        self
    }

    pub fn silence(mut self, ms: u32) -> Self {
        self.steps.push(CallerStep::Silence { ms });
        self
    }

    /// Stops reading the media socket for `ms` (sending silence meanwhile), then reads again.
    pub fn stop_reading(mut self, ms: u32) -> Self {
        self.steps.push(CallerStep::StopReading { ms });
        self
    }

    pub fn dtmf(mut self, digit: impl Into<String>) -> Self {
        self.steps.push(CallerStep::Dtmf {
            digit: digit.into(),
        });
        self
    }

    pub fn wait_for_agent(mut self, max_ms: u32) -> Self {
        self.steps.push(CallerStep::WaitForAgent { max_ms });
        self
    }

    pub fn interrupt(
        mut self,
        after_agent_ms: u32,
        text: impl Into<String>,
        duration_ms: u32,
    ) -> Self {
        self.steps.push(CallerStep::Interrupt {
            after_agent_ms,
            text: text.into(),
            duration_ms,
        });
        self
    }

    pub fn hang_up(mut self) -> Self {
        self.steps.push(CallerStep::HangUp);
        self
    }

    /// The texts spoken, in order: the script for `DeepgramSimConfig::script`.
    pub fn utterances(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter_map(|step| match step {
                CallerStep::Say { text, .. } | CallerStep::Interrupt { text, .. } => {
                    Some(text.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// A short support call: hears the greeting, reports an internet connection that keeps
    /// dropping, says the router was already restarted, thanks the agent and hangs up.
    pub fn support_demo() -> Self {
        const WAIT_MS: u32 = 15_000;
        Self::new()
            .wait_for_agent(WAIT_MS)
            .say("Hi, my internet keeps dropping every evening.")
            .wait_for_agent(WAIT_MS)
            .say("I already restarted the router twice.")
            .wait_for_agent(WAIT_MS)
            .say("Great, thank you, that fixed it.")
            .wait_for_agent(WAIT_MS)
            .hang_up()
    }
}

/// How long a caller takes to say `text` when no duration is given.
pub fn speech_ms_for(text: &str) -> u32 {
    let chars = u32::try_from(text.chars().count()).unwrap_or(u32::MAX);
    let ms = chars.saturating_mul(SPEECH_MS_PER_CHAR).max(MIN_SPEECH_MS);
    ms.div_ceil(FRAME_MS) * FRAME_MS
}

/// One simulated call.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    /// The codec of the audio sent (`start.media_format.encoding`).
    pub codec: Codec,
    pub script: CallerScript,
    pub call_control_id: String,
    pub from: String,
    pub to: String,
    /// Base64, as Telnyx repeats it in `start`.
    pub client_state: Option<String>,
    /// The whole call must end by then; otherwise [`CallerError::Deadline`].
    pub deadline: Duration,
    /// Quiet after the agent's last audio (with nothing left to play) that ends a wait.
    pub agent_quiet_ms: u32,
    pub connect_timeout: Duration,
    /// Keep every frame in the report (`sent`, `received`). Off for load runs: only counts.
    pub keep_frames: bool,
    /// From then on the caller hangs up instead of starting its next step (a load run's end).
    pub hang_up_at: Option<Instant>,
}

impl CallerConfig {
    /// A PCMU/PCMA call with made-up ids and numbers and a one-minute deadline.
    pub fn new(codec: Codec, script: CallerScript) -> Self {
        Self {
            codec,
            script,
            call_control_id: format!("v3:sim-caller-{}", uuid::Uuid::new_v4().simple()),
            from: "+15550100001".into(),
            to: "+15550100002".into(),
            client_state: None,
            deadline: Duration::from_secs(60),
            agent_quiet_ms: 300,
            connect_timeout: Duration::from_secs(5),
            keep_frames: true,
            hang_up_at: None,
        }
    }
}

/// A frame the caller sent, without audio bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentFrame {
    Connected,
    Start {
        stream_id: String,
        encoding: String,
    },
    Media {
        sequence_number: u64,
        chunk: u64,
        /// True for speech, false for silence.
        speech: bool,
    },
    Dtmf {
        digit: String,
    },
    /// A mark echoed back.
    Mark {
        name: String,
    },
    Stop,
}

/// A frame the engine sent, without audio bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceivedFrame {
    Media {
        bytes: usize,
    },
    Mark {
        name: String,
    },
    Clear,
    /// A `media` frame whose payload is not base64.
    BadMedia,
    /// Text that is not an outbound frame, cut to a couple of hundred characters.
    Unknown {
        text: String,
    },
    Binary {
        bytes: usize,
    },
    Ping,
    Close {
        code: Option<u16>,
    },
}

/// `frame` happened `at_ms` after the socket opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed<T> {
    pub at_ms: u64,
    pub frame: T,
}

/// One caller utterance (a `Say` or an `Interrupt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerTurn {
    pub text: String,
    pub started_at_ms: u64,
    /// When the last speech frame had been sent; `None` if the call ended mid-sentence.
    pub ended_at_ms: Option<u64>,
    /// Spoken over the agent (an `Interrupt`).
    pub interrupted_agent: bool,
    /// The turn latency as the caller perceives it: from the end of this utterance to the first
    /// agent audio received after it.
    pub first_agent_audio_after_ms: Option<u64>,
}

/// The agent audio between two caller utterances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentTurn {
    pub first_audio_at_ms: u64,
    pub last_audio_at_ms: u64,
    pub bytes_received: usize,
    /// Of those, played out at real time.
    pub bytes_played: usize,
    /// Of those, dropped by a `clear`.
    pub bytes_cleared: usize,
    /// Marks received while this turn was the current one.
    pub marks: Vec<String>,
    pub clears: usize,
}

impl AgentTurn {
    /// Audio received, in milliseconds.
    pub fn audio_ms(&self) -> u64 {
        ms_for_bytes(self.bytes_received)
    }

    /// Audio played, in milliseconds.
    pub fn played_ms(&self) -> u64 {
        ms_for_bytes(self.bytes_played)
    }
}

/// How a `WaitForAgent` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOutcome {
    /// Index of the step in the script.
    pub step: usize,
    pub waited_ms: u64,
    /// False when `max_ms` ran out first.
    pub agent_finished: bool,
}

/// Why the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd {
    /// The script's `HangUp`.
    HungUp,
    /// The engine closed the socket.
    EngineClosed { code: Option<u16> },
    /// The socket failed or ended without a close frame.
    Lost { error: String },
    /// The deadline passed first.
    Deadline,
}

/// Everything one simulated caller saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerReport {
    pub stream_url: String,
    pub stream_id: String,
    pub call_control_id: String,
    pub from: String,
    pub to: String,
    pub codec: Codec,
    pub sent: Vec<Timed<SentFrame>>,
    pub received: Vec<Timed<ReceivedFrame>>,
    pub turns: Vec<CallerTurn>,
    pub agent_turns: Vec<AgentTurn>,
    pub waits: Vec<WaitOutcome>,
    /// Marks echoed back, in order.
    pub marks_echoed: Vec<String>,
    /// Every step ran (the last one may be the `HangUp`).
    pub script_completed: bool,
    pub ended: CallEnd,
    pub duration_ms: u64,
    /// Real-time health of the stream, kept even without `keep_frames`.
    pub stream: StreamCounts,
}

/// Frame counts and timing faults of one simulated call's media stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounts {
    pub media_sent: usize,
    pub media_received: usize,
    /// Frames sent more than one frame (20 ms) behind their real-time schedule (the caller's
    /// own lateness: a busy load generator).
    pub sent_late: usize,
    pub max_send_lag_ms: u64,
    /// 20 ms ticks when an agent turn's audio had run dry before more of the same turn arrived
    /// (the caller heard a gap: agent audio came late).
    pub starved_ticks: usize,
}

impl CallerReport {
    /// `media` frames sent.
    pub fn media_frames_sent(&self) -> usize {
        self.stream.media_sent
    }

    /// Agent audio received over the whole call, in bytes.
    pub fn agent_audio_bytes(&self) -> usize {
        self.agent_turns.iter().map(|t| t.bytes_received).sum()
    }

    /// Each caller turn's latency (see [`CallerTurn::first_agent_audio_after_ms`]).
    pub fn turn_latencies_ms(&self) -> Vec<Option<u64>> {
        self.turns
            .iter()
            .map(|t| t.first_agent_audio_after_ms)
            .collect()
    }

    /// `clear` frames received.
    pub fn clears(&self) -> usize {
        self.received
            .iter()
            .filter(|f| f.frame == ReceivedFrame::Clear)
            .count()
    }

    /// A few readable lines: how the call ended, each caller turn with its latency and each agent
    /// turn with its audio. Never contains audio.
    pub fn overview(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "caller {} -> {} ({}, stream {}, {}): {:?} after {} ms, script {}",
            self.from,
            self.to,
            self.codec,
            self.stream_id,
            self.call_control_id,
            self.ended,
            self.duration_ms,
            if self.script_completed {
                "completed"
            } else {
                "not completed"
            }
        );
        for turn in &self.turns {
            let _ = writeln!(
                out,
                "  caller {}..{:?} ms{}: {:?}; first agent audio {:?} ms later",
                turn.started_at_ms,
                turn.ended_at_ms,
                if turn.interrupted_agent {
                    " (over the agent)"
                } else {
                    ""
                },
                turn.text,
                turn.first_agent_audio_after_ms
            );
        }
        for turn in &self.agent_turns {
            let _ = writeln!(
                out,
                "  agent {}..{} ms: {} ms of audio, {} ms played, {} ms cleared, marks {:?}",
                turn.first_audio_at_ms,
                turn.last_audio_at_ms,
                turn.audio_ms(),
                turn.played_ms(),
                ms_for_bytes(turn.bytes_cleared),
                turn.marks
            );
        }
        out
    }

    /// The [`overview`](Self::overview), then every frame (runs of sent media folded into one
    /// line). Never contains audio.
    pub fn summary(&self) -> String {
        let mut out = self.overview();
        out.push_str("  sent:\n");
        let mut run: Option<(u64, u64, usize, usize)> = None;
        let flush = |out: &mut String, run: &mut Option<(u64, u64, usize, usize)>| {
            if let Some((first, last, speech, silence)) = run.take() {
                let _ = writeln!(
                    out,
                    "    {first}..{last} ms media x{} ({speech} speech, {silence} silence)",
                    speech + silence
                );
            }
        };
        for sent in &self.sent {
            match &sent.frame {
                SentFrame::Media { speech, .. } => {
                    let entry = run.get_or_insert((sent.at_ms, sent.at_ms, 0, 0));
                    entry.1 = sent.at_ms;
                    if *speech {
                        entry.2 += 1;
                    } else {
                        entry.3 += 1;
                    }
                }
                other => {
                    flush(&mut out, &mut run);
                    let _ = writeln!(out, "    {} ms {other:?}", sent.at_ms);
                }
            }
        }
        flush(&mut out, &mut run);
        out.push_str("  received:\n");
        for received in &self.received {
            let _ = writeln!(out, "    {} ms {:?}", received.at_ms, received.frame);
        }
        out
    }
}

/// Why a simulated call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallerError {
    #[error("the simulated caller cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("the simulated caller missed its deadline of {after:?}:\n{}", .report.summary())]
    Deadline {
        after: Duration,
        report: Box<CallerReport>,
    },
}

impl CallerError {
    /// What the caller saw before failing, when it got that far.
    pub fn report(&self) -> Option<&CallerReport> {
        match self {
            CallerError::Connect { .. } => None,
            CallerError::Deadline { report, .. } => Some(report),
        }
    }
}

/// Runs simulated callers.
pub struct CallerSim;

impl CallerSim {
    /// Connects to `stream_url`, speaks `config.script` and returns what happened. Runs on the
    /// current arbiter (inside an actix system).
    pub async fn run(stream_url: &str, config: CallerConfig) -> Result<CallerReport, CallerError> {
        crate::install_crypto_provider();
        let opened = Instant::now();
        let deadline = opened + config.deadline;
        let connect_by = deadline.min(opened + config.connect_timeout);
        let request = crate::providers::ws::client(config.connect_timeout)
            .ws(stream_url)
            .max_frame_size(1 << 20);
        let connect_error = |message: String| CallerError::Connect {
            url: stream_url.to_owned(),
            message,
        };
        let mut socket = match tokio::time::timeout_at(connect_by, request.connect()).await {
            Err(_) => return Err(connect_error("timed out".into())),
            Ok(Err(err)) => return Err(connect_error(err.to_string())),
            Ok(Ok((_, socket))) => socket,
        };
        let mut call = Caller::new(stream_url, config, Instant::now());
        call.open();
        let mut ticks = tokio::time::interval(Duration::from_millis(u64::from(FRAME_MS)));
        // A late tick is made up at once, so the stream never drifts from real time.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let end = loop {
            if let Err(error) = flush(&mut socket, &mut call.outbox).await {
                break CallEnd::Lost { error };
            }
            if call.hung_up {
                let _ = socket
                    .send(Message::Close(Some(CloseCode::Normal.into())))
                    .await;
                let grace = Instant::now() + CLOSE_GRACE;
                while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(grace, socket.next()).await
                {
                    if call.receive(frame, Instant::now()) {
                        break;
                    }
                }
                break CallEnd::HungUp;
            }
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline) => break CallEnd::Deadline,
                frame = socket.next(), if call.reading(Instant::now()) => match frame {
                    Some(Ok(frame)) => {
                        if call.receive(frame, Instant::now()) {
                            let code = call.close_code;
                            let _ = flush(&mut socket, &mut call.outbox).await;
                            let _ = socket.send(Message::Close(None)).await;
                            break CallEnd::EngineClosed { code };
                        }
                    }
                    Some(Err(err)) => break CallEnd::Lost { error: err.to_string() },
                    None => break CallEnd::Lost { error: "the socket ended without a close frame".into() },
                },
                due = ticks.tick() => call.tick(Instant::now(), due),
            }
        };
        let report = call.into_report(end, Instant::now());
        if report.ended == CallEnd::Deadline {
            tracing::warn!(call_control_id = %report.call_control_id, "simulated caller missed its deadline");
            return Err(CallerError::Deadline {
                after: Duration::from_millis(report.duration_ms),
                report: Box::new(report),
            });
        }
        tracing::info!(
            call_control_id = %report.call_control_id,
            ended = ?report.ended,
            turns = report.turns.len(),
            "simulated caller done"
        );
        Ok(report)
    }
}

/// Sends the queued frames in order.
async fn flush<S>(socket: &mut S, outbox: &mut VecDeque<InboundFrame>) -> Result<(), String>
where
    S: Sink<Message> + Unpin,
    S::Error: std::fmt::Display,
{
    while let Some(frame) = outbox.pop_front() {
        let text = serde_json::to_string(&frame).map_err(|e| e.to_string())?;
        socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What is waiting to "play" on the caller's phone.
#[derive(Debug, Default)]
struct Playback {
    queue: VecDeque<Queued>,
}

#[derive(Debug)]
enum Queued {
    Audio(usize),
    Mark(String),
}

impl Playback {
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn push_audio(&mut self, bytes: usize) {
        if let Some(Queued::Audio(queued)) = self.queue.back_mut() {
            *queued += bytes;
        } else if bytes > 0 {
            self.queue.push_back(Queued::Audio(bytes));
        }
    }

    /// Queues a mark; returns it when nothing is left to play before it (echo at once).
    fn push_mark(&mut self, name: String) -> Option<String> {
        if self.queue.is_empty() {
            Some(name)
        } else {
            self.queue.push_back(Queued::Mark(name));
            None
        }
    }

    /// Plays up to `bytes`; returns the bytes played and the marks whose audio has now played.
    fn play(&mut self, mut bytes: usize) -> (usize, Vec<String>) {
        let mut played = 0;
        let mut marks = Vec::new();
        loop {
            match self.queue.front_mut() {
                Some(Queued::Mark(_)) => {
                    if let Some(Queued::Mark(name)) = self.queue.pop_front() {
                        marks.push(name);
                    }
                }
                Some(Queued::Audio(queued)) if bytes > 0 => {
                    let now = (*queued).min(bytes);
                    *queued -= now;
                    bytes -= now;
                    played += now;
                    if *queued == 0 {
                        self.queue.pop_front();
                    }
                }
                _ => return (played, marks),
            }
        }
    }

    /// Drops everything; returns the audio dropped and every pending mark.
    fn clear(&mut self) -> (usize, Vec<String>) {
        let mut dropped = 0;
        let mut marks = Vec::new();
        for queued in self.queue.drain(..) {
            match queued {
                Queued::Audio(bytes) => dropped += bytes,
                Queued::Mark(name) => marks.push(name),
            }
        }
        (dropped, marks)
    }
}

/// The step being carried out.
#[derive(Debug)]
enum Active {
    Speaking {
        frames: Vec<Vec<u8>>,
        next: usize,
        turn: usize,
    },
    Silent {
        frames_left: u32,
    },
    Waiting {
        step: usize,
        since: Instant,
        until: Instant,
    },
    AwaitingBargeIn {
        after_bytes: usize,
        text: String,
        duration_ms: u32,
    },
}

/// One call's state: the script, the playback buffer and the record.
struct Caller {
    stream_url: String,
    config: CallerConfig,
    stream_id: String,
    opened: Instant,
    steps: VecDeque<(usize, CallerStep)>,
    active: Option<Active>,
    playback: Playback,
    outbox: VecDeque<InboundFrame>,
    sequence: u64,
    chunk: u64,
    /// Agent audio received since the caller last spoke (a wait ends only after some).
    agent_heard: bool,
    /// When agent audio last arrived or played: a wait ends this long into the quiet.
    last_agent_sound: Option<Instant>,
    /// The agent turn new audio belongs to; `None` until the agent speaks after the caller.
    agent_turn_open: bool,
    hung_up: bool,
    /// The socket is not read until then ([`CallerStep::StopReading`]).
    not_reading_until: Option<Instant>,
    close_code: Option<u16>,
    sent: Vec<Timed<SentFrame>>,
    received: Vec<Timed<ReceivedFrame>>,
    turns: Vec<CallerTurn>,
    agent_turns: Vec<AgentTurn>,
    waits: Vec<WaitOutcome>,
    marks_echoed: Vec<String>,
    counts: StreamCounts,
    /// Ticks of the open agent turn with nothing to play, not yet known to be a gap.
    dry_ticks: usize,
}

impl Caller {
    fn new(stream_url: &str, config: CallerConfig, opened: Instant) -> Self {
        let steps = config.script.steps.iter().cloned().enumerate().collect();
        Self {
            stream_url: stream_url.to_owned(),
            config,
            stream_id: uuid::Uuid::new_v4().to_string(),
            opened,
            steps,
            active: None,
            playback: Playback::default(),
            outbox: VecDeque::new(),
            sequence: 0,
            chunk: 0,
            agent_heard: false,
            last_agent_sound: None,
            agent_turn_open: false,
            hung_up: false,
            not_reading_until: None,
            close_code: None,
            sent: Vec::new(),
            received: Vec::new(),
            turns: Vec::new(),
            agent_turns: Vec::new(),
            waits: Vec::new(),
            marks_echoed: Vec::new(),
            counts: StreamCounts::default(),
            dry_ticks: 0,
        }
    }

    /// Whether the socket is read now (false during a [`CallerStep::StopReading`]).
    fn reading(&self, now: Instant) -> bool {
        self.not_reading_until.is_none_or(|until| now >= until)
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.opened).as_millis()).unwrap_or(u64::MAX)
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    fn send(&mut self, frame: InboundFrame, record: SentFrame, now: Instant) {
        let at_ms = self.ms(now);
        let media = matches!(record, SentFrame::Media { .. });
        if media {
            self.counts.media_sent += 1;
        }
        if self.config.keep_frames || !media {
            self.sent.push(Timed {
                at_ms,
                frame: record,
            });
        }
        self.outbox.push_back(frame);
    }

    /// Queues `connected` and `start`, as Telnyx opens every stream.
    fn open(&mut self) {
        let now = Instant::now();
        self.send(
            InboundFrame::Connected {
                version: Some("1.0.0".into()),
            },
            SentFrame::Connected,
            now,
        );
        let encoding = self.config.codec.telnyx_name().to_owned();
        let start = InboundFrame::Start {
            sequence_number: Some(self.next_sequence()),
            stream_id: self.stream_id.clone(),
            start: StartPayload {
                call_control_id: Some(self.config.call_control_id.clone()),
                call_session_id: None,
                client_state: self.config.client_state.clone(),
                from: Some(self.config.from.clone()),
                to: Some(self.config.to.clone()),
                media_format: MediaFormat {
                    encoding: encoding.clone(),
                    sample_rate: SAMPLE_RATE,
                    channels: 1,
                },
            },
        };
        let record = SentFrame::Start {
            stream_id: self.stream_id.clone(),
            encoding,
        };
        self.send(start, record, now);
    }

    fn echo_marks(&mut self, marks: Vec<String>, now: Instant) {
        for name in marks {
            let frame = InboundFrame::Mark {
                stream_id: self.stream_id.clone(),
                mark: MarkPayload { name: name.clone() },
            };
            self.send(frame, SentFrame::Mark { name: name.clone() }, now);
            self.marks_echoed.push(name);
        }
    }

    /// Handles one frame from the engine; true when the engine closed the socket.
    fn receive(&mut self, frame: Frame, now: Instant) -> bool {
        let at_ms = self.ms(now);
        let record = match frame {
            Frame::Text(bytes) => self.receive_text(&bytes, now),
            Frame::Binary(bytes) => ReceivedFrame::Binary { bytes: bytes.len() },
            Frame::Ping(_) => ReceivedFrame::Ping,
            Frame::Pong(_) | Frame::Continuation(_) => return false,
            Frame::Close(reason) => {
                self.close_code = reason.map(|r| u16::from(r.code));
                self.received.push(Timed {
                    at_ms,
                    frame: ReceivedFrame::Close {
                        code: self.close_code,
                    },
                });
                return true;
            }
        };
        if self.config.keep_frames || !matches!(record, ReceivedFrame::Media { .. }) {
            self.received.push(Timed {
                at_ms,
                frame: record,
            });
        }
        false
    }

    fn receive_text(&mut self, bytes: &[u8], now: Instant) -> ReceivedFrame {
        let unknown = || ReceivedFrame::Unknown {
            text: String::from_utf8_lossy(bytes)
                .chars()
                .take(MAX_KEPT_TEXT)
                .collect(),
        };
        match serde_json::from_slice::<OutboundFrame>(bytes) {
            Ok(OutboundFrame::Media { media }) => match BASE64.decode(media.payload.as_bytes()) {
                Ok(audio) => {
                    self.counts.media_received += 1;
                    self.agent_audio(audio.len(), now);
                    ReceivedFrame::Media { bytes: audio.len() }
                }
                Err(_) => ReceivedFrame::BadMedia,
            },
            Ok(OutboundFrame::Mark { mark }) => {
                if let Some(turn) = self.agent_turns.last_mut() {
                    turn.marks.push(mark.name.clone());
                }
                if let Some(name) = self.playback.push_mark(mark.name.clone()) {
                    self.echo_marks(vec![name], now);
                }
                ReceivedFrame::Mark { name: mark.name }
            }
            Ok(OutboundFrame::Clear) => {
                let (dropped, marks) = self.playback.clear();
                if let Some(turn) = self.agent_turns.last_mut() {
                    turn.bytes_cleared += dropped;
                    turn.clears += 1;
                }
                self.echo_marks(marks, now);
                ReceivedFrame::Clear
            }
            Err(_) => unknown(),
        }
    }

    fn agent_audio(&mut self, bytes: usize, now: Instant) {
        let at_ms = self.ms(now);
        if self.agent_turn_open {
            // More of the same turn: the dry ticks before it were a gap the caller heard.
            self.counts.starved_ticks += self.dry_ticks;
        }
        self.dry_ticks = 0;
        if !self.agent_turn_open {
            self.agent_turn_open = true;
            self.agent_turns.push(AgentTurn {
                first_audio_at_ms: at_ms,
                ..AgentTurn::default()
            });
        }
        if let Some(turn) = self.agent_turns.last_mut() {
            turn.last_audio_at_ms = at_ms;
            turn.bytes_received += bytes;
        }
        if let Some(turn) = self.turns.last_mut() {
            if let Some(ended) = turn.ended_at_ms {
                if turn.first_agent_audio_after_ms.is_none() && at_ms >= ended {
                    turn.first_agent_audio_after_ms = Some(at_ms - ended);
                }
            }
        }
        self.agent_heard = true;
        self.last_agent_sound = Some(now);
        self.playback.push_audio(bytes);
    }

    /// One 20 ms tick (due at `due`): plays what is queued, then sends the next frame of the
    /// script.
    fn tick(&mut self, now: Instant, due: Instant) {
        let lag = now.saturating_duration_since(due);
        if lag > Duration::from_millis(u64::from(FRAME_MS)) {
            self.counts.sent_late += 1;
        }
        let lag_ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        self.counts.max_send_lag_ms = self.counts.max_send_lag_ms.max(lag_ms);
        let (played, marks) = self.playback.play(FRAME_BYTES);
        if played == 0 && self.agent_turn_open && self.playback.is_empty() {
            self.dry_ticks += 1;
        }
        if played > 0 {
            self.last_agent_sound = Some(now);
            if let Some(turn) = self.agent_turns.last_mut() {
                turn.bytes_played += played;
            }
        }
        self.echo_marks(marks, now);
        let Some(audio) = self.next_audio(now) else {
            return;
        };
        let speech = self.is_speaking();
        self.chunk += 1;
        let frame = InboundFrame::Media {
            sequence_number: Some(self.next_sequence()),
            stream_id: self.stream_id.clone(),
            media: MediaPayload {
                track: Some("inbound".into()),
                chunk: Some(self.chunk.to_string()),
                timestamp: Some(((self.chunk - 1) * u64::from(FRAME_MS)).to_string()),
                payload: BASE64.encode(&audio),
            },
        };
        let record = SentFrame::Media {
            sequence_number: self.sequence,
            chunk: self.chunk,
            speech,
        };
        self.send(frame, record, now);
    }

    fn is_speaking(&self) -> bool {
        matches!(self.active, Some(Active::Speaking { next, .. }) if next > 0)
    }

    /// The audio of this tick, or `None` once the caller has hung up.
    fn next_audio(&mut self, now: Instant) -> Option<Vec<u8>> {
        let codec = self.config.codec;
        let silence = move || codec.silence(FRAME_MS);
        loop {
            if self.hung_up {
                return None;
            }
            match self.active.take() {
                None => {
                    // Hang up between turns only: never right after asking something.
                    let answer_due = matches!(
                        self.steps.front(),
                        Some((_, CallerStep::WaitForAgent { .. }))
                    );
                    if !answer_due && self.config.hang_up_at.is_some_and(|at| now >= at) {
                        self.begin(usize::MAX, CallerStep::HangUp, now);
                        return None;
                    }
                    let Some((index, step)) = self.steps.pop_front() else {
                        // The script is done: stay on the line, silent, until the engine hangs up.
                        return Some(silence());
                    };
                    self.begin(index, step, now);
                }
                Some(Active::Speaking { frames, next, turn }) => {
                    if let Some(frame) = frames.get(next).cloned() {
                        self.active = Some(Active::Speaking {
                            frames,
                            next: next + 1,
                            turn,
                        });
                        return Some(frame);
                    }
                    let at_ms = self.ms(now);
                    if let Some(turn) = self.turns.get_mut(turn) {
                        turn.ended_at_ms = Some(at_ms);
                    }
                    self.agent_heard = false;
                }
                Some(Active::Silent { frames_left }) => {
                    if frames_left > 0 {
                        self.active = Some(Active::Silent {
                            frames_left: frames_left - 1,
                        });
                        return Some(silence());
                    }
                }
                Some(Active::Waiting { step, since, until }) => {
                    let quiet = Duration::from_millis(u64::from(self.config.agent_quiet_ms));
                    let finished = self.agent_heard
                        && self.playback.is_empty()
                        && self.last_agent_sound.is_some_and(|t| now >= t + quiet);
                    if finished || now >= until {
                        self.waits.push(WaitOutcome {
                            step,
                            waited_ms: u64::try_from(
                                now.saturating_duration_since(since).as_millis(),
                            )
                            .unwrap_or(u64::MAX),
                            agent_finished: finished,
                        });
                    } else {
                        self.active = Some(Active::Waiting { step, since, until });
                        return Some(silence());
                    }
                }
                Some(Active::AwaitingBargeIn {
                    after_bytes,
                    text,
                    duration_ms,
                }) => {
                    let played = self
                        .agent_turns
                        .last()
                        .filter(|_| self.agent_turn_open)
                        .map_or(0, |t| t.bytes_played);
                    if played >= after_bytes && self.agent_turn_open {
                        self.start_turn(text, duration_ms, true, now);
                    } else {
                        self.active = Some(Active::AwaitingBargeIn {
                            after_bytes,
                            text,
                            duration_ms,
                        });
                        return Some(silence());
                    }
                }
            }
        }
    }

    fn begin(&mut self, index: usize, step: CallerStep, now: Instant) {
        match step {
            CallerStep::Say { text, duration_ms } => self.start_turn(text, duration_ms, false, now),
            CallerStep::Silence { ms } => {
                self.active = Some(Active::Silent {
                    frames_left: ms.div_ceil(FRAME_MS),
                });
            }
            CallerStep::StopReading { ms } => {
                self.not_reading_until = Some(now + Duration::from_millis(u64::from(ms)));
                self.active = Some(Active::Silent {
                    frames_left: ms.div_ceil(FRAME_MS),
                });
            }
            CallerStep::Dtmf { digit } => {
                let frame = InboundFrame::Dtmf {
                    stream_id: self.stream_id.clone(),
                    dtmf: DtmfPayload {
                        digit: digit.clone(),
                    },
                };
                self.send(frame, SentFrame::Dtmf { digit }, now);
            }
            CallerStep::WaitForAgent { max_ms } => {
                self.active = Some(Active::Waiting {
                    step: index,
                    since: now,
                    until: now + Duration::from_millis(u64::from(max_ms)),
                });
            }
            CallerStep::Interrupt {
                after_agent_ms,
                text,
                duration_ms,
            } => {
                self.active = Some(Active::AwaitingBargeIn {
                    after_bytes: bytes_for_ms(after_agent_ms),
                    text,
                    duration_ms,
                });
            }
            CallerStep::HangUp => {
                let frame = InboundFrame::Stop {
                    sequence_number: Some(self.next_sequence()),
                    stream_id: self.stream_id.clone(),
                    stop: serde_json::json!({ "call_control_id": self.config.call_control_id }),
                };
                self.send(frame, SentFrame::Stop, now);
                self.hung_up = true;
            }
        }
    }

    fn start_turn(&mut self, text: String, duration_ms: u32, over_agent: bool, now: Instant) {
        let codec = self.config.codec;
        let frames = codec
            .speech_like(duration_ms.div_ceil(FRAME_MS) * FRAME_MS)
            .chunks(FRAME_BYTES)
            .map(|chunk| {
                let mut frame = chunk.to_vec();
                frame.resize(FRAME_BYTES, codec.silence_byte());
                frame
            })
            .collect();
        let started_at_ms = self.ms(now);
        self.turns.push(CallerTurn {
            text,
            started_at_ms,
            ended_at_ms: None,
            interrupted_agent: over_agent,
            first_agent_audio_after_ms: None,
        });
        // Whatever the agent says next belongs to a new agent turn.
        self.agent_turn_open = false;
        self.agent_heard = false;
        self.active = Some(Active::Speaking {
            frames,
            next: 0,
            turn: self.turns.len() - 1,
        });
    }

    fn into_report(self, ended: CallEnd, now: Instant) -> CallerReport {
        let duration_ms = self.ms(now);
        CallerReport {
            stream_url: self.stream_url,
            stream_id: self.stream_id,
            call_control_id: self.config.call_control_id,
            from: self.config.from,
            to: self.config.to,
            codec: self.config.codec,
            sent: self.sent,
            received: self.received,
            turns: self.turns,
            agent_turns: self.agent_turns,
            waits: self.waits,
            marks_echoed: self.marks_echoed,
            script_completed: self.steps.is_empty() && self.active.is_none(),
            ended,
            duration_ms,
            stream: self.counts,
        }
    }
}

/// Which script a caller speaks, by the number dialled.
#[derive(Debug, Clone, Default)]
pub struct CallerScripts {
    /// For numbers without a script of their own.
    pub default: CallerScript,
    pub by_number: HashMap<String, CallerScript>,
}

impl CallerScripts {
    /// Every call speaks `script`.
    pub fn new(default: CallerScript) -> Self {
        Self {
            default,
            by_number: HashMap::new(),
        }
    }

    /// Calls to `to` speak `script`.
    pub fn with(mut self, to: impl Into<String>, script: CallerScript) -> Self {
        self.by_number.insert(to.into(), script);
        self
    }

    /// The script for a call to `to`.
    pub fn for_number(&self, to: &str) -> &CallerScript {
        self.by_number.get(to).unwrap_or(&self.default)
    }
}

/// Settings shared by every caller a [`CallerHook`] starts.
#[derive(Debug, Clone)]
pub struct CallerOptions {
    pub deadline: Duration,
    pub agent_quiet_ms: u32,
    pub connect_timeout: Duration,
    /// See [`CallerConfig::keep_frames`].
    pub keep_frames: bool,
    /// See [`CallerConfig::hang_up_at`].
    pub hang_up_at: Option<Instant>,
}

impl Default for CallerOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(120),
            agent_quiet_ms: 300,
            connect_timeout: Duration::from_secs(5),
            keep_frames: true,
            hang_up_at: None,
        }
    }
}

/// What a finished simulated call produced.
pub type CallerOutcome = Result<CallerReport, CallerError>;

/// Called with each finished call's outcome, on the callers' thread.
pub type ReportHook = Arc<dyn Fn(&CallerOutcome) + Send + Sync>;

struct HookInner {
    arbiter: ArbiterHandle,
    scripts: Mutex<CallerScripts>,
    options: CallerOptions,
    on_report: Option<ReportHook>,
    outcomes: Mutex<Vec<CallerOutcome>>,
    running: AtomicUsize,
}

/// Runs a simulated caller for every stream the Telnyx simulator starts, on a thread of its own,
/// and keeps their outcomes. Cheap to clone.
#[derive(Clone)]
pub struct CallerHook {
    inner: Arc<HookInner>,
}

impl CallerHook {
    /// Starts the callers' thread. Must be called inside an actix system.
    pub fn start(
        scripts: CallerScripts,
        options: CallerOptions,
        on_report: Option<ReportHook>,
    ) -> Self {
        let arbiter = actix::Arbiter::new();
        Self {
            inner: Arc::new(HookInner {
                arbiter: arbiter.handle(),
                scripts: Mutex::new(scripts),
                options,
                on_report,
                outcomes: Mutex::new(Vec::new()),
                running: AtomicUsize::new(0),
            }),
        }
    }

    /// The hook to put in `TelnyxSimConfig::on_stream_started`.
    pub fn stream_hook(&self) -> StreamHook {
        let hook = self.clone();
        Arc::new(move |stream| hook.call(stream))
    }

    /// Starts a caller for `stream` (what [`stream_hook`](Self::stream_hook) does).
    pub fn call(&self, stream: StreamStarted) {
        let script = self.script_for(&stream.to);
        let codec = stream
            .stream_bidirectional_codec
            .as_deref()
            .and_then(|name| Codec::from_telnyx(name).ok())
            .unwrap_or(Codec::Pcmu);
        let options = &self.inner.options;
        let config = CallerConfig {
            codec,
            script,
            call_control_id: stream.call_control_id,
            from: stream.from,
            to: stream.to,
            client_state: stream.client_state,
            deadline: options.deadline,
            agent_quiet_ms: options.agent_quiet_ms,
            connect_timeout: options.connect_timeout,
            keep_frames: options.keep_frames,
            hang_up_at: options.hang_up_at,
        };
        let url = stream.stream_url;
        let inner = self.inner.clone();
        inner.running.fetch_add(1, Ordering::SeqCst);
        let spawned = self.inner.arbiter.spawn_fn(move || {
            // awc is `!Send`: the call's future is made and run on this thread.
            actix_web::rt::spawn(async move {
                let outcome = CallerSim::run(&url, config).await;
                if let Err(err) = &outcome {
                    tracing::warn!(error = %err, "simulated caller failed");
                }
                if let Some(on_report) = &inner.on_report {
                    on_report(&outcome);
                }
                lock(&inner.outcomes).push(outcome);
                inner.running.fetch_sub(1, Ordering::SeqCst);
            });
        });
        if !spawned {
            self.inner.running.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("simulated caller not started: its thread has stopped");
        }
    }

    /// The script a call to `to` will speak.
    pub fn script_for(&self, to: &str) -> CallerScript {
        lock(&self.inner.scripts).for_number(to).clone()
    }

    /// Calls to `to` started from now on speak `script`.
    pub fn set_script(&self, to: impl Into<String>, script: CallerScript) {
        lock(&self.inner.scripts)
            .by_number
            .insert(to.into(), script);
    }

    /// Calls to numbers without a script of their own speak `script` from now on.
    pub fn set_default_script(&self, script: CallerScript) {
        lock(&self.inner.scripts).default = script;
    }

    /// Every finished call's outcome, in the order they finished.
    pub fn outcomes(&self) -> Vec<CallerOutcome> {
        lock(&self.inner.outcomes).clone()
    }

    /// The report of every finished call, failed ones included where they got that far.
    pub fn reports(&self) -> Vec<CallerReport> {
        lock(&self.inner.outcomes)
            .iter()
            .filter_map(|outcome| match outcome {
                Ok(report) => Some(report.clone()),
                Err(err) => err.report().cloned(),
            })
            .collect()
    }

    /// Calls still in progress.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::SeqCst)
    }

    /// Waits until `n` calls have finished or `timeout` passes; returns the outcomes so far.
    pub async fn wait_for_outcomes(&self, n: usize, timeout: Duration) -> Vec<CallerOutcome> {
        let until = Instant::now() + timeout;
        loop {
            let outcomes = self.outcomes();
            if outcomes.len() >= n || Instant::now() >= until {
                return outcomes;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the callers' thread (calls in progress end without a `stop`).
    pub fn stop(&self) {
        self.inner.arbiter.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playback_echoes_marks_once_the_audio_before_them_has_played() {
        let mut playback = Playback::default();
        assert_eq!(playback.push_mark("now".into()), Some("now".into()));
        playback.push_audio(320);
        assert_eq!(playback.push_mark("a".into()), None);
        playback.push_audio(160);
        assert_eq!(playback.push_mark("b".into()), None);
        assert_eq!(playback.play(160), (160, vec![]));
        assert_eq!(playback.play(160), (160, vec!["a".to_owned()]));
        assert_eq!(playback.play(160), (160, vec!["b".to_owned()]));
        assert!(playback.is_empty());
        assert_eq!(playback.play(160), (0, vec![]));
    }

    #[test]
    fn clear_drops_the_queue_and_returns_pending_marks() {
        let mut playback = Playback::default();
        playback.push_audio(1600);
        playback.push_mark("a".into());
        playback.push_audio(800);
        playback.push_mark("b".into());
        playback.play(160);
        assert_eq!(
            playback.clear(),
            (2240, vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(playback.is_empty());
    }

    #[test]
    fn the_demo_script_feeds_deepgram_its_sentences_in_order() {
        let script = CallerScript::support_demo();
        assert_eq!(
            script.utterances(),
            [
                "Hi, my internet keeps dropping every evening.",
                "I already restarted the router twice.",
                "Great, thank you, that fixed it.",
            ]
        );
        assert_eq!(script.steps.last(), Some(&CallerStep::HangUp));
        assert_eq!(speech_ms_for("hi"), MIN_SPEECH_MS);
        assert_eq!(speech_ms_for(&"x".repeat(40)) % FRAME_MS, 0);
    }
}
