//! Media stream tokens: a short-lived EdDSA JWT in the `stream_url` we give Telnyx, naming the
//! one call whose media socket it opens, with a nonce (`jti`) that opens it once. Checked before
//! the WebSocket upgrade; the nonce is spent in Redis by the instance that owns the call. The
//! token is a bearer secret: [`redact`] strips it from anything we store or show.

use crate::auth::keys::KeySet;
use crate::auth::revocation::{connection, RedisFailure};
use crate::store::RedisPool;
use jsonwebtoken::{decode, encode, Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The audience of media tokens: never accepted as API access tokens, and the reverse.
pub const MEDIA_AUDIENCE: &str = "iace-media";

#[derive(Debug, Serialize, Deserialize)]
struct MediaClaims {
    sub: String,
    aud: String,
    iat: i64,
    exp: i64,
    /// The single-use nonce.
    jti: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaTokenError {
    #[error("media token is invalid or expired")]
    Invalid,
    #[error("media token is for another call")]
    WrongCall,
    #[error("media token could not be signed")]
    Signing,
}

/// What a valid token grants: one socket, until `expires_at` (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaGrant {
    pub nonce: String,
    pub expires_at: i64,
}

/// A token opening `call_id`'s media socket once, within `ttl_secs`.
pub fn issue(keys: &KeySet, call_id: Uuid, ttl_secs: u64) -> Result<String, MediaTokenError> {
    let now = chrono::Utc::now().timestamp();
    let claims = MediaClaims {
        sub: call_id.to_string(),
        aud: MEDIA_AUDIENCE.to_owned(),
        iat: now,
        exp: now + i64::try_from(ttl_secs).unwrap_or(120),
        jti: Uuid::new_v4().simple().to_string(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(keys.kid().to_owned());
    encode(&header, &claims, keys.encoding_key()).map_err(|_| MediaTokenError::Signing)
}

/// Checks signature (EdDSA only, known kid), audience, expiry and the call it names.
pub fn verify(keys: &KeySet, token: &str, call_id: Uuid) -> Result<MediaGrant, MediaTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| MediaTokenError::Invalid)?;
    if header.alg != Algorithm::EdDSA {
        return Err(MediaTokenError::Invalid);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.decoding_key(kid))
        .ok_or(MediaTokenError::Invalid)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[MEDIA_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    validation.leeway = 5;
    let data =
        decode::<MediaClaims>(token, key, &validation).map_err(|_| MediaTokenError::Invalid)?;
    if data.claims.sub != call_id.to_string() {
        return Err(MediaTokenError::WrongCall);
    }
    if data.claims.jti.is_empty() || data.claims.jti.len() > 64 {
        return Err(MediaTokenError::Invalid);
    }
    Ok(MediaGrant {
        nonce: data.claims.jti,
        expires_at: data.claims.exp,
    })
}

/// Spends the grant's nonce: true the first time, false ever after (until the token has
/// expired anyway). `SET NX` makes two sockets racing with one token see one winner.
pub async fn spend(
    redis: &RedisPool,
    key_prefix: &str,
    grant: &MediaGrant,
) -> Result<bool, RedisFailure> {
    // Kept a little past expiry so the leeway of `verify` is covered too.
    let ttl = (grant.expires_at - chrono::Utc::now().timestamp()).max(0) + 30;
    let mut conn = connection(redis).await?;
    let set: Option<String> = deadpool_redis::redis::cmd("SET")
        .arg(format!("{key_prefix}:media:nonce:{}", grant.nonce))
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(ttl)
        .query_async(&mut conn)
        .await
        .map_err(|e| RedisFailure(e.to_string()))?;
    Ok(set.is_some())
}

/// Replaces the value of every `token=` query parameter in the strings of `value` (stored event
/// payloads carry the `stream_url` Telnyx echoes back) with `[redacted]`.
pub fn redact(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(text) if text.contains("token=") => *text = redact_text(text),
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::Object(map) => map.values_mut().for_each(redact),
        _ => {}
    }
}

fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("token=") {
        let (head, tail) = rest.split_at(at + "token=".len());
        out.push_str(head);
        out.push_str("[redacted]");
        let end = tail
            .find(|c: char| c == '&' || c == '#' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_urls_anywhere_in_a_payload_are_redacted() {
        let mut payload = serde_json::json!({
            "stream_url": "wss://h/media/telnyx/1?owner=a&token=eyJ.abc.def",
            "nested": [{"u": "x?token=t1&y=2 and token=t2"}],
            "n": 3,
        });
        redact(&mut payload);
        assert_eq!(
            payload["stream_url"],
            "wss://h/media/telnyx/1?owner=a&token=[redacted]"
        );
        assert_eq!(
            payload["nested"][0]["u"],
            "x?token=[redacted]&y=2 and token=[redacted]"
        );
        assert_eq!(payload["n"], 3);
    }
}
