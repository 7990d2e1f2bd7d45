//! Recorder: the writer of a live call's records. Calls hand it writes and move on; it batches
//! them, applies them in order, retries while the database is away, and never drops one silently.
//!
//! Every write a `Call` actor makes goes through here: its row (inbound insert, every update),
//! its events, its utterances, and the post-call jobs queued after them. Call data written
//! outside a live call does not: the calls API inserts an outbound call's row before its actor
//! exists (so its 202 is readable at once), the registry attaches a late webhook of an ended call
//! to that call's history, the post-call jobs (`learning::pipeline`) set the summary and outcome
//! class, and the webhook handler keeps the raw inbox (`webhook_events`).
//!
//! Memory is bounded: past `buffer_max_writes` queued writes (a long database outage under many
//! calls), new writes go to an append-only spill file (one JSON line each) instead. Writes come
//! back from the file, oldest first, as the queue drains, so the database sees them in the order
//! they were made; a spill file left by a crash is replayed at start-up.

use crate::actors::spill::SpillFile;
use crate::store::calls::{self, CallChanges, NewCall};
use crate::store::events::{self, NewCallEvent};
use crate::store::utterances::{self, NewUtterance};
use crate::store::{DbPool, StoreError};
use actix::prelude::*;
use std::collections::VecDeque;
use std::time::Duration;
use uuid::Uuid;

/// One write, applied in the order received.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Write {
    InsertCall(NewCall),
    UpdateCall {
        organization_id: Uuid,
        call_id: Uuid,
        changes: CallChanges,
    },
    InsertCallEvent(NewCallEvent),
    InsertUtterance(NewUtterance),
    /// Queue the post-call learning jobs; in order after the call's own writes, so the jobs
    /// find the whole transcript.
    EnqueuePostCall {
        organization_id: Uuid,
        call_id: Uuid,
    },
}

/// Queue a write (fire and forget).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub Write);

/// Resolves once every write queued before it is in the database (used at shutdown and by
/// tests that need read-your-writes).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Tunables (from `[recorder]` settings).
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub retry_backoff_max: Duration,
    /// A write that keeps failing for a reason other than the database being away is given up
    /// after this many attempts, with an error log carrying the write.
    pub max_attempts_per_write: u32,
    /// Writes held in memory; later ones go to the spill file until the queue drains.
    pub buffer_max_writes: usize,
    /// The spill file (one per instance).
    pub spill_path: std::path::PathBuf,
}

pub struct Recorder {
    pool: DbPool,
    config: RecorderConfig,
    queue: VecDeque<(Write, u32)>,
    writing: bool,
    /// A retry is scheduled: the batching interval leaves the database alone until then.
    backing_off: bool,
    backoff: Duration,
    waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    failed_writes: prometheus::IntCounter,
    spill: SpillFile,
    /// The call metric families read off the writes (`actors::outcomes`).
    outcomes: Option<crate::actors::outcomes::CallOutcomes>,
}

impl Recorder {
    pub fn new(
        pool: DbPool,
        config: RecorderConfig,
        failed_writes: prometheus::IntCounter,
    ) -> Self {
        let spill = SpillFile::new(config.spill_path.clone());
        Self {
            spill,
            pool,
            config,
            queue: VecDeque::new(),
            writing: false,
            backing_off: false,
            backoff: Duration::from_millis(50),
            waiters: Vec::new(),
            failed_writes,
            outcomes: None,
        }
    }

    /// Calls' ends, turn latencies and escalations are counted in `metrics` as they arrive.
    pub fn with_call_metrics(mut self, metrics: crate::telemetry::calls::CallMetrics) -> Self {
        self.outcomes = Some(crate::actors::outcomes::CallOutcomes::new(metrics));
        self
    }

    /// Queues a write: in memory while there is room and nothing older waits in the spill file,
    /// else at the end of the spill file (so order is kept).
    fn enqueue(&mut self, write: Write) {
        if self.spill.pending() == 0 && self.queue.len() < self.config.buffer_max_writes {
            self.queue.push_back((write, 0));
            return;
        }
        if self.spill.pending() == 0 {
            tracing::warn!(
                queued = self.queue.len(),
                file = %self.config.spill_path.display(),
                "recorder: memory buffer full, spilling writes to disk"
            );
        }
        if let Err(e) = self.spill.append(&write) {
            // Nowhere left to put it: keep it in memory rather than lose it.
            tracing::error!(error = %e, "recorder: spill file not writable; keeping the write in memory");
            self.queue.push_back((write, 0));
        }
    }

    /// Moves spilled writes back into memory, oldest first, as room frees up.
    fn refill(&mut self) {
        let room = self
            .config
            .buffer_max_writes
            .saturating_sub(self.queue.len());
        if room == 0 || self.spill.pending() == 0 {
            return;
        }
        match self.spill.take::<Write>(room) {
            Ok(writes) => self.queue.extend(writes.into_iter().map(|w| (w, 0))),
            Err(e) => tracing::error!(error = %e, "recorder: cannot read the spill file"),
        }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        self.refill();
        if self.writing || self.backing_off || self.queue.is_empty() {
            if self.queue.is_empty() && self.spill.pending() == 0 {
                for w in self.waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            return;
        }
        self.writing = true;
        let n = self.queue.len().min(self.config.batch_size);
        let batch: Vec<Write> = self.queue.iter().take(n).map(|(w, _)| w.clone()).collect();
        let pool = self.pool.clone();
        let fut = async move { apply_batch(&pool, &batch).await };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.writing = false;
            match result {
                Ok(()) => {
                    act.queue.drain(..n);
                    act.backoff = Duration::from_millis(50);
                    act.kick(ctx);
                }
                Err(BatchError::Unavailable(e)) => {
                    tracing::warn!(error = %e, queued = act.queue.len(), "recorder: database unavailable, retrying");
                    act.retry_later(ctx);
                }
                Err(BatchError::Failed { index, error }) => {
                    // Writes before `index` are committed (each write is its own statement).
                    act.queue.drain(..index);
                    if let Some((write, attempts)) = act.queue.front_mut() {
                        *attempts += 1;
                        if *attempts >= act.config.max_attempts_per_write {
                            tracing::error!(?write, error = %error, "recorder: giving up on a write");
                            act.failed_writes.inc();
                            act.queue.pop_front();
                        }
                    }
                    act.retry_later(ctx);
                }
            }
        }));
    }

    fn retry_later(&mut self, ctx: &mut Context<Self>) {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(self.config.retry_backoff_max);
        self.backing_off = true;
        ctx.run_later(delay, |act, ctx| {
            act.backing_off = false;
            act.kick(ctx);
        });
    }
}

enum BatchError {
    Unavailable(StoreError),
    Failed { index: usize, error: StoreError },
}

async fn apply_batch(pool: &DbPool, batch: &[Write]) -> Result<(), BatchError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| BatchError::Unavailable(e.into()))?;
    for (index, write) in batch.iter().enumerate() {
        let result = match write {
            Write::InsertCall(call) => calls::insert(&mut conn, call).await,
            Write::UpdateCall {
                organization_id,
                call_id,
                changes,
            } => calls::update(&mut conn, *organization_id, *call_id, changes).await,
            Write::InsertCallEvent(event) => events::insert_call_event(&mut conn, event).await,
            Write::InsertUtterance(u) => utterances::insert(&mut conn, u).await,
            Write::EnqueuePostCall {
                organization_id,
                call_id,
            } => crate::learning::enqueue_post_call(&mut conn, *organization_id, *call_id)
                .await
                .map(|_| ()),
        };
        if let Err(error) = result {
            let broken = matches!(
                error,
                StoreError::Query(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::ClosedConnection,
                    _
                )) | StoreError::Pool(_)
                    | StoreError::Connection(_)
            );
            return Err(if broken {
                BatchError::Unavailable(error)
            } else {
                BatchError::Failed { index, error }
            });
        }
    }
    Ok(())
}

impl Actor for Recorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Writes a crash left on disk go first, before anything this run records.
        match self.spill.recover() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                writes = n,
                "recorder: replaying writes spilled before a restart"
            ),
            Err(e) => tracing::error!(error = %e, "recorder: cannot read the spill file"),
        }
        // Batching: writes that arrive together go out together.
        ctx.run_interval(self.config.flush_interval, |act, ctx| act.kick(ctx));
    }
}

impl Handler<Record> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Record, ctx: &mut Self::Context) {
        if let Some(outcomes) = &mut self.outcomes {
            outcomes.observe(&msg.0);
        }
        self.enqueue(msg.0);
        if self.queue.len() >= self.config.batch_size {
            self.kick(ctx);
        }
    }
}

impl Handler<Flush> for Recorder {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.push(tx);
        self.kick(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
