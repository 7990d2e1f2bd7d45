//! Call leases in Redis: `{p}:cluster:call:{call_id}` holds the owning instance's id while the
//! call lives (set when its actor starts, renewed by the owner, deleted at its end, each change
//! conditional on still being the owner). `{p}:cluster:ccid:{call_control_id}` maps Telnyx's id
//! back to ours, so a webhook without our `client_state` still finds its owner.
//! `{p}:cluster:takeover:{call_id}` is claimed by the one instance that cleans an orphan up.

use super::directory::ClusterRedisError;
use crate::domain::call::CallId;
use crate::store::{KeptRedis, RedisPool};
use deadpool_redis::redis::{self, AsyncCommands};
use uuid::Uuid;

/// Renews the keys still held by the caller (`ARGV[1]`), each to `ARGV[2]` ms; returns how many.
const RENEW: &str = r#"
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    n = n + 1
  end
end
return n
"#;

/// Deletes the key only while it still names the caller (compare-and-delete).
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// How long a mapping from Telnyx's id to ours is kept: longer than any call.
const CONTROL_ID_TTL_SECS: u64 = 6 * 3600;
/// How long a take-over claim blocks other instances from the same clean-up.
const TAKEOVER_CLAIM_MS: u64 = 120_000;

#[derive(Clone)]
pub struct Leases {
    redis: RedisPool,
    /// The heartbeat's renewals' own connection: they run every few seconds while calls live.
    renewals: KeptRedis,
    prefix: String,
    ttl_ms: u64,
}

impl Leases {
    pub fn new(redis: RedisPool, key_prefix: &str, ttl_ms: u64) -> Self {
        Self {
            renewals: KeptRedis::new(redis.clone()),
            redis,
            prefix: format!("{key_prefix}:cluster"),
            ttl_ms,
        }
    }

    fn call_key(&self, id: CallId) -> String {
        format!("{}:call:{id}", self.prefix)
    }

    fn control_key(&self, ccid: &str) -> String {
        format!("{}:ccid:{ccid}", self.prefix)
    }

    fn takeover_key(&self, id: CallId) -> String {
        format!("{}:takeover:{id}", self.prefix)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, ClusterRedisError> {
        self.redis.get().await.map_err(ClusterRedisError::of)
    }

    /// Takes the lease of a new call for `me`. True when it is ours (newly or already).
    pub async fn acquire(&self, id: CallId, me: &str) -> Result<bool, ClusterRedisError> {
        let mut conn = self.conn().await?;
        let key = self.call_key(id);
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(me)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms)
            .query_async(&mut conn)
            .await
            .map_err(ClusterRedisError::of)?;
        if set.is_some() {
            return Ok(true);
        }
        let holder: Option<String> = conn.get(&key).await.map_err(ClusterRedisError::of)?;
        Ok(holder.as_deref() == Some(me))
    }

    /// Extends the leases `me` still holds among `ids`; returns how many were renewed.
    pub async fn renew(&self, ids: &[CallId], me: &str) -> Result<usize, ClusterRedisError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut eval = redis::cmd("EVAL");
        eval.arg(RENEW).arg(ids.len());
        for id in ids {
            eval.arg(self.call_key(*id));
        }
        eval.arg(me).arg(self.ttl_ms);
        // On the heartbeat's kept connection; a renewal may run twice (it only extends).
        let (renewed,) = self
            .renewals
            .query::<(usize,)>(redis::pipe().add_command(eval))
            .await
            .map_err(ClusterRedisError::of)?;
        Ok(renewed)
    }

    /// Gives the lease back at the call's end (only if `me` still holds it).
    pub async fn release(&self, id: CallId, me: &str) -> Result<bool, ClusterRedisError> {
        let mut conn = self.conn().await?;
        let deleted: i64 = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(self.call_key(id))
            .arg(me)
            .query_async(&mut conn)
            .await
            .map_err(ClusterRedisError::of)?;
        Ok(deleted == 1)
    }

    /// The instance holding the call's lease, if any.
    pub async fn owner(&self, id: CallId) -> Result<Option<String>, ClusterRedisError> {
        let mut conn = self.conn().await?;
        conn.get(self.call_key(id))
            .await
            .map_err(ClusterRedisError::of)
    }

    /// Remembers which call a Telnyx `call_control_id` belongs to.
    pub async fn bind_control_id(&self, ccid: &str, id: CallId) -> Result<(), ClusterRedisError> {
        let mut conn = self.conn().await?;
        conn.set_ex::<_, _, ()>(self.control_key(ccid), id.to_string(), CONTROL_ID_TTL_SECS)
            .await
            .map_err(ClusterRedisError::of)
    }

    /// Our call id for a Telnyx `call_control_id`.
    pub async fn call_for_control_id(
        &self,
        ccid: &str,
    ) -> Result<Option<CallId>, ClusterRedisError> {
        let mut conn = self.conn().await?;
        let raw: Option<String> = conn
            .get(self.control_key(ccid))
            .await
            .map_err(ClusterRedisError::of)?;
        Ok(raw.and_then(|r| Uuid::parse_str(&r).ok()).map(CallId))
    }

    /// Claims the clean-up of an orphaned call; true for exactly one claimant.
    pub async fn claim_takeover(&self, id: CallId, me: &str) -> Result<bool, ClusterRedisError> {
        let mut conn = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.takeover_key(id))
            .arg(me)
            .arg("NX")
            .arg("PX")
            .arg(TAKEOVER_CLAIM_MS)
            .query_async(&mut conn)
            .await
            .map_err(ClusterRedisError::of)?;
        Ok(set.is_some())
    }
}
