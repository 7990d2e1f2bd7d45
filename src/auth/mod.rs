//! Authentication and sessions: password login, EdDSA access tokens, rotating refresh-token
//! families, revocation (Postgres for refresh tokens, Redis for access tokens), the published
//! key set and rate limits. The `AuthUser` extractor that gives handlers the caller lives at the
//! HTTP edge (`http::extractor`); `AuthError`'s mapping to API codes lives in `error.rs`.

pub mod accounts;
pub mod keys;
pub mod media_token;
pub mod password;
pub mod rate_limit;
pub mod revocation;
pub mod tokens;

use crate::config::{Environment, RateLimit, Settings};
use crate::domain::Role;
use crate::store::refresh_tokens::{self, NewRefreshToken};
use crate::store::users::{self, User};
use crate::store::{DbPool, RedisPool, StoreError};
use crate::telemetry::metrics::Metrics;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use keys::KeySet;
use password::PasswordHasher;
use rate_limit::RateLimiter;
use revocation::{Cutoff, RedisFailure, Revocations};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokens::{Claims, Subject, TokenCodec};
use uuid::Uuid;

/// Errors of the auth layer; each maps to one stable API error code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    #[error("token expired")]
    TokenExpired,
    #[error("token revoked")]
    TokenRevoked,
    #[error("refresh token already used; the session is revoked")]
    RefreshTokenReused,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("user disabled")]
    UserDisabled,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("email already in use")]
    EmailTaken,
    #[error("{0}")]
    Validation(String),
    #[error("rate limited for {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Every password-hashing slot stayed busy for `auth.password_wait_ms`.
    #[error("too many logins at once, retry after {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] RedisFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<diesel::result::Error> for AuthError {
    fn from(err: diesel::result::Error) -> Self {
        AuthError::Store(err.into())
    }
}

/// A fresh token pair, as login and refresh return it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_in: i64,
    pub refresh_expires_in: i64,
    pub claims: Claims,
}

/// Changes an admin may make to a user of their organization.
#[derive(Debug, Default, Clone, Copy)]
pub struct UserChanges {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

/// Everything about sessions, behind one handle in `AppState`.
pub struct AuthService {
    codec: TokenCodec,
    passwords: PasswordHasher,
    revocations: Revocations,
    limiter: RateLimiter,
    db: DbPool,
    metrics: Arc<Metrics>,
    refresh_ttl_secs: i64,
    /// Longest an access token can outlive its `exp` check: revocation entries live this long.
    revocation_ttl_secs: u64,
    leeway_secs: u64,
    login_per_ip: RateLimit,
    login_per_account: RateLimit,
    refresh_per_family: RateLimit,
    refresh_per_ip: RateLimit,
    /// Slots for argon2 work: a burst of logins waits here instead of running hundreds of
    /// 19 MiB hashes at once (which starved every other request of CPU and memory).
    hash_slots: Arc<tokio::sync::Semaphore>,
    hash_wait: std::time::Duration,
    /// Rotated pairs kept in Redis for `refresh_grace_secs`, by the hash of the token rotated.
    replays: Replays,
    session_max_age_secs: i64,
}

/// The pair a refresh token was rotated into, kept briefly so that a client whose response was
/// lost can present the old token again and get the same pair (not a reuse alarm). Keyed by the
/// old token's hash: only its holder can ask. The value holds the new refresh token in clear for
/// those few seconds, in Redis only.
#[derive(Clone)]
struct Replays {
    redis: RedisPool,
    prefix: String,
    grace_secs: u64,
}

impl Replays {
    fn key(&self, old_hash: &[u8]) -> String {
        format!("{}:{}", self.prefix, hex(old_hash))
    }

    async fn remember(&self, old_hash: &[u8], issued: &IssuedTokens) -> Result<(), RedisFailure> {
        if self.grace_secs == 0 {
            return Ok(());
        }
        let json = serde_json::to_string(issued).map_err(|e| RedisFailure(e.to_string()))?;
        let mut conn = revocation::connection(&self.redis).await?;
        deadpool_redis::redis::cmd("SET")
            .arg(self.key(old_hash))
            .arg(json)
            .arg("EX")
            .arg(self.grace_secs)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| RedisFailure(e.to_string()))
    }

    async fn recall(&self, old_hash: &[u8]) -> Result<Option<IssuedTokens>, RedisFailure> {
        let mut conn = revocation::connection(&self.redis).await?;
        let raw: Option<String> = deadpool_redis::redis::cmd("GET")
            .arg(self.key(old_hash))
            .query_async(&mut conn)
            .await
            .map_err(|e| RedisFailure(e.to_string()))?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }
}

/// What a refresh attempt found, decided inside the transaction and acted on after it (a
/// revocation for reuse must commit even though the request fails).
enum RefreshOutcome {
    Rotated(Box<IssuedTokens>),
    /// Presented again within the grace after its rotation: answer what the rotation answered.
    Retried,
    Reused {
        family_id: Uuid,
    },
    Failed(AuthError),
}

impl AuthService {
    /// Builds the service. Without a configured signing key, development gets a random one
    /// (tokens then die with the process); other environments are refused by `Settings::validate`.
    pub fn new(
        settings: &Settings,
        db: DbPool,
        redis: RedisPool,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let auth = &settings.auth;
        let keys = if auth.signing_key.is_empty()
            && settings.environment == Environment::Development
        {
            tracing::warn!(
                kid = %auth.kid,
                "auth.signing_key is not configured: using a generated key (tokens stop working on restart)"
            );
            KeySet::generated(auth)?
        } else {
            KeySet::from_settings(auth)?
        };
        let codec = TokenCodec::new(
            keys,
            &auth.issuer,
            &auth.audience,
            auth.access_ttl_secs,
            auth.leeway_secs,
        );
        let prefix = &settings.redis.key_prefix;
        let slots = match auth.password_concurrency {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Ok(Self {
            codec,
            passwords: PasswordHasher::new(auth.password_memory_kib, auth.password_iterations)?,
            revocations: Revocations::new(redis.clone(), prefix),
            limiter: RateLimiter::new(redis.clone(), prefix),
            replays: Replays {
                redis,
                prefix: format!("{prefix}:refresh:replay"),
                grace_secs: auth.refresh_grace_secs,
            },
            hash_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            hash_wait: std::time::Duration::from_millis(auth.password_wait_ms),
            session_max_age_secs: i64::try_from(auth.session_max_age_secs).unwrap_or(i64::MAX),
            refresh_per_ip: auth.refresh_per_ip,
            db,
            metrics,
            refresh_ttl_secs: i64::try_from(auth.refresh_ttl_secs).unwrap_or(i64::MAX),
            revocation_ttl_secs: auth.access_ttl_secs.saturating_add(auth.leeway_secs),
            leeway_secs: auth.leeway_secs,
            login_per_ip: auth.login_per_ip,
            login_per_account: auth.login_per_account,
            refresh_per_family: auth.refresh_per_family,
        })
    }

    pub fn keys(&self) -> &KeySet {
        self.codec.keys()
    }

    pub fn passwords(&self) -> &PasswordHasher {
        &self.passwords
    }

    async fn conn(&self) -> Result<crate::store::DbConn, AuthError> {
        Ok(self.db.get().await.map_err(StoreError::from)?)
    }

    fn redis_failed(&self, operation: &str, err: &RedisFailure) {
        tracing::warn!(operation, error = %err, "auth: redis unavailable, continuing without it");
        self.metrics
            .auth_redis_failures
            .with_label_values(&[operation])
            .inc();
    }

    /// Counts an attempt; over the limit is an error. An unreachable Redis is logged and
    /// counted, and this process's own limiter decides instead (limits still hold).
    pub(crate) async fn limit(&self, bucket: &str, limit: RateLimit) -> Result<(), AuthError> {
        let over = match self.limiter.hit(bucket, limit).await {
            Ok(over) => over,
            Err(err) => {
                self.redis_failed("rate_limit", &err);
                self.limiter.hit_local(bucket, limit)
            }
        };
        verdict(over)
    }

    /// Whether a failures-only bucket is full, without counting; with Redis away, this
    /// process's own limiter decides.
    async fn check_limit(&self, bucket: &str, limit: RateLimit) -> Result<(), AuthError> {
        let over = match self.limiter.check(bucket, limit).await {
            Ok(over) => over,
            Err(err) => {
                self.redis_failed("rate_limit", &err);
                self.limiter.check_local(bucket, limit)
            }
        };
        verdict(over)
    }

    /// A slot to run argon2 in, waited for at most `password_wait_ms`.
    async fn hash_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AuthError> {
        let slot = tokio::time::timeout(self.hash_wait, self.hash_slots.clone().acquire_owned());
        match slot.await {
            Ok(Ok(permit)) => Ok(permit),
            // A closed semaphore (never closed today) is as good as a full one.
            Ok(Err(_)) | Err(_) => Err(AuthError::Overloaded {
                retry_after_secs: self.hash_wait.as_secs().max(1),
            }),
        }
    }

    fn count_login(&self, outcome: &str) {
        self.metrics.auth_logins.with_label_values(&[outcome]).inc();
    }

    /// Password login from `client_network` (see `rate_limit::client_network`). Unknown email
    /// and wrong password give the same error after the same amount of work (a verification
    /// against a dummy hash). Failures count against the account from that network only.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client_network: &str,
    ) -> Result<IssuedTokens, AuthError> {
        let email = email.trim().to_lowercase();
        // The account bucket is keyed by a hash: addresses do not sit in Redis in clear.
        let account = hex(&Sha256::digest(email.as_bytes()));
        let failures = format!("login:account:{account}:{client_network}");
        let limited = async {
            self.limit(&format!("login:ip:{client_network}"), self.login_per_ip)
                .await?;
            self.check_limit(&failures, self.login_per_account).await
        };
        if let Err(err) = limited.await {
            self.count_login("rate_limited");
            return Err(err);
        }
        let _slot = match self.hash_slot().await {
            Ok(slot) => slot,
            Err(err) => {
                self.count_login("overloaded");
                return Err(err);
            }
        };
        let user = if email.contains('\0') {
            // No account has one, and Postgres text cannot hold it (the query would fail).
            None
        } else {
            let mut conn = self.conn().await?;
            users::find_by_email(&mut conn, &email).await?
        };
        let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
        let matched = self
            .passwords
            .verify_off_thread(password.to_owned(), stored_hash)
            .await;
        let user = match user {
            Some(user) if matched => user,
            _ => {
                // Counted only now, and only for this network: the owner elsewhere is unaffected.
                // Over the limit or not, this attempt's answer stays "invalid credentials".
                let _ = self.limit(&failures, self.login_per_account).await;
                self.count_login("invalid_credentials");
                return Err(AuthError::InvalidCredentials);
            }
        };
        if user.is_disabled() {
            self.count_login("user_disabled");
            return Err(AuthError::UserDisabled);
        }
        let mut conn = self.conn().await?;
        let ends = chrono::Utc::now() + chrono::Duration::seconds(self.session_max_age_secs);
        let issued = self
            .start_session(&mut conn, &user, Uuid::now_v7(), ends)
            .await?;
        self.count_login("success");
        tracing::info!(user_id = %user.id, org_id = %user.organization_id, "login");
        Ok(issued)
    }

    /// Issues an access token and a new refresh token in family `family_id`; the refresh token
    /// lives `refresh_ttl_secs`, but never past `session_ends` (the family's absolute end).
    async fn start_session(
        &self,
        conn: &mut AsyncPgConnection,
        user: &User,
        family_id: Uuid,
        session_ends: chrono::DateTime<chrono::Utc>,
    ) -> Result<IssuedTokens, AuthError> {
        let refresh_token = tokens::new_refresh_token();
        let token_hash = tokens::hash_refresh_token(&refresh_token);
        let now = chrono::Utc::now();
        let expires_at = (now + chrono::Duration::seconds(self.refresh_ttl_secs)).min(session_ends);
        refresh_tokens::insert(
            conn,
            NewRefreshToken {
                id: Uuid::now_v7(),
                organization_id: user.organization_id,
                user_id: user.id,
                family_id,
                token_hash: &token_hash,
                expires_at,
            },
        )
        .await?;
        let (access_token, claims) = self.codec.issue(Subject {
            user_id: user.id,
            organization_id: user.organization_id,
            role: user.role,
            session_id: family_id,
        })?;
        Ok(IssuedTokens {
            access_token,
            refresh_token,
            access_expires_in: self.codec.ttl_secs(),
            refresh_expires_in: (expires_at - now).num_seconds().max(0),
            claims,
        })
    }

    /// Rotates a refresh token: the old one dies, a new pair comes back. Presenting a token
    /// that was already rotated means it was copied: the whole family is revoked, unless it
    /// comes back within `refresh_grace_secs` (a response lost on the way: the same pair is
    /// answered again).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client_network: &str,
    ) -> Result<IssuedTokens, AuthError> {
        self.limit(&format!("refresh:ip:{client_network}"), self.refresh_per_ip)
            .await?;
        let token_hash = tokens::hash_refresh_token(refresh_token);
        let mut conn = self.conn().await?;
        let outcome = conn
            .transaction::<_, AuthError, _>(async |conn| self.rotate(conn, &token_hash).await)
            .await?;
        match outcome {
            RefreshOutcome::Rotated(issued) => {
                if let Err(err) = self.replays.remember(&token_hash, &issued).await {
                    self.redis_failed("refresh_replay", &err);
                }
                Ok(*issued)
            }
            RefreshOutcome::Retried => match self.replays.recall(&token_hash).await {
                Ok(Some(issued)) => Ok(issued),
                // Nothing kept (Redis away): refused, but the session is not revoked for it.
                Ok(None) => Err(AuthError::InvalidToken("refresh token already rotated")),
                Err(err) => {
                    self.redis_failed("refresh_replay", &err);
                    Err(AuthError::InvalidToken("refresh token already rotated"))
                }
            },
            RefreshOutcome::Failed(err) => Err(err),
            RefreshOutcome::Reused { family_id } => {
                tracing::warn!(%family_id, "refresh token reused: session revoked");
                if let Err(err) = self
                    .revocations
                    .deny_session(family_id, self.revocation_ttl_secs)
                    .await
                {
                    self.redis_failed("revoke", &err);
                }
                Err(AuthError::RefreshTokenReused)
            }
        }
    }

    async fn rotate(
        &self,
        conn: &mut AsyncPgConnection,
        token_hash: &[u8],
    ) -> Result<RefreshOutcome, AuthError> {
        let Some(row) = refresh_tokens::find_by_hash_for_update(conn, token_hash).await? else {
            return Ok(RefreshOutcome::Failed(AuthError::InvalidToken(
                "unknown refresh token",
            )));
        };
        self.limit(
            &format!("refresh:family:{}", row.family_id),
            self.refresh_per_family,
        )
        .await?;
        let now = chrono::Utc::now();
        let grace = chrono::Duration::seconds(self.replays.grace_secs.try_into().unwrap_or(0));
        let just_rotated = row.rotated_at.is_some_and(|at| at + grace > now);
        if just_rotated && row.revoked_at.is_none() {
            return Ok(RefreshOutcome::Retried);
        }
        if row.rotated_at.is_some() {
            refresh_tokens::revoke_family(conn, row.organization_id, row.family_id).await?;
            return Ok(RefreshOutcome::Reused {
                family_id: row.family_id,
            });
        }
        if row.revoked_at.is_some() {
            return Ok(RefreshOutcome::Failed(AuthError::TokenRevoked));
        }
        if row.expires_at <= chrono::Utc::now() {
            return Ok(RefreshOutcome::Failed(AuthError::TokenExpired));
        }
        let user = users::find(conn, row.organization_id, row.user_id).await?;
        let Some(user) = user.filter(|u| !u.is_disabled()) else {
            refresh_tokens::revoke_family(conn, row.organization_id, row.family_id).await?;
            return Ok(RefreshOutcome::Failed(AuthError::UserDisabled));
        };
        let started =
            refresh_tokens::family_started(conn, row.organization_id, row.family_id).await?;
        let session_ends = started + chrono::Duration::seconds(self.session_max_age_secs);
        if session_ends <= now {
            refresh_tokens::revoke_family(conn, row.organization_id, row.family_id).await?;
            return Ok(RefreshOutcome::Failed(AuthError::TokenExpired));
        }
        refresh_tokens::mark_rotated(conn, row.organization_id, row.id).await?;
        let issued = self
            .start_session(conn, &user, row.family_id, session_ends)
            .await?;
        Ok(RefreshOutcome::Rotated(Box::new(issued)))
    }

    /// Verifies an access token and checks it against the deny lists. An unreachable Redis is
    /// logged and counted and the token accepted: it still expires within `access_ttl_secs`,
    /// and refresh tokens are checked in Postgres.
    pub async fn authenticate(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = self.codec.verify(token)?;
        match self.revocations.check(&claims).await {
            Ok(verdict) => verdict.map(|()| claims),
            Err(err) => {
                self.redis_failed("revocation_check", &err);
                Ok(claims)
            }
        }
    }

    /// Ends the session the access token belongs to: its refresh family and, at once, the
    /// access token itself.
    pub async fn logout(&self, claims: &Claims) -> Result<(), AuthError> {
        let mut conn = self.conn().await?;
        refresh_tokens::revoke_family(&mut conn, claims.org, claims.sid).await?;
        let remaining = claims.exp - chrono::Utc::now().timestamp();
        let ttl = u64::try_from(remaining)
            .unwrap_or(0)
            .saturating_add(self.leeway_secs);
        self.revocations.deny_token(claims.jti, ttl).await?;
        self.revocations
            .deny_session(claims.sid, self.revocation_ttl_secs)
            .await?;
        Ok(())
    }

    /// Ends every session of a user of `organization_id` (logout-all, or an admin's revoke).
    pub async fn revoke_all_sessions(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
    ) -> Result<(), AuthError> {
        let mut conn = self.conn().await?;
        if users::find(&mut conn, organization_id, user_id)
            .await?
            .is_none()
        {
            return Err(AuthError::NotFound("user"));
        }
        refresh_tokens::revoke_all_for_user(&mut conn, organization_id, user_id).await?;
        self.revocations
            .cut_off_user(user_id, Cutoff::Revoked, self.revocation_ttl_secs)
            .await?;
        Ok(())
    }

    /// Creates a user in the admin's organization. Without a password one is generated and
    /// returned (shown once, never stored in clear).
    pub async fn create_user(
        &self,
        organization_id: Uuid,
        email: &str,
        role: Role,
        password: Option<String>,
    ) -> Result<(User, Option<String>), AuthError> {
        let generated = password.is_none().then(password::generate_password);
        let password = password.or_else(|| generated.clone()).unwrap_or_default();
        let mut conn = self.conn().await?;
        let user = accounts::create_user(
            &mut conn,
            &self.passwords,
            organization_id,
            email,
            role,
            &password,
        )
        .await?;
        Ok((user, generated))
    }

    /// Changes a user's role and/or disabled state. Both end the user's current access tokens
    /// (their claims carry the old role); disabling also revokes every refresh token.
    pub async fn update_user(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        changes: UserChanges,
    ) -> Result<User, AuthError> {
        let mut conn = self.conn().await?;
        let (user, role_changed) = conn
            .transaction::<_, AuthError, _>(async |conn| {
                let mut user = users::find(conn, organization_id, user_id)
                    .await?
                    .ok_or(AuthError::NotFound("user"))?;
                let mut role_changed = false;
                if let Some(role) = changes.role.filter(|r| *r != user.role) {
                    user = users::set_role(conn, organization_id, user_id, role)
                        .await?
                        .ok_or(AuthError::NotFound("user"))?;
                    role_changed = true;
                }
                if let Some(disabled) = changes.disabled {
                    user = users::set_disabled(conn, organization_id, user_id, disabled)
                        .await?
                        .ok_or(AuthError::NotFound("user"))?;
                    if disabled {
                        refresh_tokens::revoke_all_for_user(conn, organization_id, user_id).await?;
                    }
                }
                Ok((user, role_changed))
            })
            .await?;
        let cutoff = if user.is_disabled() {
            Some(Cutoff::Disabled)
        } else if role_changed {
            Some(Cutoff::Revoked)
        } else {
            None
        };
        if let Some(why) = cutoff {
            self.revocations
                .cut_off_user(user_id, why, self.revocation_ttl_secs)
                .await?;
        }
        Ok(user)
    }

    pub async fn find_user(&self, organization_id: Uuid, user_id: Uuid) -> Result<User, AuthError> {
        let mut conn = self.conn().await?;
        users::find(&mut conn, organization_id, user_id)
            .await?
            .ok_or(AuthError::NotFound("user"))
    }

    pub async fn list_users(&self, organization_id: Uuid) -> Result<Vec<User>, AuthError> {
        let mut conn = self.conn().await?;
        Ok(users::list(&mut conn, organization_id).await?)
    }
}

/// A limiter's answer as the auth error it means.
fn verdict(over: Option<u64>) -> Result<(), AuthError> {
    match over {
        None => Ok(()),
        Some(retry_after_secs) => Err(AuthError::RateLimited { retry_after_secs }),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
