//! The engine under test as a child process (`iace serve`), optionally pinned to some CPUs with
//! `taskset`, so that its CPU time and resident memory can be read from /proc apart from the load
//! generator's. Configured through `IACE__*` environment variables over the given config folder.

use super::stats::{proc_sample, ProcSample, Scrape};
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How to start the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The `iace` binary (the running one by default).
    pub exe: PathBuf,
    /// The config folder (`IACE_CONFIG_DIR`); the engine runs with APP_ENV=development.
    pub config_dir: PathBuf,
    pub database_url: String,
    pub redis_url: String,
    /// A `taskset -c` CPU list ("0", "0-1"); `None` runs unpinned.
    pub cpus: Option<String>,
    /// More `IACE__SECTION__KEY` settings (provider URLs, keys, limits).
    pub env: Vec<(String, String)>,
    /// Where the engine's stdout and stderr go.
    pub log_path: PathBuf,
}

impl EngineOptions {
    /// The running binary, `config_dir`, and a log file in the temp folder.
    pub fn new(config_dir: PathBuf, database_url: &str, redis_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            exe: std::env::current_exe().context("locate the iace binary")?,
            config_dir,
            database_url: database_url.to_owned(),
            redis_url: redis_url.to_owned(),
            cpus: None,
            env: Vec::new(),
            log_path: std::env::temp_dir()
                .join(format!("iace-bench-engine-{}.log", std::process::id())),
        })
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }
}

/// A running engine process.
pub struct EngineProcess {
    child: tokio::process::Child,
    pid: u32,
    base_url: String,
    log_path: PathBuf,
    http: awc::Client,
}

impl EngineProcess {
    /// Starts the engine on a free loopback port and waits until `/health` answers (60 s at
    /// most). Its redis keys get a prefix of their own.
    pub async fn start(options: &EngineOptions) -> anyhow::Result<Self> {
        let port = free_port()?;
        let base_url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(&options.log_path)
            .with_context(|| format!("create {}", options.log_path.display()))?;
        let mut command = match &options.cpus {
            Some(cpus) => {
                let mut c = tokio::process::Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&options.exe);
                c
            }
            None => tokio::process::Command::new(&options.exe),
        };
        command
            .arg("serve")
            .env("APP_ENV", "development")
            .env("IACE_CONFIG_DIR", &options.config_dir)
            .env("IACE__SERVER__HOST", "127.0.0.1")
            .env("IACE__SERVER__PORT", port.to_string())
            .env("IACE__SERVER__PUBLIC_URL", &base_url)
            .env("IACE__SERVER__SHUTDOWN_TIMEOUT_SECS", "5")
            .env("IACE__DATABASE__URL", &options.database_url)
            .env("IACE__DATABASE__AUTO_MIGRATE", "false")
            .env("IACE__REDIS__URL", &options.redis_url)
            .env(
                "IACE__REDIS__KEY_PREFIX",
                format!("iace-bench-{}", uuid::Uuid::new_v4().simple()),
            )
            .env("IACE__LOG__FORMAT", "pretty")
            .env("IACE__LOG__LEVEL", "warn")
            .env("IACE__HEALTH__PROBE_PROVIDERS", "false")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("start {} (is taskset installed?)", options.exe.display()))?;
        let pid = child.id().context("the engine exited at once")?;
        let engine = Self {
            child: {
                // Checked below; kept in the struct so that a failure kills it on drop.
                if let Some(status) = child.try_wait()? {
                    bail!("the engine exited at once ({status})");
                }
                child
            },
            pid,
            base_url,
            log_path: options.log_path.clone(),
            http: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish(),
        };
        engine.wait_healthy(Duration::from_secs(60)).await?;
        Ok(engine)
    }

    async fn wait_healthy(&self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Ok(response) = self
                .http
                .get(format!("{}/health", self.base_url))
                .send()
                .await
            {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if started.elapsed() > limit {
                bail!(
                    "the engine did not become healthy within {limit:?}; its log: {}",
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// CPU time and resident memory now.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        proc_sample(self.pid).with_context(|| {
            format!(
                "the engine (pid {}) is gone; its log: {}",
                self.pid,
                self.log_path.display()
            )
        })
    }

    /// The engine's `/metrics`, parsed.
    pub async fn scrape(&self) -> anyhow::Result<Scrape> {
        let mut response = self
            .http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("scrape /metrics: {e}"))?;
        let body = response
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .map_err(|e| anyhow::anyhow!("read /metrics: {e}"))?;
        Ok(Scrape::parse(&String::from_utf8_lossy(&body)))
    }

    /// SIGKILL (a crash, as far as the rest of the cluster can tell); waits until it is gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits (killing it after `grace`). Returns whether it exited cleanly.
    pub async fn stop(mut self, grace: Duration) -> bool {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                let _ = self.child.kill().await;
                false
            }
        }
    }
}

/// A loopback port free right now (the engine binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?.port())
}
