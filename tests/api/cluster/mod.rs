//! Several `iace serve` processes as one engine (issue 11): calls routed to their owner through
//! a front proxy that honours `fly-replay` (and through forwarding without it), orphans of a
//! killed instance ended within 10 s, drain on SIGTERM, admission control; plus the Redis
//! directory and leases on their own.

mod caller_stall;
mod calls;
mod cpu_watermark;
mod fixture;
mod front_proxy;
mod live;
mod ownerless;
mod recorder;
mod redis_keys;
mod stall;
mod supervision;

/// The value of one sample in the `/metrics` text (0 when absent).
pub(crate) async fn sample(app: &crate::helpers::TestApp, series: &str) -> u64 {
    let text = app.ops_get("/metrics").await.text().await.expect("metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}

/// This process's resident memory (kB), from /proc: the engine runs in-process.
pub(crate) fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Held by the in-process tests that measure this process (its CPU use, its resident memory)
/// or that a busy process slows down (the fault hooks), so that they never overlap each other.
pub(crate) async fn process_exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await
}
