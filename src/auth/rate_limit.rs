//! Fixed-window rate limits kept in Redis, shared by every instance: login per client IP and per
//! account, refresh per family. While Redis is away, an in-process limiter with the same windows
//! stands in, so limits still hold (per instance) instead of letting every attempt through.

use crate::auth::revocation::{connection, RedisFailure};
use crate::config::RateLimit;
use crate::store::RedisPool;
use deadpool_redis::redis;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Buckets the local limiter keeps before it forgets the expired ones.
const LOCAL_SWEEP_AT: usize = 10_000;

#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisPool,
    prefix: String,
    /// bucket → (window start, attempts): the stand-in while Redis is away.
    local: Arc<Mutex<HashMap<String, (Instant, u64)>>>,
}

impl RateLimiter {
    pub fn new(redis: RedisPool, key_prefix: &str) -> Self {
        Self {
            redis,
            prefix: format!("{key_prefix}:rl"),
            local: Arc::default(),
        }
    }

    /// Counts one attempt in this process only (Redis is away): same answer as [`hit`].
    ///
    /// [`hit`]: Self::hit
    pub fn hit_local(&self, bucket: &str, limit: RateLimit) -> Option<u64> {
        let now = Instant::now();
        let window = Duration::from_secs(limit.window_secs.max(1));
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if local.len() >= LOCAL_SWEEP_AT {
            local.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = local.entry(bucket.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        (entry.1 > limit.max).then(|| {
            let left = window.saturating_sub(now.duration_since(entry.0));
            left.as_secs().max(1)
        })
    }

    /// Counts one attempt against `bucket`. `Ok(Some(secs))`: over the limit, retry after
    /// `secs`. The window opens at the first attempt and the counter dies with it.
    pub async fn hit(&self, bucket: &str, limit: RateLimit) -> Result<Option<u64>, RedisFailure> {
        let key = format!("{}:{bucket}", self.prefix);
        let mut conn = connection(&self.redis).await?;
        // SET NX EX then INCR (which keeps the TTL), atomically: works on any Redis version.
        let (count, ttl): (u64, i64) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("EX")
            .arg(limit.window_secs)
            .arg("NX")
            .ignore()
            .cmd("INCR")
            .arg(&key)
            .cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| RedisFailure(e.to_string()))?;
        if count > limit.max {
            let retry = u64::try_from(ttl).unwrap_or(limit.window_secs).max(1);
            return Ok(Some(retry));
        }
        Ok(None)
    }
}
