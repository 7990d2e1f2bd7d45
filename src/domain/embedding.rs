//! Embeddings as the engine stores them: a vector and the model that made it (vectors of
//! different models are never compared), plus the hashed bag-of-words embedding shared by the
//! local fallback embedder and the Gemini simulator.

use serde::{Deserialize, Serialize};

/// Dimensions of every stored vector (the `vector(768)` columns).
pub const EMBEDDING_DIMS: usize = 768;

/// Model name of the local hashed bag-of-words embedder.
pub const LOCAL_MODEL: &str = "local-hash-768";

/// One embedding and the model that produced it. Values are L2-normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub model: String,
    pub values: Vec<f32>,
}

impl Embedding {
    /// Normalises `values` (a zero vector stays zero).
    pub fn new(model: impl Into<String>, mut values: Vec<f32>) -> Self {
        normalize(&mut values);
        Self {
            model: model.into(),
            values,
        }
    }

    /// Cosine similarity with `other` (both normalised), `None` across models or sizes.
    pub fn similarity(&self, other: &Embedding) -> Option<f32> {
        (self.model == other.model && self.values.len() == other.values.len())
            .then(|| dot(&self.values, &other.values))
    }
}

/// Scales `values` to unit length in place; a zero vector is left alone.
pub fn normalize(values: &mut [f32]) {
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Words too common to say anything about a problem; without them, two texts lie close
/// only when they share meaningful words.
const STOP_WORDS: &[&str] = &[
    "the", "and", "for", "you", "your", "are", "was", "were", "but", "not", "with", "this", "that",
    "have", "has", "had", "can", "could", "would", "should", "will", "what", "when", "how", "why",
    "who", "our", "out", "any", "all", "from", "into", "there", "their", "they", "them", "then",
    "than", "its", "it's", "i'm", "i've", "just", "about", "been", "does", "did", "please",
    "hello", "yes", "yeah", "okay",
];

/// The words of `text` that count: lower case, at least three characters, no stop words, a
/// plural `s` dropped (so "routers" meets "router").
pub fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 3 && !STOP_WORDS.contains(&w.as_str()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.len() >= 3 && !stem.ends_with('s') => stem.to_owned(),
            _ => w,
        })
}

/// A deterministic embedding: each content word hashed (FNV-1a, `salt` mixed in) to one of
/// `dims` slots with a sign, counts added, then normalised. Texts sharing words lie close
/// together; texts sharing none are almost orthogonal.
pub fn hashed_bag_of_words(text: &str, dims: usize, salt: u64) -> Vec<f32> {
    let mut values = vec![0.0f32; dims.max(1)];
    for word in content_words(text) {
        let hash = fnv1a(word.as_bytes(), salt);
        let slot = (hash % values.len() as u64) as usize;
        let sign = if (hash >> 63) == 0 { 1.0 } else { -1.0 };
        values[slot] += sign;
    }
    normalize(&mut values);
    values
}

/// FNV-1a, 64 bits: stable across runs and platforms (unlike `DefaultHasher`).
pub fn fnv1a(bytes: &[u8], salt: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The local embedder: no network, always available, model [`LOCAL_MODEL`].
pub fn local_embedding(text: &str) -> Embedding {
    Embedding {
        model: LOCAL_MODEL.to_owned(),
        values: hashed_bag_of_words(text, EMBEDDING_DIMS, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_sharing_words_lie_closer_than_unrelated_ones() {
        let a = local_embedding("My internet connection keeps dropping every evening");
        let b = local_embedding("The internet keeps dropping in the evening");
        let c = local_embedding("I want to change the billing address on my invoice");
        let near = a.similarity(&b).unwrap();
        let far = a.similarity(&c).unwrap();
        assert!(near > 0.6, "{near}");
        assert!(far < 0.2, "{far}");
    }

    #[test]
    fn vectors_are_normalised_and_models_never_compare() {
        let a = local_embedding("router keeps rebooting");
        let norm: f32 = a.values.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let other = Embedding::new("gemini-embedding-001", a.values.clone());
        assert_eq!(a.similarity(&other), None);
        assert_eq!(a.values.len(), EMBEDDING_DIMS);
    }
}
