//! `seerd`: Seer's daemon. Runs in the foreground (systemd-style), serves the
//! local socket, answers with the configured language model.

use anyhow::{Context, Result};
use clap::Parser;
use seer_daemon::config::{Config, DbusBus, LoadWhen};
use seer_daemon::dbus;
use seer_daemon::server::{self, Shared};
use seer_daemon::systemd;
use seer_models::device::{self, BackendKind};
use seer_models::generate::{Engine, EngineOptions};
use seer_pipelines::answer::{AnswerConfig, Answerer, EngineSource};
use seer_pipelines::conversation::Conversations;
use seer_pipelines::state::StateBus;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    config.validate(path.as_deref())?;
    let backend: BackendKind = config
        .model
        .backend
        .parse()
        .with_context(|| format!("config model.backend = {:?}", config.model.backend))?;
    if config.model.threads > 0 {
        device::set_cpu_threads(config.model.threads);
    }
    let opts = EngineOptions {
        backend,
        context_length: config.model.context_length,
        weights: None,
    };
    let catalog = config.model.catalog()?;
    let store = config.model.store();
    // What `status` and `describe` name: the path, or the catalogue name
    // until a lazy model is installed.
    let model_path = config
        .model
        .resolve()
        .unwrap_or_else(|_| std::path::PathBuf::from(&config.model.name));
    let engine = match config.model.load {
        LoadWhen::Start => EngineSource::Loaded(Box::new(
            Engine::load(&model_path, &opts)
                .with_context(|| format!("loading model {}", model_path.display()))?,
        )),
        LoadWhen::Lazy => {
            // Resolved on every attempt, so a model pulled after start-up
            // (`models.pull`) is found by the next question.
            let m = config.model.clone();
            let opts = opts.clone();
            EngineSource::Lazy(Box::new(move || Engine::load(&m.resolve()?, &opts)))
        }
    };
    // The vision-language model loads like the language model: now, or on
    // the first question with an image.
    let vision_files = match config.vision.files(&config.model) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("vision is off: {e}");
            None
        }
    };
    let vision_model = match &vision_files {
        Some(f) => serde_json::json!({"files": format!("{f:?}"), "tiling": config.vision.tiling}),
        None => serde_json::Value::Null,
    };
    let vision = match vision_files {
        None => None,
        Some(files) => {
            let tiling = config.vision.tiling;
            Some(match config.model.load {
                LoadWhen::Start => EngineSource::Loaded(Box::new(
                    Engine::load_vlm(&files, &opts, tiling)
                        .with_context(|| format!("loading the vision model {files:?}"))?,
                )),
                LoadWhen::Lazy => {
                    let opts = opts.clone();
                    EngineSource::Lazy(Box::new(move || Engine::load_vlm(&files, &opts, tiling)))
                }
            })
        }
    };
    let hub = seer_models::store::Hub::from_env();
    tracing::info!(dir = %store.dir().display(), endpoint = hub.endpoint(), "models");
    let models = Arc::new(seer_daemon::models::Models::new(catalog, store, hub));
    let state = StateBus::new();
    let answerer = Answerer::spawn_with_vision(
        engine,
        vision,
        AnswerConfig {
            system_prompt: config.assistant.system_prompt.clone(),
            max_tokens: config.assistant.max_tokens,
            history_tokens: config.assistant.history_tokens,
            queue: config.assistant.queue,
        },
        state.clone(),
        Arc::new(Conversations::new(config.assistant.max_conversations)),
    );
    let socket = config.socket.resolved_path();
    let group = if config.socket.group.is_empty() {
        None
    } else {
        Some(seer_daemon::server::resolve_group(&config.socket.group).map_err(anyhow::Error::msg)?)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let camera = seer_daemon::camera::Camera::new(
        seer_daemon::camera::CameraOptions {
            source: seer_daemon::camera::Source::parse(
                &config.vision.camera,
                config.vision.camera_width,
                config.vision.camera_height,
            ),
            fps: config.vision.camera_fps,
            keep_warm: std::time::Duration::from_secs_f64(config.vision.keep_warm_seconds),
            max_pixels: config.vision.max_pixels,
        },
        state.clone(),
    );
    let eyes =
        (!vision_model.is_null() && camera.configured()).then(|| seer_daemon::vision::VoiceEyes {
            camera: camera.clone(),
            rule: config.vision.voice_camera,
        });
    runtime.block_on(async move {
        let listener = server::bind(&socket, group)?;
        let ptt = seer_daemon::listen::Listener::start(
            config.listen.clone(),
            config.model.clone(),
            state.clone(),
            answerer.clone(),
            eyes,
        )
        .map_err(anyhow::Error::msg)?;
        let shared = Arc::new(Shared {
            answerer: answerer.clone(),
            state,
            max_line_bytes: config.socket.max_line_bytes,
            client_queue: config.socket.client_queue,
            group,
            model: serde_json::json!({"path": model_path, "backend": config.model.backend}),
            started: std::time::Instant::now(),
            models,
            listener: ptt,
            max_image_pixels: config.vision.max_pixels,
            vision_model,
            camera: camera.clone(),
        });
        let _dbus = match config.dbus.bus {
            DbusBus::Off => None,
            bus => {
                let bus = if bus == DbusBus::System {
                    dbus::Bus::System
                } else {
                    dbus::Bus::Session
                };
                let models = [("language".to_owned(), model_path.display().to_string())].into();
                match dbus::start(
                    bus,
                    dbus::Assistant::new(answerer.clone(), shared.state.clone(), models)
                        .with_listener(shared.listener.clone())
                        .with_camera(
                            shared.camera.clone(),
                            shared.max_image_pixels,
                            !shared.vision_model.is_null(),
                        ),
                )
                .await
                {
                    Ok(conn) => {
                        tracing::info!(name = dbus::NAME, ?bus, "D-Bus service ready");
                        Some(conn)
                    }
                    Err(e @ dbus::StartError::NoBus { .. }) => {
                        tracing::warn!("D-Bus is off: {e}");
                        None
                    }
                    Err(e @ dbus::StartError::NameTaken { .. }) if !config.dbus.required => {
                        tracing::warn!("D-Bus is off: {e}");
                        None
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&socket);
                        return Err(e.into());
                    }
                }
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(server::serve(listener, shared, stop_rx));
        tracing::info!(socket = %socket.display(), "seerd ready");
        systemd::notify_ready();

        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        // In-flight answers end with `cancelled`; give them a moment to reach
        // their clients before the connections close.
        answerer.stop_all();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while answerer.pending() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let _ = stop_tx.send(true);
        let _ = server.await;
        if let Err(e) = std::fs::remove_file(&socket) {
            tracing::warn!("removing {}: {e}", socket.display());
        }
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
