//! The live conversation of a call: the state it keeps once the media stream is attached
//! (`Voice`), the media socket's own messages (attached, started, audio, closed), and starting
//! and closing the Deepgram and Cartesia sub-actors. The rest of the conversation is split by
//! where its messages come from: `listening` (Deepgram), `reply` (the LLM), `speaking`
//! (Cartesia and the caller's marks), `escalation` (hand-off to a human); `turn` is the agent
//! turn they share.

use super::media::*;
use super::turn::{AgentTurn, TurnKind};
use super::Call;
use crate::actors::agent_audio::AgentAudioPath;
use crate::actors::stt::{CloseStt, SttStream};
use crate::actors::tts::{CloseTts, TtsStream};
use crate::domain::audio::Codec;
use crate::domain::call::{CallId, CallState, EndReason};
use crate::domain::sentiment::RollingSentiment;
use crate::learning::MemoryFetch;
use crate::providers::groq::ChatMessage;
use actix::prelude::*;
use futures_util::future::{LocalBoxFuture, Shared};
use std::time::Instant;

/// Messages of the conversation so far sent with each LLM request.
const PROMPT_HISTORY: usize = 20;

/// Retrieval started while the caller is still speaking (on an interim transcript), so that the
/// final transcript rarely waits for embeddings and pattern search.
pub(super) struct Prefetch {
    pub(super) words: usize,
    pub(super) context: Shared<LocalBoxFuture<'static, crate::learning::RetrievedContext>>,
}

impl Prefetch {
    /// True when this fetch may answer a transcript of `words` words (it saw enough of them).
    pub(super) fn serves(&self, words: usize) -> bool {
        self.words as f64 >= words as f64 * super::listening::PREFETCH_MIN_WORDS_SHARE
    }
}

/// The conversation state of a call with its media stream up.
pub(super) struct Voice {
    pub(super) link: MediaLink,
    /// Where the TTS stream writes the agent's audio (and the call its marks and clears).
    pub(super) agent_audio: AgentAudioPath,
    pub(super) stream_id: Option<String>,
    pub(super) codec: Option<Codec>,
    pub(super) stt: Option<Addr<SttStream>>,
    pub(super) tts: Option<Addr<TtsStream>>,
    /// The last [`PROMPT_HISTORY`] messages (the whole transcript is in the database): a long
    /// call must not grow in memory turn after turn.
    pub(super) history: std::collections::VecDeque<ChatMessage>,
    pub(super) turns: u32,
    /// The agent turn being spoken, if any.
    pub(super) speaking: Option<AgentTurn>,
    pub(super) seq: i32,
    pub(super) sentiment: RollingSentiment,
    pub(super) started: Instant,
    pub(super) escalating: bool,
    /// Escalation's transfer has been sent (it is sent once, whatever fires first).
    pub(super) handed_off: bool,
    pub(super) prefetch: Option<Prefetch>,
    /// The caller's memory, fetched at the first retrieval and shared by every later one (it
    /// is written when a call ends, not during one); fetched again after a failure.
    pub(super) memory: Option<MemoryFetch>,
    /// Cartesia failed: agent turns are said by Telnyx `speak` until its breaker lets it back.
    pub(super) tts_fallback: bool,
    /// Deepgram failed: caller turns come from Telnyx transcription (`call.transcription`).
    pub(super) stt_fallback: bool,
    /// Reply turns in a row the LLM could not answer (the scripted apology was said instead).
    pub(super) failed_replies: u32,
    /// Since when nobody has spoken: the caller's last sign of speech, or the end of the last
    /// agent turn, whichever is later (the silence watchdog's clock).
    pub(super) quiet_since: Instant,
    /// The caller was asked whether they are still there and has not spoken since.
    pub(super) asked_still_there: bool,
    /// Deepgram heard words of a caller turn whose final has not come yet: since when it last
    /// said anything (the stall watchdog's clock for speech-to-text).
    pub(super) stt_waiting_since: Option<Instant>,
    /// LLM requests made on this call: each one's number tags its token stream.
    pub(super) llm_requests: u32,
    /// Caller turns heard so far (the `turn` spans' index).
    pub(super) caller_turns: u32,
    /// The caller talked over an agent turn since their last turn (the next `turn` span's
    /// `barge_in`).
    pub(super) barged_in: bool,
}

impl Voice {
    fn new(link: MediaLink) -> Self {
        Self {
            agent_audio: AgentAudioPath::new(link.clone()),
            link,
            stream_id: None,
            codec: None,
            stt: None,
            tts: None,
            history: std::collections::VecDeque::new(),
            turns: 0,
            speaking: None,
            seq: 0,
            sentiment: RollingSentiment::default(),
            started: Instant::now(),
            escalating: false,
            handed_off: false,
            prefetch: None,
            memory: None,
            tts_fallback: false,
            stt_fallback: false,
            failed_replies: 0,
            quiet_since: Instant::now(),
            asked_still_there: false,
            stt_waiting_since: None,
            llm_requests: 0,
            caller_turns: 0,
            barged_in: false,
        }
    }

    /// Adds a message to the prompt history, forgetting the oldest beyond the window.
    pub(super) fn remember(&mut self, message: ChatMessage) {
        if self.history.len() >= PROMPT_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(message);
    }

    pub(super) fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// The caller showed signs of speech (words, a transcript): they are there.
    pub(super) fn caller_active(&mut self) {
        self.quiet_since = Instant::now();
        self.asked_still_there = false;
    }

    pub(super) fn next_seq(&mut self) -> i32 {
        self.seq += 1;
        self.seq
    }

    /// The Cartesia context id of the next agent turn (`{call}-{n}`); counts the turn.
    pub(super) fn next_context_id(&mut self, call: CallId) -> String {
        self.turns += 1;
        format!("{call}-{}", self.turns)
    }
}

impl Call {
    pub(super) fn voice_mut(&mut self) -> Option<&mut Voice> {
        self.voice.as_mut()
    }

    /// The agent turn being spoken, if any.
    pub(super) fn speaking(&self) -> Option<&AgentTurn> {
        self.voice.as_ref().and_then(|v| v.speaking.as_ref())
    }

    /// Starts the sub-actors once the stream's codec is known, then greets the caller.
    pub(super) fn start_voice(&mut self, started: MediaStarted, ctx: &mut Context<Self>) {
        if self.voice.as_ref().is_none_or(|v| v.stream_id.is_some()) {
            return;
        }
        let codec = match Codec::from_telnyx(&started.encoding) {
            Ok(codec) if started.sample_rate == crate::domain::audio::SAMPLE_RATE => codec,
            _ => {
                tracing::warn!(parent: &self.span, encoding = %started.encoding, rate = started.sample_rate, "unsupported media format");
                if let Some(voice) = &self.voice {
                    voice.link.close("unsupported codec");
                }
                self.record_engine_event(
                    "engine.media_rejected",
                    serde_json::json!({ "encoding": started.encoding, "sample_rate": started.sample_rate }),
                );
                self.terminate(EndReason::SetupFailed, ctx);
                return;
            }
        };
        let trace = self.trace_context();
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        voice.stream_id = Some(started.stream_id);
        voice.codec = Some(codec);
        voice.started = Instant::now();
        voice.quiet_since = Instant::now();
        let deps = &self.deps;
        let profile = self.profile.as_ref();
        let (model, language) = profile
            .map(|p| (p.stt_model.clone(), p.language.clone()))
            .unwrap_or_default();
        let stt = SttStream::new(
            deps.deepgram.clone(),
            codec,
            &deps.deepgram_settings,
            &model,
            &language,
            ctx.address().recipient(),
            deps.voice_metrics.clone(),
        )
        .with_audio_queue(deps.settings.media_in_queue_frames);
        let audio = stt.audio_path();
        // On the media socket's thread, so the reader hands it each frame with no thread hop;
        // in the call's trace, so the Deepgram handshake (and reconnects) are its children.
        let stt = match voice.link.arbiter() {
            Some(arbiter) => crate::telemetry::otlp::start_actor_in(&arbiter, stt, trace),
            None => crate::telemetry::otlp::start_actor(stt, trace),
        };
        voice.link.route_audio(Some(audio));
        voice.stt = Some(stt);
        // Cartesia's breaker is open: no socket to wait for, Telnyx speaks from the first word.
        if self.deps.breakers.cartesia.would_allow() {
            let tts = self.start_tts(ctx);
            if let Some(voice) = self.voice.as_mut() {
                voice.tts = tts;
            }
        } else {
            self.tts_unavailable("cartesia circuit breaker is open");
        }
        let greeting = self
            .profile
            .as_ref()
            .map(|p| p.greeting.clone())
            .unwrap_or_else(|| "Hello, how can I help?".into());
        match self.greeting_audio.take().filter(|_| codec == Codec::Pcmu) {
            Some(audio) => self.play_greeting(greeting, audio, ctx),
            None => self.speak_line(TurnKind::Greeting, greeting, ctx),
        }
    }

    /// A Cartesia stream for this call, in its codec, voice and language (none before the
    /// call has media).
    pub(super) fn start_tts(&self, ctx: &mut Context<Self>) -> Option<Addr<TtsStream>> {
        let (voice_id, language) = self
            .profile
            .as_ref()
            .map(|p| (p.voice_id.clone(), p.language.clone()))
            .unwrap_or_default();
        let codec = self
            .voice
            .as_ref()
            .and_then(|v| v.codec)
            .unwrap_or(Codec::Pcmu);
        let voice = self.voice.as_ref()?;
        let tts = TtsStream::new(
            self.deps.cartesia.clone(),
            codec,
            voice_id,
            language,
            ctx.address().recipient(),
            voice.agent_audio.clone(),
            self.deps.voice_metrics.clone(),
        );
        // On the media socket's thread, so each chunk goes to the socket's queue with no
        // thread hop; in the call's trace: the Cartesia handshake (and reconnects) are its
        // children.
        Some(match voice.link.arbiter() {
            Some(arbiter) => {
                crate::telemetry::otlp::start_actor_in(&arbiter, tts, self.trace_context())
            }
            None => crate::telemetry::otlp::start_actor(tts, self.trace_context()),
        })
    }

    /// Closes the sub-actors and the socket (the call is over).
    pub(super) fn close_voice(&mut self) {
        let Some(mut voice) = self.voice.take() else {
            return;
        };
        if let Some(turn) = voice.speaking.take() {
            let text = turn.sentences.join(" ");
            self.voice = Some(voice);
            self.record_agent_turn(turn, text, true);
            let Some(v) = self.voice.take() else { return };
            voice = v;
        }
        voice.link.route_audio(None);
        if let Some(stt) = voice.stt.take() {
            stt.do_send(CloseStt);
        }
        if let Some(tts) = voice.tts.take() {
            tts.do_send(CloseTts);
        }
        // The TTS stream may still be mid-chunk on the socket's thread: nothing more of it
        // goes in behind the close.
        voice.agent_audio.stop();
        voice.link.close("call ended");
    }
}

impl Handler<MediaAttached> for Call {
    type Result = bool;
    fn handle(&mut self, msg: MediaAttached, _: &mut Self::Context) -> bool {
        // One socket per call, ever: a second one (a stolen or replayed URL) is refused and
        // the live stream, its STT/TTS sockets included, is left alone.
        if self.state == CallState::Ended || self.voice.is_some() {
            return false;
        }
        self.voice = Some(Voice::new(msg.0));
        self.last_media = Instant::now();
        true
    }
}

impl Call {
    /// Whether `link` is the socket this call's media flows on.
    fn is_current_link(&self, link: u64) -> bool {
        self.voice.as_ref().is_some_and(|v| v.link.id() == link)
    }
}

impl Handler<MediaStarted> for Call {
    type Result = ();
    fn handle(&mut self, msg: MediaStarted, ctx: &mut Self::Context) {
        if !self.is_current_link(msg.link) {
            return;
        }
        self.start_voice(msg, ctx);
    }
}

impl Handler<MediaClosed> for Call {
    type Result = ();
    fn handle(&mut self, msg: MediaClosed, _: &mut Self::Context) {
        if !self.is_current_link(msg.0) {
            return;
        }
        tracing::debug!(parent: &self.span, "media socket closed");
        if let Some(voice) = self.voice.as_mut() {
            voice.link.route_audio(None);
            if let Some(stt) = voice.stt.take() {
                stt.do_send(CloseStt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice() -> Voice {
        let dropped = prometheus::IntCounter::new("dropped", "test").expect("counter");
        Voice::new(MediaLink::bounded(8, dropped).0)
    }

    #[test]
    fn the_prompt_history_keeps_only_its_window() {
        let mut v = voice();
        for i in 0..PROMPT_HISTORY + 5 {
            v.remember(ChatMessage::user(format!("m{i}")));
        }
        assert_eq!(v.history.len(), PROMPT_HISTORY);
        assert_eq!(v.history.front().map(|m| m.content.as_str()), Some("m5"));
    }

    #[test]
    fn each_turn_gets_the_next_context_id_and_utterances_the_next_seq() {
        let mut v = voice();
        let call = CallId(uuid::Uuid::nil());
        assert_eq!(v.next_context_id(call), format!("{call}-1"));
        assert_eq!(v.next_context_id(call), format!("{call}-2"));
        assert_eq!((v.next_seq(), v.next_seq()), (1, 2));
    }
}
