//! Phone numbers in E.164 form (`+` then 8 to 15 digits), the only form Telnyx takes.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an E.164 phone number (+ then 8 to 15 digits)")]
pub struct InvalidPhoneNumber(pub String);

impl PhoneNumber {
    pub fn parse(s: &str) -> Result<Self, InvalidPhoneNumber> {
        let digits = s.strip_prefix('+').unwrap_or("");
        let ok = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            // Cut what we echo back: the input may be hostile and huge.
            Err(InvalidPhoneNumber(s.chars().take(32).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = InvalidPhoneNumber;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

/// In the OpenAPI document: a string of E.164 form, as `parse` accepts it.
impl utoipa::PartialSchema for PhoneNumber {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^\+[1-9][0-9]{7,14}$"))
            .description(Some("An E.164 phone number: + then 8 to 15 digits"))
            .examples([serde_json::json!("+15551230000")])
            .into()
    }
}

impl utoipa::ToSchema for PhoneNumber {}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_e164_and_rejects_the_rest() {
        assert!(PhoneNumber::parse("+15551230000").is_ok());
        for bad in [
            "15551230000",
            "+1555",
            "+1555123000012345",
            "+1555-123-0000",
            "",
            "+0123456789",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }
}
