//! Fixed-window rate limits kept in Redis, shared by every instance: login per client network
//! and (failures only) per account and network, refresh per family and per network. A client
//! network is an IPv4 address or an IPv6 /64: one subscriber gets a whole /64, so counting single
//! IPv6 addresses would let one client rotate through billions of them. While Redis is away, an
//! in-process limiter with the same windows stands in, so limits still hold (per instance)
//! instead of letting every attempt through.

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

    /// Whether `bucket` is full in this process's limiter (Redis is away), without counting:
    /// same answer as [`check`].
    ///
    /// [`check`]: Self::check
    pub fn check_local(&self, bucket: &str, limit: RateLimit) -> Option<u64> {
        let now = Instant::now();
        let window = Duration::from_secs(limit.window_secs.max(1));
        let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = local.get(bucket).copied()?;
        let left = window.saturating_sub(now.duration_since(start));
        (!left.is_zero() && count >= limit.max).then(|| left.as_secs().max(1))
    }

    /// Counts one attempt against `bucket`. `Ok(Some(secs))`: over the limit, retry after
    /// `secs`. The window opens at the first attempt and the counter dies with it.
    pub async fn hit(&self, bucket: &str, limit: RateLimit) -> Result<Option<u64>, RedisFailure> {
        let key = format!("{}:{bucket}", self.prefix);
        // SET NX EX then INCR (which keeps the TTL), atomically: works on any Redis version.
        let mut pipe = redis::pipe();
        pipe.atomic()
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
            .arg(&key);
        let (count, ttl): (u64, i64) = self.query(&pipe).await?;
        Ok(over(count, ttl, limit, limit.max))
    }

    /// Whether `bucket` is already full, without counting an attempt (`Ok(Some(secs))`: it is,
    /// retry after `secs`). For buckets that count only failures.
    pub async fn check(&self, bucket: &str, limit: RateLimit) -> Result<Option<u64>, RedisFailure> {
        let key = format!("{}:{bucket}", self.prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&key).cmd("TTL").arg(&key);
        let (count, ttl): (Option<u64>, i64) = self.query(&pipe).await?;
        Ok(over(
            count.unwrap_or(0),
            ttl,
            limit,
            limit.max.saturating_sub(1),
        ))
    }
}

impl RateLimiter {
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisFailure> {
        let mut conn = connection(&self.redis).await?;
        pipe.query_async(&mut conn)
            .await
            .map_err(|e| RedisFailure(e.to_string()))
    }
}

/// `Some(retry after)` when `count` is above `allowed`.
fn over(count: u64, ttl: i64, limit: RateLimit, allowed: u64) -> Option<u64> {
    (count > allowed).then(|| u64::try_from(ttl).unwrap_or(limit.window_secs).max(1))
}

/// The network a client address counts for: IPv4 (and IPv4-mapped IPv6) addresses as they are,
/// IPv6 addresses by their /64.
pub fn client_network(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::client_network;

    #[test]
    fn ipv6_addresses_count_by_their_64_and_ipv4_as_they_are() {
        let net = |s: &str| client_network(s.parse().unwrap());
        assert_eq!(net("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(net("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::/64");
        assert_ne!(net("2001:db8:1:3::1"), net("2001:db8:1:2::1"));
        assert_eq!(net("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(net("203.0.113.9"), "203.0.113.9");
    }
}
