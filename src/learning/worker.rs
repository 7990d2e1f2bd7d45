//! The job worker pool: `workers` tasks on a dedicated arbiter thread (the jobs use awc, which
//! must stay on one thread), each claiming due jobs from Postgres and running them, plus a
//! reaper that puts back jobs whose worker was lost. Stops cleanly: no new claims, running
//! jobs finish (up to a deadline; past it they are left to the lease).

use crate::config::LearningSettings;
use crate::learning::pipeline::{JobError, Pipeline};
use crate::learning::JobKind;
use crate::providers::ProviderError;
use crate::store::jobs::{self, JobRow};
use crate::store::StoreError;
use actix::Arbiter;
use chrono::Utc;
use prometheus::{IntCounterVec, IntGaugeVec};
use rand::Rng;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// The running pool. Dropping it stops the workers at once (without waiting for their jobs,
/// which the lease then covers): an application dropped without an orderly shutdown (a test's
/// end, a panic) must not leave workers polling a database that may be gone.
pub struct JobWorkers {
    stop: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
    arbiter: Option<Arbiter>,
}

/// Timing of the loop, from [`LearningSettings`].
#[derive(Debug, Clone)]
struct Timing {
    poll: Duration,
    lease: Duration,
    backoff: Duration,
    backoff_max: Duration,
}

impl JobWorkers {
    /// Starts `settings.workers` workers (none when 0: jobs then wait for another instance).
    /// `outcomes` counts finished attempts by kind and result; `queue` is set to the jobs by
    /// state each time the reaper runs.
    pub fn start(
        pipeline: Pipeline,
        settings: &LearningSettings,
        outcomes: IntCounterVec,
        queue: IntGaugeVec,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = mpsc::channel::<()>(1);
        let timing = Timing {
            poll: Duration::from_millis(settings.poll_interval_ms),
            lease: Duration::from_secs(settings.lease_secs),
            backoff: Duration::from_millis(settings.retry_backoff_ms),
            backoff_max: Duration::from_millis(settings.retry_backoff_max_ms),
        };
        let count = settings.workers;
        if count == 0 {
            return Self {
                stop,
                done,
                arbiter: None,
            };
        }
        let arbiter = crate::actors::threads::named_arbiter("iace-jobs");
        let instance = format!(
            "{}:{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "iace".into()),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        arbiter.spawn_fn(move || {
            actix_web::rt::spawn(reaper(
                pipeline.clone(),
                timing.clone(),
                queue.clone(),
                stop_rx.clone(),
                done_tx.clone(),
            ));
            for n in 0..count {
                let worker = Worker {
                    id: format!("{instance}:{n}"),
                    pipeline: pipeline.clone(),
                    timing: timing.clone(),
                    outcomes: outcomes.clone(),
                    queue: queue.clone(),
                };
                actix_web::rt::spawn(worker.run(stop_rx.clone(), done_tx.clone()));
            }
        });
        Self {
            stop,
            done,
            arbiter: Some(arbiter),
        }
    }

    /// Stops claiming, waits up to `deadline` for running jobs, then stops the thread. A job
    /// still running then stays `running` and is reclaimed after its lease.
    pub async fn stop(mut self, deadline: Duration) {
        let _ = self.stop.send(true);
        if self.arbiter.is_some() {
            // Every task holds a sender; `None` means they have all returned.
            if tokio::time::timeout(deadline, self.done.recv())
                .await
                .is_err()
            {
                tracing::warn!("job workers did not finish in time; their jobs wait for the lease");
            }
        }
        // Drop stops the arbiter.
    }
}

impl Drop for JobWorkers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(arbiter) = self.arbiter.take() {
            arbiter.stop();
        }
    }
}

/// Longest idle wait after repeated failures to reach the database.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait between polls of an empty queue: each empty poll doubles the wait from
/// `poll_interval_ms` up to this. A job queued by this process wakes a worker at once
/// ([`super::JOBS_QUEUED`]); one queued elsewhere (another instance, a retry coming due) waits
/// at most this long.
const IDLE_POLL_MAX: Duration = Duration::from_secs(5);

struct Worker {
    id: String,
    pipeline: Pipeline,
    timing: Timing,
    outcomes: IntCounterVec,
    queue: IntGaugeVec,
}

impl Worker {
    async fn run(self, mut stop: watch::Receiver<bool>, _done: mpsc::Sender<()>) {
        let mut errors = 0u32;
        let mut idle = 0u32;
        while !*stop.borrow() && !self.pipeline.db.is_closed() {
            let wait = match self.next().await {
                Ok(true) => {
                    errors = 0;
                    idle = 0;
                    continue;
                }
                Ok(false) => {
                    errors = 0;
                    let wait = self
                        .timing
                        .poll
                        .saturating_mul(1 << idle.min(8))
                        .min(IDLE_POLL_MAX.max(self.timing.poll));
                    idle = idle.saturating_add(1);
                    wait
                }
                Err(err) => {
                    tracing::warn!(worker = %self.id, error = %err, "cannot claim jobs");
                    // Back off while the database is away, instead of hammering it.
                    errors = errors.saturating_add(1);
                    self.timing
                        .poll
                        .saturating_mul(1 << errors.min(8))
                        .min(MAX_ERROR_BACKOFF)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
                _ = super::JOBS_QUEUED.notified() => idle = 0,
            }
        }
    }

    /// Claims and runs one job; false when none was due.
    async fn next(&self) -> Result<bool, StoreError> {
        let job = {
            let mut conn = self.pipeline.db.get().await?;
            jobs::claim(&mut conn, &self.id).await?
        };
        let Some(job) = job else {
            return Ok(false);
        };
        // Its own trace, linked to the call's (the call's span, stored with the job, may be
        // on another instance and long over).
        let link = job.payload[crate::learning::TRACEPARENT_KEY]
            .as_str()
            .unwrap_or_default();
        let span = tracing::info_span!("job", job_id = %job.id, kind = %job.kind,
            call_id = ?job.call_id, attempt = job.attempts, trace_link = link);
        // Stay well inside the lease, so a slow attempt is not run twice at once.
        let limit = self.timing.lease.mul_f64(0.8);
        async {
            let result = match tokio::time::timeout(limit, self.pipeline.run(&job)).await {
                Ok(result) => result,
                Err(_) => Err(JobError::Provider(
                    crate::providers::ProviderError::Timeout {
                        provider: "job",
                        after: limit,
                    },
                )),
            };
            self.record(&job, result).await
        }
        .instrument(span)
        .await?;
        Ok(true)
    }

    async fn record(&self, job: &JobRow, result: Result<(), JobError>) -> Result<(), StoreError> {
        let mut conn = self.pipeline.db.get().await?;
        let outcome = match result {
            Ok(()) => {
                jobs::succeed(&mut conn, job.id, &self.id).await?;
                "succeeded"
            }
            // Not tried at all: Groq's breaker is open. Back when it may let a probe through,
            // without spending an attempt, so an outage never fails jobs for good.
            Err(JobError::Provider(ProviderError::CircuitOpen { provider })) => {
                let wait = self
                    .pipeline
                    .groq
                    .breaker()
                    .map(|b| b.retry_in())
                    .unwrap_or_default()
                    .max(self.timing.backoff);
                let run_at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                let reason = format!("{provider} circuit breaker is open: deferred");
                jobs::defer(&mut conn, job.id, &self.id, &reason, run_at).await?;
                tracing::info!(?run_at, "job deferred: {reason}");
                "deferred"
            }
            Err(err) => {
                let last = !err.is_retryable() || job.attempts >= job.max_attempts;
                let retry_at = (!last).then(|| {
                    let delay = backoff(&self.timing, job.attempts);
                    Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()
                });
                let message = error_chain(&err);
                jobs::fail(&mut conn, job.id, &self.id, &message, retry_at).await?;
                if last {
                    tracing::error!(error = %message, "job failed for good");
                    "failed"
                } else {
                    tracing::warn!(error = %message, ?retry_at, "job attempt failed; will retry");
                    "retried"
                }
            }
        };
        self.outcomes.with_label_values(&[&job.kind, outcome]).inc();
        drop(conn);
        count_jobs(&self.pipeline, &self.queue).await;
        Ok(())
    }
}

/// Puts back lost jobs at start (a restart) and then every half lease, and then counts the
/// jobs by state into `queue`.
async fn reaper(
    pipeline: Pipeline,
    timing: Timing,
    queue: IntGaugeVec,
    mut stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    let every = (timing.lease / 2).max(Duration::from_millis(200));
    while !*stop.borrow() && !pipeline.db.is_closed() {
        let reclaimed = async {
            let mut conn = pipeline.db.get().await?;
            jobs::reclaim_stale(&mut conn, timing.lease.as_secs().max(1)).await
        };
        match reclaimed.await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "reclaimed jobs whose worker was lost"),
            Err(err) => tracing::warn!(error = %err, "cannot reclaim stale jobs"),
        }
        count_jobs(&pipeline, &queue).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The job states `iace_jobs` reports (a row in any other reads as `other`).
const JOB_STATES: [&str; 4] = ["pending", "running", "succeeded", "failed"];

/// Sets `queue{kind,state}` from the jobs table (a pair with no job left reads 0). Both labels
/// are bounded: unknown kinds or states count under `other`.
async fn count_jobs(pipeline: &Pipeline, queue: &IntGaugeVec) {
    let counted = async {
        let mut conn = pipeline.db.get().await?;
        crate::store::admin::job_counts_by_kind(&mut conn).await
    };
    match counted.await {
        Ok(counts) => {
            let kinds = JobKind::ALL.map(JobKind::as_str);
            let mut totals = std::collections::BTreeMap::<(&str, &str), i64>::new();
            for kind in kinds.iter().chain(["other"].iter()) {
                for state in JOB_STATES.iter().chain(["other"].iter()) {
                    totals.insert((kind, state), 0);
                }
            }
            for (kind, state, n) in &counts {
                let kind = JobKind::parse(kind).map_or("other", JobKind::as_str);
                let state = JOB_STATES
                    .iter()
                    .find(|s| **s == state.as_str())
                    .copied()
                    .unwrap_or("other");
                *totals.entry((kind, state)).or_default() += n;
            }
            for ((kind, state), n) in totals {
                queue.with_label_values(&[kind, state]).set(n);
            }
        }
        Err(err) => tracing::debug!(error = %err, "cannot count jobs"),
    }
}

/// `backoff * 2^(attempt-1)`, capped, with ±20% jitter so failed jobs do not retry in step.
fn backoff(timing: &Timing, attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    let base = timing
        .backoff
        .saturating_mul(1u32 << exponent)
        .min(timing.backoff_max);
    base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let timing = Timing {
            poll: Duration::from_millis(10),
            lease: Duration::from_secs(10),
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
        };
        let first = backoff(&timing, 1);
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        let third = backoff(&timing, 3);
        assert!(third >= Duration::from_millis(320) && third <= Duration::from_millis(480));
        assert!(backoff(&timing, 30) <= Duration::from_millis(1200));
    }
}
