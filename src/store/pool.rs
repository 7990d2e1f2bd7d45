//! Connection pools: diesel-async over deadpool for Postgres, deadpool-redis for Redis. Both
//! speak TLS when their URL asks for it (`sslmode=require|verify-full`, `rediss://`).

use crate::config::{DatabaseSettings, RedisSettings};
use crate::store::tls::PgTransport;
use crate::store::StoreError;
use deadpool::managed::{Manager, Metrics, Object, Pool, QueueMode, RecycleError, RecycleResult};
use deadpool_redis::Runtime;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub type DbPool = Pool<PgManager>;
pub type DbConn = Object<PgManager>;
pub type RedisPool = deadpool_redis::Pool;

/// Builds the Postgres pool. Connections open lazily, so this succeeds with the database down
/// (readiness reports it instead). `session_sql`, when given, runs on every new connection
/// before first use (the engine's pattern-search settings, `store::patterns::session_settings`).
pub fn db_pool(
    settings: &DatabaseSettings,
    session_sql: Option<String>,
) -> Result<DbPool, StoreError> {
    let mut config = ManagerConfig::default();
    if !settings.verify_connections {
        config.recycling_method = RecyclingMethod::Fast;
    }
    let transport = PgTransport::from_url(settings.url.expose())?;
    let connect = transport.setup();
    if connect.is_some() || session_sql.is_some() {
        let connect = Arc::new(connect);
        let session_sql = Arc::new(session_sql);
        config.custom_setup = Box::new(move |url| {
            let (connect, session_sql, url) =
                (connect.clone(), session_sql.clone(), url.to_owned());
            async move {
                let mut conn = match connect.as_ref() {
                    Some(connect) => connect(&url).await?,
                    None => AsyncPgConnection::establish(&url).await?,
                };
                if let Some(sql) = session_sql.as_ref() {
                    // Not fatal: a server without these settings (pgvector before 0.8) still
                    // serves everything else, and searches fall back to pgvector's defaults.
                    if let Err(err) = conn.batch_execute(sql).await {
                        tracing::warn!(
                            error = %err,
                            "session settings not applied to a new database connection"
                        );
                    }
                }
                Ok(conn)
            }
            .boxed()
        });
    }
    tracing::debug!(?transport, "postgres pool transport");
    let manager = PgManager {
        inner: AsyncDieselConnectionManager::new_with_config(settings.url.expose(), config),
        trust_for: Duration::from_millis(settings.verify_idle_ms),
        verified: AtomicU64::new(0),
    };
    let timeout = Some(Duration::from_millis(settings.pool_timeout_ms));
    Pool::builder(manager)
        .max_size(settings.pool_max_size)
        // The most recently returned connection goes out first: a quiet engine keeps reusing
        // one warm connection (inside its trust window, so no `SELECT 1`) while the others
        // idle, instead of rotating through all of them.
        .queue_mode(QueueMode::Lifo)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))
}

/// The Postgres pool's manager: diesel-async's, except that a connection used within
/// `database.verify_idle_ms` is handed out without its `SELECT 1`. On a busy engine that query
/// was a round trip (and a wake-up) in front of nearly every statement. A connection whose
/// socket the server closed is still caught: tokio-postgres sees the end of the stream on its
/// own, and `is_broken` reads that (and a transaction left broken) without a round trip.
pub struct PgManager {
    inner: AsyncDieselConnectionManager<AsyncPgConnection>,
    /// Used more recently than this: not verified.
    trust_for: Duration,
    /// Checkouts handed to diesel-async's own check (`SELECT 1` when verification is on).
    verified: AtomicU64,
}

impl PgManager {
    /// Checkouts of this pool that went through diesel-async's check so far. Unlike the
    /// process-wide query histogram, it counts this pool's connections only.
    pub fn verified_checkouts(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }
}

impl Manager for PgManager {
    type Type = AsyncPgConnection;
    type Error = diesel_async::pooled_connection::PoolError;

    async fn create(&self) -> Result<AsyncPgConnection, Self::Error> {
        self.inner.create().await
    }

    async fn recycle(
        &self,
        conn: &mut AsyncPgConnection,
        metrics: &Metrics,
    ) -> RecycleResult<Self::Error> {
        if metrics.last_used() >= self.trust_for {
            self.verified.fetch_add(1, Ordering::Relaxed);
            return self.inner.recycle(conn, metrics).await;
        }
        if std::thread::panicking() || conn.is_broken() {
            return Err(RecycleError::message("broken connection"));
        }
        Ok(())
    }
}

/// Builds the Redis pool (lazy as well). `rediss://` checks the server against the webpki
/// roots, or against `redis.tls_ca_file` when one is set.
/// A Redis client for the settings' URL (TLS with `tls_ca_file` when one is set): the pool's
/// connection info, and the dedicated pub/sub connections of live views (`crate::http::live`).
pub fn redis_client(settings: &RedisSettings) -> Result<deadpool_redis::redis::Client, StoreError> {
    use deadpool_redis::redis;
    let redis_error = |e: redis::RedisError| StoreError::Redis(e.to_string());
    let url = settings.url.expose();
    if url.starts_with("rediss://") && !settings.tls_ca_file.is_empty() {
        let root_cert = std::fs::read(&settings.tls_ca_file).map_err(|e| {
            StoreError::Redis(format!("redis.tls_ca_file {}: {e}", settings.tls_ca_file))
        })?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        };
        redis::Client::build_with_tls(url, certificates).map_err(redis_error)
    } else {
        redis::Client::open(url).map_err(redis_error)
    }
}

pub fn redis_pool(settings: &RedisSettings) -> Result<RedisPool, StoreError> {
    let timeout = Some(Duration::from_millis(settings.pool_timeout_ms));
    let client = redis_client(settings)?;
    let manager = deadpool_redis::Manager::new(client.get_connection_info().clone())
        .map_err(|e| StoreError::Redis(e.to_string()))?;
    deadpool_redis::Pool::builder(manager)
        .max_size(settings.pool_max_size)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Redis(e.to_string()))
}
