//! `iace admin`: create an organization or a user, assign a number, print a new signing key.

use super::AdminCommand;
use iace::admin::PasswordSource;
use iace::config::Settings;
use std::process::ExitCode;

/// Runs one admin command against the configured database.
pub fn run(settings: &Settings, command: AdminCommand) -> ExitCode {
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
        AdminCommand::AssignNumber { org, number } => {
            iace::admin::assign_number(settings, org, &number).map(|done| match done {
                iace::store::numbers::Assignment::AlreadyOwned => {
                    println!("{number} already belongs to {org}")
                }
                _ => println!("{number} assigned to {org}"),
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

/// `iace admin gen-key`, which needs no configuration.
pub fn gen_key() -> ExitCode {
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
