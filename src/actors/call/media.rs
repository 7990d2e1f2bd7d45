//! The call's end of its Telnyx media socket: an ordered queue of outbound frames drained by the
//! socket's writer task, and the messages the socket's reader sends to the call.

use super::Call;
use crate::providers::telnyx::media::{InboundFrame, OutboundFrame};
use actix::prelude::*;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

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
    ready: Notify,
    capacity: usize,
    /// The writer task is gone: sends fail.
    closed: AtomicBool,
    dropped: prometheus::IntCounter,
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
    /// A link holding at most `capacity` frames, counting drops in `dropped`.
    pub fn bounded(capacity: usize, dropped: prometheus::IntCounter) -> (Self, MediaOutReceiver) {
        let queue = Arc::new(MediaQueue {
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            dropped,
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
        q.ready.notify_one();
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
    pub async fn recv(&mut self) -> MediaOut {
        loop {
            let next = self
                .queue
                .items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            if let Some(out) = next {
                return out;
            }
            self.queue.ready.notified().await;
        }
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

/// One inbound audio frame (already base64-decoded by the reader), with when it was read.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CallerMedia(pub Bytes, pub Instant);

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

/// The socket reader's side: turns parsed frames into messages for the call, drops what does
/// not belong (wrong stream, bad base64, the outbound track) and counts every drop by reason.
pub struct CallerMediaSink {
    call: Addr<Call>,
    link: u64,
    stream_id: Option<String>,
    rejected: prometheus::IntCounterVec,
}

impl CallerMediaSink {
    pub fn new(call: Addr<Call>, link: u64, rejected: prometheus::IntCounterVec) -> Self {
        Self {
            call,
            link,
            stream_id: None,
            rejected,
        }
    }

    /// Tells the call this socket is gone.
    pub fn closed(&self) {
        self.call.do_send(MediaClosed(self.link));
    }

    /// Counts and logs a frame that was dropped.
    pub fn reject(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
        tracing::debug!(reason, "media frame dropped");
    }

    fn is_ours(&self, stream_id: &str) -> bool {
        self.stream_id.as_deref() == Some(stream_id)
    }

    /// Handles one parsed frame, read off the socket at `received`.
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
                    link: self.link,
                    stream_id,
                    encoding: start.media_format.encoding,
                    sample_rate: start.media_format.sample_rate,
                });
            }
            InboundFrame::Media {
                stream_id, media, ..
            } => {
                if !self.is_ours(&stream_id) {
                    return self.reject("wrong_stream");
                }
                if !media.is_inbound() {
                    return; // our own audio echoed back with both_tracks: never fed to STT
                }
                match media.audio() {
                    Some(audio) if !audio.is_empty() => {
                        // Bounded: a call that cannot keep up loses audio, not memory.
                        if self
                            .call
                            .try_send(CallerMedia(Bytes::from(audio), received))
                            .is_err()
                        {
                            self.reject("call_busy");
                        }
                    }
                    _ => self.reject("bad_payload"),
                }
            }
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
        let (link, mut rx) = MediaLink::bounded(3, dropped.clone());
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
