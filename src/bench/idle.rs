//! `iace bench idle`: what an engine with no calls costs. Starts `iace serve` as a child (on a
//! scratch database, default settings: job workers, cluster heartbeats and sweeps on), waits for
//! it to settle, then reads each thread's CPU time (nanoseconds, from `schedstat`) and context
//! switches over `--duration` seconds. Every wake-up of an idle thread is a timer or a poll
//! loop; the per-thread figures say which part of the engine wakes it.
//!
//! Beside it, over the same window and pinned the same way, runs the stack's floor: a child
//! (`iace bench idle-floor`) serving the engine's two actix-web listeners (public and ops, with
//! the same worker counts) and nothing else. actix-http refreshes its `Date` header every
//! 500 ms on every worker of every listener, with no setting to turn it off
//! (actix/actix-web#3411), so that child's cost is what any engine on this stack pays idle;
//! the report gives the engine's own share above it.

use super::engine::{EngineOptions, EngineProcess};
use super::floor::{child_command, exit_with_parent, KillOnDrop};
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

/// One thread name's wake-ups and CPU time (threads of the same name are summed).
#[derive(Debug, Clone, Serialize)]
pub struct ThreadWakeups {
    pub thread: String,
    pub count: usize,
    pub wakeups_per_sec: f64,
    /// CPU time per second of the window, in microseconds.
    pub cpu_us_per_sec: f64,
}

/// One process's idle cost over the window.
#[derive(Debug, Clone, Serialize)]
pub struct IdleCost {
    pub cpu_secs: f64,
    /// CPU time over the window as a share of one core, in percent.
    pub cpu_percent_of_core: f64,
    pub wakeups_per_sec: f64,
    pub threads: Vec<ThreadWakeups>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleBenchReport {
    pub duration_secs: f64,
    /// The engine's CPU time over the window (the sum of its threads' run time).
    pub cpu_secs: f64,
    pub cpu_percent_of_core: f64,
    pub wakeups_per_sec: f64,
    pub threads: Vec<ThreadWakeups>,
    pub rss_kib: u64,
    /// The bare actix-web listeners (public and ops) over the same window.
    pub stack_floor: IdleCost,
    /// The engine's CPU above the stack's floor, percent of a core.
    pub engine_own_percent_of_core: f64,
}

fn thread_table(title: &str, threads: &[ThreadWakeups]) -> String {
    let mut out =
        format!("{title}\n\n| thread | threads | wake-ups/s | CPU µs/s |\n|---|---|---|---|\n");
    for t in threads {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} |\n",
            t.thread, t.count, t.wakeups_per_sec, t.cpu_us_per_sec
        ));
    }
    out
}

impl IdleBenchReport {
    pub fn table(&self) -> String {
        let floor = &self.stack_floor;
        let mut out = format!(
            "idle engine over {:.0} s: cpu {:.4} s = {:.3} % of a core; {:.1} wake-ups/s; rss {} KiB\n\
             stack floor (bare actix-web public + ops listeners): {:.3} % of a core; {:.1} wake-ups/s\n\
             engine's own: {:.3} % of a core\n\n",
            self.duration_secs,
            self.cpu_secs,
            self.cpu_percent_of_core,
            self.wakeups_per_sec,
            self.rss_kib,
            floor.cpu_percent_of_core,
            floor.wakeups_per_sec,
            self.engine_own_percent_of_core,
        );
        out.push_str(&thread_table("engine", &self.threads));
        out.push('\n');
        out.push_str(&thread_table("stack floor", &floor.threads));
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
    let floor = start_floor(o.engine_cpus.as_deref())?;
    tokio::time::sleep(Duration::from_secs(o.settle_secs)).await;
    let result = window(&engine, floor.0.id(), Duration::from_secs(o.duration_secs)).await;
    drop(floor);
    engine.stop(Duration::from_secs(20)).await;
    result
}

/// Starts the stack-floor child, pinned to `cpus` like the engine; killed when dropped.
fn start_floor(cpus: Option<&str>) -> anyhow::Result<KillOnDrop> {
    let mut command = child_command(cpus)?;
    command
        .args(["bench", "idle-floor"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    Ok(KillOnDrop(command.spawn()?))
}

async fn window(
    engine: &EngineProcess,
    floor_pid: u32,
    length: Duration,
) -> anyhow::Result<IdleBenchReport> {
    let before = thread_samples(engine.pid());
    let floor_before = thread_samples(floor_pid);
    let started = std::time::Instant::now();
    tokio::time::sleep(length).await;
    let after = engine.sample()?;
    let threads_after = thread_samples(engine.pid());
    let floor_after = thread_samples(floor_pid);
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        !floor_after.is_empty(),
        "the stack-floor child (iace bench idle-floor) is gone"
    );
    let engine_cost = cost(&before, &threads_after, secs);
    let floor = cost(&floor_before, &floor_after, secs);
    Ok(IdleBenchReport {
        duration_secs: secs,
        cpu_secs: engine_cost.cpu_secs,
        cpu_percent_of_core: engine_cost.cpu_percent_of_core,
        wakeups_per_sec: engine_cost.wakeups_per_sec,
        threads: engine_cost.threads,
        rss_kib: after.rss_kib,
        engine_own_percent_of_core: engine_cost.cpu_percent_of_core - floor.cpu_percent_of_core,
        stack_floor: floor,
    })
}

/// A thread's name, context switches and run time (ns).
struct ThreadSample {
    name: String,
    switches: u64,
    run_ns: u64,
}

/// Per thread name: wake-ups and CPU of the threads alive at both ends of the window.
fn cost(
    before: &BTreeMap<u64, ThreadSample>,
    after: &BTreeMap<u64, ThreadSample>,
    secs: f64,
) -> IdleCost {
    let mut by_name: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    for (tid, end) in after {
        if let Some(start) = before.get(tid) {
            let entry = by_name.entry(end.name.clone()).or_default();
            entry.0 += 1;
            entry.1 += end.switches.saturating_sub(start.switches);
            entry.2 += end.run_ns.saturating_sub(start.run_ns);
        }
    }
    let mut threads: Vec<ThreadWakeups> = by_name
        .into_iter()
        .map(|(thread, (count, wakes, run_ns))| ThreadWakeups {
            thread,
            count,
            wakeups_per_sec: wakes as f64 / secs,
            cpu_us_per_sec: run_ns as f64 / 1000.0 / secs,
        })
        .collect();
    threads.sort_by(|a, b| b.cpu_us_per_sec.total_cmp(&a.cpu_us_per_sec));
    let cpu_secs = threads.iter().map(|t| t.cpu_us_per_sec).sum::<f64>() * secs / 1e6;
    IdleCost {
        cpu_secs,
        cpu_percent_of_core: 100.0 * cpu_secs / secs,
        wakeups_per_sec: threads.iter().map(|t| t.wakeups_per_sec).sum(),
        threads,
    }
}

/// Each thread's name, context switches (voluntary + involuntary: each one ends a run of the
/// thread, so for a mostly sleeping thread it counts its wake-ups) and run time (the first
/// field of `schedstat`, in ns: clock ticks are too coarse for an idle process), by thread id.
fn thread_samples(pid: u32) -> BTreeMap<u64, ThreadSample> {
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
        let run_ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
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
        out.insert(
            tid,
            ThreadSample {
                name,
                switches,
                run_ns,
            },
        );
    }
    out
}

/// The stack-floor child's body: the engine's two listeners as bare actix-web servers (public
/// with the engine's default worker count, one per available core; ops with one worker, as
/// `http::ops::server`), each with one route, until its stdin closes.
pub fn stack_floor() -> anyhow::Result<()> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    exit_with_parent();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    actix_web::rt::System::new().block_on(async move {
        use crate::actors::threads::name_current_thread;
        let route = || App::new().route("/", web::get().to(HttpResponse::Ok));
        // Named like the engine's workers, so the two tables line up.
        let public = HttpServer::new(move || {
            name_current_thread("iace-http");
            route()
        })
        .workers(workers)
        .disable_signals()
        .bind("127.0.0.1:0")?
        .run();
        let ops = HttpServer::new(move || {
            name_current_thread("iace-ops");
            route()
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")?
        .run();
        futures_util::future::try_join(public, ops).await?;
        Ok(())
    })
}
