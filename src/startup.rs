//! Builds the application (pools, state, HTTP server on a bound listener; port 0 works) and
//! runs it with an orderly shutdown: not ready, stop accepting, drain, close pools.

use crate::actors::call::CallDeps;
use crate::actors::recorder::{Flush, RecorderConfig, RecorderHandle};
use crate::actors::registry::CallRegistry;
use crate::auth::AuthService;
use crate::cluster::takeover::Takeover;
use crate::cluster::{Cluster, Identity};
use crate::config::Settings;
use crate::error::{json_error_handler, path_error_handler, query_error_handler, ApiError};
use crate::http::{self, AppState, Readiness};
use crate::learning::pipeline::Pipeline;
use crate::learning::worker::JobWorkers;
use crate::learning::{Embedder, Learning, Retriever};
use crate::providers::breaker::Breakers;
use crate::providers::cartesia::CartesiaClient;
use crate::providers::deepgram::DeepgramClient;
use crate::providers::groq::GroqClient;
use crate::providers::telnyx::{CallControl, TelnyxClient, WebhookVerifier};
use crate::store::pool;
use crate::telemetry::breakers::BreakerMetrics;
use crate::telemetry::{metrics::Metrics, RequestSpan};
use actix::Arbiter;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App};
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tracing_actix_web::TracingLogger;

pub struct Application {
    port: u16,
    server: Server,
    /// The private listener of `/metrics` and `/admin/*` (`server.ops_port`).
    ops_port: u16,
    ops_server: Server,
    state: AppState,
    recorder_arbiter: Arbiter,
    job_workers: JobWorkers,
}

/// Stops a running application in the documented order. Cloneable, so a signal task and a test
/// can both hold one.
#[derive(Clone)]
pub struct ShutdownHandle {
    server: ServerHandle,
    ops_server: ServerHandle,
    state: AppState,
}

impl ShutdownHandle {
    /// Not ready and draining (new calls go to peers) → (grace) → live calls go on until they
    /// end, up to `server.drain_timeout_secs` → the rest are ended politely → stop accepting and
    /// finish in-flight requests up to the deadline.
    pub async fn shutdown(&self) {
        tracing::info!("shutdown: reporting not ready; draining");
        self.state.readiness.begin_shutdown();
        self.state.cluster.begin_drain().await;
        let grace = self.state.settings.server.readiness_grace_ms;
        if grace > 0 {
            tokio::time::sleep(Duration::from_millis(grace)).await;
        }
        self.drain_calls().await;
        tracing::info!("shutdown: draining in-flight requests");
        self.server.stop(true).await;
        self.ops_server.stop(true).await;
    }

    /// Waits for the live calls to end; at the deadline, ends the rest politely and waits for
    /// their hangups (the goodbye line, then Telnyx's confirmation or its timeout).
    async fn drain_calls(&self) {
        let registry = &self.state.registry;
        let settings = &self.state.settings;
        let deadline = Duration::from_secs(settings.server.drain_timeout_secs);
        let live = registry.live_count().await;
        if live > 0 {
            tracing::info!(live, ?deadline, "shutdown: waiting for live calls to end");
        }
        if wait_for_no_calls(registry, deadline).await {
            return;
        }
        let left = registry.live_count().await;
        tracing::warn!(
            left,
            "shutdown: drain deadline reached; ending the remaining calls"
        );
        registry.drain_all();
        // Goodbye line (at most 8 s) plus the hangup confirmation, with a little to spare.
        let polite = Duration::from_secs(10 + settings.calls.hangup_confirm_timeout_secs);
        if !wait_for_no_calls(registry, polite).await {
            tracing::error!("shutdown: calls still live; a peer's sweeper will end them");
        }
    }
}

/// Polls until no call is live here (true) or `limit` passes (false).
async fn wait_for_no_calls(registry: &CallRegistry, limit: Duration) -> bool {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if registry.live_count().await == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
        let port = listener.local_addr()?.port();
        let settings = Arc::new(settings);
        let db = pool::db_pool(
            &settings.database,
            Some(crate::store::patterns::session_settings(
                settings.learning.ef_search,
            )),
        )?;
        let redis = pool::redis_pool(&settings.redis)?;
        let metrics = Arc::new(Metrics::new()?);
        // One breaker per provider for the whole instance: every call sees the same state.
        let breaker_metrics =
            BreakerMetrics::new(&metrics.registry)?.with_providers(metrics.voice.providers.clone());
        let breakers = Breakers::new(&settings.breakers, &breaker_metrics);

        let recorder_arbiter = crate::actors::threads::named_arbiter("iace-recorder");
        let recorder_config = RecorderConfig {
            batch_size: settings.recorder.batch_size,
            flush_interval: Duration::from_millis(settings.recorder.flush_interval_ms),
            retry_backoff_max: Duration::from_millis(settings.recorder.retry_backoff_max_ms),
            max_attempts_per_write: settings.recorder.max_attempts_per_write,
            buffer_max_writes: settings.recorder.buffer_max_writes.max(1),
            spill_path: settings.recorder.spill_file.clone().into(),
            fault_injection: settings.calls.fault_injection,
        };
        // The recorder writes on a connection of its own, opened from its own thread: a
        // Postgres connection's I/O runs as a task on the thread that opened it, and a shared
        // pool's may sit on any thread, so each of the recorder's statements would wake that
        // thread and be woken back. One is enough: it applies its writes one at a time.
        let recorder_db = pool::db_pool(
            &crate::config::DatabaseSettings {
                pool_max_size: 1,
                ..settings.database.clone()
            },
            None,
        )?;
        let recorder = RecorderHandle::start(
            &recorder_arbiter.handle(),
            recorder_db,
            recorder_config,
            metrics.recorder.clone(),
            metrics.recorder_failed_writes.clone(),
        )
        .with_call_metrics(metrics.calls.clone());

        let telnyx: Arc<dyn CallControl + Send + Sync> =
            Arc::new(TelnyxClient::new(&settings.telnyx).with_breaker(breakers.telnyx.clone()));
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
        let embedder = Embedder::new(&settings.gemini).with_breaker(breakers.gemini.clone());
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
        let live = crate::live::LiveBus::start(
            redis.clone(),
            settings.redis.key_prefix.clone(),
            settings.live.publish_buffer,
            crate::live::LiveMetrics::new(&metrics.registry)?,
        );
        let cluster = Cluster::new(Identity::resolve(&settings, port), redis.clone(), &settings);
        crate::telemetry::otlp::configure(&settings.telemetry, cluster.id());
        let takeover = Takeover {
            db: db.clone(),
            telnyx: telnyx.clone(),
            cluster: cluster.clone(),
            taken_over: metrics.calls_taken_over.clone(),
            calls: metrics.calls.clone(),
        };
        let registry = {
            let cluster = cluster.clone();
            let (telnyx, recorder, db) = (telnyx.clone(), recorder.clone(), db.clone());
            let (settings, auth, redis_pool) = (settings.clone(), auth.clone(), redis.clone());
            let learning = learning.clone();
            let voice_metrics = metrics.voice.clone();
            let call_metrics = metrics.calls.clone();
            let breakers = breakers.clone();
            let live = live.clone();
            CallRegistry::start(
                shards,
                db.clone(),
                takeover.clone(),
                metrics.calls_refused.clone(),
                move |registry| CallDeps {
                    telnyx: telnyx.clone(),
                    recorder: recorder.clone(),
                    registry,
                    db: db.clone(),
                    settings: settings.calls.clone(),
                    media_base_url: media_base_url.clone(),
                    auth: auth.clone(),
                    deepgram: DeepgramClient::new(&settings.deepgram)
                        .with_breaker(breakers.deepgram.clone()),
                    deepgram_settings: settings.deepgram.clone(),
                    cartesia: CartesiaClient::new(&settings.cartesia)
                        .with_breaker(breakers.cartesia.clone()),
                    groq: GroqClient::new(&settings.groq).with_breaker(breakers.groq_chat.clone()),
                    groq_fallback: fallback_groq(&settings.groq),
                    groq_sentiment: GroqClient::new(&settings.groq)
                        .with_breaker(breakers.groq_sentiment.clone()),
                    llm_retries: settings.groq.max_retries,
                    breakers: breakers.clone(),
                    sentiment_timeout_ms: settings.groq.sentiment_timeout_ms,
                    redis: redis_pool.clone(),
                    redis_prefix: settings.redis.key_prefix.clone(),
                    learning: learning.clone(),
                    voice_metrics: voice_metrics.clone(),
                    call_metrics: call_metrics.clone(),
                    cluster: cluster.clone(),
                    live: live.clone(),
                },
            )
        };
        cluster.start_heartbeat();
        takeover.start();

        let job_workers = JobWorkers::start(
            Pipeline {
                db: db.clone(),
                groq: GroqClient::new(&settings.groq).with_breaker(breakers.groq_post_call.clone()),
                embedder: learning.embedder.clone(),
                merge_similarity: settings.learning.merge_similarity,
                index_min_rows: settings.learning.index_min_rows,
                ef_search: settings.learning.ef_search,
                confirm_patterns: settings.learning.confirm_patterns,
            },
            &settings.learning,
            metrics.learning_jobs.clone(),
            metrics.jobs.clone(),
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
            breakers,
            cluster,
            live,
        };
        let server = build_server(listener, state.clone())?;
        let ops_listener = http::ops::bind(&settings)?;
        let ops_port = ops_listener.local_addr()?.port();
        let ops_server = http::ops::server(ops_listener, state.clone())?;
        Ok(Self {
            port,
            server,
            ops_port,
            ops_server,
            state,
            recorder_arbiter,
            job_workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the ops listener (metrics and admin).
    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            server: self.server.handle(),
            ops_server: self.ops_server.handle(),
            state: self.state.clone(),
        }
    }

    /// Serves until stopped (by a `ShutdownHandle`), then flushes the recorder, stops the job
    /// workers and the call shards and closes the pools.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let ops_handle = self.ops_server.handle();
        let ops = actix_web::rt::spawn(self.ops_server);
        let result = self.server.await;
        // Scrapes and operators keep working while the public side drains; then the ops side.
        ops_handle.stop(true).await;
        if let Err(e) = ops.await {
            tracing::error!(error = %e, "ops listener task failed");
        }
        // Gone from the directory: peers stop routing here (calls left live, if any, are now
        // orphans a peer's sweeper ends).
        state.cluster.leave().await;
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

/// The fallback model's client, when `groq.fallback_model` names one.
fn fallback_groq(settings: &crate::config::GroqSettings) -> Option<GroqClient> {
    if settings.fallback_model.is_empty() {
        return None;
    }
    let base_url = match settings.fallback_base_url.as_str() {
        "" => settings.base_url.as_str(),
        other => other,
    };
    let key = if settings.fallback_api_key.is_empty() {
        &settings.api_key
    } else {
        &settings.fallback_api_key
    };
    Some(GroqClient::new(settings).for_model(base_url, key, &settings.fallback_model))
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

/// The public server: actix-web's app on actix-http's HTTP/1 service, built by hand rather
/// than with `HttpServer` for one reason: `HttpServer` cannot take an upgrade service, and the
/// media socket runs on its raw connection after the upgrade (`http::upgrade`). The settings
/// are `HttpServer`'s defaults, spelled out.
fn build_server(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
    use actix_http::{HttpService, KeepAlive, Request};
    use actix_service::{
        fn_factory, fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
    };
    use actix_web::dev::AppConfig;
    let settings = state.settings.clone();
    let limit = settings.server.body_limit_bytes;
    let sentry_transactions = crate::telemetry::sentry::start_transactions(&settings);
    let data = web::Data::new(state);
    let make_app = move || {
        // Runs on each worker thread as it starts.
        crate::actors::threads::name_current_thread("iace-http");
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
            .wrap(
                sentry_actix::Sentry::builder()
                    .start_transaction(sentry_transactions)
                    .finish(),
            )
            .configure(http::configure)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::RouteNotFound)
            }))
    };
    let addr = listener.local_addr()?;
    // Signals are ours: readiness must flip before the listener closes (see ShutdownHandle).
    let mut builder = Server::build()
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
    if settings.server.workers > 0 {
        builder = builder.workers(settings.server.workers);
    }
    // Idle keep-alive connections close when a graceful stop begins, as under HttpServer.
    let stopping = builder.graceful_shutdown_signal();
    let builder = builder.listen("iace-http", listener, move || {
        let stopping = stopping.clone();
        let app = make_app()
            .into_factory()
            .map_err(|err: actix_web::Error| err.error_response());
        // Each worker's upgrade requests get an app of their own (the same routes and state).
        let upgrade_app = make_app.clone();
        HttpService::build()
            .keep_alive(KeepAlive::default())
            .client_request_timeout(Duration::from_secs(5))
            .client_disconnect_timeout(Duration::from_secs(1))
            .h1_allow_half_closed(true)
            .local_addr(addr)
            // Media sockets carry a 20 ms frame at a time: each goes out when written, not
            // after the previous one's ACK.
            .tcp_nodelay(true)
            .graceful_shutdown_signal(move || {
                let stopping = stopping.clone();
                async move { stopping.notified().await }
            })
            .upgrade(fn_factory(move || {
                let app = map_config(upgrade_app().into_factory(), |_| AppConfig::default())
                    .new_service(());
                async move {
                    let app = Rc::new(app.await?);
                    Ok::<_, ()>(fn_service(move |(req, framed): (Request, _)| {
                        http::upgrade::handle(app.clone(), req, framed)
                    }))
                }
            }))
            .finish(map_config(app, |_| AppConfig::default()))
            .tcp()
    })?;
    Ok(builder.run())
}
