//! Fixed-window rate limits kept in Redis, shared by every instance: login per client network
//! and (failures only) per account and network, refresh per family and per network. A client
//! network is an IPv4 address or an IPv6 /64: one subscriber gets a whole /64, so counting single
//! IPv6 addresses would let one client rotate through billions of them.

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
