//! A real camera through `nokhwa` (V4L2 on Linux): opened on its own thread,
//! its MJPEG/YUYV/NV12 frames decoded to RGB and delivered as
//! [`FrameEvent`]s, like an [`crate::frames::ImageSource`].
//!
//! Why a thread that owns the device: nokhwa's camera is not `Send` on every
//! platform and its `frame()` blocks; the consumer only ever sees a bounded
//! channel. A device that fails (unplugged, the video server gone) is
//! reported as an event and reopened every second until it is back or the
//! camera is stopped.

use crate::frames::{Frame, FrameEvent};
use image::RgbImage;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

/// Which camera and how.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSpec {
    /// `None`: the first one; a number: `/dev/videoN`; else a name to match
    /// (case-insensitive substring of the device's name).
    pub device: Option<String>,
    /// Wanted width; the closest the camera offers is used.
    pub width: u32,
    /// Wanted height.
    pub height: u32,
    /// Wanted frames per second.
    pub fps: u32,
    /// Frames larger than this are dropped (a misbehaving driver must not
    /// exhaust memory).
    pub max_pixels: u64,
}

/// Why a camera could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// No device matches the configuration.
    #[error("no camera matches {0:?} (see `seer devices`)")]
    NotFound(String),
    /// The device failed.
    #[error("camera {device}: {reason}")]
    Device {
        /// Which device.
        device: String,
        /// What went wrong.
        reason: String,
    },
}

/// One camera nokhwa can see, with what it offers.
#[derive(Debug, Clone)]
pub struct CameraDevice {
    /// Its index (`/dev/videoN`).
    pub index: String,
    /// The driver's name.
    pub name: String,
    /// Formats as `WxH FORMAT @fps`, when the device could be asked.
    pub formats: Vec<String>,
}

/// The cameras present, with their formats.
pub fn cameras() -> Vec<CameraDevice> {
    let Ok(infos) = nokhwa::query(ApiBackend::Auto) else {
        return Vec::new();
    };
    infos
        .into_iter()
        .map(|info| {
            let formats = nokhwa::Camera::new(
                info.index().clone(),
                RequestedFormat::new::<RgbFormat>(RequestedFormatType::None),
            )
            .and_then(|mut c| c.compatible_camera_formats())
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        format!(
                            "{}x{} {} @{}",
                            f.width(),
                            f.height(),
                            f.format(),
                            f.frame_rate()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
            CameraDevice {
                index: info.index().to_string(),
                name: info.human_name(),
                formats,
            }
        })
        .collect()
}

/// Resolves the configured device to nokhwa's index.
fn index_of(device: &Option<String>) -> Result<CameraIndex, CameraError> {
    let Some(d) = device else {
        return Ok(CameraIndex::Index(0));
    };
    let d = d.trim_start_matches("/dev/video");
    if let Ok(n) = d.parse::<u32>() {
        return Ok(CameraIndex::Index(n));
    }
    let want = d.to_lowercase();
    nokhwa::query(ApiBackend::Auto)
        .ok()
        .and_then(|all| {
            all.into_iter()
                .find(|i| i.human_name().to_lowercase().contains(&want))
        })
        .map(|i| i.index().clone())
        .ok_or_else(|| CameraError::NotFound(d.to_owned()))
}

/// A running camera; stops (and closes the device) on drop.
#[derive(Debug)]
pub struct Camera {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Closed when the capture thread ends.
    done: std::sync::mpsc::Receiver<()>,
}

impl Camera {
    /// Opens the camera on its own thread and delivers frames into `tx`
    /// (frames the consumer does not take in time are dropped). Failing to
    /// open is an [`FrameEvent::Error`] followed by retries, not an error
    /// here: a camera that is plugged in later is picked up.
    pub fn start(spec: CameraSpec, tx: SyncSender<FrameEvent>) -> Result<Self, CameraError> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || {
                capture(spec, tx, s);
                drop(done_tx);
            })
            .map_err(|e| CameraError::Device {
                device: "camera thread".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            done,
        })
    }
}

impl Drop for Camera {
    /// Stops capture. A driver stuck inside a frame read (it can block when
    /// the device vanishes) is given 2 s, then left behind rather than
    /// hanging whoever closes the camera.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        match self.done.recv_timeout(Duration::from_secs(2)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!("the camera thread is stuck in the driver; leaving it");
            }
            _ => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

fn open(spec: &CameraSpec) -> Result<nokhwa::Camera, CameraError> {
    let index = index_of(&spec.device)?;
    let name = index.to_string();
    let err = |e: nokhwa::NokhwaError| CameraError::Device {
        device: name.clone(),
        reason: e.to_string(),
    };
    let wanted = CameraFormat::new(
        Resolution::new(spec.width, spec.height),
        FrameFormat::MJPEG,
        spec.fps,
    );
    let mut cam = nokhwa::Camera::new(
        index.clone(),
        RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted)),
    )
    .or_else(|_| {
        nokhwa::Camera::new(
            index.clone(),
            RequestedFormat::new::<RgbFormat>(RequestedFormatType::AbsoluteHighestFrameRate),
        )
    })
    .map_err(err)?;
    cam.open_stream().map_err(err)?;
    tracing::info!(device = %name, format = %cam.camera_format(), "camera streaming");
    Ok(cam)
}

/// The capture loop: open, deliver, and on failure report and reopen.
fn capture(spec: CameraSpec, tx: SyncSender<FrameEvent>, stop: Arc<AtomicBool>) {
    let mut seq = 0u64;
    // False once nobody listens any more.
    let report = |e: String| {
        !matches!(
            tx.try_send(FrameEvent::Error(e)),
            Err(TrySendError::Disconnected(_))
        )
    };
    while !stop.load(Ordering::SeqCst) {
        let mut cam = match open(&spec) {
            Ok(c) => c,
            Err(e) => {
                if !report(e.to_string()) {
                    return;
                }
                nap(&stop, Duration::from_secs(1));
                continue;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            let rgb = cam.frame().and_then(|b| {
                let res = b.resolution();
                if u64::from(res.width()) * u64::from(res.height()) > spec.max_pixels {
                    return Err(nokhwa::NokhwaError::ReadFrameError(format!(
                        "a {}×{} frame is over the pixel limit",
                        res.width(),
                        res.height()
                    )));
                }
                let img = b.decode_image::<RgbFormat>()?;
                let (w, h) = (img.width(), img.height());
                RgbImage::from_raw(w, h, img.into_raw()).ok_or_else(|| {
                    nokhwa::NokhwaError::ReadFrameError("frame size mismatch".into())
                })
            });
            match rgb {
                Ok(img) => {
                    match tx.try_send(FrameEvent::Frame(Frame::new(img, seq))) {
                        Ok(()) | Err(TrySendError::Full(_)) => {}
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                    seq += 1;
                }
                Err(e) => {
                    // Lost: report, close, and reopen after a pause.
                    if !report(format!("camera lost: {e}")) {
                        return;
                    }
                    break;
                }
            }
        }
        let _ = cam.stop_stream();
        drop(cam);
        nap(&stop, Duration::from_secs(1));
    }
}

/// Sleeps up to `d`, waking early when stopped.
fn nap(stop: &AtomicBool, d: Duration) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::SeqCst) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}
