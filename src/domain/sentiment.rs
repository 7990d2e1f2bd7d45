//! Caller sentiment: a score in -1..1 with a label, the local lexicon scorer used when the LLM
//! scorer fails or is switched off, and the rolling score that decides escalation.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    pub score: f32,
    pub label: SentimentLabel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SentimentLabel {
    Negative,
    Neutral,
    Positive,
}

impl SentimentLabel {
    pub fn for_score(score: f32) -> Self {
        if score <= -0.2 {
            SentimentLabel::Negative
        } else if score >= 0.2 {
            SentimentLabel::Positive
        } else {
            SentimentLabel::Neutral
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SentimentLabel::Negative => "negative",
            SentimentLabel::Neutral => "neutral",
            SentimentLabel::Positive => "positive",
        }
    }
}

impl Sentiment {
    /// Clamps the score into -1..1; the label follows the score.
    pub fn new(score: f32) -> Self {
        let score = if score.is_finite() {
            score.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        Self {
            score,
            label: SentimentLabel::for_score(score),
        }
    }
}

const NEGATIVE: &[&str] = &[
    "angry",
    "annoyed",
    "awful",
    "bad",
    "broken",
    "cancel",
    "complaint",
    "disappointed",
    "frustrated",
    "furious",
    "hate",
    "horrible",
    "useless",
    "ridiculous",
    "terrible",
    "unacceptable",
    "upset",
    "worst",
    "waste",
    "stupid",
    "sick",
    "tired",
    "never",
    "manager",
    "human",
    "lawyer",
    "scam",
];
const POSITIVE: &[&str] = &[
    "great",
    "thanks",
    "thank",
    "perfect",
    "good",
    "excellent",
    "awesome",
    "happy",
    "helpful",
    "love",
    "wonderful",
    "fixed",
    "works",
    "working",
    "appreciate",
    "nice",
    "glad",
];

/// Scores text by counting lexicon words (negations flip the next word). Fast, local, crude:
/// the fallback when the LLM scorer is unavailable.
pub fn lexicon_score(text: &str) -> Sentiment {
    let mut total = 0.0f32;
    let mut hits = 0u32;
    let mut negate = false;
    for raw in text.split(|c: char| !c.is_alphanumeric() && c != '\'') {
        let word = raw.to_lowercase();
        if word.is_empty() {
            continue;
        }
        if matches!(
            word.as_str(),
            "not" | "no" | "don't" | "dont" | "isn't" | "never" | "can't"
        ) {
            negate = true;
            if word != "never" {
                continue;
            }
        }
        let value = if NEGATIVE.contains(&word.as_str()) {
            -1.0
        } else if POSITIVE.contains(&word.as_str()) {
            1.0
        } else {
            continue;
        };
        total += if negate && value > 0.0 { -value } else { value };
        hits += 1;
        negate = false;
    }
    if hits == 0 {
        return Sentiment::new(0.0);
    }
    Sentiment::new(total / (hits as f32).max(2.0))
}

/// The call's running view of the caller's mood: an exponential moving average, so one bad
/// sentence does not escalate but a souring conversation does.
#[derive(Debug, Clone, Default)]
pub struct RollingSentiment {
    value: Option<f32>,
    samples: u32,
}

impl RollingSentiment {
    const ALPHA: f32 = 0.6;

    pub fn push(&mut self, score: f32) -> f32 {
        let next = match self.value {
            None => score,
            Some(v) => Self::ALPHA * score + (1.0 - Self::ALPHA) * v,
        };
        self.value = Some(next);
        self.samples += 1;
        next
    }

    pub fn value(&self) -> Option<f32> {
        self.value
    }

    /// True once at least two utterances were scored and the average sits below `threshold`.
    pub fn below(&self, threshold: f32) -> bool {
        self.samples >= 2 && self.value.is_some_and(|v| v < threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexicon_reads_obvious_moods() {
        assert!(lexicon_score("This is terrible, I am so frustrated").score < -0.5);
        assert!(lexicon_score("Great, thank you, that fixed it").score > 0.5);
        assert_eq!(
            lexicon_score("My router is in the kitchen").label,
            SentimentLabel::Neutral
        );
        assert!(lexicon_score("this is not good").score < 0.0);
    }

    #[test]
    fn rolling_needs_a_trend_to_escalate() {
        let mut r = RollingSentiment::default();
        r.push(-0.9);
        assert!(!r.below(-0.5), "one bad sentence is not enough");
        r.push(-0.8);
        assert!(r.below(-0.5));
        r.push(0.9);
        assert!(!r.below(-0.5));
    }
}
