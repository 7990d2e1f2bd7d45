//! The call's end of its Telnyx media socket: an ordered queue of outbound frames drained by the
//! socket's writer task, and the messages the socket's reader sends to the call.
//!
//! Caller audio does not pass through the call actor: the call starts its speech-to-text stream
//! on the socket's own thread (the HTTP worker's arbiter, [`MediaLink::arbiter`]) and hands the
//! stream's audio path to the reader ([`MediaLink::route_audio`]), so a caller frame crosses no
//! thread, no actor mailbox and no queue between the Telnyx socket and the Deepgram socket: the
//! reader's own task writes it into the Deepgram socket ([`crate::providers::ws`]). The call
//! sees when media last arrived through [`MediaLink::last_frame`] (its no-media watchdog), not
//! frame by frame.

use super::Call;
use crate::actors::stt::CallerAudioPath;
use crate::providers::telnyx::media::{InboundFrame, OutboundFrame};
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

/// What the writer task does next.
#[derive(Debug)]
pub enum MediaOut {
    Frame(OutboundFrame),
    /// Close the socket (the call decides when).
    Close(String),
}

/// Handle to a media socket's writer: a bounded queue of outbound frames. When the socket's
/// reader stalls (a slow or stuck peer), the queue keeps the newest `capacity` audio frames and
/// drops the oldest, counting each, so memory stays flat; a close is never dropped. The call
/// holds the only handle; dropping it closes nothing by itself, `close` does.
#[derive(Clone)]
pub struct MediaLink {
    queue: Arc<MediaQueue>,
    /// Tags the socket's messages to the call: one from another socket is not this link's.
    id: u64,
}

/// Link ids, unique in the process.
static NEXT_LINK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The writer task's end of a [`MediaLink`].
pub struct MediaOutReceiver {
    queue: Arc<MediaQueue>,
}

struct MediaQueue {
    items: Mutex<VecDeque<MediaOut>>,
    /// The writer task, woken by every push. A waker slot rather than a `Notify`: the writer
    /// waits on the queue in every turn of its loop (once per caller frame read), and a
    /// `Notify` wait takes and gives back a lock each time.
    ready: AtomicWaker,
    /// Something was pushed since the writer last asked [`MediaOutReceiver::changed`].
    pushed: AtomicBool,
    capacity: usize,
    /// The writer task is gone: sends fail.
    closed: AtomicBool,
    dropped: prometheus::IntCounter,
    /// The socket's thread: where the call starts the actors the socket's frames go to (none
    /// when the link was made outside an arbiter, as in unit tests).
    arbiter: Option<ArbiterHandle>,
    /// Where the reader sends caller audio, once the call has a speech-to-text stream.
    audio_to: Mutex<Option<CallerAudioPath>>,
    /// Bumped by every `route_audio`, so the reader sees a change with one atomic load a frame.
    audio_generation: AtomicU64,
    /// When the reader last took a caller frame (µs since [`epoch`], 0 before the first).
    last_frame_us: AtomicU64,
}

/// A fixed instant of this process, so an `Instant` fits in an atomic as microseconds.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl std::fmt::Debug for MediaLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaLink")
            .field("id", &self.id)
            .field("capacity", &self.queue.capacity)
            .finish_non_exhaustive()
    }
}

impl MediaLink {
    /// A link holding at most `capacity` frames, counting drops in `dropped`. Made on the
    /// socket's thread: that arbiter is the link's [`arbiter`](Self::arbiter).
    pub fn bounded(capacity: usize, dropped: prometheus::IntCounter) -> (Self, MediaOutReceiver) {
        let queue = Arc::new(MediaQueue {
            items: Mutex::new(VecDeque::new()),
            ready: AtomicWaker::new(),
            pushed: AtomicBool::new(false),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            dropped,
            arbiter: Arbiter::try_current(),
            audio_to: Mutex::new(None),
            audio_generation: AtomicU64::new(0),
            last_frame_us: AtomicU64::new(0),
        });
        (
            Self {
                queue: queue.clone(),
                id: NEXT_LINK.fetch_add(1, Ordering::Relaxed),
            },
            MediaOutReceiver { queue },
        )
    }

    /// This socket's id, carried by its `MediaStarted` and `MediaClosed`.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The arbiter (thread) the socket's reader and writer run on.
    pub fn arbiter(&self) -> Option<ArbiterHandle> {
        self.queue.arbiter.clone()
    }

    /// From now on the reader hands caller audio straight to `to` (the audio path of the
    /// call's speech-to-text stream, started on [`arbiter`](Self::arbiter)); `None` stops it
    /// (frames are dropped).
    pub fn route_audio(&self, to: Option<CallerAudioPath>) {
        *self
            .queue
            .audio_to
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = to;
        // Release: a reader that sees the new generation also sees the route stored above.
        self.queue.audio_generation.fetch_add(1, Ordering::Release);
    }

    /// When the reader last took a caller frame, if it has.
    pub fn last_frame(&self) -> Option<Instant> {
        match self.queue.last_frame_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(epoch() + Duration::from_micros(us)),
        }
    }

    fn push(&self, out: MediaOut) -> bool {
        let q = &self.queue;
        if q.closed.load(Ordering::SeqCst) {
            return false;
        }
        let mut items = q.items.lock().unwrap_or_else(|e| e.into_inner());
        items.push_back(out);
        while items.len() > q.capacity {
            // The oldest audio goes first; marks, clears and the close stay (a turn waits for
            // its marks, and they are few).
            match items
                .iter()
                .position(|o| matches!(o, MediaOut::Frame(OutboundFrame::Media { .. })))
            {
                Some(i) => {
                    items.remove(i);
                    q.dropped.inc();
                }
                None => break,
            }
        }
        drop(items);
        q.pushed.store(true, Ordering::Release);
        q.ready.wake();
        true
    }

    /// Queues a frame; false when the socket is gone.
    pub fn send(&self, frame: OutboundFrame) -> bool {
        self.push(MediaOut::Frame(frame))
    }

    pub fn close(&self, reason: &str) {
        self.push(MediaOut::Close(reason.to_owned()));
    }

    /// Frames waiting for the writer.
    pub fn queued(&self) -> usize {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl MediaOutReceiver {
    /// The next frame to write, waiting for one.
    pub async fn recv(&self) -> MediaOut {
        std::future::poll_fn(|cx| {
            if let Some(out) = self.try_recv() {
                return Poll::Ready(out);
            }
            // Registered before the second look, so a push in between still wakes us.
            self.queue.ready.register(cx.waker());
            match self.try_recv() {
                Some(out) => Poll::Ready(out),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Waits until something is queued (or was since the last wait).
    pub async fn changed(&self) {
        std::future::poll_fn(|cx| {
            if self.queue.pushed.swap(false, Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.queue.ready.register(cx.waker());
            if self.queue.pushed.swap(false, Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Whether the call has asked for the socket to close (its close waits in the queue).
    pub fn close_queued(&self) -> bool {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|out| matches!(out, MediaOut::Close(_)))
    }

    /// The next frame to write if one is waiting (the writer batches what is queued).
    pub fn try_recv(&self) -> Option<MediaOut> {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

impl Drop for MediaOutReceiver {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::SeqCst);
        self.queue
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// A socket asks to carry this call's media. Answered false when the call has ended or already
/// has a socket (the first one keeps the stream: a second socket is refused, never swapped in).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct MediaAttached(pub MediaLink);

/// Telnyx's `start` frame: the stream's id and audio format.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MediaStarted {
    /// The link whose socket sent it.
    pub link: u64,
    pub stream_id: String,
    pub encoding: String,
    pub sample_rate: u32,
}

/// A key the caller pressed (`dtmf` frame).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MediaDtmf(pub String);

/// Telnyx echoed a mark: the audio queued before it has played.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MarkPlayed(pub String);

/// The socket of link `.0` closed (Telnyx sent `stop` or the connection ended).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MediaClosed(pub u64);

/// The socket reader's side: turns parsed frames into messages for the call, hands caller
/// audio to the call's speech-to-text stream, drops what does not belong (wrong stream, bad
/// base64, the outbound track) and counts every drop by reason. Lives on the socket's thread.
pub struct CallerMediaSink {
    call: Addr<Call>,
    link: MediaLink,
    stream_id: Option<String>,
    /// Where audio goes, cached from the link, and the link's routing generation it came from.
    audio_to: Option<CallerAudioPath>,
    audio_generation: u64,
    /// Decoded audio is carved out of this block (one allocation per many frames, not one each).
    audio_buf: BytesMut,
    rejected: prometheus::IntCounterVec,
    frames_in: prometheus::IntCounter,
}

/// Bytes reserved at a time for decoded audio: 25 frames of 20 ms at 8 kHz.
const AUDIO_BLOCK: usize = 4096;

/// However the socket ends (closed, failed, or never taken over after its 101), the call hears
/// of it.
impl Drop for CallerMediaSink {
    fn drop(&mut self) {
        self.closed();
    }
}

impl CallerMediaSink {
    pub fn new(
        call: Addr<Call>,
        link: MediaLink,
        rejected: prometheus::IntCounterVec,
        frames_in: prometheus::IntCounter,
    ) -> Self {
        Self {
            call,
            link,
            stream_id: None,
            audio_to: None,
            audio_generation: 0,
            audio_buf: BytesMut::new(),
            rejected,
            frames_in,
        }
    }

    /// Tells the call this socket is gone (again when the sink is dropped: the call ignores a
    /// repeat).
    pub fn closed(&self) {
        self.call.do_send(MediaClosed(self.link.id()));
    }

    /// Counts and logs a frame that was dropped.
    pub fn reject(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
        tracing::debug!(reason, "media frame dropped");
    }

    fn is_ours(&self, stream_id: &str) -> bool {
        self.stream_id.as_deref() == Some(stream_id)
    }

    /// One `media` frame of the caller's, read off the socket at `received`: `payload` is its
    /// base64 audio, `track` its track when it named one. The per-frame path: no owned copy of
    /// the frame, the audio decoded into a shared block.
    pub fn media(
        &mut self,
        stream_id: &str,
        track: Option<&str>,
        payload: &str,
        received: Instant,
    ) {
        if !self.is_ours(stream_id) {
            return self.reject("wrong_stream");
        }
        if track.is_some_and(|t| t != "inbound") {
            return; // our own audio echoed back with both_tracks: never fed to STT
        }
        let Some(audio) = self.decode(payload) else {
            return self.reject("bad_payload");
        };
        let since_epoch = received.saturating_duration_since(epoch()).as_micros();
        self.link.queue.last_frame_us.store(
            u64::try_from(since_epoch).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
        self.frames_in.inc();
        let generation = self.link.queue.audio_generation.load(Ordering::Acquire);
        if generation != self.audio_generation {
            self.audio_to = self
                .link
                .queue
                .audio_to
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            self.audio_generation = generation;
        }
        // Before speech-to-text is up (or after it failed) the audio has nowhere to go. The
        // path is bounded: a socket that cannot keep up loses audio (counted), not memory.
        if let Some(to) = &self.audio_to {
            to.live_audio(audio, received);
        }
    }

    /// Decodes base64 audio into the current block; `None` when it is not valid or empty.
    fn decode(&mut self, payload: &str) -> Option<Bytes> {
        use base64::Engine;
        let room = base64::decoded_len_estimate(payload.len());
        if self.audio_buf.capacity() < room {
            // Reuses the block when every frame carved from it has been dropped.
            self.audio_buf.reserve(room.max(AUDIO_BLOCK));
        }
        self.audio_buf.resize(room, 0);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode_slice(payload.as_bytes(), &mut self.audio_buf[..])
            .ok()
            .filter(|n| *n > 0);
        match decoded {
            Some(n) => Some(self.audio_buf.split_to(n).freeze()),
            None => {
                self.audio_buf.clear();
                None
            }
        }
    }

    /// Handles one parsed frame (the rare kinds: `media` frames take [`media`](Self::media)).
    pub fn frame(&mut self, frame: InboundFrame, received: Instant) {
        match frame {
            InboundFrame::Connected { .. } => {}
            InboundFrame::Start {
                stream_id, start, ..
            } => {
                if self.stream_id.is_some() {
                    return self.reject("second_start");
                }
                self.stream_id = Some(stream_id.clone());
                self.call.do_send(MediaStarted {
                    link: self.link.id(),
                    stream_id,
                    encoding: start.media_format.encoding,
                    sample_rate: start.media_format.sample_rate,
                });
            }
            InboundFrame::Media {
                stream_id, media, ..
            } => self.media(&stream_id, media.track.as_deref(), &media.payload, received),
            InboundFrame::Dtmf { stream_id, dtmf } => {
                if self.is_ours(&stream_id) {
                    self.call.do_send(MediaDtmf(dtmf.digit));
                } else {
                    self.reject("wrong_stream");
                }
            }
            InboundFrame::Mark { stream_id, mark } => {
                if self.is_ours(&stream_id) {
                    self.call.do_send(MarkPlayed(mark.name));
                } else {
                    self.reject("wrong_stream");
                }
            }
            InboundFrame::Stop { .. } => self.closed(),
            InboundFrame::Error { body } => {
                tracing::warn!(frame = %serde_json::Value::Object(body), "Telnyx reported a media stream error");
                self.rejected.with_label_values(&["error_frame"]).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(n: u8) -> OutboundFrame {
        OutboundFrame::media(&[n; 160])
    }

    #[actix_web::test]
    async fn a_stalled_reader_loses_the_oldest_audio_and_every_drop_is_counted() {
        let dropped = prometheus::IntCounter::new("dropped", "test").unwrap();
        let (link, rx) = MediaLink::bounded(3, dropped.clone());
        assert!(link.send(OutboundFrame::mark("m1")));
        for n in 0..5 {
            assert!(link.send(audio(n)));
        }
        link.close("bye");
        // Capacity 3: the mark and the close stay, the newest audio fills what is left.
        assert_eq!(link.queued(), 3);
        assert_eq!(dropped.get(), 4);
        assert!(matches!(
            rx.recv().await,
            MediaOut::Frame(OutboundFrame::Mark { .. })
        ));
        assert!(matches!(rx.recv().await, MediaOut::Frame(f) if f == audio(4)));
        assert!(matches!(rx.recv().await, MediaOut::Close(r) if r == "bye"));
    }

    #[actix_web::test]
    async fn sends_fail_once_the_writer_is_gone() {
        let dropped = prometheus::IntCounter::new("dropped", "test").unwrap();
        let (link, rx) = MediaLink::bounded(8, dropped);
        assert!(link.send(audio(1)));
        drop(rx);
        assert!(!link.send(audio(2)));
        assert_eq!(link.queued(), 0);
    }
}
