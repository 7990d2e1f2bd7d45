//! `CallRegistry`: the table of live calls, split into shards (one actor on its own arbiter
//! each) keyed by call id. Shards are the only writers of the table; webhooks, API commands and
//! media sockets reach a call only through here. A shard is supervised: stopped, actix's
//! `Supervisor` restarts it; panicked, a fresh shard takes its place on the same arbiter with
//! the same call table, which lives outside the actor for that reason.

use crate::actors::call::messages::{CommandError, Drain, HangUp, TelnyxEventReceived, Transfer};
use crate::actors::call::{Call, CallDeps, Origin};
use crate::actors::recorder::Flush;
use crate::cluster::takeover::Takeover;
use crate::domain::call::CallId;
use crate::providers::telnyx::{RejectCause, TelnyxEventKind, WebhookEvent};
use crate::store::{calls, events, DbPool};
use actix::prelude::*;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use uuid::Uuid;

/// Cloneable handle to every shard. Cheap to pass around (HTTP handlers, calls).
#[derive(Clone)]
pub struct CallRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    /// One address per shard; a panicked shard's entry is replaced by its successor's.
    shards: RwLock<Vec<Addr<RegistryShard>>>,
    arbiters: Vec<Arbiter>,
    /// Telnyx `call_control_id` → our id. Written only on the shards' threads (a shard binds an
    /// inbound call's id as it starts it, a call binds the id its dial returned, a call unbinds
    /// as it ends); read by webhook routing on the HTTP threads.
    control_ids: RwLock<HashMap<String, CallId>>,
    db: DbPool,
    /// Ends calls whose actor is gone, and knows this instance's place in the cluster.
    takeover: Takeover,
    /// New calls refused by admission control.
    refused: prometheus::IntCounterVec,
    /// Shards restarted after a panic, since start.
    shard_restarts: AtomicUsize,
}

impl CallRegistry {
    /// Starts `shards` registry shards, each on its own arbiter (thread). Call actors live on
    /// their shard's arbiter. `make_deps` builds the dependencies each call receives.
    pub fn start(
        shards: usize,
        db: DbPool,
        takeover: Takeover,
        refused: prometheus::IntCounterVec,
        make_deps: impl Fn(CallRegistry) -> CallDeps,
    ) -> CallRegistry {
        let shards = shards.max(1);
        let arbiters: Vec<Arbiter> = (0..shards)
            .map(|i| crate::actors::threads::named_arbiter(&format!("iace-shard-{i}")))
            .collect();
        let registry = CallRegistry {
            inner: Arc::new(Inner {
                shards: RwLock::new(Vec::new()),
                arbiters,
                control_ids: RwLock::new(HashMap::new()),
                db,
                takeover,
                refused,
                shard_restarts: AtomicUsize::new(0),
            }),
        };
        let deps = make_deps(registry.clone());
        let addrs = registry
            .inner
            .arbiters
            .iter()
            .enumerate()
            .map(|(index, arbiter)| {
                RegistryShard::supervised(
                    index,
                    arbiter.handle(),
                    CallTable::default(),
                    deps.clone(),
                )
            })
            .collect();
        *registry.shards_mut() = addrs;
        registry
    }

    fn shards_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Addr<RegistryShard>>> {
        self.inner.shards.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every shard's address, as of now.
    fn shards(&self) -> Vec<Addr<RegistryShard>> {
        self.inner
            .shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn shard(&self, id: CallId) -> Option<Addr<RegistryShard>> {
        let shards = self.inner.shards.read().unwrap_or_else(|e| e.into_inner());
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        let n = (shards.len() as u64).max(1);
        shards
            .get(usize::try_from(h.finish() % n).unwrap_or(0))
            .cloned()
    }

    /// How many shards were restarted after a panic since start.
    pub fn shard_restarts(&self) -> usize {
        self.inner.shard_restarts.load(Ordering::SeqCst)
    }

    /// Test-only fault hook: makes the shard holding `id` panic, so its restart can be seen.
    /// Ignored unless `calls.fault_injection` is on.
    pub fn inject_shard_panic(&self, id: CallId) {
        if let Some(shard) = self.shard(id) {
            shard.do_send(InjectShardPanic);
        }
    }

    /// The live call here with this Telnyx call control id.
    pub fn lookup_control_id(&self, ccid: &str) -> Option<CallId> {
        self.inner
            .control_ids
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(ccid)
            .copied()
    }

    /// Called on a shard's thread: by the shard starting an inbound call, or by the call that
    /// learned its Telnyx id from its dial.
    pub fn bind_control_id(&self, ccid: &str, id: CallId) {
        self.bind_locally(ccid, id);
        self.inner.takeover.cluster.bind_control_id(ccid, id);
    }

    fn bind_locally(&self, ccid: &str, id: CallId) {
        self.inner
            .control_ids
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ccid.to_owned(), id);
    }

    /// Whether a live call of this instance has this Telnyx id.
    pub fn knows_control_id(&self, ccid: &str) -> bool {
        self.lookup_control_id(ccid).is_some()
    }

    /// A new inbound call that admission control refused: Telnyx hears `USER_BUSY` (the caller
    /// gets a busy signal) and no call row is made; the webhook inbox keeps the event.
    fn refuse_busy(&self, event: WebhookEvent) {
        self.inner.refused.with_label_values(&["inbound"]).inc();
        let Some(ccid) = event.payload.call_control_id.clone() else {
            return;
        };
        tracing::warn!(call_control_id = %ccid, "every instance full or draining: refusing the call (USER_BUSY)");
        let telnyx = self.inner.takeover.telnyx.clone();
        // In the webhook's trace.
        actix::spawn(crate::telemetry::otlp::in_current_trace(async move {
            if let Err(e) = telnyx.reject(&ccid, RejectCause::UserBusy).await {
                tracing::warn!(error = %e, "USER_BUSY reject failed");
            }
        }));
    }

    /// Routes a stored, deduplicated webhook to its call. Never waits for the call.
    pub fn route_webhook(&self, event: WebhookEvent) {
        let by_state = event
            .payload
            .client_state_decoded()
            .and_then(|s| crate::cluster::parse_client_state(&s))
            .map(|(id, _owner)| id);
        let by_ccid = event
            .payload
            .call_control_id
            .as_deref()
            .and_then(|c| self.lookup_control_id(c));
        let target = by_ccid.or(by_state);
        let is_new_inbound =
            event.kind() == TelnyxEventKind::CallInitiated && event.payload.is_incoming();
        match (target, is_new_inbound) {
            (Some(id), _) => {
                if let Some(shard) = self.shard(id) {
                    shard.do_send(RouteToCall { id, event });
                }
            }
            (None, true) => {
                if !self.inner.takeover.cluster.try_admit() {
                    return self.refuse_busy(event);
                }
                // The shard binds the control id as it starts the call. The call's next webhook
                // comes over another request, after a database write, by which time the shard
                // has long started it; after our answer every event carries our id in
                // `client_state` as well.
                let id = CallId::new();
                if let Some(shard) = self.shard(id) {
                    shard.do_send(StartCall {
                        id,
                        from: event.payload.from.clone().unwrap_or_default(),
                        to: event.payload.to.clone().unwrap_or_default(),
                        origin: Origin::Inbound {
                            event: Box::new(event),
                        },
                        // The `call.initiated` request's span: the call joins its trace.
                        trace_parent: crate::telemetry::otlp::current_context(),
                    });
                }
            }
            (None, false) => self.unknown_call_event(event),
        }
    }

    /// A webhook for no live call here: a late event of a call that already ended (attached
    /// to its history) or one we never knew (kept in the inbox only).
    fn unknown_call_event(&self, event: WebhookEvent) {
        let db = self.inner.db.clone();
        let takeover = self.inner.takeover.clone();
        // In the webhook's trace (an adoption's Telnyx commands included).
        actix::spawn(crate::telemetry::otlp::in_current_trace(async move {
            let Some(ccid) = event.payload.call_control_id.clone() else {
                tracing::info!(event_type = %event.event_type, "webhook without a call id, stored only");
                return;
            };
            let Ok(mut conn) = db.get().await else { return };
            match calls::find_by_control_id(&mut conn, &ccid).await {
                Ok(Some(call)) => {
                    let record = events::NewCallEvent {
                        organization_id: call.organization_id,
                        call_id: call.id,
                        event_type: event.event_type.clone(),
                        telnyx_event_id: Some(event.id.clone()),
                        payload: serde_json::to_value(&event.payload).unwrap_or_default(),
                        occurred_at: event.occurred_at.unwrap_or_else(chrono::Utc::now),
                    };
                    if let Err(e) = events::insert_call_event(&mut conn, &record).await {
                        tracing::warn!(error = %e, "could not attach a late event to its call");
                    }
                    tracing::info!(call_id = %call.id, event_type = %event.event_type, "event for a call not live here");
                    // A live row whose owner is gone: this instance handles it now.
                    if call.status != crate::domain::call::CallState::Ended.as_str() {
                        takeover.adopt_if_orphaned(&call).await;
                    }
                }
                Ok(None) => {
                    tracing::warn!(event_type = %event.event_type, "webhook for an unknown call, stored only")
                }
                Err(e) => tracing::warn!(error = %e, "lookup of an unknown call failed"),
            }
        }));
    }

    /// Creates an outbound call actor for a call row the API already wrote; it dials at once.
    pub fn start_outbound(
        &self,
        id: CallId,
        organization_id: Uuid,
        agent_profile_id: Uuid,
        from: String,
        to: String,
    ) {
        if let Some(shard) = self.shard(id) {
            shard.do_send(StartCall {
                id,
                from,
                to,
                origin: Origin::Outbound {
                    organization_id,
                    agent_profile_id,
                },
                // The `POST /api/v1/calls` request's span: the call joins its trace.
                trace_parent: crate::telemetry::otlp::current_context(),
            });
        }
    }

    pub async fn hang_up(&self, organization_id: Uuid, id: CallId) -> Result<(), CommandError> {
        let call = self.find(id).await?;
        call.send(HangUp { organization_id }).await?
    }

    pub async fn transfer(
        &self,
        organization_id: Uuid,
        id: CallId,
        to: String,
    ) -> Result<(), CommandError> {
        let call = self.find(id).await?;
        call.send(Transfer {
            organization_id,
            to,
        })
        .await?
    }

    /// A live call's snapshot (state, stage), if this instance holds it.
    pub async fn snapshot(
        &self,
        id: CallId,
    ) -> Option<crate::actors::call::messages::CallSnapshot> {
        let call = self.find(id).await.ok()?;
        call.send(crate::actors::call::messages::GetSnapshot)
            .await
            .ok()
    }

    /// The live call's address, if this instance holds it.
    pub async fn find(&self, id: CallId) -> Result<Addr<Call>, CommandError> {
        let shard = self.shard(id).ok_or(CommandError::NotFound)?;
        shard
            .send(FindCall(id))
            .await?
            .ok_or(CommandError::NotFound)
    }

    /// How many calls are live on this instance.
    pub async fn live_count(&self) -> usize {
        let mut total = 0;
        for shard in self.shards() {
            total += shard.send(CountCalls).await.unwrap_or(0);
        }
        total
    }

    /// The ids of the calls live on this instance.
    pub async fn live_ids(&self) -> Vec<CallId> {
        let mut ids = Vec::new();
        for shard in self.shards() {
            ids.extend(shard.send(ListCalls).await.unwrap_or_default());
        }
        ids
    }

    /// Called by a call as it stops.
    pub fn call_ended(&self, ended: CallEnded) {
        self.forget_control_id(ended.control_id.as_deref());
        self.inner.takeover.cluster.call_ended(ended.call_id);
        if let Some(shard) = self.shard(ended.call_id) {
            shard.do_send(ended);
        }
    }

    /// Called from a call actor dropped without finishing (a panic): its shard ends the call.
    pub fn call_lost(&self, lost: CallLost) {
        self.forget_control_id(lost.control_id.as_deref());
        self.inner.takeover.cluster.call_ended(lost.call_id);
        if let Some(shard) = self.shard(lost.call_id) {
            shard.do_send(lost);
        }
    }

    fn forget_control_id(&self, ccid: Option<&str>) {
        if let Some(ccid) = ccid {
            self.inner
                .control_ids
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(ccid);
        }
    }

    /// Asks every live call to end politely (goodbye line, hangup): a drain's deadline came.
    pub fn drain_all(&self) {
        for shard in self.shards() {
            shard.do_send(DrainCalls);
        }
    }

    /// Stops the shards' arbiters (and the calls on them). For shutdown and tests.
    pub fn stop(&self) {
        for arbiter in &self.inner.arbiters {
            arbiter.stop();
        }
    }
}

/// One shard's table of live calls. Kept outside the shard actor so that a shard that panics
/// hands it to its successor whole (a lock poisoned by the panic is taken over as it is: every
/// write to the table is a single insert or remove).
#[derive(Clone, Default)]
struct CallTable(Arc<Mutex<HashMap<CallId, Addr<Call>>>>);

impl CallTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<CallId, Addr<Call>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One shard: the live calls whose id hashes to it.
pub struct RegistryShard {
    index: usize,
    calls: CallTable,
    deps: CallDeps,
    /// The arbiter it runs on (and its calls), where a successor starts after a panic.
    arbiter: ArbiterHandle,
}

impl RegistryShard {
    /// Starts shard `index` on `arbiter` under actix's `Supervisor` (restarted if it stops).
    fn supervised(
        index: usize,
        arbiter: ArbiterHandle,
        calls: CallTable,
        deps: CallDeps,
    ) -> Addr<RegistryShard> {
        let handle = arbiter.clone();
        Supervisor::start_in_arbiter(&handle, move |_| RegistryShard {
            index,
            calls,
            deps,
            arbiter,
        })
    }
}

impl Actor for RegistryShard {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Self::Context) {
        tracing::debug!(shard = self.index, "registry shard started");
    }
}

impl Supervised for RegistryShard {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(shard = self.index, "registry shard stopped; restarting it");
    }
}

impl Drop for RegistryShard {
    fn drop(&mut self) {
        // A panic in a handler unwinds past actix's `Supervisor`, which cannot restart the
        // actor: the successor is started here instead, with the same table, on the same
        // arbiter. Runs while the panic unwinds: nothing here may panic or block. A drop at
        // shutdown (arbiter stopped) is not a panic and restarts nothing.
        if !std::thread::panicking() {
            return;
        }
        tracing::error!(
            shard = self.index,
            calls = self.calls.lock().len(),
            "registry shard panicked; restarting it with its call table (messages queued to it are lost)"
        );
        let successor = RegistryShard::supervised(
            self.index,
            self.arbiter.clone(),
            self.calls.clone(),
            self.deps.clone(),
        );
        let registry = &self.deps.registry;
        if let Some(slot) = registry.shards_mut().get_mut(self.index) {
            *slot = successor;
        }
        registry.inner.shard_restarts.fetch_add(1, Ordering::SeqCst);
    }
}

/// The test-only fault hook of a shard (see [`CallRegistry::inject_shard_panic`]).
#[derive(Message)]
#[rtype(result = "()")]
struct InjectShardPanic;

impl Handler<InjectShardPanic> for RegistryShard {
    type Result = ();
    fn handle(&mut self, _: InjectShardPanic, _: &mut Self::Context) {
        // Only where `calls.fault_injection` is on (never in production: config refuses it).
        if self.deps.settings.fault_injection {
            panic!("injected fault in registry shard {}", self.index);
        }
        tracing::warn!(
            shard = self.index,
            "fault injection asked for but disabled; ignored"
        );
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct StartCall {
    id: CallId,
    from: String,
    to: String,
    origin: Origin,
    /// The span of the request that created the call (its `call` span's parent).
    trace_parent: Option<crate::telemetry::trace_context::TraceContext>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct RouteToCall {
    id: CallId,
    event: WebhookEvent,
}

#[derive(Message)]
#[rtype(result = "Option<Addr<Call>>")]
struct FindCall(CallId);

#[derive(Message)]
#[rtype(result = "usize")]
struct CountCalls;

#[derive(Message)]
#[rtype(result = "Vec<CallId>")]
struct ListCalls;

/// A call stopped; forget it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CallEnded {
    pub call_id: CallId,
    pub control_id: Option<String>,
}

/// A call actor was dropped without finishing (see `Call`'s `Drop`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CallLost {
    pub call_id: CallId,
    pub organization_id: Option<Uuid>,
    pub control_id: Option<String>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct DrainCalls;

impl Handler<StartCall> for RegistryShard {
    type Result = ();
    fn handle(&mut self, msg: StartCall, _: &mut Self::Context) {
        if self.calls.lock().contains_key(&msg.id) {
            // Admitted twice for one call: give the second slot back.
            self.deps.cluster.release_slot();
            return;
        }
        if let Origin::Inbound { event } = &msg.origin {
            if let Some(ccid) = &event.payload.call_control_id {
                self.deps.registry.bind_control_id(ccid, msg.id);
            }
        }
        let direction = match &msg.origin {
            Origin::Inbound { .. } => "inbound",
            Origin::Outbound { .. } => "outbound",
        };
        self.deps.call_metrics.started(direction);
        let call = Call::new(
            msg.id,
            msg.from,
            msg.to,
            msg.origin,
            msg.trace_parent,
            self.deps.clone(),
        )
        .start_traced();
        self.calls.lock().insert(msg.id, call);
        self.deps.cluster.call_started(msg.id);
    }
}

impl Handler<CallLost> for RegistryShard {
    type Result = ();
    fn handle(&mut self, msg: CallLost, _: &mut Self::Context) {
        self.calls.lock().remove(&msg.call_id);
        let (recorder, takeover) = (
            self.deps.recorder.clone(),
            self.deps.registry.inner.takeover.clone(),
        );
        actix::spawn(async move {
            // The lost call's queued writes land first, so its end is the last word.
            let _ = recorder.send(Flush).await;
            takeover
                .end_lost_actor(msg.call_id, msg.organization_id, msg.control_id)
                .await;
        });
    }
}

impl Handler<DrainCalls> for RegistryShard {
    type Result = ();
    fn handle(&mut self, _: DrainCalls, _: &mut Self::Context) {
        for call in self.calls.lock().values() {
            call.do_send(Drain);
        }
    }
}

impl Handler<RouteToCall> for RegistryShard {
    type Result = ();
    fn handle(&mut self, msg: RouteToCall, _: &mut Self::Context) {
        let call = self.calls.lock().get(&msg.id).cloned();
        match call {
            Some(call) => call.do_send(TelnyxEventReceived(msg.event)),
            None => self.deps.registry.unknown_call_event(msg.event),
        }
    }
}

impl Handler<FindCall> for RegistryShard {
    type Result = Option<Addr<Call>>;
    fn handle(&mut self, msg: FindCall, _: &mut Self::Context) -> Self::Result {
        self.calls
            .lock()
            .get(&msg.0)
            .filter(|a| a.connected())
            .cloned()
    }
}

impl Handler<CountCalls> for RegistryShard {
    type Result = usize;
    fn handle(&mut self, _: CountCalls, _: &mut Self::Context) -> usize {
        self.calls.lock().len()
    }
}

impl Handler<ListCalls> for RegistryShard {
    type Result = Vec<CallId>;
    fn handle(&mut self, _: ListCalls, _: &mut Self::Context) -> Vec<CallId> {
        self.calls.lock().keys().copied().collect()
    }
}

impl Handler<CallEnded> for RegistryShard {
    type Result = ();
    fn handle(&mut self, msg: CallEnded, _: &mut Self::Context) {
        self.calls.lock().remove(&msg.call_id);
    }
}
