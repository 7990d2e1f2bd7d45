//! `iace bench`: runs a benchmark and prints its table, then its report as one JSON line.

use super::{ApiArgs, BenchCommand};
use iace::config::Settings;
use std::path::Path;
use std::process::ExitCode;

/// Runs one benchmark; `config_dir` is handed to the engine child process some of them start.
pub fn run(settings: &Settings, config_dir: &Path, command: BenchCommand) -> ExitCode {
    match command {
        BenchCommand::Vector {
            rows,
            queries,
            orgs,
            ef_search,
            index_min_rows,
            clusters,
            seed,
        } => {
            let options = iace::bench::VectorBenchOptions {
                rows,
                queries,
                orgs,
                ef_search: ef_search.unwrap_or(settings.learning.ef_search),
                index_min_rows: index_min_rows.unwrap_or(settings.learning.index_min_rows),
                clusters,
                seed,
            };
            print_bench(
                iace::bench::vector(settings.database.url.expose(), &options),
                iace::bench::VectorBenchReport::table,
                None,
            )
        }
        BenchCommand::Api(args) => print_bench(
            iace::bench::api(settings, config_dir, &args.into_options()),
            iace::bench::ApiBenchReport::table,
            None,
        ),
        BenchCommand::Idle {
            duration,
            settle,
            engine_cpus,
            engine_exe,
            engine_config_dir,
        } => print_bench(
            iace::bench::idle::run(
                settings,
                &iace::bench::idle::IdleBenchOptions {
                    duration_secs: duration,
                    settle_secs: settle,
                    engine_cpus,
                    engine_exe,
                    config_dir: engine_config_dir.unwrap_or_else(|| config_dir.to_path_buf()),
                },
            ),
            iace::bench::idle::IdleBenchReport::table,
            None,
        ),
        BenchCommand::Floor {
            streams,
            duration,
            ramp,
            relay_cpus,
            coalesce_us,
            stack,
            raw_media,
            turns,
            turn_every_ms,
        } => print_bench(
            iace::bench::floor::run(
                settings,
                &iace::bench::floor::FloorBenchOptions {
                    streams,
                    duration_secs: duration,
                    ramp_secs: ramp,
                    relay_cpus,
                    coalesce_us,
                    stack,
                    raw_media,
                    turns,
                    turn_every_ms,
                },
            ),
            iace::bench::floor::FloorBenchReport::table,
            None,
        ),
        // With the conversation: it needs the settings (the bench points them at its services).
        BenchCommand::FloorRelay {
            coalesce_us,
            stack_provider,
            raw_media,
            turns,
        } => floor_relay(
            coalesce_us,
            stack_provider,
            raw_media,
            turns.then(|| settings.clone()),
        ),
        BenchCommand::IdleFloor => idle_floor(),
        BenchCommand::Calls {
            calls,
            duration,
            ramp,
            engine_cpus,
            sample_every,
            stt_final_ms,
            llm_first_token_ms,
            llm_tokens_per_second,
            tts_first_audio_ms,
            caller_turns,
            json,
            engine_exe,
            engine_config_dir,
        } => {
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
                caller_turns,
                config_dir: engine_config_dir.unwrap_or_else(|| config_dir.to_path_buf()),
                engine_exe,
            };
            print_bench(
                iace::bench::calls::run(settings, &options),
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

/// `bench floor`'s relay child (started by it, before any settings are loaded).
pub fn floor_relay(
    coalesce_us: u64,
    stack_provider: Option<String>,
    raw_media: bool,
    turns: Option<Settings>,
) -> ExitCode {
    let result = match stack_provider {
        Some(provider) => iace::bench::floor::stack_relay(provider, raw_media, turns),
        None => iace::bench::floor::relay(coalesce_us),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("floor relay: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `bench idle`'s stack-floor child (started by it, before any settings are loaded).
pub fn idle_floor() -> ExitCode {
    match iace::bench::idle::stack_floor() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("idle floor: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a benchmark's table, then its report as one JSON line (also written to `json_path`);
/// exit code 1 when it failed.
fn print_bench<R: serde::Serialize>(
    result: anyhow::Result<R>,
    table: impl Fn(&R) -> String,
    json_path: Option<&Path>,
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
