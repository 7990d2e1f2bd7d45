//! Access tokens (EdDSA JWTs, verified with the algorithm, issuer, audience and key id pinned)
//! and refresh tokens (256 random bits, only ever stored as a SHA-256 hash).

use crate::auth::keys::KeySet;
use crate::auth::AuthError;
use crate::domain::Role;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The claims of an access token. `sid` (the refresh-token family, i.e. the login session) lets
/// logout and theft detection kill the access tokens of one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub org: Uuid,
    pub role: Role,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// A UUIDv7: its embedded millisecond timestamp orders tokens against "revoked at" marks
    /// more finely than `iat`'s whole seconds.
    pub jti: Uuid,
    pub sid: Uuid,
}

impl Claims {
    /// When the token was issued, in Unix milliseconds (from the UUIDv7 `jti`, else `iat`).
    pub fn issued_at_ms(&self) -> i64 {
        self.jti
            .get_timestamp()
            .map(|ts| {
                let (secs, nanos) = ts.to_unix();
                i64::try_from(secs)
                    .unwrap_or(i64::MAX / 1000)
                    .saturating_mul(1000)
                    .saturating_add(i64::from(nanos / 1_000_000))
            })
            .unwrap_or(self.iat.saturating_mul(1000))
    }
}

/// What an access token is about: who, in which organization, with which role, which session.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
    pub session_id: Uuid,
}

/// Signs and verifies access tokens with one key set and one issuer/audience pair.
#[derive(Debug)]
pub struct TokenCodec {
    keys: KeySet,
    issuer: String,
    audience: String,
    ttl_secs: i64,
    validation: Validation,
}

impl TokenCodec {
    pub fn new(
        keys: KeySet,
        issuer: &str,
        audience: &str,
        ttl_secs: u64,
        leeway_secs: u64,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = leeway_secs;
        Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
            validation,
        }
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Signs a new access token for `subject`, returning it with its claims.
    pub fn issue(&self, subject: Subject) -> Result<(String, Claims), AuthError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.user_id,
            org: subject.organization_id,
            role: subject.role,
            iat: now,
            nbf: now,
            exp: now.saturating_add(self.ttl_secs),
            jti: Uuid::now_v7(),
            sid: subject.session_id,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.keys.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, self.keys.encoding_key())
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("signing an access token: {e}")))?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm, key id, issuer, audience, `exp` and `nbf`. Revocation is
    /// checked separately (it needs Redis).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let invalid = |why: &'static str| AuthError::InvalidToken(why);
        // The header is read before any key is chosen; `alg` is pinned, never trusted.
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid("unexpected signing algorithm"));
        }
        let kid = header.kid.ok_or_else(|| invalid("missing key id"))?;
        let key = self
            .keys
            .decoding_key(&kid)
            .ok_or_else(|| invalid("unknown key id"))?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                ErrorKind::ImmatureSignature => invalid("token not valid yet"),
                ErrorKind::InvalidSignature => invalid("bad signature"),
                ErrorKind::InvalidAudience => invalid("wrong audience"),
                ErrorKind::InvalidIssuer => invalid("wrong issuer"),
                ErrorKind::InvalidAlgorithm => invalid("unexpected signing algorithm"),
                _ => invalid("malformed token"),
            })
    }
}

/// A new opaque refresh token: 32 random bytes, base64url.
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database keeps of a refresh token. The token carries 256 random bits, so a fast
/// hash is enough: nothing can be guessed, only looked up.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{generate_pem_pair, tests::settings};

    fn codec(ttl: u64) -> TokenCodec {
        let (private, _) = generate_pem_pair().unwrap();
        let keys = KeySet::from_settings(&settings(&private, vec![])).unwrap();
        TokenCodec::new(keys, "iace", "iace-api", ttl, 0)
    }

    fn subject() -> Subject {
        Subject {
            user_id: Uuid::new_v4(),
            organization_id: Uuid::new_v4(),
            role: Role::Agent,
            session_id: Uuid::new_v4(),
        }
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let codec = codec(900);
        let (token, claims) = codec.issue(subject()).unwrap();
        assert_eq!(codec.verify(&token).unwrap(), claims);
        assert_eq!(claims.exp - claims.iat, 900);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some("k2"));
        let ms = claims.issued_at_ms();
        assert!(
            (ms / 1000 - claims.iat).abs() <= 1,
            "{ms} vs {}",
            claims.iat
        );
    }

    #[test]
    fn another_codecs_token_is_rejected() {
        let (token, _) = codec(900).issue(subject()).unwrap();
        assert!(matches!(
            codec(900).verify(&token),
            Err(AuthError::InvalidToken(_))
        ));
        assert!(matches!(
            codec(900).verify("not.a.jwt"),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn refresh_tokens_are_random_and_hash_stably() {
        let a = new_refresh_token();
        assert_ne!(a, new_refresh_token());
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert_eq!(hash_refresh_token(&a), hash_refresh_token(&a));
        assert_eq!(hash_refresh_token(&a).len(), 32);
    }
}
