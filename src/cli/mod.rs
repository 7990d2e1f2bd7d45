//! The `iace` command line: its arguments (clap) and one handler module per command.
//! `serve` runs the engine, `migrate` applies the database migrations, `sim` runs every provider
//! simulator and a simulated caller (and `sim call` makes the running Telnyx simulator place a
//! call), `admin` creates organizations, users and signing keys and assigns numbers, `bench` runs the benchmarks.
//! `main.rs` only parses, loads the settings and dispatches here.

pub mod admin;
pub mod bench;
pub mod migrate;
pub mod serve;
pub mod sim;

use clap::{Parser, Subcommand};
use iace::domain::Role;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "iace", version, about = "IACE: a real-time AI call engine")]
pub struct Cli {
    /// Folder holding default.toml and {APP_ENV}.toml.
    #[arg(long, env = "IACE_CONFIG_DIR", default_value = "config", global = true)]
    pub config_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the engine: HTTP API, webhooks, media sockets. Stops cleanly on SIGTERM or SIGINT.
    Serve,
    /// Apply pending database migrations (idempotent), or revert them all; `status` lists
    /// applied and pending ones, `revert --steps N` undoes the newest N.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
        /// Revert every applied migration instead (destroys data; for development).
        #[arg(long)]
        revert_all: bool,
    },
    /// Run every provider simulator (Telnyx, Deepgram, Cartesia, Groq) where the configured
    /// base URLs point, with a simulated caller on every streamed call speaking a short support
    /// conversation. Telnyx webhooks go to {server.public_url}/webhooks/telnyx. Stops on SIGTERM
    /// or SIGINT.
    Sim {
        #[command(subcommand)]
        action: Option<SimAction>,
        /// Telnyx Call Control address (default: from `telnyx.base_url`, else 127.0.0.1:8790).
        #[arg(long)]
        bind: Option<String>,
        /// Deepgram listen address (default: from `deepgram.base_url`, else 127.0.0.1:8791).
        #[arg(long)]
        deepgram_bind: Option<String>,
        /// Cartesia TTS address (default: from `cartesia.base_url`, else 127.0.0.1:8792).
        #[arg(long)]
        cartesia_bind: Option<String>,
        /// Groq chat completions address (default: from `groq.base_url`, else 127.0.0.1:8793).
        #[arg(long)]
        groq_bind: Option<String>,
        /// Seed of the webhook signing key. The default is the development key the engine trusts
        /// in development when `telnyx.webhook_public_key` is empty.
        #[arg(long, default_value = iace::providers::telnyx::dev_key::DEV_KEY_SEED)]
        seed: String,
        /// How long a dialled number rings before it answers.
        #[arg(long, default_value_t = 1000)]
        answer_delay_ms: u64,
        /// Silence after speech before Deepgram finalises a segment (when endpointing is off).
        #[arg(long, default_value_t = 300)]
        stt_final_delay_ms: u32,
        /// Groq's time to first token.
        #[arg(long, default_value_t = 350)]
        llm_first_token_ms: u64,
        /// Cartesia's wait before the first audio of a request.
        #[arg(long, default_value_t = 90)]
        tts_first_audio_ms: u64,
    },
    /// Operator tasks against the configured database.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Benchmarks (in a scratch database created on the configured server, then dropped).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Filtered top-10 pattern search on N synthetic 768-d patterns: p50/p95/p99 latency and
    /// recall@10 against exact search. Prints a table, then one JSON line.
    Vector {
        /// Patterns to load.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Searches to time.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Organizations the rows are spread over (each search filters to one).
        #[arg(long, default_value_t = 10)]
        orgs: usize,
        /// hnsw.ef_search (default: learning.ef_search).
        #[arg(long)]
        ef_search: Option<u32>,
        /// Patterns an organization needs for its own HNSW index (default:
        /// learning.index_min_rows); smaller organizations are searched exactly.
        #[arg(long)]
        index_min_rows: Option<i64>,
        /// Topics the synthetic problems cluster around.
        #[arg(long, default_value_t = 200)]
        clusters: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// An engine with no calls (started here as a child process on a scratch database, default
    /// settings): its CPU share of one core and each thread's wake-ups per second over the window.
    Idle {
        /// Seconds measured.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Seconds to let start-up work finish before measuring.
        #[arg(long, default_value_t = 10)]
        settle: u64,
        /// Pin the engine to these CPUs (`taskset -c` list, e.g. 0).
        #[arg(long)]
        engine_cpus: Option<String>,
        /// The engine binary to measure (default: this one), e.g. an older build to compare.
        #[arg(long)]
        engine_exe: Option<PathBuf>,
        /// The engine's config folder, when it is not this command's (an older build's).
        #[arg(long)]
        engine_config_dir: Option<PathBuf>,
    },
    /// The stack-floor child of `bench idle` (started by it).
    #[command(hide = true)]
    IdleFloor,
    /// The floor under `calls`' CPU figure: a bare relay child (pinned with --relay-cpus) does
    /// only the socket reads and writes N calls' frames need, no parsing or actors; reports its
    /// CPU per call-second. For BENCHMARKS.md: `taskset -c 1 iace bench floor --relay-cpus 0`.
    Floor {
        /// Concurrent streams (calls).
        #[arg(long, default_value_t = 200)]
        streams: usize,
        /// Seconds measured.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Seconds over which the streams start.
        #[arg(long, default_value_t = 10)]
        ramp: u64,
        /// Pin the relay to these CPUs (`taskset -c` list, e.g. 0).
        #[arg(long)]
        relay_cpus: Option<String>,
        /// Microseconds the relay sleeps before each park, batching wake-ups (0: none).
        #[arg(long, default_value_t = 0)]
        coalesce_us: u64,
        /// Relay on the engine's own stack (actix-web, actix-ws, awc) instead of bare sockets.
        #[arg(long)]
        stack: bool,
        /// With --stack: take the media socket from actix-http at its upgrade and read and
        /// write it raw in the stream's task, instead of through actix-ws.
        #[arg(long, requires = "stack")]
        raw_media: bool,
        /// With --raw-media: the relay also holds the bench's conversation (Deepgram's results,
        /// retrievals, Groq, Cartesia, marks, transcript rows, live events) against the
        /// simulators, a scratch database and Redis: the conversation's floor.
        #[arg(long, requires = "raw_media")]
        turns: bool,
        /// With --turns: a caller turn starts this often on each stream (`bench calls` has
        /// one about every 8.1 s).
        #[arg(long, default_value_t = 8100, requires = "turns")]
        turn_every_ms: u64,
    },
    /// The relay process of `bench floor` (started by it).
    #[command(hide = true)]
    FloorRelay {
        #[arg(long, default_value_t = 0)]
        coalesce_us: u64,
        /// Relay on the engine's stack, opening provider sockets to this address.
        #[arg(long)]
        stack_provider: Option<String>,
        /// The stack relay's media socket raw after the upgrade.
        #[arg(long)]
        raw_media: bool,
        /// The relay holds the conversation too (settings from the environment).
        #[arg(long)]
        turns: bool,
    },
    /// N concurrent simulated calls against an engine started here as a child process (on a
    /// scratch database, simulators in this process): each a real media socket streaming 20 ms
    /// frames in real time both ways, with a scripted conversation. Reports calls, frames
    /// (late, lost), the engine's latency per stage, turn latency with the simulators' delays
    /// apart, engine CPU per call-second, resident memory per call and over time. For the
    /// numbers of BENCHMARKS.md run it as `taskset -c 1 iace bench calls --engine-cpus 0 ...`.
    Calls {
        /// Concurrent calls.
        #[arg(long, default_value_t = 50)]
        calls: usize,
        /// Seconds from the first call to every caller hanging up (a long one is a soak).
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Seconds over which the calls are placed.
        #[arg(long, default_value_t = 10)]
        ramp: u64,
        /// Pin the engine to these CPUs (`taskset -c` list, e.g. 0).
        #[arg(long)]
        engine_cpus: Option<String>,
        /// Sample the engine's memory and CPU this often (seconds).
        #[arg(long, default_value_t = 5)]
        sample_every: u64,
        /// Deepgram: silence after speech before the final (the engine's endpointing).
        #[arg(long, default_value_t = 300)]
        stt_final_ms: u32,
        /// Groq: time to first token.
        #[arg(long, default_value_t = 350)]
        llm_first_token_ms: u64,
        /// Groq: tokens per second after the first.
        #[arg(long, default_value_t = 200.0)]
        llm_tokens_per_second: f32,
        /// Cartesia: wait before the first audio of a request.
        #[arg(long, default_value_t = 90)]
        tts_first_audio_ms: u64,
        /// Questions each caller asks (default: one after every answer until it hangs up); 0
        /// keeps the callers silent after the greeting, which measures the media path alone.
        /// Given, it turns the engine's silence limit off (callers stay on the line).
        #[arg(long)]
        caller_turns: Option<usize>,
        /// Also write the JSON report to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// The engine binary to measure (default: this one), e.g. an older build under this
        /// build's callers and simulators.
        #[arg(long)]
        engine_exe: Option<PathBuf>,
        /// The engine's config folder, when it is not this command's (an older build's).
        #[arg(long)]
        engine_config_dir: Option<PathBuf>,
    },
    /// The calls API under many concurrent authenticated clients: seeds calls (with events and
    /// transcripts for the ones detail requests read), starts `iace serve` on them as a child
    /// process, logs in once per organization, then runs client loops (40% first page, 10%
    /// filtered, 10% next page through the cursor, 40% call detail). Reports p50/p95/p99 per kind
    /// of request and overall, throughput, errors by kind, and the engine's CPU time and RSS.
    /// Prints a table, then one JSON line.
    Api(ApiArgs),
}

/// The options of `iace bench api`.
#[derive(clap::Args)]
pub struct ApiArgs {
    /// Calls to seed, spread over the organizations and their agents (180 days of history).
    #[arg(long, default_value_t = 1_000_000)]
    pub calls: u64,
    /// Organizations; each has one viewer, and a client only reads its own organization.
    #[arg(long, default_value_t = 10)]
    pub orgs: usize,
    /// Agent profiles per organization.
    #[arg(long, default_value_t = 5)]
    pub agents: usize,
    /// Calls given events and a transcript; detail requests pick among them.
    #[arg(long, default_value_t = 20_000)]
    pub transcripts: u64,
    /// Concurrent clients (one keep-alive connection each).
    #[arg(long, default_value_t = 500)]
    pub clients: usize,
    /// Measured requests in all, after the warm-up.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Measured seconds (30 when --requests is not given either; with both, whichever ends
    /// first).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Mean pause of each client between requests, in ms (exponential); 0 is a closed loop
    /// at full speed, which measures saturation rather than latency at a given load.
    #[arg(long, default_value_t = 0.0)]
    pub think_ms: f64,
    /// A request slower than this counts as a timeout error.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// The engine's database pool (database.pool_max_size).
    #[arg(long, default_value_t = 32)]
    pub db_pool: usize,
    /// The engine's HTTP workers (default: one per CPU it may run on).
    #[arg(long)]
    pub engine_workers: Option<usize>,
    /// Pin the engine to these CPUs (`taskset -c` list, e.g. "0"); run the bench itself on
    /// the others (`taskset -c 1 iace bench api ...`).
    #[arg(long)]
    pub engine_cpus: Option<String>,
    /// More engine settings, `IACE__SECTION__KEY=value` (repeatable), e.g.
    /// IACE__DATABASE__VERIFY_CONNECTIONS=false.
    #[arg(long = "engine-env", value_parser = parse_key_value)]
    pub engine_env: Vec<(String, String)>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Subcommand, Clone, Copy)]
pub enum MigrateAction {
    /// Every migration, oldest first, marked applied or pending.
    Status,
    /// Revert the newest applied migrations (a rollback: run the previous release's code after).
    Revert {
        /// How many to revert.
        #[arg(long, default_value_t = 1)]
        steps: usize,
    },
}

#[derive(Subcommand)]
pub enum SimAction {
    /// Make the running simulator place an inbound call to one of our numbers.
    Call {
        /// The simulated caller's number.
        #[arg(long)]
        from: String,
        /// Our number being dialled.
        #[arg(long)]
        to: String,
        /// The running simulator (default: `telnyx.base_url`).
        #[arg(long)]
        sim_url: Option<String>,
        /// Follow the call until it ends and print its transcript, sentiment track, outcome and
        /// turn latencies (reads the configured database).
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create an organization; prints its id.
    CreateOrg { name: String },
    /// Create a user. The password is read from stdin with --password-stdin, otherwise
    /// generated and printed once.
    CreateUser {
        /// Organization id (from create-org).
        #[arg(long)]
        org: uuid::Uuid,
        #[arg(long)]
        email: String,
        /// admin, agent or viewer.
        #[arg(long)]
        role: Role,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Assign a phone number (E.164) to an organization, so its agent profiles may answer it
    /// and its outbound calls may show it. Refused when another organization owns it.
    AssignNumber {
        /// Organization id (from create-org).
        org: uuid::Uuid,
        /// The number, e.g. +15550100001.
        number: String,
    },
    /// Print a new Ed25519 signing key (PKCS#8 PEM, for auth.signing_key) and its public key.
    GenKey,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| key.starts_with("IACE__"))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected IACE__SECTION__KEY=value, got {text:?}"))
}

/// Waits for SIGTERM or SIGINT (the long-running commands stop on either).
pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
