//! Chat history per conversation id, kept in memory.

use seer_models::tokenizer::Message;
use std::collections::HashMap;
use std::sync::Mutex;

/// History of each conversation (user and assistant messages, no system
/// prompt). Bounded in count: past `max_conversations` the least recently
/// used conversation is forgotten.
#[derive(Debug)]
pub struct Conversations {
    inner: Mutex<Inner>,
    max_conversations: usize,
}

#[derive(Debug, Default)]
struct Inner {
    turns: HashMap<String, (u64, Vec<Message>)>,
    clock: u64,
}

impl Conversations {
    /// An empty store holding at most `max_conversations` conversations.
    pub fn new(max_conversations: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_conversations: max_conversations.max(1),
        }
    }

    /// The messages so far in conversation `id` (empty if new).
    pub fn history(&self, id: &str) -> Vec<Message> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .turns
            .get(id)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Replaces conversation `id`'s history (after a turn, already trimmed).
    pub fn store(&self, id: &str, messages: Vec<Message>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.clock += 1;
        let now = inner.clock;
        inner.turns.insert(id.to_owned(), (now, messages));
        if inner.turns.len() > self.max_conversations
            && let Some(oldest) = inner
                .turns
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
        {
            inner.turns.remove(&oldest);
        }
    }

    /// Number of conversations held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .turns
            .len()
    }

    /// Whether no conversation is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
