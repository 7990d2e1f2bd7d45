//! Private Postgres and Redis servers a test starts, stops and restarts on its own ports (the
//! shared ones from `scripts/services` serve everyone's tests and are never stopped), and a
//! certificate authority made at test time for the TLS tests.

#![allow(dead_code)] // shared by several test files; not each uses all of it

use crate::helpers::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A directory removed when dropped, readable by the Postgres server's user.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and a server certificate it signed (for `127.0.0.1` and `localhost`), as PEM files.
pub struct TestCa {
    pub dir: TempDir,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let dir = TempDir::new("iace-test-ca");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "iace test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server = server_params.signed_by(&server_key, &ca).unwrap();
        let (ca_file, cert_file, key_file) = (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server.key"),
        );
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&cert_file, server.pem()).unwrap();
        std::fs::write(&key_file, server_key.serialize_pem()).unwrap();
        Self {
            dir,
            ca_file,
            cert_file,
            key_file,
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a Postgres tool as the user the server runs as (`postgres` when we are root: the
/// server refuses to run as root).
fn pg_command(tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &format!("{PG_BIN}/{tool}")]);
        c.current_dir("/");
        c
    } else {
        Command::new(format!("{PG_BIN}/{tool}"))
    }
}

fn give_to_pg_owner(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A throwaway Postgres 15 cluster (trust auth on loopback, user `iace`), optionally with TLS.
pub struct PrivatePostgres {
    pub port: u16,
    dir: TempDir,
    tls: bool,
}

impl PrivatePostgres {
    pub fn start(ca: Option<&TestCa>) -> Self {
        let dir = TempDir::new("iace-test-pg");
        give_to_pg_owner(&dir.0);
        let data = dir.join("data");
        let out = pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "iace",
                "--auth-host=trust",
                "--auth-local=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ])
            .output()
            .expect("initdb (installed by scripts/services up)");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(ca) = ca {
            // The server wants its key private to its own user.
            std::fs::copy(&ca.cert_file, data.join("server.crt")).unwrap();
            std::fs::copy(&ca.key_file, data.join("server.key")).unwrap();
            give_to_pg_owner(&data);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        let pg = Self {
            port: free_port(),
            dir,
            tls: ca.is_some(),
        };
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the server (again, after `stop`), on the same port and data.
    pub fn start_again(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.0.display()
        );
        if self.tls {
            options.push_str(" -c ssl=on");
        }
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// Stops the server (fast: open connections are cut, as in an outage).
    pub fn stop(&self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// `postgres://iace@127.0.0.1:port/<db><query>` (trust auth: no password).
    pub fn url(&self, db: &str, query: &str) -> String {
        format!("postgres://iace@127.0.0.1:{}/{db}{query}", self.port)
    }

    /// Creates a database and applies the migrations to it.
    pub fn migrated_database(&self, name: &str) -> String {
        use diesel::{Connection, PgConnection, RunQueryDsl};
        let mut admin = PgConnection::establish(&self.url("postgres", "")).unwrap();
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .unwrap();
        let url = self.url(name, "");
        iace::store::migrations::run_pending(&url).expect("migrations apply");
        url
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A private redis-server on its own port, so a test can stop and restart it; with a CA, it
/// speaks only TLS.
pub struct PrivateRedis {
    pub port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    pub fn start(port: u16) -> Self {
        Self::spawn(port, None)
    }

    pub fn start_tls(port: u16, ca: &TestCa) -> Self {
        Self::spawn(port, Some(ca))
    }

    fn spawn(port: u16, ca: Option<&TestCa>) -> Self {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match ca {
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
            Some(ca) => {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&ca.cert_file)
                    .arg("--tls-key-file")
                    .arg(&ca.key_file)
                    .arg("--tls-ca-cert-file")
                    .arg(&ca.ca_file)
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/services");
        let redis = Self { port, child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("private redis did not start on {port}");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
