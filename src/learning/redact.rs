//! The redaction pass caller memory goes through before it is stored: payment and identity data
//! (card and account numbers, ID numbers, dates of birth, secrets) never reach the memory
//! table, so they can never reach a later caller's prompt either. Caller ID can be spoofed:
//! whatever memory keeps is readable by anyone who calls from that number.

/// What replaces a masked number.
pub const MASK: &str = "[redacted]";

/// Runs of this many digits or more (separators between them allowed) are masked: card, bank
/// account, ID and phone numbers, full dates. Shorter runs (a house number, a 5-digit postcode,
/// a router model) stay.
const MIN_MASKED_DIGITS: usize = 6;

/// Words that make a whole fact sensitive: it is dropped, not masked (what it is about is
/// itself the secret, e.g. "my PIN is the year I was born").
const SENSITIVE_WORDS: &[&str] = &[
    "card",
    "cards",
    "credit",
    "debit",
    "cvv",
    "cvc",
    "iban",
    "swift",
    "routing",
    "ssn",
    "passport",
    "licence",
    "license",
    "pin",
    "password",
    "passcode",
    "passwords",
];

/// Phrases that make a fact sensitive (matched in lower case).
const SENSITIVE_PHRASES: &[&str] = &[
    "security code",
    "bank account",
    "account number",
    "sort code",
    "social security",
    "national id",
    "tax id",
    "date of birth",
    "birth date",
    "born on",
    "mother's maiden",
];

/// True when `fact` is about payment or identity data and must not be kept at all.
pub fn is_sensitive(fact: &str) -> bool {
    let lower = fact.to_lowercase();
    let words = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty());
    let has_word = words.into_iter().any(|w| SENSITIVE_WORDS.contains(&w));
    has_word || SENSITIVE_PHRASES.iter().any(|p| lower.contains(p))
}

/// `text` with every long run of digits masked. A run is digits with single spaces, dashes,
/// dots or slashes between them ("4111 1111 1111 1111", "123-45-6789", "1990/05/12").
pub fn mask(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits, and separators only when a digit follows.
        let start = i;
        let mut end = i;
        let mut digits = 0;
        while end < chars.len() {
            if chars[end].is_ascii_digit() {
                digits += 1;
                end += 1;
            } else if is_separator(chars[end])
                && chars.get(end + 1).is_some_and(char::is_ascii_digit)
            {
                end += 1;
            } else {
                break;
            }
        }
        if digits >= MIN_MASKED_DIGITS {
            out.push_str(MASK);
        } else {
            out.extend(&chars[start..end]);
        }
        i = end;
    }
    out
}

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_account_and_id_numbers_are_masked_short_numbers_kept() {
        assert_eq!(
            mask("card 4111 1111 1111 1111, exp soon"),
            "card [redacted], exp soon"
        );
        assert_eq!(mask("SSN 123-45-6789."), "SSN [redacted].");
        assert_eq!(mask("born 1990/05/12"), "born [redacted]");
        assert_eq!(mask("call me on +15551234567"), "call me on +[redacted]");
        assert_eq!(
            mask("router R7000 at 12 Elm St, 94107"),
            "router R7000 at 12 Elm St, 94107"
        );
        assert_eq!(mask("2 or 3 times"), "2 or 3 times");
        assert_eq!(mask(""), "");
    }

    #[test]
    fn facts_about_payment_or_identity_are_sensitive() {
        for fact in [
            "My card number is on file",
            "Their PIN is 1234",
            "Gave their date of birth",
            "Has a bank account with us",
            "Passport expires next year",
        ] {
            assert!(is_sensitive(fact), "{fact}");
        }
        for fact in [
            "Name is Dana",
            "Uses a Netgear router",
            "Prefers evening calls",
            "Is spinning up a pinging test",
        ] {
            assert!(!is_sensitive(fact), "{fact}");
        }
    }
}
