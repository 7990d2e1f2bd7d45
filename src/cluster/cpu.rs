//! This process's CPU use, sampled at each heartbeat, for admission control's optional CPU
//! watermark (`calls.max_cpu_percent`): above it the instance takes no new call.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` times: USER_HZ, which Linux fixes at 100 for
/// that interface whatever the kernel's own tick rate.
const USER_HZ: u64 = 100;

/// The share of the machine's cores this process used between two samples.
pub struct CpuSampler {
    last: Mutex<Option<(Duration, Instant)>>,
    percent: AtomicU32,
    cores: u32,
}

impl Default for CpuSampler {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            last: Mutex::new(None),
            percent: AtomicU32::new(0),
            cores: u32::try_from(cores).unwrap_or(1).max(1),
        }
    }
}

impl CpuSampler {
    /// Takes a sample; from the second on, updates [`CpuSampler::percent`] with the use since
    /// the previous one. Where `/proc` cannot be read the figure stays 0 (the watermark never
    /// refuses a call on a guess).
    pub fn sample(&self) {
        let Some(cpu) = process_cpu_time() else {
            return;
        };
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cpu_then, then)) = last.replace((cpu, now)) {
            let wall = now.duration_since(then).as_secs_f64();
            if wall > 0.0 {
                let used = cpu.saturating_sub(cpu_then).as_secs_f64();
                let percent = used / wall / f64::from(self.cores) * 100.0;
                self.percent
                    .store(percent.round().clamp(0.0, 100.0) as u32, Ordering::SeqCst);
            }
        }
    }

    /// CPU use at the last sample, in percent of all cores (0–100).
    pub fn percent(&self) -> u32 {
        self.percent.load(Ordering::SeqCst)
    }
}

/// User plus system CPU time of the whole process (every thread), from `/proc/self/stat`.
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// `utime + stime` (fields 14 and 15) of a `stat` line. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name_even_with_spaces_in_it() {
        let stat = "4242 (iace serve) S 1 4242 4242 0 -1 4194560 1183 0 0 0 250 37 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(287));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn a_busy_thread_shows_in_the_sample() {
        let sampler = CpuSampler::default();
        sampler.sample();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        sampler.sample();
        assert!(sampler.percent() > 0, "{x}");
    }
}
