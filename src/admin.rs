//! `iace admin`: operator commands run against the configured database without the server:
//! create an organization, create a user, assign a phone number to an organization, generate a
//! signing key.

use crate::auth::{accounts, keys, password};
use crate::config::Settings;
use crate::domain::phone::PhoneNumber;
use crate::domain::Role;
use crate::store::numbers::{self, Assignment};
use crate::store::organizations;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use std::io::BufRead;
use uuid::Uuid;

/// Where a new user's password comes from.
#[derive(Debug)]
pub enum PasswordSource {
    /// One line read from standard input (not echoed anywhere).
    Stdin,
    /// Generated and printed once.
    Generate,
}

/// Runs an async admin task on a small runtime of its own (the server's actix system is not
/// running for admin commands).
fn block_on<T>(task: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(task)
}

async fn connect(settings: &Settings) -> anyhow::Result<AsyncPgConnection> {
    AsyncPgConnection::establish(settings.database.url.expose())
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))
}

/// Creates an organization and returns its id.
pub fn create_org(settings: &Settings, name: &str) -> anyhow::Result<Uuid> {
    block_on(async {
        let mut conn = connect(settings).await?;
        let org = accounts::create_org(&mut conn, name).await?;
        Ok(org.id)
    })
}

/// Creates a user; returns its id and, when generated, the password (to print once).
pub fn create_user(
    settings: &Settings,
    org: Uuid,
    email: &str,
    role: Role,
    source: PasswordSource,
) -> anyhow::Result<(Uuid, Option<String>)> {
    let (password, generated) = match source {
        PasswordSource::Stdin => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            (line.trim_end_matches(['\r', '\n']).to_owned(), false)
        }
        PasswordSource::Generate => (password::generate_password(), true),
    };
    let hasher = password::PasswordHasher::new(
        settings.auth.password_memory_kib,
        settings.auth.password_iterations,
    )?;
    block_on(async {
        let mut conn = connect(settings).await?;
        let user = accounts::create_user(&mut conn, &hasher, org, email, role, &password).await?;
        Ok((user.id, generated.then_some(password)))
    })
}

/// Assigns `number` to organization `org`; refused when another organization owns it.
pub fn assign_number(settings: &Settings, org: Uuid, number: &str) -> anyhow::Result<Assignment> {
    let number = PhoneNumber::parse(number)?;
    block_on(async {
        let mut conn = connect(settings).await?;
        if organizations::find(&mut conn, org).await?.is_none() {
            anyhow::bail!("organization {org} not found");
        }
        match numbers::assign(&mut conn, org, number.as_str()).await? {
            Assignment::HeldByAnother => {
                anyhow::bail!("{number} belongs to another organization; release it there first")
            }
            done => Ok(done),
        }
    })
}

/// A new Ed25519 key pair as PEM: (private PKCS#8, public SPKI).
pub fn gen_key() -> anyhow::Result<(String, String)> {
    Ok(keys::generate_pem_pair()?)
}
