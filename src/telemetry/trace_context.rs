//! W3C Trace Context `traceparent` values (`00-<32 hex trace id>-<16 hex parent id>-<2 hex
//! flags>`): parsed from incoming HTTP requests and written on outgoing provider requests, so a
//! trace continues across Telnyx/dashboard → IACE → providers.

use std::fmt;

/// The header name (W3C Trace Context, lower case as HTTP/2 wants it).
pub const TRACEPARENT: &str = "traceparent";

/// One span's identity as carried by `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// Never zero.
    pub trace_id: u128,
    /// The sender's span (our parent). Never zero.
    pub span_id: u64,
    /// The sender recorded this trace (flag bit 0).
    pub sampled: bool,
}

impl TraceContext {
    /// Parses a `traceparent` value. Only version `00` is understood; for a higher version the
    /// spec says to read the first four fields, which this does when exactly those prefix it.
    /// Anything malformed, with upper-case hex, or with an all-zero id is `None` (the request
    /// then starts a new trace, as the spec asks).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        let bytes = value.as_bytes();
        // 2 + 1 + 32 + 1 + 16 + 1 + 2
        // ASCII first, so every slice below falls on a character boundary.
        if bytes.len() < 55 || !bytes[..55].is_ascii() {
            return None;
        }
        let version = &value[..2];
        if !is_lower_hex(version) || version == "ff" {
            return None;
        }
        if version == "00" && bytes.len() != 55 {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let (trace, span, flags) = (&value[3..35], &value[36..52], &value[53..55]);
        if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

/// The `traceparent` value (version 00).
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_spec_example() {
        let ctx = TraceContext::parse(GOOD).expect("valid");
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.span_id, 0x00f067aa0ba902b7);
        assert!(ctx.sampled);
        assert_eq!(ctx.to_string(), GOOD);
        let unsampled = TraceContext::parse(&GOOD.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        assert_eq!(
            unsampled.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
    }

    #[test]
    fn leading_zeros_are_kept_when_formatting() {
        let ctx = TraceContext {
            trace_id: 1,
            span_id: 2,
            sampled: false,
        };
        assert_eq!(
            ctx.to_string(),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
        assert_eq!(TraceContext::parse(&ctx.to_string()), Some(ctx));
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(TraceContext::parse(later).is_some());
        // Version 00 allows nothing after the flags.
        assert!(TraceContext::parse(&format!("{GOOD}-extra")).is_none());
    }

    #[test]
    fn hostile_and_malformed_values_are_refused() {
        let bad = [
            "",
            "00",
            "garbage",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u{e9}",
            "00-\u{e9}bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ];
        for value in bad {
            assert_eq!(TraceContext::parse(value), None, "{value:?}");
        }
        // Huge input is refused without work proportional to the attacker's wish.
        assert_eq!(TraceContext::parse(&"0".repeat(1 << 20)), None);
    }
}
