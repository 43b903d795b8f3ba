//! Turning generated tokens into the text a client may see, piece by piece.
//!
//! Two steps, each a small struct:
//!
//! - [`StreamDecoder`] turns token ids into whole UTF-8 text: a character
//!   split across byte-level tokens is held back until it is complete.
//! - [`StopFilter`] holds back text that could still turn out to be the start
//!   of a stop string, cuts the text at the first stop string, and releases
//!   what it held once generation ends without one. It works on text alone,
//!   so it is tested here without model weights.

use crate::error::Result;
use crate::tokenizer::TextTokenizer;

/// Turns token ids into text incrementally without splitting characters.
///
/// Byte-level tokens can end in the middle of a UTF-8 sequence; decoding such
/// a prefix yields U+FFFD. The decoder re-decodes a short window of recent
/// tokens and only releases text once it no longer ends in U+FFFD, the method
/// text-generation-inference uses.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDecoder {
    /// Adds one token; returns the text it completes (possibly empty).
    pub fn push(&mut self, tk: &TextTokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = tk.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = tk.decode(&self.ids[self.prefix_offset..])?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            let delta = full.get(prefix.len()..).unwrap_or_default().to_owned();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }
}

/// Decides which generated text can be shown now, given stop strings.
///
/// Text goes in with [`push`](Self::push) as it is decoded; what comes out
/// never contains a stop string nor the start of one, so a client never sees
/// text that is later taken back. A suffix that could grow into a stop string
/// (`"\nUs"` for a stop of `"\nUser:"`) is held until the next text decides
/// it; [`finish`](Self::finish) releases it when generation ends for another
/// reason. Once a stop string appears, [`stopped`](Self::stopped) is true and
/// [`text`](Self::text) ends just before it.
#[derive(Debug, Clone, Default)]
pub struct StopFilter {
    /// The stop strings (empty ones dropped: they would match everywhere).
    stop: Vec<String>,
    /// The longest stop string's length in bytes.
    longest: usize,
    /// Everything accepted so far (cut before a stop string).
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
    /// A stop string appeared.
    stopped: bool,
}

impl StopFilter {
    /// A filter for `stop` (no stop strings: every piece passes at once).
    pub fn new(stop: &[String]) -> Self {
        let stop: Vec<String> = stop.iter().filter(|s| !s.is_empty()).cloned().collect();
        Self {
            longest: stop.iter().map(String::len).max().unwrap_or(0),
            stop,
            ..Self::default()
        }
    }

    /// Adds newly decoded text; returns the part that is safe to show now,
    /// if any. After a stop string, further text is ignored.
    pub fn push(&mut self, delta: &str) -> Option<String> {
        if self.stopped {
            return None;
        }
        self.text.push_str(delta);
        let end = if self.stop.is_empty() {
            self.text.len()
        } else if let Some(at) = self.find_stop() {
            self.text.truncate(at);
            self.stopped = true;
            at
        } else {
            self.text.len() - self.held()
        };
        self.take(end)
    }

    /// Generation ended without a stop string: everything held back is
    /// released. Nothing after a stop string.
    pub fn finish(&mut self) -> Option<String> {
        if self.stopped {
            return None;
        }
        self.take(self.text.len())
    }

    /// Whether a stop string appeared.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// All text accepted so far, stop string excluded (it may run ahead of
    /// what was handed out).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text, for the final output.
    pub fn into_text(self) -> String {
        self.text
    }

    /// Where the first stop string starts, if one has appeared. Only the
    /// new text and the `longest - 1` bytes before it can hold one: anything
    /// earlier was searched on an earlier push.
    fn find_stop(&self) -> Option<usize> {
        let mut from = self.emitted.saturating_sub(self.longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        self.stop
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min()
    }

    /// Bytes at the end of the text that are a proper prefix of some stop
    /// string (whole characters only), so must wait.
    fn held(&self) -> usize {
        self.stop
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .find(|&n| s.is_char_boundary(n) && self.text.ends_with(&s[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }

    /// Hands out `text[emitted..end]` when it is not empty.
    fn take(&mut self, end: usize) -> Option<String> {
        if end <= self.emitted {
            return None;
        }
        let piece = self.text[self.emitted..end].to_owned();
        self.emitted = end;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `deltas` and returns the pieces handed out, then what
    /// `finish` released (if anything).
    fn run(stop: &[&str], deltas: &[&str]) -> (Vec<String>, Option<String>, StopFilter) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stop);
        let pieces = deltas.iter().filter_map(|d| f.push(d)).collect();
        let rest = f.finish();
        (pieces, rest, f)
    }

    #[test]
    fn without_stop_strings_everything_passes_at_once() {
        let (pieces, rest, f) = run(&[], &["Hel", "lo", ""]);
        assert_eq!(pieces, ["Hel", "lo"]);
        assert_eq!(rest, None);
        assert_eq!(f.text(), "Hello");
        assert!(!f.stopped());
    }

    #[test]
    fn a_stop_string_split_across_deltas_is_never_shown() {
        let (pieces, rest, f) = run(&["\nUser:"], &["Paris.", "\nU", "se", "r:", " more"]);
        assert_eq!(pieces, ["Paris."]);
        assert_eq!(rest, None);
        assert!(f.stopped());
        assert_eq!(f.text(), "Paris.");
    }

    #[test]
    fn text_before_a_stop_string_in_the_same_delta_is_shown() {
        let (pieces, _, f) = run(&["END"], &["one two", " threeEND four"]);
        assert_eq!(pieces.concat(), "one two three");
        assert_eq!(f.into_text(), "one two three");
    }

    #[test]
    fn a_partial_match_is_held_then_released() {
        // "\nUs" could be the start of "\nUser:" until "ed" arrives.
        let stop = ["\nUser:".to_string()];
        let mut f = StopFilter::new(&stop);
        assert_eq!(f.push("Yes").as_deref(), Some("Yes"));
        assert_eq!(f.push("\nUs"), None);
        assert_eq!(f.push("ed").as_deref(), Some("\nUsed"));
        // At the end of generation, a held prefix is released.
        assert_eq!(f.push("\nUser"), None);
        assert_eq!(f.finish().as_deref(), Some("\nUser"));
        assert_eq!(f.finish(), None);
        assert!(!f.stopped());
        assert_eq!(f.text(), "Yes\nUsed\nUser");
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        // "xy" is held as the start of "xyz"; then "yq" appears inside it,
        // so the "x" is shown and the rest cut.
        let (pieces, _, f) = run(&["xyz", "yq"], &["ax", "y", "q z"]);
        assert_eq!(pieces, ["a", "x"]);
        assert_eq!(f.text(), "ax");
        let (pieces, _, f) = run(&["b", "abc"], &["xa", "b"]);
        assert_eq!(pieces, ["x", "a"]);
        assert_eq!(f.text(), "xa");
    }

    #[test]
    fn multibyte_text_is_held_and_cut_on_character_boundaries() {
        // A stop string that starts with a 2-byte character.
        let (pieces, _, f) = run(&["ñx"], &["añ", "x"]);
        assert_eq!(pieces, ["a"]);
        assert_eq!(f.text(), "a");
        // A held 3-byte prefix released when the next character differs.
        let (pieces, rest, _) = run(&["日本"], &["今日", "曜"]);
        assert_eq!(pieces, ["今", "日曜"]);
        assert_eq!(rest, None);
        // The search window (4 bytes back from the 5 shown) starts inside
        // the first "é": it must step back to a boundary, not panic.
        let (pieces, _, f) = run(&["xyz!"], &["ééa", "xyz!"]);
        assert_eq!(pieces, ["ééa"]);
        assert!(f.stopped());
        assert_eq!(f.text(), "ééa");
        // A held multibyte prefix ("é" of "éa") is released whole at the end.
        let (pieces, rest, _) = run(&["éa"], &["e", "é"]);
        assert_eq!(pieces, ["e"]);
        assert_eq!(rest.as_deref(), Some("é"));
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        let (pieces, _, f) = run(&[""], &["a", "b"]);
        assert_eq!(pieces, ["a", "b"]);
        assert!(!f.stopped());
    }

    #[test]
    fn nothing_passes_after_a_stop() {
        let stop = ["!".to_string()];
        let mut f = StopFilter::new(&stop);
        assert_eq!(f.push("hi!").as_deref(), Some("hi"));
        assert_eq!(f.push("more"), None);
        assert_eq!(f.finish(), None);
        assert_eq!(f.text(), "hi");
    }
}
