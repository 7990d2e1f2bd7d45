//! `iace migrate`: apply the pending database migrations, or revert them all; `migrate status`
//! lists every migration as applied or pending; `migrate revert --steps N` undoes the newest N.

use crate::cli::MigrateAction;
use iace::config::Settings;
use iace::store::migrations;
use std::process::ExitCode;

pub fn run(settings: &Settings, action: Option<MigrateAction>, revert_all: bool) -> ExitCode {
    let url = settings.database.url.expose();
    let (verb, result) = match (action, revert_all) {
        (Some(MigrateAction::Status), _) => return status(url),
        (Some(MigrateAction::Revert { steps }), _) => {
            ("reverted", migrations::revert_steps(url, steps))
        }
        (None, true) => ("reverted", migrations::revert_all(url)),
        (None, false) => ("applied", migrations::run_pending(url)),
    };
    match result {
        Ok(names) if names.is_empty() => {
            println!("migrations: nothing to do");
            ExitCode::SUCCESS
        }
        Ok(names) => {
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

fn status(url: &str) -> ExitCode {
    match migrations::status(url) {
        Ok(states) => {
            for state in states {
                let mark = if state.applied { "applied" } else { "pending" };
                println!("{mark:<8} {}", state.version);
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("migrations status failed: {err}");
            ExitCode::FAILURE
        }
    }
}
