//! One agent turn being spoken (the greeting, a reply, the hand-off line): its sentences, the
//! audio sent so far, Cartesia's word timings and the marks echoed back. Plain data plus the
//! arithmetic the speaking and listening sides share, so it is unit-tested without an actor.

use crate::domain::text::SentenceSplitter;
use actix::SpawnHandle;
use std::time::{Duration, Instant};

/// Left to play below which speech from the caller is turn-taking, not barge-in.
const AUDIBLE_TAIL: Duration = Duration::from_millis(150);

/// One agent turn being spoken.
pub(super) struct AgentTurn {
    pub(super) context_id: String,
    pub(super) kind: TurnKind,
    pub(super) sentences: Vec<String>,
    pub(super) splitter: SentenceSplitter,
    pub(super) llm_done: bool,
    pub(super) tts_done: bool,
    pub(super) llm: Option<SpawnHandle>,
    /// When Deepgram's result ending the caller turn was read.
    pub(super) caller_turn_at: Option<Instant>,
    pub(super) first_audio_at: Option<Instant>,
    /// The TTS stream's `Started` for this turn was handled (its first-audio bookkeeping done).
    pub(super) audio_started: bool,
    /// Engine time from the caller turn's end to the LLM request (stage `final_to_llm`).
    pub(super) llm_overhead: Option<Duration>,
    /// When the reply's first sentence was complete, and when its LLM request went out.
    pub(super) first_sentence_at: Option<Instant>,
    pub(super) llm_requested_at: Option<Instant>,
    /// Audio sent to the caller so far, in milliseconds.
    pub(super) audio_ms: u64,
    /// Each word with the time its audio ends, in seconds from the turn's first audio.
    pub(super) words: Vec<(String, f64)>,
    /// Sentences whose mark has been sent.
    pub(super) marked: usize,
    pub(super) started_ms: i64,
    pub(super) retries: u32,
    /// The reply is asked of the fallback model (the main one failed this turn).
    pub(super) on_fallback_model: bool,
    /// The last time a provider moved this turn on (created, a token, audio, word timings, an
    /// answer to retry): the stall watchdog's clock.
    pub(super) progress_at: Instant,
    /// Telnyx `speak` is saying this turn: it lasts until `call.speak.ended`.
    pub(super) telnyx_speaking: bool,
    /// The messages of the LLM request under way: a stream that breaks off before its first
    /// word is asked again (retries, then the fallback model) like a request that failed.
    pub(super) llm_request: Vec<crate::providers::groq::ChatMessage>,
    /// The number of the LLM request under way (see `Voice::llm_requests`).
    pub(super) llm_attempt: u32,
    /// When the LLM's first token of this reply arrived.
    pub(super) first_token_at: Option<Instant>,
    /// The caller turn's `turn` span (a reply's only): open from the caller turn's end until
    /// this reply's first audio goes to the media socket; the provider requests made for the
    /// reply are its children. Timings are recorded on it as it ends ([`Self::end_span`]).
    pub(super) span: Option<tracing::Span>,
    /// Cartesia's share of the turn, from the first sentence sent to the first audio back
    /// (a `provider_request` span: the socket is already open, so no handshake of its own).
    pub(super) tts_span: Option<tracing::Span>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum TurnKind {
    Greeting,
    Reply,
    Handoff,
    /// The last line of a call that cannot go on; the call ends once it has played.
    Farewell,
    /// The line said before a draining instance hangs up.
    Goodbye,
    /// "Are you still there?" to a caller gone silent; the caller may talk over it.
    StillThere,
}

impl TurnKind {
    /// Whether the caller may talk over it (the hand-off, last and goodbye lines are said
    /// whatever happens).
    pub(super) fn interruptible(self) -> bool {
        !matches!(self, Self::Handoff | Self::Farewell | Self::Goodbye)
    }
}

impl AgentTurn {
    fn empty(context_id: String, kind: TurnKind, started_ms: i64) -> Self {
        Self {
            context_id,
            kind,
            sentences: Vec::new(),
            splitter: SentenceSplitter::new(),
            llm_done: false,
            tts_done: false,
            llm: None,
            caller_turn_at: None,
            first_audio_at: None,
            audio_started: false,
            llm_overhead: None,
            first_sentence_at: None,
            llm_requested_at: None,
            audio_ms: 0,
            words: Vec::new(),
            marked: 0,
            started_ms,
            retries: 0,
            on_fallback_model: false,
            progress_at: Instant::now(),
            telnyx_speaking: false,
            llm_request: Vec::new(),
            llm_attempt: 0,
            first_token_at: None,
            span: None,
            tts_span: None,
        }
    }

    /// A reply to the caller turn that ended at `caller_turn_at`; the LLM has yet to say it.
    pub(super) fn reply(context_id: String, started_ms: i64, caller_turn_at: Instant) -> Self {
        Self {
            caller_turn_at: Some(caller_turn_at),
            ..Self::empty(context_id, TurnKind::Reply, started_ms)
        }
    }

    /// A fixed line (greeting, hand-off) sent to TTS whole: no LLM in it.
    pub(super) fn line(context_id: String, kind: TurnKind, text: String, started_ms: i64) -> Self {
        Self {
            sentences: vec![text],
            llm_done: true,
            ..Self::empty(context_id, kind, started_ms)
        }
    }

    /// The greeting from ready-made audio, all of it sent at once with its one mark. Without
    /// word timings, the words are assumed spread evenly over the audio.
    pub(super) fn prerecorded_greeting(
        context_id: String,
        text: String,
        audio_ms: u64,
        started_ms: i64,
    ) -> Self {
        let words: Vec<&str> = text.split_whitespace().collect();
        let per_word = audio_ms as f64 / 1000.0 / words.len().max(1) as f64;
        let timed = words
            .iter()
            .enumerate()
            .map(|(i, w)| ((*w).to_owned(), per_word * (i + 1) as f64))
            .collect();
        Self {
            tts_done: true,
            first_audio_at: Some(Instant::now()),
            audio_ms,
            words: timed,
            marked: 1,
            ..Self::line(context_id, TurnKind::Greeting, text, started_ms)
        }
    }

    /// A provider moved this turn on.
    pub(super) fn progressed(&mut self) {
        self.progress_at = Instant::now();
    }

    /// The stage this turn waits on with nothing from it for longer than `limit`: the LLM
    /// (`llm`) until the reply is complete, then TTS (`tts`) until all audio is sent.
    pub(super) fn stalled_stage(&self, limit: Duration) -> Option<&'static str> {
        if self.tts_done || self.progress_at.elapsed() <= limit {
            return None;
        }
        Some(if self.llm_done { "tts" } else { "llm" })
    }

    /// How long until what was sent of this turn has played at the caller's end.
    pub(super) fn remaining_playback(&self) -> Duration {
        let Some(first) = self.first_audio_at else {
            return Duration::ZERO;
        };
        Duration::from_millis(self.audio_ms).saturating_sub(first.elapsed())
    }

    /// True while the caller can still hear this turn: audio went out and, if the whole turn
    /// was sent, more than a moment of it is left to play (a line Telnyx speaks is audible
    /// until its `call.speak.ended`). Speech right at the end of the
    /// agent's turn is turn-taking, not barge-in.
    pub(super) fn is_audible(&self) -> bool {
        self.telnyx_speaking
            || self.first_audio_at.is_some()
                && !(self.tts_done && self.remaining_playback() < AUDIBLE_TAIL)
    }

    /// How much of the audio sent has played by now.
    pub(super) fn played_ms(&self) -> u64 {
        self.first_audio_at.map_or(0, |first| {
            (first.elapsed().as_millis() as u64).min(self.audio_ms)
        })
    }

    /// The words whose audio had ended by `played_ms`.
    pub(super) fn words_played_by(&self, played_ms: u64) -> Vec<String> {
        self.words
            .iter()
            .filter(|(_, end)| end * 1000.0 <= played_ms as f64)
            .map(|(w, _)| w.clone())
            .collect()
    }

    /// The marks whose place in the audio is now known, in order, each counted as sent: one
    /// after each sentence, due once the audio reaches its last word's end (ms from the turn's
    /// first audio); with `all` (every byte sent), every remaining one, due now (`None`).
    pub(super) fn take_timed_marks(&mut self, all: bool) -> Vec<(Option<f64>, String)> {
        let mut marks = Vec::new();
        let mut words_before = 0usize;
        for (index, sentence) in self.sentences.iter().enumerate() {
            words_before += sentence.split_whitespace().count();
            if index < self.marked {
                continue;
            }
            let offset = self
                .words
                .get(words_before.saturating_sub(1))
                .map(|(_, end)| end * 1000.0);
            let due = match (all, offset) {
                (true, _) => None,
                (false, Some(ms)) => Some(ms),
                (false, None) => break,
            };
            marks.push((due, format!("{}:{}", self.context_id, index + 1)));
            self.marked = index + 1;
        }
        marks
    }

    /// True when `mark` is this turn's last sentence's mark and the whole turn was sent.
    pub(super) fn is_last_mark(&self, mark: &str) -> bool {
        let Some((context_id, index)) = mark.rsplit_once(':') else {
            return false;
        };
        self.context_id == context_id
            && self.tts_done
            && index.parse::<usize>().ok() == Some(self.sentences.len())
    }

    /// Ends the turn's span (at its first audio, or when the turn is dropped before any, then
    /// `interrupted` when the caller spoke over it), with the timings known by then.
    pub(super) fn end_span(&mut self, interrupted: bool) {
        self.tts_span = None;
        let Some(span) = self.span.take() else {
            return;
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if let Some(overhead) = self.llm_overhead {
            span.record("final_to_llm_ms", ms(overhead));
        }
        if let Some(requested) = self.llm_requested_at {
            if let Some(token) = self.first_token_at {
                span.record(
                    "llm_first_token_ms",
                    ms(token.saturating_duration_since(requested)),
                );
            }
            if let Some(sentence) = self.first_sentence_at {
                span.record(
                    "llm_first_sentence_ms",
                    ms(sentence.saturating_duration_since(requested)),
                );
            }
        }
        if let Some(latency) = self.latency_ms() {
            span.record("first_audio_ms", latency);
        }
        if interrupted {
            span.record("interrupted", true);
        }
    }

    /// From the end of the caller's turn to the first audio of this reply.
    pub(super) fn latency_ms(&self) -> Option<i32> {
        match (self.caller_turn_at, self.first_audio_at) {
            (Some(turn_end), Some(first)) => {
                i32::try_from(first.duration_since(turn_end).as_millis()).ok()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(turn: &mut AgentTurn, words: &[(&str, f64)]) {
        turn.words = words.iter().map(|(w, e)| ((*w).to_owned(), *e)).collect();
    }

    #[test]
    fn a_reply_starts_empty_and_waits_for_the_llm() {
        let at = Instant::now();
        let turn = AgentTurn::reply("c-2".into(), 1200, at);
        assert_eq!(turn.kind, TurnKind::Reply);
        assert!(turn.sentences.is_empty() && !turn.llm_done && !turn.tts_done);
        assert_eq!(turn.caller_turn_at, Some(at));
        assert_eq!(turn.started_ms, 1200);
        assert!(!turn.is_audible());
    }

    #[test]
    fn a_line_is_one_sentence_with_no_llm() {
        let turn = AgentTurn::line("c-1".into(), TurnKind::Handoff, "Please hold.".into(), 0);
        assert_eq!(turn.sentences, vec!["Please hold.".to_owned()]);
        assert!(turn.llm_done && !turn.tts_done);
        assert_eq!(turn.marked, 0);
    }

    #[test]
    fn a_prerecorded_greeting_spreads_its_words_over_the_audio() {
        let turn =
            AgentTurn::prerecorded_greeting("c-1".into(), "Hello there friend".into(), 900, 0);
        let ends: Vec<f64> = turn.words.iter().map(|(_, e)| *e).collect();
        assert_eq!(ends.len(), 3);
        assert!(
            (ends[0] - 0.3).abs() < 1e-9 && (ends[2] - 0.9).abs() < 1e-9,
            "{ends:?}"
        );
        assert!(turn.tts_done && turn.first_audio_at.is_some());
        assert_eq!((turn.marked, turn.audio_ms), (1, 900));
    }

    #[test]
    fn each_sentences_mark_is_placed_at_its_last_words_end_once_known() {
        let mut turn = AgentTurn::reply("c-3".into(), 0, Instant::now());
        turn.sentences = vec!["One two.".into(), "Three.".into(), "Four.".into()];
        assert!(turn.take_timed_marks(false).is_empty(), "no timings yet");
        timed(&mut turn, &[("One", 0.2), ("two.", 0.5), ("Three.", 0.9)]);
        assert_eq!(
            turn.take_timed_marks(false),
            vec![
                (Some(500.0), "c-3:1".to_owned()),
                (Some(900.0), "c-3:2".to_owned())
            ]
        );
        assert!(
            turn.take_timed_marks(false).is_empty(),
            "a mark is placed once"
        );
        assert_eq!(
            turn.take_timed_marks(true),
            vec![(None, "c-3:3".to_owned())]
        );
        assert_eq!(turn.marked, 3);
    }

    #[test]
    fn only_the_last_sentences_mark_of_a_fully_sent_turn_ends_it() {
        let mut turn = AgentTurn::reply("c-4".into(), 0, Instant::now());
        turn.sentences = vec!["A.".into(), "B.".into()];
        assert!(!turn.is_last_mark("c-4:2"), "TTS not done yet");
        turn.tts_done = true;
        assert!(turn.is_last_mark("c-4:2"));
        assert!(!turn.is_last_mark("c-4:1"));
        assert!(!turn.is_last_mark("c-5:2"));
        assert!(!turn.is_last_mark("greeting"));
    }

    #[test]
    fn only_words_whose_audio_ended_count_as_played() {
        let mut turn = AgentTurn::reply("c-5".into(), 0, Instant::now());
        timed(&mut turn, &[("Sure,", 0.3), ("I", 0.4), ("can", 0.7)]);
        assert_eq!(
            turn.words_played_by(450),
            vec!["Sure,".to_owned(), "I".to_owned()]
        );
        assert!(turn.words_played_by(0).is_empty());
        assert_eq!(turn.played_ms(), 0, "nothing played before the first audio");
    }

    #[test]
    fn latency_runs_from_the_caller_turn_to_the_first_audio() {
        let end = Instant::now();
        let mut turn = AgentTurn::reply("c-6".into(), 0, end);
        assert_eq!(turn.latency_ms(), None);
        turn.first_audio_at = Some(end + Duration::from_millis(420));
        assert_eq!(turn.latency_ms(), Some(420));
    }
}
