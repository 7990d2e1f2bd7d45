//! `iace sim call --wait`: after the simulated caller dials, follow the call in the database
//! until it ends and print what happened: transcript, sentiment track, outcome, turn latencies.

use crate::config::Settings;
use crate::store::{calls, pool, utterances};
use std::fmt::Write as _;
use std::time::Duration;

/// Polls the call placed with `call_control_id` until it ends (or `timeout`), then renders it.
pub async fn follow_call(
    settings: &Settings,
    call_control_id: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let db = pool::db_pool(&settings.database, None)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let call = loop {
        let mut conn = db.get().await?;
        if let Some(call) = calls::find_by_control_id(&mut conn, call_control_id).await? {
            if call.status == "ended" {
                break call;
            }
        }
        drop(conn);
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("the call did not end within {timeout:?} (is `iace serve` running with a profile for that number?)");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The last utterances are written right behind the final call update.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = db.get().await?;
    let lines = utterances::list_for_call(&mut conn, call.organization_id, call.id).await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "call {} ({} -> {})",
        call.id, call.from_number, call.to_number
    );
    let _ = writeln!(out, "transcript:");
    for u in &lines {
        let sentiment = match (
            u.sentiment_label.as_deref(),
            u.sentiment_score,
            u.rolling_sentiment,
        ) {
            (Some(label), Some(score), Some(rolling)) => {
                format!("  [{label} {score:+.2}, rolling {rolling:+.2}]")
            }
            _ => String::new(),
        };
        let latency = u
            .latency_ms
            .map(|l| format!("  [turn latency {l} ms]"))
            .unwrap_or_default();
        let cut = if u.interrupted { " (interrupted)" } else { "" };
        let _ = writeln!(
            out,
            "  {:>6} ms {:>6}: {}{cut}{sentiment}{latency}",
            u.started_ms, u.speaker, u.text
        );
    }
    let track: Vec<String> = lines
        .iter()
        .filter_map(|u| u.rolling_sentiment)
        .map(|s| format!("{s:+.2}"))
        .collect();
    let _ = writeln!(out, "sentiment track: {}", track.join(" -> "));
    let latencies: Vec<String> = lines
        .iter()
        .filter_map(|u| u.latency_ms)
        .map(|l| format!("{l} ms"))
        .collect();
    let _ = writeln!(out, "turn latencies: {}", latencies.join(", "));
    let _ = writeln!(
        out,
        "outcome: {} (end reason {}, {} ms)",
        call.outcome.as_deref().unwrap_or("-"),
        call.end_reason.as_deref().unwrap_or("-"),
        call.duration_ms.unwrap_or(0)
    );
    db.close();
    Ok(out)
}
