//! Prometheus metric families: HTTP request count and latency, pool gauges, webhook, recorder,
//! auth, retrieval and job counters, and the engine's per-stage voice timings; the call,
//! provider and database families are in `telemetry::{calls, providers, db}`. Defined here, below
//! every layer that records into them; `http::metrics` only serves them at `GET /metrics`.

use crate::telemetry::calls::CallMetrics;
use crate::telemetry::providers::ProviderMetrics;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Every metric the engine exports, on one registry (so tests get a fresh one per app).
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub db_pool_size: IntGauge,
    pub db_pool_available: IntGauge,
    pub db_pool_waiting: IntGauge,
    pub redis_pool_size: IntGauge,
    pub redis_pool_available: IntGauge,
    pub webhooks_accepted: IntCounterVec,
    pub webhooks_duplicate: IntCounter,
    pub recorder_failed_writes: IntCounter,
    pub live_calls: IntGauge,
    pub media_frames_rejected: IntCounterVec,
    /// Outbound audio frames dropped because a media socket's reader stalled (oldest first).
    pub media_out_dropped: IntCounter,
    /// Calls this instance ended for an actor that was gone, by reason (instance_lost,
    /// internal_error).
    pub calls_taken_over: IntCounterVec,
    /// New calls refused by admission control, by where they came from (inbound, api).
    pub calls_refused: IntCounterVec,
    /// Login attempts by outcome (success, invalid_credentials, user_disabled, rate_limited).
    pub auth_logins: IntCounterVec,
    /// Redis failures the auth layer worked around (rate_limit, revocation_check, revoke).
    pub auth_redis_failures: IntCounterVec,
    /// Time to fetch a turn's patterns and caller memory, by result (complete, timed_out).
    pub retrieval_duration: HistogramVec,
    /// Finished post-call job attempts by kind and result (succeeded, retried, failed).
    pub learning_jobs: IntCounterVec,
    /// Post-call jobs in the queue by state (pending, running, succeeded, failed), refreshed by
    /// the job runner's reaper.
    pub jobs: IntGaugeVec,
    /// Telnyx webhooks refused by signature verification, by reason (missing, malformed,
    /// invalid, stale, bad_public_key).
    pub webhook_verification_failures: IntCounterVec,
    /// Calls started and ended, durations, turn latency, sentiment, escalations.
    pub calls: CallMetrics,
    /// The recent webhook deliveries and their verification outcome (`/admin/webhooks`).
    pub webhook_log: crate::telemetry::deliveries::WebhookLog,
    /// The engine's own share of each live call's latency (read by `iace bench calls`).
    pub voice: VoiceMetrics,
    /// Where the recorder's queued writes are, and what happened to them.
    pub recorder: RecorderMetrics,
}

/// Where a live call's time goes inside the engine, between receiving something and handing the
/// result to the next socket's writer. Provider waits are not in these. Exported as
/// `iace_engine_stage_seconds{stage}`, `iace_engine_turn_overhead_seconds` and
/// `iace_media_frames_total{direction}`; the labelled series are resolved once here because
/// some are hit by every 20 ms frame of every call.
#[derive(Clone)]
pub struct VoiceMetrics {
    /// Caller frame read → audio handed to the Deepgram socket.
    pub media_in_to_stt: Histogram,
    /// Deepgram's final read → LLM request out (retrieval included when it was not prefetched).
    pub final_to_llm: Histogram,
    /// A complete LLM sentence → Cartesia request out.
    pub llm_sentence_to_tts: Histogram,
    /// Cartesia chunk read → media frame handed to the caller's socket.
    pub tts_to_media: Histogram,
    /// Per answered caller turn, the sum of the engine's stages on its critical path (final →
    /// LLM request, first sentence → TTS request, first chunk → first media frame).
    pub turn_overhead: Histogram,
    /// Caller audio frames accepted, and agent audio frames sent.
    pub frames_in: IntCounter,
    pub frames_out: IntCounter,
    /// Provider waits on a reply's critical path, as the engine sees them: Groq (request out →
    /// first sentence complete) and Cartesia (first request out → first audio chunk read).
    pub llm_first_sentence: Histogram,
    pub tts_first_audio: Histogram,
    /// Caller audio frames a call's speech-to-text stream dropped: `backpressure` (the socket's
    /// send queue was full), `unconfirmed` and `backlog` (the replay buffers were at their bound).
    pub stt_audio_dropped: IntCounterVec,
    /// Provider request times, errors and reconnects (the streaming sockets count theirs).
    pub providers: ProviderMetrics,
}

impl VoiceMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let buckets = vec![
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015,
            0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0,
        ];
        let stage = HistogramVec::new(
            HistogramOpts::new(
                "engine_stage_seconds",
                "Time inside the engine per live-call stage (provider waits excluded)",
            )
            .buckets(buckets.clone()),
            &["stage"],
        )?;
        let turn_overhead = Histogram::with_opts(
            HistogramOpts::new(
                "engine_turn_overhead_seconds",
                "Engine time on each answered caller turn's critical path",
            )
            .buckets(buckets),
        )?;
        let media_frames = IntCounterVec::new(
            Opts::new("media_frames_total", "Media frames by direction"),
            &["direction"],
        )?;
        let provider_wait = HistogramVec::new(
            HistogramOpts::new(
                "provider_first_response_seconds",
                "Wait for a provider's first useful answer in a reply turn",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1.0,
                2.0, 5.0,
            ]),
            &["provider"],
        )?;
        registry.register(Box::new(stage.clone()))?;
        registry.register(Box::new(turn_overhead.clone()))?;
        registry.register(Box::new(media_frames.clone()))?;
        registry.register(Box::new(provider_wait.clone()))?;
        let stt_audio_dropped = IntCounterVec::new(
            Opts::new(
                "stt_audio_dropped_total",
                "Caller audio frames dropped on the way to speech-to-text, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(stt_audio_dropped.clone()))?;
        let providers = ProviderMetrics::new(registry)?;
        Ok(Self {
            providers,
            media_in_to_stt: stage.with_label_values(&["media_in_to_stt"]),
            final_to_llm: stage.with_label_values(&["final_to_llm"]),
            llm_sentence_to_tts: stage.with_label_values(&["llm_sentence_to_tts"]),
            tts_to_media: stage.with_label_values(&["tts_to_media"]),
            turn_overhead,
            frames_in: media_frames.with_label_values(&["in"]),
            frames_out: media_frames.with_label_values(&["out"]),
            llm_first_sentence: provider_wait.with_label_values(&["groq"]),
            tts_first_audio: provider_wait.with_label_values(&["cartesia"]),
            stt_audio_dropped,
        })
    }
}

/// Records the time since `since` in `stage`.
pub fn observe_since(stage: &Histogram, since: std::time::Instant) {
    stage.observe(since.elapsed().as_secs_f64());
}

// ---- Recorder (issue 11: supervision) ----

/// The recorder's queue, exported as `iace_recorder_buffered_writes`,
/// `iace_recorder_spill_file_writes`, `iace_recorder_writes_total{kind}` and
/// `iace_recorder_restarts_total`. A write is counted `spilled` as it goes to the spill file,
/// `replayed` as it comes back from it (a file left by an earlier run included), `poisoned` when
/// it made the recorder panic twice and was given up (logged with its content).
#[derive(Clone)]
pub struct RecorderMetrics {
    /// Writes held in memory, not yet in the database.
    pub buffered: IntGauge,
    /// Writes waiting in the spill file.
    pub in_spill_file: IntGauge,
    pub spilled: IntCounter,
    pub replayed: IntCounter,
    pub poisoned: IntCounter,
    /// Recorder actors restarted after a panic.
    pub restarts: IntCounter,
}

impl RecorderMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let buffered = IntGauge::new(
            "recorder_buffered_writes",
            "Call record writes held in the recorder's memory, not yet in the database",
        )?;
        let in_spill_file = IntGauge::new(
            "recorder_spill_file_writes",
            "Call record writes waiting in the recorder's spill file",
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "recorder_writes_total",
                "Recorder writes spilled to disk, replayed from it, or given up as poisoned",
            ),
            &["kind"],
        )?;
        let restarts = IntCounter::new(
            "recorder_restarts_total",
            "Recorder actors restarted after a panic (their queue handed over)",
        )?;
        registry.register(Box::new(buffered.clone()))?;
        registry.register(Box::new(in_spill_file.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        Ok(Self {
            buffered,
            in_spill_file,
            spilled: writes.with_label_values(&["spilled"]),
            replayed: writes.with_label_values(&["replayed"]),
            poisoned: writes.with_label_values(&["poisoned"]),
            restarts,
        })
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("iace".to_owned()), None)?;
        // Process-wide (the trace exporter is global); every registry shows the same count.
        registry.register(Box::new(crate::telemetry::otlp::dropped_spans()?))?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
            &["route", "method", "status"],
        )?;
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let db_pool_size = gauge("db_pool_connections", "Postgres pool: open connections")?;
        let db_pool_available = gauge("db_pool_available", "Postgres pool: idle connections")?;
        let db_pool_waiting = gauge("db_pool_waiting", "Postgres pool: tasks waiting for one")?;
        let redis_pool_size = gauge("redis_pool_connections", "Redis pool: open connections")?;
        let redis_pool_available = gauge("redis_pool_available", "Redis pool: idle connections")?;
        let webhooks_accepted = IntCounterVec::new(
            Opts::new(
                "telnyx_webhooks_accepted_total",
                "Verified, new Telnyx webhooks by event type",
            ),
            &["event_type"],
        )?;
        let webhooks_duplicate = IntCounter::new(
            "telnyx_webhooks_duplicate_total",
            "Telnyx redeliveries dropped by event id",
        )?;
        let recorder_failed_writes = IntCounter::new(
            "recorder_failed_writes_total",
            "Call record writes given up after every retry (each one logged with its content)",
        )?;
        let live_calls = gauge("live_calls", "Calls live on this instance")?;
        let media_frames_rejected = IntCounterVec::new(
            Opts::new(
                "media_frames_rejected_total",
                "Media socket frames dropped, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(media_frames_rejected.clone()))?;
        let media_out_dropped = IntCounter::new(
            "media_out_frames_dropped_total",
            "Outbound audio frames dropped (oldest first) because a media socket stalled",
        )?;
        registry.register(Box::new(media_out_dropped.clone()))?;
        let calls_taken_over = IntCounterVec::new(
            Opts::new(
                "calls_taken_over_total",
                "Calls ended by this instance for an actor that was gone, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(calls_taken_over.clone()))?;
        let calls_refused = IntCounterVec::new(
            Opts::new(
                "calls_refused_total",
                "New calls refused by admission control (every instance full, too busy or draining)",
            ),
            &["source"],
        )?;
        registry.register(Box::new(calls_refused.clone()))?;
        registry.register(Box::new(webhooks_accepted.clone()))?;
        registry.register(Box::new(webhooks_duplicate.clone()))?;
        registry.register(Box::new(recorder_failed_writes.clone()))?;
        registry.register(Box::new(live_calls.clone()))?;
        let auth_logins = IntCounterVec::new(
            Opts::new("auth_logins_total", "Login attempts by outcome"),
            &["outcome"],
        )?;
        let auth_redis_failures = IntCounterVec::new(
            Opts::new(
                "auth_redis_failures_total",
                "Redis failures in authentication, by operation (worked around, not fatal)",
            ),
            &["operation"],
        )?;
        let retrieval_duration = HistogramVec::new(
            HistogramOpts::new(
                "retrieval_duration_seconds",
                "Retrieval of patterns and caller memory for one caller turn",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
            ]),
            &["result"],
        )?;
        let learning_jobs = IntCounterVec::new(
            Opts::new(
                "learning_jobs_total",
                "Finished post-call job attempts by kind and result",
            ),
            &["kind", "result"],
        )?;
        registry.register(Box::new(retrieval_duration.clone()))?;
        registry.register(Box::new(learning_jobs.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(auth_logins.clone()))?;
        registry.register(Box::new(auth_redis_failures.clone()))?;
        for g in [
            &db_pool_size,
            &db_pool_available,
            &db_pool_waiting,
            &redis_pool_size,
            &redis_pool_available,
        ] {
            registry.register(Box::new(g.clone()))?;
        }
        // Process metrics (CPU, resident memory, open fds) are read from /proc at scrape time.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let voice = VoiceMetrics::new(&registry)?;
        let jobs = IntGaugeVec::new(
            Opts::new(
                "jobs",
                "Post-call jobs in the queue (the whole cluster's table) by kind and state",
            ),
            &["kind", "state"],
        )?;
        registry.register(Box::new(jobs.clone()))?;
        let webhook_verification_failures = IntCounterVec::new(
            Opts::new(
                "webhook_verification_failures_total",
                "Telnyx webhooks refused by signature verification, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(webhook_verification_failures.clone()))?;
        let calls = CallMetrics::new(&registry)?;
        crate::telemetry::db::install();
        registry.register(Box::new(crate::telemetry::db::QUERY_DURATION.clone()))?;
        let recorder = RecorderMetrics::new(&registry)?;
        Ok(Self {
            jobs,
            webhook_verification_failures,
            calls,
            webhook_log: Default::default(),
            voice,
            recorder,
            registry,
            http_requests,
            http_duration,
            db_pool_size,
            db_pool_available,
            db_pool_waiting,
            redis_pool_size,
            redis_pool_available,
            webhooks_accepted,
            webhooks_duplicate,
            recorder_failed_writes,
            live_calls,
            media_frames_rejected,
            media_out_dropped,
            calls_taken_over,
            calls_refused,
            auth_logins,
            auth_redis_failures,
            retrieval_duration,
            learning_jobs,
        })
    }

    /// Records one finished request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [route, method_label(method), status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration
            .with_label_values(&labels)
            .observe(seconds);
    }
}

/// The `method` label: one of the standard methods, or `other`, so clients sending arbitrary
/// method names cannot create series without bound.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(super::method_label("GET"), "GET");
        assert_eq!(super::method_label("DELETE"), "DELETE");
        assert_eq!(super::method_label("BREW"), "other");
        assert_eq!(super::method_label("get"), "other");
    }
}
