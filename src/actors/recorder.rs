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
//!
//! Supervised: the queue (an inbox callers push to, the memory buffer, the spill file's read
//! position, flush waiters) lives outside the actor in [`RecorderHandle`], so an actor that
//! panics hands it whole to a successor started on the same arbiter; nothing queued is lost and
//! the spill file is not read again from its start. A write being applied when the actor died is
//! retried once; if it kills the recorder again it is logged and counted as poisoned.

use crate::actors::spill::SpillFile;
use crate::store::calls::{self, CallChanges, NewCall};
use crate::store::events::{self, NewCallEvent};
use crate::store::utterances::{self, NewUtterance};
use crate::store::{DbPool, StoreError};
use crate::telemetry::metrics::RecorderMetrics;
use actix::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
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
        /// The call's span as a `traceparent`: the jobs' spans link to it (absent in writes
        /// spooled by an older version).
        #[serde(default)]
        traceparent: Option<String>,
    },
}

/// Queue a write (fire and forget): `RecorderHandle::do_send(Record(write))`.
pub struct Record(pub Write);

/// `RecorderHandle::send(Flush)` resolves once every write queued before it is in the database
/// (used at shutdown and by tests that need read-your-writes).
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
    /// `calls.fault_injection`: the test-only panic hook works only when this is on.
    pub fault_injection: bool,
}

/// Cloneable handle to the recorder, whichever actor currently runs it. Writes go to a shared
/// inbox (not the actor's mailbox, which dies with a panicking actor); the actor is only woken.
#[derive(Clone)]
pub struct RecorderHandle {
    shared: Arc<Shared>,
    /// The running actor; replaced by a successor after a panic.
    addr: Arc<RwLock<Option<Addr<Recorder>>>>,
}

struct Shared {
    pool: DbPool,
    config: RecorderConfig,
    metrics: RecorderMetrics,
    failed_writes: prometheus::IntCounter,
    /// Pushed to by callers, emptied by the actor into `state`.
    inbox: Mutex<Inbox>,
    /// Only the actor (one at a time, on the recorder's arbiter) touches this.
    state: Mutex<State>,
    /// Test-only fault hook: the next this many write attempts panic.
    injected_panics: AtomicU32,
    /// The call metric families read off the writes as they are queued (`actors::outcomes`).
    outcomes: Mutex<Option<crate::actors::outcomes::CallOutcomes>>,
}

#[derive(Default)]
struct Inbox {
    writes: VecDeque<Write>,
    waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

struct State {
    queue: VecDeque<Queued>,
    spill: SpillFile,
    waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The spill file left by an earlier run was adopted (done once per process, not per actor).
    recovered: bool,
}

struct Queued {
    write: Write,
    /// Attempts that failed with a database error.
    attempts: u32,
    /// Being applied: still set when an actor starts means its predecessor died on it.
    in_flight: bool,
    /// Times an actor died while applying it.
    interrupted: u32,
}

impl Queued {
    fn new(write: Write) -> Self {
        Self {
            write,
            attempts: 0,
            in_flight: false,
            interrupted: 0,
        }
    }
}

/// A lock poisoned by a panicking actor is taken over as it is: every change under it is a
/// push, a pop or a flag.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RecorderHandle {
    /// Starts the recorder on `arbiter`, under actix's `Supervisor`.
    pub fn start(
        arbiter: &ArbiterHandle,
        pool: DbPool,
        config: RecorderConfig,
        metrics: RecorderMetrics,
        failed_writes: prometheus::IntCounter,
    ) -> Self {
        let spill = SpillFile::new(config.spill_path.clone());
        let shared = Arc::new(Shared {
            pool,
            config,
            metrics,
            failed_writes,
            inbox: Mutex::new(Inbox::default()),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                spill,
                waiters: Vec::new(),
                recovered: false,
            }),
            injected_panics: AtomicU32::new(0),
            outcomes: Mutex::new(None),
        });
        let handle = RecorderHandle {
            shared,
            addr: Arc::new(RwLock::new(None)),
        };
        handle.start_actor(arbiter.clone());
        handle
    }

    fn start_actor(&self, arbiter: ArbiterHandle) {
        let handle = self.clone();
        let addr = Supervisor::start_in_arbiter(&arbiter.clone(), move |_| Recorder {
            handle,
            arbiter,
            writing: false,
            backing_off: false,
            backoff: Duration::from_millis(50),
            flush_armed: false,
        });
        *self.addr.write().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// Wakes the running actor. Between a panic and its successor's start there is none; the
    /// successor looks at the inbox as it starts.
    fn kick(&self) {
        if let Some(addr) = self.addr.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            addr.do_send(Kick);
        }
    }

    /// Calls' ends, turn latencies and escalations are counted in `metrics` as they are queued.
    pub fn with_call_metrics(self, metrics: crate::telemetry::calls::CallMetrics) -> Self {
        *lock(&self.shared.outcomes) = Some(crate::actors::outcomes::CallOutcomes::new(metrics));
        self
    }

    /// Queues a write (fire and forget; never blocks on the database).
    pub fn do_send(&self, msg: Record) {
        if let Some(outcomes) = lock(&self.shared.outcomes).as_mut() {
            outcomes.observe(&msg.0);
        }
        let queued = {
            let mut inbox = lock(&self.shared.inbox);
            inbox.writes.push_back(msg.0);
            inbox.writes.len()
        };
        self.shared.metrics.buffered.inc();
        // Batching: a batch goes at once; the first write into an empty inbox arms one flush
        // after `flush_interval`, which takes whatever has come by then. No timer runs while
        // nothing is queued (an idle engine is not woken 50 times a second).
        if queued >= self.shared.config.batch_size {
            self.kick();
        } else if queued == 1 {
            if let Some(addr) = self.addr.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
                addr.do_send(KickSoon);
            }
        }
    }

    /// Resolves once every write queued before it is in the database. The error is that of an
    /// actor mailbox, kept so callers read like any actix request.
    pub fn send(
        &self,
        _: Flush,
    ) -> impl std::future::Future<Output = Result<(), MailboxError>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.shared.inbox).waiters.push(tx);
        self.kick();
        async move { rx.await.map_err(|_| MailboxError::Closed) }
    }

    /// Test-only fault hook: the next `times` write attempts make the recorder panic (a write
    /// that panics twice is poisoned). Ignored unless `calls.fault_injection` is on.
    pub fn inject_panic(&self, times: u32) {
        // Only where `calls.fault_injection` is on (never in production: config refuses it).
        if self.shared.config.fault_injection {
            self.shared.injected_panics.store(times, Ordering::SeqCst);
        } else {
            tracing::warn!("fault injection asked for but disabled; ignored");
        }
    }
}

/// Wakes the recorder: writes or flush waiters are in the inbox.
#[derive(Message)]
#[rtype(result = "()")]
struct Kick;

/// Writes are waiting below a batch: flush after the batching interval.
#[derive(Message)]
#[rtype(result = "()")]
struct KickSoon;

/// The backstop for a wake-up lost in a restart: the recorder looks at its queue this often even
/// when nobody kicks it. A restart kicks its successor itself, so only a write queued in the
/// moment between a panic and the successor's address waits this long; the timer is what an
/// idle engine pays for it (was 1 s: a fifth of this thread's idle wake-ups).
const HOUSEKEEPING: Duration = Duration::from_secs(5);

pub struct Recorder {
    handle: RecorderHandle,
    /// Where a successor starts after a panic.
    arbiter: ArbiterHandle,
    writing: bool,
    /// A retry is scheduled: the batching interval leaves the database alone until then.
    backing_off: bool,
    backoff: Duration,
    /// A batching flush is scheduled.
    flush_armed: bool,
}

impl Recorder {
    fn shared(&self) -> Arc<Shared> {
        self.handle.shared.clone()
    }

    /// Takes over the queue: adopts a spill file left by an earlier run (once per process), and
    /// settles a write its predecessor died applying.
    fn resume(&mut self) {
        let shared = self.shared();
        self.writing = false;
        self.backing_off = false;
        let mut state = lock(&shared.state);
        if !state.recovered {
            state.recovered = true;
            // Writes a crash left on disk go first, before anything this run records.
            match state.spill.recover() {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    writes = n,
                    "recorder: replaying writes spilled before a restart"
                ),
                Err(e) => tracing::error!(error = %e, "recorder: cannot read the spill file"),
            }
        }
        let poisoned = match state.queue.front_mut() {
            Some(front) if front.in_flight => {
                front.in_flight = false;
                front.interrupted += 1;
                if front.interrupted >= 2 {
                    true
                } else {
                    tracing::warn!("recorder: retrying once the write its predecessor died on");
                    false
                }
            }
            _ => false,
        };
        if poisoned {
            if let Some(front) = state.queue.pop_front() {
                tracing::error!(write = ?front.write, "recorder: a write made the recorder panic twice; giving it up (poisoned)");
                shared.metrics.poisoned.inc();
            }
        }
    }

    /// Queues a write: in memory while there is room and nothing older waits in the spill file,
    /// else at the end of the spill file (so order is kept).
    fn enqueue(shared: &Shared, state: &mut State, write: Write) {
        let config = &shared.config;
        if state.spill.pending() == 0 && state.queue.len() < config.buffer_max_writes {
            state.queue.push_back(Queued::new(write));
            return;
        }
        if state.spill.pending() == 0 {
            tracing::warn!(
                queued = state.queue.len(),
                file = %config.spill_path.display(),
                "recorder: memory buffer full, spilling writes to disk"
            );
        }
        match state.spill.append(&write) {
            Ok(()) => shared.metrics.spilled.inc(),
            Err(e) => {
                // Nowhere left to put it: keep it in memory rather than lose it.
                tracing::error!(error = %e, "recorder: spill file not writable; keeping the write in memory");
                state.queue.push_back(Queued::new(write));
            }
        }
    }

    /// Moves spilled writes back into memory, oldest first, as room frees up.
    fn refill(shared: &Shared, state: &mut State) {
        let room = shared
            .config
            .buffer_max_writes
            .saturating_sub(state.queue.len());
        if room == 0 || state.spill.pending() == 0 {
            return;
        }
        match state.spill.take::<Write>(room) {
            Ok(writes) => {
                shared.metrics.replayed.inc_by(writes.len() as u64);
                state.queue.extend(writes.into_iter().map(Queued::new));
            }
            Err(e) => tracing::error!(error = %e, "recorder: cannot read the spill file"),
        }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        let shared = self.shared();
        let n = {
            let (writes, waiters) = {
                let mut inbox = lock(&shared.inbox);
                (
                    std::mem::take(&mut inbox.writes),
                    std::mem::take(&mut inbox.waiters),
                )
            };
            let mut state = lock(&shared.state);
            state.waiters.extend(waiters);
            for write in writes {
                Self::enqueue(&shared, &mut state, write);
            }
            Self::refill(&shared, &mut state);
            let inbox_len = lock(&shared.inbox).writes.len();
            shared
                .metrics
                .buffered
                .set((state.queue.len() + inbox_len) as i64);
            shared
                .metrics
                .in_spill_file
                .set(state.spill.pending() as i64);
            if state.queue.is_empty() && state.spill.pending() == 0 && inbox_len == 0 {
                for w in state.waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            if self.writing || self.backing_off || state.queue.is_empty() {
                return;
            }
            state.queue.len().min(shared.config.batch_size)
        };
        self.writing = true;
        let fut = apply_batch(shared, n);
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.writing = false;
            match result {
                Ok(()) => {
                    act.backoff = Duration::from_millis(50);
                    act.kick(ctx);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recorder: write failed or database unavailable, retrying");
                    act.retry_later(ctx);
                }
            }
        }));
    }

    fn retry_later(&mut self, ctx: &mut Context<Self>) {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(self.handle.shared.config.retry_backoff_max);
        self.backing_off = true;
        ctx.run_later(delay, |act, ctx| {
            act.backing_off = false;
            act.kick(ctx);
        });
    }
}

/// Applies up to `n` writes from the front of the queue, each its own statement, popping each
/// once committed (so an actor that dies mid-batch leaves only the unwritten ones). Errs when
/// the database is away or a write failed (then retried after a backoff).
async fn apply_batch(shared: Arc<Shared>, n: usize) -> Result<(), StoreError> {
    let mut conn = shared.pool.get().await?;
    for _ in 0..n {
        let write = {
            let mut state = lock(&shared.state);
            match state.queue.front_mut() {
                Some(front) => {
                    front.in_flight = true;
                    front.write.clone()
                }
                None => return Ok(()),
            }
        };
        // The test-only fault hook (armed only with `calls.fault_injection` on).
        if shared
            .injected_panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("injected fault in the recorder");
        }
        let result = apply_one(&mut conn, &write).await;
        let mut state = lock(&shared.state);
        match result {
            Ok(()) => {
                state.queue.pop_front();
            }
            Err(error) => {
                let broken = matches!(
                    error,
                    StoreError::Query(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::ClosedConnection,
                        _
                    )) | StoreError::Pool(_)
                        | StoreError::Connection(_)
                );
                if let Some(front) = state.queue.front_mut() {
                    front.in_flight = false;
                    if !broken {
                        front.attempts += 1;
                        if front.attempts >= shared.config.max_attempts_per_write {
                            tracing::error!(write = ?front.write, error = %error, "recorder: giving up on a write");
                            shared.failed_writes.inc();
                            state.queue.pop_front();
                        }
                    }
                }
                return Err(error);
            }
        }
    }
    Ok(())
}

async fn apply_one(conn: &mut crate::store::DbConn, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::InsertCall(call) => calls::insert(conn, call).await,
        Write::UpdateCall {
            organization_id,
            call_id,
            changes,
        } => calls::update(conn, *organization_id, *call_id, changes).await,
        Write::InsertCallEvent(event) => events::insert_call_event(conn, event).await,
        Write::InsertUtterance(u) => utterances::insert(conn, u).await,
        Write::EnqueuePostCall {
            organization_id,
            call_id,
            traceparent,
        } => crate::learning::enqueue_post_call_traced(
            conn,
            *organization_id,
            *call_id,
            traceparent.as_deref(),
        )
        .await
        .map(|_| ()),
    }
}

impl Actor for Recorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.resume();
        ctx.run_interval(HOUSEKEEPING, |act, ctx| act.kick(ctx));
        self.kick(ctx);
    }
}

impl Supervised for Recorder {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!("recorder stopped; restarting it");
        // The old context's timers are gone with it.
        self.flush_armed = false;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // A panic unwinds past actix's `Supervisor`, which cannot restart the actor: the
        // successor is started here instead, with the same queue, on the same arbiter. Runs while
        // the panic unwinds: nothing here may panic or block. A drop at shutdown (arbiter
        // stopped) is not a panic and restarts nothing.
        if !std::thread::panicking() {
            return;
        }
        tracing::error!("recorder panicked; restarting it with its queue");
        self.handle.shared.metrics.restarts.inc();
        self.handle.start_actor(self.arbiter.clone());
    }
}

impl Handler<Kick> for Recorder {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut Self::Context) {
        self.kick(ctx);
    }
}

impl Handler<KickSoon> for Recorder {
    type Result = ();

    fn handle(&mut self, _: KickSoon, ctx: &mut Self::Context) {
        // Writes that arrive together go out together.
        if std::mem::replace(&mut self.flush_armed, true) {
            return;
        }
        let interval = self.handle.shared.config.flush_interval;
        ctx.run_later(interval, |act, ctx| {
            act.flush_armed = false;
            act.kick(ctx);
        });
    }
}
