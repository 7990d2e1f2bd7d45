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

/// One Redis connection kept between uses by a task that talks to Redis all the time (the live
/// events' publisher, the cluster's heartbeat): a pool checkout costs the pool's `PING`, a round
/// trip of its own, so an instance that checks out for every batch or beat pays two round trips
/// where one does.
///
/// The kept connection is opened by its user's own task, not taken from the pool: a Redis
/// connection's I/O runs as a task on the thread that opened it, and a pooled one may have been
/// opened on any thread (whichever first needed it), so every query would wake that thread and
/// be woken back. It does not count against `redis.pool_max_size`. A second user that finds the
/// connection in use goes through the pool.
///
/// A query on a connection found lost is run once more on a fresh one. A connection cut off
/// while Redis was answering may already have run it, so only queries that are harmless to
/// repeat go through here (a heartbeat, a lease renewal, live events a view may see twice).
#[derive(Clone)]
pub struct KeptRedis {
    pool: RedisPool,
    slot: Arc<std::sync::Mutex<Slot>>,
}

/// The connection under `e` is dropped or unusable (not merely slow, not an error reply).
fn connection_gone(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Empties a [`KeptRedis`] slot still `Busy` when its query ends, finished or dropped.
struct BusyGuard<'a>(&'a KeptRedis);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut slot = self.0.lock();
        if matches!(*slot, Slot::Busy) {
            *slot = Slot::Empty;
        }
    }
}

/// The kept connection: none yet (or lost), idle, or being used by a query.
enum Slot {
    Empty,
    Idle(redis::aio::MultiplexedConnection),
    Busy,
}

/// Why a query on a [`KeptRedis`] failed.
#[derive(Debug)]
pub enum KeptRedisError {
    /// No connection could be checked out.
    Checkout(String),
    /// The connection failed under the query.
    Query(redis::RedisError),
}

impl KeptRedisError {
    /// The connection itself is gone (Redis restarted, the socket was reset). Not after a
    /// timeout: a slow Redis may still run the query, and it would then run twice.
    fn connection_lost(&self) -> bool {
        match self {
            KeptRedisError::Checkout(_) => false,
            KeptRedisError::Query(e) => !e.is_timeout() && connection_gone(e),
        }
    }
}

impl std::fmt::Display for KeptRedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeptRedisError::Checkout(e) => write!(f, "no redis connection: {e}"),
            KeptRedisError::Query(e) => e.fmt(f),
        }
    }
}

impl KeptRedis {
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            slot: Arc::new(std::sync::Mutex::new(Slot::Empty)),
        }
    }

    /// Runs `pipe` on the kept connection, opened here first if there is none. When the kept
    /// connection turns out lost (Redis restarted since its last use) the pipeline runs once
    /// more on a new one. While another query holds the connection, `pipe` runs on a pooled one.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, KeptRedisError> {
        let previous = std::mem::replace(&mut *self.lock(), Slot::Busy);
        let kept = match previous {
            Slot::Busy => return self.pooled(pipe).await,
            Slot::Idle(conn) => Some(conn),
            Slot::Empty => None,
        };
        // Set back to `Empty` unless `run` put the connection back, also when this future is
        // dropped half way (its caller timed out): the slot is never left `Busy`.
        let busy = BusyGuard(self);
        let result = match kept {
            Some(conn) => match self.run(conn, pipe).await {
                Err(err) if err.connection_lost() => self.opened(pipe).await,
                other => other,
            },
            None => self.opened(pipe).await,
        };
        // Whatever `run` did not put back (a lost or timed-out connection) is gone: the next
        // query opens a new one.
        drop(busy);
        result
    }

    /// `pipe` on a connection opened now, on this task's thread; kept when it worked.
    async fn opened<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, KeptRedisError> {
        let wait = self
            .pool
            .timeouts()
            .create
            .unwrap_or(Duration::from_secs(5));
        let conn = match tokio::time::timeout(wait, self.pool.manager().create()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(KeptRedisError::Checkout(e.to_string())),
            Err(_) => return Err(KeptRedisError::Checkout("timed out connecting".into())),
        };
        self.run(conn, pipe).await
    }

    /// `pipe` on `conn`, which goes back to the slot if the query worked.
    async fn run<T: redis::FromRedisValue>(
        &self,
        mut conn: redis::aio::MultiplexedConnection,
        pipe: &redis::Pipeline,
    ) -> Result<T, KeptRedisError> {
        let result = pipe.query_async::<T>(&mut conn).await;
        // An error reply (READONLY, OOM, a script error) leaves the connection fine; a lost
        // or timed-out one (it may still owe the answer) is not used again.
        let reusable = match &result {
            Ok(_) => true,
            Err(e) => !e.is_timeout() && !connection_gone(e),
        };
        if reusable {
            *self.lock() = Slot::Idle(conn);
        }
        result.map_err(KeptRedisError::Query)
    }

    /// `pipe` on a connection from the pool, returned to it afterwards.
    async fn pooled<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, KeptRedisError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| KeptRedisError::Checkout(e.to_string()))?;
        pipe.query_async::<T>(&mut *conn)
            .await
            .map_err(KeptRedisError::Query)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}
