//! The Redis side of revocation: denied access-token ids, denied sessions (refresh families),
//! and per-user "everything issued before this instant is dead" marks (logout-all, disable).
//! Entries expire with the longest-lived access token they could concern.

use crate::auth::tokens::Claims;
use crate::auth::AuthError;
use crate::store::RedisPool;
use deadpool_redis::redis;
use uuid::Uuid;

/// Why a user's earlier tokens were cut off; decides the error code their holders see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    Revoked,
    Disabled,
}

impl Cutoff {
    fn as_str(self) -> &'static str {
        match self {
            Cutoff::Revoked => "revoked",
            Cutoff::Disabled => "disabled",
        }
    }
}

/// A Redis failure; the caller decides whether to fail open or closed.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisFailure(pub String);

impl RedisFailure {
    fn of(err: impl std::fmt::Display) -> Self {
        RedisFailure(err.to_string())
    }
}

pub(crate) async fn connection(
    pool: &RedisPool,
) -> Result<deadpool_redis::Connection, RedisFailure> {
    pool.get().await.map_err(RedisFailure::of)
}

#[derive(Clone)]
pub struct Revocations {
    redis: RedisPool,
    prefix: String,
}

impl Revocations {
    pub fn new(redis: RedisPool, key_prefix: &str) -> Self {
        Self {
            redis,
            prefix: format!("{key_prefix}:auth"),
        }
    }

    fn jti_key(&self, jti: Uuid) -> String {
        format!("{}:deny:jti:{jti}", self.prefix)
    }
    fn session_key(&self, sid: Uuid) -> String {
        format!("{}:deny:sid:{sid}", self.prefix)
    }
    fn user_key(&self, user: Uuid) -> String {
        format!("{}:cutoff:user:{user}", self.prefix)
    }

    /// Denies one access token until `ttl_secs` from now (its remaining lifetime).
    pub async fn deny_token(&self, jti: Uuid, ttl_secs: u64) -> Result<(), RedisFailure> {
        self.set(self.jti_key(jti), "1".to_owned(), ttl_secs).await
    }

    /// Denies every access token of one session (refresh family).
    pub async fn deny_session(&self, sid: Uuid, ttl_secs: u64) -> Result<(), RedisFailure> {
        self.set(self.session_key(sid), "1".to_owned(), ttl_secs)
            .await
    }

    /// Kills every access token of `user` issued up to now.
    pub async fn cut_off_user(
        &self,
        user: Uuid,
        why: Cutoff,
        ttl_secs: u64,
    ) -> Result<(), RedisFailure> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let value = format!("{}:{now_ms}", why.as_str());
        self.set(self.user_key(user), value, ttl_secs).await
    }

    async fn set(&self, key: String, value: String, ttl_secs: u64) -> Result<(), RedisFailure> {
        let mut conn = connection(&self.redis).await?;
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async::<()>(&mut conn)
            .await
            .map_err(RedisFailure::of)
    }

    /// `Ok(Err(..))` when the token was revoked; `Err` when Redis could not answer.
    pub async fn check(&self, claims: &Claims) -> Result<Result<(), AuthError>, RedisFailure> {
        let mut conn = connection(&self.redis).await?;
        let (jti, sid, cutoff): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("MGET")
                .arg(self.jti_key(claims.jti))
                .arg(self.session_key(claims.sid))
                .arg(self.user_key(claims.sub))
                .query_async(&mut conn)
                .await
                .map_err(RedisFailure::of)?;
        if jti.is_some() || sid.is_some() {
            return Ok(Err(AuthError::TokenRevoked));
        }
        if let Some((why, at_ms)) = cutoff.as_deref().and_then(|v| v.split_once(':')) {
            let at_ms: i64 = at_ms.parse().unwrap_or(i64::MAX);
            if claims.issued_at_ms() <= at_ms {
                return Ok(Err(if why == Cutoff::Disabled.as_str() {
                    AuthError::UserDisabled
                } else {
                    AuthError::TokenRevoked
                }));
            }
        }
        Ok(Ok(()))
    }
}
