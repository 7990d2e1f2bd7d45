//! Text handling for the dialogue: cutting a stream of LLM tokens into sentences, so each
//! sentence can go to speech synthesis as soon as it is complete.

/// Words that end in a period without ending a sentence (compared without the period,
/// case-insensitively). Ordinary words that also abbreviate ("no", "sat", "sun") are left out:
/// a sentence ending in them is more common in speech than the abbreviation.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "e.g", "i.e", "approx", "dept",
    "inc", "ltd", "corp", "jan", "feb", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
    "dec", "mon", "tue", "thu", "fri", "a.m", "p.m",
];

/// Characters that may follow a terminator and still belong to its sentence (`"Yes."` `(ok!)`).
const CLOSERS: &[char] = &['"', '\'', ')', ']', '”', '’'];

/// Cuts streamed text into sentences.
///
/// Feed tokens with [`push`](Self::push); it returns every sentence completed so far. A sentence
/// ends at `.`, `!`, `?` or `…` followed by white space, or at a line break. A period does not end
/// a sentence after a known abbreviation (`Dr.`), a single letter (`J. Smith`) or inside a number
/// (`3.5`: the period is not followed by white space). Call [`finish`](Self::finish) when the
/// stream ends to get the rest.
#[derive(Debug, Default, Clone)]
pub struct SentenceSplitter {
    buffer: String,
}

impl SentenceSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `token` and returns the sentences it completed (trimmed, never empty).
    pub fn push(&mut self, token: &str) -> Vec<String> {
        self.buffer.push_str(token);
        let mut sentences = Vec::new();
        while let Some(end) = self.find_boundary() {
            let rest = self.buffer.split_off(end);
            let sentence = std::mem::replace(&mut self.buffer, rest);
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                sentences.push(sentence.to_owned());
            }
        }
        sentences
    }

    /// Returns what is left (trimmed) when the stream is over, and empties the splitter.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buffer);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }

    /// The text received but not yet returned as a sentence.
    pub fn pending(&self) -> &str {
        &self.buffer
    }

    /// Byte offset just after the first complete sentence, if there is one. A boundary needs the
    /// character after it, so a trailing `.` waits for the next token.
    fn find_boundary(&self) -> Option<usize> {
        let text = self.buffer.as_str();
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for (i, &(pos, c)) in chars.iter().enumerate() {
            if c == '\n' {
                if text[..pos].trim().is_empty() {
                    continue;
                }
                return Some(pos + 1);
            }
            if !matches!(c, '.' | '!' | '?' | '…') {
                continue;
            }
            // Swallow repeated terminators and closing quotes: `?!`, `...`, `."`.
            let mut j = i + 1;
            while j < chars.len()
                && (matches!(chars[j].1, '.' | '!' | '?' | '…') || CLOSERS.contains(&chars[j].1))
            {
                j += 1;
            }
            let &(next_pos, next) = chars.get(j)?;
            if !next.is_whitespace() {
                continue;
            }
            if c == '.' && j == i + 1 && is_abbreviation(&text[..pos]) {
                continue;
            }
            return Some(next_pos);
        }
        None
    }
}

/// Whether the word just before a period makes it an abbreviation rather than a full stop.
fn is_abbreviation(before: &str) -> bool {
    let word = before
        .rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"')
        .next()
        .unwrap_or("");
    if word.is_empty() {
        return false;
    }
    let mut letters = word.chars();
    if let (Some(first), None) = (letters.next(), letters.next()) {
        // A lone capital is an initial ("J. Smith"). A lone digit is not special: "it costs 5."
        // ends a sentence far more often in speech than a numbered list item starts one.
        // "I" and "A" end sentences too often ("Neither do I.") to count as initials.
        return first.is_uppercase() && first != 'I' && first != 'A';
    }
    let lower = word.to_lowercase();
    ABBREVIATIONS.contains(&lower.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_tokens(tokens: &[&str]) -> Vec<String> {
        let mut splitter = SentenceSplitter::new();
        let mut out: Vec<String> = tokens.iter().flat_map(|t| splitter.push(t)).collect();
        out.extend(splitter.finish());
        out
    }

    #[test]
    fn splits_on_terminators_across_tokens() {
        let out = split_tokens(&["Hel", "lo there", ". How", " are you", "? Great", "! Bye"]);
        assert_eq!(out, vec!["Hello there.", "How are you?", "Great!", "Bye"]);
    }

    #[test]
    fn sentence_is_returned_as_soon_as_the_next_token_shows_the_boundary() {
        let mut s = SentenceSplitter::new();
        assert!(s.push("It is ready.").is_empty(), "a trailing period waits");
        assert_eq!(s.push(" Anything"), vec!["It is ready."]);
        assert_eq!(s.pending(), " Anything");
        assert_eq!(s.finish().as_deref(), Some("Anything"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn abbreviations_initials_and_decimals_do_not_end_sentences() {
        let out = split_tokens(&[
            "Dr. Smith can see you at 3.5 p.m. on Mon. the 4th. ",
            "J. R. Doe agreed, e.g. yesterday. Mrs. Lee too.",
        ]);
        assert_eq!(
            out,
            vec![
                "Dr. Smith can see you at 3.5 p.m. on Mon. the 4th.",
                "J. R. Doe agreed, e.g. yesterday.",
                "Mrs. Lee too."
            ]
        );
    }

    #[test]
    fn repeated_terminators_quotes_and_line_breaks() {
        let out = split_tokens(&[
            "Really?! He said \"yes.\" Then",
            " wait... ok\n- item one\n\nend",
        ]);
        assert_eq!(
            out,
            vec![
                "Really?!",
                "He said \"yes.\"",
                "Then wait...",
                "ok",
                "- item one",
                "end"
            ]
        );
    }

    #[test]
    fn prices_versions_and_numbers_at_the_end() {
        let out = split_tokens(&[
            "It costs $12.50 per month. Version 2.0.1 is out. ",
            "Pick 5. Neither do I. No.",
        ]);
        assert_eq!(
            out,
            vec![
                "It costs $12.50 per month.",
                "Version 2.0.1 is out.",
                "Pick 5.",
                "Neither do I.",
                "No."
            ]
        );
    }

    #[test]
    fn white_space_only_input_yields_nothing() {
        assert!(split_tokens(&["  ", "\n", " "]).is_empty());
    }
}
