//! Telnyx: the Call Control v2 REST client (`client`) and the signed webhooks it answers with
//! (`webhook`), media frames (`media`) and the development webhook key (`dev_key`). Wire formats:
//! PROTOCOLS.md sections 1 and 2.

pub mod client;
pub mod dev_key;
pub mod media;
pub mod webhook;

pub use client::{
    AnswerRequest, BidirectionalMode, CallControl, DialRequest, DialResponse, PlaybackRequest,
    RecordRequest, RejectCause, SpeakRequest, StreamCodec, StreamSettings, StreamTrack,
    TelnyxClient, TelnyxError, TranscriptionRequest, TransferRequest,
};
pub use webhook::{
    sign_webhook, verify_signature, CallPayload, SignatureError, TelnyxEventKind, WebhookEnvelope,
    WebhookEvent, WebhookVerifier, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
