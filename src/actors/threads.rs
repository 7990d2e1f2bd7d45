//! Names for the engine's threads, so `top -H`, `perf` and `iace bench idle` tell a call shard
//! from the recorder or an HTTP worker (actix names every arbiter thread `actix-rt|system`).

use actix::Arbiter;

/// A new arbiter whose thread is called `name` (Linux keeps the first 15 bytes).
pub fn named_arbiter(name: &str) -> Arbiter {
    let arbiter = Arbiter::new();
    let name = name.to_owned();
    arbiter.spawn_fn(move || name_current_thread(&name));
    arbiter
}

/// Renames the calling thread. Best effort: a platform without `/proc/thread-self` keeps the
/// old name, which only makes profiles harder to read.
pub fn name_current_thread(name: &str) {
    let name: String = name.chars().take(15).collect();
    let _ = std::fs::write("/proc/thread-self/comm", name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_takes_the_name_it_is_given_cut_to_fifteen_bytes() {
        let name = std::thread::spawn(|| {
            name_current_thread("iace-a-long-thread-name");
            std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default()
        })
        .join()
        .unwrap_or_default();
        assert_eq!(name.trim_end(), "iace-a-long-thr");
    }
}
