//! The recent Telnyx webhook deliveries this instance received, for `/admin/webhooks`: when,
//! the verification outcome, and for verified ones the event's id and type. Bounded (the
//! newest [`WebhookLog::CAPACITY`]); never a payload, a header or a signature.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// One delivery as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// `accepted`, `duplicate`, `routed` (sent on to the call's owner) or `rejected`.
    pub outcome: &'static str,
    /// Why verification refused it (`missing`, `malformed`, `invalid`, `stale`,
    /// `bad_public_key`); only for `rejected`.
    pub reason: Option<&'static str>,
    /// The verified event's id and type (absent for refused deliveries: their content is not
    /// trusted).
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub body_bytes: usize,
}

#[derive(Default)]
pub struct WebhookLog {
    recent: Mutex<VecDeque<Delivery>>,
}

impl WebhookLog {
    pub const CAPACITY: usize = 200;

    pub fn push(&self, delivery: Delivery) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= Self::CAPACITY {
            recent.pop_front();
        }
        recent.push_back(delivery);
    }

    /// The newest `limit` deliveries, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Delivery> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().take(limit).cloned().collect()
    }
}
