//! A call's identity and life: direction, states, the pure state machine that webhook events
//! drive, and how a call ended (reason and outcome).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Our id for a call (Telnyx has its own `call_control_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub uuid::Uuid);

impl CallId {
    /// Time-ordered (v7), so ids sort roughly by creation.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for CallId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// The stored form back (`"inbound"` / `"outbound"`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }

    /// The party at the far end of a call from `from` to `to`: the caller on an inbound call,
    /// the callee on an outbound one. Caller memory is keyed on it; keying on `from` would put
    /// every callee of an outbound campaign under the tenant's own number.
    pub fn remote_party<'a>(self, from: &'a str, to: &'a str) -> &'a str {
        match self {
            Direction::Inbound => from,
            Direction::Outbound => to,
        }
    }

    /// The organization's own number of a call from `from` to `to`: the one dialled inbound,
    /// the caller ID (checked as owned) outbound. A transfer presents it as caller ID, never
    /// the remote party's number (which the caller may have spoofed).
    pub fn own_number<'a>(self, from: &'a str, to: &'a str) -> &'a str {
        match self {
            Direction::Inbound => to,
            Direction::Outbound => from,
        }
    }
}

/// Where a live call is. `Ended` is terminal: nothing moves a call out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Outbound: dial sent, Telnyx has not reported the call yet.
    Dialing,
    /// Inbound: Telnyx parked the call and waits for our answer; outbound: ringing the callee.
    Ringing,
    /// Answer command sent, `call.answered` not seen yet.
    Answering,
    Answered,
    /// The media stream is up.
    Streaming,
    /// Handing the caller to a human.
    Escalating,
    Ended,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Dialing => "dialing",
            CallState::Ringing => "ringing",
            CallState::Answering => "answering",
            CallState::Answered => "answered",
            CallState::Streaming => "streaming",
            CallState::Escalating => "escalating",
            CallState::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "dialing" => CallState::Dialing,
            "ringing" => CallState::Ringing,
            "answering" => CallState::Answering,
            "answered" => CallState::Answered,
            "streaming" => CallState::Streaming,
            "escalating" => CallState::Escalating,
            "ended" => CallState::Ended,
            _ => return None,
        })
    }

    /// True once the far end picked up (whatever happened after).
    pub fn was_answered(self) -> bool {
        matches!(
            self,
            CallState::Answered | CallState::Streaming | CallState::Escalating
        )
    }
}

/// How a call ended, as the dashboard reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Resolved,
    Escalated,
    Abandoned,
    Failed,
    NoAnswer,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Resolved => "resolved",
            Outcome::Escalated => "escalated",
            Outcome::Abandoned => "abandoned",
            Outcome::Failed => "failed",
            Outcome::NoAnswer => "no_answer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "resolved" => Outcome::Resolved,
            "escalated" => Outcome::Escalated,
            "abandoned" => Outcome::Abandoned,
            "failed" => Outcome::Failed,
            "no_answer" => Outcome::NoAnswer,
            _ => return None,
        })
    }
}

/// Why the call stopped, recorded before the actor stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Telnyx reported the hangup (either side).
    Hangup,
    /// The call reached its configured time limit.
    TimeLimit,
    /// No media arrived for the configured time.
    NoMedia,
    /// The caller said nothing for `calls.silence_limit_secs`, was asked whether they were
    /// still there, and stayed silent as long again.
    Silence,
    /// Handed to a human.
    Transferred,
    /// We could not set the call up (no profile for the number, a command failed, ...).
    SetupFailed,
    /// A stage the conversation needs (STT, TTS, LLM) failed with its fallbacks: the call said
    /// a last line and was transferred or hung up.
    ProviderFailure,
    /// The engine shut down with the call still live. Nothing ends a call this way yet: it is
    /// reserved for the shutdown drain of issue 11, which ends the calls still live at its
    /// deadline with it (the reason and its outcome mapping are already part of the API).
    Shutdown,
    /// The instance running the call died (its heartbeat lapsed); a peer ended the call.
    InstanceLost,
    /// The call's actor panicked or stopped without finishing; its shard ended the call.
    InternalError,
    /// The instance was draining for a deploy and its deadline came with the call still live.
    InstanceDraining,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Hangup => "hangup",
            EndReason::TimeLimit => "time_limit",
            EndReason::NoMedia => "no_media",
            EndReason::Silence => "silence",
            EndReason::Transferred => "transferred",
            EndReason::SetupFailed => "setup_failed",
            EndReason::ProviderFailure => "provider_failure",
            EndReason::Shutdown => "shutdown",
            EndReason::InstanceLost => "instance_lost",
            EndReason::InternalError => "internal_error",
            EndReason::InstanceDraining => "instance_draining",
        }
    }
}

/// What a webhook (or the engine itself) says happened to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallSignal {
    /// Telnyx reported the call (`call.initiated`).
    Initiated,
    /// We sent the answer command.
    AnswerSent,
    Answered,
    StreamingStarted,
    StreamingStopped,
    EscalationStarted,
    HungUp,
}

/// The pure transition function. Signals that make no sense in the current state (late,
/// duplicated or out of order webhooks) leave the state as it is: the call stays consistent.
pub fn next_state(state: CallState, signal: &CallSignal) -> CallState {
    use CallSignal as S;
    use CallState as C;
    match (state, signal) {
        (C::Ended, _) => C::Ended,
        (_, S::HungUp) => C::Ended,
        (C::Dialing, S::Initiated) => C::Ringing,
        (C::Ringing, S::AnswerSent) => C::Answering,
        // A streaming.started that overtakes call.answered still means the call is up.
        (C::Dialing | C::Ringing | C::Answering, S::Answered) => C::Answered,
        (C::Dialing | C::Ringing | C::Answering | C::Answered, S::StreamingStarted) => C::Streaming,
        (C::Streaming, S::StreamingStopped) => C::Answered,
        (C::Answered | C::Streaming, S::EscalationStarted) => C::Escalating,
        (s, _) => s,
    }
}

/// The outcome of a call that ended in `reason` having reached `last_state`.
/// (The conversation layer refines `Resolved` and `Escalated` from what was said.)
pub fn outcome_for(direction: Direction, last_state: CallState, reason: EndReason) -> Outcome {
    match reason {
        EndReason::Transferred => return Outcome::Escalated,
        EndReason::SetupFailed | EndReason::ProviderFailure => return Outcome::Failed,
        _ => {}
    }
    if last_state == CallState::Escalating {
        return Outcome::Escalated;
    }
    if !last_state.was_answered() {
        return match direction {
            // The caller gave up before we picked up.
            Direction::Inbound => Outcome::Abandoned,
            Direction::Outbound => Outcome::NoAnswer,
        };
    }
    match reason {
        EndReason::Hangup => Outcome::Resolved,
        // The caller went quiet and stayed quiet: they left the conversation.
        EndReason::Silence => Outcome::Abandoned,
        EndReason::TimeLimit
        | EndReason::NoMedia
        | EndReason::Shutdown
        | EndReason::InstanceLost
        | EndReason::InternalError
        | EndReason::InstanceDraining => Outcome::Failed,
        EndReason::Transferred | EndReason::SetupFailed | EndReason::ProviderFailure => {
            Outcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_party_is_the_caller_inbound_and_the_callee_outbound() {
        assert_eq!(
            Direction::Inbound.remote_party("+1caller", "+1us"),
            "+1caller"
        );
        assert_eq!(
            Direction::Outbound.remote_party("+1us", "+1callee"),
            "+1callee"
        );
        for d in [Direction::Inbound, Direction::Outbound] {
            assert_eq!(Direction::parse(d.as_str()), Some(d));
        }
        assert_eq!(Direction::parse("sideways"), None);
    }
    use CallSignal as S;
    use CallState as C;

    #[test]
    fn inbound_lifecycle() {
        let mut s = C::Ringing;
        for (signal, expected) in [
            (S::AnswerSent, C::Answering),
            (S::Answered, C::Answered),
            (S::StreamingStarted, C::Streaming),
            (S::HungUp, C::Ended),
        ] {
            s = next_state(s, &signal);
            assert_eq!(s, expected);
        }
    }

    #[test]
    fn ended_is_terminal_and_late_events_change_nothing() {
        for signal in [S::Answered, S::StreamingStarted, S::Initiated, S::HungUp] {
            assert_eq!(next_state(C::Ended, &signal), C::Ended);
        }
        // A duplicate call.answered after streaming started does not go backwards.
        assert_eq!(next_state(C::Streaming, &S::Answered), C::Streaming);
        assert_eq!(next_state(C::Answered, &S::Initiated), C::Answered);
    }

    #[test]
    fn streaming_before_answered_counts_as_answered() {
        assert_eq!(next_state(C::Answering, &S::StreamingStarted), C::Streaming);
    }

    #[test]
    fn outcomes() {
        use Direction::*;
        assert_eq!(
            outcome_for(Inbound, C::Ringing, EndReason::Hangup),
            Outcome::Abandoned
        );
        assert_eq!(
            outcome_for(Outbound, C::Ringing, EndReason::Hangup),
            Outcome::NoAnswer
        );
        assert_eq!(
            outcome_for(Inbound, C::Streaming, EndReason::Hangup),
            Outcome::Resolved
        );
        assert_eq!(
            outcome_for(Inbound, C::Streaming, EndReason::NoMedia),
            Outcome::Failed
        );
        assert_eq!(
            outcome_for(Inbound, C::Escalating, EndReason::Hangup),
            Outcome::Escalated
        );
        assert_eq!(
            outcome_for(Inbound, C::Streaming, EndReason::Silence),
            Outcome::Abandoned
        );
    }
}
