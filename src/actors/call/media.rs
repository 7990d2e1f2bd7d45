//! The call's end of its Telnyx media socket: an ordered queue of outbound frames drained by the
//! socket's writer task, and the messages the socket's reader sends to the call.

use super::Call;
use crate::providers::telnyx::media::{InboundFrame, OutboundFrame};
use actix::prelude::*;
use bytes::Bytes;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// What the writer task does next.
#[derive(Debug)]
pub enum MediaOut {
    Frame(OutboundFrame),
    /// Close the socket (the call decides when).
    Close(String),
}

/// Handle to a media socket's writer. The call holds the only one; dropping it closes nothing
/// by itself, `close` does.
#[derive(Clone, Debug)]
pub struct MediaLink {
    tx: UnboundedSender<MediaOut>,
}

impl MediaLink {
    pub fn new(tx: UnboundedSender<MediaOut>) -> Self {
        Self { tx }
    }

    /// Queues a frame; false when the socket is gone.
    pub fn send(&self, frame: OutboundFrame) -> bool {
        self.tx.send(MediaOut::Frame(frame)).is_ok()
    }

    pub fn close(&self, reason: &str) {
        let _ = self.tx.send(MediaOut::Close(reason.to_owned()));
    }
}

/// The socket was accepted for this call.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MediaAttached(pub MediaLink);

/// Telnyx's `start` frame: the stream's id and audio format.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MediaStarted {
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

/// The socket closed (Telnyx sent `stop` or the connection ended).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MediaClosed;

/// The socket reader's side: turns parsed frames into messages for the call, drops what does
/// not belong (wrong stream, bad base64, the outbound track) and counts every drop by reason.
pub struct CallerMediaSink {
    call: Addr<Call>,
    stream_id: Option<String>,
    rejected: prometheus::IntCounterVec,
}

impl CallerMediaSink {
    pub fn new(call: Addr<Call>, rejected: prometheus::IntCounterVec) -> Self {
        Self {
            call,
            stream_id: None,
            rejected,
        }
    }

    pub fn call(&self) -> &Addr<Call> {
        &self.call
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
                        self.call.do_send(CallerMedia(Bytes::from(audio), received))
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
            InboundFrame::Stop { .. } => self.call.do_send(MediaClosed),
            InboundFrame::Error { body } => {
                tracing::warn!(frame = %serde_json::Value::Object(body), "Telnyx reported a media stream error");
                self.rejected.with_label_values(&["error_frame"]).inc();
            }
        }
    }
}
