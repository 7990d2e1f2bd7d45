//! Small statistics for benchmark reports: percentiles of samples, quantiles of Prometheus
//! histograms scraped from the engine, and a process's CPU time and resident memory from /proc.

use std::collections::HashMap;
use std::time::Duration;

/// The `p` quantile (0..=1, nearest rank) of sorted durations, in milliseconds; 0 when empty.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

/// p50/p95/p99/max/mean of a set of millisecond samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    pub fn of_ms(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1]
        };
        Self {
            count: sorted.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: sorted[sorted.len() - 1],
            mean_ms: sorted.iter().sum::<f64>() / sorted.len() as f64,
        }
    }

    pub fn of(samples: &[Duration]) -> Self {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        Self::of_ms(&ms)
    }
}

/// One Prometheus histogram scraped from a text exposition: cumulative bucket counts by upper
/// bound (seconds), plus sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// The difference `self - earlier` (the observations made between two scrapes).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before: HashMap<u64, f64> = earlier
            .buckets
            .iter()
            .map(|(le, n)| (le.to_bits(), *n))
            .collect();
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| (*le, n - before.get(&le.to_bits()).copied().unwrap_or(0.0)))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The `q` quantile in milliseconds, interpolated linearly inside its bucket (as PromQL's
    /// histogram_quantile does). 0 without observations.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count <= 0.0 {
            return 0.0;
        }
        let rank = q * self.count;
        let mut lower = 0.0;
        let mut below = 0.0;
        for (le, cumulative) in &self.buckets {
            if *cumulative >= rank {
                if le.is_infinite() {
                    return lower * 1000.0;
                }
                let inside = cumulative - below;
                let fraction = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return (lower + (le - lower) * fraction) * 1000.0;
            }
            lower = *le;
            below = *cumulative;
        }
        lower * 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        if self.count <= 0.0 {
            0.0
        } else {
            self.sum / self.count * 1000.0
        }
    }

    /// Observations above `seconds` (exact when `seconds` is a bucket bound).
    pub fn count_above(&self, seconds: f64) -> f64 {
        let at_or_below = self
            .buckets
            .iter()
            .filter(|(le, _)| *le <= seconds)
            .map(|(_, n)| *n)
            .fold(0.0, f64::max);
        self.count - at_or_below
    }
}

/// The text exposition of a Prometheus registry, parsed just enough for benchmarks.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// `name{labels}` (labels sorted as exposed, `le` removed) → value.
    samples: HashMap<String, f64>,
    histograms: HashMap<String, Histogram>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            let mut le = None;
            let kept: Vec<&str> = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .filter(|l| match l.strip_prefix("le=") {
                    Some(bound) => {
                        le = Some(bound.trim_matches('"').to_owned());
                        false
                    }
                    None => true,
                })
                .collect();
            let series = |base: &str| {
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}{{{}}}", kept.join(","))
                }
            };
            if let (Some(base), Some(le)) = (name.strip_suffix("_bucket"), le) {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                scrape
                    .histograms
                    .entry(series(base))
                    .or_default()
                    .buckets
                    .push((bound, value));
            } else if let Some(base) = name.strip_suffix("_sum") {
                scrape.histograms.entry(series(base)).or_default().sum = value;
                scrape.samples.insert(series(name), value);
            } else if let Some(base) = name.strip_suffix("_count") {
                scrape.histograms.entry(series(base)).or_default().count = value;
                scrape.samples.insert(series(name), value);
            } else {
                scrape.samples.insert(series(name), value);
            }
        }
        scrape.histograms.retain(|_, h| !h.buckets.is_empty());
        scrape
    }

    /// A counter or gauge: `name` or `name{label="value",...}` exactly as exposed; 0 if absent.
    pub fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// The sum of every series of `name` whatever its labels.
    pub fn total(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }

    /// A histogram by `name{labels}` (without `le`); empty if absent.
    pub fn histogram(&self, series: &str) -> Histogram {
        self.histograms.get(series).cloned().unwrap_or_default()
    }
}

/// CPU time and resident memory of a running process, from /proc (Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ProcSample {
    /// User + system CPU time since the process started.
    pub cpu_secs: f64,
    /// The system (kernel) part of it: syscalls and the other kernel work charged to the process.
    pub system_secs: f64,
    pub rss_kib: u64,
    pub threads: u64,
}

/// Reads /proc/{pid}/stat and /proc/{pid}/status. `None` when the process is gone (or not Linux).
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (user, system) = cpu_times(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(ProcSample {
        cpu_secs: user + system,
        system_secs: system,
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:").unwrap_or(0),
    })
}

/// User and system CPU seconds from the text of a /proc stat file.
fn cpu_times(stat: &str) -> Option<(f64, f64)> {
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state(3) ... utime(14) stime(15) are at indexes 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / clock_ticks_per_sec(), stime / clock_ticks_per_sec()))
}

/// USER_HZ: 100 on every Linux architecture we deploy to (`getconf CLK_TCK`).
fn clock_ticks_per_sec() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# HELP x_seconds a histogram\n\
# TYPE x_seconds histogram\n\
x_seconds_bucket{stage=\"a\",le=\"0.001\"} 50\n\
x_seconds_bucket{stage=\"a\",le=\"0.002\"} 90\n\
x_seconds_bucket{stage=\"a\",le=\"0.005\"} 100\n\
x_seconds_bucket{stage=\"a\",le=\"+Inf\"} 100\n\
x_seconds_sum{stage=\"a\"} 0.12\n\
x_seconds_count{stage=\"a\"} 100\n\
frames_total{direction=\"in\"} 7\n\
frames_total{direction=\"out\"} 5\n\
up 1\n";

    #[test]
    fn histograms_are_parsed_and_quantiles_interpolate_inside_buckets() {
        let scrape = Scrape::parse(EXPOSITION);
        let h = scrape.histogram("x_seconds{stage=\"a\"}");
        assert_eq!(h.count, 100.0);
        assert_eq!(h.buckets.len(), 4);
        assert!((h.quantile_ms(0.5) - 1.0).abs() < 1e-9);
        // 95th of 100: 5 of the 10 observations inside (0.002, 0.005].
        assert!((h.quantile_ms(0.95) - 3.5).abs() < 1e-9);
        assert!((h.mean_ms() - 1.2).abs() < 1e-9);
        assert_eq!(h.count_above(0.002), 10.0);
        assert_eq!(scrape.total("frames_total"), 12.0);
        assert_eq!(scrape.value("frames_total{direction=\"in\"}"), 7.0);
        assert_eq!(scrape.value("up"), 1.0);
    }

    #[test]
    fn the_difference_of_two_scrapes_is_what_happened_between_them() {
        let later = Scrape::parse(EXPOSITION).histogram("x_seconds{stage=\"a\"}");
        let earlier = Histogram {
            buckets: vec![
                (0.001, 50.0),
                (0.002, 50.0),
                (0.005, 50.0),
                (f64::INFINITY, 50.0),
            ],
            sum: 0.02,
            count: 50.0,
        };
        let delta = later.since(&earlier);
        assert_eq!(delta.count, 50.0);
        assert_eq!(delta.buckets[0].1, 0.0);
        assert!((delta.quantile_ms(0.8) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn summaries_use_nearest_rank() {
        let s = Summary::of_ms(&(1..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!(
            (s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Summary::of_ms(&[]).count, 0);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = proc_sample(std::process::id()).expect("linux /proc");
        assert!(sample.rss_kib > 0);
        assert!(sample.threads >= 1);
    }

    #[test]
    fn user_and_system_time_are_read_from_their_own_fields() {
        // pid (comm with a space and a parenthesis) state ppid ... utime=700 stime=300 cutime cstime
        let stat = "4242 (iace (x) y) S 1 4242 4242 0 -1 4194560 123 0 0 0 700 300 9 8 20 0 7";
        assert_eq!(cpu_times(stat), Some((7.0, 3.0)));
        assert_eq!(cpu_times("4242 (cut short) S 1"), None);
    }

    #[test]
    fn a_thread_in_syscalls_is_counted_as_system_time() {
        let read = || {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("linux /proc");
            cpu_times(&stat).expect("stat fields")
        };
        let (user_before, system_before) = read();
        // 300 ms of syscalls (about 30 ticks): most land in the kernel.
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(300) {
            let _ = std::fs::metadata("/proc/self/stat");
        }
        let (user_after, system_after) = read();
        let (user, system) = (user_after - user_before, system_after - system_before);
        assert!(system > user, "user {user} s, system {system} s");
    }
}
