//! `seer-pipelines`: the stages between devices/models and the front ends.
//!
//! - [`answer::Answerer`] owns the language model on one dedicated thread
//!   (inference never runs on the async executor) behind a bounded queue.
//!   [`answer::Answerer::submit`] returns a [`answer::Turn`]: a bounded
//!   channel of [`answer::TurnEvent`]s (queued, thinking, text deltas, end)
//!   and a cancel handle that reaches the token loop.
//! - [`offload::Remote`] answers turns on an OpenAI-compatible server
//!   instead (`[offload]`), with a circuit breaker and local fallback.
//! - [`conversation::Conversations`] keeps chat history per conversation id
//!   within a token budget, oldest turns dropped first.
//! - [`transcribe::transcribe_clip`] cuts recorded audio into speech with
//!   Silero VAD and transcribes each piece with whisper.
//! - [`speak::Speaker`] speaks answers with the Piper voice as they stream:
//!   sentence by sentence on a thread of its own, into the loudspeaker,
//!   stopped at once by `stop`, a new question or a barge-in.
//! - [`state::StateBus`] broadcasts the assistant's [`state::State`] so every
//!   front end (socket, D-Bus) shows the same truth.

pub mod answer;
pub mod conversation;
pub mod listen;
pub mod offload;
pub mod speak;
pub mod state;
pub mod transcribe;
