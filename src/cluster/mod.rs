//! Several IACE instances behaving as one engine. Each instance has an [`Identity`], writes a
//! heartbeat into the Redis [`Directory`], and holds a Redis [`lease`](Leases) on each call its
//! actors run (the owner). Requests for a call reach its owner (see `http::routing`); calls
//! whose owner died are ended by a survivor ([`takeover`]); admission control and draining
//! decide which instance takes a new call. No consensus of our own: Redis keys that expire, and
//! the platform's proxy.

pub mod cpu;
pub mod directory;
pub mod identity;
pub mod lease;
pub mod takeover;

pub use directory::{pick_peer, ClusterRedisError, Directory, InstanceInfo};
pub use identity::{Identity, Routing};
pub use lease::Leases;

use crate::config::{ClusterSettings, Settings};
use crate::domain::call::CallId;
use crate::store::RedisPool;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Header a forwarding instance adds, so the receiver never forwards the request again.
pub const FORWARDED_BY_HEADER: &str = "iace-forwarded-by";
/// Header Fly's proxy adds to a replayed request (`instance=…;region=…;t=…;state=…`).
pub const FLY_REPLAY_SRC_HEADER: &str = "fly-replay-src";
/// Response header asking Fly's proxy to replay the request elsewhere.
pub const FLY_REPLAY_HEADER: &str = "fly-replay";

/// The cluster as one instance sees it. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Identity,
    directory: Directory,
    leases: Leases,
    settings: ClusterSettings,
    /// `calls.max_live_per_instance` (0 = no limit).
    capacity: usize,
    /// `calls.max_cpu_percent` (0 = off) and the CPU use it is compared with.
    max_cpu_percent: u32,
    cpu: cpu::CpuSampler,
    /// Calls admitted and not yet ended on this instance.
    live: AtomicUsize,
    draining: AtomicBool,
    /// Set once this instance has left the directory: no more heartbeats.
    left: AtomicBool,
    /// Calls whose leases the heartbeat renews.
    owned: Mutex<HashSet<CallId>>,
}

impl Cluster {
    pub fn new(identity: Identity, redis: RedisPool, settings: &Settings) -> Self {
        let c = &settings.cluster;
        let prefix = &settings.redis.key_prefix;
        Self {
            inner: Arc::new(Inner {
                directory: Directory::new(redis.clone(), prefix, c.heartbeat_ttl_ms),
                leases: Leases::new(redis, prefix, c.lease_ttl_ms),
                identity,
                settings: c.clone(),
                capacity: settings.calls.max_live_per_instance,
                max_cpu_percent: settings.calls.max_cpu_percent,
                cpu: cpu::CpuSampler::default(),
                live: AtomicUsize::new(0),
                draining: AtomicBool::new(false),
                left: AtomicBool::new(false),
                owned: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.identity.id
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub fn routing(&self) -> Routing {
        self.inner.identity.routing
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.inner.settings
    }

    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    pub fn leases(&self) -> &Leases {
        &self.inner.leases
    }

    /// Calls admitted here and not yet ended.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Whether a new call would be admitted here now.
    pub fn has_room(&self) -> bool {
        !self.is_draining()
            && !self.cpu_hot()
            && (self.inner.capacity == 0 || self.live() < self.inner.capacity)
    }

    /// Above the CPU watermark (`calls.max_cpu_percent`) at the last heartbeat.
    pub fn cpu_hot(&self) -> bool {
        let max = self.inner.max_cpu_percent;
        max > 0 && self.inner.cpu.percent() >= max
    }

    /// Admission control: takes a slot for a new call, or refuses (draining, at capacity, or
    /// above the CPU watermark).
    /// Every admitted call gives its slot back through [`Cluster::call_ended`].
    pub fn try_admit(&self) -> bool {
        if self.is_draining() || self.cpu_hot() {
            return false;
        }
        let capacity = self.inner.capacity;
        self.inner
            .live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (capacity == 0 || n < capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a slot taken by [`Cluster::try_admit`] for a call that never started.
    pub fn release_slot(&self) {
        let _ = self
            .inner
            .live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// A call admitted by [`Cluster::try_admit`] started here: take its lease (renewed by the
    /// heartbeat from now on).
    pub fn call_started(&self, id: CallId) {
        self.owned().insert(id);
        let (leases, me) = (self.inner.leases.clone(), self.id().to_owned());
        actix::spawn(async move {
            match leases.acquire(id, &me).await {
                Ok(true) => {}
                Ok(false) => tracing::error!(call_id = %id, "call lease held by another instance"),
                Err(e) => tracing::warn!(call_id = %id, error = %e, "call lease not taken (Redis)"),
            }
        });
    }

    /// The call ended (or was given up before it started): its slot and lease are released.
    pub fn call_ended(&self, id: CallId) {
        self.release_slot();
        if self.owned().remove(&id) {
            let (leases, me) = (self.inner.leases.clone(), self.id().to_owned());
            actix::spawn(async move {
                if let Err(e) = leases.release(id, &me).await {
                    tracing::warn!(call_id = %id, error = %e, "call lease not released (expires)");
                }
            });
        }
    }

    /// Records which call a Telnyx id belongs to (for webhooks without our `client_state`).
    pub fn bind_control_id(&self, ccid: &str, id: CallId) {
        let (leases, ccid) = (self.inner.leases.clone(), ccid.to_owned());
        actix::spawn(async move {
            if let Err(e) = leases.bind_control_id(&ccid, id).await {
                tracing::warn!(call_id = %id, error = %e, "control id not recorded in Redis");
            }
        });
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, HashSet<CallId>> {
        self.inner.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Draining: no new calls (the directory says so at the next heartbeat, sent at once).
    pub async fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.beat().await;
    }

    /// This instance's directory entry as of now.
    pub fn info(&self) -> InstanceInfo {
        let id = &self.inner.identity;
        InstanceInfo {
            id: id.id.clone(),
            region: id.region.clone(),
            private_url: id.private_url.clone(),
            public_url: id.public_url.clone(),
            live_calls: self.live(),
            capacity: self.inner.capacity,
            draining: self.is_draining(),
            cpu_hot: self.cpu_hot(),
            beat_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// One heartbeat: the directory entry, and the leases of the calls live here.
    pub async fn beat(&self) {
        if self.inner.left.load(Ordering::SeqCst) {
            return;
        }
        if self.inner.max_cpu_percent > 0 {
            // Only the watermark reads it: without one, no `/proc` read each second.
            self.inner.cpu.sample();
        }
        if let Err(e) = self.inner.directory.beat(&self.info()).await {
            tracing::warn!(error = %e, "heartbeat not written");
        }
        let ids: Vec<CallId> = self.owned().iter().copied().collect();
        if let Err(e) = self.inner.leases.renew(&ids, self.id()).await {
            tracing::warn!(error = %e, "call leases not renewed");
        }
    }

    /// Beats every `heartbeat_interval_ms` until [`Cluster::leave`]. Runs on the caller's arbiter.
    pub fn start_heartbeat(&self) {
        let cluster = self.clone();
        let every = Duration::from_millis(self.inner.settings.heartbeat_interval_ms);
        let lease_every = Duration::from_millis(self.inner.settings.lease_renew_interval_ms);
        tracing::info!(
            instance_id = %self.id(),
            region = %self.identity().region,
            routing = self.routing().as_str(),
            private_url = %self.identity().private_url,
            "cluster: this instance"
        );
        actix::spawn(async move {
            // The first beat at once; then on the process grid, where the sweep (a multiple of
            // this period by default) shares the wake-up.
            while !cluster.inner.left.load(Ordering::SeqCst) {
                cluster.beat().await;
                crate::actors::timers::grid_tick(every.min(lease_every)).await;
            }
        });
    }

    /// Leaves the directory (end of a drain): peers stop sending anything here.
    pub async fn leave(&self) {
        self.inner.left.store(true, Ordering::SeqCst);
        if let Err(e) = self.inner.directory.leave(self.id()).await {
            tracing::warn!(error = %e, "directory entry not removed (it expires)");
        }
    }

    /// Another instance with room for a new call, if any (Redis errors count as none).
    pub async fn peer_with_room(&self) -> Option<InstanceInfo> {
        match self.inner.directory.list().await {
            Ok(all) => pick_peer(&all, self.id()).cloned(),
            Err(e) => {
                tracing::warn!(error = %e, "directory unreadable; no peer for a new call");
                None
            }
        }
    }
}

/// `client_state` we give Telnyx: the call id and its owner, so a webhook finds both even while
/// Redis is away.
pub fn client_state(id: CallId, owner: &str) -> String {
    format!("{id}@{owner}")
}

/// Reads a `client_state` written by [`client_state`] (or a bare call id, as older instances
/// wrote it).
pub fn parse_client_state(raw: &str) -> Option<(CallId, Option<String>)> {
    let raw = raw.trim();
    let (id, owner) = match raw.split_once('@') {
        Some((id, owner)) if !owner.is_empty() => (id, Some(owner.to_owned())),
        _ => (raw, None),
    };
    Uuid::parse_str(id).ok().map(|u| (CallId(u), owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_state_carries_the_call_and_its_owner() {
        let id = CallId::new();
        let raw = client_state(id, "148e21ea7d5389");
        assert_eq!(
            parse_client_state(&raw),
            Some((id, Some("148e21ea7d5389".to_owned())))
        );
        assert_eq!(parse_client_state(&id.to_string()), Some((id, None)));
        assert_eq!(parse_client_state("org-7"), None);
    }
}
