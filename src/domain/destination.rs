//! Where calls may go: the destination policy checked before we dial a number or hand a caller
//! to one (outbound calls, transfers, escalation numbers). A number must be E.164, start with
//! one of the allowed prefixes (country codes, say `+1`; none listed: any) and with none of the
//! blocked ones (premium-rate and high-risk ranges). Emergency and short codes (911, 112, 999)
//! are not E.164 and never pass. Toll fraud is dialling where each minute costs the tenant.

use super::phone::PhoneNumber;

/// The allowed and the blocked prefixes, each `+` and digits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    pub allowed_prefixes: Vec<String>,
    pub blocked_prefixes: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationRefused {
    #[error("{0} is not a destination this service dials (country not allowed)")]
    CountryNotAllowed(String),
    #[error("{0} is a premium-rate or high-risk destination")]
    Blocked(String),
}

impl DestinationPolicy {
    pub fn new(allowed: &[String], blocked: &[String]) -> Self {
        Self {
            allowed_prefixes: allowed.to_vec(),
            blocked_prefixes: blocked.to_vec(),
        }
    }

    /// Whether `number` may be dialled.
    pub fn check(&self, number: &PhoneNumber) -> Result<(), DestinationRefused> {
        let n = number.as_str();
        if self
            .blocked_prefixes
            .iter()
            .any(|p| n.starts_with(p.as_str()))
        {
            return Err(DestinationRefused::Blocked(n.to_owned()));
        }
        let allowed = self.allowed_prefixes.is_empty()
            || self
                .allowed_prefixes
                .iter()
                .any(|p| n.starts_with(p.as_str()));
        if !allowed {
            return Err(DestinationRefused::CountryNotAllowed(n.to_owned()));
        }
        Ok(())
    }

    /// A configured prefix is `+` then 1 to 15 digits (checked when the settings load).
    pub fn valid_prefix(prefix: &str) -> bool {
        prefix
            .strip_prefix('+')
            .is_some_and(|d| (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s).unwrap()
    }

    #[test]
    fn allowed_countries_pass_and_blocked_ranges_do_not() {
        let policy = DestinationPolicy::new(
            &["+1".into(), "+44".into()],
            &["+1900".into(), "+44909".into()],
        );
        assert!(policy.check(&number("+15551230000")).is_ok());
        assert!(policy.check(&number("+442071234567")).is_ok());
        assert_eq!(
            policy.check(&number("+19005550100")),
            Err(DestinationRefused::Blocked("+19005550100".into()))
        );
        assert!(matches!(
            policy.check(&number("+449091234567")),
            Err(DestinationRefused::Blocked(_))
        ));
        assert!(matches!(
            policy.check(&number("+88213012345")),
            Err(DestinationRefused::CountryNotAllowed(_))
        ));
        // Emergency and short codes are not even numbers we can dial.
        for short in ["911", "+911", "112", "+112"] {
            assert!(PhoneNumber::parse(short).is_err(), "{short}");
        }
        assert!(DestinationPolicy::default()
            .check(&number("+88213012345"))
            .is_ok());
    }

    #[test]
    fn prefixes_are_plus_and_digits() {
        assert!(DestinationPolicy::valid_prefix("+1"));
        assert!(DestinationPolicy::valid_prefix("+1900"));
        for bad in ["1", "+", "+1a", "", "+1234567890123456"] {
            assert!(!DestinationPolicy::valid_prefix(bad), "{bad}");
        }
    }
}
