//! Text → IPA phonemes the way Piper makes them, from the `espeak-ng`
//! program.
//!
//! espeak-ng is GPL-3.0; linking its library would make Seer's binaries GPL,
//! so Seer runs the `espeak-ng` program as a child process instead (one call
//! per text, ~40 ms) and talks to it through pipes only.
//!
//! Piper's phonemes are espeak's, clause by clause, with the clause's
//! punctuation put back (espeak drops it, but the voices were trained with
//! it: it shapes intonation and pauses). `,` `:` `;` are followed by a space;
//! `.` `?` `!` end a sentence, and each sentence is synthesised on its own.
//! The program prints one line per clause, so this module splits the text
//! into clauses itself, sends them one per line and pairs the lines back up;
//! when espeak splits a clause further (an abbreviation, a number) the
//! clauses are phonemised one call each instead.

use crate::error::{ModelError, Result};
use std::io::Write;
use std::process::{Command, Stdio};
use unicode_normalization::UnicodeNormalization;

/// Where a clause ends and what Piper appends for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminator {
    /// End of text with no punctuation.
    None,
    /// `.`, `?` or `!`: appended, then the sentence ends.
    Sentence(char),
    /// `,`, `:` or `;`: appended with a space; the sentence goes on.
    Pause(char),
}

/// One clause of the input and its terminator.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    text: String,
    end: Terminator,
}

fn terminator(c: char) -> Option<Terminator> {
    match c {
        '.' | '?' | '!' => Some(Terminator::Sentence(c)),
        '…' => Some(Terminator::Sentence('.')),
        ',' | ':' | ';' => Some(Terminator::Pause(c)),
        _ => None,
    }
}

/// Splits at clause punctuation followed by white space or the end, as
/// espeak does. A run like `?!` or `...` counts once, by its first mark.
fn clauses(text: &str) -> Vec<Clause> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(end) = terminator(c) {
            let mut j = i;
            while j < chars.len() && terminator(chars[j]).is_some() {
                j += 1;
            }
            if j == chars.len() || chars[j].is_whitespace() {
                cur.extend(&chars[i..j]);
                out.push(Clause {
                    text: std::mem::take(&mut cur).trim().to_owned(),
                    end,
                });
                i = j;
                continue;
            }
        }
        cur.push(if c.is_whitespace() { ' ' } else { c });
        i += 1;
    }
    if !cur.trim().is_empty() {
        out.push(Clause {
            text: cur.trim().to_owned(),
            end: Terminator::None,
        });
    }
    out.retain(|c| !c.text.is_empty());
    out
}

/// Runs `espeak-ng` in IPA mode.
#[derive(Debug, Clone)]
pub struct Phonemizer {
    program: String,
    voice: String,
}

impl Phonemizer {
    /// A phonemizer for espeak voice `voice` (`en-us`), using the
    /// `espeak-ng` on `PATH`.
    pub fn new(voice: &str) -> Self {
        Self {
            program: "espeak-ng".into(),
            voice: voice.to_owned(),
        }
    }

    /// Uses `program` instead of `espeak-ng` (a full path, or a test's stand-in).
    pub fn with_program(mut self, program: &str) -> Self {
        self.program = program.to_owned();
        self
    }

    /// Runs espeak on `lines` (one clause each) and returns its output lines.
    fn espeak(&self, input: &str) -> Result<Vec<String>> {
        let fail = |reason: String| ModelError::Phonemes(format!("{}: {reason}", self.program));
        let mut child = Command::new(&self.program)
            .args(["-q", "--ipa", "-b", "1", "-v", &self.voice])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                fail(if e.kind() == std::io::ErrorKind::NotFound {
                    "not found; install the espeak-ng package (apt install espeak-ng)".into()
                } else {
                    e.to_string()
                })
            })?;
        // Written from another thread: espeak prints as it reads, and a long
        // text's phonemes fill the output pipe before all of it is written.
        let writer = child.stdin.take().map(|mut stdin| {
            let input = input.to_owned();
            std::thread::spawn(move || stdin.write_all(input.as_bytes()))
        });
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        if let Some(w) = writer {
            w.join()
                .map_err(|_| fail("its input writer panicked".into()))?
                .map_err(|e| fail(format!("writing its input: {e}")))?;
        }
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(fail(format!("{} ({})", out.status, err.trim())));
        }
        let text =
            String::from_utf8(out.stdout).map_err(|_| fail("printed invalid UTF-8".into()))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Phonemes of `text`, one string per sentence (NFD, punctuation
    /// re-attached). Text with nothing pronounceable gives no sentences.
    pub fn phonemize(&self, text: &str) -> Result<Vec<String>> {
        let clauses = clauses(text);
        if clauses.is_empty() {
            return Ok(Vec::new());
        }
        let input: String = clauses.iter().map(|c| format!("{}\n", c.text)).collect();
        let mut lines = self.espeak(&input)?;
        if lines.len() != clauses.len() {
            lines = clauses
                .iter()
                .map(|c| Ok(self.espeak(&c.text)?.join(" ")))
                .collect::<Result<_>>()?;
        }
        let mut sentences = Vec::new();
        let mut cur = String::new();
        for (clause, phonemes) in clauses.iter().zip(lines) {
            cur.push_str(&phonemes);
            match clause.end {
                Terminator::None => {}
                Terminator::Pause(p) => {
                    cur.push(p);
                    cur.push(' ');
                }
                Terminator::Sentence(p) => {
                    cur.push(p);
                    sentences.push(std::mem::take(&mut cur));
                }
            }
        }
        if !cur.trim().is_empty() {
            sentences.push(cur.trim_end().to_owned());
        }
        Ok(sentences
            .into_iter()
            .map(|s| s.nfd().collect::<String>())
            .filter(|s| s.chars().any(char::is_alphabetic))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_split_at_punctuation_before_space() {
        let c = clauses("Hello, world. It's 3.5 metres?! Yes");
        let texts: Vec<_> = c.iter().map(|c| (c.text.as_str(), c.end)).collect();
        assert_eq!(
            texts,
            vec![
                ("Hello,", Terminator::Pause(',')),
                ("world.", Terminator::Sentence('.')),
                ("It's 3.5 metres?!", Terminator::Sentence('?')),
                ("Yes", Terminator::None),
            ]
        );
    }

    #[test]
    fn text_without_words_has_no_clauses() {
        assert!(clauses("  \n ").is_empty());
        assert_eq!(clauses("...").len(), 1);
    }
}
