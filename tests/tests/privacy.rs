//! Seer's privacy promises, proven from outside. "Nothing leaves the
//! device": `seerd` started in a fresh network namespace (`unshare -n`,
//! only loopback up) still answers a typed question, a look through the
//! camera and a spoken question, and asking it to download a model fails
//! with `download_failed` instead of hanging. "Mute stops capture": the
//! sound server's and the media server's own lists of capture streams.
//! "Nothing persisted": a fresh HOME holds no file afterwards.

use seer_tests::{Client, Daemon, model};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn final_event(c: &mut Client, id: &str, limit: Duration) -> Value {
    c.recv_until_match(limit, |e| {
        e["id"] == id
            && ["answer.end", "error", "cancelled", "models.pulled"]
                .contains(&e["type"].as_str().unwrap_or(""))
    })
    .pop()
    .expect("a final event")
}

/// Asks `question` aloud by push-to-talk: espeak-ng (its default English
/// voice, which whisper base hears best; see `listen.rs`) speaks it into a WAV
/// (under `scratch`, removed afterwards), played into the sound server's
/// null sink between `listen.start` and `listen.stop`. Returns the turn's
/// final event.
fn ask_aloud(
    c: &mut Client,
    sound: &seer_tests::sound::SoundServer,
    scratch: &std::path::Path,
    question: &str,
) -> Value {
    let wav = scratch.join("q.wav");
    let spoken = std::process::Command::new("espeak-ng")
        .args(["-s", "130", "-w"])
        .arg(&wav)
        .arg(question)
        .status()
        .is_ok_and(|s| s.success());
    assert!(spoken, "espeak-ng");
    c.send(json!({"v": 1, "type": "listen.start", "id": "p"}));
    c.recv_until_match(Duration::from_secs(30), |e| {
        e["id"] == "p" && e["type"] == "state"
    });
    std::thread::sleep(Duration::from_millis(300));
    sound.play(&wav);
    std::thread::sleep(Duration::from_millis(300));
    c.send(json!({"v": 1, "type": "listen.stop", "id": "p"}));
    let end = final_event(c, "p", Duration::from_secs(120));
    std::fs::remove_file(&wav).expect("rm the test's own WAV");
    end
}

#[test]
fn without_a_network_seer_answers_looks_and_a_pull_fails_cleanly() {
    let models_dir = tempfile::tempdir().expect("tmp");
    // The namespace has no interfaces but loopback, which starts down.
    let wrapper = [
        "unshare",
        "-n",
        "--",
        "sh",
        "-c",
        "ip link set lo up && exec \"$@\"",
        "sh",
    ];
    let photo = fixtures().join("images/astronaut_portrait.jpg");
    // The sound server's socket is a file, which a network namespace does
    // not hide: the microphone still works.
    let sound = seer_tests::sound::SoundServer::start();
    let d = Daemon::start_wrapped(
        &wrapper,
        &format!("path = {:?}\nmodels_dir = {:?}", model(), models_dir.path()),
        &format!(
            "[listen]\nmode = \"push-to-talk\"\nmodel = {:?}\nvad = {:?}\n[vision]\nmodel = {:?}\ncamera = {photo:?}\n",
            seer_tests::test_model("ggml-base.bin"),
            seer_tests::test_model("ggml-silero-v6.2.3.bin"),
            fixtures().join("smolvlm-tiny/hf")
        ),
        &[("PULSE_SERVER", sound.server().as_str())],
    );
    // It really is in another namespace: its network interfaces are ours
    // minus everything but `lo`.
    let net = std::fs::read_to_string(format!("/proc/{}/net/dev", d.child.id())).expect("net/dev");
    let ifaces: Vec<&str> = net
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "seerd's namespace: {net}");

    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "ask", "id": "q", "text": "What is the capital of France?"}));
    let end = final_event(&mut c, "q", Duration::from_secs(120));
    assert_eq!(end["type"], "answer.end", "{end}");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );

    c.send(
        json!({"v": 1, "type": "ask", "id": "look", "text": "What is in this image?",
        "image": {"camera": true}, "max_tokens": 8}),
    );
    let end = final_event(&mut c, "look", Duration::from_secs(120));
    assert_eq!(end["type"], "answer.end", "{end}");

    let end = ask_aloud(
        &mut c,
        &sound,
        models_dir.path(),
        "What is the capital of France?",
    );
    assert_eq!(end["type"], "answer.end", "{end}");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );

    let t0 = Instant::now();
    c.send(json!({"v": 1, "type": "models.pull", "id": "p", "name": "smollm2-135m-instruct"}));
    let end = final_event(&mut c, "p", Duration::from_secs(120));
    println!(
        "pull without a network ended after {:?}: {end}",
        t0.elapsed()
    );
    assert_eq!(end["type"], "error", "{end}");
    assert_eq!(end["code"], "download_failed", "{end}");
    // Nothing half-downloaded is left as an installed model.
    c.send(json!({"v": 1, "type": "models.list", "id": "l"}));
    let list = c
        .recv_until_match(Duration::from_secs(10), |e| e["type"] == "models.list")
        .pop()
        .expect("list");
    let installed: Vec<&Value> = list["models"]
        .as_array()
        .map(|m| m.iter().filter(|r| r["installed"] == true).collect())
        .unwrap_or_default();
    assert!(installed.is_empty(), "{list}");
}

/// The recording streams the sound server itself lists (`pactl list short
/// source-outputs`), not what Seer says about itself.
fn recording_streams(sound: &seer_tests::sound::SoundServer) -> usize {
    let out = std::process::Command::new("pactl")
        .args(["list", "short", "source-outputs"])
        .env("PULSE_SERVER", sound.server())
        .output()
        .expect("pactl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Waits up to `within` for the sound server to list `want` streams.
fn wait_streams(sound: &seer_tests::sound::SoundServer, want: usize, within: Duration) -> bool {
    wait_for(within, || recording_streams(sound) == want)
}

#[test]
fn muting_closes_the_recording_stream_the_sound_server_sees() {
    let sound = seer_tests::sound::SoundServer::start();
    let d = Daemon::start_with_env(
        &format!(
            "[listen]\nmodel = {:?}\nvad = {:?}\n",
            seer_tests::test_model("ggml-tiny.en.bin"),
            seer_tests::test_model("ggml-silero-v6.2.3.bin")
        ),
        &[("PULSE_SERVER", sound.server().as_str())],
    );
    // Hands-free: Seer records from the start.
    assert!(
        wait_streams(&sound, 1, Duration::from_secs(30)),
        "listening, the sound server lists {} recording streams",
        recording_streams(&sound)
    );
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "set", "id": "m", "muted": true}));
    let t0 = Instant::now();
    assert!(
        wait_streams(&sound, 0, Duration::from_secs(1)),
        "1 s after mute the sound server still lists {} recording streams",
        recording_streams(&sound)
    );
    println!("recording stream gone {:?} after mute", t0.elapsed());
    // It stays closed while muted.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(recording_streams(&sound), 0);
    c.send(json!({"v": 1, "type": "set", "id": "u", "muted": false}));
    assert!(
        wait_streams(&sound, 1, Duration::from_secs(10)),
        "unmuted, no recording stream"
    );
}

/// Polls `cond` every 50 ms for up to `within`.
fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t0.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The camera's side of the mute promise, seen by PipeWire (which serves
/// the camera to Seer through pipewire-v4l2): a look opens a capture
/// stream, which stays open for the keep-warm time; mute closes it within
/// 1 s although keep-warm has minutes left; a look while muted is refused
/// without opening it; after unmute a look opens it again.
#[test]
fn muting_closes_the_camera_stream_the_media_server_sees() {
    let mut video = seer_tests::video::VideoServer::start("pattern=smpte");
    let env = video.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = Daemon::start_with_env(
        &format!(
            "[vision]\nmodel = {:?}\ncamera = \"v4l2:0\"\nkeep_warm_seconds = 600\n",
            fixtures().join("smolvlm-tiny/hf")
        ),
        &env,
    );
    let mut c = d.connect();
    assert_eq!(
        video.capture_streams(),
        Vec::<String>::new(),
        "closed until a look"
    );
    let look = |c: &mut Client, id: &str| {
        c.send(
            json!({"v": 1, "type": "ask", "id": id, "text": "What is this?",
            "image": {"camera": true}, "max_tokens": 4}),
        );
        final_event(c, id, Duration::from_secs(120))
    };
    let end = look(&mut c, "l1");
    assert_eq!(end["type"], "answer.end", "{end}");
    assert!(
        wait_for(Duration::from_secs(5), || video.capture_streams().len()
            == 1),
        "after a look PipeWire lists {:?}",
        video.capture_streams()
    );

    c.send(json!({"v": 1, "type": "set", "id": "m", "muted": true}));
    let t0 = Instant::now();
    assert!(
        wait_for(Duration::from_secs(1), || video
            .capture_streams()
            .is_empty()),
        "1 s after mute PipeWire still lists {:?}",
        video.capture_streams()
    );
    println!("camera stream gone {:?} after mute", t0.elapsed());
    let end = look(&mut c, "l2");
    assert_eq!(end["code"], "device_unavailable", "{end}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(video.capture_streams(), Vec::<String>::new(), "muted");

    c.send(json!({"v": 1, "type": "set", "id": "u", "muted": false}));
    // gst's pipewiresink in provide mode serves one consumer session and
    // then no frames to the next (a camera serves any number): a fresh
    // source stands in for the same camera being opened again.
    video.start_source();
    let end = look(&mut c, "l3");
    assert_eq!(end["type"], "answer.end", "{end}");
    assert!(
        wait_for(Duration::from_secs(5), || video.capture_streams().len()
            == 1),
        "unmuted, a look opens no stream: {:?}",
        video.capture_streams()
    );
}

/// Files under `dir`, recursively (directories themselves are not files).
fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(_) => out.push(p),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

#[test]
fn typed_spoken_and_camera_questions_leave_no_file_behind() {
    let home = tempfile::tempdir().expect("home");
    let h = home.path();
    let sub = |s: &str| {
        let p = h.join(s);
        std::fs::create_dir_all(&p).expect("mkdir");
        p.to_string_lossy().into_owned()
    };
    let (config, cache, data, state, runtime, tmp) = (
        sub(".config"),
        sub(".cache"),
        sub(".local/share"),
        sub(".local/state"),
        sub("run"),
        sub("tmp"),
    );
    let sound = seer_tests::sound::SoundServer::start();
    let photo = fixtures().join("images/astronaut_portrait.jpg");
    let d = Daemon::start_with_env(
        &format!(
            "[listen]\nmode = \"push-to-talk\"\nmodel = {:?}\nvad = {:?}\n[vision]\nmodel = {:?}\ncamera = {photo:?}\n",
            seer_tests::test_model("ggml-tiny.en.bin"),
            seer_tests::test_model("ggml-silero-v6.2.3.bin"),
            fixtures().join("smolvlm-tiny/hf"),
        ),
        &[
            ("PULSE_SERVER", sound.server().as_str()),
            ("HOME", h.to_str().expect("utf-8 path")),
            ("XDG_CONFIG_HOME", config.as_str()),
            ("XDG_CACHE_HOME", cache.as_str()),
            ("XDG_DATA_HOME", data.as_str()),
            ("XDG_STATE_HOME", state.as_str()),
            ("XDG_RUNTIME_DIR", runtime.as_str()),
            ("TMPDIR", tmp.as_str()),
        ],
    );
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "ask", "id": "t", "text": "What is the capital of France?", "conversation": "c"}));
    assert_eq!(
        final_event(&mut c, "t", Duration::from_secs(120))["type"],
        "answer.end"
    );
    c.send(json!({"v": 1, "type": "ask", "id": "l", "text": "What is this?", "image": {"camera": true}, "max_tokens": 4}));
    assert_eq!(
        final_event(&mut c, "l", Duration::from_secs(120))["type"],
        "answer.end"
    );
    let end = ask_aloud(&mut c, &sound, h, "What is the capital of Japan?");
    assert_eq!(end["type"], "answer.end", "{end}");
    drop(c);
    drop(d);
    // libpulse (through ALSA's pulse plugin) creates its client cookie
    // when a user has none: the sound library's key, no audio or text.
    let cookie = h.join(".config/pulse/cookie");
    let left: Vec<PathBuf> = files_under(h)
        .into_iter()
        .filter(|p| *p != cookie)
        .collect();
    assert!(left.is_empty(), "seerd left files behind: {left:#?}");
}
