//! The assistant's state, broadcast to every front end.

use serde::Serialize;
use tokio::sync::broadcast;

/// What the assistant is doing. One source of truth for the socket's `state`
/// events and the D-Bus `State` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nothing running.
    Idle,
    /// Capturing speech.
    Listening,
    /// Turning speech into text.
    Transcribing,
    /// Generating an answer.
    Thinking,
    /// Speaking an answer.
    Speaking,
}

impl State {
    /// The wire name (`idle`, `thinking`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Listening => "listening",
            State::Transcribing => "transcribing",
            State::Thinking => "thinking",
            State::Speaking => "speaking",
        }
    }
}

/// Broadcasts state changes; cheap to clone. Slow subscribers miss old
/// states (broadcast's lag semantics) rather than slowing the sender.
#[derive(Debug, Clone)]
pub struct StateBus {
    tx: broadcast::Sender<State>,
    current: std::sync::Arc<std::sync::Mutex<State>>,
    /// The privacy switch: while true, microphone and camera stay off.
    muted: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for StateBus {
    fn default() -> Self {
        Self::new()
    }
}

impl StateBus {
    /// A bus starting in [`State::Idle`].
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(64);
        Self {
            tx,
            current: std::sync::Arc::new(std::sync::Mutex::new(State::Idle)),
            muted: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Sets the privacy switch.
    pub fn set_muted(&self, muted: bool) {
        self.muted
            .send_if_modified(|m| std::mem::replace(m, muted) != muted);
    }

    /// Whether the privacy switch is on.
    pub fn muted(&self) -> bool {
        *self.muted.borrow()
    }

    /// A receiver that sees every change of the privacy switch.
    pub fn subscribe_muted(&self) -> tokio::sync::watch::Receiver<bool> {
        self.muted.subscribe()
    }

    /// Sets the state, announcing it only when it changes.
    pub fn set(&self, s: State) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if *cur != s {
            *cur = s;
            let _ = self.tx.send(s);
        }
    }

    /// Sets the state to `s` only if it is one of `from` now, checked and
    /// set under one lock (so a stage never hides another's newer state).
    pub fn set_if(&self, from: &[State], s: State) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if from.contains(&cur) && *cur != s {
            *cur = s;
            let _ = self.tx.send(s);
        }
    }

    /// The current state.
    pub fn get(&self) -> State {
        *self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of future changes.
    pub fn subscribe(&self) -> broadcast::Receiver<State> {
        self.tx.subscribe()
    }
}
