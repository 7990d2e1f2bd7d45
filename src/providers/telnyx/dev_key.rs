//! The development webhook key: a signing key derived from a seed, which `iace sim` signs with by
//! default, and the rule for when the engine may trust it (no key configured, Telnyx is a loopback
//! simulator, not production). The rule is the engine's, so it lives here and not in `sim/`.

use super::webhook::public_key_b64;
use crate::config::{is_loopback_url, Environment, Settings};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

/// The seed of the development signing key: `iace sim` signs with it unless given another, and the
/// engine may trust its public key in development when no key is configured (never in production).
pub const DEV_KEY_SEED: &str = "iace-dev-telnyx-sim";

/// A signing key derived from `seed` (SHA-256 of it), so two processes agree on a key without
/// sharing a file.
pub fn signing_key_from_seed(seed: &str) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(seed.as_bytes()).into())
}

/// Base64 public key of the development key (see [`DEV_KEY_SEED`]).
pub fn dev_public_key_b64() -> String {
    public_key_b64(&signing_key_from_seed(DEV_KEY_SEED))
}

/// The webhook public key the engine should verify with: the configured one, or, outside
/// production when none is configured and Telnyx is a loopback simulator, the development key
/// `iace sim` signs with by default. `None` means webhooks cannot be verified (refuse them).
pub fn resolve_webhook_public_key(settings: &Settings) -> Option<String> {
    let telnyx = &settings.telnyx;
    if !telnyx.webhook_public_key.trim().is_empty() {
        return Some(telnyx.webhook_public_key.trim().to_owned());
    }
    let local_sim = is_loopback_url(&telnyx.base_url);
    (local_sim && settings.environment != Environment::Production).then(dev_public_key_b64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: Environment, base_url: &str, key: &str) -> Settings {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut s = Settings::load_for(&dir, Environment::Test).unwrap();
        s.environment = env;
        s.telnyx.base_url = base_url.into();
        s.telnyx.webhook_public_key = key.into();
        s
    }

    #[test]
    fn the_configured_webhook_key_wins() {
        let s = settings(Environment::Development, "http://127.0.0.1:8790", "abc=");
        assert_eq!(resolve_webhook_public_key(&s).as_deref(), Some("abc="));
    }

    #[test]
    fn the_dev_key_is_trusted_only_for_a_local_sim_outside_production() {
        let local = "http://127.0.0.1:8790";
        let s = settings(Environment::Development, local, "");
        assert_eq!(resolve_webhook_public_key(&s), Some(dev_public_key_b64()));
        let s = settings(Environment::Production, local, "");
        assert_eq!(resolve_webhook_public_key(&s), None);
        let s = settings(Environment::Development, "https://api.telnyx.com/v2", "");
        assert_eq!(resolve_webhook_public_key(&s), None);
    }

    #[test]
    fn seeded_keys_are_deterministic() {
        assert_eq!(
            signing_key_from_seed("a").to_bytes(),
            signing_key_from_seed("a").to_bytes()
        );
        assert_ne!(
            signing_key_from_seed("a").to_bytes(),
            signing_key_from_seed("b").to_bytes()
        );
    }
}
