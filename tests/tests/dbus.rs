//! The D-Bus front end on a private session bus, driven by `busctl` and
//! `gdbus` — clients nobody here wrote — against the real seerd and model.

use seer_tests::{Daemon, seerd};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEST: &str = "org.seer.Assistant1";
const PATH: &str = "/org/seer/Assistant1";

/// A private `dbus-daemon --session`, killed on drop.
struct Bus {
    child: Child,
    address: String,
}

impl Bus {
    fn start() -> Bus {
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon (install the dbus package)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("bus address");
        Bus {
            child,
            address: line.trim().to_owned(),
        }
    }

    /// Runs a client command on this bus.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    fn busctl(&self, args: &[&str]) -> Output {
        let mut a = vec!["--user"];
        a.extend_from_slice(args);
        self.run("busctl", &a)
    }

    /// Starts seerd on this bus and waits until it owns the name.
    fn seerd(&self, extra: &str) -> Daemon {
        self.seerd_env(extra, &[])
    }

    /// As `seerd`, with more environment (e.g. `PULSE_SERVER`).
    fn seerd_env(&self, extra: &str, env: &[(&str, &str)]) -> Daemon {
        let mut all = vec![("DBUS_SESSION_BUS_ADDRESS", self.address.as_str())];
        all.extend_from_slice(env);
        let d = Daemon::start_with_env(extra, &all);
        let t0 = Instant::now();
        loop {
            let out = self.busctl(&["status", DEST]);
            if out.status.success() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "seerd never claimed {DEST}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `gdbus monitor` on the service, its lines read through a channel so a
/// wait can time out (a change made before gdbus subscribed is never
/// reported). Killed on drop.
struct Monitor {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    /// Starts it and waits until it reports a change we make (Muted toggled).
    fn start(bus: &Bus) -> Monitor {
        let mut child = Command::new("gdbus")
            .args(["monitor", "--session", "--dest", DEST])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .stdout(Stdio::piped())
            .spawn()
            .expect("gdbus monitor");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            // Lossy: one odd byte in a signal must not end the monitor.
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                buf.clear();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let m = Monitor { child, lines };
        let t0 = Instant::now();
        loop {
            let _ = bus.busctl(&["set-property", DEST, PATH, DEST, "Muted", "b", "true"]);
            let _ = bus.busctl(&["set-property", DEST, PATH, DEST, "Muted", "b", "false"]);
            let got = m.seen(&["'Muted': <false>"], Duration::from_secs(2));
            if got.iter().any(|l| l.contains("'Muted': <false>")) {
                return m;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "gdbus monitor never reported Muted: {got:#?}"
            );
        }
    }

    /// Lines until all of `want` were seen, or `patience` passed without them.
    fn seen(&self, want: &[&str], patience: Duration) -> Vec<String> {
        let mut got: Vec<String> = Vec::new();
        let t0 = Instant::now();
        while !want.iter().all(|w| got.iter().any(|l| l.contains(w))) {
            let left = patience.saturating_sub(t0.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(_) => break,
            }
        }
        got
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ask_over_busctl_and_gdbus() {
    let bus = Bus::start();
    let _d = bus.seerd("");
    let out = bus.busctl(&[
        "call",
        DEST,
        PATH,
        DEST,
        "Ask",
        "sa{sv}",
        "What is the capital of France?",
        "0",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Paris"), "{}", text(&out));
    let out = bus.run(
        "gdbus",
        &[
            "call",
            "--session",
            "--dest",
            DEST,
            "--object-path",
            PATH,
            "--method",
            "org.seer.Assistant1.Ask",
            "What is the capital of France?",
            "{'max_tokens': <uint32 24>}",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Paris"), "{}", text(&out));
    let out = bus.busctl(&["call", DEST, PATH, DEST, "Describe"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("version") && t.contains("capabilities") && t.contains("language"),
        "{t}"
    );
}

#[test]
fn without_a_bus_the_socket_is_still_served() {
    let d = Daemon::start_with_env(
        "",
        &[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
    );
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "status", "id": "s"}));
    assert_eq!(c.recv()["type"], "status");
}

#[test]
fn monitor_sees_state_changes_and_the_answer_signal_for_a_socket_ask() {
    let bus = Bus::start();
    let d = bus.seerd("");
    let monitor = Monitor::start(&bus);
    let seen = |want: &[&str], patience: Duration| monitor.seen(want, patience);
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "ask", "id": "s", "text": "What is the capital of France?"}));
    let end = c.recv_until(&["answer.end", "error"]);
    assert_eq!(end.last().expect("event")["type"], "answer.end");
    let want = [
        "'State': <'thinking'>",
        "'State': <'idle'>",
        "org.seer.Assistant1.Answer",
    ];
    let got = seen(&want, Duration::from_secs(120));
    assert!(
        want.iter().all(|w| got.iter().any(|l| l.contains(w))),
        "monitor saw only {got:#?}"
    );
    let answer = got
        .iter()
        .find(|l| l.contains("org.seer.Assistant1.Answer"))
        .expect("Answer signal");
    assert!(
        answer.contains("What is the capital of France?") && answer.contains("Paris"),
        "{answer}"
    );
}

#[test]
fn muted_is_writable_and_shown_everywhere() {
    let bus = Bus::start();
    let d = bus.seerd("");
    let out = bus.busctl(&["set-property", DEST, PATH, DEST, "Muted", "b", "true"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&bus.busctl(&["get-property", DEST, PATH, DEST, "Muted"])).trim(),
        "b true"
    );
    assert_eq!(
        text(&bus.busctl(&["get-property", DEST, PATH, DEST, "MicrophoneActive"])).trim(),
        "b false"
    );
    assert_eq!(
        text(&bus.busctl(&["get-property", DEST, PATH, DEST, "State"])).trim(),
        "s \"idle\""
    );
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "status", "id": "st"}));
    let st = c.recv();
    assert_eq!(st["muted"], true, "{st}");
    // Muted, push-to-talk does not open the microphone at all.
    c.send(json!({"v": 1, "type": "listen.start", "id": "ptt"}));
    let ev = c.recv();
    assert_eq!(ev["code"], "device_unavailable", "{ev}");
    assert!(
        ev["message"].as_str().unwrap_or("").contains("muted"),
        "{ev}"
    );
}

#[test]
fn bad_calls_get_the_documented_errors_and_the_service_keeps_serving() {
    let bus = Bus::start();
    let _d = bus.seerd("[listen]\nmodel = \"/nonexistent/ggml-tiny.en.bin\"\n");
    let method = |m: &str| format!("{DEST}.{m}");
    let cases: [(Vec<String>, &str); 5] = [
        (
            vec![method("Ask"), "hi".into()],
            "Signature mismatch: got `s`, expected `(sa{sv})`",
        ),
        (
            vec![method("Ask"), "hi".into(), "{'colour': <'red'>}".into()],
            "org.seer.Assistant1.Error.BadRequest",
        ),
        (
            vec![method("Ask"), "".into(), "{}".into()],
            "org.seer.Assistant1.Error.BadRequest",
        ),
        (
            vec![method("Ask"), "hi".into(), "{'max_tokens': <'ten'>}".into()],
            "org.seer.Assistant1.Error.BadRequest",
        ),
        (
            vec![method("StartListening")],
            "org.seer.Assistant1.Error.ModelMissing",
        ),
    ];
    for (call, want) in &cases {
        let mut args = vec![
            "call",
            "--session",
            "--dest",
            DEST,
            "--object-path",
            PATH,
            "--method",
        ];
        args.extend(call.iter().map(String::as_str));
        let out = bus.run("gdbus", &args);
        assert!(!out.status.success(), "{call:?} succeeded");
        assert!(text(&out).contains(want), "{call:?}: {}", text(&out));
    }
    // busctl sees the same failure.
    let out = bus.busctl(&[
        "call", DEST, PATH, DEST, "Ask", "sa{sv}", "hi", "1", "colour", "s", "red",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown option `colour`"),
        "{}",
        text(&out)
    );
    let out = bus.busctl(&[
        "call",
        DEST,
        PATH,
        DEST,
        "Ask",
        "sa{sv}",
        "What is the capital of France?",
        "0",
    ]);
    assert!(text(&out).contains("Paris"), "{}", text(&out));
}

#[test]
fn a_second_daemon_on_the_bus_names_the_owner_and_exits() {
    let bus = Bus::start();
    let _d = bus.seerd("");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\npath = {:?}\nbackend = \"cpu\"\n[socket]\npath = {:?}\n",
            seer_tests::model(),
            dir.path().join("other.sock")
        ),
    )
    .expect("config");
    let out = seerd(&config)
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .output()
        .expect("seerd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already owned by :1."), "{err}");
}

#[test]
fn introspection_matches_the_committed_xml() {
    let bus = Bus::start();
    let _d = bus.seerd("");
    let out = bus.busctl(&["introspect", "--xml-interface", DEST, PATH]);
    assert!(out.status.success(), "{}", text(&out));
    let live = String::from_utf8_lossy(&out.stdout).into_owned();
    let committed_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/dbus/org.seer.Assistant1.xml");
    if std::env::var_os("SEER_UPDATE_INTROSPECTION").is_some() {
        std::fs::write(&committed_path, &live).expect("write introspection");
    }
    let committed = std::fs::read_to_string(&committed_path)
        .expect("docs/dbus/org.seer.Assistant1.xml (regenerate with SEER_UPDATE_INTROSPECTION=1)");
    assert_eq!(
        live, committed,
        "the service's introspection changed: regenerate docs/dbus/org.seer.Assistant1.xml with SEER_UPDATE_INTROSPECTION=1 cargo test -p seer-tests --test dbus introspection"
    );
}

#[test]
fn push_to_talk_over_dbus_is_answered_with_the_answer_signal() {
    let sound = seer_tests::sound::SoundServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("q.wav");
    let ok = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "130", "-w"])
        .arg(&wav)
        .arg("What is the capital of Japan?")
        .status()
        .expect("espeak-ng");
    assert!(ok.success());
    let bus = Bus::start();
    let server = sound.server();
    let _d = bus.seerd_env(
        &format!(
            "[listen]\nmode = \"push-to-talk\"\nmodel = {:?}\nvad = {:?}\n",
            seer_tests::test_model("ggml-base.bin"),
            seer_tests::test_model("ggml-silero-v6.2.3.bin")
        ),
        &[("PULSE_SERVER", server.as_str())],
    );
    let monitor = Monitor::start(&bus);
    let out = bus.busctl(&["call", DEST, PATH, DEST, "StartListening"]);
    assert!(out.status.success(), "{}", text(&out));
    // The privacy indicator goes on with the capture, and says so.
    let got = monitor.seen(
        &["'State': <'listening'>", "'MicrophoneActive': <true>"],
        Duration::from_secs(30),
    );
    assert!(got.iter().any(|l| l.contains("'listening'")), "{got:#?}");
    std::thread::sleep(Duration::from_millis(300));
    sound.play(&wav);
    std::thread::sleep(Duration::from_millis(300));
    let out = bus.busctl(&["call", DEST, PATH, DEST, "StopListening"]);
    assert!(out.status.success(), "{}", text(&out));
    let got = monitor.seen(
        &[
            "org.seer.Assistant1.Answer",
            "org.seer.Assistant1.Transcript",
            "'MicrophoneActive': <false>",
        ],
        Duration::from_secs(120),
    );
    let transcript = got
        .iter()
        .find(|l| l.contains("org.seer.Assistant1.Transcript"))
        .unwrap_or_else(|| panic!("no Transcript signal: {got:#?}"));
    assert!(
        transcript.contains("Japan") && transcript.contains("true"),
        "{transcript}"
    );
    let answer = got
        .iter()
        .find(|l| l.contains("org.seer.Assistant1.Answer"))
        .unwrap_or_else(|| panic!("no Answer signal: {got:#?}"));
    assert!(
        answer.contains("Japan") && answer.contains("Tokyo"),
        "{answer}"
    );
    // Nothing is listening now.
    let out = bus.busctl(&["call", DEST, PATH, DEST, "StopListening"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not listening"), "{}", text(&out));
}

/// `Ask` with `image_path` and `use_camera` is answered by the vision model
/// (transformers' exact greedy tokens for the fixture), and `CameraActive`
/// is true after a look, announced when it changes, and false after mute.
#[test]
fn ask_with_an_image_or_the_camera_over_dbus() {
    let bus = Bus::start();
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let photo = fixtures.join("images/coffee_landscape.jpg");
    let _d = bus.seerd(&format!(
        "[vision]\nmodel = {:?}\ncamera = {photo:?}\nkeep_warm_seconds = 60\n",
        fixtures.join("smolvlm-tiny/hf")
    ));
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("smolvlm-tiny/reference.json")).expect("json"),
    )
    .expect("json");
    let want = reference["cases"]["coffee_landscape.untiled"]["greedy_text"]
        .as_str()
        .expect("greedy_text");
    let active = |bus: &Bus| {
        text(&bus.busctl(&["get-property", DEST, PATH, DEST, "CameraActive"]))
            .trim()
            .to_owned()
    };
    assert_eq!(active(&bus), "b false");
    let monitor = Monitor::start(&bus);

    let photo_s = photo.to_str().expect("utf-8 path");
    let out = bus.busctl(&[
        "call",
        DEST,
        PATH,
        DEST,
        "Ask",
        "sa{sv}",
        "What is in this image?",
        "2",
        "image_path",
        "s",
        photo_s,
        "max_tokens",
        "u",
        "16",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(want.trim()),
        "{} vs {want:?}",
        text(&out)
    );
    assert_eq!(active(&bus), "b false", "a photo does not open the camera");

    let out = bus.busctl(&[
        "call",
        DEST,
        PATH,
        DEST,
        "Ask",
        "sa{sv}",
        "What is in this image?",
        "2",
        "use_camera",
        "b",
        "true",
        "max_tokens",
        "u",
        "16",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(want.trim()), "{}", text(&out));
    assert_eq!(active(&bus), "b true");
    let seen = monitor.seen(&["'CameraActive': <true>"], Duration::from_secs(10));
    assert!(
        seen.iter().any(|l| l.contains("'CameraActive': <true>")),
        "{seen:#?}"
    );

    let out = bus.busctl(&["set-property", DEST, PATH, DEST, "Muted", "b", "true"]);
    assert!(out.status.success(), "{}", text(&out));
    let t0 = std::time::Instant::now();
    while active(&bus) != "b false" {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "mute left the camera on"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = bus.busctl(&[
        "call",
        DEST,
        PATH,
        DEST,
        "Ask",
        "sa{sv}",
        "What is this?",
        "1",
        "use_camera",
        "b",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("muted"), "{}", text(&out));
}

/// `Describe` on the bus says what the socket's `describe` says: with a
/// vision model configured, both report `vision: true` (D-Bus used to say
/// false whatever the config).
#[test]
fn describe_on_the_bus_matches_the_socket() {
    use seer_daemon::protocol::{self, Event, Request};
    let bus = Bus::start();
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let d = bus.seerd(&format!(
        "[vision]\nmodel = {:?}\n",
        fixtures.join("smolvlm-tiny/hf")
    ));
    let mut c = d.connect();
    c.send_raw(
        format!(
            "{}\n",
            protocol::encode_request(&Request::Describe { id: None })
        )
        .as_bytes(),
    );
    let got = protocol::decode(&c.recv().to_string()).expect("a describe event");
    let Event::Describe(socket) = got.event else {
        panic!("{got:?}")
    };
    assert!(socket.capabilities.vision, "{socket:?}");
    let out = bus.busctl(&["call", DEST, PATH, DEST, "Describe"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    for (name, on) in [
        ("vision", socket.capabilities.vision),
        ("camera", socket.capabilities.camera),
        ("voice", socket.capabilities.voice),
        ("hands_free", socket.capabilities.hands_free),
    ] {
        // busctl prints an a{sb} entry as `"name" true`.
        assert!(t.contains(&format!("\"{name}\" {on}")), "{name}: {t}");
    }
    let files = socket
        .models
        .vision
        .expect("the socket names the vision model")
        .files;
    assert!(
        t.contains(&format!("\"vision\" \"{files}\"")),
        "the vision model is named {files:?}: {t}"
    );
}

/// A D-Bus push-to-talk that hears nothing ends back at `idle` (it used to
/// stay `transcribing` until the next turn), and the service keeps serving.
#[test]
fn an_empty_push_to_talk_over_dbus_returns_to_idle() {
    let sound = seer_tests::sound::SoundServer::start();
    let bus = Bus::start();
    let server = sound.server();
    let _d = bus.seerd_env(
        &format!(
            "[listen]\nmode = \"push-to-talk\"\nmodel = {:?}\nvad = {:?}\n",
            seer_tests::test_model("ggml-tiny.en.bin"),
            seer_tests::test_model("ggml-silero-v6.2.3.bin")
        ),
        &[("PULSE_SERVER", server.as_str())],
    );
    let state = |bus: &Bus| {
        text(&bus.busctl(&["get-property", DEST, PATH, DEST, "State"]))
            .trim()
            .to_owned()
    };
    let monitor = Monitor::start(&bus);
    let out = bus.busctl(&["call", DEST, PATH, DEST, "StartListening"]);
    assert!(out.status.success(), "{}", text(&out));
    let got = monitor.seen(&["'State': <'listening'>"], Duration::from_secs(30));
    assert!(got.iter().any(|l| l.contains("'listening'")), "{got:#?}");
    // Silence only: nothing is said.
    std::thread::sleep(Duration::from_millis(500));
    let out = bus.busctl(&["call", DEST, PATH, DEST, "StopListening"]);
    assert!(out.status.success(), "{}", text(&out));
    let got = monitor.seen(&["'State': <'idle'>"], Duration::from_secs(60));
    assert!(
        got.iter().any(|l| l.contains("'State': <'idle'>")),
        "never back to idle: {got:#?}"
    );
    assert_eq!(state(&bus), "s \"idle\"");
    // And a question is still answered.
    let out = bus.busctl(&[
        "call",
        DEST,
        PATH,
        DEST,
        "Ask",
        "sa{sv}",
        "What is the capital of France?",
        "0",
    ]);
    assert!(text(&out).contains("Paris"), "{}", text(&out));
}

/// `Speak` and `Ask` with `speak` over the bus: the voice plays into a
/// private PulseAudio sink, and `Speaking` turns true and back to false
/// (announced). `SpeechEnabled` off makes `Speak` fail with the reason.
#[test]
fn speak_over_dbus_plays_and_speaking_is_announced() {
    let sound = seer_tests::sound::SoundServer::start();
    let bus = Bus::start();
    let voice = seer_tests::test_model("piper/en_US-joe-medium.onnx");
    let _d = bus.seerd_env(
        &format!("[speech]\nvoice = {voice:?}\n"),
        &[("PULSE_SERVER", sound.server().as_str())],
    );
    let monitor = Monitor::start(&bus);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = sound.record_speaker(&dir.path().join("bus.raw"));
    let out = bus.busctl(&[
        "call",
        DEST,
        PATH,
        DEST,
        "Speak",
        "s",
        "Hello from the bus.",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let want = ["'Speaking': <true>", "'Speaking': <false>"];
    let got = monitor.seen(&want, Duration::from_secs(60));
    assert!(
        want.iter().all(|w| got.iter().any(|l| l.contains(w))),
        "{got:#?}"
    );
    let loudest = rec.samples(0).iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(
        loudest > 0.05,
        "the speaker sink stayed silent (peak {loudest})"
    );
    let out = bus.busctl(&[
        "call",
        DEST,
        PATH,
        DEST,
        "Ask",
        "sa{sv}",
        "What is the capital of France?",
        "1",
        "speak",
        "b",
        "true",
    ]);
    assert!(text(&out).contains("Paris"), "{}", text(&out));
    let got = monitor.seen(&want, Duration::from_secs(60));
    assert!(
        want.iter().all(|w| got.iter().any(|l| l.contains(w))),
        "{got:#?}"
    );
    let out = bus.busctl(&[
        "set-property",
        DEST,
        PATH,
        DEST,
        "SpeechEnabled",
        "b",
        "false",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = bus.busctl(&["call", DEST, PATH, DEST, "Speak", "s", "Hello."]);
    assert!(!out.status.success());
    assert!(text(&out).contains("speech is off"), "{}", text(&out));
}

/// The D-Bus service under load, through zbus as a client: a 1 MB question
/// gets a named error, wrong signatures get `InvalidArgs`, 1,000 calls in
/// flight at once are all answered, and the service still answers "Paris".
#[test]
fn big_strings_wrong_signatures_and_a_thousand_parallel_calls() {
    use std::collections::HashMap;
    use zbus::zvariant::Value;
    let bus = Bus::start();
    let _d = bus.seerd("");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .expect("address")
            .build()
            .await
            .expect("connect");
        let no_options: HashMap<&str, Value<'_>> = HashMap::new();
        let big = "what is this? ".repeat(75_000);
        let err = conn
            .call_method(
                Some(DEST),
                PATH,
                Some(DEST),
                "Ask",
                &(big.as_str(), &no_options),
            )
            .await
            .expect_err("a 1 MB question cannot fit");
        let msg = err.to_string();
        assert!(
            msg.contains("BadRequest") && msg.contains("tokens"),
            "{msg}"
        );
        let wrong = [
            (
                "Ask",
                conn.call_method(Some(DEST), PATH, Some(DEST), "Ask", &(42i32,))
                    .await,
            ),
            (
                "Speak",
                conn.call_method(Some(DEST), PATH, Some(DEST), "Speak", &(true, 1u8))
                    .await,
            ),
        ];
        for (method, r) in wrong {
            let err = r.expect_err("wrong signature").to_string();
            assert!(
                err.contains("Signature mismatch") || err.contains("InvalidArgs"),
                "{method}: {err}"
            );
        }
        // 1,000 calls in flight at once on one connection.
        let calls: Vec<_> = (0..1000)
            .map(|_| {
                let conn = conn.clone();
                tokio::spawn(async move {
                    conn.call_method(Some(DEST), PATH, Some(DEST), "Describe", &())
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        let mut failed = Vec::new();
        for c in calls {
            if let Err(e) = c.await.expect("task") {
                failed.push(e.to_string());
            }
        }
        assert!(
            failed.is_empty(),
            "{} failed: {:?}",
            failed.len(),
            failed.first()
        );
        let reply = conn
            .call_method(
                Some(DEST),
                PATH,
                Some(DEST),
                "Ask",
                &("What is the capital of France?", &no_options),
            )
            .await
            .expect("ask");
        let answer: String = reply.body().deserialize().expect("answer");
        assert!(answer.contains("Paris"), "{answer}");
    });
}

/// The shipped system-bus policy on a private bus configured like the
/// system bus (default deny): root owns the name and is answered; another
/// uid (`nobody`) is refused by the bus itself.
#[test]
fn the_system_bus_policy_refuses_a_non_member() {
    let dir = tempfile::tempdir().expect("tmp");
    // `nobody` must reach the socket to be refused by the policy, not by
    // file permissions.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let sock = dir.path().join("system_bus_socket");
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../share/dbus-1/system.d/org.seer.Assistant1.conf");
    let conf = dir.path().join("system.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{}</include>
</busconfig>
"#,
            sock.display(),
            policy.display()
        ),
    )
    .expect("bus config");
    /// Kills the private system bus however the test ends.
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _bus = Killed(
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile"])
            .spawn()
            .expect("dbus-daemon"),
    );
    let address = format!("unix:path={}", sock.display());
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no bus socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = Daemon::start_with_env(
        "[dbus]\nbus = \"system\"\nrequired = true\n",
        &[("DBUS_SYSTEM_BUS_ADDRESS", address.as_str())],
    );
    let call = |as_nobody: bool| {
        let mut c = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"]);
            c
        } else {
            Command::new("busctl")
        };
        c.arg(format!("--address={address}"))
            .args(["call", DEST, PATH, DEST, "Describe"])
            .output()
            .expect("busctl")
    };
    let t0 = Instant::now();
    let root = loop {
        let o = call(false);
        if o.status.success() || t0.elapsed() > Duration::from_secs(30) {
            break o;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(root.status.success(), "root is answered: {}", text(&root));
    let nobody = call(true);
    assert!(
        !nobody.status.success(),
        "nobody must be refused: {}",
        text(&nobody)
    );
    let err = text(&nobody);
    assert!(
        err.contains("Access denied") || err.contains("AccessDenied"),
        "{err}"
    );
    drop(d);
}
