//! Matching what whisper heard against the wake phrase and the spoken
//! commands.
//!
//! Whisper spells a made-up name in many ways ("Seer", "Sier", "Sia"), so
//! the phrase is matched on letters only, with a small edit distance, and
//! may follow a word or two of filler ("okay, hey Seer"). The decoder is
//! also primed with the phrase (see [`wake_prompt`]), which fixes most
//! spellings at the source; the tolerance covers the rest.

/// Lower-case words with punctuation removed ("Hey, Seer!" → ["hey", "seer"]).
pub fn words(text: &str) -> Vec<String> {
    text.split(is_separator)
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// What separates words ("hey-seer/what" is three words).
fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '—' | '–' | '/')
}

/// Where the wake phrase ends in `text`, in words, if `text` starts with it
/// (after at most two filler words).
fn wake_end(heard: &[String], phrase: &[String]) -> Option<usize> {
    let target: String = phrase.concat();
    if target.is_empty() {
        return None;
    }
    // One edit per six letters: "heysier" matches "heyseer", "heysia" does not.
    let tolerance = (target.chars().count() / 6).max(1);
    let n = phrase.len();
    let mut best: Option<(usize, usize)> = None;
    for start in 0..=2.min(heard.len()) {
        // Whisper may split or join words ("hey seer" / "hey see ya").
        for len in n.saturating_sub(1).max(1)..=n + 1 {
            let end = start + len;
            if end > heard.len() {
                break;
            }
            let got: String = heard[start..end].concat();
            let d = strsim::levenshtein(&got, &target);
            if d <= tolerance && best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, end));
            }
        }
        if best.is_some() {
            break;
        }
    }
    best.map(|(_, end)| end)
}

/// What a stretch of speech means to the assistant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// "stop" / "cancel" (with or without the wake phrase).
    Stop,
    /// A question; `woke` says whether the wake phrase introduced it.
    Question {
        /// The words after the wake phrase, as whisper wrote them.
        text: String,
        /// Whether the wake phrase was said.
        woke: bool,
    },
    /// The wake phrase alone: the next utterance is the question.
    WakeOnly,
    /// Speech not meant for the assistant.
    Other,
}

/// Words that make an utterance a stop command when nothing else is said
/// (whisper sometimes repeats a short command: "Stop. Stop.").
const STOP_WORDS: &[&str] = &["stop", "cancel", "please", "now", "it", "that"];
const STOP_HEADS: &[&str] = &["stop", "cancel"];

/// Classifies `text` for a listener whose wake phrase is `phrase`.
/// `expecting` is true inside the follow-up window (or right after the
/// wake phrase alone), when a question needs no phrase.
pub fn classify(text: &str, phrase: &str, expecting: bool) -> Heard {
    let heard = words(text);
    let phrase = words(phrase);
    let (rest, woke) = match wake_end(&heard, &phrase) {
        Some(end) => (&heard[end..], true),
        None => (&heard[..], false),
    };
    if !rest.is_empty()
        && rest.iter().any(|w| STOP_HEADS.contains(&w.as_str()))
        && rest.iter().all(|w| STOP_WORDS.contains(&w.as_str()))
    {
        return Heard::Stop;
    }
    if woke && rest.is_empty() {
        return Heard::WakeOnly;
    }
    if !woke && !expecting {
        return Heard::Other;
    }
    let text = if woke {
        original_after(text, heard.len() - rest.len())
    } else {
        text.trim().to_owned()
    };
    Heard::Question { text, woke }
}

/// The part of `text` after its first `n` words, keeping whisper's own
/// capitalisation and punctuation for the question ("Hey Seer, what is…?"
/// → "What is…?").
fn original_after(text: &str, n: usize) -> String {
    let mut seen = 0;
    let mut rest = text;
    for piece in text.split_inclusive(is_separator) {
        if seen == n {
            break;
        }
        if !words(piece).is_empty() {
            seen += 1;
        }
        rest = &rest[piece.len()..];
    }
    let rest = rest.trim_start_matches(|c: char| is_separator(c) || ",.;:!".contains(c));
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
        out.push_str(chars.as_str());
    }
    out.trim_end().to_owned()
}

/// Whisper's greedy decoder loops on one-word clips ("Stop. Stop. Stop.");
/// a transcript that is one sentence repeated is that sentence once.
pub fn collapse_repeats(text: &str) -> String {
    let sentences: Vec<&str> = text
        .split_inclusive(['.', '!', '?'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let key = |s: &str| words(s).join(" ");
    match sentences.first() {
        Some(first) if sentences.len() > 1 && sentences.iter().all(|s| key(s) == key(first)) => {
            (*first).to_owned()
        }
        _ => text.trim().to_owned(),
    }
}

/// A decoder prompt that teaches whisper the wake phrase's spelling and the
/// commands ("Seer is a voice assistant. Hey Seer, stop. Cancel."). Measured
/// on espeak-ng speech: without it, base wrote "Hey, see ya" and "Canso".
pub fn wake_prompt(phrase: &str) -> String {
    let w = words(phrase);
    let cap = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    let name = w.last().map(|s| cap(s)).unwrap_or_default();
    let spoken: Vec<String> = w.iter().map(|s| cap(s)).collect();
    format!(
        "{name} is a voice assistant. {}, stop. Cancel.",
        spoken.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str, woke: bool) -> Heard {
        Heard::Question {
            text: text.into(),
            woke,
        }
    }

    #[test]
    fn wake_phrase_spellings() {
        let p = "hey seer";
        assert_eq!(
            classify("Hey Seer, what is the capital of France?", p, false),
            q("What is the capital of France?", true)
        );
        assert_eq!(
            classify("Hey, Sier, what is the capital of Japan?", p, false),
            q("What is the capital of Japan?", true)
        );
        assert_eq!(
            classify("Okay, hey seer. Tell me a joke.", p, false),
            q("Tell me a joke.", true)
        );
        assert_eq!(classify("Hey Seer.", p, false), Heard::WakeOnly);
        assert_eq!(
            classify("Hey Seer—what time is it?", p, false),
            q("What time is it?", true)
        );
        assert_eq!(
            classify("Hey Seer, où est la gare ?", p, false),
            q("Où est la gare ?", true)
        );
        assert_eq!(
            classify("What is the capital of Japan?", p, false),
            Heard::Other
        );
        assert_eq!(classify("Hey there, how are you?", p, false), Heard::Other);
        assert_eq!(
            classify("What is the capital of Japan?", p, true),
            q("What is the capital of Japan?", false)
        );
    }

    #[test]
    fn stop_commands() {
        let p = "hey seer";
        for t in [
            "Stop.",
            "Stop. Stop.",
            "Cancel",
            "Hey Seer, stop.",
            "stop it please",
        ] {
            assert_eq!(classify(t, p, false), Heard::Stop, "{t}");
            assert_eq!(classify(t, p, true), Heard::Stop, "{t}");
        }
        assert_eq!(
            classify("Stop the music in the kitchen", p, true),
            q("Stop the music in the kitchen", false)
        );
    }

    #[test]
    fn repeats_collapse() {
        assert_eq!(collapse_repeats("Stop. Stop. Stop!"), "Stop.");
        assert_eq!(collapse_repeats(" Hello there. "), "Hello there.");
        assert_eq!(collapse_repeats("Stop. Go on."), "Stop. Go on.");
    }

    #[test]
    fn prompt_spells_the_phrase() {
        assert_eq!(
            wake_prompt("hey seer"),
            "Seer is a voice assistant. Hey Seer, stop. Cancel."
        );
    }
}
