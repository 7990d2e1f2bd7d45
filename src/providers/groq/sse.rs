//! A minimal Server-Sent Events parser: bytes in (split anywhere, even inside a UTF-8
//! character), complete events out. What it buffers is bounded: a line or an event longer
//! than [`MAX_EVENT_BYTES`] (a server that never sends a newline) is dropped, not kept growing.

/// Longest line, and longest event (its data lines together), kept. Groq's chunks are a few
/// hundred bytes.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// One dispatched event: its `event:` name, if any, and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental parser; see the WHATWG event-stream format.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The current line went over the cap: its bytes are skipped up to the next newline.
    skipping: bool,
    event: Option<String>,
    data: Vec<String>,
    data_bytes: usize,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes and returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                if self.line.len() < MAX_EVENT_BYTES {
                    self.line.push(byte);
                } else {
                    self.line.clear();
                    self.skipping = true;
                }
                continue;
            }
            if std::mem::take(&mut self.skipping) {
                self.line.clear();
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        events
    }

    /// Bytes held between calls (the partial line and the event's data so far).
    pub fn buffered_bytes(&self) -> usize {
        self.line.len() + self.data_bytes
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            self.data_bytes = 0;
            if self.data.is_empty() {
                self.event = None;
                return None;
            }
            return Some(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data).join("\n"),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" if self.data_bytes + value.len() <= MAX_EVENT_BYTES => {
                self.data_bytes += value.len();
                self.data.push(value.to_owned());
            }
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_lines() {
        let mut parser = SseParser::new();
        let input = "data: {\"a\":1}\n\n: comment\r\nevent: error\r\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let bytes = input.as_bytes();
        let mut events = Vec::new();
        for piece in bytes.chunks(3) {
            events.extend(parser.push(piece));
        }
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: None,
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: Some("error".into()),
                    data: "x\ny".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                },
            ]
        );
    }

    #[test]
    fn multibyte_characters_survive_a_split() {
        let mut parser = SseParser::new();
        let bytes = "data: café\n\n".as_bytes();
        let (a, b) = bytes.split_at(10); // inside the two bytes of "é"
        assert!(parser.push(a).is_empty());
        assert_eq!(parser.push(b)[0].data, "café");
    }
}
