//! A call's agent-audio path: where its Cartesia stream writes the agent's audio, straight into
//! the call's media socket queue, with each sentence's mark behind the audio it follows.
//!
//! The call decides what may be heard (the context of the turn it is speaking, cleared at a
//! barge-in) and which marks go out at which audio offset; the TTS stream, running on the media
//! socket's thread, writes each chunk of that context as it arrives and the marks it has passed.
//! So an agent chunk crosses no thread and no actor mailbox on its way to the caller, and the
//! call hears of a turn's audio only when it starts (and reads how far it got from here).

use crate::actors::call::media::MediaLink;
use crate::domain::audio::ms_for_bytes;
use crate::providers::telnyx::media::OutboundFrame;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Shared by a call and its TTS stream; cloning shares it.
#[derive(Clone)]
pub struct AgentAudioPath(Arc<Mutex<AgentAudio>>);

struct AgentAudio {
    link: MediaLink,
    /// The context whose audio the caller may hear (none: everything is dropped).
    context: Option<String>,
    /// Of that context: audio written so far, when it started and last moved on.
    audio_ms: u64,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// Marks waiting for the audio to reach their offset (ms of the context's audio), in order.
    marks: VecDeque<(f64, String)>,
}

/// How far the current context's audio has got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioProgress {
    pub audio_ms: u64,
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
}

/// A chunk was written: whether it was its context's first, and when.
#[derive(Debug, Clone, Copy)]
pub struct Played {
    pub first: bool,
    pub at: Instant,
}

impl AgentAudioPath {
    pub fn new(link: MediaLink) -> Self {
        Self(Arc::new(Mutex::new(AgentAudio {
            link,
            context: None,
            audio_ms: 0,
            first_at: None,
            last_at: None,
            marks: VecDeque::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, AgentAudio> {
        // Every write under the lock is a plain field update: a poisoned lock is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The call: `context_id`'s audio may be heard from now on (a new one starts from zero).
    pub fn speak(&self, context_id: &str) {
        let mut audio = self.lock();
        if audio.context.as_deref() == Some(context_id) {
            return;
        }
        audio.context = Some(context_id.to_owned());
        audio.audio_ms = 0;
        audio.first_at = None;
        audio.last_at = None;
        audio.marks.clear();
    }

    /// The call: stop the agent now (barge-in). Nothing of the current context is written after
    /// this, and Telnyx is told to drop what it has buffered: the `clear` is queued under the
    /// same lock the stream writes under, so no chunk can follow it.
    pub fn silence(&self) {
        let mut audio = self.lock();
        audio.forget_turn();
        audio.link.send(OutboundFrame::Clear);
    }

    /// The call: nothing more is written (the call ends, or Telnyx speaks from now on); what
    /// is queued already plays out.
    pub fn stop(&self) {
        self.lock().forget_turn();
    }

    /// The call: the whole turn's audio has been written; every mark still waiting goes out
    /// now (the audio's length can fall a little short of Cartesia's last word end).
    pub fn flush_marks(&self) {
        self.lock().flush_marks(f64::INFINITY);
    }

    /// The call: marks for the current context, in order, each to go out once the audio has
    /// reached its offset (ms); `None` goes out now, after every mark still waiting.
    pub fn queue_marks(&self, marks: Vec<(Option<f64>, String)>) {
        let mut audio = self.lock();
        for (offset, name) in marks {
            match offset {
                None => {
                    audio.flush_marks(f64::INFINITY);
                    audio.link.send(OutboundFrame::mark(name));
                }
                Some(offset) => {
                    audio.marks.push_back((offset, name));
                    let reached = audio.audio_ms as f64;
                    audio.flush_marks(reached);
                }
            }
        }
    }

    /// The TTS stream: writes a chunk of `context_id` if that is what the caller may hear now,
    /// then the marks it has brought due. `None` when the chunk was dropped.
    pub fn play(&self, context_id: &str, chunk: &[u8]) -> Option<Played> {
        let mut audio = self.lock();
        if audio.context.as_deref() != Some(context_id) {
            return None; // a late chunk of a context the call moved on from
        }
        let at = Instant::now();
        audio.link.send(OutboundFrame::media(chunk));
        audio.audio_ms += ms_for_bytes(chunk.len());
        let first = audio.first_at.is_none();
        audio.first_at.get_or_insert(at);
        audio.last_at = Some(at);
        let reached = audio.audio_ms as f64;
        audio.flush_marks(reached);
        Some(Played { first, at })
    }

    /// How far `context_id`'s audio has got (`None` when it is not the current context).
    pub fn progress(&self, context_id: &str) -> Option<AudioProgress> {
        let audio = self.lock();
        (audio.context.as_deref() == Some(context_id)).then_some(AudioProgress {
            audio_ms: audio.audio_ms,
            first_at: audio.first_at,
            last_at: audio.last_at,
        })
    }
}

impl AgentAudio {
    /// No context is heard any more and no mark waits for its audio.
    fn forget_turn(&mut self) {
        self.context = None;
        self.marks.clear();
    }

    /// Sends the waiting marks whose offset the audio has reached, in order.
    fn flush_marks(&mut self, reached_ms: f64) {
        while self.marks.front().is_some_and(|(at, _)| *at <= reached_ms) {
            if let Some((_, name)) = self.marks.pop_front() {
                self.link.send(OutboundFrame::mark(name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::call::media::{MediaOut, MediaOutReceiver};

    fn path() -> (AgentAudioPath, MediaOutReceiver) {
        let dropped = prometheus::IntCounter::new("dropped", "test").unwrap();
        let (link, rx) = MediaLink::bounded(64, dropped);
        (AgentAudioPath::new(link), rx)
    }

    /// What the writer has queued, as `audio:<ms>`, `mark:<name>` and `clear`.
    async fn drain(path: &AgentAudioPath, rx: &mut MediaOutReceiver) -> Vec<String> {
        let mut out = Vec::new();
        while path.lock().link.queued() > 0 {
            out.push(match rx.recv().await {
                MediaOut::Frame(OutboundFrame::Media { media }) => {
                    format!("audio:{}", media.payload.len())
                }
                MediaOut::Frame(OutboundFrame::Mark { mark }) => format!("mark:{}", mark.name),
                MediaOut::Frame(OutboundFrame::Clear) => "clear".into(),
                other => format!("{other:?}"),
            });
        }
        out
    }

    #[actix_web::test]
    async fn marks_go_out_behind_the_audio_that_reaches_their_offset() {
        let (path, mut rx) = path();
        path.speak("c-1");
        // 100 ms chunks (800 bytes of 8 kHz audio): the first sentence ends at 150 ms.
        path.queue_marks(vec![(Some(150.0), "c-1:1".into())]);
        assert!(path.play("c-1", &[0; 800]).unwrap().first);
        assert!(!path.play("c-1", &[0; 800]).unwrap().first);
        path.queue_marks(vec![(Some(150.0), "late".into()), (None, "c-1:2".into())]);
        let out = drain(&path, &mut rx).await;
        let a = format!("audio:{}", 1068); // base64 of 800 bytes
        assert_eq!(
            out,
            vec![
                a.clone(),
                a,
                "mark:c-1:1".into(),
                "mark:late".into(),
                "mark:c-1:2".into()
            ]
        );
        assert_eq!(path.progress("c-1").unwrap().audio_ms, 200);
        assert_eq!(path.progress("c-2"), None);
    }

    #[actix_web::test]
    async fn a_flush_sends_the_waiting_marks_and_a_stopped_path_writes_nothing() {
        let (path, mut rx) = path();
        path.speak("c-1");
        path.play("c-1", &[0; 160]).unwrap(); // 20 ms
        path.queue_marks(vec![(Some(20.4), "c-1:1".into())]);
        path.flush_marks();
        path.stop();
        assert!(path.play("c-1", &[0; 160]).is_none(), "stopped");
        assert_eq!(path.progress("c-1"), None);
        let out = drain(&path, &mut rx).await;
        assert_eq!(out, vec![format!("audio:{}", 216), "mark:c-1:1".into()]);
    }

    #[actix_web::test]
    async fn after_a_barge_in_nothing_of_the_old_context_is_written_behind_the_clear() {
        let (path, mut rx) = path();
        path.speak("c-1");
        path.play("c-1", &[0; 160]).unwrap();
        path.queue_marks(vec![(Some(1_000.0), "c-1:1".into())]);
        path.silence();
        assert!(
            path.play("c-1", &[0; 160]).is_none(),
            "a late chunk is dropped"
        );
        path.speak("c-2");
        assert!(
            path.play("c-1", &[0; 160]).is_none(),
            "not the current context"
        );
        assert!(path.play("c-2", &[0; 160]).unwrap().first);
        let out = drain(&path, &mut rx).await;
        let a = format!("audio:{}", 216); // base64 of 160 bytes
        assert_eq!(
            out,
            vec![a.clone(), "clear".into(), a],
            "the waiting mark went with the context"
        );
    }
}
