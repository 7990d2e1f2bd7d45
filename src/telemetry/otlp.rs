//! Trace export without the OpenTelemetry SDK: a `tracing` layer gives every `iace` span a W3C
//! trace and span id (inherited from its parent span, from the request's incoming `traceparent`,
//! or new), and a background thread batches finished spans to an OTLP/HTTP collector as JSON
//! (`POST {telemetry.otlp_endpoint}/v1/traces`). The queue is bounded: when the collector is slow
//! or gone, spans are dropped and counted (`iace_trace_spans_dropped_total`), calls never wait.
//! Nothing happens, beyond one atomic load per span, while no endpoint is configured.
//! The exporter is process-wide (the subscriber is global); the last application configured with
//! an endpoint decides where spans go.

use super::trace_context::{TraceContext, TRACEPARENT};
use crate::config::TelemetrySettings;
use serde_json::{json, Value};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Spans per POST at most (the OTel SDK's default batch size).
const BATCH_SPANS: usize = 512;
/// How long a span may wait in a partial batch.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Longest attribute value kept (route templates, ids, codes).
const MAX_ATTR_CHARS: usize = 128;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// `telemetry.trace_sample_ratio` as `f64` bits (1.0 until configured).
static SAMPLE_RATIO: AtomicU64 = AtomicU64::new(0x3FF0_0000_0000_0000);
static EXPORTER: RwLock<Option<SyncSender<FinishedSpan>>> = RwLock::new(None);

thread_local! {
    /// The incoming request's `traceparent`, while its root span is being created.
    static REMOTE_PARENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
    /// The trace of the actor being polled (see [`start_actor`]): the parent of a span that
    /// would otherwise start a trace of its own.
    static AMBIENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// Spans dropped, shared by every registry (the exporter is global); made by the first
/// [`dropped_spans`].
static DROPPED: OnceLock<prometheus::IntCounter> = OnceLock::new();

/// `iace_trace_spans_dropped_total` (the registry adds the prefix): one counter for the process,
/// registered on every application's registry by `Metrics::new`.
pub fn dropped_spans() -> Result<prometheus::IntCounter, prometheus::Error> {
    if let Some(counter) = DROPPED.get() {
        return Ok(counter.clone());
    }
    let counter = prometheus::IntCounter::new(
        "trace_spans_dropped_total",
        "Finished spans not exported because the export queue was full (slow or absent collector)",
    )?;
    Ok(DROPPED.get_or_init(|| counter).clone())
}

/// The layer `telemetry::init` installs (always: it is inert until [`configure`] starts export).
pub fn layer() -> OtlpLayer {
    OtlpLayer
}

/// The spans the layer is given: the engine's own, INFO and above, independent of the log
/// filter (an operator turning logs down to `warn` keeps the traces).
pub fn span_filter() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new().with_target("iace", tracing::Level::INFO)
}

/// Starts exporting to `telemetry.otlp_endpoint` (nothing when it is empty). `instance` names
/// this process in the resource (`service.instance.id`).
pub fn configure(settings: &TelemetrySettings, instance: &str) {
    let ratio = settings.trace_sample_ratio.clamp(0.0, 1.0);
    SAMPLE_RATIO.store(ratio.to_bits(), Ordering::Relaxed);
    if settings.otlp_endpoint.is_empty() {
        return;
    }
    let target = match Target::parse(&settings.otlp_endpoint) {
        Ok(target) => target,
        Err(message) => {
            tracing::error!(%message, "telemetry.otlp_endpoint refused: traces are not exported");
            return;
        }
    };
    let (tx, rx) = sync_channel(settings.trace_queue_spans.max(1));
    let resource = resource(instance);
    let timeout = Duration::from_millis(settings.otlp_timeout_ms.max(1));
    let spawned = std::thread::Builder::new()
        .name("iace-otlp".into())
        .spawn(move || export_loop(&rx, &target, &resource, timeout));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the trace exporter");
        return;
    }
    // The previous exporter, if any, flushes what it holds and stops when its sender drops.
    *EXPORTER.write().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    ENABLED.store(true, Ordering::Relaxed);
}

/// Runs `create` (which makes an HTTP request's root span) with `parent`, the request's
/// `traceparent`, as the remote parent of the span it creates.
pub fn with_remote_parent<T>(parent: Option<TraceContext>, create: impl FnOnce() -> T) -> T {
    if parent.is_none() || !ENABLED.load(Ordering::Relaxed) {
        return create();
    }
    REMOTE_PARENT.with(|p| p.set(parent));
    let out = create();
    REMOTE_PARENT.with(|p| p.set(None));
    out
}

/// The `traceparent` header for an outgoing request made in the current span (`None` when
/// tracing is off or no traced span is current).
pub fn traceparent_header() -> Option<(&'static str, String)> {
    current_context().map(|ctx| (TRACEPARENT, ctx.to_string()))
}

/// The trace context of the current span (or, outside any traced span, of the actor being
/// polled); `None` when tracing is off.
pub fn current_context() -> Option<TraceContext> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    context_of(&tracing::Span::current()).or_else(|| AMBIENT.with(Cell::get))
}

/// The trace context of `span` (its own id, or its nearest traced ancestor's); `None` when
/// tracing is off or the span is not traced.
pub fn context_of(span: &tracing::Span) -> Option<TraceContext> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        span.scope()
            .find_map(|s| s.extensions().get::<SpanData>().map(|d| d.ctx))
    })
    .flatten()
}

/// Starts `actor` so that every span it creates without a parent of its own (a provider
/// request from a spawned future, a handshake of its socket) joins `trace` as a child of that
/// span context. Costs two thread-local writes per poll of the actor, no allocation; with no
/// `trace` (tracing off) it is plain `Actor::start`.
pub fn start_actor<A>(actor: A, trace: Option<TraceContext>) -> actix::Addr<A>
where
    A: actix::Actor<Context = actix::Context<A>>,
{
    let Some(trace) = trace else {
        return actix::Actor::start(actor);
    };
    let ctx = actix::Context::new();
    let addr = actix::AsyncContext::address(&ctx);
    actix::spawn(InTrace {
        trace: Some(trace),
        inner: ctx.into_future(actor),
    });
    addr
}

/// [`start_actor`] on another arbiter (thread): the actor is built here and moved there, its
/// context made there (a context is not `Send`).
pub fn start_actor_in<A>(
    arbiter: &actix::prelude::ArbiterHandle,
    actor: A,
    trace: Option<TraceContext>,
) -> actix::Addr<A>
where
    A: actix::Actor<Context = actix::Context<A>> + Send,
{
    // actix's default mailbox size; `Actor::start_in_arbiter` does the same.
    let (tx, rx) = actix::dev::channel::channel(16);
    arbiter.spawn_fn(move || {
        let ctx = actix::Context::with_receiver(rx);
        actix::spawn(InTrace {
            trace,
            inner: ctx.into_future(actor),
        });
    });
    actix::Addr::new(tx)
}

/// `fut`, to be spawned as a task of its own, in the current span's trace: the spans it makes
/// without a parent become children of the current span, by id only (nothing keeps the current
/// span open until the task ends, so a turn still ends at its first audio).
pub fn in_current_trace<F: std::future::Future>(fut: F) -> InTrace<std::pin::Pin<Box<F>>> {
    InTrace {
        trace: current_context(),
        inner: Box::pin(fut),
    }
}

/// A future polled with [`AMBIENT`] set to its trace (see [`start_actor`]).
pub struct InTrace<F> {
    trace: Option<TraceContext>,
    inner: F,
}

impl<F: std::future::Future + Unpin> std::future::Future for InTrace<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let Some(trace) = self.trace else {
            return std::pin::Pin::new(&mut self.inner).poll(cx);
        };
        let outer = AMBIENT.with(|a| a.replace(Some(trace)));
        let out = std::pin::Pin::new(&mut self.inner).poll(cx);
        AMBIENT.with(|a| a.set(outer));
        out
    }
}

/// Only the engine's own spans at `INFO` or above are traced (not every library's internals).
fn traced(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::INFO && meta.target().starts_with("iace")
}

/// What the layer keeps in a span's extensions.
struct SpanData {
    ctx: TraceContext,
    parent: Option<u64>,
    start: SystemTime,
    attributes: Vec<(&'static str, AttrValue)>,
    /// Spans of other traces this one follows from (OTLP `links`): a post-call job's call.
    links: Vec<TraceContext>,
}

enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// The field whose value, a `traceparent`, becomes a link instead of an attribute.
pub const LINK_FIELD: &str = "trace_link";

/// The fields exported, under their OpenTelemetry names. Everything else (user and
/// organization ids, free text) stays out of traces.
fn attribute_name(field: &str) -> Option<&'static str> {
    Some(match field {
        "route" => "http.route",
        "method" => "http.request.method",
        "status" => "http.response.status_code",
        "request_id" => "iace.request_id",
        "error_code" => "iace.error_code",
        "call_id" => "iace.call_id",
        "provider" => "iace.provider",
        "operation" => "iace.provider.operation",
        "direction" => "iace.call.direction",
        "turn" => "iace.turn.index",
        "final_to_llm_ms" => "iace.turn.final_to_llm_ms",
        "llm_first_token_ms" => "iace.turn.llm_first_token_ms",
        "llm_first_sentence_ms" => "iace.turn.llm_first_sentence_ms",
        "first_audio_ms" => "iace.turn.first_audio_ms",
        "barge_in" => "iace.turn.barge_in",
        "interrupted" => "iace.turn.interrupted",
        "job_id" => "iace.job.id",
        "kind" => "iace.job.kind",
        "attempt" => "iace.job.attempt",
        _ => return None,
    })
}

struct Attrs<'a>(
    &'a mut Vec<(&'static str, AttrValue)>,
    &'a mut Vec<TraceContext>,
);

impl Attrs<'_> {
    fn put(&mut self, field: &Field, value: AttrValue) {
        let Some(name) = attribute_name(field.name()) else {
            return;
        };
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Visit for Attrs<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, AttrValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(
            field,
            AttrValue::Int(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, AttrValue::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == LINK_FIELD {
            self.1.extend(TraceContext::parse(value));
            return;
        }
        self.put(
            field,
            AttrValue::Str(value.chars().take(MAX_ATTR_CHARS).collect()),
        );
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == LINK_FIELD {
            self.1.extend(TraceContext::parse(&format!("{value:?}")));
        } else if attribute_name(field.name()).is_some() {
            let text = format!("{value:?}");
            self.put(
                field,
                AttrValue::Str(text.chars().take(MAX_ATTR_CHARS).collect()),
            );
        }
    }
}

/// See the module documentation.
pub struct OtlpLayer;

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !ENABLED.load(Ordering::Relaxed) || !traced(attrs.metadata()) {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = REMOTE_PARENT
            .with(Cell::get)
            .or_else(|| {
                span.scope()
                    .skip(1)
                    .find_map(|s| s.extensions().get::<SpanData>().map(|d| d.ctx))
            })
            .or_else(|| AMBIENT.with(Cell::get));
        let (trace_id, sampled, parent_id) = match parent {
            Some(p) => (p.trace_id, p.sampled, Some(p.span_id)),
            None => (nonzero_u128(), sample(), None),
        };
        let mut attributes = Vec::new();
        let mut links = Vec::new();
        attrs.record(&mut Attrs(&mut attributes, &mut links));
        span.extensions_mut().insert(SpanData {
            ctx: TraceContext {
                trace_id,
                span_id: nonzero_u128() as u64 | 1 << 63,
                sampled,
            },
            parent: parent_id,
            start: SystemTime::now(),
            attributes,
            links,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        if let Some(span) = ctx.span(id) {
            if let Some(data) = span.extensions_mut().get_mut::<SpanData>() {
                let SpanData {
                    attributes, links, ..
                } = data;
                values.record(&mut Attrs(attributes, links));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        if data.ctx.sampled {
            submit(FinishedSpan {
                name: span.name(),
                data,
                end: SystemTime::now(),
            });
        }
    }
}

/// A random id (v4 UUIDs are 122 random bits), never zero.
fn nonzero_u128() -> u128 {
    uuid::Uuid::new_v4().as_u128() | 1
}

/// Whether a new trace is recorded, by `telemetry.trace_sample_ratio`.
fn sample() -> bool {
    let ratio = f64::from_bits(SAMPLE_RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || rand::random::<f64>() < ratio
}

struct FinishedSpan {
    name: &'static str,
    data: SpanData,
    end: SystemTime,
}

/// Queues a finished span, or drops and counts it when the queue is full.
fn submit(span: FinishedSpan) {
    let exporter = EXPORTER.read().unwrap_or_else(PoisonError::into_inner);
    let Some(tx) = exporter.as_ref() else {
        return;
    };
    match tx.try_send(span) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            if let Some(counter) = DROPPED.get() {
                counter.inc();
            }
        }
    }
}

/// Where the collector is: plain HTTP only (TLS belongs to a collector or agent next to the
/// engine, which is how OTLP is usually deployed).
struct Target {
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    path: String,
}

impl Target {
    fn parse(endpoint: &str) -> Result<Self, String> {
        let rest = endpoint
            .strip_prefix("http://")
            .ok_or("only http:// endpoints are supported (run a collector next to IACE for TLS)")?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // `[::1]` alone has colons but no port.
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !authority.ends_with(']') => (
                host,
                port.parse::<u16>().map_err(|_| "invalid port".to_owned())?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            "/v1/traces".to_owned()
        } else {
            format!("/{prefix}/v1/traces")
        };
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// Collects up to [`BATCH_SPANS`] spans or [`FLUSH_EVERY`], then posts them; ends (after a last
/// flush) when the sender is replaced or dropped.
fn export_loop(rx: &Receiver<FinishedSpan>, target: &Target, resource: &Value, timeout: Duration) {
    let mut failing = false;
    loop {
        let Ok(first) = rx.recv() else {
            return;
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + FLUSH_EVERY;
        let mut closed = false;
        while batch.len() < BATCH_SPANS {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let body = encode(resource, &batch).to_string();
        match post(target, body.as_bytes(), timeout) {
            Ok(()) => failing = false,
            Err(error) => {
                // Once per outage, not once per batch.
                if !failing {
                    tracing::warn!(%error, spans = batch.len(), "trace export failed");
                }
                failing = true;
            }
        }
        if closed {
            return;
        }
    }
}

/// POSTs `body` and reads the status line; any 2xx is success.
fn post(target: &Target, body: &[u8], timeout: Duration) -> Result<(), String> {
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.set_read_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.authority,
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| e.to_string())?;
    let mut reply = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut reply[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let status = std::str::from_utf8(&reply[..read])
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("");
    if status.starts_with('2') && status.len() == 3 {
        Ok(())
    } else {
        Err(format!("collector answered {status:?}"))
    }
}

fn resource(instance: &str) -> Value {
    json!({
        "attributes": [
            string_attr("service.name", "iace"),
            string_attr("service.version", env!("CARGO_PKG_VERSION")),
            string_attr("service.instance.id", instance),
        ]
    })
}

fn string_attr(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

fn unix_nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

/// The OTLP/HTTP JSON body (ids as hex, 64-bit integers as decimal strings, enums as numbers).
fn encode(resource: &Value, batch: &[FinishedSpan]) -> Value {
    let spans: Vec<Value> = batch
        .iter()
        .map(|s| {
            let d = &s.data;
            let mut failed = false;
            let attributes: Vec<Value> = d
                .attributes
                .iter()
                .map(|(key, value)| match value {
                    AttrValue::Str(v) => string_attr(key, v),
                    AttrValue::Int(v) => {
                        failed |= *key == "http.response.status_code" && *v >= 500;
                        json!({ "key": key, "value": { "intValue": v.to_string() } })
                    }
                    AttrValue::Bool(v) => json!({ "key": key, "value": { "boolValue": v } }),
                })
                .collect();
            // SPAN_KIND_SERVER for requests we answer, CLIENT for provider requests,
            // CONSUMER for a queued job.
            let kind = match s.name {
                "http_request" => 2,
                "provider_request" => 3,
                "job" => 5,
                _ => 1,
            };
            let mut span = json!({
                "traceId": format!("{:032x}", d.ctx.trace_id),
                "spanId": format!("{:016x}", d.ctx.span_id),
                "name": s.name,
                "kind": kind,
                "startTimeUnixNano": unix_nanos(d.start),
                "endTimeUnixNano": unix_nanos(s.end),
                "attributes": attributes,
                "status": { "code": if failed { 2 } else { 0 } },
            });
            if let Some(parent) = d.parent {
                span["parentSpanId"] = json!(format!("{parent:016x}"));
            }
            if !d.links.is_empty() {
                span["links"] = d
                    .links
                    .iter()
                    .map(|l| {
                        json!({
                            "traceId": format!("{:032x}", l.trace_id),
                            "spanId": format!("{:016x}", l.span_id),
                        })
                    })
                    .collect();
            }
            span
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": resource,
            "scopeSpans": [{
                "scope": { "name": "iace", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }]
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_the_traces_path() {
        let t = Target::parse("http://tempo:4318").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("tempo", 4318, "/v1/traces")
        );
        let t = Target::parse("http://127.0.0.1:9/otlp/").unwrap();
        assert_eq!(t.path, "/otlp/v1/traces");
        assert_eq!(Target::parse("http://collector").unwrap().port, 80);
        assert!(Target::parse("https://tempo:4318").is_err());
        assert!(Target::parse("http://:4318").is_err());
        assert!(Target::parse("http://tempo:port").is_err());
        let t = Target::parse("http://[::1]:4318").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 4318));
        assert_eq!(Target::parse("http://[::1]").unwrap().port, 80);
    }

    #[test]
    fn spans_are_encoded_as_otlp_json() {
        let span = FinishedSpan {
            name: "http_request",
            data: SpanData {
                ctx: TraceContext {
                    trace_id: 0xab,
                    span_id: 0xcd,
                    sampled: true,
                },
                parent: Some(0xef),
                start: UNIX_EPOCH + Duration::from_nanos(1_000),
                attributes: vec![
                    ("http.route", AttrValue::Str("/api/v1/calls".into())),
                    ("http.response.status_code", AttrValue::Int(502)),
                    ("iace.turn.barge_in", AttrValue::Bool(true)),
                ],
                links: vec![TraceContext {
                    trace_id: 0x12,
                    span_id: 0x34,
                    sampled: true,
                }],
            },
            end: UNIX_EPOCH + Duration::from_nanos(2_500),
        };
        let body = encode(&resource("i-1"), &[span]);
        let s = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "000000000000000000000000000000ab");
        assert_eq!(s["spanId"], "00000000000000cd");
        assert_eq!(s["parentSpanId"], "00000000000000ef");
        assert_eq!(s["startTimeUnixNano"], "1000");
        assert_eq!(s["endTimeUnixNano"], "2500");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["attributes"][1]["value"]["intValue"], "502");
        assert_eq!(s["attributes"][2]["value"]["boolValue"], true);
        assert_eq!(
            s["links"],
            json!([{ "traceId": "00000000000000000000000000000012", "spanId": "0000000000000034" }])
        );
        let res = &body["resourceSpans"][0]["resource"]["attributes"];
        assert_eq!(res[0]["value"]["stringValue"], "iace");
        assert_eq!(res[2]["value"]["stringValue"], "i-1");
    }
}
