//! Recorder: the writer of a live call's records. Calls hand it writes and move on; it batches
//! them, applies them in order, retries while the database is away, and never drops one silently.
//!
//! Every write a `Call` actor makes goes through here: its row (inbound insert, every update),
//! its events, its utterances, and the post-call jobs queued after them. Call data written
//! outside a live call does not: the calls API inserts an outbound call's row before its actor
//! exists (so its 202 is readable at once), the registry attaches a late webhook of an ended call
//! to that call's history, the post-call jobs (`learning::pipeline`) set the summary and outcome
//! class, and the webhook handler keeps the raw inbox (`webhook_events`).

use crate::store::calls::{self, CallChanges, NewCall};
use crate::store::events::{self, NewCallEvent};
use crate::store::utterances::{self, NewUtterance};
use crate::store::{DbPool, StoreError};
use actix::prelude::*;
use std::collections::VecDeque;
use std::time::Duration;
use uuid::Uuid;

/// One write, applied in the order received.
#[derive(Debug, Clone)]
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
}

pub struct Recorder {
    pool: DbPool,
    config: RecorderConfig,
    queue: VecDeque<(Write, u32)>,
    writing: bool,
    backoff: Duration,
    waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    failed_writes: prometheus::IntCounter,
}

impl Recorder {
    pub fn new(
        pool: DbPool,
        config: RecorderConfig,
        failed_writes: prometheus::IntCounter,
    ) -> Self {
        Self {
            pool,
            config,
            queue: VecDeque::new(),
            writing: false,
            backoff: Duration::from_millis(50),
            waiters: Vec::new(),
            failed_writes,
        }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.queue.is_empty() {
            if self.queue.is_empty() {
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
        ctx.run_later(delay, |act, ctx| act.kick(ctx));
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
        // Batching: writes that arrive together go out together.
        ctx.run_interval(self.config.flush_interval, |act, ctx| act.kick(ctx));
    }
}

impl Handler<Record> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Record, ctx: &mut Self::Context) {
        self.queue.push_back((msg.0, 0));
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
