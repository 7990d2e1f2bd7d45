//! The directory of instances in Redis: each instance writes its entry (id, region, URLs, live
//! calls, capacity, draining) every `heartbeat_interval_ms` with a time-to-live of
//! `heartbeat_ttl_ms`, so an entry that is gone means an instance that is gone.
//!
//! Keys (under `redis.key_prefix`): `{p}:cluster:instance:{id}` (JSON, expiring) and
//! `{p}:cluster:instances` (a set of ids, pruned of ids whose entry expired).

use crate::store::{KeptRedis, RedisPool};
use deadpool_redis::redis::{self, AsyncCommands};
use serde::{Deserialize, Serialize};

/// One instance's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub region: String,
    pub private_url: String,
    pub public_url: String,
    pub live_calls: usize,
    /// `calls.max_live_per_instance` (0 = no limit).
    pub capacity: usize,
    pub draining: bool,
    /// Above its CPU watermark (`calls.max_cpu_percent`) at this heartbeat. Absent in entries
    /// of instances that predate it: read as false.
    #[serde(default)]
    pub cpu_hot: bool,
    /// Unix milliseconds of the heartbeat that wrote this entry.
    pub beat_at_ms: i64,
}

impl InstanceInfo {
    /// Takes new calls: not draining, not above its CPU watermark, and below its capacity.
    pub fn has_room(&self) -> bool {
        !self.draining && !self.cpu_hot && (self.capacity == 0 || self.live_calls < self.capacity)
    }

    /// Share of its capacity in use (0 when unlimited), to pick the emptiest peer.
    fn load(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.live_calls as f64 / self.capacity as f64
        }
    }
}

/// A Redis failure in the cluster layer. Callers decide: routing falls back to the owner named
/// in the request, the sweeper waits for the next round.
#[derive(Debug, thiserror::Error)]
#[error("cluster redis: {0}")]
pub struct ClusterRedisError(pub String);

impl ClusterRedisError {
    pub(crate) fn of(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// Reads and writes the directory.
#[derive(Clone)]
pub struct Directory {
    redis: RedisPool,
    /// The heartbeat's own connection: it writes every second, idle or not.
    beats: KeptRedis,
    prefix: String,
    ttl_ms: u64,
}

impl Directory {
    pub fn new(redis: RedisPool, key_prefix: &str, ttl_ms: u64) -> Self {
        Self {
            beats: KeptRedis::new(redis.clone()),
            redis,
            prefix: format!("{key_prefix}:cluster"),
            ttl_ms,
        }
    }

    fn entry_key(&self, id: &str) -> String {
        format!("{}:instance:{id}", self.prefix)
    }

    fn set_key(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, ClusterRedisError> {
        self.redis.get().await.map_err(ClusterRedisError::of)
    }

    /// Writes this instance's entry (a heartbeat).
    pub async fn beat(&self, info: &InstanceInfo) -> Result<(), ClusterRedisError> {
        let json = serde_json::to_string(info).map_err(ClusterRedisError::of)?;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.entry_key(&info.id))
            .arg(json)
            .arg("PX")
            .arg(self.ttl_ms)
            .ignore()
            .sadd(self.set_key(), &info.id)
            .ignore();
        // Both writes may run twice (a lost connection's retry): they set, never add up.
        self.beats
            .query::<()>(&pipe)
            .await
            .map_err(ClusterRedisError::of)
    }

    /// Removes this instance's entry (at the very end of a drain).
    pub async fn leave(&self, id: &str) -> Result<(), ClusterRedisError> {
        let mut conn = self.conn().await?;
        redis::pipe()
            .del(self.entry_key(id))
            .ignore()
            .srem(self.set_key(), id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(ClusterRedisError::of)
    }

    /// The entry of `id`, or `None` when its heartbeat lapsed (or it never existed).
    pub async fn get(&self, id: &str) -> Result<Option<InstanceInfo>, ClusterRedisError> {
        let mut conn = self.conn().await?;
        let raw: Option<String> = conn
            .get(self.entry_key(id))
            .await
            .map_err(ClusterRedisError::of)?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Every instance with a live heartbeat. Ids whose entry expired are pruned from the set.
    pub async fn list(&self) -> Result<Vec<InstanceInfo>, ClusterRedisError> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn
            .smembers(self.set_key())
            .await
            .map_err(ClusterRedisError::of)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.entry_key(id)).collect();
        let raw: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(ClusterRedisError::of)?;
        let mut alive = Vec::new();
        let mut gone = Vec::new();
        for (id, entry) in ids.into_iter().zip(raw) {
            match entry.and_then(|r| serde_json::from_str::<InstanceInfo>(&r).ok()) {
                Some(info) => alive.push(info),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _: Result<(), _> = conn.srem(self.set_key(), gone).await;
        }
        Ok(alive)
    }
}

/// The peer that should take a new call: another instance with room, the least loaded first.
pub fn pick_peer<'a>(instances: &'a [InstanceInfo], me: &str) -> Option<&'a InstanceInfo> {
    instances
        .iter()
        .filter(|i| i.id != me && i.has_room())
        .min_by(|a, b| a.load().total_cmp(&b.load()).then(a.id.cmp(&b.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, live: usize, capacity: usize, draining: bool) -> InstanceInfo {
        InstanceInfo {
            id: id.into(),
            region: "local".into(),
            private_url: format!("http://{id}"),
            public_url: format!("http://{id}"),
            live_calls: live,
            capacity,
            draining,
            cpu_hot: false,
            beat_at_ms: 0,
        }
    }

    #[test]
    fn the_least_loaded_peer_with_room_is_picked_never_self() {
        let all = vec![
            instance("me", 0, 5, false),
            instance("full", 5, 5, false),
            instance("draining", 0, 5, true),
            instance("busy", 4, 5, false),
            instance("quiet", 1, 5, false),
        ];
        assert_eq!(pick_peer(&all, "me").map(|i| i.id.as_str()), Some("quiet"));
        let none = vec![instance("me", 0, 5, false), instance("full", 5, 5, false)];
        assert_eq!(pick_peer(&none, "me"), None);
    }

    #[test]
    fn an_unlimited_instance_always_has_room_unless_draining() {
        assert!(instance("a", 10_000, 0, false).has_room());
        assert!(!instance("a", 0, 0, true).has_room());
    }

    #[test]
    fn an_instance_above_its_cpu_watermark_has_no_room_and_old_entries_read_as_cool() {
        let hot = InstanceInfo {
            cpu_hot: true,
            ..instance("hot", 0, 5, false)
        };
        assert!(!hot.has_room());
        let mut old = serde_json::to_value(instance("old", 0, 5, false)).unwrap();
        old.as_object_mut().unwrap().remove("cpu_hot");
        let old: InstanceInfo = serde_json::from_value(old).unwrap();
        assert!(old.has_room());
    }
}
