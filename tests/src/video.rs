//! A private PipeWire video source for camera tests: a private session bus,
//! `pipewire` and `wireplumber`, and `gst-launch-1.0 videotestsrc` served as a
//! `Video/Source` node. A process started with [`VideoServer::env`] sees it
//! as V4L2 device 0 through pipewire-v4l2's preload library (plus the
//! test-only shim in `tests/support/v4l2_shim.c`). Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PW_V4L2: &str = "/usr/lib/x86_64-linux-gnu/pipewire-0.3/v4l2/libpw-v4l2.so";

/// The running servers.
pub struct VideoServer {
    dir: tempfile::TempDir,
    bus: String,
    procs: Vec<Child>,
    source: Option<Child>,
    pattern: String,
    shim: PathBuf,
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let f = std::fs::File::create(log).expect("log file");
    cmd.stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/install-deps.sh installs it)"))
}

impl VideoServer {
    /// Starts everything and a `videotestsrc` with `pattern` (gst
    /// properties, e.g. `pattern=solid-color foreground-color=0xffff0000`),
    /// 640×480 YUY2 at 30 fps, and waits until the node exists.
    pub fn start(pattern: &str) -> VideoServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        std::fs::create_dir(&run).expect("runtime dir");
        let mut dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(dbus.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("bus address");
        let shim = dir.path().join("libseer-v4l2-shim.so");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/v4l2_shim.c");
        let ok = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&shim)
            .arg(&src)
            .arg("-ldl")
            .status()
            .expect("cc");
        assert!(ok.success(), "compiling {}", src.display());
        let mut s = VideoServer {
            bus: line.trim().to_owned(),
            procs: vec![dbus],
            source: None,
            pattern: pattern.to_owned(),
            shim,
            dir,
        };
        let pw = spawn(&mut s.cmd("pipewire"), &s.dir.path().join("pipewire.log"));
        s.procs.push(pw);
        let t0 = Instant::now();
        while !run.join("pipewire-0").exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "pipewire did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let wp = spawn(
            &mut s.cmd("wireplumber"),
            &s.dir.path().join("wireplumber.log"),
        );
        s.procs.push(wp);
        s.start_source();
        s
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env_remove("PIPEWIRE_REMOTE");
        c
    }

    /// (Re)starts the gst source and waits until PipeWire lists it.
    pub fn start_source(&mut self) {
        self.stop_source();
        let caps = "video/x-raw,format=YUY2,width=640,height=480,framerate=30/1";
        let mut args = vec!["-q".to_owned(), "videotestsrc".to_owned()];
        args.extend(self.pattern.split_whitespace().map(str::to_owned));
        args.extend(
            [
                "!",
                caps,
                "!",
                "pipewiresink",
                "mode=provide",
                "stream-properties=props,media.class=Video/Source,node.name=seer-test-camera",
            ]
            .map(str::to_owned),
        );
        let mut cmd = self.cmd("gst-launch-1.0");
        cmd.args(&args);
        let child = spawn(&mut cmd, &self.dir.path().join("gst.log"));
        self.source = Some(child);
        let t0 = Instant::now();
        loop {
            let out = self
                .cmd("pw-cli")
                .args(["ls", "Node"])
                .output()
                .expect("pw-cli");
            if String::from_utf8_lossy(&out.stdout).contains("seer-test-camera") {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "the gst video source did not appear: {}",
                std::fs::read_to_string(self.dir.path().join("gst.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the gst source: the camera is gone.
    pub fn stop_source(&mut self) {
        if let Some(mut c) = self.source.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The video capture streams PipeWire itself lists as running
    /// (`pw-dump`: nodes of class `Stream/Input/Video` in state
    /// `running`), each as "node id (binary)": who is reading a camera
    /// now, from the media server's side rather than the reader's.
    pub fn capture_streams(&self) -> Vec<String> {
        let out = self.cmd("pw-dump").output().expect("pw-dump");
        assert!(
            out.status.success(),
            "pw-dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // pw-dump can print more than one array when the graph changes
        // while it runs: later entries update earlier ones by id, and an
        // entry with a null `info` is an object that went away.
        let mut objects = std::collections::BTreeMap::new();
        for array in
            serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Vec<serde_json::Value>>()
        {
            for o in array.expect("pw-dump prints JSON arrays") {
                let id = o["id"].as_u64().unwrap_or(u64::MAX);
                if o["info"].is_null() {
                    objects.remove(&id);
                } else {
                    objects.insert(id, o);
                }
            }
        }
        objects
            .values()
            .filter(|o| o["type"] == "PipeWire:Interface:Node")
            .filter(|o| o["info"]["props"]["media.class"] == "Stream/Input/Video")
            .filter(|o| o["info"]["state"] == "running")
            .map(|o| {
                format!(
                    "node {} ({})",
                    o["id"],
                    o["info"]["props"]["application.process.binary"]
                        .as_str()
                        .unwrap_or("?")
                )
            })
            .collect()
    }

    /// Environment for a process that should see the source as V4L2 device 0.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "XDG_RUNTIME_DIR".into(),
                self.dir.path().join("run").display().to_string(),
            ),
            (
                "LD_PRELOAD".into(),
                format!("{} {PW_V4L2}", self.shim.display()),
            ),
        ]
    }
}

impl Drop for VideoServer {
    fn drop(&mut self) {
        self.stop_source();
        for p in self.procs.iter_mut().rev() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}
