//! `iace bench idle`: what an engine with no calls costs. Starts `iace serve` as a child (on a
//! scratch database, default settings: job workers, cluster heartbeats and sweeps on), waits for
//! it to settle, then reads its CPU time and each thread's context switches over `--duration`
//! seconds. Every wake-up of an idle thread is a timer or a poll loop; the per-thread rates say
//! which part of the engine wakes it.

use super::engine::{EngineOptions, EngineProcess};
use super::scratch::ScratchDb;
use crate::config::Settings;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct IdleBenchOptions {
    pub duration_secs: u64,
    /// Seconds between the engine answering `/health` and the measurement (start-up work).
    pub settle_secs: u64,
    pub engine_cpus: Option<String>,
    /// The engine binary (default: the running one).
    pub engine_exe: Option<PathBuf>,
    pub config_dir: PathBuf,
}

/// One thread name's wake-ups (threads of the same name are summed).
#[derive(Debug, Clone, Serialize)]
pub struct ThreadWakeups {
    pub thread: String,
    pub count: usize,
    pub wakeups_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleBenchReport {
    pub duration_secs: f64,
    pub cpu_secs: f64,
    /// CPU time over the window as a share of one core, in percent.
    pub cpu_percent_of_core: f64,
    pub wakeups_per_sec: f64,
    pub threads: Vec<ThreadWakeups>,
    pub rss_kib: u64,
}

impl IdleBenchReport {
    pub fn table(&self) -> String {
        let mut out = format!(
            "idle engine over {:.0} s: cpu {:.2} s = {:.3} % of a core; {:.1} wake-ups/s; rss {} KiB\n\n\
             | thread | threads | wake-ups/s |\n|---|---|---|\n",
            self.duration_secs, self.cpu_secs, self.cpu_percent_of_core, self.wakeups_per_sec, self.rss_kib
        );
        for t in &self.threads {
            out.push_str(&format!(
                "| {} | {} | {:.1} |\n",
                t.thread, t.count, t.wakeups_per_sec
            ));
        }
        out
    }
}

pub fn run(settings: &Settings, options: &IdleBenchOptions) -> anyhow::Result<IdleBenchReport> {
    anyhow::ensure!(options.duration_secs > 0, "--duration must be at least 1");
    let scratch = ScratchDb::create(settings.database.url.expose())?;
    let url = scratch.url().to_owned();
    let redis_url = settings.redis.url.expose().to_owned();
    actix_web::rt::System::new().block_on(measure(url, redis_url, options.clone()))
}

async fn measure(
    database_url: String,
    redis_url: String,
    o: IdleBenchOptions,
) -> anyhow::Result<IdleBenchReport> {
    let mut engine_options = EngineOptions::new(o.config_dir.clone(), &database_url, &redis_url)?;
    engine_options.cpus = o.engine_cpus.clone();
    if let Some(exe) = &o.engine_exe {
        engine_options.exe = exe.clone();
    }
    let engine = EngineProcess::start(&engine_options).await?;
    tokio::time::sleep(Duration::from_secs(o.settle_secs)).await;
    let result = window(&engine, Duration::from_secs(o.duration_secs)).await;
    engine.stop(Duration::from_secs(20)).await;
    result
}

async fn window(engine: &EngineProcess, length: Duration) -> anyhow::Result<IdleBenchReport> {
    let before = engine.sample()?;
    let switches_before = thread_switches(engine.pid());
    let started = std::time::Instant::now();
    tokio::time::sleep(length).await;
    let after = engine.sample()?;
    let switches_after = thread_switches(engine.pid());
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = after.cpu_secs - before.cpu_secs;
    // Per thread name: wake-ups of the threads alive at both ends of the window.
    let mut by_name: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (tid, (name, end)) in &switches_after {
        if let Some((_, start)) = switches_before.get(tid) {
            let entry = by_name.entry(name.clone()).or_default();
            entry.0 += 1;
            entry.1 += end.saturating_sub(*start);
        }
    }
    let mut threads: Vec<ThreadWakeups> = by_name
        .into_iter()
        .map(|(thread, (count, wakes))| ThreadWakeups {
            thread,
            count,
            wakeups_per_sec: wakes as f64 / secs,
        })
        .collect();
    threads.sort_by(|a, b| b.wakeups_per_sec.total_cmp(&a.wakeups_per_sec));
    Ok(IdleBenchReport {
        duration_secs: secs,
        cpu_secs,
        cpu_percent_of_core: 100.0 * cpu_secs / secs,
        wakeups_per_sec: threads.iter().map(|t| t.wakeups_per_sec).sum(),
        threads,
        rss_kib: after.rss_kib,
    })
}

/// Each thread's name and context switches (voluntary + involuntary: each one ends a run of
/// the thread, so for a mostly sleeping thread it counts its wake-ups), by thread id.
fn thread_switches(pid: u32) -> BTreeMap<u64, (String, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let mut name = String::new();
        let mut switches = 0u64;
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("Name:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
        out.insert(tid, (name, switches));
    }
    out
}
