//! Metric families of calls as a business sees them: `iace_calls_started_total{direction}`,
//! `iace_calls_ended_total{outcome,end_reason}`, `iace_call_duration_seconds` (answered time),
//! `iace_turn_latency_seconds` (caller stops → first agent audio, as the call measured it),
//! `iace_call_sentiment` (the rolling score at call end), `iace_escalations_total{cause}`.
//! Every label comes from a fixed set (the engine's own enums, or `other`).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct CallMetrics {
    started: IntCounterVec,
    ended: IntCounterVec,
    duration: Histogram,
    turn_latency: Histogram,
    sentiment: Histogram,
    escalations: IntCounterVec,
}

/// Escalation causes the engine gives; anything else is counted as `other`.
const ESCALATION_CAUSES: [&str; 4] = ["sentiment", "dtmf_0", "caller_request", "llm"];

impl CallMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let started = IntCounterVec::new(
            Opts::new("calls_started_total", "Calls started on this instance"),
            &["direction"],
        )?;
        let ended = IntCounterVec::new(
            Opts::new(
                "calls_ended_total",
                "Calls ended on this instance, by outcome and end reason",
            ),
            &["outcome", "end_reason"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "call_duration_seconds",
                "Answered time of each ended call (0 when never answered)",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
            ]),
        )?;
        let turn_latency = Histogram::with_opts(
            HistogramOpts::new(
                "turn_latency_seconds",
                "End-to-end reply latency: caller stops speaking → first agent audio out",
            )
            .buckets(vec![
                0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0,
            ]),
        )?;
        let sentiment = Histogram::with_opts(
            HistogramOpts::new(
                "call_sentiment",
                "Rolling caller sentiment (-1 .. 1) at the end of each call that had one",
            )
            .buckets(vec![-0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        )?;
        let escalations = IntCounterVec::new(
            Opts::new("escalations_total", "Calls handed to a human, by cause"),
            &["cause"],
        )?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(ended.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(turn_latency.clone()))?;
        registry.register(Box::new(sentiment.clone()))?;
        registry.register(Box::new(escalations.clone()))?;
        Ok(Self {
            started,
            ended,
            duration,
            turn_latency,
            sentiment,
            escalations,
        })
    }

    /// A call actor started (`inbound` or `outbound`).
    pub fn started(&self, direction: &str) {
        self.started.with_label_values(&[direction]).inc();
    }

    /// A call ended: how, its answered time, and its last rolling sentiment when it had one.
    pub fn ended(&self, outcome: &str, end_reason: &str, duration_ms: i64, sentiment: Option<f32>) {
        self.ended.with_label_values(&[outcome, end_reason]).inc();
        self.duration.observe(duration_ms.max(0) as f64 / 1000.0);
        if let Some(score) = sentiment {
            self.sentiment.observe(f64::from(score));
        }
    }

    /// One answered caller turn's latency.
    pub fn turn(&self, latency_ms: i32) {
        self.turn_latency
            .observe(f64::from(latency_ms.max(0)) / 1000.0);
    }

    pub fn escalated(&self, cause: &str) {
        let cause = ESCALATION_CAUSES
            .into_iter()
            .find(|c| *c == cause)
            .unwrap_or("other");
        self.escalations.with_label_values(&[cause]).inc();
    }
}
