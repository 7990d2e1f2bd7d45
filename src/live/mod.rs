//! Live call events for the dashboard: the call actors publish small events (call started or
//! ended, transcript lines, sentiment, stage, turn latency) without ever waiting, one task per
//! instance forwards them to Redis pub/sub (`{prefix}:live:{org}`), and every instance's
//! `GET /api/v1/live` subscribes to its caller's organization channel (`crate::http::live`).

use crate::store::{KeptRedis, RedisPool};
use chrono::{DateTime, Utc};
use prometheus::{IntCounter, IntGauge, Registry};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The Redis pub/sub channel of one organization's live events.
pub fn channel(prefix: &str, organization_id: Uuid) -> String {
    format!("{prefix}:live:{organization_id}")
}

/// Where a call's agent is: waiting for the caller, preparing a reply, or talking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Listening,
    Thinking,
    Speaking,
}

/// One live event, as the dashboard receives it (`type` tells which).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    CallStarted {
        call_id: Uuid,
        direction: &'static str,
        from: String,
        to: String,
        agent_profile_id: Option<Uuid>,
        at: DateTime<Utc>,
    },
    CallEnded {
        call_id: Uuid,
        outcome: &'static str,
        at: DateTime<Utc>,
    },
    Transcript {
        call_id: Uuid,
        speaker: &'static str,
        text: String,
        at: DateTime<Utc>,
    },
    Sentiment {
        call_id: Uuid,
        score: f32,
        rolling: f32,
        at: DateTime<Utc>,
    },
    Stage {
        call_id: Uuid,
        stage: Stage,
    },
    TurnLatency {
        call_id: Uuid,
        latency_ms: i32,
    },
}

/// The live metrics (`iace_live_*`, the registry adds the prefix): events dropped because the publisher was behind, slow browsers
/// disconnected, browsers connected.
#[derive(Clone)]
pub struct LiveMetrics {
    pub events_dropped: IntCounter,
    pub clients_dropped: IntCounter,
    pub clients: IntGauge,
}

impl LiveMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let events_dropped = IntCounter::new(
            "live_events_dropped_total",
            "Live events dropped because the instance's publisher queue was full",
        )?;
        let clients_dropped = IntCounter::new(
            "live_clients_dropped_total",
            "Live (SSE) clients disconnected because they read too slowly",
        )?;
        let clients = IntGauge::new("live_clients", "Live (SSE) clients connected")?;
        registry.register(Box::new(events_dropped.clone()))?;
        registry.register(Box::new(clients_dropped.clone()))?;
        registry.register(Box::new(clients.clone()))?;
        Ok(Self {
            events_dropped,
            clients_dropped,
            clients,
        })
    }
}

/// The publishing side: cheap to clone, `publish` never blocks (a full queue drops the event
/// and counts it: a dashboard missing a line is better than a call waiting for Redis).
#[derive(Clone)]
pub struct LiveBus {
    tx: mpsc::Sender<(Uuid, String)>,
    metrics: LiveMetrics,
}

/// Events sent to Redis in one pipeline at most.
const BATCH: usize = 64;

impl LiveBus {
    /// Starts this instance's publisher task (needs a Tokio runtime) with a queue of
    /// `capacity` events.
    pub fn start(redis: RedisPool, prefix: String, capacity: usize, metrics: LiveMetrics) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Uuid, String)>(capacity.max(1));
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            // Batches come a few hundred times a second on a busy instance: one connection is
            // kept for them rather than checked out (and pinged) for each.
            let redis = KeptRedis::new(redis);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let mut pipe = deadpool_redis::redis::pipe();
                for (org, payload) in batch.drain(..) {
                    pipe.cmd("PUBLISH")
                        .arg(channel(&prefix, org))
                        .arg(payload)
                        .ignore();
                }
                if let Err(error) = redis.query::<()>(&pipe).await {
                    // Live views miss these events; the call and its records are unaffected.
                    tracing::warn!(%error, "live events not published");
                }
            }
        });
        Self { tx, metrics }
    }

    /// Queues `event` for the organization's channel; never waits.
    pub fn publish(&self, organization_id: Uuid, event: &LiveEvent) {
        let Ok(payload) = serde_json::to_string(event) else {
            return;
        };
        if self.tx.try_send((organization_id, payload)).is_err() {
            self.metrics.events_dropped.inc();
        }
    }

    pub fn metrics(&self) -> &LiveMetrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_type_and_fields() {
        let id = Uuid::nil();
        let json = serde_json::to_value(LiveEvent::Stage {
            call_id: id,
            stage: Stage::Thinking,
        })
        .unwrap();
        assert_eq!(json["type"], "stage");
        assert_eq!(json["stage"], "thinking");
        let json = serde_json::to_value(LiveEvent::TurnLatency {
            call_id: id,
            latency_ms: 420,
        })
        .unwrap();
        assert_eq!(json["type"], "turn_latency");
        assert_eq!(json["latency_ms"], 420);
    }

    #[test]
    fn each_organization_has_its_channel() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(channel("iace", a), channel("iace", b));
        assert_eq!(channel("p", a), format!("p:live:{a}"));
    }
}
