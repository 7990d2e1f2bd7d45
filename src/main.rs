//! The `iace` command line: `serve` runs the engine, `migrate` applies the database migrations,
//! `sim` runs every provider simulator and a simulated caller (and `sim call` makes the running
//! Telnyx simulator place a call).
//! `admin` creates organizations, users and signing keys. `bench vector` measures pattern
//! search (latency and recall) on synthetic data in a scratch database; `bench api` measures the
//! calls API of an engine process under many concurrent clients over seeded calls.

use clap::{Parser, Subcommand};
use iace::admin::PasswordSource;
use iace::config::Settings;
use iace::domain::Role;
use iace::sim::suite::SimLatencies;
use iace::store::migrations;
use iace::Application;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "iace", version, about = "IACE: a real-time AI call engine")]
struct Cli {
    /// Folder holding default.toml and {APP_ENV}.toml.
    #[arg(long, env = "IACE_CONFIG_DIR", default_value = "config", global = true)]
    config_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine: HTTP API, webhooks, media sockets. Stops cleanly on SIGTERM or SIGINT.
    Serve,
    /// Apply pending database migrations (idempotent), or revert them all.
    Migrate {
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
enum BenchCommand {
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
        /// Topics the synthetic problems cluster around.
        #[arg(long, default_value_t = 200)]
        clusters: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
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
        /// Also write the JSON report to this file.
        #[arg(long)]
        json: Option<PathBuf>,
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
struct ApiArgs {
    /// Calls to seed, spread over the organizations and their agents (180 days of history).
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Organizations; each has one viewer, and a client only reads its own organization.
    #[arg(long, default_value_t = 10)]
    orgs: usize,
    /// Agent profiles per organization.
    #[arg(long, default_value_t = 5)]
    agents: usize,
    /// Calls given events and a transcript; detail requests pick among them.
    #[arg(long, default_value_t = 20_000)]
    transcripts: u64,
    /// Concurrent clients (one keep-alive connection each).
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// Measured requests in all, after the warm-up.
    #[arg(long)]
    requests: Option<u64>,
    /// Measured seconds (30 when --requests is not given either; with both, whichever ends
    /// first).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Mean pause of each client between requests, in ms (exponential); 0 is a closed loop
    /// at full speed, which measures saturation rather than latency at a given load.
    #[arg(long, default_value_t = 0.0)]
    think_ms: f64,
    /// A request slower than this counts as a timeout error.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// The engine's database pool (database.pool_max_size).
    #[arg(long, default_value_t = 32)]
    db_pool: usize,
    /// The engine's HTTP workers (default: one per CPU it may run on).
    #[arg(long)]
    engine_workers: Option<usize>,
    /// Pin the engine to these CPUs (`taskset -c` list, e.g. "0"); run the bench itself on
    /// the others (`taskset -c 1 iace bench api ...`).
    #[arg(long)]
    engine_cpus: Option<String>,
    /// More engine settings, `IACE__SECTION__KEY=value` (repeatable), e.g.
    /// IACE__DATABASE__VERIFY_CONNECTIONS=false.
    #[arg(long = "engine-env", value_parser = parse_key_value)]
    engine_env: Vec<(String, String)>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Subcommand)]
enum SimAction {
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
enum AdminCommand {
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
    /// Print a new Ed25519 signing key (PKCS#8 PEM, for auth.signing_key) and its public key.
    GenKey,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A key can be generated before any configuration exists.
    if let Command::Admin(AdminCommand::GenKey) = cli.command {
        return gen_key();
    }
    let mut settings = match Settings::load(&cli.config_dir) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::Bench(_)) && std::env::var_os("IACE__LOG__LEVEL").is_none() {
        // A benchmark's output is its report; the simulators' call-by-call logs would drown it.
        settings.log.level = "warn".into();
    }
    iace::telemetry::init(&settings);
    iace::install_crypto_provider();
    match cli.command {
        Command::Migrate { revert_all } => migrate(&settings, revert_all),
        Command::Serve => serve(settings),
        Command::Sim {
            action: None,
            bind,
            deepgram_bind,
            cartesia_bind,
            groq_bind,
            seed,
            answer_delay_ms,
            stt_final_delay_ms,
            llm_first_token_ms,
            tts_first_audio_ms,
        } => sim(
            &settings,
            SimBinds {
                telnyx: bind,
                deepgram: deepgram_bind,
                cartesia: cartesia_bind,
                groq: groq_bind,
            },
            &seed,
            answer_delay_ms,
            SimLatencies {
                stt_final_delay_ms,
                llm_first_token_ms,
                tts_first_audio_ms,
            },
        ),
        Command::Sim {
            action:
                Some(SimAction::Call {
                    from,
                    to,
                    sim_url,
                    wait,
                }),
            ..
        } => sim_call(&settings, sim_url, &from, &to, wait),
        Command::Admin(command) => admin(&settings, command),
        Command::Bench(BenchCommand::Vector {
            rows,
            queries,
            orgs,
            ef_search,
            clusters,
            seed,
        }) => {
            let options = iace::bench::VectorBenchOptions {
                rows,
                queries,
                orgs,
                ef_search: ef_search.unwrap_or(settings.learning.ef_search),
                clusters,
                seed,
            };
            print_bench(
                iace::bench::vector(settings.database.url.expose(), &options),
                iace::bench::VectorBenchReport::table,
                None,
            )
        }
        Command::Bench(BenchCommand::Api(args)) => print_bench(
            iace::bench::api(&settings, &cli.config_dir, &args.into_options()),
            iace::bench::ApiBenchReport::table,
            None,
        ),
        Command::Bench(BenchCommand::Calls {
            calls,
            duration,
            ramp,
            engine_cpus,
            sample_every,
            stt_final_ms,
            llm_first_token_ms,
            llm_tokens_per_second,
            tts_first_audio_ms,
            json,
        }) => {
            let options = iace::bench::calls::CallsBenchOptions {
                calls,
                duration_secs: duration,
                ramp_secs: ramp,
                engine_cpus,
                sample_every_secs: sample_every,
                stt_final_ms,
                llm_first_token_ms,
                llm_tokens_per_second,
                tts_first_audio_ms,
                config_dir: cli.config_dir.clone(),
            };
            print_bench(
                iace::bench::calls::run(&settings, &options),
                iace::bench::calls::CallsBenchReport::table,
                json.as_deref(),
            )
        }
    }
}

impl ApiArgs {
    fn into_options(self) -> iace::bench::ApiBenchOptions {
        iace::bench::ApiBenchOptions {
            calls: self.calls,
            orgs: self.orgs,
            agents_per_org: self.agents,
            transcripts: self.transcripts,
            clients: self.clients,
            requests: self.requests,
            duration_secs: self.duration,
            warmup_secs: self.warmup,
            think_ms: self.think_ms,
            timeout_ms: self.timeout_ms,
            db_pool: self.db_pool,
            engine_workers: self.engine_workers,
            engine_cpus: self.engine_cpus,
            engine_env: self.engine_env,
            seed: self.seed,
        }
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| key.starts_with("IACE__"))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected IACE__SECTION__KEY=value, got {text:?}"))
}

/// Prints a benchmark's table, then its report as one JSON line (also written to `json_path`);
/// exit code 1 when it failed.
fn print_bench<R: serde::Serialize>(
    result: anyhow::Result<R>,
    table: impl Fn(&R) -> String,
    json_path: Option<&std::path::Path>,
) -> ExitCode {
    let report = match result {
        Ok(report) => report,
        Err(err) => {
            eprintln!("bench failed: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", table(&report));
    let json = match serde_json::to_string(&report) {
        Ok(json) => json,
        Err(err) => {
            eprintln!("bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = json_path {
        if let Err(err) = std::fs::write(path, &json) {
            eprintln!("bench: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("{json}");
    ExitCode::SUCCESS
}

fn admin(settings: &Settings, command: AdminCommand) -> ExitCode {
    let result = match command {
        AdminCommand::CreateOrg { name } => {
            iace::admin::create_org(settings, &name).map(|id| println!("{id}"))
        }
        AdminCommand::CreateUser {
            org,
            email,
            role,
            password_stdin,
        } => {
            let source = if password_stdin {
                PasswordSource::Stdin
            } else {
                PasswordSource::Generate
            };
            iace::admin::create_user(settings, org, &email, role, source).map(|(id, password)| {
                println!("{id}");
                if let Some(password) = password {
                    eprintln!("generated password (shown once):");
                    println!("{password}");
                }
            })
        }
        AdminCommand::GenKey => gen_key_text().map(|text| print!("{text}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("admin: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn gen_key_text() -> anyhow::Result<String> {
    let (private, public) = iace::admin::gen_key()?;
    Ok(format!(
        "# auth.signing_key (keep secret):\n{private}# public key (for auth.verification_keys after a rotation):\n{public}"
    ))
}

fn gen_key() -> ExitCode {
    match gen_key_text() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("admin: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn migrate(settings: &Settings, revert_all: bool) -> ExitCode {
    let url = settings.database.url.expose();
    let result = if revert_all {
        migrations::revert_all(url)
    } else {
        migrations::run_pending(url)
    };
    match result {
        Ok(names) if names.is_empty() => {
            println!("migrations: nothing to do");
            ExitCode::SUCCESS
        }
        Ok(names) => {
            let verb = if revert_all { "reverted" } else { "applied" };
            for name in names {
                println!("migrations: {verb} {name}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("migrations failed: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> ExitCode {
    let _sentry = iace::telemetry::init_sentry(&settings);
    if settings.database.auto_migrate {
        // Before the actix system exists: the migration harness blocks.
        if let Err(err) = migrations::run_pending(settings.database.url.expose()) {
            eprintln!("migrations failed: {err}");
            return ExitCode::FAILURE;
        }
    }
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        tracing::info!(port = app.port(), "iace listening");
        let shutdown = app.shutdown_handle();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            shutdown.shutdown().await;
        });
        app.run_until_stopped().await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => {
            tracing::info!("iace stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("iace failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Listen addresses given on the command line (`None`: where the settings point).
struct SimBinds {
    telnyx: Option<String>,
    deepgram: Option<String>,
    cartesia: Option<String>,
    groq: Option<String>,
}

fn sim(
    settings: &Settings,
    binds: SimBinds,
    seed: &str,
    answer_delay_ms: u64,
    latencies: SimLatencies,
) -> ExitCode {
    use iace::providers::telnyx::dev_key::signing_key_from_seed;
    use iace::sim::caller::{CallerOutcome, ReportHook};
    use iace::sim::suite::{self, bind_for, SimSuite, SimSuiteConfig};
    let mut config = SimSuiteConfig::demo(latencies);
    config.telnyx.bind = binds
        .telnyx
        .unwrap_or_else(|| bind_for(&settings.telnyx.base_url, suite::TELNYX_BIND));
    config.telnyx.webhook_url = format!(
        "{}/webhooks/telnyx",
        settings.server.public_url.trim_end_matches('/')
    );
    config.telnyx.api_key = settings.telnyx.api_key.expose().to_owned();
    config.telnyx.connection_id = settings.telnyx.connection_id.clone();
    config.telnyx.answer_delay_ms = answer_delay_ms;
    config.telnyx.signing_key = Some(signing_key_from_seed(seed));
    config.deepgram_bind = binds
        .deepgram
        .unwrap_or_else(|| bind_for(&settings.deepgram.base_url, suite::DEEPGRAM_BIND));
    config.cartesia_bind = binds
        .cartesia
        .unwrap_or_else(|| bind_for(&settings.cartesia.base_url, suite::CARTESIA_BIND));
    config.groq_bind = binds
        .groq
        .unwrap_or_else(|| bind_for(&settings.groq.base_url, suite::GROQ_BIND));
    let print_report: ReportHook = std::sync::Arc::new(|outcome: &CallerOutcome| match outcome {
        Ok(report) => print!("simulated call finished:\n{}", report.overview()),
        Err(err) => eprintln!("simulated call failed: {err}"),
    });
    config.on_report = Some(print_report);
    let result = actix_web::rt::System::new().block_on(async move {
        let webhook_url = config.telnyx.webhook_url.clone();
        let sims = SimSuite::start(config).await?;
        for line in sims.describe() {
            println!("sim: {line}");
        }
        println!("sim: telnyx webhooks to {webhook_url}");
        println!(
            "sim: telnyx public key {} (IACE__TELNYX__WEBHOOK_PUBLIC_KEY)",
            sims.telnyx.public_key_b64()
        );
        println!("sim: place a call with `iace sim call --from +15550100001 --to <our number>`");
        wait_for_signal().await;
        sims.stop().await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("iace sim failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn sim_call(
    settings: &Settings,
    sim_url: Option<String>,
    from: &str,
    to: &str,
    wait: bool,
) -> ExitCode {
    let url = sim_url.unwrap_or_else(|| settings.telnyx.base_url.clone());
    let result = actix_web::rt::System::new().block_on(async {
        let call_control_id = iace::sim::telnyx::request_inbound_call(&url, from, to).await?;
        println!("{call_control_id}");
        if wait {
            let report =
                iace::demo::follow_call(settings, &call_control_id, Duration::from_secs(180))
                    .await?;
            print!("{report}");
        }
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
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
