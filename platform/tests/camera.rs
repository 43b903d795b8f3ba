//! The real capture path: nokhwa → V4L2 (PipeWire's emulation, there is no
//! kernel V4L2 here) → a gst test pattern served as a PipeWire camera. The
//! test binary re-runs itself with pipewire-v4l2 preloaded, because the
//! preload must be in place when the process starts.

use seer_platform::camera::{Camera, CameraSpec};
use seer_platform::frames::FrameEvent;
use seer_tests::video::VideoServer;
use std::process::{Command, Stdio};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

fn spec() -> CameraSpec {
    CameraSpec {
        device: None,
        width: 640,
        height: 480,
        fps: 30,
        max_pixels: 16_000_000,
    }
}

/// Frames until `n` arrived or `patience` passed; errors seen meanwhile.
fn frames(
    rx: &std::sync::mpsc::Receiver<FrameEvent>,
    n: usize,
    patience: Duration,
) -> (Vec<seer_platform::frames::Frame>, Vec<String>) {
    let (mut got, mut errs) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    while got.len() < n {
        let left = patience.saturating_sub(t0.elapsed());
        match rx.recv_timeout(left) {
            Ok(FrameEvent::Frame(f)) => got.push(f),
            Ok(FrameEvent::Error(e)) => errs.push(e),
            Err(_) => break,
        }
    }
    (got, errs)
}

/// Runs inside the preloaded child (see below).
#[test]
fn capture_in_child() {
    if std::env::var_os("SEER_CAMERA_CHILD").is_none() {
        return; // Only meaningful as the child of the test below.
    }
    let (tx, rx) = sync_channel(4);
    let cam = Camera::start(spec(), tx).expect("camera thread");
    let (got, errs) = frames(&rx, 10, Duration::from_secs(20));
    assert!(
        got.len() >= 10,
        "only {} frames; errors: {errs:?}",
        got.len()
    );
    let f = &got[9];
    assert_eq!((f.image.width(), f.image.height()), (640, 480));
    // The pattern is solid red; YUY2 round trips it to about (255, 0, 0).
    let p = f.image.get_pixel(320, 240).0;
    assert!(
        p[0] > 200 && p[1] < 60 && p[2] < 60,
        "pixel {p:?} is not red"
    );
    assert!(got.windows(2).all(|w| w[1].seq > w[0].seq));
    drop(cam);
    println!("CHILD-OK {} frames", got.len());
}

#[test]
fn a_v4l2_camera_delivers_rgb_frames() {
    let video = VideoServer::start("pattern=solid-color foreground-color=0xffff0000");
    let exe = std::env::current_exe().expect("test binary");
    let child = Command::new(exe)
        .args([
            "--exact",
            "capture_in_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(video.env())
        .env("SEER_CAMERA_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("child");
    let out = child.wait_with_output().expect("child");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("CHILD-OK"), "{text}");
}
