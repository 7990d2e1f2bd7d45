//! `iace bench api`: the calls API under many concurrent authenticated clients. Seeds a scratch
//! database with calls spread over organizations and agents (plus events and transcripts for the
//! calls that detail requests read), starts the engine as a child process on it, logs in once per
//! organization, then runs client loops on the list and detail endpoints and reports latency
//! percentiles (overall and per kind of request), throughput, errors by kind and the engine's CPU
//! time and resident memory.

use super::engine::{EngineOptions, EngineProcess};
use super::scratch::ScratchDb;
use super::stats::{ProcSample, Summary};
use crate::auth::password::{generate_password, PasswordHasher};
use crate::auth::{accounts, keys};
use crate::config::Settings;
use crate::domain::Role;
use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use diesel::sql_types::{Array, BigInt, Double, Integer, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What to seed and how to load the engine.
#[derive(Debug, Clone)]
pub struct ApiBenchOptions {
    /// Calls to seed.
    pub calls: u64,
    pub orgs: usize,
    pub agents_per_org: usize,
    /// Calls that get events and a transcript; detail requests pick among them.
    pub transcripts: u64,
    /// Concurrent client loops.
    pub clients: usize,
    /// Measured requests in all (after the warm-up); `None`: run for `duration_secs`.
    pub requests: Option<u64>,
    /// Measured time; `None` with `requests` set: until they are done.
    pub duration_secs: Option<f64>,
    /// Load before measuring (not counted).
    pub warmup_secs: f64,
    /// Mean pause of a client between its requests (exponentially distributed); 0: closed
    /// loop at full speed.
    pub think_ms: f64,
    /// A request taking longer counts as a `timeout` error.
    pub timeout_ms: u64,
    /// The engine's database pool (`database.pool_max_size`).
    pub db_pool: usize,
    /// The engine's HTTP workers; `None`: one per CPU it may use.
    pub engine_workers: Option<usize>,
    /// `taskset -c` list the engine is pinned to.
    pub engine_cpus: Option<String>,
    /// More engine settings (`IACE__SECTION__KEY`, value), applied last.
    pub engine_env: Vec<(String, String)>,
    pub seed: u64,
}

/// Latency and errors of one kind of request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindReport {
    pub kind: &'static str,
    pub requests: u64,
    pub errors: u64,
    /// Latency of the successful requests.
    pub latency: Summary,
    pub mean_body_bytes: f64,
}

/// What was measured (printed as a table and as JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiBenchReport {
    pub calls: u64,
    pub orgs: usize,
    pub agents_per_org: usize,
    pub transcripts: u64,
    pub call_events: u64,
    pub utterances: u64,
    pub seed_calls_secs: f64,
    pub seed_transcripts_secs: f64,
    pub analyze_secs: f64,
    pub clients: usize,
    pub think_ms: f64,
    pub warmup_secs: f64,
    pub db_pool: usize,
    pub engine_workers: Option<usize>,
    pub engine_cpus: Option<String>,
    pub engine_env: Vec<String>,
    /// Wall time of the measured phase.
    pub measured_secs: f64,
    pub requests: u64,
    pub completed: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Error counts by kind: `timeout`, `connect`, `http_<status>:<code>`, ...
    pub error_kinds: BTreeMap<String, u64>,
    pub throughput_rps: f64,
    /// Latency of every successful request.
    pub overall: Summary,
    pub kinds: Vec<KindReport>,
    /// Engine CPU time spent during the measured phase, and as a share of one core.
    pub engine_cpu_secs: f64,
    pub engine_cpu_cores: f64,
    pub engine_rss_kib_before: u64,
    pub engine_rss_kib_after: u64,
    pub engine_threads: u64,
    pub engine_stopped_cleanly: bool,
}

/// Seeded calls span this far back from now.
const SPAN_DAYS: i64 = 180;
/// Calls seeded per statement (progress is printed between them).
const CALLS_PER_STATEMENT: u64 = 250_000;
const EVENTS_PER_CALL: i64 = 8;
const UTTERANCES_PER_CALL: i64 = 16;
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Runs the benchmark on the server of `settings.database.url` (the scratch database is created
/// beside it and dropped afterwards, also on failure). The engine reads `config_dir` with
/// APP_ENV=development.
pub fn api(
    settings: &Settings,
    config_dir: &Path,
    options: &ApiBenchOptions,
) -> anyhow::Result<ApiBenchReport> {
    let o = options;
    if o.orgs == 0 || o.agents_per_org == 0 || o.clients == 0 || o.calls < o.orgs as u64 {
        bail!("need at least one org, agent and client, and a call per org");
    }
    if o.requests == Some(0) || o.duration_secs.is_some_and(|d| d <= 0.0) {
        bail!("--requests and --duration must be positive");
    }
    let config_dir = config_dir
        .canonicalize()
        .with_context(|| format!("config folder {}", config_dir.display()))?;
    let scratch = ScratchDb::create(settings.database.url.expose())?;
    eprintln!("bench: scratch database {}", scratch.name());
    actix_web::rt::System::new().block_on(run(settings, &config_dir, scratch.url(), o))
}

async fn run(
    settings: &Settings,
    config_dir: &Path,
    url: &str,
    o: &ApiBenchOptions,
) -> anyhow::Result<ApiBenchReport> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    let seeded = seed(&mut conn, o).await?;
    let accounts = create_accounts(&mut conn, settings, &seeded.orgs).await?;
    drop(conn);

    let (signing_key, _) = keys::generate_pem_pair()?;
    let mut engine_options =
        EngineOptions::new(config_dir.to_owned(), url, settings.redis.url.expose())?;
    engine_options.cpus = o.engine_cpus.clone();
    engine_options
        .set("IACE__AUTH__SIGNING_KEY", signing_key)
        .set("IACE__AUTH__ACCESS_TTL_SECS", "86400")
        // Each organization logs in from an address of its own: login limits are per address.
        .set("IACE__AUTH__CLIENT_IP_HEADER", CLIENT_IP_HEADER)
        .set("IACE__DATABASE__POOL_MAX_SIZE", o.db_pool.to_string())
        .set("IACE__LEARNING__WORKERS", "0");
    if let Some(workers) = o.engine_workers {
        engine_options.set("IACE__SERVER__WORKERS", workers.to_string());
    }
    for (key, value) in &o.engine_env {
        engine_options.set(key, value.clone());
    }
    let engine = EngineProcess::start(&engine_options).await?;
    eprintln!(
        "bench: engine pid {} at {} (log {})",
        engine.pid(),
        engine.base_url(),
        engine.log_path().display()
    );

    let http = awc::Client::builder()
        .connector(awc::Connector::new().limit(o.clients + 16))
        .timeout(Duration::from_millis(o.timeout_ms))
        .finish();
    let mut tokens = Vec::with_capacity(accounts.len());
    for (i, (email, password)) in accounts.iter().enumerate() {
        tokens.push(login(&http, engine.base_url(), i, email, password).await?);
    }

    let before = engine.sample()?;
    let now = Instant::now();
    let measure_from = now + Duration::from_secs_f64(o.warmup_secs);
    let measure_until = o
        .duration_secs
        .or(if o.requests.is_none() {
            Some(30.0)
        } else {
            None
        })
        .map(|d| measure_from + Duration::from_secs_f64(d));
    let shared = Rc::new(Shared {
        http,
        base_url: engine.base_url().to_owned(),
        tokens,
        targets: seeded.targets.clone(),
        span_end: seeded.span_end,
        measure_from,
        measure_until,
        budget: Cell::new(o.requests.unwrap_or(u64::MAX)),
        last_done: Cell::new(measure_from),
        think_ms: o.think_ms,
        body_limit: BODY_LIMIT,
    });
    eprintln!(
        "bench: {} clients, warm-up {:.0} s, then {}",
        o.clients,
        o.warmup_secs,
        match (o.requests, measure_until) {
            (Some(n), None) => format!("{n} requests"),
            (Some(n), Some(_)) =>
                format!("{n} requests or {:.0} s", o.duration_secs.unwrap_or(0.0)),
            (None, _) => format!("{:.0} s", o.duration_secs.unwrap_or(30.0)),
        }
    );
    let at_start = {
        let pid = engine.pid();
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep_until(measure_from.into()).await;
            super::stats::proc_sample(pid)
        })
    };
    let loops = (0..o.clients).map(|i| client(shared.clone(), i, o.seed.wrapping_add(i as u64)));
    let samples: Vec<Sample> = futures_util::future::join_all(loops)
        .await
        .into_iter()
        .flatten()
        .collect();
    // Not when the last client stopped: it may have been pausing past the end.
    let finished = shared.last_done.get();
    let after = engine.sample()?;
    let at_start: ProcSample = at_start.await.ok().flatten().unwrap_or(before);
    // Close the keep-alive connections first: the engine drains them on SIGTERM.
    drop(shared);
    let stopped_cleanly = engine.stop(Duration::from_secs(15)).await;

    let measured_secs = finished
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    Ok(report(
        o,
        &seeded,
        &samples,
        measured_secs,
        EngineUse {
            before,
            at_start,
            after,
            stopped_cleanly,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------------------------

/// What seeding made.
struct Seeded {
    orgs: Vec<Uuid>,
    /// Per organization (same order as `orgs`): the calls with a transcript.
    targets: Vec<Vec<Uuid>>,
    span_end: DateTime<Utc>,
    transcripts: u64,
    call_events: u64,
    utterances: u64,
    seed_calls_secs: f64,
    seed_transcripts_secs: f64,
    analyze_secs: f64,
}

/// The seeded calls, in time order (as real calls arrive, so the heap is ordered like in
/// production): organization `g % orgs`, agent round-robin within it, ids time-ordered like
/// `CallId::new()` (v7). The newest 0.1% are still live; the others ended with an outcome.
const SEED_CALLS: &str = r#"
INSERT INTO calls (id, organization_id, agent_profile_id, direction, from_number, to_number,
    call_control_id, call_leg_id, call_session_id, status, outcome, end_reason, hangup_cause,
    hangup_source, started_at, answered_at, ended_at, duration_ms, summary, sentiment_avg,
    sentiment_min, created_at, updated_at)
SELECT
    (lpad(to_hex((extract(epoch FROM s.t) * 1000)::bigint), 12, '0') || '7'
        || substr(s.h, 1, 3) || to_hex(8 + (s.g % 4)::int) || substr(s.h, 4, 15))::uuid,
    ($1::uuid[])[1 + s.o],
    ($2::uuid[])[1 + s.o * $4::int + s.a],
    CASE WHEN s.inbound THEN 'inbound' ELSE 'outbound' END,
    CASE WHEN s.inbound THEN s.customer ELSE s.ours END,
    CASE WHEN s.inbound THEN s.ours ELSE s.customer END,
    'v3:' || s.h,
    'leg-' || substr(s.h, 9, 20),
    'session-' || substr(s.h, 13, 20),
    s.status,
    s.outcome,
    CASE WHEN s.outcome IS NULL THEN NULL
         WHEN s.outcome = 'escalated' THEN 'transferred'
         WHEN s.outcome IN ('failed', 'no_answer') THEN 'setup_failed'
         ELSE 'hangup' END,
    CASE WHEN s.outcome IS NULL THEN NULL
         WHEN s.outcome = 'no_answer' THEN 'timeout' ELSE 'normal_clearing' END,
    CASE WHEN s.outcome IS NULL THEN NULL WHEN s.r2 < 0.6 THEN 'caller' ELSE 'callee' END,
    s.t,
    CASE WHEN s.outcome IN ('failed', 'no_answer') THEN NULL ELSE s.t + s.ring END,
    CASE WHEN s.outcome IS NULL THEN NULL ELSE s.t + s.ring + s.talk END,
    CASE WHEN s.outcome IS NULL THEN NULL
         ELSE (extract(epoch FROM s.ring + s.talk) * 1000)::bigint END,
    CASE WHEN s.outcome IS NULL THEN NULL
         ELSE 'The caller asked about order ' || (s.g % 100000) || ' and delivery times; '
              || 'the agent checked the status and explained the next steps.' END,
    CASE WHEN s.outcome IS NULL THEN NULL ELSE (s.r3 * 1.4 - 0.6)::real END,
    CASE WHEN s.outcome IS NULL THEN NULL ELSE (s.r3 * 1.4 - 0.9)::real END,
    s.t,
    s.t + s.ring + s.talk
FROM (
    SELECT
        g,
        md5('bench-call-' || g || '-' || $9) AS h,
        (g % $3)::int AS o,
        ((g / $3) % $4)::int AS a,
        $7::timestamptz - make_interval(secs => $8 * ($6 - g)::float8 / $6) AS t,
        random() < 0.7 AS inbound,
        '+1' || (2000000000 + (random() * 7999999999)::bigint) AS customer,
        '+1555' || lpad(((g % $3) * 100 + (g / $3) % $4)::text, 7, '0') AS ours,
        CASE WHEN g > $6 - greatest($6 / 1000, 1) THEN
                 (ARRAY['ringing', 'answering', 'answered', 'streaming', 'streaming',
                        'streaming', 'escalating', 'dialing'])[1 + (g % 8)::int]
             ELSE 'ended' END AS status,
        CASE WHEN g > $6 - greatest($6 / 1000, 1) THEN NULL
             ELSE (ARRAY['resolved', 'resolved', 'resolved', 'resolved', 'resolved',
                         'resolved', 'escalated', 'abandoned', 'failed', 'no_answer'])
                  [1 + floor(random() * 10)::int] END AS outcome,
        make_interval(secs => 2 + random() * 8) AS ring,
        make_interval(secs => 20 + random() * 580) AS talk,
        random() AS r2,
        random() AS r3
    FROM generate_series($5::bigint, $10::bigint) AS g
    OFFSET 0
) AS s
"#;

/// About eight events a call, as the call actor records them (webhooks carry Telnyx ids).
const SEED_EVENTS: &str = r#"
INSERT INTO call_events (organization_id, call_id, event_type, telnyx_event_id, payload,
    occurred_at, created_at)
SELECT c.organization_id, c.id, e.kind,
    CASE WHEN e.kind LIKE 'call.%' OR e.kind LIKE 'streaming.%'
         THEN md5(c.id::text || e.n)::uuid::text END,
    jsonb_build_object('call_control_id', c.call_control_id, 'state', c.status,
                       'from', c.from_number, 'to', c.to_number, 'n', e.n),
    c.started_at + make_interval(secs => e.n * 3),
    c.started_at + make_interval(secs => e.n * 3)
FROM bench_targets t
JOIN calls c ON c.id = t.id
CROSS JOIN LATERAL (
    SELECT n, (ARRAY['call.initiated', 'call.answered', 'streaming.started', 'engine.greeting',
                     'engine.turn', 'engine.sentiment', 'call.hangup', 'streaming.stopped'])
              [1 + (n - 1) % 8] AS kind
    FROM generate_series(1, $1::int) AS n
) AS e
"#;

/// A transcript of alternating caller and agent turns.
const SEED_UTTERANCES: &str = r#"
INSERT INTO utterances (organization_id, call_id, seq, speaker, text, started_ms, ended_ms,
    sentiment_score, sentiment_label, rolling_sentiment, interrupted, latency_ms, created_at)
SELECT c.organization_id, c.id, u.n,
    CASE WHEN u.n % 2 = 0 THEN 'caller' ELSE 'agent' END,
    CASE WHEN u.n % 2 = 0
         THEN 'Hi, I am calling about my order, it has not arrived yet and I need it by Friday.'
         ELSE 'I am sorry to hear that. Let me look it up for you: it left the warehouse today.' END,
    u.n * 4000, u.n * 4000 + 3500,
    CASE WHEN u.n % 2 = 0 THEN 0.2 END,
    CASE WHEN u.n % 2 = 0 THEN 'neutral' END,
    CASE WHEN u.n % 2 = 0 THEN 0.1 END,
    false,
    CASE WHEN u.n % 2 = 1 THEN 600 + (u.n * 37) % 400 END,
    c.started_at + make_interval(secs => u.n * 4)
FROM bench_targets t
JOIN calls c ON c.id = t.id
CROSS JOIN generate_series(0, $1::int - 1) AS u(n)
"#;

async fn seed(conn: &mut AsyncPgConnection, o: &ApiBenchOptions) -> anyhow::Result<Seeded> {
    let orgs: Vec<Uuid> = (0..o.orgs).map(|_| Uuid::now_v7()).collect();
    let agents: Vec<Uuid> = (0..o.orgs * o.agents_per_org)
        .map(|_| Uuid::new_v4())
        .collect();
    let agent_orgs: Vec<Uuid> = agents
        .iter()
        .enumerate()
        .map(|(i, _)| orgs[i / o.agents_per_org])
        .collect();
    conn.batch_execute("SET synchronous_commit = off").await?;
    diesel::sql_query(format!("SELECT setseed({})", seed_fraction(o.seed)))
        .execute(conn)
        .await?;
    diesel::sql_query(
        "INSERT INTO organizations (id, name) \
         SELECT id, 'Bench org ' || n FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)",
    )
    .bind::<Array<SqlUuid>, _>(&orgs)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "INSERT INTO agent_profiles (id, organization_id, name, system_prompt, greeting, voice_id) \
         SELECT a, o, 'Support agent ' || n, 'You are a helpful support agent.', \
                'Hello, how can I help?', 'bench-voice' \
         FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS t(a, o, n)",
    )
    .bind::<Array<SqlUuid>, _>(&agents)
    .bind::<Array<SqlUuid>, _>(&agent_orgs)
    .execute(conn)
    .await?;

    let span_end = Utc::now();
    let span_secs = (SPAN_DAYS * 86_400) as f64;
    let started = Instant::now();
    let mut from = 1;
    while from <= o.calls {
        let to = (from + CALLS_PER_STATEMENT - 1).min(o.calls);
        diesel::sql_query(SEED_CALLS)
            .bind::<Array<SqlUuid>, _>(&orgs)
            .bind::<Array<SqlUuid>, _>(&agents)
            .bind::<BigInt, _>(o.orgs as i64)
            .bind::<BigInt, _>(o.agents_per_org as i64)
            .bind::<BigInt, _>(from as i64)
            .bind::<BigInt, _>(o.calls as i64)
            .bind::<Timestamptz, _>(span_end)
            .bind::<Double, _>(span_secs)
            .bind::<BigInt, _>(o.seed as i64)
            .bind::<BigInt, _>(to as i64)
            .execute(conn)
            .await
            .context("seed calls")?;
        eprintln!(
            "bench: seeded {to} calls in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        from = to + 1;
    }
    let seed_calls_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let transcripts = o.transcripts.min(o.calls);
    // A repeatable sample: the same calls for the same seed and size.
    let percent = 100.0 * transcripts as f64 / o.calls as f64;
    diesel::sql_query(format!(
        "CREATE TEMP TABLE bench_targets AS SELECT id, organization_id FROM calls \
         TABLESAMPLE BERNOULLI ({percent}) REPEATABLE ({})",
        o.seed % 1_000_000
    ))
    .execute(conn)
    .await?;
    let call_events = diesel::sql_query(SEED_EVENTS)
        .bind::<Integer, _>(EVENTS_PER_CALL as i32)
        .execute(conn)
        .await
        .context("seed call events")? as u64;
    let utterances = diesel::sql_query(SEED_UTTERANCES)
        .bind::<Integer, _>(UTTERANCES_PER_CALL as i32)
        .execute(conn)
        .await
        .context("seed utterances")? as u64;
    let rows: Vec<TargetRow> = diesel::sql_query("SELECT id, organization_id FROM bench_targets")
        .load(conn)
        .await?;
    conn.batch_execute("DROP TABLE bench_targets").await?;
    let seed_transcripts_secs = started.elapsed().as_secs_f64();
    let mut targets = vec![Vec::new(); orgs.len()];
    for row in &rows {
        if let Some(i) = orgs.iter().position(|o| *o == row.organization_id) {
            targets[i].push(row.id);
        }
    }
    eprintln!(
        "bench: {} calls with {call_events} events and {utterances} utterances in {seed_transcripts_secs:.1} s",
        rows.len()
    );

    let started = Instant::now();
    conn.batch_execute("VACUUM ANALYZE").await?;
    let analyze_secs = started.elapsed().as_secs_f64();
    Ok(Seeded {
        orgs,
        targets,
        span_end,
        transcripts: rows.len() as u64,
        call_events,
        utterances,
        seed_calls_secs,
        seed_transcripts_secs,
        analyze_secs,
    })
}

#[derive(diesel::QueryableByName)]
struct TargetRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    organization_id: Uuid,
}

/// `setseed` takes a value in [-1, 1].
fn seed_fraction(seed: u64) -> f64 {
    (seed % 1_000_000) as f64 / 1_000_000.0
}

/// One viewer per organization; returns (email, password) in the order of `orgs`.
async fn create_accounts(
    conn: &mut AsyncPgConnection,
    settings: &Settings,
    orgs: &[Uuid],
) -> anyhow::Result<Vec<(String, String)>> {
    let hasher = PasswordHasher::new(
        settings.auth.password_memory_kib,
        settings.auth.password_iterations,
    )?;
    let mut accounts = Vec::with_capacity(orgs.len());
    for (i, org) in orgs.iter().enumerate() {
        let email = format!("viewer-{i}@bench.iace.test");
        let password = generate_password();
        accounts::create_user(conn, &hasher, *org, &email, Role::Viewer, &password).await?;
        accounts.push((email, password));
    }
    Ok(accounts)
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

const CLIENT_IP_HEADER: &str = "x-bench-client-ip";

async fn login(
    http: &awc::Client,
    base_url: &str,
    index: usize,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct Tokens {
        access_token: String,
    }
    let ip = format!("10.77.{}.{}", index / 250, 1 + index % 250);
    let mut response = http
        .post(format!("{base_url}/api/v1/auth/login"))
        .insert_header((CLIENT_IP_HEADER, ip))
        .send_json(&serde_json::json!({ "email": email, "password": password }))
        .await
        .map_err(|e| anyhow::anyhow!("login: {e}"))?;
    let body = response
        .body()
        .await
        .map_err(|e| anyhow::anyhow!("login: {e}"))?;
    if !response.status().is_success() {
        bail!(
            "login of {email}: {} {}",
            response.status(),
            String::from_utf8_lossy(&body)
        );
    }
    Ok(serde_json::from_slice::<Tokens>(&body)?.access_token)
}

/// What the client loops share (one thread: no locks).
struct Shared {
    http: awc::Client,
    base_url: String,
    /// An access token per organization.
    tokens: Vec<String>,
    targets: Vec<Vec<Uuid>>,
    span_end: DateTime<Utc>,
    measure_from: Instant,
    measure_until: Option<Instant>,
    /// Measured requests left to start.
    budget: Cell<u64>,
    /// When the last measured request finished: the end of the measured phase.
    last_done: Cell<Instant>,
    think_ms: f64,
    body_limit: usize,
}

/// The kinds of request in the mix, by share: 40% first page, 10% filtered first page, 10% next
/// page through the cursor of the client's last page, 40% one call with events and transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    List,
    ListFiltered,
    ListNext,
    Detail,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::List, Kind::ListFiltered, Kind::ListNext, Kind::Detail];

    fn name(self) -> &'static str {
        match self {
            Kind::List => "list",
            Kind::ListFiltered => "list_filtered",
            Kind::ListNext => "list_next",
            Kind::Detail => "detail",
        }
    }

    fn pick(rng: &mut StdRng) -> Kind {
        match rng.gen_range(0..100) {
            0..40 => Kind::List,
            40..50 => Kind::ListFiltered,
            50..60 => Kind::ListNext,
            _ => Kind::Detail,
        }
    }
}

/// One measured request.
struct Sample {
    kind: Kind,
    latency: Duration,
    /// Body bytes, or the kind of error.
    outcome: Result<usize, String>,
}

/// A page the client can continue: its filter and the cursor after it.
struct Continuation {
    filter: String,
    cursor: String,
}

/// One client: requests until the budget or the time is up; returns its measured samples.
async fn client(shared: Rc<Shared>, index: usize, seed: u64) -> Vec<Sample> {
    let org = index % shared.tokens.len();
    let token = format!("Bearer {}", shared.tokens[org]);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut continuation: Option<Continuation> = None;
    let mut samples = Vec::new();
    // Spread the first requests over a moment instead of a thundering herd.
    actix_web::rt::time::sleep(Duration::from_micros(rng.gen_range(0..50_000))).await;
    loop {
        let now = Instant::now();
        if shared.measure_until.is_some_and(|until| now >= until) {
            break;
        }
        let measured = now >= shared.measure_from;
        if measured {
            let left = shared.budget.get();
            if left == 0 {
                break;
            }
            shared.budget.set(left - 1);
        }
        let mut kind = Kind::pick(&mut rng);
        if kind == Kind::ListNext && continuation.is_none() {
            kind = Kind::List;
        }
        if kind == Kind::Detail && shared.targets[org].is_empty() {
            kind = Kind::List;
        }
        let (path, filter) = match kind {
            Kind::List => ("/api/v1/calls".to_owned(), String::new()),
            Kind::ListFiltered => {
                let filter = random_filter(&mut rng, shared.span_end);
                (format!("/api/v1/calls?{filter}"), filter)
            }
            Kind::ListNext => {
                let c = continuation.take().unwrap_or(Continuation {
                    filter: String::new(),
                    cursor: String::new(),
                });
                let sep = if c.filter.is_empty() { "" } else { "&" };
                (
                    format!("/api/v1/calls?{}{sep}cursor={}", c.filter, c.cursor),
                    c.filter,
                )
            }
            Kind::Detail => {
                let ids = &shared.targets[org];
                let id = ids[rng.gen_range(0..ids.len())];
                (format!("/api/v1/calls/{id}"), String::new())
            }
        };
        let started = Instant::now();
        let outcome = get(&shared, &path, &token).await;
        let latency = started.elapsed();
        let outcome = outcome.map(|body| {
            if kind != Kind::Detail {
                continuation = next_cursor(&body).map(|cursor| Continuation { filter, cursor });
            }
            body.len()
        });
        if measured {
            shared.last_done.set(Instant::now());
            samples.push(Sample {
                kind,
                latency,
                outcome,
            });
        }
        if shared.think_ms > 0.0 {
            // Exponential pauses: requests of many such clients arrive like a Poisson process.
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            let pause = -shared.think_ms * u.ln();
            actix_web::rt::time::sleep(Duration::from_secs_f64(pause / 1000.0)).await;
        }
    }
    samples
}

/// A filter the list supports: status (common or rare), direction, outcome, or one day.
fn random_filter(rng: &mut StdRng, span_end: DateTime<Utc>) -> String {
    match rng.gen_range(0..5) {
        0 => "status=ended".into(),
        1 => "status=streaming".into(),
        2 => "direction=outbound".into(),
        3 => "outcome=escalated".into(),
        _ => {
            let day = span_end - chrono::Duration::days(rng.gen_range(1..SPAN_DAYS));
            let next = day + chrono::Duration::days(1);
            format!(
                "from={}&to={}",
                day.to_rfc3339_opts(SecondsFormat::Secs, true),
                next.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        }
    }
}

fn next_cursor(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Page {
        next_cursor: Option<String>,
    }
    serde_json::from_slice::<Page>(body).ok()?.next_cursor
}

/// GET with the bearer token; the whole body on 2xx, else the kind of error.
async fn get(shared: &Shared, path: &str, token: &str) -> Result<bytes::Bytes, String> {
    let response = shared
        .http
        .get(format!("{}{path}", shared.base_url))
        .insert_header(("Authorization", token))
        .send()
        .await;
    let mut response = response.map_err(|e| match e {
        awc::error::SendRequestError::Timeout => "timeout".to_owned(),
        awc::error::SendRequestError::Connect(_) => "connect".to_owned(),
        _ => "send".to_owned(),
    })?;
    let body = response
        .body()
        .limit(shared.body_limit)
        .await
        .map_err(|e| match e {
            awc::error::PayloadError::Io(_) => "body_io".to_owned(),
            _ => "body".to_owned(),
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(body)
    } else {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            code: String,
        }
        let code = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.code)
            .unwrap_or_default();
        Err(format!("http_{}:{code}", status.as_u16()))
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

struct EngineUse {
    before: ProcSample,
    at_start: ProcSample,
    after: ProcSample,
    stopped_cleanly: bool,
}

fn report(
    o: &ApiBenchOptions,
    seeded: &Seeded,
    samples: &[Sample],
    measured_secs: f64,
    engine: EngineUse,
) -> ApiBenchReport {
    let mut error_kinds = BTreeMap::new();
    for sample in samples {
        if let Err(kind) = &sample.outcome {
            *error_kinds.entry(kind.clone()).or_insert(0) += 1;
        }
    }
    let ok_latencies = |kind: Option<Kind>| -> Vec<Duration> {
        samples
            .iter()
            .filter(|s| s.outcome.is_ok() && kind.is_none_or(|k| s.kind == k))
            .map(|s| s.latency)
            .collect()
    };
    let kinds = Kind::ALL
        .iter()
        .map(|&kind| {
            let of_kind: Vec<&Sample> = samples.iter().filter(|s| s.kind == kind).collect();
            let bytes: Vec<usize> = of_kind
                .iter()
                .filter_map(|s| s.outcome.as_ref().ok().copied())
                .collect();
            KindReport {
                kind: kind.name(),
                requests: of_kind.len() as u64,
                errors: (of_kind.len() - bytes.len()) as u64,
                latency: Summary::of(&ok_latencies(Some(kind))),
                mean_body_bytes: if bytes.is_empty() {
                    0.0
                } else {
                    bytes.iter().sum::<usize>() as f64 / bytes.len() as f64
                },
            }
        })
        .collect();
    let requests = samples.len() as u64;
    let errors = error_kinds.values().sum::<u64>();
    let completed = requests - errors;
    let engine_cpu_secs = engine.after.cpu_secs - engine.at_start.cpu_secs;
    ApiBenchReport {
        calls: o.calls,
        orgs: o.orgs,
        agents_per_org: o.agents_per_org,
        transcripts: seeded.transcripts,
        call_events: seeded.call_events,
        utterances: seeded.utterances,
        seed_calls_secs: seeded.seed_calls_secs,
        seed_transcripts_secs: seeded.seed_transcripts_secs,
        analyze_secs: seeded.analyze_secs,
        clients: o.clients,
        think_ms: o.think_ms,
        warmup_secs: o.warmup_secs,
        db_pool: o.db_pool,
        engine_workers: o.engine_workers,
        engine_cpus: o.engine_cpus.clone(),
        engine_env: o
            .engine_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        measured_secs,
        requests,
        completed,
        errors,
        error_rate: if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        },
        error_kinds,
        throughput_rps: if measured_secs > 0.0 {
            completed as f64 / measured_secs
        } else {
            0.0
        },
        overall: Summary::of(&ok_latencies(None)),
        kinds,
        engine_cpu_secs,
        engine_cpu_cores: if measured_secs > 0.0 {
            engine_cpu_secs / measured_secs
        } else {
            0.0
        },
        engine_rss_kib_before: engine.before.rss_kib,
        engine_rss_kib_after: engine.after.rss_kib,
        engine_threads: engine.after.threads,
        engine_stopped_cleanly: engine.stopped_cleanly,
    }
}

impl ApiBenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "calls API: {} calls over {} orgs ({} agents each; {} with {} events and {} utterances), \
             {} clients, think {} ms, engine CPUs {}, {} HTTP workers, db pool {}\n\
             seeding: calls {:.1} s, transcripts {:.1} s, vacuum analyze {:.1} s\n",
            self.calls,
            self.orgs,
            self.agents_per_org,
            self.transcripts,
            self.call_events,
            self.utterances,
            self.clients,
            self.think_ms,
            self.engine_cpus.as_deref().unwrap_or("any"),
            self.engine_workers
                .map_or_else(|| "default".to_owned(), |w| w.to_string()),
            self.db_pool,
            self.seed_calls_secs,
            self.seed_transcripts_secs,
            self.analyze_secs,
        );
        if !self.engine_env.is_empty() {
            out.push_str(&format!("engine settings: {}\n", self.engine_env.join(" ")));
        }
        out.push_str(
            "| requests      |    count | errors |  p50 ms |  p95 ms |  p99 ms |  max ms | mean ms | mean KiB |\n\
             |---------------|----------|--------|---------|---------|---------|---------|---------|----------|\n",
        );
        let row = |name: &str, count: u64, errors: u64, s: &Summary, bytes: Option<f64>| {
            format!(
                "| {:<13} | {:>8} | {:>6} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.1} | {:>7.2} | {:>8} |\n",
                name,
                count,
                errors,
                s.p50_ms,
                s.p95_ms,
                s.p99_ms,
                s.max_ms,
                s.mean_ms,
                bytes.map_or_else(String::new, |b| format!("{:.1}", b / 1024.0)),
            )
        };
        for k in &self.kinds {
            out.push_str(&row(
                k.kind,
                k.requests,
                k.errors,
                &k.latency,
                Some(k.mean_body_bytes),
            ));
        }
        out.push_str(&row("all", self.requests, self.errors, &self.overall, None));
        out.push_str(&format!(
            "throughput {:.0} req/s over {:.1} s; errors {} ({:.3}%){}\n\
             engine: {:.1} CPU s ({:.2} cores), RSS {:.1} -> {:.1} MiB, {} threads, {}",
            self.throughput_rps,
            self.measured_secs,
            self.errors,
            self.error_rate * 100.0,
            if self.error_kinds.is_empty() {
                String::new()
            } else {
                format!(": {:?}", self.error_kinds)
            },
            self.engine_cpu_secs,
            self.engine_cpu_cores,
            self.engine_rss_kib_before as f64 / 1024.0,
            self.engine_rss_kib_after as f64 / 1024.0,
            self.engine_threads,
            if self.engine_stopped_cleanly {
                "stopped cleanly"
            } else {
                "did not stop cleanly"
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_sixty_percent_lists_and_forty_percent_details() {
        let mut rng = StdRng::seed_from_u64(7);
        let picks: Vec<Kind> = (0..10_000).map(|_| Kind::pick(&mut rng)).collect();
        let share = |k: Kind| picks.iter().filter(|p| **p == k).count() as f64 / 10_000.0;
        assert!((share(Kind::Detail) - 0.40).abs() < 0.02);
        assert!((share(Kind::List) - 0.40).abs() < 0.02);
        assert!((share(Kind::ListFiltered) - 0.10).abs() < 0.02);
    }

    #[test]
    fn filters_are_ones_the_list_endpoint_accepts() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let filter = random_filter(&mut rng, Utc::now());
            let query = actix_web::web::Query::<crate::http::calls::ListQuery>::from_query(&filter)
                .expect(&filter);
            assert!(query.cursor.is_none(), "{filter}");
        }
    }

    #[test]
    fn the_next_cursor_is_read_without_the_data() {
        let body = br#"{"data":[{"id":"x"}],"next_cursor":"abc"}"#;
        assert_eq!(next_cursor(body).as_deref(), Some("abc"));
        assert_eq!(next_cursor(br#"{"data":[],"next_cursor":null}"#), None);
    }
}
