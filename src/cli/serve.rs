//! `iace serve`: migrate when configured to, then run the engine until SIGTERM or SIGINT, with
//! the orderly shutdown of `startup.rs`.

use super::wait_for_signal;
use iace::config::Settings;
use iace::store::migrations;
use iace::Application;
use std::process::ExitCode;

pub fn run(settings: Settings) -> ExitCode {
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
