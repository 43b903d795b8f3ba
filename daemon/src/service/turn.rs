//! Typed questions becoming turns: the image read and checked first, then
//! the answer stage, its events translated once into protocol [`Event`]s.

use super::Assistant;
use super::speech::{Origin, Spoken, next_speech, speak_to_end, speech_event};
use crate::error::ServiceError;
use crate::protocol::{Activity, AskRequest, Event, ImageRef};
use seer_cancel::CancelToken;
use seer_models::generate::Sampling;
use seer_models::tokenizer::Message;
use seer_pipelines::answer::{Ask, Turn, TurnEvent};
use seer_pipelines::speak::SpeechEvent;
use seer_pipelines::state::State;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// Capacity of a handle's event channel. Front ends forward without
/// blocking, so this only absorbs scheduling jitter.
const TURN_EVENTS: usize = 256;

/// A question as any front end asks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The question.
    pub text: String,
    /// Continue this conversation.
    pub conversation: Option<String>,
    /// Answer length limit.
    pub max_tokens: Option<usize>,
    /// An image to look at.
    pub image: Option<ImageRef>,
    /// Whether `answer.delta` events are wanted.
    pub stream: bool,
    /// Whether the answer is also spoken aloud.
    pub speak: bool,
    /// The client's own conversation (the HTTP API): replaces a stored
    /// one and, with a system message, the configured system prompt.
    pub messages: Option<Vec<Message>>,
    /// Token selection (greedy when not given).
    pub sampling: Option<Sampling>,
    /// Stop strings.
    pub stop: Vec<String>,
}

impl Question {
    /// A plain streamed question.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            conversation: None,
            max_tokens: None,
            image: None,
            stream: true,
            speak: false,
            messages: None,
            sampling: None,
            stop: Vec::new(),
        }
    }
}

impl From<AskRequest> for Question {
    fn from(a: AskRequest) -> Self {
        Self {
            text: a.text,
            conversation: a.conversation,
            max_tokens: a.max_tokens,
            image: a.image,
            stream: a.stream.unwrap_or(true),
            speak: a.speak.unwrap_or(false),
            messages: None,
            sampling: None,
            stop: Vec::new(),
        }
    }
}

/// Cancels one request (a turn, a capture, a download) at whatever stage
/// it is in; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Canceller {
    token: CancelToken,
    /// Wakes a queued turn's forwarder so it reports `cancelled` at once
    /// instead of when the worker reaches it, and a spoken one's speech.
    pub(super) now: Arc<Notify>,
}

impl Canceller {
    /// A fresh one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the request.
    pub fn cancel(&self) {
        self.token.cancel();
        self.now.notify_one();
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The token the stages check.
    pub fn token(&self) -> CancelToken {
        self.token.clone()
    }
}

/// A request in progress: its events, in order, ending with exactly one
/// final event ([`Event::is_final`]), and its cancel handle. Dropping the
/// receiver cancels the request at its next event.
#[derive(Debug)]
pub struct TurnHandle {
    /// The request's events.
    pub events: mpsc::Receiver<Event>,
    canceller: Canceller,
    capture: Option<String>,
    speaks: bool,
}

impl TurnHandle {
    pub(super) fn new(events: mpsc::Receiver<Event>, canceller: Canceller) -> Self {
        Self {
            events,
            canceller,
            capture: None,
            speaks: false,
        }
    }

    /// Marks a request whose last event is `speech.end`.
    pub(super) fn speaking(mut self) -> Self {
        self.speaks = true;
        self
    }

    /// Whether `ev` is this request's last event: `speech.end` for a
    /// spoken one (it follows the answer's end), else [`Event::is_final`].
    pub fn ends_with(&self, ev: &Event) -> bool {
        if self.speaks {
            matches!(ev, Event::SpeechEnd { .. })
        } else {
            ev.is_final()
        }
    }

    pub(super) fn with_capture(mut self, key: String) -> Self {
        self.capture = Some(key);
        self
    }

    /// Cancels it.
    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    /// The push-to-talk capture it began with ([`Assistant::stop_listening`]).
    pub fn capture(&self) -> Option<&str> {
        self.capture.as_deref()
    }
}

const NO_VLM: &str =
    "no vision model is configured ([vision] model); this daemon cannot look at images";

impl Assistant {
    /// Asks `q`. A question with an image has it read and checked off the
    /// executor first: a bad image ends the request with its own error and
    /// the turn never starts. Text questions are queued at once, so two
    /// asks keep their order.
    pub fn ask(self: &Arc<Self>, q: Question) -> TurnHandle {
        let (tx, rx) = mpsc::channel(TURN_EVENTS);
        let canceller = Canceller::new();
        let ask = Ask {
            text: q.text,
            conversation: q.conversation,
            max_tokens: q.max_tokens,
            image: None,
            messages: q.messages,
            sampling: q.sampling,
            stop: q.stop,
        };
        let origin = if q.speak {
            Origin::AskedToSpeak
        } else {
            Origin::Typed
        };
        // Decided now, so the handle knows how it ends.
        let spoken = self.utterance_for(origin);
        let speaks = spoken.is_some();
        match q.image {
            None => self.answer(ask, q.stream, spoken, tx, canceller.clone()),
            Some(image) => {
                let (this, c) = (self.clone(), canceller.clone());
                tokio::spawn(async move {
                    let ended = match this.look_at(image).await {
                        Err(e) => e.into(),
                        Ok(_) if c.is_cancelled() => Event::Cancelled {},
                        Ok(img) => {
                            let ask = Ask {
                                image: Some(img),
                                ..ask
                            };
                            this.answer(ask, q.stream, spoken, tx, c);
                            return;
                        }
                    };
                    let _ = tx.send(ended).await;
                    if let Some(s) = spoken {
                        s.cancel();
                        speak_to_end(s, None, tx, c).await;
                    }
                });
            }
        }
        let handle = TurnHandle::new(rx, canceller);
        if speaks { handle.speaking() } else { handle }
    }

    /// The image, decoded and bounded; refused when nothing can look at it.
    async fn look_at(&self, image: ImageRef) -> Result<Arc<image::RgbImage>, ServiceError> {
        // Opening the camera for nothing would light the privacy indicator
        // for nothing.
        if self.vision.is_none() && image == ImageRef::Camera {
            return Err(ServiceError::unsupported(NO_VLM));
        }
        let (camera, max) = (self.camera.clone(), self.max_image_pixels);
        let img = tokio::task::spawn_blocking(move || crate::vision::load(&image, max, &camera))
            .await
            .map_err(|e| ServiceError::internal(format!("reading the image: {e}")))??;
        // A good image, and nothing to look at it with.
        if self.vision.is_none() {
            return Err(ServiceError::unsupported(NO_VLM));
        }
        Ok(img)
    }

    /// Queues `ask` and forwards its events to `tx`; `spoken` speaks the
    /// answer as it streams.
    pub(super) fn answer(
        &self,
        ask: Ask,
        stream: bool,
        spoken: Option<Spoken>,
        tx: mpsc::Sender<Event>,
        canceller: Canceller,
    ) {
        match self.answerer.submit_with(ask, canceller.token()) {
            Ok(turn) => {
                tokio::spawn(forward(turn, stream, spoken, tx, canceller));
            }
            Err(e) => {
                // A spoken question leaves `transcribing` for its answer to
                // replace; with no answer coming, clear it.
                self.state.set_if(&[State::Transcribing], State::Idle);
                let _ = tx.try_send(ServiceError::from(e).into());
                if let Some(s) = spoken {
                    s.cancel();
                    tokio::spawn(speak_to_end(s, None, tx, canceller));
                }
            }
        }
    }
}

/// Forwards a turn's events until its last one. A turn still queued when
/// it is cancelled reports `cancelled` at once (the worker skips it later).
/// A spoken turn feeds its deltas to the utterance and ends with the
/// speech's end, after the answer's.
async fn forward(
    mut turn: Turn,
    stream: bool,
    mut spoken: Option<Spoken>,
    tx: mpsc::Sender<Event>,
    c: Canceller,
) {
    let mut started = false;
    let mut speech_end = None;
    loop {
        let ev = tokio::select! {
            ev = turn.events.recv() => ev,
            _ = c.now.notified(), if !started => {
                let _ = tx.send(Event::Cancelled {}).await;
                if let Some(s) = &spoken {
                    s.cancel();
                }
                break;
            }
            Some(sev) = next_speech(&mut spoken), if speech_end.is_none() => {
                match sev {
                    SpeechEvent::Started { .. } => {
                        let _ = tx.send(speech_event(sev)).await;
                    }
                    // Held back: the answer's end comes first.
                    SpeechEvent::Ended { .. } => speech_end = Some(speech_event(sev)),
                }
                continue;
            }
        };
        let Some(ev) = ev else { break };
        started |= matches!(ev, TurnEvent::Thinking);
        let last = matches!(
            ev,
            TurnEvent::End { .. } | TurnEvent::Cancelled | TurnEvent::Failed(_)
        );
        if let Some(s) = spoken.as_mut() {
            match &ev {
                TurnEvent::Delta(text) => s.push(text),
                TurnEvent::End { .. } => s.finish(),
                TurnEvent::Cancelled | TurnEvent::Failed(_) => s.cancel(),
                _ => {}
            }
        }
        if let Some(ev) = answer_event(ev, stream)
            && tx.send(ev).await.is_err()
        {
            // Nobody is listening for the answer any more.
            turn.cancel.cancel();
            if let Some(s) = &spoken {
                s.cancel();
            }
            return;
        }
        if last {
            break;
        }
    }
    if let Some(s) = spoken {
        speak_to_end(s, speech_end, tx, c).await;
    }
}

/// The answer stage's event as the protocol has it; `None` for a delta
/// nobody asked to stream.
fn answer_event(ev: TurnEvent, stream: bool) -> Option<Event> {
    Some(match ev {
        TurnEvent::Queued { position } => Event::State {
            state: Activity::Queued,
            position: Some(position),
        },
        TurnEvent::Thinking => Event::state(Activity::Thinking),
        TurnEvent::Delta(text) if stream => Event::AnswerDelta { text },
        TurnEvent::Delta(_) => return None,
        TurnEvent::End {
            text,
            stop_reason,
            timings,
            backend,
        } => Event::AnswerEnd {
            text,
            stop_reason,
            timings,
            backend,
        },
        TurnEvent::Cancelled => Event::Cancelled {},
        TurnEvent::Failed(e) => ServiceError::from(e).into(),
    })
}
