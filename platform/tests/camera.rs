//! The real capture path: nokhwa → V4L2 (PipeWire's emulation, there is no
//! kernel V4L2 here) → a gst test pattern served as a PipeWire camera. The
//! test binary re-runs itself with pipewire-v4l2 preloaded, because the
//! preload must be in place when the process starts; the parent kills and
//! restarts the video source while the child captures.

use seer_platform::camera::{Camera, CameraSpec};
use seer_platform::frames::FrameEvent;
use seer_tests::video::VideoServer;
use std::io::{BufRead, BufReader, Write};
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
    println!("CHILD-FRAMES {}", got.len());
    if std::env::var_os("SEER_CAMERA_LOSS").is_some() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("parent");
        loop {
            match rx.recv_timeout(Duration::from_secs(15)) {
                Ok(FrameEvent::Error(e)) => {
                    println!("CHILD-LOST {e}");
                    break;
                }
                Ok(FrameEvent::Frame(_)) => {}
                Err(_) => panic!("no error event within 15 s of the source dying"),
            }
        }
        line.clear();
        std::io::stdin().read_line(&mut line).expect("parent");
        let (got, errs) = frames(&rx, 5, Duration::from_secs(30));
        assert!(
            got.len() >= 5,
            "capture did not come back; errors: {errs:?}"
        );
        println!("CHILD-BACK");
    }
    drop(cam);
    println!("CHILD-OK {} frames", got.len());
}

#[test]
fn a_v4l2_camera_delivers_rgb_frames_and_comes_back_after_a_loss() {
    let mut video = VideoServer::start("pattern=solid-color foreground-color=0xffff0000");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "capture_in_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(video.env())
        .env("SEER_CAMERA_CHILD", "1")
        .env("SEER_CAMERA_LOSS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child");
    let mut stdin = child.stdin.take().expect("stdin");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let mut wait_for = |tag: &str| {
        let t0 = Instant::now();
        while !seen.iter().any(|l| l.contains(tag)) {
            let left = Duration::from_secs(60).saturating_sub(t0.elapsed());
            match lines.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(_) => panic!("no {tag} from the child: {seen:#?}"),
            }
        }
    };
    wait_for("CHILD-FRAMES");
    video.stop_source();
    writeln!(stdin, "killed").expect("child stdin");
    wait_for("CHILD-LOST");
    video.start_source();
    writeln!(stdin, "restarted").expect("child stdin");
    wait_for("CHILD-OK");
    assert!(child.wait().expect("child").success());
}
