//! Builds the application (pools, state, HTTP server on a bound listener; port 0 works) and
//! runs it with an orderly shutdown: not ready, stop accepting, drain, close pools.

use crate::actors::call::CallDeps;
use crate::actors::recorder::{Flush, Recorder, RecorderConfig};
use crate::actors::registry::CallRegistry;
use crate::auth::AuthService;
use crate::config::Settings;
use crate::error::{json_error_handler, path_error_handler, query_error_handler, ApiError};
use crate::http::{self, AppState, Readiness};
use crate::learning::pipeline::Pipeline;
use crate::learning::worker::JobWorkers;
use crate::learning::{Embedder, Learning, Retriever};
use crate::providers::cartesia::CartesiaClient;
use crate::providers::deepgram::DeepgramClient;
use crate::providers::groq::GroqClient;
use crate::providers::telnyx::{CallControl, TelnyxClient, WebhookVerifier};
use crate::store::pool;
use crate::telemetry::{metrics::Metrics, RequestSpan};
use actix::{Actor, Arbiter};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tracing_actix_web::TracingLogger;

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    recorder_arbiter: Arbiter,
    job_workers: JobWorkers,
}

/// Stops a running application in the documented order. Cloneable, so a signal task and a test
/// can both hold one.
#[derive(Clone)]
pub struct ShutdownHandle {
    server: ServerHandle,
    state: AppState,
}

impl ShutdownHandle {
    /// Not ready → (grace) → stop accepting and finish in-flight requests up to the deadline.
    pub async fn shutdown(&self) {
        tracing::info!("shutdown: reporting not ready");
        self.state.readiness.begin_shutdown();
        let grace = self.state.settings.server.readiness_grace_ms;
        if grace > 0 {
            tokio::time::sleep(Duration::from_millis(grace)).await;
        }
        tracing::info!("shutdown: draining in-flight requests");
        self.server.stop(true).await;
    }
}

impl Application {
    /// Binds `server.host:server.port` and builds everything; nothing is served until `run`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address)
            .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
        Self::build_with_listener(settings, listener).await
    }

    /// Builds on a listener bound by the caller (tests bind first so simulators know the port).
    /// Must run inside an actix `System`.
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let settings = Arc::new(settings);
        let db = pool::db_pool(&settings.database)?;
        let redis = pool::redis_pool(&settings.redis)?;
        let metrics = Arc::new(Metrics::new()?);

        let recorder_arbiter = Arbiter::new();
        let recorder_config = RecorderConfig {
            batch_size: settings.recorder.batch_size,
            flush_interval: Duration::from_millis(settings.recorder.flush_interval_ms),
            retry_backoff_max: Duration::from_millis(settings.recorder.retry_backoff_max_ms),
            max_attempts_per_write: settings.recorder.max_attempts_per_write,
        };
        let (recorder_db, failed) = (db.clone(), metrics.recorder_failed_writes.clone());
        let recorder = Recorder::start_in_arbiter(&recorder_arbiter.handle(), move |_| {
            Recorder::new(recorder_db, recorder_config, failed)
        });

        let telnyx: Arc<dyn CallControl + Send + Sync> =
            Arc::new(TelnyxClient::new(&settings.telnyx));
        let shards = match settings.calls.registry_shards {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let auth = Arc::new(AuthService::new(
            &settings,
            db.clone(),
            redis.clone(),
            metrics.clone(),
        )?);
        let embedder = Embedder::new(&settings.gemini);
        let learning = Learning {
            embedder: embedder.clone(),
            retriever: Retriever::new(
                embedder.clone(),
                db.clone(),
                redis.clone(),
                &settings.redis.key_prefix,
                &settings.learning,
                metrics.retrieval_duration.clone(),
            ),
            settings: settings.learning.clone(),
        };
        let media_base_url = media_base_url(&settings.server.public_url);
        let registry = {
            let (telnyx, recorder, db) = (telnyx.clone(), recorder.clone(), db.clone());
            let (settings, auth, redis_pool) = (settings.clone(), auth.clone(), redis.clone());
            let learning = learning.clone();
            let voice_metrics = metrics.voice.clone();
            CallRegistry::start(shards, db.clone(), move |registry| CallDeps {
                telnyx: telnyx.clone(),
                recorder: recorder.clone(),
                registry,
                db: db.clone(),
                settings: settings.calls.clone(),
                media_base_url: media_base_url.clone(),
                auth: auth.clone(),
                deepgram: DeepgramClient::new(&settings.deepgram),
                deepgram_settings: settings.deepgram.clone(),
                cartesia: CartesiaClient::new(&settings.cartesia),
                groq: GroqClient::new(&settings.groq),
                sentiment_timeout_ms: settings.groq.sentiment_timeout_ms,
                redis: redis_pool.clone(),
                redis_prefix: settings.redis.key_prefix.clone(),
                learning: learning.clone(),
                voice_metrics: voice_metrics.clone(),
            })
        };

        let job_workers = JobWorkers::start(
            Pipeline {
                db: db.clone(),
                groq: GroqClient::new(&settings.groq),
                embedder: learning.embedder.clone(),
                merge_similarity: settings.learning.merge_similarity,
                ef_search: settings.learning.ef_search,
                confirm_patterns: settings.learning.confirm_patterns,
            },
            &settings.learning,
            metrics.learning_jobs.clone(),
        );

        let state = AppState {
            settings: settings.clone(),
            db,
            redis,
            metrics,
            readiness: Arc::new(Readiness::default()),
            registry,
            recorder,
            telnyx,
            // No usable key: webhooks answer 503 `webhook_key_invalid` instead of being trusted.
            telnyx_verifier: WebhookVerifier::new(
                &crate::providers::telnyx::dev_key::resolve_webhook_public_key(&settings)
                    .unwrap_or_default(),
            ),
            auth,
            learning,
        };
        let port = listener.local_addr()?.port();
        let server = build_server(listener, state.clone())?;
        Ok(Self {
            port,
            server,
            state,
            recorder_arbiter,
            job_workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            server: self.server.handle(),
            state: self.state.clone(),
        }
    }

    /// Serves until stopped (by a `ShutdownHandle`), then flushes the recorder, stops the job
    /// workers and the call shards and closes the pools.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let result = self.server.await;
        let flush = state.recorder.send(Flush);
        if tokio::time::timeout(Duration::from_secs(10), flush)
            .await
            .is_err()
        {
            tracing::error!("shutdown: recorder did not flush in 10 s");
        }
        // Running jobs finish (or are left to their lease) before the pools close under them.
        let jobs_deadline = Duration::from_millis(state.settings.learning.shutdown_timeout_ms);
        self.job_workers.stop(jobs_deadline).await;
        state.registry.stop();
        self.recorder_arbiter.stop();
        state.db.close();
        state.redis.close();
        tracing::info!("shutdown: pools closed");
        result
    }
}

/// `http(s)://host` → `ws(s)://host`: where Telnyx opens the media stream.
fn media_base_url(public_url: &str) -> String {
    let trimmed = public_url.trim_end_matches('/');
    if let Some(rest) = trimmed.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = trimmed.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        trimmed.to_owned()
    }
}

fn build_server(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
    let settings = state.settings.clone();
    let limit = settings.server.body_limit_bytes;
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(json_error_handler),
            )
            .app_data(web::PayloadConfig::new(limit))
            .app_data(web::PathConfig::default().error_handler(path_error_handler))
            .app_data(web::QueryConfig::default().error_handler(query_error_handler))
            .wrap(from_fn(http::middleware::json_errors))
            .wrap(TracingLogger::<RequestSpan>::new())
            .wrap(from_fn(http::middleware::request_context))
            .wrap(sentry_actix::Sentry::new())
            .configure(http::configure)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::RouteNotFound)
            }))
    })
    // Signals are ours: readiness must flip before the listener closes (see ShutdownHandle).
    .disable_signals()
    .shutdown_timeout(settings.server.shutdown_timeout_secs)
    .listen(listener)?;
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    Ok(server.run())
}
