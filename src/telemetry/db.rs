//! `iace_db_query_duration_seconds{query}`: the time of every Postgres statement, measured by a
//! diesel instrumentation installed on every new connection (so no store function needs code
//! of its own). `query` is the statement's verb and first table (`select_calls`,
//! `insert_call_events`, `update_jobs`, ...): bounded by the schema, never bind values.

use diesel::connection::{Instrumentation, InstrumentationEvent};
use prometheus::{HistogramOpts, HistogramVec};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{LazyLock, Once};
use std::time::Instant;

/// One family for the process: diesel's default instrumentation is a plain `fn`, so it cannot
/// capture an application's registry; each registry registers this same family instead.
pub static QUERY_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "db_query_duration_seconds",
            "Postgres statements by verb and first table",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]),
        &["query"],
    )
    .unwrap_or_else(|e| unreachable!("constant histogram options are valid: {e}"))
});

/// Installs the timing instrumentation as diesel's default for connections opened from now on
/// (once per process).
pub fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        if let Err(e) = diesel::connection::set_default_instrumentation(|| {
            Some(Box::new(QueryTimer::default()))
        }) {
            tracing::warn!(error = %e, "database query timing not installed");
        }
    });
}

/// Per connection: when each statement in flight started (pipelined statements finish in order).
#[derive(Default)]
struct QueryTimer {
    started: VecDeque<Instant>,
}

impl Instrumentation for QueryTimer {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { .. } => self.started.push_back(Instant::now()),
            InstrumentationEvent::FinishQuery { query, .. } => {
                let Some(started) = self.started.pop_front() else {
                    return;
                };
                let mut head = Head::default();
                // Stops formatting at the limit (the binds, an embedding, are never rendered).
                let _ = write!(head, "{query}");
                QUERY_DURATION
                    .with_label_values(&[&query_label(&head.text)])
                    .observe(started.elapsed().as_secs_f64());
            }
            _ => {}
        }
    }
}

/// The first `LIMIT` bytes of a formatted statement; writing past them fails, which ends the
/// formatting early.
#[derive(Default)]
struct Head {
    text: String,
}

impl Head {
    const LIMIT: usize = 4096;
}

impl std::fmt::Write for Head {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = Self::LIMIT.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&s[..cut]);
        Err(std::fmt::Error)
    }
}

/// `{verb}_{table}` of a statement, `other` for what does not parse.
pub fn query_label(sql: &str) -> String {
    let upper = sql.trim_start().to_ascii_uppercase();
    let verb = upper.split_whitespace().next().unwrap_or("");
    let (verb, after) = match verb {
        "SELECT" => ("select", " FROM "),
        "INSERT" => ("insert", "INSERT INTO "),
        "UPDATE" => ("update", "UPDATE "),
        "DELETE" => ("delete", "DELETE FROM "),
        "WITH" => return "with".into(),
        "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => return "transaction".into(),
        _ => return "other".into(),
    };
    let table = upper
        .find(after)
        .map(|at| &sql.trim_start()[at + after.len()..])
        .and_then(|rest| {
            let name: String = rest
                .trim_start()
                .trim_start_matches('"')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
                .to_ascii_lowercase();
            (!name.is_empty() && name.len() <= 48).then_some(name)
        });
    match table {
        Some(table) => format!("{verb}_{table}"),
        None => format!("{verb}_other"),
    }
}

#[cfg(test)]
mod tests {
    use super::query_label;

    #[test]
    fn labels_are_verb_and_first_table() {
        assert_eq!(
            query_label(
                r#"SELECT "calls"."id" FROM "calls" WHERE "calls"."id" = $1 -- binds: [1]"#
            ),
            "select_calls"
        );
        assert_eq!(
            query_label(r#"INSERT INTO "call_events" ("a") VALUES ($1)"#),
            "insert_call_events"
        );
        assert_eq!(query_label(r#"UPDATE "jobs" SET "x" = $1"#), "update_jobs");
        assert_eq!(
            query_label("delete from patterns where id = $1"),
            "delete_patterns"
        );
        assert_eq!(query_label("SELECT 1"), "select_other");
        assert_eq!(query_label("SELECT x FROM (SELECT 1) s"), "select_other");
        assert_eq!(query_label("BEGIN"), "transaction");
        assert_eq!(query_label("VACUUM"), "other");
    }
}
