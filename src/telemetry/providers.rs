//! Metric families of the outside services, per provider (the breaker's label: `telnyx`,
//! `deepgram`, `cartesia`, `groq_chat`, `groq_sentiment`, `gemini`):
//! `iace_provider_request_duration_seconds{provider,result}` (a request, or a socket's opening),
//! `iace_provider_errors_total{provider,kind}` (kind: the error variant, a fixed set) and
//! `iace_provider_reconnects_total{provider}` (a streaming socket lost mid-call and reopened).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::Duration;

/// The three families; cheap to clone (shared series).
#[derive(Clone)]
pub struct ProviderMetrics {
    duration: HistogramVec,
    errors: IntCounterVec,
    reconnects: IntCounterVec,
}

impl ProviderMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "provider_request_duration_seconds",
                "Provider requests (a socket's opening for the streaming ones), by result",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
            ]),
            &["provider", "result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "provider_errors_total",
                "Provider failures by kind (connect, timeout, server, disconnected, ...)",
            ),
            &["provider", "kind"],
        )?;
        let reconnects = IntCounterVec::new(
            Opts::new(
                "provider_reconnects_total",
                "Streaming provider sockets lost during a call and opened again",
            ),
            &["provider"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(reconnects.clone()))?;
        Ok(Self {
            duration,
            errors,
            reconnects,
        })
    }

    /// One finished request: its time, and its failure kind when it failed.
    pub fn request(&self, provider: &str, took: Duration, error: Option<&'static str>) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.duration
            .with_label_values(&[provider, result])
            .observe(took.as_secs_f64());
        if let Some(kind) = error {
            self.error(provider, kind);
        }
    }

    /// A failure outside a request (a refusal by the open breaker, a stream cut mid-call).
    pub fn error(&self, provider: &str, kind: &'static str) {
        self.errors.with_label_values(&[provider, kind]).inc();
    }

    /// A streaming socket lost mid-call, about to be opened again; `kind` is why it was lost.
    pub fn reconnect(&self, provider: &str, kind: &'static str) {
        self.error(provider, kind);
        self.reconnects.with_label_values(&[provider]).inc();
    }
}
