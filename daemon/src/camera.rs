//! The camera as the daemon uses it: opened by a "look", kept warm for a
//! while after the last one, closed when idle or muted.
//!
//! Why on demand: on glasses a running camera costs battery and, more
//! importantly, `CameraActive` is a privacy indicator; it must be true
//! exactly while frames are being captured. Frames go into a small store
//! and a look takes the sharpest recent one (motion blur is the common
//! failure of head-worn cameras).
//!
//! The source is a V4L2 camera ([`seer_platform::camera::Camera`], nokhwa)
//! or [`seer_platform::frames::ImageSource`]: an image file or a folder of
//! images played as a camera (tests, demos, boards without one).

use crate::error::ServiceError;
use crate::protocol::{CameraStatus, Code};
use seer_pipelines::state::StateBus;
use seer_platform::camera::{Camera as Device, CameraSpec};
use seer_platform::frames::{Frame, FrameEvent, FrameStore, ImageSource};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Frames kept for choosing the sharpest.
const STORE: usize = 4;
/// A look picks among frames this recent.
const SHARPEST_WINDOW: Duration = Duration::from_millis(700);
/// How long a look waits for the first frame of a camera it just opened.
const FIRST_FRAME: Duration = Duration::from_secs(5);

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An image file or folder, played as a camera.
    Images(PathBuf),
    /// A V4L2 camera: `None` the first, else an index or a name to match;
    /// the wanted width and height.
    Device(Option<String>, u32, u32),
}

impl Source {
    /// `[vision] camera`: `v4l2:` (the first camera), `v4l2:N`, `v4l2:NAME`
    /// or `/dev/videoN` for a camera, anything else an image file or folder;
    /// empty for none.
    pub fn parse(s: &str, width: u32, height: u32) -> Option<Source> {
        if s.is_empty() {
            None
        } else if let Some(d) = s.strip_prefix("v4l2:") {
            Some(Source::Device(
                (!d.is_empty()).then(|| d.to_owned()),
                width,
                height,
            ))
        } else if s.starts_with("/dev/video") {
            Some(Source::Device(Some(s.to_owned()), width, height))
        } else {
            Some(Source::Images(PathBuf::from(s)))
        }
    }

    fn name(&self) -> String {
        match self {
            Source::Images(p) => p.display().to_string(),
            Source::Device(None, ..) => "the first camera".into(),
            Source::Device(Some(d), ..) => format!("camera {d}"),
        }
    }
}

/// A started source; dropping it stops capture.
#[derive(Debug)]
#[allow(dead_code)]
enum Running {
    Images(ImageSource),
    Device(Device),
}

/// Camera settings from `[vision]`.
#[derive(Debug, Clone)]
pub struct CameraOptions {
    /// Where frames come from; `None`: no camera.
    pub source: Option<Source>,
    /// Frames per second.
    pub fps: f32,
    /// The camera stays open this long after the last look.
    pub keep_warm: Duration,
    /// Frames larger than this are refused.
    pub max_pixels: u64,
}

#[derive(Debug)]
struct Inner {
    running: bool,
    /// Looks waiting for a frame: the camera is in use while any waits,
    /// whatever the keep-warm time.
    waiting: usize,
    /// Bumped when the camera opens, so a closing pump knows whether a
    /// newer session owns the indicator.
    session: u64,
    store: FrameStore,
    last_use: Instant,
    error: Option<String>,
}

/// The daemon's one camera.
#[derive(Debug)]
pub struct Camera {
    opts: CameraOptions,
    state: StateBus,
    inner: Mutex<Inner>,
    frames: Condvar,
    active: tokio::sync::watch::Sender<bool>,
    /// Failures while open (a lost device, an unreadable image), as they happen.
    errors: tokio::sync::broadcast::Sender<String>,
}

impl Camera {
    /// A closed camera.
    pub fn new(opts: CameraOptions, state: StateBus) -> Arc<Self> {
        Arc::new(Self {
            opts,
            state,
            inner: Mutex::new(Inner {
                running: false,
                waiting: 0,
                session: 0,
                store: FrameStore::new(STORE),
                last_use: Instant::now(),
                error: None,
            }),
            frames: Condvar::new(),
            active: tokio::sync::watch::channel(false).0,
            errors: tokio::sync::broadcast::channel(16).0,
        })
    }

    /// Whether a camera is configured at all.
    pub fn configured(&self) -> bool {
        self.opts.source.is_some()
    }

    /// What `status` names as the camera.
    pub fn describe(&self) -> CameraStatus {
        CameraStatus {
            active: self.active(),
            source: self.opts.source.as_ref().map(Source::name),
            keep_warm_s: self.opts.keep_warm.as_secs_f64(),
        }
    }

    /// Whether frames are being captured right now (the privacy indicator).
    pub fn active(&self) -> bool {
        *self.active.borrow()
    }

    /// Changes of [`Camera::active`].
    pub fn subscribe_active(&self) -> tokio::sync::watch::Receiver<bool> {
        self.active.subscribe()
    }

    /// Failures while the camera is open (a lost device, an unreadable
    /// image); capture retries by itself.
    pub fn subscribe_errors(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.errors.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sharpest recent frame, opening the camera if it is closed.
    /// Blocking (up to a few seconds on a cold camera): call it off the
    /// async executor.
    pub fn look(self: &Arc<Self>) -> Result<Frame, ServiceError> {
        let Some(source) = &self.opts.source else {
            return Err(ServiceError::new(
                Code::Unsupported,
                "ask.image.camera: no camera is configured ([vision] camera)",
            ));
        };
        if self.state.muted() {
            return Err(ServiceError::new(
                Code::DeviceUnavailable,
                "ask.image.camera: muted; the camera stays off until unmuted",
            ));
        }
        let asked = Instant::now();
        let mut inner = self.lock();
        inner.last_use = asked;
        if !inner.running {
            // The indicator goes on before capture starts, never after.
            self.active.send_replace(true);
            let (tx, rx) = std::sync::mpsc::sync_channel(2);
            let started = match source {
                Source::Images(path) => {
                    ImageSource::start(path, self.opts.fps, self.opts.max_pixels, tx)
                        .map(Running::Images)
                        .map_err(|e| e.to_string())
                }
                Source::Device(device, width, height) => Device::start(
                    CameraSpec {
                        device: device.clone(),
                        width: *width,
                        height: *height,
                        fps: self.opts.fps.round().max(1.0) as u32,
                        max_pixels: self.opts.max_pixels,
                    },
                    tx,
                )
                .map(Running::Device)
                .map_err(|e| e.to_string()),
            };
            let src = match started {
                Ok(src) => src,
                Err(e) => {
                    self.active.send_replace(false);
                    return Err(ServiceError::new(
                        Code::DeviceUnavailable,
                        format!("{}: {e}", source.name()),
                    ));
                }
            };
            inner.running = true;
            inner.session += 1;
            inner.error = None;
            inner.store.clear();
            tracing::info!(source = %source.name(), "camera on");
            let me = self.clone();
            let session = inner.session;
            if let Err(e) = std::thread::Builder::new()
                .name("seer-camera".into())
                .spawn(move || me.pump(src, rx, session))
            {
                // The closure (and with it the source) was dropped: nothing captures.
                inner.running = false;
                self.active.send_replace(false);
                return Err(ServiceError::new(
                    Code::Internal,
                    format!("starting the camera thread: {e}"),
                ));
            }
        }
        inner.waiting += 1;
        let result = loop {
            if self.state.muted() {
                break Err(ServiceError::new(
                    Code::DeviceUnavailable,
                    "ask.image.camera: muted; the camera stays off until unmuted",
                ));
            }
            if let Some(f) = inner.store.sharpest(SHARPEST_WINDOW) {
                break Ok(f.clone());
            }
            if !inner.running {
                break Err(ServiceError::new(
                    Code::DeviceUnavailable,
                    "the camera closed",
                ));
            }
            let left = FIRST_FRAME.saturating_sub(asked.elapsed());
            if left.is_zero() {
                let why = inner
                    .error
                    .clone()
                    .unwrap_or_else(|| "no frame arrived".into());
                break Err(ServiceError::new(
                    Code::DeviceUnavailable,
                    format!(
                        "{}: no frame in {} s ({why})",
                        source.name(),
                        FIRST_FRAME.as_secs()
                    ),
                ));
            }
            inner = self
                .frames
                .wait_timeout(inner, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        inner.waiting -= 1;
        // Keep-warm counts from when the look was served.
        inner.last_use = Instant::now();
        result
    }

    /// Moves frames into the store until the camera has been idle for the
    /// keep-warm time or the daemon is muted, then closes it.
    fn pump(&self, source: Running, rx: std::sync::mpsc::Receiver<FrameEvent>, session: u64) {
        loop {
            let mut ended = false;
            match rx.recv_timeout(Duration::from_millis(100)) {
                // A frame captured after a mute is never served.
                Ok(FrameEvent::Frame(f)) if !self.state.muted() => {
                    let mut inner = self.lock();
                    inner.store.push(f);
                    inner.error = None;
                    self.frames.notify_all();
                }
                Ok(FrameEvent::Frame(_)) => {}
                Ok(FrameEvent::Error(e)) => {
                    tracing::warn!("camera: {e}");
                    let _ = self.errors.send(e.clone());
                    // What it showed is no longer "now": a look waits for
                    // a fresh frame (or fails) instead of answering about
                    // the past.
                    let mut inner = self.lock();
                    inner.store.clear();
                    inner.error = Some(e);
                    drop(inner);
                    self.frames.notify_all();
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => ended = true,
            }
            // Decided and marked closed under one lock, so a look either
            // sees the camera open (and is served by this pump) or closed
            // (and opens a new one).
            let mut inner = self.lock();
            let muted = self.state.muted();
            let idle = inner.waiting == 0 && inner.last_use.elapsed() >= self.opts.keep_warm;
            if ended || muted || idle {
                inner.running = false;
                inner.store.clear();
                self.frames.notify_all();
                break;
            }
        }
        // Capture stops (the source's thread is joined) before the
        // indicator goes off, unless a newer session has already turned it on.
        drop(source);
        let inner = self.lock();
        if inner.session == session && !inner.running {
            self.active.send_replace(false);
        }
        drop(inner);
        tracing::info!("camera off");
    }
}
