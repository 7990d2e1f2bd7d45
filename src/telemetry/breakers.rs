//! Metric families of the providers' circuit breakers: `iace_circuit_breaker_state{provider}`
//! (0 closed, 1 open, 2 half-open) and `iace_circuit_breaker_trips_total{provider}`.

use crate::telemetry::providers::ProviderMetrics;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The two families, registered once per application registry, and the provider request
/// families the guarded requests record into (when given).
#[derive(Clone)]
pub struct BreakerMetrics {
    state: IntGaugeVec,
    trips: IntCounterVec,
    providers: Option<ProviderMetrics>,
    failures: IntCounterVec,
}

impl BreakerMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let state = IntGaugeVec::new(
            Opts::new(
                "circuit_breaker_state",
                "Circuit breaker per provider: 0 closed, 1 open, 2 half-open",
            ),
            &["provider"],
        )?;
        let trips = IntCounterVec::new(
            Opts::new(
                "circuit_breaker_trips_total",
                "Times a provider's circuit breaker opened (a failed half-open probe included)",
            ),
            &["provider"],
        )?;
        registry.register(Box::new(state.clone()))?;
        let failures = IntCounterVec::new(
            Opts::new(
                "circuit_breaker_failures_total",
                "Provider failures a circuit breaker counted (failed requests, and streams that broke off mid-response)",
            ),
            &["provider"],
        )?;
        registry.register(Box::new(trips.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self {
            state,
            trips,
            providers: None,
            failures,
        })
    }

    /// Requests through the breakers are timed and their failures counted in `providers`.
    pub fn with_providers(mut self, providers: ProviderMetrics) -> Self {
        self.providers = Some(providers);
        self
    }

    /// The provider request families, when set.
    pub fn providers(&self) -> Option<&ProviderMetrics> {
        self.providers.as_ref()
    }

    /// The state gauge, the trip counter and the failure counter of one provider.
    pub fn for_provider(&self, provider: &str) -> (IntGauge, IntCounter, IntCounter) {
        (
            self.state.with_label_values(&[provider]),
            self.trips.with_label_values(&[provider]),
            self.failures.with_label_values(&[provider]),
        )
    }
}
