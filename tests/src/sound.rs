//! A private PulseAudio sound server for capture tests: a null sink whose
//! monitor is the default source, so what `paplay` plays is what a
//! microphone client records, with no sound card. Runs as the current user
//! (root too) with its own runtime directory; killed on drop.

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
            .arg(wav)
            .env("PULSE_SERVER", self.server())
            .status()
            .expect("paplay");
        assert!(st.success(), "paplay {}", wav.display());
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
             set-default-sink vsink\n\
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
