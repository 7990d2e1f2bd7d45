//! Several `iace serve` processes as one engine (issue 11): calls routed to their owner through
//! a front proxy that honours `fly-replay` (and through forwarding without it), orphans of a
//! killed instance ended within 10 s, drain on SIGTERM, admission control; plus the Redis
//! directory and leases on their own.

mod calls;
mod cpu_watermark;
mod fixture;
mod front_proxy;
mod live;
mod redis_keys;
mod stall;
mod supervision;

/// Held by the in-process tests that measure this process (its CPU use, its resident memory)
/// or that a busy process slows down (the fault hooks), so that they never overlap each other.
pub(crate) async fn process_exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await
}
