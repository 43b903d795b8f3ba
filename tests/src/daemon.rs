//! The real `seerd` on a private socket, and a protocol client for it.

use crate::{model, seerd};
use seer_daemon::protocol::{self, Event, Received, Request};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `seerd` with its own config and socket in a temp dir; killed
/// on drop.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its temp dir (config, socket dir).
    pub dir: tempfile::TempDir,
    /// How it was started: wrapper, config file, environment.
    launch: (Vec<String>, PathBuf, Vec<(String, String)>),
}

/// Starts `seerd --config CONFIG` (through `wrapper`, if any).
fn spawn(wrapper: &[String], config: &Path, env: &[(String, String)]) -> Child {
    let mut cmd = match wrapper.split_first() {
        None => seerd(config),
        Some((program, args)) => {
            let mut c = std::process::Command::new(program);
            c.args(args)
                .arg(crate::bin("seerd"))
                .arg("--config")
                .arg(config)
                .env_remove("SEER_SOCKET");
            c
        }
    };
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start seerd")
}

impl Daemon {
    /// Starts `seerd` with `extra` TOML appended to a config that points at
    /// the test model and a private socket, and waits for the socket.
    pub fn start(extra: &str) -> Daemon {
        Self::start_with_env(extra, &[])
    }

    /// As [`Daemon::start`], with extra environment variables for `seerd`.
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_with_model(&format!("path = {:?}", model()), extra, env)
    }

    /// As [`Daemon::start_with_env`], with `model` as the `[model]` lines
    /// that choose the model (`path = …`, or `name = …` and `models_dir = …`).
    pub fn start_with_model(model: &str, extra: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_wrapped(&[], model, extra, env)
    }

    /// As [`Daemon::start_with_model`], with `seerd` run through `wrapper`
    /// (e.g. `unshare -n`): the command line becomes `WRAPPER… seerd
    /// --config FILE`.
    pub fn start_wrapped(
        wrapper: &[&str],
        model: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run/seer.sock");
        // Hands-free listening opens the microphone at start; tests that do
        // not configure `[listen]` leave it closed.
        let listen = if extra.contains("[listen]") {
            ""
        } else {
            "[listen]\nmode = \"push-to-talk\"\n"
        };
        // Likewise vision, unless a test asks for it: a SmolVLM installed
        // on the machine must not change what other tests see.
        let listen = if extra.contains("[vision]") {
            listen.to_owned()
        } else {
            format!("{listen}[vision]\nenabled = false\n")
        };
        // And speech: a voice installed on the machine must not make other
        // tests' daemons talk.
        let listen = if extra.contains("[speech]") {
            listen
        } else {
            format!("{listen}[speech]\nenabled = false\n")
        };
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[model]\n{model}\nbackend = \"cpu\"\nthreads = 1\ncontext_length = 1024\n\n[socket]\npath = {:?}\n{extra}\n{listen}{}",
                socket,
                // Without a private bus given, stay off the bus so parallel
                // daemons never compete for the name.
                if extra.contains("[dbus]") || env.iter().any(|(k, _)| *k == "DBUS_SESSION_BUS_ADDRESS") { "" } else { "[dbus]\nbus = \"off\"\n" }
            ),
        )
        .expect("write config");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let wrapper: Vec<String> = wrapper.iter().map(|s| (*s).to_owned()).collect();
        let child = spawn(&wrapper, &config, &env);
        let d = Daemon {
            child,
            socket,
            dir,
            launch: (wrapper, config, env),
        };
        d.wait_for_socket();
        d
    }

    /// Kills it with SIGKILL (no clean-up runs) and starts it again with
    /// the same config and environment, waiting for its socket.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (wrapper, config, env) = &self.launch;
        self.child = spawn(wrapper, config, env);
        self.wait_for_socket();
    }

    fn wait_for_socket(&self) {
        let d = self;
        let t0 = Instant::now();
        while UnixStream::connect(&d.socket).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "seerd did not open its socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new client connection.
    pub fn connect(&self) -> Client {
        Client::connect(&self.socket)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One protocol client over a real Unix socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to `socket`.
    pub fn connect(socket: &Path) -> Client {
        let s = UnixStream::connect(socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        Client {
            writer: s.try_clone().expect("clone"),
            reader: BufReader::new(s),
        }
    }

    /// A second handle on the connection for writing from another thread.
    pub fn writer(&self) -> UnixStream {
        self.writer.try_clone().expect("clone")
    }

    /// Reads until the daemon closes the connection; returns the number of
    /// lines received.
    pub fn drain_to_eof(&mut self) -> usize {
        let mut n = 0;
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return n,
                Ok(_) => n += 1,
            }
        }
    }

    /// Sends raw bytes (a newline is not added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends one JSON request line.
    pub fn send(&mut self, v: Value) {
        self.send_raw(format!("{v}\n").as_bytes());
    }

    /// The next event.
    pub fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read event");
        assert!(n > 0, "the daemon closed the connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad event {line:?}: {e}"))
    }

    /// The next event if one arrives within `wait`. A partial line read
    /// before the timeout would be lost, so only use this where events are
    /// whole lines apart (they are written one line per write).
    pub fn recv_timeout(&mut self, wait: Duration) -> Option<Value> {
        let s = self.reader.get_ref();
        s.set_read_timeout(Some(wait)).expect("timeout");
        let mut line = String::new();
        let got = self.reader.read_line(&mut line);
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        match got {
            Ok(0) => panic!("the daemon closed the connection"),
            Ok(_) => Some(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad event {line:?}: {e}")),
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(line.is_empty(), "partial line lost: {line:?}");
                None
            }
            Err(e) => panic!("read event: {e}"),
        }
    }

    /// Events until one for which `done` is true (included), failing after
    /// `limit`.
    pub fn recv_until_match(
        &mut self,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        loop {
            let left = limit.saturating_sub(t0.elapsed());
            assert!(
                !left.is_zero(),
                "nothing matched within {limit:?}: {out:#?}"
            );
            if let Some(ev) = self.recv_timeout(left) {
                let end = done(&ev);
                out.push(ev);
                if end {
                    return out;
                }
            }
        }
    }

    /// Sends one request built from the daemon's protocol types.
    pub fn request(&mut self, request: &Request) {
        self.send_raw(format!("{}\n", protocol::encode_request(request)).as_bytes());
    }

    /// The next event, decoded into the daemon's protocol types: a line the
    /// types cannot read fails the test (the daemon wrote something the
    /// documented protocol does not have).
    pub fn event(&mut self) -> Received {
        let v = self.recv();
        protocol::decode(&v.to_string())
            .unwrap_or_else(|e| panic!("event {v} does not decode: {e}"))
    }

    /// Typed events until one for which `done` is true (included).
    pub fn events_until(&mut self, done: impl Fn(&Event) -> bool) -> Vec<Received> {
        let mut out = Vec::new();
        loop {
            let ev = self.event();
            let end = done(&ev.event);
            out.push(ev);
            if end {
                return out;
            }
        }
    }

    /// Events until one of type `until` (included).
    pub fn recv_until(&mut self, until: &[&str]) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let ev = self.recv();
            let done = until.contains(&ev["type"].as_str().unwrap_or(""));
            out.push(ev);
            if done {
                return out;
            }
        }
    }
}
