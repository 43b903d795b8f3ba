//! Real OpenAI-API peers on loopback: llama.cpp's server
//! (`python -m llama_cpp.server`) as the machine answers are offloaded to,
//! and the `openai` Python package as a client of Seer's own API. Both come
//! from the pinned venv that `scripts/llama-cpp-venv.sh` makes (the test
//! command installs it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The venv's python: `SEER_PEERS_PYTHON`, else the test command's default
/// venv. Missing is an error naming the script that installs it.
pub fn python() -> PathBuf {
    let p = std::env::var_os("SEER_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/seer-ci/venv-llamacpp/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/llama-cpp-venv.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An HTTP agent that returns error statuses as responses.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// `GET url` with a bearer key: (status, body).
pub fn get(url: &str, key: &str) -> (u16, String) {
    let mut r = agent()
        .get(url)
        .header("Authorization", &format!("Bearer {key}"))
        .call()
        .expect("GET");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

/// `POST url` with a JSON body and a bearer key: (status, JSON body).
pub fn post(url: &str, key: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let mut r = agent()
        .post(url)
        .header("Authorization", &format!("Bearer {key}"))
        .send_json(body)
        .expect("POST");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// llama.cpp's server on 127.0.0.1, killed on drop.
pub struct LlamaServer {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT/v1`.
    pub url: String,
    /// Its API key.
    pub key: String,
    model: PathBuf,
    port: u16,
}

impl LlamaServer {
    /// Starts it on a free port serving `model`, and waits until it
    /// answers `GET /v1/models`.
    pub fn start(model: &Path, key: &str) -> Self {
        let port = free_port();
        let mut s = Self {
            child: None,
            url: format!("http://127.0.0.1:{port}/v1"),
            key: key.to_owned(),
            model: model.to_owned(),
            port,
        };
        s.restart();
        s
    }

    /// (Re)starts the process on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(python())
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&self.model)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--api_key",
                &self.key,
                "--n_ctx",
                "2048",
                "--n_threads",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python -m llama_cpp.server");
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            let up = agent()
                .get(&format!("{}/models", self.url))
                .header("Authorization", &format!("Bearer {}", self.key))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if up {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(90),
                "llama_cpp.server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} the server");
        }
    }

    /// Freezes it (SIGSTOP): connections are accepted, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws it (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}

/// Runs `tests/openai_client.py BASE KEY CASE [ARG]` and parses its JSON.
pub fn openai_client(base: &str, key: &str, case: &str, arg: Option<&Path>) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openai_client.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).args([base, key, case]);
    if let Some(a) = arg {
        cmd.arg(a);
    }
    let out = cmd.output().expect("run openai_client.py");
    assert!(
        out.status.success(),
        "openai_client.py {case} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("openai_client.py {case} printed no JSON ({e}): {stdout}"))
}
