//! Speech becoming turns: push-to-talk captures and what the always-on
//! listener hears go through one flow (transcript → maybe a camera frame →
//! the answer), and every front end learns of it from the typed `voice`
//! broadcast.

use super::speech::{Origin, Spoken, speak_to_end};
use super::{Assistant, Canceller, TurnHandle};
use crate::config::VoiceCamera;
use crate::error::ServiceError;
use crate::protocol::{Activity, Code, Event, HeardTimings, Transcript, TranscriptSource};
use seer_pipelines::answer::Ask;
use seer_pipelines::listen::{EarsEvent, Heard, ListenError, MicStatus, PttMsg};
use seer_pipelines::state::State;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::sync::{broadcast, mpsc};

/// A `voice` event: what the microphone heard and what came of it, for
/// every subscriber. `id` is the hands-free turn (`voice-N`) or the
/// push-to-talk request it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The turn or request it belongs to.
    pub id: Option<String>,
    /// The event.
    pub event: Event,
}

impl Assistant {
    /// Voice events from now on.
    pub fn subscribe_voice(&self) -> broadcast::Receiver<Broadcast> {
        self.voice.subscribe()
    }

    /// The event a new `voice` subscriber gets first.
    pub fn microphone(&self) -> Event {
        Event::Microphone {
            active: self.listener.microphone_active(),
            device: None,
            error: None,
            hands_free: Some(self.listener.hands_free()),
        }
    }

    fn publish(&self, id: Option<String>, event: Event) {
        let _ = self.voice.send(Broadcast { id, event });
    }

    /// Push-to-talk pressed: opens the microphone. `label` names the
    /// request in the `voice` broadcast's transcript. The handle's events:
    /// `state` listening and transcribing, `transcript.final`, then the
    /// answer's; [`Assistant::stop_listening`] with its
    /// [`capture`](TurnHandle::capture) ends the capture.
    pub async fn listen(self: &Arc<Self>, label: &str) -> Result<TurnHandle, ServiceError> {
        if !self.listener.enabled() {
            return Err(ServiceError::unsupported(
                "listening is off ([listen] mode = \"off\")",
            ));
        }
        if self.state.muted() {
            return Err(ListenError::Muted.into());
        }
        // Looked up now, off the executor, so a missing model is said at
        // once (and a model pulled since start-up is found).
        let models = if self.listener.models_loaded() {
            None
        } else {
            let l = self.listener.clone();
            let found = tokio::task::spawn_blocking(move || l.resolve())
                .await
                .map_err(|e| ServiceError::internal(format!("finding the speech models: {e}")))?;
            Some(found.map_err(|e| ServiceError::new(Code::ModelMissing, e))?)
        };
        let key = format!("ptt-{}", self.captures.fetch_add(1, Ordering::SeqCst) + 1);
        let (ptt, heard) = mpsc::channel(8);
        let canceller = Canceller::new();
        self.listener
            .push_to_talk(&key, canceller.token(), ptt, models)?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(
            self.clone()
                .capture(label.to_owned(), heard, tx, canceller.clone()),
        );
        Ok(TurnHandle::new(rx, canceller).with_capture(key))
    }

    /// Push-to-talk released: transcribes and answers capture `key`; false
    /// when it is not the one running.
    pub fn stop_listening(&self, key: &str) -> bool {
        self.listener.stop(key)
    }

    async fn capture(
        self: Arc<Self>,
        label: String,
        mut heard: mpsc::Receiver<PttMsg>,
        tx: mpsc::Sender<Event>,
        c: Canceller,
    ) {
        while let Some(msg) = heard.recv().await {
            let ev = match msg {
                PttMsg::Listening => Event::state(Activity::Listening),
                PttMsg::Transcribing => Event::state(Activity::Transcribing),
                PttMsg::Transcript(text) => {
                    self.publish(
                        Some(label),
                        Event::TranscriptFinal(Transcript {
                            source: Some(TranscriptSource::PushToTalk),
                            ..transcript(&text)
                        }),
                    );
                    let _ = tx.send(Event::TranscriptFinal(transcript(&text))).await;
                    if c.is_cancelled() {
                        // The asker went away (or cancelled) while whisper
                        // ran: no answer for nobody.
                        self.state.set_if(&[State::Transcribing], State::Idle);
                        let _ = tx.send(Event::Cancelled {}).await;
                        return;
                    }
                    self.answer_spoken(text, None, None, tx, c).await;
                    return;
                }
                PttMsg::Aborted => Event::Cancelled {},
                PttMsg::Failed(e) => ServiceError::from(e).into(),
            };
            if tx.send(ev).await.is_err() {
                c.cancel();
            }
        }
    }

    /// The one flow for a spoken question: nothing heard is an error that
    /// clears `transcribing`; otherwise the camera's frame when the
    /// question gets one, then the answer.
    async fn answer_spoken(
        &self,
        text: String,
        conversation: Option<String>,
        spoken: Option<Spoken>,
        tx: mpsc::Sender<Event>,
        c: Canceller,
    ) {
        if text.trim().is_empty() {
            self.state.set_if(&[State::Transcribing], State::Idle);
            let _ = tx
                .send(Event::error(Code::BadRequest, "no speech was heard"))
                .await;
            if let Some(s) = spoken {
                s.cancel();
                speak_to_end(s, None, tx, c).await;
            }
            return;
        }
        let image = self.frame_for(&text).await;
        let ask = Ask {
            conversation,
            image,
            ..Ask::text(text)
        };
        self.answer(ask, true, spoken, tx, c);
    }

    /// The camera's frame for a spoken question, when `[vision]
    /// voice_camera` says it gets one. A camera that fails is logged and
    /// the question answered without it: a spoken question should get an
    /// answer, not an error about a lens.
    async fn frame_for(&self, question: &str) -> Option<Arc<image::RgbImage>> {
        if !self.voice_camera_wanted(question) {
            return None;
        }
        let camera = self.camera.clone();
        match tokio::task::spawn_blocking(move || camera.look()).await {
            Ok(Ok(frame)) => Some(frame.image),
            Ok(Err(e)) => {
                tracing::warn!("spoken question answered without the camera: {e}");
                None
            }
            Err(e) => {
                tracing::warn!("spoken question answered without the camera: {e}");
                None
            }
        }
    }

    /// Whether a spoken `question` gets a camera frame.
    fn voice_camera_wanted(&self, question: &str) -> bool {
        let wanted = match self.voice_camera {
            VoiceCamera::Never => false,
            VoiceCamera::Always => true,
            VoiceCamera::WhenAsked => crate::vision::mentions_looking(question),
        };
        wanted && self.vision.is_some() && self.camera.configured()
    }

    /// A hands-free question: asked in `conversation`, its events sent to
    /// `voice` subscribers under `id`.
    /// Spoken aloud when `[speech] hands_free`; the follow-up window then
    /// opens when the speech ends, so Seer's own voice is never taken for a
    /// follow-up question.
    fn voice_turn(self: &Arc<Self>, id: String, text: String, conversation: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = mpsc::channel(256);
            let c = Canceller::new();
            this.set_voice_turn(Some(c.clone()));
            let spoken = this.utterance_for(Origin::HandsFree);
            let speaks = spoken.is_some();
            this.answer_spoken(text, Some(conversation), spoken, tx, c.clone())
                .await;
            while let Some(ev) = rx.recv().await {
                match ev {
                    Event::AnswerEnd { .. } if !speaks => this.listener.answered(),
                    Event::SpeechEnd { ref reason, .. } if reason != "cancelled" => {
                        this.listener.answered();
                    }
                    _ => {}
                }
                this.publish(Some(id.clone()), ev);
            }
            this.clear_voice_turn(&c);
        });
    }
}

fn transcript(text: &str) -> Transcript {
    Transcript {
        text: text.to_owned(),
        source: None,
        question: None,
        wake: None,
        timings: None,
    }
}

fn microphone_event(s: &MicStatus) -> Event {
    let (active, device, error) = match s {
        MicStatus::Open(device) => {
            tracing::info!(%device, "microphone capturing");
            (true, Some(device.clone()), None)
        }
        MicStatus::Closed => {
            tracing::info!("microphone closed");
            (false, None, None)
        }
        MicStatus::Lost(e) => {
            tracing::warn!("microphone lost: {e}; retrying");
            (false, None, Some(e.clone()))
        }
    };
    Event::Microphone {
        active,
        device,
        error,
        hands_free: None,
    }
}

/// What the always-on listener's conversation is: a question after the
/// wake phrase starts one; a follow-up (no phrase, inside the follow-up
/// window) continues it; "Hey Seer." alone makes the next question fresh.
struct Conversation {
    name: String,
    fresh: bool,
    turns: u64,
}

/// Acts on what the always-on listener heard, until the service is gone.
pub(super) async fn hands_free(service: Weak<Assistant>, mut rx: mpsc::Receiver<EarsEvent>) {
    let mut conv = Conversation {
        name: "voice".into(),
        fresh: false,
        turns: 0,
    };
    while let Some(ev) = rx.recv().await {
        let Some(a) = service.upgrade() else { break };
        match ev {
            EarsEvent::Microphone(s) => a.publish(None, microphone_event(&s)),
            EarsEvent::SpeechStarted | EarsEvent::Transcribing => {}
            EarsEvent::Anticipated(Heard::Question {
                text: question,
                woke,
            }) => a.anticipate(&conv, question, woke),
            EarsEvent::Anticipated(_) => {}
            EarsEvent::Failed(e) => {
                tracing::error!("hands-free listening stopped: {e}");
                let ev = Event::Microphone {
                    active: false,
                    device: None,
                    error: Some(e),
                    hands_free: None,
                };
                a.publish(None, ev);
            }
            EarsEvent::Heard {
                transcript,
                heard,
                timings,
            } => {
                let timings = HeardTimings {
                    audio_ms: timings.audio_ms,
                    transcribe_ms: timings.transcribe_ms,
                    end_of_speech_ms: timings.end_of_speech_ms,
                    early: timings.early,
                };
                a.heard(&mut conv, transcript, heard, timings);
            }
        }
    }
}

impl Assistant {
    /// The speaker paused after what reads as a question: runs the prompt
    /// the question will have (same system prompt, same conversation) so
    /// that, if the pause is the end, the answer starts from a warm cache.
    /// Questions that will look through the camera are left alone.
    fn anticipate(&self, conv: &Conversation, question: String, woke: bool) {
        if self.voice_camera_wanted(&question) {
            return;
        }
        // A woken question starts a new conversation (see `heard`).
        let conversation = (!woke && !conv.fresh).then(|| conv.name.clone());
        self.answerer.prefill(Ask {
            conversation,
            ..Ask::text(question)
        });
    }

    fn heard(
        self: &Arc<Self>,
        conv: &mut Conversation,
        text: String,
        heard: Heard,
        timings: HeardTimings,
    ) {
        match heard {
            Heard::Question {
                text: question,
                woke,
            } => {
                if woke {
                    // Barge-in: a new question ends the one being answered.
                    self.barge_in();
                }
                conv.turns += 1;
                let id = format!("voice-{}", conv.turns);
                let t = Transcript {
                    text,
                    source: Some(TranscriptSource::HandsFree),
                    question: Some(question.clone()),
                    wake: Some(woke),
                    timings: Some(timings),
                };
                self.publish(Some(id.clone()), Event::TranscriptFinal(t));
                if woke || std::mem::take(&mut conv.fresh) {
                    conv.name = format!("voice:{id}");
                }
                self.voice_turn(id, question, conv.name.clone());
            }
            Heard::Stop => {
                tracing::info!(transcript = %text, "voice command: stop");
                self.stop_all();
                self.stop_speaking();
                let ev = Event::VoiceCommand {
                    command: "stop".into(),
                    text,
                };
                self.publish(None, ev);
            }
            Heard::WakeOnly => {
                self.barge_in();
                conv.fresh = true;
                self.publish(None, Event::Wake { text });
            }
            Heard::Other => tracing::debug!(transcript = %text, "not for the assistant"),
        }
    }
}
