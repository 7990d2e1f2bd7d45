//! Periodic actor timers on a process-wide grid: every actor's timer of the same period fires
//! at the same instants (multiples of the period since the process's first such timer), so the
//! watchdogs of every call on one arbiter cost one wake-up per period instead of one each.
//! Plain tasks (the cluster heartbeat and sweep) wait for the grid with [`grid_tick`], so an idle
//! engine's periodic work of the same or multiple periods shares its wake-ups too.

use actix::{Actor, AsyncContext, Context};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Runs `f` at every multiple of `period` on the process grid, from the next one on, for as long
/// as the actor lives (like `run_interval`, which starts each actor's ticks at its own start).
pub fn run_on_grid<A, F>(ctx: &mut Context<A>, period: Duration, mut f: F)
where
    A: Actor<Context = Context<A>>,
    F: FnMut(&mut A, &mut Context<A>) + 'static,
{
    ctx.run_later(
        until_next_tick(period, origin().elapsed()),
        move |act, ctx| {
            f(act, ctx);
            run_on_grid(ctx, period, f);
        },
    );
}

/// Waits until the next multiple of `period` on the process grid (for a task's loop).
pub async fn grid_tick(period: Duration) {
    tokio::time::sleep(until_next_tick(period, origin().elapsed())).await;
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// From `elapsed` (since the grid's origin) to the next grid instant. A tick that fired a hair
/// early or late never runs twice: the next instant is at least a millisecond away (the timer
/// wheel's resolution).
fn until_next_tick(period: Duration, elapsed: Duration) -> Duration {
    let period_ns = period.as_nanos().max(1);
    let into = elapsed.as_nanos() % period_ns;
    let wait = Duration::from_nanos((period_ns - into) as u64);
    if wait < Duration::from_millis(1) {
        wait + period
    } else {
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_land_on_multiples_of_the_period() {
        let s = Duration::from_secs(1);
        assert_eq!(
            until_next_tick(s, Duration::from_millis(250)),
            Duration::from_millis(750)
        );
        assert_eq!(
            until_next_tick(s, Duration::from_millis(3_999)),
            Duration::from_millis(1)
        );
        // On the tick (or a hair after it): the next one, not the same one again.
        assert_eq!(until_next_tick(s, Duration::from_secs(4)), s);
        assert_eq!(
            until_next_tick(s, Duration::from_micros(4_000_300)),
            Duration::from_micros(999_700)
        );
        // Two actors started at different moments share the instant they fire at.
        let a = Duration::from_millis(120) + until_next_tick(s, Duration::from_millis(120));
        let b = Duration::from_millis(870) + until_next_tick(s, Duration::from_millis(870));
        assert_eq!(a, b);
    }
}
