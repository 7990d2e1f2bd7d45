//! The `iace` command line: `serve` runs the engine, `migrate` applies the database migrations,
//! `admin` creates organizations, users and signing keys.

use clap::{Parser, Subcommand};
use iace::admin::PasswordSource;
use iace::config::Settings;
use iace::domain::Role;
use iace::store::migrations;
use iace::Application;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Operator tasks against the configured database.
    #[command(subcommand)]
    Admin(AdminCommand),
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
    let settings = match Settings::load(&cli.config_dir) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    iace::telemetry::init(&settings);
    match cli.command {
        Command::Migrate { revert_all } => migrate(&settings, revert_all),
        Command::Serve => serve(settings),
        Command::Admin(command) => admin(&settings, command),
    }
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
