//! Every prompt the engine sends to the language model, in one place: the live call's (the
//! reply's system prompt with what retrieval found, the sentiment rating) and the post-call
//! jobs' (summary, pattern extraction, caller memory). Each renders from plain inputs and has a
//! test that renders it; the Groq simulator keys on the markers below.

use crate::learning::RetrievedContext;
use crate::providers::groq::ChatMessage;
use crate::store::memory::MemorySnapshot;
use crate::store::utterances::UtteranceRow;
use std::fmt::Write as _;

/// Told to the LLM after the profile's own prompt in every reply turn.
const ON_THE_PHONE: &str =
    "You are speaking on the phone: answer in one to three short sentences, no lists or markup.";

/// System prompt of the sentiment rating of one caller sentence.
pub const SENTIMENT_PROMPT: &str = "You rate the sentiment of a caller's sentence. Answer JSON {\"score\": number from -1 to 1, \"label\": \"negative\"|\"neutral\"|\"positive\"}.";

/// The system prompt of a reply turn: the agent profile's prompt, the phone manner, then what
/// retrieval found (if anything).
pub fn reply_system(profile_prompt: &str, context: &RetrievedContext) -> String {
    let mut prompt = format!("{profile_prompt}\n{ON_THE_PHONE}");
    let section = retrieved_context(context);
    if !section.is_empty() {
        prompt.push_str("\n\n");
        prompt.push_str(&section);
    }
    prompt
}

/// The messages that ask for the sentiment of one caller sentence.
pub fn sentiment(sentence: String) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(SENTIMENT_PROMPT),
        ChatMessage::user(sentence),
    ]
}

/// What retrieval found, as a section of the reply's system prompt; empty when nothing was.
pub fn retrieved_context(context: &RetrievedContext) -> String {
    let mut out = String::new();
    if let Some(memory) = &context.memory {
        // Memory is keyed on the calling number, and caller ID can be spoofed: whoever calls
        // from a number hears what was said on it before, so the model is told not to trust it.
        out.push_str("## This caller (unverified)\nFrom earlier calls of this number: ");
        out.push_str(memory.summary.trim());
        out.push('\n');
        let facts = memory.fact_list();
        if !facts.is_empty() {
            out.push_str("Unverified facts: ");
            out.push_str(&facts.join("; "));
            out.push('\n');
        }
        out.push_str(UNVERIFIED_MEMORY);
    }
    if !context.patterns.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(
            "## Solutions that worked for similar problems\n\
             Use one if it fits what the caller describes; do not say where it came from.\n",
        );
        for (i, hit) in context.patterns.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}. Problem: {}\n   Resolution: {}",
                i + 1,
                hit.pattern.problem.trim(),
                hit.pattern.resolution.trim()
            );
        }
    }
    out
}

/// Told after a caller's memory: it may belong to someone else.
const UNVERIFIED_MEMORY: &str = "Caller ID can be spoofed, so this may not be the same person: \
use it to help, never confirm or reveal it to the caller, and do not act on it (account changes, \
personal details) before the caller has been verified. Do not recite it.\n";

/// Marker of the summary prompt (the Groq simulator keys on it).
pub const SUMMARY_MARKER: &str = "Summarise this call";
/// Marker of the pattern extraction prompt.
pub const EXTRACT_MARKER: &str = "Extract problem and resolution pairs";
/// Marker of the caller memory prompt.
pub const MEMORY_MARKER: &str = "caller memory";

/// System prompt of the `summarize_call` job.
pub const SUMMARY_PROMPT: &str = "Summarise this call between a caller and a support agent. \
Answer with one JSON object and nothing else, shaped exactly \
{\"summary\": string, \"outcome\": \"resolved\" | \"unresolved\"}: \
`summary` is two or three plain sentences (what the caller wanted, what was done, how it ended); \
`outcome` is \"resolved\" only if the caller's problem was solved during the call.";

/// System prompt of the `extract_patterns` job.
pub const EXTRACT_PROMPT: &str =
    "Extract problem and resolution pairs from this resolved support call. \
Answer with one JSON object and nothing else, shaped exactly \
{\"pairs\": [{\"problem\": string, \"resolution\": string}]}: \
each `problem` describes the caller's problem in general words (no names, numbers or dates), \
each `resolution` the steps that solved it. At most 3 pairs; an empty list if nothing was solved.";

/// System prompt of the `write_memory` job.
pub const MEMORY_PROMPT: &str = "Update the caller memory: what a support agent should know about \
this caller next time they call. Answer with one JSON object and nothing else, shaped exactly \
{\"summary\": string, \"facts\": [string]}: `summary` is one or two sentences about the caller \
and their history with us, `facts` short durable facts they told us (name, plan, device, \
preferences), at most 8. Keep earlier facts that still hold. Never keep payment or identity \
data: no card, bank account or ID numbers, dates of birth, PINs or passwords.";

/// `caller: ...` / `agent: ...` lines under a `Transcript:` heading.
pub fn transcript_text(transcript: &[UtteranceRow]) -> String {
    let mut out = String::from("Transcript:\n");
    for u in transcript {
        out.push_str(&u.speaker);
        out.push_str(": ");
        out.push_str(u.text.trim());
        out.push('\n');
    }
    out
}

/// The user message of the `write_memory` job: the earlier memory (if any), the call's summary
/// (if written) and the transcript.
pub fn memory_input(
    previous: Option<&MemorySnapshot>,
    summary: Option<&str>,
    transcript: &[UtteranceRow],
) -> String {
    let mut input = String::new();
    match previous {
        Some(p) => {
            input.push_str(&format!("Earlier memory: {}\n", p.summary));
            input.push_str(&format!("Earlier facts: {}\n", p.fact_list().join("; ")));
        }
        None => input.push_str("Earlier memory: none (first call)\n"),
    }
    if let Some(summary) = summary {
        input.push_str(&format!("Call summary: {summary}\n"));
    }
    input.push_str(&transcript_text(transcript));
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::patterns::{PatternHit, PatternRow};
    use chrono::Utc;
    use uuid::Uuid;

    fn utterance(seq: i32, speaker: &str, text: &str) -> UtteranceRow {
        UtteranceRow {
            seq,
            speaker: speaker.into(),
            text: text.into(),
            started_ms: 0,
            ended_ms: 0,
            sentiment_score: None,
            sentiment_label: None,
            rolling_sentiment: None,
            interrupted: false,
            latency_ms: None,
        }
    }

    fn memory() -> MemorySnapshot {
        MemorySnapshot {
            id: Uuid::nil(),
            organization_id: Uuid::nil(),
            caller_number: "+15550001111".into(),
            call_id: None,
            summary: "Calls about a router.".into(),
            facts: serde_json::json!(["name: Ada", "plan: fibre"]),
            embedding_model: "test".into(),
            created_at: Utc::now(),
        }
    }

    fn pattern(problem: &str, resolution: &str) -> PatternHit {
        PatternHit {
            pattern: PatternRow {
                id: Uuid::nil(),
                organization_id: Uuid::nil(),
                problem: problem.into(),
                resolution: resolution.into(),
                embedding_model: "test".into(),
                success_count: 0,
                failure_count: 0,
                usage_count: 0,
                source_call_id: None,
                created_at: Utc::now(),
                updated_at: Utc::now(),
                confirmed: true,
                source_caller: None,
            },
            similarity: 0.9,
        }
    }

    #[test]
    fn the_reply_prompt_is_the_profile_then_the_phone_manner() {
        let prompt = reply_system("You are Acme support.", &RetrievedContext::default());
        assert_eq!(prompt, format!("You are Acme support.\n{ON_THE_PHONE}"));
    }

    #[test]
    fn the_reply_prompt_carries_the_caller_memory_and_similar_solutions() {
        let context = RetrievedContext {
            memory: Some(memory()),
            patterns: vec![pattern(" Router offline ", "Restart it.")],
            ..Default::default()
        };
        let prompt = reply_system("Base.", &context);
        assert!(prompt.starts_with(&format!(
            "Base.\n{ON_THE_PHONE}\n\n## This caller (unverified)\n"
        )));
        assert!(prompt.contains("From earlier calls of this number: Calls about a router.\n"));
        assert!(prompt.contains("Unverified facts: name: Ada; plan: fibre\n"));
        assert!(prompt.contains("Caller ID can be spoofed"));
        assert!(prompt.contains("\n\n## Solutions that worked for similar problems\n"));
        assert!(prompt.contains("1. Problem: Router offline\n   Resolution: Restart it.\n"));
    }

    #[test]
    fn the_sentiment_request_is_the_rating_prompt_then_the_sentence() {
        let messages = sentiment("This is useless".into());
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].content, SENTIMENT_PROMPT);
        assert_eq!(messages[1].content, "This is useless");
        assert!(SENTIMENT_PROMPT.contains("\"score\""));
    }

    #[test]
    fn post_call_prompts_carry_the_markers_the_simulator_keys_on() {
        assert!(SUMMARY_PROMPT.starts_with(SUMMARY_MARKER));
        assert!(EXTRACT_PROMPT.starts_with(EXTRACT_MARKER));
        assert!(MEMORY_PROMPT.contains(MEMORY_MARKER));
    }

    #[test]
    fn the_transcript_is_one_speaker_line_per_utterance() {
        let text = transcript_text(&[
            utterance(1, "agent", "Hello! "),
            utterance(2, "caller", " My router is down."),
        ]);
        assert_eq!(
            text,
            "Transcript:\nagent: Hello!\ncaller: My router is down.\n"
        );
    }

    #[test]
    fn the_memory_input_is_earlier_memory_summary_then_transcript() {
        let transcript = [utterance(1, "caller", "Hi, Ada again.")];
        let first = memory_input(None, None, &transcript);
        assert_eq!(
            first,
            "Earlier memory: none (first call)\nTranscript:\ncaller: Hi, Ada again.\n"
        );
        let later = memory_input(Some(&memory()), Some("Router fixed."), &transcript);
        assert_eq!(
            later,
            "Earlier memory: Calls about a router.\nEarlier facts: name: Ada; plan: fibre\n\
             Call summary: Router fixed.\nTranscript:\ncaller: Hi, Ada again.\n"
        );
    }
}
