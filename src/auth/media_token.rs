//! Media stream tokens: a short-lived EdDSA JWT in the `stream_url` we give Telnyx, naming the
//! one call whose media socket it opens. Checked before the WebSocket upgrade.

use crate::auth::keys::KeySet;
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

/// A token opening `call_id`'s media socket for `ttl_secs`.
pub fn issue(keys: &KeySet, call_id: Uuid, ttl_secs: u64) -> Result<String, MediaTokenError> {
    let now = chrono::Utc::now().timestamp();
    let claims = MediaClaims {
        sub: call_id.to_string(),
        aud: MEDIA_AUDIENCE.to_owned(),
        iat: now,
        exp: now + i64::try_from(ttl_secs).unwrap_or(120),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(keys.kid().to_owned());
    encode(&header, &claims, keys.encoding_key()).map_err(|_| MediaTokenError::Signing)
}

/// Checks signature (EdDSA only, known kid), audience, expiry and the call it names.
pub fn verify(keys: &KeySet, token: &str, call_id: Uuid) -> Result<(), MediaTokenError> {
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
    Ok(())
}
