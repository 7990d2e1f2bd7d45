//! Fixed-window rate limits kept in Redis, shared by every instance: login per client IP and per
//! account, refresh per family.

use crate::auth::revocation::{connection, RedisFailure};
use crate::config::RateLimit;
use crate::store::RedisPool;
use deadpool_redis::redis;

#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisPool,
    prefix: String,
}

impl RateLimiter {
    pub fn new(redis: RedisPool, key_prefix: &str) -> Self {
        Self {
            redis,
            prefix: format!("{key_prefix}:rl"),
        }
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
