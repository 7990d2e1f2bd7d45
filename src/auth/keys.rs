//! The key set: one Ed25519 signing key (with its `kid`) and every public key tokens may still
//! be signed with, so a key rotation logs nobody out. Also the JWKS document that publishes them.

use crate::config::AuthSettings;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::Serialize;
use std::collections::HashMap;

/// A key that cannot be used, named by its configuration key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.signing_key: not configured")]
    Missing,
    #[error("auth.signing_key: not an Ed25519 PKCS#8 PEM private key")]
    BadSigningKey,
    #[error("auth.verification_keys: key {0:?} is not an Ed25519 SPKI PEM public key")]
    BadPublicKey(String),
    #[error("auth.verification_keys: key id {0:?} is used twice")]
    DuplicateKid(String),
    #[error("auth: cannot encode a generated key")]
    Encode,
}

struct PublicKey {
    kid: String,
    raw: [u8; 32],
    decoding: DecodingKey,
}

/// The signing key and the accepted verification keys, by key id.
pub struct KeySet {
    kid: String,
    encoding: EncodingKey,
    public: Vec<PublicKey>,
    by_kid: HashMap<String, usize>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.public.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("KeySet")
            .field("kid", &self.kid)
            .field("verification_kids", &kids)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// Builds the set from configuration; fails if no signing key is configured.
    pub fn from_settings(auth: &AuthSettings) -> Result<Self, KeyError> {
        if auth.signing_key.is_empty() {
            return Err(KeyError::Missing);
        }
        let signing = SigningKey::from_pkcs8_pem(auth.signing_key.expose().trim())
            .map_err(|_| KeyError::BadSigningKey)?;
        Self::build(&signing, auth)
    }

    /// As `from_settings`, but with a fresh random signing key (development without a key).
    pub fn generated(auth: &AuthSettings) -> Result<Self, KeyError> {
        Self::build(&generate_signing_key(), auth)
    }

    fn build(signing: &SigningKey, auth: &AuthSettings) -> Result<Self, KeyError> {
        let pem = signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| KeyError::Encode)?;
        let encoding =
            EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|_| KeyError::BadSigningKey)?;
        let mut set = KeySet {
            kid: auth.kid.clone(),
            encoding,
            public: Vec::new(),
            by_kid: HashMap::new(),
        };
        set.add_public(auth.kid.clone(), signing.verifying_key())?;
        for older in &auth.verification_keys {
            let key = VerifyingKey::from_public_key_pem(older.public_key.trim())
                .map_err(|_| KeyError::BadPublicKey(older.kid.clone()))?;
            set.add_public(older.kid.clone(), key)?;
        }
        Ok(set)
    }

    fn add_public(&mut self, kid: String, key: VerifyingKey) -> Result<(), KeyError> {
        if self.by_kid.contains_key(&kid) {
            return Err(KeyError::DuplicateKid(kid));
        }
        let raw = key.to_bytes();
        self.by_kid.insert(kid.clone(), self.public.len());
        self.public.push(PublicKey {
            kid,
            raw,
            // The rust_crypto backend wants the raw 32 bytes here, not SPKI DER.
            decoding: DecodingKey::from_ed_der(&raw),
        });
        Ok(())
    }

    /// Key id written in the header of every token signed now.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The public key a token with this `kid` must verify against, if the kid is known.
    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.by_kid.get(kid).map(|&i| &self.public[i].decoding)
    }

    /// The JWKS document (RFC 7517, OKP keys per RFC 8037): current key first.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self
                .public
                .iter()
                .map(|k| Jwk {
                    kty: "OKP",
                    crv: "Ed25519",
                    alg: "EdDSA",
                    key_use: "sig",
                    kid: k.kid.clone(),
                    x: URL_SAFE_NO_PAD.encode(k.raw),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Serialize)]
pub struct Jwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub key_use: &'static str,
    pub kid: String,
    pub x: String,
}

fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// A new key pair as PEM text: (PKCS#8 private key, SPKI public key), for `iace admin gen-key`.
pub fn generate_pem_pair() -> Result<(String, String), KeyError> {
    let key = generate_signing_key();
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| KeyError::Encode)?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| KeyError::Encode)?;
    Ok((private.to_string(), public))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{RateLimit, Secret, VerificationKey};

    pub(crate) fn settings(signing_key: &str, older: Vec<VerificationKey>) -> AuthSettings {
        let limit = RateLimit {
            max: 10,
            window_secs: 60,
        };
        AuthSettings {
            signing_key: Secret::new(signing_key),
            kid: "k2".into(),
            verification_keys: older,
            issuer: "iace".into(),
            audience: "iace-api".into(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 3600,
            leeway_secs: 0,
            password_memory_kib: 64,
            password_iterations: 1,
            client_ip_header: String::new(),
            login_per_ip: limit,
            login_per_account: limit,
            refresh_per_family: limit,
            refresh_per_ip: limit,
            password_concurrency: 1,
            password_wait_ms: 1000,
            refresh_grace_secs: 10,
            session_max_age_secs: 86400,
        }
    }

    #[test]
    fn generated_pem_pair_loads_and_older_keys_are_published() {
        let (private, _) = generate_pem_pair().unwrap();
        let (_, older_public) = generate_pem_pair().unwrap();
        let older = VerificationKey {
            kid: "k1".into(),
            public_key: older_public,
        };
        let set = KeySet::from_settings(&settings(&private, vec![older])).unwrap();
        assert_eq!(set.kid(), "k2");
        assert!(set.decoding_key("k1").is_some());
        assert!(set.decoding_key("k3").is_none());
        let kids: Vec<String> = set.jwks().keys.into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, ["k2", "k1"]);
    }

    #[test]
    fn bad_or_missing_keys_are_named() {
        assert!(matches!(
            KeySet::from_settings(&settings("", vec![])),
            Err(KeyError::Missing)
        ));
        assert!(matches!(
            KeySet::from_settings(&settings("-----BEGIN PRIVATE KEY-----\nAAAA\n", vec![])),
            Err(KeyError::BadSigningKey)
        ));
        let (private, _) = generate_pem_pair().unwrap();
        let twice = VerificationKey {
            kid: "k2".into(),
            public_key: generate_pem_pair().unwrap().1,
        };
        assert!(matches!(
            KeySet::from_settings(&settings(&private, vec![twice])),
            Err(KeyError::DuplicateKid(_))
        ));
    }
}
