//! Spoken answers: which turns speak, `say`, the speech switch, and the
//! speech stage's events becoming protocol [`Event`]s.
//!
//! A spoken turn's events are the answer's, with `speech.start` when its
//! audio begins, and always end with one `speech.end`, after the answer's
//! own last event: a client that asked to hear the answer learns when the
//! room is quiet again. `cancel` reaches the speech as well as the answer;
//! a client that goes away after `answer.end` does not silence it.

use super::{Assistant, Canceller, TurnHandle};
use crate::error::ServiceError;
use crate::protocol::Event;
use seer_pipelines::speak::{EndReason, Speaker, SpeechEvent, Utterance};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Which turns speak, from `[speech]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpeechPolicy {
    /// Hands-free questions.
    pub hands_free: bool,
}

/// What starts a turn, for deciding whether it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A typed question that asked to be spoken (`ask {speak: true}`).
    AskedToSpeak,
    /// A typed question, or push-to-talk (its client asks for speech with
    /// `say`, or a spoken `ask`).
    Typed,
    /// The always-on listener.
    HandsFree,
}

/// The speech stage as the service holds it.
pub(super) struct SpeechParts {
    pub speaker: Option<Speaker>,
    pub policy: SpeechPolicy,
    pub enabled: AtomicBool,
    /// The hands-free turn being answered, for barge-in.
    pub voice_turn: Mutex<Option<Canceller>>,
}

/// An utterance attached to a turn, and its events. A turn that asked to
/// be spoken when no voice can speak gets one without an utterance whose
/// only event is the `speech.end` saying why: the answer still comes, as
/// text.
pub(super) struct Spoken {
    utterance: Option<Utterance>,
    events: mpsc::Receiver<SpeechEvent>,
}

impl Spoken {
    fn refused(why: &str) -> Self {
        let (tx, events) = mpsc::channel(1);
        let _ = tx.try_send(SpeechEvent::Ended {
            reason: EndReason::Failed(why.to_owned()),
            audio_s: 0.0,
        });
        Self {
            utterance: None,
            events,
        }
    }

    /// More answer text.
    pub(super) fn push(&mut self, delta: &str) {
        if let Some(u) = self.utterance.as_mut() {
            u.push(delta);
        }
    }

    /// The answer is complete.
    pub(super) fn finish(&mut self) {
        if let Some(u) = self.utterance.as_mut() {
            u.finish();
        }
    }

    /// Stops the speech.
    pub(super) fn cancel(&self) {
        if let Some(u) = &self.utterance {
            u.cancel();
        }
    }
}

const NO_VOICE: &str = "no voice is loaded ([speech] voice; `seer models list` shows the voices)";
const SPEECH_OFF: &str = "speech is off (`set {speech: true}` turns it on)";

/// Capacity of an utterance's event channel (two events per utterance).
const SPEECH_EVENTS: usize = 8;

impl Assistant {
    /// Whether answers can be spoken now.
    pub fn speech_available(&self) -> bool {
        self.speech.speaker.is_some() && self.speech.enabled.load(Ordering::SeqCst)
    }

    /// `set {speech}`: turning speech off also silences what is playing.
    pub fn set_speech(&self, on: bool) {
        self.speech.enabled.store(on, Ordering::SeqCst);
        if !on {
            self.stop_speaking();
        }
    }

    /// Whether audio plays now (D-Bus `Speaking`).
    pub fn speaking(&self) -> bool {
        self.state() == seer_pipelines::state::State::Speaking
    }

    /// Silences whatever is being spoken, at once.
    pub fn stop_speaking(&self) {
        if let Some(s) = &self.speech.speaker {
            s.stop();
        }
    }

    /// A turn from `origin` gets an utterance when it should speak.
    pub(super) fn utterance_for(&self, origin: Origin) -> Option<Spoken> {
        let p = self.speech.policy;
        let wanted = match origin {
            Origin::AskedToSpeak => true,
            Origin::Typed => false,
            Origin::HandsFree => p.hands_free,
        };
        if !wanted {
            return None;
        }
        let Some(speaker) = self.speech.speaker.as_ref() else {
            // Hands-free answers are simply not spoken without a voice; a
            // client that asked is told why.
            return (origin == Origin::AskedToSpeak).then(|| Spoken::refused(NO_VOICE));
        };
        if !self.speech.enabled.load(Ordering::SeqCst) {
            return (origin == Origin::AskedToSpeak).then(|| Spoken::refused(SPEECH_OFF));
        }
        let (tx, events) = mpsc::channel(SPEECH_EVENTS);
        Some(Spoken {
            utterance: Some(speaker.begin(tx)),
            events,
        })
    }

    /// `say {text}`: speaks `text`; the handle's events are `speech.start`
    /// and `speech.end`.
    pub fn say(&self, text: &str) -> Result<TurnHandle, ServiceError> {
        if text.trim().is_empty() {
            return Err(ServiceError::bad_request("say: `text` is empty"));
        }
        let Some(speaker) = self.speech.speaker.as_ref() else {
            return Err(ServiceError::unsupported(NO_VOICE));
        };
        if !self.speech.enabled.load(Ordering::SeqCst) {
            return Err(ServiceError::unsupported(SPEECH_OFF));
        }
        let (stx, events) = mpsc::channel(SPEECH_EVENTS);
        let spoken = Spoken {
            utterance: Some(speaker.say(text, stx)),
            events,
        };
        let (tx, rx) = mpsc::channel(SPEECH_EVENTS);
        let canceller = Canceller::new();
        tokio::spawn(speak_to_end(spoken, None, tx, canceller.clone()));
        Ok(TurnHandle::new(rx, canceller).speaking())
    }

    /// Barge-in: the wake phrase was heard while an answer was spoken or
    /// thought about; that answer ends now.
    pub(super) fn barge_in(&self) {
        let turn = self.current_voice_turn().take();
        if let Some(c) = turn {
            tracing::info!("barge-in: the answer being spoken is cancelled");
            c.cancel();
        }
        self.stop_speaking();
    }

    /// Remembers the hands-free turn being answered (for [`Assistant::barge_in`]).
    pub(super) fn set_voice_turn(&self, c: Option<Canceller>) {
        *self.current_voice_turn() = c;
    }

    /// Forgets `c` once its turn is over (unless a newer one replaced it).
    pub(super) fn clear_voice_turn(&self, c: &Canceller) {
        let mut cur = self.current_voice_turn();
        if cur.as_ref().is_some_and(|t| t.token().same_as(&c.token())) {
            *cur = None;
        }
    }

    fn current_voice_turn(&self) -> std::sync::MutexGuard<'_, Option<Canceller>> {
        self.speech
            .voice_turn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// The protocol's `speech.*` event.
pub(super) fn speech_event(ev: SpeechEvent) -> Event {
    match ev {
        SpeechEvent::Started { sample_rate, .. } => Event::SpeechStart { sample_rate },
        SpeechEvent::Ended { reason, audio_s } => speech_end(&reason, audio_s),
    }
}

fn speech_end(reason: &EndReason, audio_s: f64) -> Event {
    Event::SpeechEnd {
        reason: reason.as_str().to_owned(),
        message: match reason {
            EndReason::Failed(m) => Some(m.clone()),
            _ => None,
        },
        audio_s: (audio_s * 100.0).round() / 100.0,
    }
}

/// Forwards an utterance's events until its end, which is sent last
/// (`ended` if it came already). `cancel` reaches it; a client that went
/// away does not stop it.
pub(super) async fn speak_to_end(
    mut s: Spoken,
    ended: Option<Event>,
    tx: mpsc::Sender<Event>,
    c: Canceller,
) {
    let end = match ended {
        Some(e) => e,
        None => loop {
            tokio::select! {
                ev = s.events.recv() => match ev {
                    Some(SpeechEvent::Started { sample_rate, .. }) => {
                        let _ = tx.send(Event::SpeechStart { sample_rate }).await;
                    }
                    Some(end @ SpeechEvent::Ended { .. }) => break speech_event(end),
                    None => break speech_end(&EndReason::Failed("the speech thread stopped".into()), 0.0),
                },
                _ = c.now.notified() => s.cancel(),
            }
        },
    };
    let _ = tx.send(end).await;
}

/// The next speech event of an optional utterance (never, without one).
pub(super) async fn next_speech(s: &mut Option<Spoken>) -> Option<SpeechEvent> {
    match s {
        Some(s) => s.events.recv().await,
        None => std::future::pending().await,
    }
}

impl SpeechParts {
    pub(super) fn new(speaker: Option<Speaker>, policy: SpeechPolicy, enabled: bool) -> Self {
        Self {
            speaker,
            policy,
            enabled: AtomicBool::new(enabled),
            voice_turn: Mutex::new(None),
        }
    }
}
