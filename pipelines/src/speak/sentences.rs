//! Cutting a streamed answer into sentences as its deltas arrive, so the
//! first sentence is spoken while the model still writes the second.
//!
//! The rules are those of the `sentence-stream` package that Piper's
//! Wyoming server uses (written afresh here): a sentence ends at `.`, `!`,
//! `?` or `…` followed by white space and a capital letter (or a digit or
//! an opening quote), unless the word before the full stop is a known
//! abbreviation or a single initial ("Dr. Smith", "J. R. R. Tolkien"); a
//! blank line always ends one. Waiting for the next word's first letter
//! costs one token of latency and saves "3.5" and "e.g. this" from being
//! cut. Optionally the first sentence is cut early at a comma, so the
//! voice starts sooner on a long opening sentence.

/// Words that end in a full stop without ending the sentence (lower case,
/// without the stop).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "eg", "ie",
    "no", "fig", "approx", "inc", "ltd", "co", "corp", "dept", "est", "u.s", "u.k", "a.m", "p.m",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "ave",
    "rd", "gen", "col", "capt", "lt", "sgt", "rev", "vol", "ch", "pp", "cf", "al",
];

/// Words the first clause needs before a comma may cut it.
const FIRST_CLAUSE_WORDS: usize = 3;

/// Accumulates deltas and hands out whole sentences.
#[derive(Debug, Default)]
pub struct Sentences {
    buf: String,
    cut_first_clause: bool,
    emitted: usize,
}

impl Sentences {
    /// A splitter; `cut_first_clause` lets the first sentence end at a
    /// comma once it has a few words.
    pub fn new(cut_first_clause: bool) -> Self {
        Self {
            buf: String::new(),
            cut_first_clause,
            emitted: 0,
        }
    }

    /// Adds `delta`; returns the sentences it completed.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buf.push_str(delta);
        let mut out = Vec::new();
        while let Some(end) = self.boundary() {
            let rest = self.buf.split_off(end);
            let sentence = std::mem::replace(&mut self.buf, rest);
            self.buf = self.buf.trim_start().to_owned();
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                out.push(sentence.to_owned());
                self.emitted += 1;
            }
        }
        out
    }

    /// The rest, at the end of the answer.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }

    /// Byte offset just past the first complete sentence in the buffer.
    fn boundary(&self) -> Option<usize> {
        let b = &self.buf;
        let chars: Vec<(usize, char)> = b.char_indices().collect();
        for (k, &(at, c)) in chars.iter().enumerate() {
            if c == '\n' && chars.get(k + 1).is_some_and(|&(_, n)| n == '\n') && at > 0 {
                return Some(at);
            }
            let stop = matches!(c, '.' | '!' | '?' | '…');
            let comma = c == ',' && self.cut_first_clause && self.emitted == 0;
            if !stop && !comma {
                continue;
            }
            // The whole run of marks and closing quotes/brackets ends it.
            let mut j = k + 1;
            while chars.get(j).is_some_and(|&(_, n)| {
                matches!(
                    n,
                    '.' | '!' | '?' | '…' | '"' | '\'' | ')' | ']' | '”' | '’'
                )
            }) {
                j += 1;
            }
            let Some(&(ws_at, ws)) = chars.get(j) else {
                return None; // wait: the next character decides
            };
            if !ws.is_whitespace() {
                continue;
            }
            let mut n = j;
            while chars.get(n).is_some_and(|&(_, c)| c.is_whitespace()) {
                n += 1;
            }
            let Some(&(_, next)) = chars.get(n) else {
                return None; // wait for the next word
            };
            if comma {
                if b[..at].split_whitespace().count() >= FIRST_CLAUSE_WORDS {
                    return Some(ws_at);
                }
                continue;
            }
            let starts = next.is_uppercase()
                || next.is_ascii_digit()
                || matches!(next, '"' | '“' | '\'' | '(');
            if !starts || (c == '.' && abbreviation(&b[..at])) {
                continue;
            }
            return Some(ws_at);
        }
        None
    }
}

/// Whether the word ending `before` (the text up to a full stop) is an
/// abbreviation or an initial.
fn abbreviation(before: &str) -> bool {
    let word = before
        .rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"')
        .next()
        .unwrap_or("");
    let lower = word.to_lowercase();
    let single_initial = word.chars().count() == 1 && word.chars().all(char::is_uppercase);
    single_initial || ABBREVIATIONS.contains(&lower.as_str())
}

#[cfg(test)]
mod tests {
    use super::Sentences;

    /// Feeds `text` a few characters at a time, like a token stream.
    fn split(text: &str, cut: bool) -> Vec<String> {
        let mut s = Sentences::new(cut);
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for piece in chars.chunks(3) {
            out.extend(s.push(&piece.iter().collect::<String>()));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_end_at_a_stop_before_a_capital() {
        assert_eq!(
            split(
                "The capital of France is Paris. It is large! Is it? Yes… Quite.",
                false
            ),
            [
                "The capital of France is Paris.",
                "It is large!",
                "Is it?",
                "Yes…",
                "Quite."
            ]
        );
    }

    #[test]
    fn numbers_abbreviations_and_initials_do_not_end_sentences() {
        assert_eq!(
            split(
                "It costs 3.50 euros. Dr. Smith met J. R. Tolkien, e.g. at noon. Then 2 more.",
                false
            ),
            [
                "It costs 3.50 euros.",
                "Dr. Smith met J. R. Tolkien, e.g. at noon.",
                "Then 2 more."
            ]
        );
    }

    #[test]
    fn a_lower_case_word_after_a_stop_continues_the_sentence() {
        assert_eq!(
            split("Use the app. then restart", false),
            ["Use the app. then restart"]
        );
    }

    #[test]
    fn blank_lines_end_sentences() {
        assert_eq!(
            split("A list:\n\n- one\n- two", false),
            ["A list:", "- one\n- two"]
        );
    }

    #[test]
    fn the_first_clause_may_end_at_a_comma() {
        assert_eq!(
            split(
                "Well, the capital of France, as you know, is Paris. It is big, too.",
                true
            ),
            [
                "Well, the capital of France,",
                "as you know, is Paris.",
                "It is big, too."
            ]
        );
    }

    #[test]
    fn a_sentence_waits_for_the_next_word() {
        let mut s = Sentences::new(false);
        assert!(s.push("It is Paris.").is_empty());
        assert!(s.push(" ").is_empty());
        assert_eq!(s.push("The"), ["It is Paris."]);
        assert_eq!(s.finish().as_deref(), Some("The"));
    }
}
