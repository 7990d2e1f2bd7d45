//! Reads the call metric families off the writes calls hand the recorder, so the call actor
//! needs no metric code of its own: a call's end (`status` ended, with outcome, end reason and
//! answered time), its rolling sentiment as it changes, each agent turn's latency, and the
//! `engine.escalation` events.

use crate::actors::recorder::Write;
use crate::telemetry::calls::CallMetrics;
use std::collections::HashMap;
use uuid::Uuid;

/// Live calls whose last sentiment is remembered; past this (calls that never reported an end,
/// e.g. an actor lost and ended by the takeover), the map starts over.
const MAX_TRACKED_CALLS: usize = 100_000;

pub struct CallOutcomes {
    metrics: CallMetrics,
    /// The latest rolling sentiment per live call, observed at its end.
    sentiment: HashMap<Uuid, f32>,
}

impl CallOutcomes {
    pub fn new(metrics: CallMetrics) -> Self {
        Self {
            metrics,
            sentiment: HashMap::new(),
        }
    }

    /// Looks at one write on its way to the database.
    pub fn observe(&mut self, write: &Write) {
        match write {
            Write::UpdateCall {
                call_id, changes, ..
            } => {
                if let Some(score) = changes.sentiment_avg {
                    if self.sentiment.len() >= MAX_TRACKED_CALLS {
                        self.sentiment.clear();
                    }
                    self.sentiment.insert(*call_id, score);
                }
                if let (Some(outcome), Some(reason)) = (&changes.outcome, &changes.end_reason) {
                    let sentiment = self.sentiment.remove(call_id);
                    let duration_ms = changes.duration_ms.unwrap_or(0);
                    self.metrics.ended(outcome, reason, duration_ms, sentiment);
                }
            }
            Write::InsertUtterance(u) if u.speaker == "agent" => {
                if let Some(latency) = u.latency_ms {
                    self.metrics.turn(latency);
                }
            }
            Write::InsertCallEvent(e) if e.event_type == "engine.escalation" => {
                let cause = e.payload["reason"].as_str().unwrap_or("other");
                self.metrics.escalated(cause);
            }
            _ => {}
        }
    }
}
