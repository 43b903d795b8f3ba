//! The answer stage: one dedicated thread runs the language model; turns wait
//! in a bounded queue and stream their events over bounded channels.
//!
//! Why a thread and not `spawn_blocking`: the engine holds the model and its
//! device state and must run one generation at a time, so one long-lived
//! owner thread is the simplest correct shape. The thread blocks only on its
//! own job queue and on per-turn event channels whose consumers never block.

use crate::conversation::Conversations;
use crate::offload::{HealthHandle, OffloadMode, Remote, RemoteError, RemoteHealth, RemoteParams};
use crate::state::{State, StateBus};
use seer_cancel::CancelToken;
use seer_models::ModelError;
use seer_models::generate::{Engine, ImagePrompt, Request, Sampling, StopReason, Timings};
use seer_models::tokenizer::Message;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use tokio::sync::mpsc;

/// Settings of the answer stage.
#[derive(Debug, Clone)]
pub struct AnswerConfig {
    /// System prompt put before every conversation.
    pub system_prompt: String,
    /// Default answer length limit in tokens.
    pub max_tokens: usize,
    /// Prompt budget for system prompt + history + question; the oldest
    /// turns are dropped to fit.
    pub history_tokens: usize,
    /// Turns that may wait behind the running one before `busy`.
    pub queue: usize,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        Self {
            system_prompt: seer_models::generate::DEFAULT_SYSTEM_PROMPT.to_owned(),
            max_tokens: 256,
            history_tokens: 1024,
            queue: 64,
        }
    }
}

/// A question to answer.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The question.
    pub text: String,
    /// Continue this conversation (history is used and extended).
    pub conversation: Option<String>,
    /// Override of the answer length limit.
    pub max_tokens: Option<usize>,
    /// A photo to look at; answered by the vision-language model.
    pub image: Option<Arc<image::RgbImage>>,
    /// The conversation so far, given by the client (the HTTP API is
    /// stateless): used instead of a stored `conversation`, and its system
    /// message, if any, instead of the configured system prompt.
    pub messages: Option<Vec<Message>>,
    /// Token selection (greedy when not given).
    pub sampling: Option<Sampling>,
    /// Stop strings.
    pub stop: Vec<String>,
}

impl Ask {
    /// A plain question.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            conversation: None,
            max_tokens: None,
            image: None,
            messages: None,
            sampling: None,
            stop: Vec::new(),
        }
    }
}

/// Which engine answered a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The model on this device.
    #[default]
    Local,
    /// The offload server (`[offload]`).
    Remote,
}

/// Why a turn failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnswerError {
    /// The queue is full.
    #[error("{0} turns are already waiting; try again later")]
    Busy(usize),
    /// The model could not be loaded.
    #[error("{0}")]
    ModelMissing(String),
    /// The request cannot be served (e.g. longer than the context).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing here can serve it (an image, and no vision model configured).
    #[error("{0}")]
    Unsupported(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
    /// The offload server failed and no local answer may replace it.
    #[error("{0}")]
    Offload(String),
}

/// What happens to a turn, in order: `Queued`, `Thinking`, `Delta`s, then
/// exactly one of `End`, `Cancelled`, `Failed`.
#[derive(Debug, Clone)]
pub enum TurnEvent {
    /// Waiting; `position` turns are ahead of this one.
    Queued {
        /// Turns ahead (the running one included).
        position: usize,
    },
    /// Generation started.
    Thinking,
    /// More answer text.
    Delta(String),
    /// The answer is complete.
    End {
        /// The whole answer.
        text: String,
        /// Why it ended.
        stop_reason: StopReason,
        /// Where the time went.
        timings: Timings,
        /// Which engine answered.
        backend: Backend,
    },
    /// Cancelled before or during generation.
    Cancelled,
    /// Failed.
    Failed(AnswerError),
}

/// A submitted turn: its events and its cancel handle.
#[derive(Debug)]
pub struct Turn {
    /// Events of this turn; dropping the receiver cancels the turn.
    pub events: mpsc::Receiver<TurnEvent>,
    /// Cancels this turn (before it starts, or within one token).
    pub cancel: CancelToken,
}

/// How the worker gets its engine.
pub enum EngineSource {
    /// Already loaded.
    Loaded(Box<Engine>),
    /// Loaded on the first turn; the error (a message naming the file or
    /// the pull command) is reported to that turn as `model_missing`.
    Lazy(Box<dyn FnMut() -> Result<Engine, String> + Send>),
}

struct Job {
    ask: Ask,
    events: mpsc::Sender<TurnEvent>,
    cancel: CancelToken,
    /// Only run the prompt (see [`Answerer::prefill`]): no events, no state.
    prefill: bool,
}

/// A finished turn, announced to every front end (D-Bus `Answer` signal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The question.
    pub question: String,
    /// The complete answer.
    pub answer: String,
}

/// Handle to the answer thread; cheap to clone.
#[derive(Clone)]
pub struct Answerer {
    tx: std_mpsc::SyncSender<Job>,
    finished: tokio::sync::broadcast::Sender<Finished>,
    pending: Arc<AtomicUsize>,
    active: Arc<Mutex<Vec<CancelToken>>>,
    queue: usize,
    offload: Option<HealthHandle>,
}

impl std::fmt::Debug for Answerer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answerer")
            .field("pending", &self.pending())
            .finish()
    }
}

/// Capacity of each turn's event channel. The consumer forwards without
/// blocking, so this only absorbs scheduling jitter.
const TURN_EVENTS: usize = 256;

impl Answerer {
    /// Starts the answer thread.
    pub fn spawn(
        engine: EngineSource,
        cfg: AnswerConfig,
        state: StateBus,
        conversations: Arc<Conversations>,
    ) -> Self {
        Self::spawn_with_vision(engine, None, cfg, state, conversations)
    }

    /// Starts the answer thread with a vision-language model for questions
    /// that come with an image. Both models run on the one answer thread:
    /// one generation at a time, whichever model it needs.
    pub fn spawn_with_vision(
        engine: EngineSource,
        vision: Option<EngineSource>,
        cfg: AnswerConfig,
        state: StateBus,
        conversations: Arc<Conversations>,
    ) -> Self {
        Self::spawn_with_offload(engine, vision, None, cfg, state, conversations)
    }

    /// Starts the answer thread with an offload server beside the local
    /// engines; [`Remote`]'s mode decides which turns it answers.
    pub fn spawn_with_offload(
        engine: EngineSource,
        vision: Option<EngineSource>,
        remote: Option<Remote>,
        cfg: AnswerConfig,
        state: StateBus,
        conversations: Arc<Conversations>,
    ) -> Self {
        let offload = remote.as_ref().map(Remote::health_handle);
        let (tx, rx) = std_mpsc::sync_channel::<Job>(cfg.queue.max(1));
        let pending = Arc::new(AtomicUsize::new(0));
        let active: Arc<Mutex<Vec<CancelToken>>> = Arc::default();
        let (finished, _) = tokio::sync::broadcast::channel(64);
        let worker = Worker {
            finished: finished.clone(),
            engine,
            vision,
            remote,
            cfg: cfg.clone(),
            state,
            conversations,
            pending: pending.clone(),
            active: active.clone(),
        };
        std::thread::Builder::new()
            .name("seer-answer".into())
            .spawn(move || worker.run(rx))
            .expect("spawning the answer thread");
        Self {
            tx,
            finished,
            pending,
            active,
            queue: cfg.queue,
            offload,
        }
    }

    /// The offload server's health (`None`: offload is off).
    pub fn offload_health(&self) -> Option<RemoteHealth> {
        self.offload.as_ref().map(HealthHandle::get)
    }

    /// Every turn that ends with an answer, from any front end.
    pub fn subscribe_finished(&self) -> tokio::sync::broadcast::Receiver<Finished> {
        self.finished.subscribe()
    }

    /// Turns waiting or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Queues a turn. Fails with [`AnswerError::Busy`] when the queue is full.
    pub fn submit(&self, ask: Ask) -> Result<Turn, AnswerError> {
        self.submit_with(ask, CancelToken::new())
    }

    /// Queues a turn that `cancel` stops: a caller whose request began
    /// before the turn (a capture, an image being read) keeps one token
    /// for the whole request.
    pub fn submit_with(&self, ask: Ask, cancel: CancelToken) -> Result<Turn, AnswerError> {
        let (events, rx) = mpsc::channel(TURN_EVENTS);
        let position = self.pending.fetch_add(1, Ordering::SeqCst);
        // The first event is always the queue position.
        let _ = events.try_send(TurnEvent::Queued { position });
        self.lock_active().push(cancel.clone());
        let job = Job {
            ask,
            events,
            cancel: cancel.clone(),
            prefill: false,
        };
        if self.tx.try_send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            self.lock_active().retain(|c| !c.same_as(&cancel));
            return Err(AnswerError::Busy(self.queue));
        }
        Ok(Turn { events: rx, cancel })
    }

    /// Runs `ask`'s prompt on the local engine and keeps its cache, so that
    /// a turn asking the same soon after starts at once (a spoken question
    /// whose speaker has paused but may not have finished). Only when the
    /// thread is idle, for text questions, without an offload server; the
    /// engine's cache is reused only if the real prompt matches.
    pub fn prefill(&self, ask: Ask) {
        if self.pending() > 0 || ask.image.is_some() || self.offload.is_some() {
            return;
        }
        let (events, _) = mpsc::channel(1);
        let job = Job {
            ask,
            events,
            cancel: CancelToken::new(),
            prefill: true,
        };
        let _ = self.tx.try_send(job);
    }

    /// Cancels every queued and running turn.
    pub fn stop_all(&self) {
        for c in self.lock_active().iter() {
            c.cancel();
        }
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, Vec<CancelToken>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Worker {
    finished: tokio::sync::broadcast::Sender<Finished>,
    engine: EngineSource,
    vision: Option<EngineSource>,
    remote: Option<Remote>,
    cfg: AnswerConfig,
    state: StateBus,
    conversations: Arc<Conversations>,
    pending: Arc<AtomicUsize>,
    active: Arc<Mutex<Vec<CancelToken>>>,
}

impl Worker {
    fn run(mut self, rx: std_mpsc::Receiver<Job>) {
        self.warm_up();
        while let Ok(job) = rx.recv() {
            if job.prefill {
                self.prefill(&job.ask);
                continue;
            }
            let outcome = if job.cancel.is_cancelled() {
                TurnEvent::Cancelled
            } else {
                self.state.set(State::Thinking);
                let _ = job.events.blocking_send(TurnEvent::Thinking);
                self.answer(&job)
            };
            // Book-keeping first, so a client that sees the turn's last event
            // also sees the state it left behind (idle when nothing waits).
            self.active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|c| !c.same_as(&job.cancel));
            if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                // An answer still being spoken keeps `speaking`.
                self.state.set_if(&[State::Thinking], State::Idle);
            }
            let _ = job.events.blocking_send(outcome);
        }
    }

    /// Runs the system prompt through a loaded engine before the first
    /// question, so that question prefills only its own tokens (the engine
    /// keeps the cache of whatever prompt it ran last).
    fn warm_up(&self) {
        // A question with no history and no words shares the system prompt
        // and the template's opening with every first question.
        self.prefill(&Ask::text(""));
    }

    /// Runs a turn's prompt without answering (see [`Answerer::prefill`]).
    fn prefill(&self, ask: &Ask) {
        let EngineSource::Loaded(engine) = &self.engine else {
            return;
        };
        let t0 = std::time::Instant::now();
        let (system, mut history) = self.history(ask);
        let done =
            fit_prompt(engine, &self.cfg, &system, &mut history, &ask.text).and_then(|ids| {
                engine
                    .warm_up(&ids)
                    .map_err(|e| AnswerError::Internal(e.to_string()))
            });
        match done {
            Ok(()) => tracing::debug!(ms = t0.elapsed().as_millis() as u64, "prompt run ahead"),
            Err(e) => tracing::warn!("running a prompt ahead: {e}"),
        }
    }

    fn engine(&mut self) -> Result<&Engine, AnswerError> {
        load(&mut self.engine, "language model")
    }

    fn vision_engine(&mut self) -> Result<&Engine, AnswerError> {
        match self.vision.as_mut() {
            Some(v) => load(v, "vision-language model"),
            None => Err(AnswerError::Unsupported(
                "no vision model is configured ([vision] model); this daemon cannot look at images"
                    .into(),
            )),
        }
    }

    /// Routes a turn: to the offload server when its mode and breaker
    /// say so, else (or when it fails before its first word, in `prefer`
    /// mode) to the local engine.
    fn answer(&mut self, job: &Job) -> TurnEvent {
        let image = job.ask.image.is_some();
        if let Some(remote) = self.remote.as_ref().filter(|r| r.takes(image)) {
            let only = remote.mode() == OffloadMode::Only;
            if remote.closed() {
                match self.answer_remote(remote, job) {
                    Ok(ev) => return ev,
                    Err(e) if only => return TurnEvent::Failed(AnswerError::Offload(e)),
                    Err(e) => tracing::info!("answering locally instead: {e}"),
                }
            } else if only {
                let h = remote.health_handle().get();
                return TurnEvent::Failed(AnswerError::Offload(format!(
                    "the offload server {} is not answering ({}; probing it in the background) and [offload] mode = \"only\"",
                    h.url,
                    h.last_error.as_deref().unwrap_or("failed")
                )));
            }
        }
        self.answer_local(job)
    }

    /// The turn on the offload server. `Err` only when nothing of the
    /// answer arrived, so the caller may still answer locally.
    fn answer_remote(&self, remote: &Remote, job: &Job) -> Result<TurnEvent, String> {
        let (system, mut history) = self.history(&job.ask);
        let mut messages = Vec::with_capacity(history.len() + 2);
        if !system.is_empty() {
            messages.push(Message::new("system", &system));
        }
        messages.extend(history.iter().cloned());
        messages.push(Message::new("user", &job.ask.text));
        let sampling = job.ask.sampling.clone().unwrap_or_default();
        let params = RemoteParams {
            max_tokens: job.ask.max_tokens.unwrap_or(self.cfg.max_tokens),
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            seed: (sampling.temperature > 0.0).then_some(sampling.seed),
            stop: job.ask.stop.clone(),
        };
        let events = &job.events;
        let cancel = &job.cancel;
        let mut on_delta = |text: &str| {
            // The receiver is gone: the client left, stop working for it.
            let ok = events
                .blocking_send(TurnEvent::Delta(text.to_owned()))
                .is_ok();
            if !ok {
                cancel.cancel();
            }
            ok
        };
        let out = match remote.answer(
            &messages,
            job.ask.image.as_deref(),
            &params,
            cancel,
            &mut on_delta,
        ) {
            Ok(o) => o,
            Err(RemoteError::Cancelled) => return Ok(TurnEvent::Cancelled),
            Err(RemoteError::BeforeFirst(e)) => return Err(e),
            Err(RemoteError::AfterFirst(e)) => {
                return Ok(TurnEvent::Failed(AnswerError::Offload(format!(
                    "the offload server failed mid-answer: {e}"
                ))));
            }
        };
        let text = out.text.trim().to_owned();
        let _ = self.finished.send(Finished {
            question: job.ask.text.clone(),
            answer: text.clone(),
        });
        if let Some(c) = &job.ask.conversation {
            history.push(Message::new("user", &job.ask.text));
            history.push(Message::new("assistant", &text));
            self.conversations.store(c, history);
        }
        let generated = out.completion_tokens.unwrap_or(out.pieces);
        let decode_ms = (out.total_ms - out.first_token_ms).max(0.0);
        Ok(TurnEvent::End {
            text: out.text,
            stop_reason: out.stop_reason,
            timings: Timings {
                prompt_tokens: out.prompt_tokens.unwrap_or(0),
                generated_tokens: generated,
                time_to_first_token_ms: out.first_token_ms,
                decode_ms,
                decode_tokens_per_s: if decode_ms > 0.0 {
                    generated.saturating_sub(1) as f64 * 1e3 / decode_ms
                } else {
                    0.0
                },
                ..Timings::default()
            },
            backend: Backend::Remote,
        })
    }

    /// The system prompt and the conversation before the question: the
    /// client's own messages when it sent them, else the stored
    /// conversation and the configured prompt.
    fn history(&self, ask: &Ask) -> (String, Vec<Message>) {
        match &ask.messages {
            Some(msgs) => {
                let system = msgs
                    .iter()
                    .filter(|m| m.role == "system")
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                let history = msgs
                    .iter()
                    .filter(|m| m.role != "system")
                    .cloned()
                    .collect();
                let system = if system.is_empty() {
                    self.cfg.system_prompt.clone()
                } else {
                    system
                };
                (system, history)
            }
            None => (
                self.cfg.system_prompt.clone(),
                ask.conversation
                    .as_deref()
                    .map(|c| self.conversations.history(c))
                    .unwrap_or_default(),
            ),
        }
    }

    fn answer_local(&mut self, job: &Job) -> TurnEvent {
        let (system, mut history) = self.history(&job.ask);
        let cfg = self.cfg.clone();
        let conversations = self.conversations.clone();
        let finished = self.finished.clone();
        let engine = match if job.ask.image.is_some() {
            self.vision_engine()
        } else {
            self.engine()
        } {
            Ok(e) => e,
            Err(e) => return TurnEvent::Failed(e),
        };
        let max_tokens = job.ask.max_tokens.unwrap_or(cfg.max_tokens);
        let mut req = match &job.ask.image {
            // SmolVLM is prompted as its processor does, with no system
            // prompt (the small models follow one poorly).
            Some(img) => {
                match fit_image_prompt(engine, &cfg, &mut history, &job.ask.text, img, &job.cancel)
                {
                    Ok(Some(p)) => Request::with_image(p, max_tokens),
                    Ok(None) => return TurnEvent::Cancelled,
                    Err(e) => return TurnEvent::Failed(e),
                }
            }
            None => match fit_prompt(engine, &cfg, &system, &mut history, &job.ask.text) {
                Ok(p) => Request::new(p, max_tokens),
                Err(e) => return TurnEvent::Failed(e),
            },
        };
        if let Some(s) = &job.ask.sampling {
            req.sampling = s.clone();
        }
        req.stop.clone_from(&job.ask.stop);
        if job.cancel.is_cancelled() {
            return TurnEvent::Cancelled;
        }
        let mut generation = match engine.generate(req, job.cancel.clone()) {
            Ok(g) => g,
            Err(e) => return TurnEvent::Failed(AnswerError::BadRequest(e.to_string())),
        };
        for piece in generation.by_ref() {
            match piece {
                Ok(text) => {
                    // The receiver is gone: the client left, stop working for it.
                    if job.events.blocking_send(TurnEvent::Delta(text)).is_err() {
                        job.cancel.cancel();
                    }
                }
                Err(e) => return TurnEvent::Failed(AnswerError::Internal(e.to_string())),
            }
        }
        let out = match generation.finish() {
            Ok(o) => o,
            Err(e) => return TurnEvent::Failed(AnswerError::Internal(e.to_string())),
        };
        if out.stop_reason == StopReason::Cancelled {
            return TurnEvent::Cancelled;
        }
        let _ = finished.send(Finished {
            question: job.ask.text.clone(),
            answer: out.text.trim().to_owned(),
        });
        if let Some(c) = &job.ask.conversation {
            history.push(Message::new("user", &job.ask.text));
            history.push(Message::new("assistant", out.text.trim()));
            conversations.store(c, history);
        }
        TurnEvent::End {
            text: out.text,
            stop_reason: out.stop_reason,
            timings: out.timings,
            backend: Backend::Local,
        }
    }
}

/// Loads a lazy engine on first use (errors go to the turn that needed it).
fn load<'a>(src: &'a mut EngineSource, what: &str) -> Result<&'a Engine, AnswerError> {
    if let EngineSource::Lazy(load) = src {
        tracing::info!("loading the {what} (lazy start)");
        let engine = load().map_err(AnswerError::ModelMissing)?;
        *src = EngineSource::Loaded(Box::new(engine));
    }
    match src {
        EngineSource::Loaded(e) => Ok(e),
        EngineSource::Lazy(_) => Err(AnswerError::Internal(format!("{what} not loaded"))),
    }
}

/// History + image + question for the vision-language model: the photo is
/// prepared once, the oldest turns are dropped until the text fits the
/// history budget and the whole prompt the context, and only then does the
/// vision tower run (once).
fn fit_image_prompt(
    engine: &Engine,
    cfg: &AnswerConfig,
    history: &mut Vec<Message>,
    question: &str,
    image: &image::RgbImage,
    cancel: &CancelToken,
) -> Result<Option<ImagePrompt>, AnswerError> {
    let map = |e: ModelError| match e {
        ModelError::InvalidRequest(m) => AnswerError::BadRequest(m),
        other => AnswerError::Internal(other.to_string()),
    };
    let prepared = engine.prepare_image(image).map_err(map)?;
    let context = engine.context_length();
    let seq_len = engine.vision().map_or(0, |v| v.processor().image_seq_len);
    let ids = loop {
        let ids = engine
            .image_prompt_ids(history, question, &prepared)
            .map_err(map)?;
        let image_tokens = (prepared.tiles * seq_len).min(ids.len());
        let text_tokens = ids.len() - image_tokens;
        let fits = text_tokens <= cfg.history_tokens && ids.len() < context;
        if fits || history.is_empty() {
            if ids.len() >= context {
                return Err(AnswerError::BadRequest(format!(
                    "the photo and question need {} prompt tokens ({image_tokens} for {} image tiles); the context holds {context} (turn [vision] tiling off, or raise [model] context_length)",
                    ids.len(),
                    prepared.tiles
                )));
            }
            break ids;
        }
        let drop = history.len().min(2);
        history.drain(..drop);
    };
    if cancel.is_cancelled() {
        return Ok(None);
    }
    engine
        .encode_image_prompt(ids, &prepared)
        .map(Some)
        .map_err(map)
}

/// Renders system prompt + history + question, dropping the oldest turns
/// (user/assistant pairs) until the prompt fits the budget.
fn fit_prompt(
    engine: &Engine,
    cfg: &AnswerConfig,
    system: &str,
    history: &mut Vec<Message>,
    question: &str,
) -> Result<Vec<u32>, AnswerError> {
    loop {
        let mut messages = Vec::with_capacity(history.len() + 2);
        if !system.is_empty() {
            messages.push(Message::new("system", system));
        }
        messages.extend(history.iter().cloned());
        messages.push(Message::new("user", question));
        let ids = engine
            .chat_prompt(&messages)
            .map_err(|e| AnswerError::Internal(e.to_string()))?;
        if ids.len() <= cfg.history_tokens || history.is_empty() {
            if ids.len() > cfg.history_tokens {
                return Err(AnswerError::BadRequest(format!(
                    "the question needs {} prompt tokens; the budget is {}",
                    ids.len(),
                    cfg.history_tokens
                )));
            }
            return Ok(ids);
        }
        let drop = history.len().min(2);
        history.drain(..drop);
    }
}
