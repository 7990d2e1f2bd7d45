//! Circuit breakers, one per provider and per instance: closed → open after `failures_to_open`
//! failures in a row or a failure rate over `window_secs` → half-open once `open_ms` has passed
//! (one request at a time goes out as a probe) → closed on its success, open again (twice as
//! long, up to `open_max_ms`) on its failure.
//!
//! A small state machine of our own: the `failsafe` crate was the candidate, but its backoff
//! panics below one second and its rate window counts whole seconds, which rules out the short
//! open times tests (and a quick half-open probe) need.
//!
//! An open breaker refuses at once ([`Breaker::allows`] is false), so the engine takes its
//! fallback instead of waiting for timeouts. State and trips are exported as
//! `iace_circuit_breaker_state{provider}` (0 closed, 1 open, 2 half-open) and
//! `iace_circuit_breaker_trips_total{provider}`; every transition is one log line.

use crate::config::BreakerSettings;
use crate::providers::ProviderError;
use crate::telemetry::breakers::BreakerMetrics;
use crate::telemetry::providers::ProviderMetrics;
use prometheus::{IntCounter, IntGauge};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The outside services a breaker guards (their metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Telnyx Call Control (REST commands).
    Telnyx,
    Deepgram,
    Cartesia,
    /// Groq chat completions (the dialogue).
    GroqChat,
    /// Groq sentiment scoring (its own budget, its own fallback: the lexicon).
    GroqSentiment,
    /// Groq from the post-call jobs (summaries, patterns, memory): its own breaker, so a
    /// backlog of jobs against a failing Groq neither opens the dialogue's breaker nor burns
    /// the jobs' attempts (an open breaker defers them instead).
    GroqPostCall,
    Gemini,
}

impl Provider {
    pub const ALL: [Provider; 7] = [
        Provider::Telnyx,
        Provider::Deepgram,
        Provider::Cartesia,
        Provider::GroqChat,
        Provider::GroqSentiment,
        Provider::GroqPostCall,
        Provider::Gemini,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Telnyx => "telnyx",
            Provider::Deepgram => "deepgram",
            Provider::Cartesia => "cartesia",
            Provider::GroqChat => "groq_chat",
            Provider::GroqSentiment => "groq_sentiment",
            Provider::GroqPostCall => "groq_post_call",
            Provider::Gemini => "gemini",
        }
    }
}

/// Where a breaker stands (the gauge's value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Moves the metrics and writes the log line of each transition.
struct Observer {
    provider: Provider,
    gauge: IntGauge,
    trips: IntCounter,
    requests: Option<ProviderMetrics>,
    failures: IntCounter,
}

impl Observer {
    fn entered(&self, from: BreakerState, to: BreakerState) {
        self.gauge.set(to as i64);
        let provider = self.provider.as_str();
        match to {
            BreakerState::Open => {
                self.trips.inc();
                tracing::warn!(
                    provider,
                    from = from.as_str(),
                    "circuit breaker opened: requests go to the fallback"
                );
            }
            BreakerState::HalfOpen => {
                tracing::info!(provider, "circuit breaker half-open: probing the provider")
            }
            BreakerState::Closed => {
                tracing::info!(provider, "circuit breaker closed: provider back")
            }
        }
    }
}

/// The mutable part, behind one lock (held for a few instructions, never across an await).
struct Machine {
    state: BreakerState,
    /// Failures since the last success.
    in_a_row: u32,
    /// Outcomes inside the rate window, oldest first (`true` = failed).
    window: VecDeque<(Instant, bool)>,
    failures_in_window: u32,
    /// Open until then (state Open).
    open_until: Instant,
    /// How long the next opening lasts.
    open_for: Duration,
    /// When the half-open probe went out; another may go when it is this old without result.
    probe_sent: Option<Instant>,
    /// When the breaker last opened (for `/admin/breakers`).
    last_trip: Option<chrono::DateTime<chrono::Utc>>,
    /// An operator forced it open (`/admin/breakers`): it refuses until reset.
    forced_open: bool,
}

/// One breaker as `/admin/breakers` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BreakerSnapshot {
    pub provider: &'static str,
    pub state: &'static str,
    pub forced_open: bool,
    /// Failures since the last success.
    pub failures_in_a_row: u32,
    /// Failures and all outcomes inside the rate window.
    pub failures_in_window: u32,
    pub requests_in_window: usize,
    pub last_trip: Option<chrono::DateTime<chrono::Utc>>,
}

struct Shared {
    provider: Provider,
    settings: BreakerSettings,
    machine: Mutex<Machine>,
    /// The state, readable without the lock.
    state: AtomicU8,
    observer: Observer,
}

/// One provider's breaker on this instance. Cheap to clone (shared state), `Send + Sync`.
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Breaker({}: {})",
            self.shared.provider.as_str(),
            self.state().as_str()
        )
    }
}

impl Breaker {
    fn new(
        provider: Provider,
        settings: &BreakerSettings,
        gauge: IntGauge,
        trips: IntCounter,
        requests: Option<ProviderMetrics>,
        failures: IntCounter,
    ) -> Self {
        gauge.set(BreakerState::Closed as i64);
        let now = Instant::now();
        Self {
            shared: Arc::new(Shared {
                provider,
                settings: settings.clone(),
                machine: Mutex::new(Machine {
                    state: BreakerState::Closed,
                    in_a_row: 0,
                    window: VecDeque::new(),
                    failures_in_window: 0,
                    open_until: now,
                    open_for: Duration::from_millis(settings.open_ms),
                    probe_sent: None,
                    last_trip: None,
                    forced_open: false,
                }),
                state: AtomicU8::new(BreakerState::Closed as u8),
                observer: Observer {
                    provider,
                    gauge,
                    trips,
                    requests,
                    failures,
                },
            }),
        }
    }

    /// A breaker with no metrics, for clients built outside an application (CLI tools, tests).
    pub fn standalone(provider: Provider, settings: &BreakerSettings) -> Self {
        let gauge = IntGauge::new("standalone_breaker_state", "unregistered");
        let trips = IntCounter::new("standalone_breaker_trips_total", "unregistered");
        let failures = IntCounter::new("standalone_breaker_failures_total", "unregistered");
        match (gauge, trips, failures) {
            (Ok(g), Ok(t), Ok(f)) => Self::new(provider, settings, g, t, None, f),
            // Both names are valid constants; this arm only satisfies the types.
            _ => unreachable!("constant metric names are valid"),
        }
    }

    pub fn provider(&self) -> Provider {
        self.shared.provider
    }

    /// The state as last seen, without moving it (an open breaker whose time is up reads open
    /// until the next request asks).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.shared.state.load(Ordering::SeqCst))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        // A panic elsewhere while holding the lock leaves consistent counters: keep going.
        self.shared
            .machine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn move_to(&self, machine: &mut Machine, to: BreakerState) {
        let from = machine.state;
        if to == BreakerState::Open && from != to {
            machine.last_trip = Some(chrono::Utc::now());
        }
        machine.state = to;
        self.shared.state.store(to as u8, Ordering::SeqCst);
        if from != to {
            self.shared.observer.entered(from, to);
        }
    }

    /// May a request go out now? Closed: yes. Open: no, until `open_ms` has passed; then the
    /// breaker turns half-open and lets one request through as a probe.
    pub fn allows(&self) -> bool {
        let now = Instant::now();
        let mut m = self.lock();
        if m.forced_open {
            return false;
        }
        match m.state {
            BreakerState::Closed => true,
            BreakerState::Open if now < m.open_until => false,
            BreakerState::Open => {
                self.move_to(&mut m, BreakerState::HalfOpen);
                m.probe_sent = Some(now);
                true
            }
            BreakerState::HalfOpen => {
                // One probe at a time; a probe whose result never came (its caller gave up)
                // does not block the breaker for ever.
                let lost = m
                    .probe_sent
                    .is_none_or(|sent| now.duration_since(sent) >= m.open_for);
                if lost {
                    m.probe_sent = Some(now);
                }
                lost
            }
        }
    }

    /// Whether [`allows`](Self::allows) would say yes now, without taking the half-open probe:
    /// for a caller deciding between the provider and its fallback before building anything.
    pub fn would_allow(&self) -> bool {
        let now = Instant::now();
        let m = self.lock();
        if m.forced_open {
            return false;
        }
        match m.state {
            BreakerState::Closed => true,
            BreakerState::Open => now >= m.open_until,
            BreakerState::HalfOpen => m
                .probe_sent
                .is_none_or(|sent| now.duration_since(sent) >= m.open_for),
        }
    }

    /// How long until a refused request is worth trying again: the rest of the open interval
    /// (at least the interval itself while half-open or forced open, whose end is unknown).
    pub fn retry_in(&self) -> Duration {
        let now = Instant::now();
        let m = self.lock();
        match m.state {
            BreakerState::Open if !m.forced_open && m.open_until > now => m.open_until - now,
            BreakerState::Closed => Duration::ZERO,
            _ => m.open_for,
        }
    }

    /// The provider did its job.
    pub fn success(&self) {
        let now = Instant::now();
        let mut m = self.lock();
        match m.state {
            BreakerState::HalfOpen => self.close(&mut m),
            BreakerState::Closed => {
                m.in_a_row = 0;
                self.remember(&mut m, now, false);
            }
            // A late answer to a request sent before the breaker opened: the probe decides.
            BreakerState::Open => {}
        }
    }

    /// The provider failed (down, too slow, refusing our key).
    pub fn failure(&self) {
        self.shared.observer.failures.inc();
        let now = Instant::now();
        let settings = &self.shared.settings;
        let mut m = self.lock();
        match m.state {
            BreakerState::HalfOpen => {
                // The probe failed: open again, for longer.
                let max = Duration::from_millis(settings.open_max_ms);
                m.open_for = (m.open_for * 2).min(max);
                m.open_until = now + m.open_for;
                m.probe_sent = None;
                // A re-opening is a trip too (alerts count them): `entered` counts it.
                self.move_to(&mut m, BreakerState::Open);
            }
            BreakerState::Closed => {
                m.in_a_row += 1;
                self.remember(&mut m, now, true);
                let seen = m.window.len() as u32;
                let rate = f64::from(m.failures_in_window) / f64::from(seen.max(1));
                if m.in_a_row >= settings.failures_to_open
                    || (seen >= settings.min_requests_in_window
                        && rate >= settings.failure_rate_to_open)
                {
                    m.open_until = now + m.open_for;
                    self.move_to(&mut m, BreakerState::Open);
                }
            }
            BreakerState::Open => {}
        }
    }

    /// Counts an outcome: `failed` says whether it was the provider's fault (down, slow,
    /// refusing our key) rather than ours (a request it rejected as malformed).
    pub fn record(&self, failed: bool) {
        if failed {
            self.failure();
        } else {
            self.success();
        }
    }

    /// Times one request that went out, and counts its failure kind (`iace_provider_*`).
    pub fn observe(&self, took: Duration, error: Option<&'static str>) {
        if let Some(requests) = &self.shared.observer.requests {
            requests.request(self.shared.provider.as_str(), took, error);
        }
    }

    /// Counts a request the open breaker refused (`kind="circuit_open"`).
    pub fn refused(&self) {
        if let Some(requests) = &self.shared.observer.requests {
            requests.error(self.shared.provider.as_str(), "circuit_open");
        }
    }

    /// State, counters and last trip, for `/admin/breakers`.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let m = self.lock();
        BreakerSnapshot {
            provider: self.shared.provider.as_str(),
            state: m.state.as_str(),
            forced_open: m.forced_open,
            failures_in_a_row: m.in_a_row,
            failures_in_window: m.failures_in_window,
            requests_in_window: m.window.len(),
            last_trip: m.last_trip,
        }
    }

    /// An operator's action: open now and refuse every request until [`reset`](Self::reset).
    pub fn force_open(&self) {
        let mut m = self.lock();
        m.forced_open = true;
        m.probe_sent = None;
        self.move_to(&mut m, BreakerState::Open);
    }

    /// An operator's action: closed, counters and backoff cleared (a forced opening lifted).
    pub fn reset(&self) {
        let mut m = self.lock();
        m.forced_open = false;
        self.close(&mut m);
    }

    /// Closed, with the counters, the probe and the backoff cleared.
    fn close(&self, m: &mut Machine) {
        m.in_a_row = 0;
        m.window.clear();
        m.failures_in_window = 0;
        m.probe_sent = None;
        m.open_for = Duration::from_millis(self.shared.settings.open_ms);
        self.move_to(m, BreakerState::Closed);
    }

    /// Adds an outcome to the rate window and forgets those older than the window.
    fn remember(&self, m: &mut Machine, now: Instant, failed: bool) {
        let window = Duration::from_secs(self.shared.settings.window_secs);
        while let Some(&(at, was_failure)) = m.window.front() {
            if now.duration_since(at) < window {
                break;
            }
            m.window.pop_front();
            m.failures_in_window -= u32::from(was_failure);
        }
        m.window.push_back((now, failed));
        m.failures_in_window += u32::from(failed);
    }
}

/// Runs one provider request through `breaker` (when the client has one): refused at once with
/// [`ProviderError::CircuitOpen`] while the breaker is open, its outcome counted otherwise.
pub async fn guarded<T>(
    breaker: Option<&Breaker>,
    provider: &'static str,
    request: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let Some(breaker) = breaker else {
        return request.await;
    };
    if !breaker.allows() {
        breaker.refused();
        return Err(ProviderError::CircuitOpen { provider });
    }
    let started = Instant::now();
    let result = request.await;
    breaker.observe(
        started.elapsed(),
        result.as_ref().err().map(ProviderError::kind),
    );
    breaker.record(matches!(&result, Err(e) if e.counts_against_provider()));
    result
}

/// Every provider's breaker on this instance, with their metric families.
#[derive(Clone, Debug)]
pub struct Breakers {
    pub telnyx: Breaker,
    pub deepgram: Breaker,
    pub cartesia: Breaker,
    pub groq_chat: Breaker,
    pub groq_sentiment: Breaker,
    pub groq_post_call: Breaker,
    pub gemini: Breaker,
}

impl Breakers {
    /// Builds the breakers; their state and trips are exported through `metrics`.
    pub fn new(settings: &BreakerSettings, metrics: &BreakerMetrics) -> Self {
        let make = |p: Provider| {
            let (gauge, trips, failures) = metrics.for_provider(p.as_str());
            Breaker::new(
                p,
                settings,
                gauge,
                trips,
                metrics.providers().cloned(),
                failures,
            )
        };
        Self {
            telnyx: make(Provider::Telnyx),
            deepgram: make(Provider::Deepgram),
            cartesia: make(Provider::Cartesia),
            groq_chat: make(Provider::GroqChat),
            groq_sentiment: make(Provider::GroqSentiment),
            groq_post_call: make(Provider::GroqPostCall),
            gemini: make(Provider::Gemini),
        }
    }

    /// Every breaker, in [`Provider::ALL`]'s order.
    pub fn all(&self) -> [&Breaker; 7] {
        Provider::ALL.map(|p| self.get(p))
    }

    /// The breaker of the provider labelled `label` (`groq_chat`, ...).
    pub fn by_label(&self, label: &str) -> Option<&Breaker> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == label)
            .map(|p| self.get(p))
    }

    pub fn get(&self, provider: Provider) -> &Breaker {
        match provider {
            Provider::Telnyx => &self.telnyx,
            Provider::Deepgram => &self.deepgram,
            Provider::Cartesia => &self.cartesia,
            Provider::GroqChat => &self.groq_chat,
            Provider::GroqSentiment => &self.groq_sentiment,
            Provider::GroqPostCall => &self.groq_post_call,
            Provider::Gemini => &self.gemini,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Registry;

    fn settings(failures: u32, open_ms: u64) -> BreakerSettings {
        BreakerSettings {
            failures_to_open: failures,
            failure_rate_to_open: 0.5,
            window_secs: 30,
            min_requests_in_window: 1000,
            open_ms,
            open_max_ms: open_ms * 4,
        }
    }

    fn breakers(s: &BreakerSettings) -> (Breakers, Registry) {
        let registry = Registry::new_custom(Some("iace".into()), None).unwrap();
        let metrics = BreakerMetrics::new(&registry).unwrap();
        (Breakers::new(s, &metrics), registry)
    }

    fn metric(registry: &Registry, name: &str, provider: &str) -> f64 {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let prefix = format!("{name}{{provider=\"{provider}\"}} ");
        String::from_utf8(out)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(|v| v.parse().unwrap()))
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn opens_after_n_failures_in_a_row_and_refuses_at_once() {
        let (b, registry) = breakers(&settings(3, 60_000));
        let cartesia = &b.cartesia;
        cartesia.failure();
        cartesia.success(); // a success resets the run
        cartesia.failure();
        cartesia.failure();
        assert!(cartesia.allows());
        assert_eq!(cartesia.state(), BreakerState::Closed);
        cartesia.failure();
        assert_eq!(cartesia.state(), BreakerState::Open);
        assert!(!cartesia.allows());
        assert_eq!(
            metric(&registry, "iace_circuit_breaker_state", "cartesia"),
            1.0
        );
        assert_eq!(
            metric(&registry, "iace_circuit_breaker_trips_total", "cartesia"),
            1.0
        );
        // The other providers are untouched.
        assert!(b.deepgram.allows());
        assert_eq!(b.deepgram.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_probe_closes_on_success_and_reopens_on_failure() {
        let (b, registry) = breakers(&settings(1, 30));
        let groq = &b.groq_chat;
        groq.failure();
        assert!(!groq.allows());
        std::thread::sleep(Duration::from_millis(60));
        // Time is up: the next request is a probe.
        assert!(groq.allows());
        assert_eq!(groq.state(), BreakerState::HalfOpen);
        assert_eq!(
            metric(&registry, "iace_circuit_breaker_state", "groq_chat"),
            2.0
        );
        groq.failure();
        assert_eq!(groq.state(), BreakerState::Open);
        assert_eq!(
            metric(&registry, "iace_circuit_breaker_trips_total", "groq_chat"),
            2.0
        );
        // The second open lasts longer (exponential backoff): 30 ms is no longer enough.
        std::thread::sleep(Duration::from_millis(40));
        assert!(!groq.allows());
        std::thread::sleep(Duration::from_millis(200));
        assert!(groq.allows());
        groq.success();
        assert_eq!(groq.state(), BreakerState::Closed);
        assert_eq!(
            metric(&registry, "iace_circuit_breaker_state", "groq_chat"),
            0.0
        );
    }

    #[test]
    fn a_failure_rate_over_the_window_opens_without_a_run() {
        let mut s = settings(1000, 60_000);
        s.min_requests_in_window = 10;
        let breaker = Breaker::standalone(Provider::Gemini, &s);
        // Never 1000 failures in a row, but 2 in 3 fail: open once 10 requests were seen.
        for _ in 0..3 {
            breaker.success();
            breaker.failure();
            breaker.failure();
        }
        assert_eq!(breaker.state(), BreakerState::Closed, "9 requests seen");
        breaker.success();
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allows());
    }

    #[test]
    fn half_open_lets_one_probe_through_at_a_time() {
        let breaker = Breaker::standalone(Provider::Telnyx, &settings(1, 20));
        breaker.failure();
        std::thread::sleep(Duration::from_millis(30));
        assert!(breaker.allows(), "the probe");
        assert!(
            !breaker.allows(),
            "a second request waits for the probe's result"
        );
        breaker.success();
        assert!(breaker.allows() && breaker.allows());
    }
}
