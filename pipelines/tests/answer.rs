//! The answer stage with a tiny real model (the random-weight Llama fixture):
//! queue order and positions, cancellation before and during generation,
//! `busy`, clients that go away, conversation memory within its budget, and
//! the state bus.

use seer_models::device::{BackendKind, OpenedDevice};
use seer_models::generate::Engine;
use seer_models::gguf::GgufFile;
use seer_models::llama::{WeightFormat, load_gguf};
use seer_models::tokenizer::TextTokenizer;
use seer_pipelines::answer::{
    AnswerConfig, AnswerError, Answerer, Ask, EngineSource, Turn, TurnEvent,
};
use seer_pipelines::conversation::Conversations;
use seer_pipelines::state::{State, StateBus};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn engine() -> Engine {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/tiny/llama/model-f32.gguf");
    let g = GgufFile::open(&p).expect("tiny model");
    let device = burn::tensor::Device::flex();
    let model = load_gguf(&g, &device, WeightFormat::F32).expect("loads");
    let tok = TextTokenizer::from_gguf(&g).expect("tokenizer");
    let opened = OpenedDevice {
        device,
        kind: BackendKind::Cpu,
        description: "test".into(),
    };
    Engine::from_parts(model, tok, opened, 128, Duration::ZERO)
}

/// The tiny model has a 128-token context and a byte-level vocabulary: keep
/// prompts short.
fn small() -> AnswerConfig {
    AnswerConfig {
        system_prompt: "sys".into(),
        history_tokens: 90,
        max_tokens: 16,
        queue: 8,
    }
}

fn answerer(cfg: AnswerConfig) -> (Answerer, StateBus, Arc<Conversations>) {
    let state = StateBus::new();
    let conv = Arc::new(Conversations::new(8));
    let a = Answerer::spawn(
        EngineSource::Loaded(Box::new(engine())),
        cfg,
        state.clone(),
        conv.clone(),
    );
    (a, state, conv)
}

/// An answer stage whose model load waits until the returned sender is
/// used (or dropped): the worker is then provably busy with the first turn,
/// which makes queue tests deterministic.
fn gated(cfg: AnswerConfig) -> (Answerer, std::sync::mpsc::Sender<()>) {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let source = EngineSource::Lazy(Box::new(move || {
        let _ = wait.lock().map(|w| w.recv());
        Ok(engine())
    }));
    let a = Answerer::spawn(
        source,
        cfg,
        StateBus::new(),
        Arc::new(Conversations::new(8)),
    );
    (a, release)
}

/// Waits for a turn's `Thinking` (the worker has taken it).
fn until_thinking(t: &mut Turn) {
    while !matches!(t.events.blocking_recv(), Some(TurnEvent::Thinking) | None) {}
}

fn ask(text: &str, max_tokens: usize) -> Ask {
    Ask {
        max_tokens: Some(max_tokens),
        ..Ask::text(text)
    }
}

/// All events of a turn, to its terminal one.
fn drain(t: &mut Turn) -> Vec<TurnEvent> {
    let mut out = Vec::new();
    while let Some(ev) = t.events.blocking_recv() {
        let last = matches!(
            ev,
            TurnEvent::End { .. } | TurnEvent::Cancelled | TurnEvent::Failed(_)
        );
        out.push(ev);
        if last {
            break;
        }
    }
    out
}

#[test]
fn turns_run_in_order_and_report_their_queue_position() {
    let (a, _, _) = answerer(small());
    let mut turns: Vec<Turn> = (0..3)
        .map(|_| a.submit(ask("hi", 8)).expect("queued"))
        .collect();
    for (i, t) in turns.iter_mut().enumerate() {
        let evs = drain(t);
        assert!(
            matches!(evs[0], TurnEvent::Queued { position } if position == i),
            "{evs:?}"
        );
        assert!(matches!(evs[1], TurnEvent::Thinking), "{evs:?}");
        let deltas: String = evs
            .iter()
            .filter_map(|e| match e {
                TurnEvent::Delta(s) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        match evs.last() {
            Some(TurnEvent::End { text, .. }) => assert_eq!(*text, deltas),
            other => panic!("turn {i} ended with {other:?}"),
        }
    }
}

/// Cancelling a turn that waits behind another: it ends `Cancelled` without
/// ever starting. (Cancelling mid-answer is covered with the real model in
/// `models/tests/smollm2.rs` and `tests/tests/socket.rs`: this model
/// answers faster than a test can react.)
#[test]
fn a_queued_turn_cancelled_never_starts() {
    let (a, release) = gated(small());
    let mut first = a.submit(ask("tell", 8)).expect("queued");
    until_thinking(&mut first);
    let mut waiting = a.submit(ask("and this", 8)).expect("queued");
    waiting.cancel.cancel();
    release.send(()).expect("release the load");
    assert!(matches!(
        drain(&mut first).last(),
        Some(TurnEvent::End { .. })
    ));
    let evs = drain(&mut waiting);
    assert!(matches!(evs.last(), Some(TurnEvent::Cancelled)), "{evs:?}");
    assert!(
        !evs.iter().any(|e| matches!(e, TurnEvent::Thinking)),
        "{evs:?}"
    );
    // The stage is free again.
    let mut next = a.submit(ask("ok", 4)).expect("queued");
    assert!(matches!(
        drain(&mut next).last(),
        Some(TurnEvent::End { .. })
    ));
}

#[test]
fn a_full_queue_is_busy_and_a_vanished_client_frees_the_worker() {
    let (a, release) = gated(AnswerConfig {
        queue: 1,
        ..small()
    });
    let mut running = a.submit(ask("one", 60)).expect("queued");
    until_thinking(&mut running);
    let mut queued = a.submit(ask("two", 4)).expect("one slot free");
    match a.submit(ask("three", 4)) {
        Err(AnswerError::Busy(1)) => {}
        other => panic!("expected busy, got {other:?}"),
    }
    // The running turn's client goes away: generation stops for nobody, and
    // the queued turn is answered.
    drop(running);
    release.send(()).expect("release the load");
    assert!(matches!(
        drain(&mut queued).last(),
        Some(TurnEvent::End { .. })
    ));
    let t0 = std::time::Instant::now();
    while a.pending() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "worker still busy");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn conversations_keep_history_within_the_budget() {
    let (a, state, conv) = answerer(small());
    let mut states = state.subscribe();
    for i in 0..6 {
        let mut t = a
            .submit(Ask {
                conversation: Some("c".into()),
                max_tokens: Some(6),
                ..Ask::text(format!("q{i}"))
            })
            .expect("queued");
        assert!(matches!(drain(&mut t).last(), Some(TurnEvent::End { .. })));
    }
    let h = conv.history("c");
    assert!(h.len() >= 2 && h.len() % 2 == 0, "{h:?}");
    assert_eq!(h[h.len() - 2].content, "q5", "latest turn kept");
    assert!(
        h.len() < 12,
        "oldest turns dropped to fit 90 tokens: {} messages",
        h.len()
    );
    assert_eq!(h.iter().filter(|m| m.role == "user").count() * 2, h.len());
    // The state went thinking → idle.
    let mut seen = Vec::new();
    while let Ok(s) = states.try_recv() {
        seen.push(s);
    }
    assert!(
        seen.contains(&State::Thinking) && seen.last() == Some(&State::Idle),
        "{seen:?}"
    );
    assert_eq!(state.get(), State::Idle);
}
