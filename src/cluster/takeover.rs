//! Ending calls whose actor is gone: the orphans of an instance whose heartbeat lapsed (reason
//! `instance_lost`), the calls a restarted instance left live under its own id, and calls whose
//! actor panicked (reason `internal_error`, from the registry shard), and live rows that never
//! had an owner (written before `owner_instance` existed) once they hold no lease and are older
//! than `cluster.ownerless_grace_secs`. Each Telnyx leg is hung up,
//! or transferred to the profile's human number when the caller was mid-conversation; the row
//! ends (only if still live, so two cleaners never both write), the decision goes into the
//! call's history and the post-call jobs are queued.

use super::Cluster;
use crate::domain::call::{outcome_for, CallId, CallState, Direction, EndReason, Outcome};
use crate::providers::telnyx::{CallControl, TelnyxError, TransferRequest};
use crate::store::calls::{CallChanges, CallRow};
use crate::store::events::{self, NewCallEvent};
use crate::store::{agents, ownership, DbPool, StoreError};
use chrono::Utc;
use diesel_async::AsyncConnection;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// What ends orphaned calls.
#[derive(Clone)]
pub struct Takeover {
    pub db: DbPool,
    pub telnyx: Arc<dyn CallControl + Send + Sync>,
    pub cluster: Cluster,
    /// Ended calls by reason, for `/metrics` (`iace_calls_taken_over_total{reason}`).
    pub taken_over: prometheus::IntCounterVec,
    /// The calls it ends count in `iace_calls_ended_total` too (no actor recorded their end).
    pub calls: crate::telemetry::calls::CallMetrics,
}

/// What was done to the Telnyx leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegAction {
    HungUp,
    Transferred,
    /// No Telnyx id yet (the call never reached Telnyx).
    Nothing,
}

impl LegAction {
    fn as_str(self) -> &'static str {
        match self {
            LegAction::HungUp => "hangup",
            LegAction::Transferred => "transfer",
            LegAction::Nothing => "none",
        }
    }
}

impl Takeover {
    /// Ends one call whose actor is gone. Returns false when the row had already ended.
    pub async fn end_call(&self, row: &CallRow, reason: EndReason) -> anyhow::Result<bool> {
        let state = CallState::parse(&row.status).unwrap_or(CallState::Ringing);
        if state == CallState::Ended {
            return Ok(false);
        }
        let action = self.end_leg(row, state).await;
        let direction = if row.direction == Direction::Outbound.as_str() {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        let outcome = match action {
            LegAction::Transferred => Outcome::Escalated,
            _ => outcome_for(direction, state, reason),
        };
        let ended_at = Utc::now();
        let duration_ms = row
            .answered_at
            .map(|a| (ended_at - a).num_milliseconds().max(0))
            .unwrap_or(0);
        let changes = CallChanges {
            status: Some(CallState::Ended.as_str().into()),
            outcome: Some(outcome.as_str().into()),
            end_reason: Some(reason.as_str().into()),
            ended_at: Some(ended_at),
            duration_ms: Some(duration_ms),
            ..Default::default()
        };
        let event = NewCallEvent {
            organization_id: row.organization_id,
            call_id: row.id,
            event_type: format!("engine.{}", reason.as_str()),
            telnyx_event_id: None,
            payload: serde_json::json!({
                "owner": row.owner_instance,
                "ended_by": self.cluster.id(),
                "leg": action.as_str(),
                "state": state.as_str(),
            }),
            occurred_at: ended_at,
        };
        let answered = row.answered_at.is_some();
        let (organization_id, call_id) = (row.organization_id, row.id);
        let mut conn = self.db.get().await?;
        // One transaction: whoever reads the call ended also finds why (its event) and its
        // learning job; an end that fails half-way leaves the row live for the next sweep.
        let ended = conn
            .transaction::<_, StoreError, _>(async |conn| {
                if !ownership::end_if_live(conn, organization_id, call_id, &changes).await? {
                    return Ok(false);
                }
                events::insert_call_event(conn, &event).await?;
                if answered {
                    crate::learning::enqueue_post_call(conn, organization_id, call_id).await?;
                }
                Ok(true)
            })
            .await?;
        if !ended {
            return Ok(false);
        }
        self.taken_over.with_label_values(&[reason.as_str()]).inc();
        self.calls.ended(
            outcome.as_str(),
            reason.as_str(),
            duration_ms,
            row.sentiment_avg,
        );
        tracing::info!(
            call_id = %row.id,
            owner = row.owner_instance.as_deref().unwrap_or(""),
            reason = reason.as_str(),
            leg = action.as_str(),
            "call ended for its lost actor"
        );
        Ok(true)
    }

    /// Hangs the leg up, or transfers it to a human when the caller was talking to the agent
    /// and the profile has an escalation number.
    async fn end_leg(&self, row: &CallRow, state: CallState) -> LegAction {
        let Some(ccid) = row.call_control_id.as_deref() else {
            return LegAction::Nothing;
        };
        let mid_conversation = matches!(state, CallState::Answered | CallState::Streaming);
        if mid_conversation {
            if let Some(to) = self.escalation_number(row).await {
                let req = TransferRequest {
                    to,
                    // Our own number as caller ID, whichever way the call went.
                    from: Direction::parse(&row.direction)
                        .map(|d| d.own_number(&row.from_number, &row.to_number).to_owned()),
                };
                match self.telnyx.transfer(ccid, req).await {
                    Ok(()) => return LegAction::Transferred,
                    Err(e) => {
                        tracing::warn!(call_id = %row.id, error = %e, "transfer of an orphan failed; hanging up")
                    }
                }
            }
        }
        match self.telnyx.hangup(ccid).await {
            Ok(()) | Err(TelnyxError::CallEnded) => {}
            Err(e) => tracing::warn!(call_id = %row.id, error = %e, "hangup of an orphan failed"),
        }
        LegAction::HungUp
    }

    async fn escalation_number(&self, row: &CallRow) -> Option<String> {
        let profile_id = row.agent_profile_id?;
        let mut conn = self.db.get().await.ok()?;
        agents::find(&mut conn, row.organization_id, profile_id)
            .await
            .ok()
            .flatten()
            .and_then(|p| p.row.escalation_number)
            .filter(|n| !n.trim().is_empty())
    }

    /// One sweep: the live calls of every instance whose heartbeat lapsed, and old ownerless
    /// ones, are claimed (one claimant per call) and ended. Returns how many this instance ended.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        // Both questions on one pooled connection: a sweep runs every couple of seconds on
        // every instance, idle or not, so each checkout (and its verification) counts.
        let grace = Duration::from_secs(self.cluster.settings().ownerless_grace_secs);
        let before = Utc::now() - chrono::Duration::from_std(grace)?;
        let (ownerless, elsewhere) = {
            let mut conn = self.db.get().await?;
            let ownerless = ownership::live_calls_without_owner(&mut conn, before).await;
            let elsewhere =
                ownership::live_calls_owned_elsewhere(&mut conn, self.cluster.id()).await;
            (ownerless, elsewhere)
        };
        let ownerless = match ownerless {
            Ok(rows) => self.end_ownerless(rows).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "ownerless sweep skipped");
                0
            }),
            Err(e) => {
                tracing::debug!(error = %e, "ownerless sweep skipped");
                0
            }
        };
        Ok(ownerless + self.end_lost_owners(elsewhere?).await?)
    }

    /// Live rows with no owner recorded (from before `owner_instance` existed), past the grace
    /// period: those with no lease naming an owner are ended, since nothing else ever will.
    async fn end_ownerless(&self, rows: Vec<CallRow>) -> anyhow::Result<usize> {
        let mut unleased = Vec::new();
        for row in rows {
            // A Redis that cannot answer proves nothing: the row waits for a later sweep.
            if self.cluster.leases().owner(CallId(row.id)).await?.is_none() {
                unleased.push(row);
            }
        }
        if unleased.is_empty() {
            return Ok(0);
        }
        tracing::warn!(
            calls = unleased.len(),
            "live calls without an owner past the grace period; ending them"
        );
        Ok(self.end_claimed(&unleased, EndReason::InstanceLost).await)
    }

    /// Of the live calls other instances own (`rows`), those whose owner's heartbeat lapsed.
    async fn end_lost_owners(&self, rows: Vec<CallRow>) -> anyhow::Result<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        // A directory that cannot be read proves nothing: skip the round.
        let alive: HashSet<String> = self
            .cluster
            .directory()
            .list()
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect();
        let mut by_owner: HashMap<String, Vec<CallRow>> = HashMap::new();
        for row in rows {
            if let Some(owner) = row.owner_instance.clone() {
                if !alive.contains(&owner) {
                    by_owner.entry(owner).or_default().push(row);
                }
            }
        }
        let mut ended = 0;
        for (owner, rows) in by_owner {
            tracing::warn!(owner = %owner, calls = rows.len(), "instance lost; taking its calls over");
            ended += self.end_claimed(&rows, EndReason::InstanceLost).await;
        }
        Ok(ended)
    }

    /// At start-up: calls left live under this instance's own id by an earlier run, i.e.
    /// created before `started` (the pass may run after this run's first calls began).
    pub async fn reconcile_own(&self, started: chrono::DateTime<Utc>) -> anyhow::Result<usize> {
        let rows = {
            let mut conn = self.db.get().await?;
            ownership::live_calls_owned_by(&mut conn, self.cluster.id(), started).await?
        };
        if !rows.is_empty() {
            tracing::warn!(
                calls = rows.len(),
                "calls left live by an earlier run of this instance"
            );
        }
        Ok(self.end_claimed(&rows, EndReason::InstanceLost).await)
    }

    async fn end_claimed(&self, rows: &[CallRow], reason: EndReason) -> usize {
        let mut ended = 0;
        for row in rows {
            let id = CallId(row.id);
            match self
                .cluster
                .leases()
                .claim_takeover(id, self.cluster.id())
                .await
            {
                Ok(true) => {}
                Ok(false) => continue, // another survivor has it
                Err(e) => {
                    tracing::warn!(call_id = %id, error = %e, "take-over claim failed (Redis)");
                    continue;
                }
            }
            match self.end_call(row, reason).await {
                Ok(true) => ended += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(call_id = %id, error = %e, "orphaned call not ended"),
            }
        }
        ended
    }

    /// A webhook reached this instance for a live call that no live instance runs (its owner's
    /// heartbeat lapsed): end it now rather than at the next sweep.
    pub async fn adopt_if_orphaned(&self, row: &CallRow) {
        let Some(owner) = row.owner_instance.as_deref() else {
            return;
        };
        if owner == self.cluster.id() {
            return; // ours, and not in the registry: its actor is ending right now
        }
        match self.cluster.directory().get(owner).await {
            Ok(None) => {
                self.end_claimed(std::slice::from_ref(row), EndReason::InstanceLost)
                    .await;
            }
            Ok(Some(_)) => {} // alive: the event was routed here on purpose (its copy is stored)
            Err(e) => tracing::debug!(error = %e, "owner liveness unknown; the sweeper decides"),
        }
    }

    /// A call actor of this instance was dropped without finishing (a panic): its leg is
    /// hung up (or transferred) and its row ended `internal_error`.
    pub async fn end_lost_actor(
        &self,
        id: CallId,
        organization_id: Option<uuid::Uuid>,
        control_id: Option<String>,
    ) {
        let row = match organization_id {
            Some(org) => match self.db.get().await {
                Ok(mut conn) => crate::store::calls::find(&mut conn, org, id.0)
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            },
            None => None,
        };
        match row {
            Some(row) => {
                if let Err(e) = self.end_call(&row, EndReason::InternalError).await {
                    tracing::error!(call_id = %id, error = %e, "lost call not ended");
                }
            }
            // No row (no tenant yet): only the Telnyx leg is left to end.
            None => {
                if let Some(ccid) = control_id {
                    if let Err(e) = self.telnyx.hangup(&ccid).await {
                        tracing::warn!(call_id = %id, error = %e, "hangup of a lost call failed");
                    }
                }
                self.taken_over
                    .with_label_values(&[EndReason::InternalError.as_str()])
                    .inc();
            }
        }
    }

    /// Reconciles once, then sweeps every `cluster.sweep_interval_ms` for as long as the
    /// arbiter runs.
    pub fn start(self) {
        let every = Duration::from_millis(self.cluster.settings().sweep_interval_ms);
        let started = Utc::now();
        actix::spawn(async move {
            if let Err(e) = self.reconcile_own(started).await {
                tracing::warn!(error = %e, "start-up reconcile failed; the sweeper retries");
            }
            // On the process grid: the heartbeat's ticks include these, so an idle instance
            // wakes once for both.
            loop {
                if let Err(e) = self.sweep().await {
                    tracing::debug!(error = %e, "orphan sweep skipped");
                }
                crate::actors::timers::grid_tick(every).await;
            }
        });
    }
}
