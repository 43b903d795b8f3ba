//! `seer-daemon`: the `seerd` daemon and the `seer` client.
//!
//! - [`config`]: the TOML configuration (every key defaulted, unknown keys
//!   refused with the key and file named).
//! - [`protocol`]: the NDJSON socket protocol v1 (requests, events, error codes).
//! - [`server`]: the Unix socket (permissions, stale-socket detection, peer
//!   uid check), one task per connection with a bounded event queue.
//! - [`dbus`]: the `org.seer.Assistant1` D-Bus service (zbus), sharing the
//!   answer stage and state bus with the socket.
//! - [`models`]: the model catalogue and downloads for `seer models` and the
//!   socket's `models.list` / `models.pull`.
//! - [`listen`]: hands-free and push-to-talk listening (the listen stage
//!   in `seer-pipelines`) and the `voice` broadcast.
//! - [`vision`]: images attached to questions, read and bounded safely.
//! - [`camera`]: the camera, opened by a look and kept warm for a while.
//! - [`systemd`]: readiness notification.
//!
//! The binaries are thin: `seerd` wires config → engine → answer stage →
//! server and waits for SIGINT/SIGTERM; `seer` speaks the protocol.

pub mod camera;
pub mod config;
pub mod dbus;
pub mod listen;
pub mod models;
pub mod protocol;
pub mod server;
pub mod systemd;
pub mod vision;
