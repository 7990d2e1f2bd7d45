//! Greeting audio, synthesised before the caller picks up and cached per profile in Redis, so
//! the first audio goes out the moment the media stream starts.

use crate::domain::audio::Codec;
use crate::providers::cartesia::{CartesiaClient, TtsEvent};
use crate::store::RedisPool;
use deadpool_redis::redis::AsyncCommands;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// How long a cached greeting lives (a profile edit changes the key anyway).
const TTL_SECS: u64 = 24 * 3600;

/// The Redis key of a greeting: anything that changes the audio changes the key.
pub fn cache_key(
    prefix: &str,
    profile_id: uuid::Uuid,
    text: &str,
    voice: &str,
    codec: Codec,
) -> String {
    let mut h = Sha256::new();
    for part in [text, voice, codec.cartesia_encoding()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}:greeting:{profile_id}:{hex}")
}

/// The greeting's audio from the cache, or synthesised now (one short Cartesia session) and
/// cached. `None` when neither works: the call then speaks it through its live TTS stream.
pub async fn prepare(
    redis: RedisPool,
    cartesia: CartesiaClient,
    key: String,
    text: String,
    voice: String,
    codec: Codec,
    budget: Duration,
) -> Option<Vec<u8>> {
    if let Ok(mut conn) = redis.get().await {
        if let Ok(Some(audio)) = conn.get::<_, Option<Vec<u8>>>(&key).await {
            if !audio.is_empty() {
                return Some(audio);
            }
        }
    }
    let audio = tokio::time::timeout(budget, synthesise(&cartesia, &text, &voice, codec))
        .await
        .ok()??;
    if let Ok(mut conn) = redis.get().await {
        let stored: Result<(), _> = conn.set_ex(&key, audio.as_slice(), TTL_SECS).await;
        if let Err(e) = stored {
            tracing::debug!(error = %e, "greeting not cached");
        }
    }
    Some(audio)
}

async fn synthesise(
    cartesia: &CartesiaClient,
    text: &str,
    voice: &str,
    codec: Codec,
) -> Option<Vec<u8>> {
    let mut conn = cartesia.connect().await.ok()?;
    let context_id = format!("greeting-{}", uuid::Uuid::new_v4());
    let mut request = cartesia.request(&context_id, text, codec, false);
    if !voice.is_empty() {
        request.voice = crate::providers::cartesia::Voice::id(voice.to_owned());
    }
    conn.sender.generate(request).ok()?;
    let mut audio = Vec::new();
    while let Some(event) = conn.events.next().await {
        match event.ok()? {
            TtsEvent::Chunk(chunk) => audio.extend(chunk.audio().ok()?),
            TtsEvent::Done(_) => return (!audio.is_empty()).then_some(audio),
            TtsEvent::Error(_) | TtsEvent::Closed(_) => return None,
            _ => {}
        }
    }
    None
}
