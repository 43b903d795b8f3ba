//! Streaming speech segmentation: Silero VAD scores the live audio in
//! 32 ms windows, and a small state machine with hysteresis turns the
//! scores into utterances.
//!
//! whisper.cpp's VAD resets the model's LSTM state on every call, so each
//! hop is scored together with the audio just before it (`CONTEXT`), which
//! warms the state up; only the new windows' scores are used. That costs
//! about five windows' work per new window (16 of context per 4 new).

use seer_models::Result;
use seer_models::vad::Vad;
use seer_platform::audio::{FRAME, RATE as RATE_HZ};
use std::collections::VecDeque;

/// Silero's window, samples (32 ms at 16 kHz).
pub const WINDOW: usize = 512;
const _: () = assert!(FRAME == WINDOW, "the microphone's frames are VAD windows");
/// Windows scored per VAD call (128 ms): the latency the VAD adds to both
/// the early transcript and the end of the hangover. At 256 ms the end of
/// speech → first token median was 822 ms (`bench-voice.sh`, tiny.en); each
/// halving costs more VAD work per second of audio, since every call also
/// scores `CONTEXT` windows.
const HOP: usize = 4;
/// Windows of earlier audio scored with each hop to warm up the LSTM.
const CONTEXT: usize = 16;
/// Samples per second.
const RATE: usize = RATE_HZ as usize;
const WINDOW_MS: u32 = (WINDOW * 1000 / RATE) as u32;

/// When speech starts and ends.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmenterOptions {
    /// A window at or above this probability starts speech.
    pub start_threshold: f32,
    /// Inside speech, windows at or above this still count as speech
    /// (hysteresis: a soft syllable does not end the utterance).
    pub stop_threshold: f32,
    /// Utterances with less speech than this are dropped (coughs, clicks), ms.
    pub min_speech_ms: u32,
    /// Silence that ends an utterance (the pause between sentences must be
    /// shorter), ms. The end-of-speech latency is at least this.
    pub hangover_ms: u32,
    /// Audio kept from before the speech started (the VAD is late on soft
    /// onsets), ms.
    pub pre_roll_ms: u32,
    /// Trailing silence kept after the speech, ms.
    pub post_roll_ms: u32,
    /// Longer utterances are cut here, seconds.
    pub max_seconds: f32,
}

impl Default for SegmenterOptions {
    fn default() -> Self {
        Self {
            start_threshold: 0.5,
            stop_threshold: 0.35,
            min_speech_ms: 250,
            hangover_ms: 600,
            pre_roll_ms: 300,
            post_roll_ms: 200,
            max_seconds: 30.0,
        }
    }
}

/// What the segmenter saw.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentEvent {
    /// Speech has lasted `min_speech_ms`: an utterance is under way.
    Started,
    /// An utterance ended (or reached `max_seconds`).
    Utterance(Utterance),
    /// Speech too short to count ended; nothing follows.
    Dropped,
    /// The speaker has been silent for `post_roll_ms`: if the silence lasts
    /// the hangover, the utterance will be exactly this audio. Transcribing
    /// it now, while the hangover runs, takes whisper off the end-of-speech
    /// latency; the transcript is used only if the [`SegmentEvent::Utterance`]
    /// that follows has the same samples (speech that resumes makes a longer
    /// one). Not sent when the hangover is no longer than the post-roll.
    Paused(Utterance),
}

/// One utterance's audio (16 kHz mono) and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// Pre-roll, speech and post-roll.
    pub samples: Vec<f32>,
    /// Audio between the last speech window and the moment the utterance
    /// was closed, ms (the hangover, plus up to one hop): how long ago the
    /// speaker stopped talking.
    pub since_speech_end_ms: u32,
    /// Whether `max_seconds` cut it.
    pub cut: bool,
}

struct Active {
    samples: Vec<f32>,
    speech_windows: u32,
    silence_windows: u32,
    /// `samples.len()` after the last speech window.
    speech_end: usize,
    started: bool,
    /// A [`SegmentEvent::Paused`] went out for this `speech_end`.
    paused: bool,
}

/// Streaming segmenter over 16 kHz mono audio; feed it with [`push`](Self::push).
pub struct Segmenter {
    opts: SegmenterOptions,
    /// Audio not yet scored (less than a hop).
    pending: Vec<f32>,
    /// Scored audio kept as VAD context.
    context: VecDeque<f32>,
    /// Audio kept while idle for the pre-roll.
    pre: VecDeque<f32>,
    active: Option<Active>,
    speaking: bool,
}

/// Start threshold while Seer speaks (see [`Segmenter::set_speaking`]).
pub const SPEAKING_START: f32 = 0.7;
/// Hangover while Seer speaks, ms.
pub const SPEAKING_HANGOVER_MS: u32 = 300;

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("opts", &self.opts)
            .field("in_speech", &self.active.is_some())
            .finish()
    }
}

fn ms_to_windows(ms: u32) -> u32 {
    ms.div_ceil(WINDOW_MS)
}

impl Segmenter {
    /// A segmenter with `opts`.
    pub fn new(opts: SegmenterOptions) -> Self {
        Self {
            opts,
            pending: Vec::new(),
            context: VecDeque::new(),
            pre: VecDeque::new(),
            active: None,
            speaking: false,
        }
    }

    /// Forgets everything heard (after a pause in capture: audio on either
    /// side of a gap is not one utterance).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.context.clear();
        self.pre.clear();
        self.active = None;
    }

    /// Whether an utterance is under way.
    pub fn in_speech(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.started)
    }

    /// Adds audio; returns what happened in it. Scoring runs once a hop
    /// (128 ms) of audio is there.
    pub fn push(&mut self, vad: &mut Vad, samples: &[f32]) -> Result<Vec<SegmentEvent>> {
        self.pending.extend_from_slice(samples);
        let mut events = Vec::new();
        while self.pending.len() >= HOP * WINDOW {
            let hop: Vec<f32> = self.pending.drain(..HOP * WINDOW).collect();
            let mut input: Vec<f32> = self.context.iter().copied().collect();
            let ctx_windows = input.len() / WINDOW;
            input.extend_from_slice(&hop);
            let probs = vad.probabilities(&input)?;
            for (i, window) in hop.chunks_exact(WINDOW).enumerate() {
                let p = probs.get(ctx_windows + i).copied().unwrap_or(0.0);
                if let Some(ev) = self.step(window, p) {
                    events.push(ev);
                }
            }
            self.context.extend(hop);
            while self.context.len() > CONTEXT * WINDOW {
                self.context.pop_front();
            }
        }
        Ok(events)
    }

    /// While Seer speaks: what the microphone hears then is either Seer's
    /// own voice coming back through the air or the wearer interrupting
    /// (the follow-up window is closed, so only the wake phrase and "stop"
    /// count). Speech must be clearer to start an utterance (a start
    /// threshold of at least [`SPEAKING_START`]: an echo is quieter and
    /// smeared), and a shorter silence ends one ([`SPEAKING_HANGOVER_MS`]:
    /// "Stop." is acted on sooner). Off again when the voice is quiet.
    pub fn set_speaking(&mut self, speaking: bool) {
        self.speaking = speaking;
    }

    fn step(&mut self, window: &[f32], p: f32) -> Option<SegmentEvent> {
        let mut o = self.opts.clone();
        if self.speaking {
            o.start_threshold = o.start_threshold.max(SPEAKING_START);
            o.hangover_ms = o.hangover_ms.min(SPEAKING_HANGOVER_MS);
        }
        let o = &o;
        let Some(a) = self.active.as_mut() else {
            if p >= o.start_threshold {
                let mut samples: Vec<f32> = self.pre.drain(..).collect();
                samples.extend_from_slice(window);
                let speech_end = samples.len();
                self.active = Some(Active {
                    samples,
                    speech_windows: 1,
                    silence_windows: 0,
                    speech_end,
                    started: false,
                    paused: false,
                });
                return self.check_started();
            }
            self.pre.extend(window.iter().copied());
            let keep = o.pre_roll_ms as usize * RATE / 1000;
            while self.pre.len() > keep {
                self.pre.pop_front();
            }
            return None;
        };
        a.samples.extend_from_slice(window);
        if p >= o.stop_threshold {
            a.speech_windows += 1;
            a.silence_windows = 0;
            a.speech_end = a.samples.len();
            a.paused = false;
        } else {
            a.silence_windows += 1;
        }
        if a.silence_windows >= ms_to_windows(o.hangover_ms) {
            return Some(self.finish(false));
        }
        if a.samples.len() as f32 >= o.max_seconds * RATE as f32 {
            return Some(self.finish(true));
        }
        let post_roll = self.opts.post_roll_ms as usize * RATE / 1000;
        if a.started && !a.paused && a.samples.len() >= a.speech_end + post_roll {
            a.paused = true;
            return Some(SegmentEvent::Paused(Utterance {
                samples: a.samples[..a.speech_end + post_roll].to_vec(),
                since_speech_end_ms: ((a.samples.len() - a.speech_end) * 1000 / RATE) as u32,
                cut: false,
            }));
        }
        self.check_started()
    }

    fn check_started(&mut self) -> Option<SegmentEvent> {
        let min = ms_to_windows(self.opts.min_speech_ms);
        let a = self.active.as_mut()?;
        if !a.started && a.speech_windows >= min {
            a.started = true;
            return Some(SegmentEvent::Started);
        }
        None
    }

    fn finish(&mut self, cut: bool) -> SegmentEvent {
        let Some(mut a) = self.active.take() else {
            return SegmentEvent::Dropped;
        };
        let tail = a.samples.len() - a.speech_end;
        let since_speech_end_ms = (tail * 1000 / RATE) as u32;
        let keep =
            (a.speech_end + self.opts.post_roll_ms as usize * RATE / 1000).min(a.samples.len());
        // The silence after the utterance is the next one's pre-roll.
        let pre_keep = self.opts.pre_roll_ms as usize * RATE / 1000;
        let from = a.samples.len().saturating_sub(pre_keep).max(keep);
        self.pre = a.samples[from..].iter().copied().collect();
        if !a.started {
            return SegmentEvent::Dropped;
        }
        a.samples.truncate(keep);
        SegmentEvent::Utterance(Utterance {
            samples: a.samples,
            since_speech_end_ms,
            cut,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds windows with the given speech probabilities; window `i` holds
    /// the value `i` so audio can be told apart.
    fn run(seg: &mut Segmenter, probs: &[f32], first: usize) -> Vec<SegmentEvent> {
        probs
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| seg.step(&[(first + i) as f32; WINDOW], p))
            .collect()
    }

    /// The `Paused` and the `Utterance` events' audio, in order.
    fn split(events: &[SegmentEvent]) -> (Vec<&Utterance>, Vec<&Utterance>) {
        let (mut paused, mut utterances) = (Vec::new(), Vec::new());
        for e in events {
            match e {
                SegmentEvent::Paused(u) => paused.push(u),
                SegmentEvent::Utterance(u) => utterances.push(u),
                _ => {}
            }
        }
        (paused, utterances)
    }

    fn speech(n: usize) -> Vec<f32> {
        vec![0.9; n]
    }

    fn silence(n: usize) -> Vec<f32> {
        vec![0.0; n]
    }

    #[test]
    fn a_pause_that_lasts_gives_the_paused_audio_as_the_utterance() {
        let mut seg = Segmenter::new(SegmenterOptions::default());
        let probs = [speech(30), silence(40)].concat();
        let events = run(&mut seg, &probs, 0);
        let (paused, utterances) = split(&events);
        assert_eq!(paused.len(), 1, "{events:?}");
        let utterance = utterances.first().expect("the silence ends the utterance");
        assert_eq!(paused[0].samples, utterance.samples);
        // It came after the post-roll, well before the hangover.
        assert!(paused[0].since_speech_end_ms >= 200 && paused[0].since_speech_end_ms < 300);
        assert!(utterance.since_speech_end_ms >= 600);
        let at = |want: fn(&SegmentEvent) -> bool| events.iter().position(want);
        assert!(
            at(|e| matches!(e, SegmentEvent::Paused(_)))
                < at(|e| matches!(e, SegmentEvent::Utterance(_))),
            "paused before the utterance: {events:?}"
        );
    }

    #[test]
    fn speech_that_resumes_after_a_pause_makes_a_longer_utterance() {
        let mut seg = Segmenter::new(SegmenterOptions::default());
        // A 320 ms pause: past the post-roll, inside the hangover.
        let probs = [speech(30), silence(10), speech(20), silence(40)].concat();
        let events = run(&mut seg, &probs, 0);
        let (paused, utterances) = split(&events);
        let paused: Vec<_> = paused.iter().map(|u| u.samples.len()).collect();
        assert_eq!(
            utterances.len(),
            1,
            "the pause did not cut the question: {events:?}"
        );
        assert_eq!(paused.len(), 2, "{events:?}");
        assert!(
            paused[0] < utterances[0].samples.len(),
            "the first pause is stale"
        );
        assert_eq!(paused[1], utterances[0].samples.len());
    }

    #[test]
    fn no_pause_is_reported_for_speech_too_short_to_count() {
        let mut seg = Segmenter::new(SegmenterOptions::default());
        let events = run(&mut seg, &[speech(3), silence(40)].concat(), 0);
        assert_eq!(events, vec![SegmentEvent::Dropped]);
    }
}
