//! `iace migrate`: apply the pending database migrations, or revert them all.

use iace::config::Settings;
use iace::store::migrations;
use std::process::ExitCode;

pub fn run(settings: &Settings, revert_all: bool) -> ExitCode {
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
