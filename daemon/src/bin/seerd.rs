//! `seerd`: Seer's daemon. Runs in the foreground (systemd-style), serves the
//! local socket, answers with the configured language model.

use anyhow::{Context, Result};
use clap::Parser;
use seer_daemon::camera::{Camera, CameraOptions};
use seer_daemon::config::{Config, DbusBus, LoadWhen, Resolved};
use seer_daemon::dbus;
use seer_daemon::listen::Listener;
use seer_daemon::protocol::{ModelInfo, VisionInfo};
use seer_daemon::server::{self, Shared};
use seer_daemon::service::{Assistant, Parts, SpeechPolicy};
use seer_daemon::systemd;
use seer_models::device;
use seer_models::generate::{Engine, EngineOptions};
use seer_pipelines::answer::{AnswerConfig, Answerer, EngineSource};
use seer_pipelines::conversation::Conversations;
use seer_pipelines::offload::Remote;
use seer_pipelines::state::StateBus;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "Seer's assistant daemon")]
struct Args {
    /// Config file (default: $SEER_CONFIG, else $XDG_CONFIG_HOME/seer/config.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Serve D-Bus on the system bus (overrides dbus.bus).
    #[arg(long)]
    system: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seerd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // whisper.cpp logs every VAD call and model detail at info;
        // those lines are for `RUST_LOG=whisper_rs=info` only.
        tracing_subscriber::EnvFilter::new(format!("{level},whisper_rs=warn"))
    });
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal);
    if terminal {
        builder.init();
    } else {
        // journald stamps each line itself; keep lines plain.
        builder.without_time().with_target(false).init();
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let explicit = args.config.is_some() || std::env::var_os("SEER_CONFIG").is_some();
    let path = Config::locate(args.config.as_deref());
    let mut config = Config::load(path.as_deref(), explicit)?;
    if args.system {
        config.dbus.bus = DbusBus::System;
    }
    if args.print_config {
        print!(
            "{}",
            toml::to_string_pretty(&config).context("serialising the config")?
        );
        return Ok(());
    }
    init_logging(&config.log.level);
    // Every look-up happens here, once, before the runtime starts.
    let resolved = config.resolve(path.as_deref())?;
    if let Some(why) = &resolved.vision_off {
        tracing::warn!("vision is off: {why}");
    }
    if let Some(why) = &resolved.speech_off {
        tracing::warn!("speech is off, answers are text only: {why}");
    }
    let c = &resolved.config;
    if c.model.threads > 0 {
        device::set_cpu_threads(c.model.threads);
    }
    let opts = EngineOptions {
        backend: c.model.backend.kind(),
        context_length: c.model.context_length,
        weights: None,
    };
    let (engine, vision) = engines(&resolved, &opts)?;
    let remote = match resolved.offload.clone() {
        None => None,
        Some(cfg) => {
            tracing::info!(url = %cfg.url, mode = ?cfg.mode, "offloading answers");
            Some(Remote::new(cfg).map_err(anyhow::Error::msg)?)
        }
    };
    let state = StateBus::new();
    let answerer = Answerer::spawn_with_offload(
        engine,
        vision,
        remote,
        AnswerConfig {
            system_prompt: c.assistant.system_prompt.clone(),
            max_tokens: c.assistant.max_tokens,
            history_tokens: c.assistant.history_tokens,
            queue: c.assistant.queue,
        },
        state.clone(),
        Arc::new(Conversations::new(c.assistant.max_conversations)),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(resolved, answerer, state))
}

/// The language and vision-language engines: loaded now, or on the first
/// question that needs them (`model.load`).
fn engines(r: &Resolved, opts: &EngineOptions) -> Result<(EngineSource, Option<EngineSource>)> {
    let load = r.config.model.load;
    let engine = match load {
        LoadWhen::Start => EngineSource::Loaded(Box::new(
            Engine::load(&r.model, opts)
                .with_context(|| format!("loading model {}", r.model.display()))?,
        )),
        LoadWhen::Lazy => {
            // Resolved on every attempt (on the answer thread), so a model
            // pulled after start-up (`models.pull`) is found by the next
            // question.
            let m = r.config.model.clone();
            let opts = opts.clone();
            EngineSource::Lazy(Box::new(move || {
                let path = m.resolve().map_err(|e| e.to_string())?;
                Engine::load(&path, &opts).map_err(|e| e.to_string())
            }))
        }
    };
    let tiling = r.config.vision.tiling;
    let vision = match r.vision.clone() {
        None => None,
        Some(files) => Some(match load {
            LoadWhen::Start => EngineSource::Loaded(Box::new(
                Engine::load_vlm(&files, opts, tiling)
                    .with_context(|| format!("loading the vision model {files:?}"))?,
            )),
            LoadWhen::Lazy => {
                let opts = opts.clone();
                EngineSource::Lazy(Box::new(move || {
                    Engine::load_vlm(&files, &opts, tiling).map_err(|e| e.to_string())
                }))
            }
        }),
    };
    Ok((engine, vision))
}

/// Builds the service and its front ends, serves until SIGINT/SIGTERM,
/// then winds down.
async fn serve(r: Resolved, answerer: Answerer, state: StateBus) -> Result<()> {
    let c = r.config;
    let listener = server::bind(&r.socket, r.group)?;
    let http = match &r.http {
        None => None,
        Some(h) => match seer_daemon::http::bind(h).await {
            Ok(l) => Some((l, h.clone())),
            Err(e) => {
                let _ = std::fs::remove_file(&r.socket);
                anyhow::bail!(e);
            }
        },
    };
    let hub = seer_store::Hub::from_env();
    tracing::info!(dir = %r.store.dir().display(), endpoint = hub.endpoint(), "models");
    let models = Arc::new(seer_daemon::models::Models::new(r.catalog, r.store, hub));
    let camera = Camera::new(
        CameraOptions {
            source: r.camera,
            fps: c.vision.camera_fps,
            keep_warm: Duration::from_secs_f64(c.vision.keep_warm_seconds),
            max_pixels: c.vision.max_pixels,
        },
        state.clone(),
    );
    // Resolving the speech models reads the models directory.
    let (listen, model) = (c.listen.clone(), c.model.clone());
    let st = state.clone();
    let state_for_speech = state.clone();
    let (ears, heard) = tokio::task::spawn_blocking(move || Listener::start(listen, model, st))
        .await?
        .map_err(anyhow::Error::msg)?;
    let assistant = Assistant::start(Parts {
        answerer,
        state,
        listener: ears,
        heard,
        camera,
        models,
        language: ModelInfo {
            path: r.model.clone(),
            backend: c.model.backend.as_str().to_owned(),
        },
        vision: r.vision.as_ref().map(|f| VisionInfo {
            files: f.to_string(),
            tiling: c.vision.tiling,
        }),
        max_image_pixels: c.vision.max_pixels,
        voice_camera: c.vision.voice_camera,
        speaker: speaker(r.voice.clone(), &c.speech, state_for_speech)?,
        speech_policy: SpeechPolicy {
            hands_free: c.speech.hands_free,
        },
        speech_enabled: c.speech.enabled,
        voice: r.voice.clone(),
        http: r.http.as_ref().map(|h| h.listen.to_string()),
    });
    let _dbus = match start_dbus(c.dbus.bus, c.dbus.required, &assistant).await {
        Ok(conn) => conn,
        Err(e) => {
            let _ = std::fs::remove_file(&r.socket);
            return Err(e);
        }
    };
    let shared = Arc::new(Shared {
        assistant: assistant.clone(),
        max_line_bytes: c.socket.max_line_bytes,
        client_queue: c.socket.client_queue,
        group: r.group,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::serve(listener, shared, stop_rx.clone()));
    let http = http.map(|(l, h)| {
        tracing::info!(listen = %h.listen, "HTTP API (OpenAI-compatible) ready");
        tokio::spawn(seer_daemon::http::serve(l, h, assistant.clone(), stop_rx))
    });
    tracing::info!(socket = %r.socket.display(), "seerd ready");
    systemd::notify_ready();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    // In-flight answers end with `cancelled`; give them a moment to reach
    // their clients before the connections close.
    assistant.wind_down().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(h) = http {
        // Streams end with their cancelled turns; a client that holds an
        // idle connection open does not hold up the exit.
        let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
    }
    if let Err(e) = std::fs::remove_file(&r.socket) {
        tracing::warn!("removing {}: {e}", r.socket.display());
    }
    tracing::info!("stopped");
    Ok(())
}

/// The speech stage for `voice` (none: speech is off). The voice loads on
/// the speech thread, on the CPU: HiFi-GAN's convolutions run well on
/// burn's CPU backend, and a GPU is left to the language model.
fn speaker(
    voice: Option<PathBuf>,
    cfg: &seer_daemon::config::SpeechConfig,
    state: StateBus,
) -> Result<Option<seer_pipelines::speak::Speaker>> {
    use seer_pipelines::speak::{Speaker, SpeechOptions};
    let Some(onnx) = voice else { return Ok(None) };
    let rate = cfg.rate;
    let load = Box::new(move || {
        let dev = device::open(device::BackendKind::Cpu)?;
        let v = seer_models::piper::Voice::load(&onnx, None, &dev.device)?;
        Ok(v)
    });
    let opts = SpeechOptions {
        device: cfg.device.clone(),
        volume: cfg.volume,
        length_scale: None,
        rate,
        cut_first_clause: cfg.early_start,
    };
    let s = Speaker::start(load, opts, state).context("starting the speech thread")?;
    Ok(Some(s))
}

/// Serves D-Bus as `[dbus]` says: `None` when it is off or there is no bus
/// (the socket still serves), an error when the name is taken and
/// `required` is set.
async fn start_dbus(
    bus: DbusBus,
    required: bool,
    assistant: &Arc<Assistant>,
) -> Result<Option<zbus::Connection>> {
    let bus = match bus {
        DbusBus::Off => return Ok(None),
        DbusBus::System => dbus::Bus::System,
        DbusBus::Session => dbus::Bus::Session,
    };
    match dbus::start(bus, dbus::Assistant::new(assistant.clone())).await {
        Ok(conn) => {
            tracing::info!(name = dbus::NAME, ?bus, "D-Bus service ready");
            Ok(Some(conn))
        }
        Err(e @ dbus::StartError::NoBus { .. }) => {
            tracing::warn!("D-Bus is off: {e}");
            Ok(None)
        }
        Err(e @ dbus::StartError::NameTaken { .. }) if !required => {
            tracing::warn!("D-Bus is off: {e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
