//! `seer-daemon`: the `seerd` daemon and the `seer` client.
//!
//! - [`service`]: the assistant: the one owner of turns, voice, camera,
//!   models and state. Every front end is a thin adapter over it.
//! - [`protocol`]: the NDJSON socket protocol v1, typed both ways
//!   (requests, events, error codes), shared with the `seer` CLI and tests.
//! - [`error`]: the one error type, with a stable code.
//! - [`config`]: the TOML configuration (every key defaulted, unknown keys
//!   refused with the key and file named).
//! - [`server`]: the Unix socket (permissions, stale-socket detection, peer
//!   uid check), one task per connection with a bounded event queue.
//! - [`dbus`]: the `org.seer.Assistant1` D-Bus service (zbus).
//! - [`http`]: the OpenAI-compatible HTTP API (axum), off by default.
//! - [`models`]: the model catalogue and downloads for `seer models` and the
//!   socket's `models.list` / `models.pull`.
//! - [`listen`]: the microphone and speech models (the listen stage in
//!   `seer-pipelines`), started from `[listen]`.
//! - [`vision`]: images attached to questions, read and bounded safely.
//! - [`camera`]: the camera, opened by a look and kept warm for a while.
//! - [`systemd`]: readiness notification.
//!
//! The binaries are thin: `seerd` wires config → engine → answer stage →
//! service → socket, D-Bus and HTTP, and waits for SIGINT/SIGTERM; `seer` speaks
//! the protocol.

pub mod camera;
pub mod config;
pub mod dbus;
pub mod error;
pub mod http;
pub mod listen;
pub mod models;
pub mod protocol;
pub mod server;
pub mod service;
pub mod systemd;
pub mod vision;
