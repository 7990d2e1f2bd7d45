//! The `iace` binary: parses the command line, loads the settings, starts logging and hands the
//! command to its handler in `cli/` (see there for what each command does).

mod cli;

use clap::Parser;
use cli::{AdminCommand, Cli, Command, SimAction};
use iace::config::Settings;
use iace::sim::suite::SimLatencies;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A key can be generated before any configuration exists.
    if let Command::Admin(AdminCommand::GenKey) = cli.command {
        return cli::admin::gen_key();
    }
    // The floor benchmark's relay child needs no configuration (but with --turns, below), and
    // its stdout carries only its address (it may run from any directory: its parent runs it
    // by path).
    if let Command::Bench(cli::BenchCommand::FloorRelay {
        coalesce_us,
        stack_provider,
        raw_media,
        turns: false,
    }) = cli.command
    {
        return cli::bench::floor_relay(coalesce_us, stack_provider, raw_media, None);
    }
    if let Command::Bench(cli::BenchCommand::IdleFloor) = cli.command {
        return cli::bench::idle_floor();
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
        Command::Migrate { action, revert_all } => cli::migrate::run(&settings, action, revert_all),
        Command::Serve => cli::serve::run(settings),
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
        } => cli::sim::run(
            &settings,
            cli::sim::SimBinds {
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
        } => cli::sim::call(&settings, sim_url, &from, &to, wait),
        Command::Admin(command) => cli::admin::run(&settings, command),
        Command::Bench(command) => cli::bench::run(&settings, &cli.config_dir, command),
    }
}
