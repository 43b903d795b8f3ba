//! A private PulseAudio sound server for capture and playback tests, with
//! no sound card: two null sinks.
//!
//! - `vsink` is the room the microphone hears: its monitor is the default
//!   source, so what [`SoundServer::play`] plays is what a microphone client
//!   records.
//! - `speaker` is the default sink, Seer's loudspeaker: what a playback
//!   client plays is what [`SoundServer::record_speaker`] records. Keeping
//!   it apart from `vsink` means Seer never hears its own voice here.
//!
//! Runs as the current user (root too) with its own runtime directory;
//! killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The running server.
pub struct SoundServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl SoundServer {
    /// Starts it and waits until it answers.
    pub fn start() -> SoundServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = spawn(dir.path());
        let s = SoundServer { child, dir };
        s.wait_ready();
        s
    }

    /// Kills the server (clients see their device vanish); the socket path
    /// stays the same for [`SoundServer::restart`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.dir.path().join("native"));
        self.child = spawn(self.dir.path());
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let t0 = Instant::now();
        while !Command::new("pactl")
            .arg("info")
            .env("PULSE_SERVER", self.server())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|st| st.success())
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "pulseaudio did not start: {}",
                std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `PULSE_SERVER` value clients use.
    pub fn server(&self) -> String {
        format!("unix:{}", self.dir.path().join("native").display())
    }

    /// Plays a WAV file into the null sink and waits until it is done.
    pub fn play(&self, wav: &Path) {
        let st = Command::new("paplay")
            .arg("--device=vsink")
            .arg(wav)
            .env("PULSE_SERVER", self.server())
            .status()
            .expect("paplay");
        assert!(st.success(), "paplay {}", wav.display());
    }

    /// Starts recording the `speaker` sink (16 kHz mono s16le) into `raw`,
    /// and waits until the recorder delivers data: `parec` takes over a
    /// second to start, and audio played before that is lost.
    pub fn record_speaker(&self, raw: &Path) -> Recorder {
        let file = std::fs::File::create(raw).expect("create recording");
        let child = Command::new("parec")
            .args([
                "--device=speaker.monitor",
                "--format=s16le",
                "--rate=16000",
                "--channels=1",
                "--latency-msec=20",
            ])
            .env("PULSE_SERVER", self.server())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("parec (pulseaudio-utils)");
        let r = Recorder {
            child,
            path: raw.to_owned(),
        };
        let t0 = Instant::now();
        while r.samples_so_far() == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "parec delivered nothing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// The server's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }
}

fn spawn(dir: &Path) -> Child {
    let socket = dir.join("native");
    let config = dir.join("default.pa");
    std::fs::write(
        &config,
        format!(
            "load-module module-native-protocol-unix auth-anonymous=1 socket={}\n\
             load-module module-null-sink sink_name=vsink\n\
             load-module module-null-sink sink_name=speaker\n\
             set-default-sink speaker\n\
             set-default-source vsink.monitor\n",
            socket.display()
        ),
    )
    .expect("write default.pa");
    Command::new("pulseaudio")
        .args([
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
        ])
        .arg("-F")
        .arg(&config)
        .arg(format!("--log-target=file:{}", dir.join("log").display()))
        .env("XDG_RUNTIME_DIR", dir)
        .env("HOME", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pulseaudio (scripts/install-deps.sh installs it)")
}

impl Drop for SoundServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `parec` recording of the `speaker` sink; stopped on drop.
pub struct Recorder {
    child: Child,
    path: PathBuf,
}

impl Recorder {
    /// Samples written so far.
    pub fn samples_so_far(&self) -> usize {
        std::fs::metadata(&self.path).map_or(0, |m| m.len() as usize / 2)
    }

    /// The samples from `from` on, as f32 in [-1, 1].
    pub fn samples(&self, from: usize) -> Vec<f32> {
        let bytes = std::fs::read(&self.path).expect("read recording");
        bytes
            .chunks_exact(2)
            .skip(from)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect()
    }

    /// Stops recording; returns the raw file.
    pub fn stop(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.path.clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
