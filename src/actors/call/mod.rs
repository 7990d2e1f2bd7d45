//! `Call`: one actor per live call, from `call.initiated` (or the API request that dials it) to
//! its end. It owns the call's state machine and timers, commands Telnyx, and hands every change
//! to the recorder. It is never restarted: when it stops, the call is over.
//!
//! This file is the telephony life cycle (set-up, Telnyx events, timers, the end). The
//! conversation is in the sibling files, by where its messages come from: `voice` (the media
//! socket and the state kept while it is up), `listening` (Deepgram), `reply` (the LLM),
//! `speaking` (Cartesia and played marks), `escalation` (transfer to a human, by escalation or
//! the API), `fallback` (providers failing), `watchdog` (silence and stalls); `turn` is the
//! agent turn they share.

mod escalation;
mod fallback;
mod listening;
pub mod media;
pub mod messages;
mod reply;
mod speaking;
mod supervision;
mod turn;
mod voice;
mod watchdog;

use crate::actors::recorder::{Record, RecorderHandle, Write};
use crate::actors::registry::{CallEnded, CallRegistry};
use crate::config::CallSettings;
use crate::domain::call::{
    next_state, outcome_for, CallId, CallSignal, CallState, Direction, EndReason,
};
use crate::providers::telnyx::{
    AnswerRequest, CallControl, DialRequest, RejectCause, StreamCodec, StreamSettings, TelnyxError,
    TelnyxEventKind, WebhookEvent,
};
use crate::store::calls::{CallChanges, NewCall};
use crate::store::events::NewCallEvent;
use crate::store::{agents, DbPool};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use messages::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What every call needs from the engine, cloned into each one.
#[derive(Clone)]
pub struct CallDeps {
    pub telnyx: Arc<dyn CallControl + Send + Sync>,
    pub recorder: RecorderHandle,
    pub registry: CallRegistry,
    pub db: DbPool,
    pub settings: CallSettings,
    /// Base of the media WebSocket URL Telnyx connects to (`ws(s)://host`).
    pub media_base_url: String,
    /// Signs the media token in the stream URL.
    pub auth: Arc<crate::auth::AuthService>,
    pub deepgram: crate::providers::deepgram::DeepgramClient,
    pub deepgram_settings: crate::config::DeepgramSettings,
    pub cartesia: crate::providers::cartesia::CartesiaClient,
    pub groq: crate::providers::groq::GroqClient,
    /// The fallback model's client (`groq.fallback_model`), if one is configured.
    pub groq_fallback: Option<crate::providers::groq::GroqClient>,
    /// Groq for sentiment scoring, behind its own breaker (its fallback is the lexicon).
    pub groq_sentiment: crate::providers::groq::GroqClient,
    /// Retries of a reply turn after a 5xx or a timeout (`groq.max_retries`).
    pub llm_retries: u32,
    pub sentiment_timeout_ms: u64,
    /// This instance's circuit breakers (read to pick a fallback before trying).
    pub breakers: crate::providers::breaker::Breakers,
    /// Greeting audio cache.
    pub redis: crate::store::RedisPool,
    pub redis_prefix: String,
    /// Retrieval of patterns and caller memory for each turn.
    pub learning: crate::learning::Learning,
    /// The engine's own latency per stage, and media frame counts.
    pub voice_metrics: crate::telemetry::metrics::VoiceMetrics,
    /// Calls started (counted by the registry as it starts one).
    pub call_metrics: crate::telemetry::calls::CallMetrics,
    /// This instance in the cluster: the owner id in `client_state` and the stream URL.
    pub cluster: crate::cluster::Cluster,
    /// Live events for the dashboard (never waits).
    pub live: crate::live::LiveBus,
}

/// How the call came to be.
pub enum Origin {
    /// Telnyx reported an incoming call; the tenant is found from the number dialled.
    Inbound { event: Box<WebhookEvent> },
    /// The API created the call row and asks us to dial.
    Outbound {
        organization_id: Uuid,
        agent_profile_id: Uuid,
    },
}

pub struct Call {
    id: CallId,
    organization_id: Option<Uuid>,
    agent_profile_id: Option<Uuid>,
    direction: Direction,
    from: String,
    to: String,
    control_id: Option<String>,
    state: CallState,
    answered_at: Option<DateTime<Utc>>,
    last_media: Instant,
    /// Set when we decided to end the call (time limit, no media, API) before Telnyx confirms.
    ending: Option<EndReason>,
    origin: Option<Origin>,
    /// The agent profile answering this call (prompt, voice, escalation).
    profile: Option<agents::AgentProfileRow>,
    /// The conversation, once the media stream is attached.
    voice: Option<voice::Voice>,
    /// The greeting, synthesised while the phone rings (PCMU, the codec we ask Telnyx for).
    greeting_audio: Option<Vec<u8>>,
    /// `finish` ran: the end is recorded and the registry told; later signals are history only.
    finished: bool,
    /// The stage (`stt`, `tts`, `llm`) whose failure, fallbacks included, ended the call.
    failed_stage: Option<&'static str>,
    deps: CallDeps,
    span: tracing::Span,
}

impl Call {
    /// `trace_parent` is the span of the request that created the call (the `call.initiated`
    /// webhook, or `POST /api/v1/calls`): the call's span is its child, so one trace holds the
    /// webhook, the call, its turns and their provider requests.
    pub fn new(
        id: CallId,
        from: String,
        to: String,
        origin: Origin,
        trace_parent: Option<crate::telemetry::trace_context::TraceContext>,
        deps: CallDeps,
    ) -> Self {
        let (direction, control_id) = match &origin {
            Origin::Inbound { event } => {
                (Direction::Inbound, event.payload.call_control_id.clone())
            }
            Origin::Outbound { .. } => (Direction::Outbound, None),
        };
        // A root in `tracing` (the request's span must not live as long as the call), the
        // request's child in the exported trace.
        let span = crate::telemetry::otlp::with_remote_parent(
            trace_parent,
            || tracing::info_span!(parent: None, "call", call_id = %id, direction = direction.as_str()),
        );
        Self {
            id,
            organization_id: None,
            agent_profile_id: None,
            direction,
            from,
            to,
            control_id,
            state: match direction {
                Direction::Inbound => CallState::Ringing,
                Direction::Outbound => CallState::Dialing,
            },
            answered_at: None,
            last_media: Instant::now(),
            ending: None,
            origin: Some(origin),
            profile: None,
            voice: None,
            greeting_audio: None,
            finished: false,
            failed_stage: None,
            deps,
            span,
        }
    }

    /// Starts the actor inside its call's trace: whatever it does outside a turn (Telnyx
    /// commands, the greeting, sentiment scoring) is a child of the `call` span.
    pub fn start_traced(self) -> Addr<Self> {
        let trace = crate::telemetry::otlp::context_of(&self.span);
        crate::telemetry::otlp::start_actor(self, trace)
    }

    /// The trace context of the call's span, for sub-actors and the post-call jobs.
    fn trace_context(&self) -> Option<crate::telemetry::trace_context::TraceContext> {
        crate::telemetry::otlp::context_of(&self.span)
    }

    /// Where Telnyx opens the media socket: our endpoint, with a short-lived token for this call.
    fn stream_settings(&self) -> StreamSettings {
        let ttl = self.deps.settings.media_token_ttl_secs;
        let token = crate::auth::media_token::issue(self.deps.auth.keys(), self.id.0, ttl)
            .unwrap_or_default();
        StreamSettings::bidirectional(
            format!(
                "{}/media/telnyx/{}?owner={}&token={token}",
                self.deps.media_base_url,
                self.id,
                self.deps.cluster.id()
            ),
            StreamCodec::Pcmu,
        )
    }

    /// Tells the organization's live views (`crate::live`); never waits.
    fn live(&self, event: crate::live::LiveEvent) {
        if let Some(org) = self.organization_id {
            self.deps.live.publish(org, &event);
        }
    }

    /// A transcript line as it is spoken (the dashboard's live transcript).
    fn live_line(&self, speaker: &'static str, text: &str) {
        self.live(crate::live::LiveEvent::Transcript {
            call_id: self.id.0,
            speaker,
            text: text.to_owned(),
            at: Utc::now(),
        });
    }

    fn live_stage(&self, stage: crate::live::Stage) {
        self.live(crate::live::LiveEvent::Stage {
            call_id: self.id.0,
            stage,
        });
    }

    /// The call's first live event: who calls whom.
    fn live_started(&self) {
        self.live(crate::live::LiveEvent::CallStarted {
            call_id: self.id.0,
            direction: self.direction.as_str(),
            from: self.from.clone(),
            to: self.to.clone(),
            agent_profile_id: self.agent_profile_id,
            at: Utc::now(),
        });
    }

    fn record(&self, write: Write) {
        self.deps.recorder.do_send(Record(write));
    }

    fn record_changes(&self, changes: CallChanges) {
        if let Some(org) = self.organization_id {
            self.record(Write::UpdateCall {
                organization_id: org,
                call_id: self.id.0,
                changes,
            });
        }
    }

    fn record_event(&self, event: &WebhookEvent) {
        let Some(org) = self.organization_id else {
            return;
        };
        self.record(Write::InsertCallEvent(NewCallEvent {
            organization_id: org,
            call_id: self.id.0,
            event_type: event.event_type.clone(),
            telnyx_event_id: Some(event.id.clone()),
            payload: serde_json::to_value(&event.payload).unwrap_or_default(),
            occurred_at: event.occurred_at.unwrap_or_else(Utc::now),
        }));
    }

    /// An event of our own making (a decision, a failed command) in the call's history.
    fn record_engine_event(&self, event_type: &str, payload: serde_json::Value) {
        let Some(org) = self.organization_id else {
            return;
        };
        self.record(Write::InsertCallEvent(NewCallEvent {
            organization_id: org,
            call_id: self.id.0,
            event_type: event_type.to_owned(),
            telnyx_event_id: None,
            payload,
            occurred_at: Utc::now(),
        }));
    }

    fn apply(&mut self, signal: CallSignal) -> bool {
        let next = next_state(self.state, &signal);
        let changed = next != self.state;
        if changed {
            tracing::debug!(parent: &self.span, from = self.state.as_str(), to = next.as_str(), "state");
            self.state = next;
        }
        changed
    }

    /// Inbound set-up: find the tenant and profile by the number dialled, create the row,
    /// answer with the media stream. Runs before any other message is handled.
    fn set_up_inbound(&mut self, event: WebhookEvent, ctx: &mut Context<Self>) {
        let db = self.deps.db.clone();
        let to = self.to.clone();
        let lookup = async move {
            let mut conn = db.get().await.map_err(|e| e.to_string())?;
            agents::find_by_number(&mut conn, &to)
                .await
                .map_err(|e| e.to_string())
        };
        ctx.wait(lookup.into_actor(self).map(move |found, act, ctx| match found {
            Ok(Some(profile)) => {
                act.organization_id = Some(profile.organization_id);
                act.agent_profile_id = Some(profile.id);
                act.profile = Some(profile.clone());
                act.prepare_greeting(ctx);
                act.record(Write::InsertCall(NewCall {
                    id: act.id.0,
                    organization_id: profile.organization_id,
                    agent_profile_id: Some(profile.id),
                    direction: act.direction.as_str().to_owned(),
                    from_number: act.from.clone(),
                    to_number: act.to.clone(),
                    call_control_id: act.control_id.clone(),
                    call_leg_id: event.payload.call_leg_id.clone(),
                    call_session_id: event.payload.call_session_id.clone(),
                    status: act.state.as_str().to_owned(),
                    started_at: event.occurred_at.unwrap_or_else(Utc::now),
                    owner_instance: Some(act.deps.cluster.id().to_owned()),
                }));
                act.record_event(&event);
                act.live_started();
                act.answer(ctx);
            }
            Ok(None) => {
                tracing::warn!(parent: &act.span, to = %act.to, "no agent profile answers this number; rejecting");
                act.reject(ctx);
            }
            Err(e) => {
                tracing::error!(parent: &act.span, error = %e, "profile lookup failed; rejecting");
                act.reject(ctx);
            }
        }));
    }

    fn answer(&mut self, ctx: &mut Context<Self>) {
        let Some(ccid) = self.control_id.clone() else {
            return;
        };
        self.apply(CallSignal::AnswerSent);
        self.record_changes(CallChanges {
            status: Some(self.state.as_str().into()),
            ..Default::default()
        });
        let telnyx = self.deps.telnyx.clone();
        let req = AnswerRequest {
            stream: Some(self.stream_settings()),
            client_state: Some(crate::cluster::client_state(
                self.id,
                self.deps.cluster.id(),
            )),
        };
        let fut = async move { telnyx.answer(&ccid, req).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                act.command_failed("answer", &e, ctx);
            }
        }));
    }

    fn reject(&mut self, ctx: &mut Context<Self>) {
        let Some(ccid) = self.control_id.clone() else {
            self.finish(EndReason::SetupFailed, ctx);
            return;
        };
        let telnyx = self.deps.telnyx.clone();
        let fut = async move { telnyx.reject(&ccid, RejectCause::CallRejected).await };
        ctx.wait(fut.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                tracing::warn!(parent: &act.span, error = %e, "reject failed");
            }
            // No tenant, no row: the raw webhook inbox keeps the trace of this call.
            act.finish(EndReason::SetupFailed, ctx);
        }));
    }

    fn dial(&mut self, organization_id: Uuid, agent_profile_id: Uuid, ctx: &mut Context<Self>) {
        self.organization_id = Some(organization_id);
        self.agent_profile_id = Some(agent_profile_id);
        let db = self.deps.db.clone();
        let lookup = async move {
            let mut conn = db.get().await.map_err(|e| e.to_string())?;
            agents::find(&mut conn, organization_id, agent_profile_id)
                .await
                .map_err(|e| e.to_string())
        };
        // The profile (prompt, voice) must be known before the call can talk.
        ctx.wait(lookup.into_actor(self).map(|found, act, ctx| match found {
            Ok(Some(profile)) => {
                act.profile = Some(profile.row);
                act.prepare_greeting(ctx);
                act.live_started();
                act.send_dial(ctx);
            }
            Ok(None) | Err(_) => {
                tracing::warn!(parent: &act.span, "agent profile missing; not dialling");
                act.record_engine_event(
                    "engine.dial_failed",
                    serde_json::json!({ "error": "agent profile not found" }),
                );
                act.finish(EndReason::SetupFailed, ctx);
            }
        }));
    }

    /// Readies the greeting's audio while the phone rings (from Redis, or synthesised once).
    fn prepare_greeting(&mut self, ctx: &mut Context<Self>) {
        let Some(profile) = &self.profile else { return };
        let d = &self.deps;
        let codec = crate::domain::audio::Codec::Pcmu;
        let key = crate::actors::greeting::cache_key(
            &d.redis_prefix,
            profile.id,
            &profile.greeting,
            &profile.voice_id,
            codec,
        );
        let fut = crate::actors::greeting::prepare(
            d.redis.clone(),
            d.cartesia.clone(),
            key,
            profile.greeting.clone(),
            profile.voice_id.clone(),
            codec,
            Duration::from_secs(5),
        );
        ctx.spawn(
            fut.into_actor(self)
                .map(|audio, act, _| act.greeting_audio = audio),
        );
    }

    fn send_dial(&mut self, ctx: &mut Context<Self>) {
        let telnyx = self.deps.telnyx.clone();
        let req = DialRequest {
            to: self.to.clone(),
            from: self.from.clone(),
            client_state: Some(crate::cluster::client_state(
                self.id,
                self.deps.cluster.id(),
            )),
            timeout_secs: Some(self.deps.settings.ring_timeout_secs),
            time_limit_secs: Some(self.deps.settings.max_duration_secs),
            stream: Some(self.stream_settings()),
            ..Default::default()
        };
        let fut = async move { telnyx.dial(req).await };
        ctx.wait(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(dialled) => {
                act.control_id = Some(dialled.call_control_id.clone());
                act.deps
                    .registry
                    .bind_control_id(&dialled.call_control_id, act.id);
                act.record_changes(CallChanges {
                    call_control_id: Some(dialled.call_control_id),
                    call_leg_id: dialled.call_leg_id,
                    call_session_id: dialled.call_session_id,
                    ..Default::default()
                });
            }
            Err(e) => {
                tracing::warn!(parent: &act.span, error = %e, "dial failed");
                act.record_engine_event(
                    "engine.dial_failed",
                    serde_json::json!({ "error": e.to_string() }),
                );
                act.finish(EndReason::SetupFailed, ctx);
            }
        }));
    }

    fn command_failed(&mut self, command: &str, error: &TelnyxError, ctx: &mut Context<Self>) {
        tracing::warn!(parent: &self.span, command, error = %error, "Telnyx command failed");
        self.record_engine_event(
            "engine.command_failed",
            serde_json::json!({ "command": command, "error": error.to_string() }),
        );
        if matches!(error, TelnyxError::CallEnded) {
            // Telnyx says the call is gone; its hangup webhook may never come.
            self.finish(self.ending.unwrap_or(EndReason::Hangup), ctx);
        }
    }

    /// We decided to end the call: hang up, and finish when Telnyx confirms (or after a grace).
    fn terminate(&mut self, reason: EndReason, ctx: &mut Context<Self>) {
        if self.state == CallState::Ended || self.ending.is_some() {
            return;
        }
        tracing::info!(parent: &self.span, reason = reason.as_str(), "ending call");
        self.ending = Some(reason);
        self.record_engine_event(
            "engine.hangup_requested",
            serde_json::json!({ "reason": reason.as_str() }),
        );
        self.send_hangup(ctx);
        ctx.run_later(
            Duration::from_secs(self.deps.settings.hangup_confirm_timeout_secs),
            move |act, ctx| {
                if act.state != CallState::Ended {
                    tracing::warn!(parent: &act.span, "no hangup webhook; closing the call ourselves");
                    act.finish(reason, ctx);
                }
            },
        );
    }

    fn send_hangup(&mut self, ctx: &mut Context<Self>) {
        let Some(ccid) = self.control_id.clone() else {
            return;
        };
        let telnyx = self.deps.telnyx.clone();
        let fut = async move { telnyx.hangup(&ccid).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                act.command_failed("hangup", &e, ctx);
            }
        }));
    }

    /// The call is over: record how, tell the registry, stop.
    fn finish(&mut self, reason: EndReason, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.finished = true;
        // However the leg ended (our transfer, our hang-up), a call given up ended in failure.
        let reason = if self.failed_stage.is_some() {
            EndReason::ProviderFailure
        } else {
            reason
        };
        self.close_voice();
        let last_state = self.state;
        self.state = CallState::Ended;
        let ended_at = Utc::now();
        let outcome = outcome_for(self.direction, last_state, reason);
        let duration_ms = self
            .answered_at
            .map(|a| (ended_at - a).num_milliseconds().max(0))
            .unwrap_or(0);
        tracing::info!(parent: &self.span, reason = reason.as_str(), outcome = outcome.as_str(), duration_ms, "call ended");
        self.record_changes(CallChanges {
            status: Some(CallState::Ended.as_str().into()),
            outcome: Some(outcome.as_str().into()),
            end_reason: Some(reason.as_str().into()),
            ended_at: Some(ended_at),
            duration_ms: Some(duration_ms),
            ..Default::default()
        });
        self.live(crate::live::LiveEvent::CallEnded {
            call_id: self.id.0,
            outcome: outcome.as_str(),
            at: ended_at,
        });
        // Learning from the call starts once its records are in (the recorder keeps the order).
        if let (Some(org), true) = (self.organization_id, self.answered_at.is_some()) {
            self.record(Write::EnqueuePostCall {
                organization_id: org,
                call_id: self.id.0,
                traceparent: self.trace_context().map(|c| c.to_string()),
            });
        }
        self.deps.registry.call_ended(CallEnded {
            call_id: self.id,
            control_id: self.control_id.clone(),
        });
        ctx.stop();
    }

    fn on_telnyx_event(&mut self, event: WebhookEvent, ctx: &mut Context<Self>) {
        self.record_event(&event);
        if self.state == CallState::Ended {
            return;
        }
        let p = &event.payload;
        match event.kind() {
            TelnyxEventKind::CallInitiated => {
                let mut changes = CallChanges::default();
                if self.control_id.is_none() {
                    if let Some(ccid) = &p.call_control_id {
                        self.control_id = Some(ccid.clone());
                        self.deps.registry.bind_control_id(ccid, self.id);
                        changes.call_control_id = Some(ccid.clone());
                    }
                }
                changes.call_leg_id = p.call_leg_id.clone();
                changes.call_session_id = p.call_session_id.clone();
                if self.apply(CallSignal::Initiated) {
                    changes.status = Some(self.state.as_str().into());
                }
                self.record_changes(changes);
            }
            TelnyxEventKind::CallAnswered if self.apply(CallSignal::Answered) => {
                self.mark_answered(&event);
            }
            TelnyxEventKind::StreamingStarted => {
                let was_answered = self.answered_at.is_some();
                if self.apply(CallSignal::StreamingStarted) {
                    if !was_answered {
                        self.mark_answered(&event);
                    } else {
                        self.record_changes(CallChanges {
                            status: Some(self.state.as_str().into()),
                            ..Default::default()
                        });
                    }
                }
            }
            TelnyxEventKind::StreamingStopped if self.apply(CallSignal::StreamingStopped) => {
                self.record_changes(CallChanges {
                    status: Some(self.state.as_str().into()),
                    ..Default::default()
                });
            }
            TelnyxEventKind::CallHangup => {
                self.record_changes(CallChanges {
                    hangup_cause: p.hangup_cause.clone(),
                    hangup_source: p.hangup_source.clone(),
                    ..Default::default()
                });
                let reason = self.ending.unwrap_or(EndReason::Hangup);
                self.finish(reason, ctx);
            }
            TelnyxEventKind::DtmfReceived => {
                if let Some(digit) = p.digit.clone() {
                    self.on_digit(&digit, ctx);
                }
            }
            TelnyxEventKind::SpeakEnded => self.on_speak_ended(ctx),
            TelnyxEventKind::Transcription => {
                if let Some(t) = p.transcription_data.clone() {
                    self.on_transcription(&t.transcript, t.is_final, ctx);
                }
            }
            // Recorded above; machine detection and recordings are history only.
            _ => {}
        }
    }

    fn mark_answered(&mut self, event: &WebhookEvent) {
        let at = event.occurred_at.unwrap_or_else(Utc::now);
        self.answered_at = Some(at);
        self.last_media = Instant::now();
        self.record_changes(CallChanges {
            status: Some(self.state.as_str().into()),
            answered_at: Some(at),
            ..Default::default()
        });
    }

    fn check_media(&mut self, ctx: &mut Context<Self>) {
        let limit = Duration::from_secs(self.deps.settings.no_media_timeout_secs);
        // Caller frames go from the socket's reader to speech-to-text, not through the call:
        // the link says when the last one came.
        if let Some(at) = self.voice.as_ref().and_then(|v| v.link.last_frame()) {
            self.last_media = self.last_media.max(at);
        }
        if self.state.was_answered() && self.last_media.elapsed() > limit {
            self.terminate(EndReason::NoMedia, ctx);
            return;
        }
        self.check_watchdogs(ctx);
    }
}

impl Actor for Call {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match self.origin.take() {
            Some(Origin::Inbound { event }) => self.set_up_inbound(*event, ctx),
            Some(Origin::Outbound {
                organization_id,
                agent_profile_id,
            }) => self.dial(organization_id, agent_profile_id, ctx),
            None => {}
        }
        let settings = &self.deps.settings;
        ctx.run_later(
            Duration::from_secs(settings.max_duration_secs.into()),
            |act, ctx| act.terminate(EndReason::TimeLimit, ctx),
        );
        // On the shared grid: one wake-up checks every call of this shard.
        crate::actors::timers::run_on_grid(
            ctx,
            Duration::from_millis(settings.media_check_interval_ms),
            |act, ctx| act.check_media(ctx),
        );
    }
}

impl Handler<TelnyxEventReceived> for Call {
    type Result = ();
    fn handle(&mut self, msg: TelnyxEventReceived, ctx: &mut Self::Context) {
        let _entered = self.span.clone().entered();
        self.on_telnyx_event(msg.0, ctx);
    }
}

impl Call {
    /// Where the conversation is, for operators (read on demand, never tracked per frame):
    /// before the media stream `connecting`; then `greeting`, `listening` (nothing said by the
    /// agent), `thinking` (a reply before its first audio), `speaking`; `transferring` while the
    /// caller is handed to a human; `ending` once the end is decided or the last line is said.
    fn stage(&self) -> &'static str {
        use turn::TurnKind;
        match self.state {
            CallState::Ended => return "ended",
            _ if self.ending.is_some() || self.failed_stage.is_some() => return "ending",
            CallState::Escalating => return "transferring",
            CallState::Dialing | CallState::Ringing | CallState::Answering => return "connecting",
            CallState::Answered | CallState::Streaming => {}
        }
        let Some(voice) = &self.voice else {
            return "connecting";
        };
        match &voice.speaking {
            _ if voice.handed_off => "transferring",
            None => "listening",
            Some(turn) => match turn.kind {
                TurnKind::Greeting => "greeting",
                TurnKind::Handoff => "transferring",
                TurnKind::Farewell | TurnKind::Goodbye => "ending",
                TurnKind::Reply if turn.first_audio_at.is_none() && !turn.telnyx_speaking => {
                    "thinking"
                }
                TurnKind::Reply | TurnKind::StillThere => "speaking",
            },
        }
    }

    fn check_org(&self, organization_id: Uuid) -> Result<(), CommandError> {
        if self.organization_id != Some(organization_id) {
            return Err(CommandError::NotFound);
        }
        if self.state == CallState::Ended || self.ending.is_some() {
            return Err(CommandError::Ended);
        }
        Ok(())
    }
}

impl Handler<HangUp> for Call {
    type Result = Result<(), CommandError>;
    fn handle(&mut self, msg: HangUp, ctx: &mut Self::Context) -> Self::Result {
        self.check_org(msg.organization_id)?;
        self.terminate(EndReason::Hangup, ctx);
        Ok(())
    }
}

impl Handler<MediaActivity> for Call {
    type Result = ();
    fn handle(&mut self, _: MediaActivity, _: &mut Self::Context) {
        self.last_media = Instant::now();
    }
}

impl Handler<GetSnapshot> for Call {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(CallSnapshot {
            call_id: self.id,
            organization_id: self.organization_id,
            state: self.state,
            call_control_id: self.control_id.clone(),
            stage: self.stage(),
        })
    }
}
