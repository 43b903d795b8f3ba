//! `seer`: the command-line client of `seerd`.
//!
//! Exit codes: 0 ok, 1 an error reported by the daemon (or a cancelled
//! answer), 2 the daemon is not running.

mod models;
mod say;
mod transcribe;

use anyhow::{Context, Result, anyhow};
use clap::{CommandFactory, Parser, Subcommand};
use seer_daemon::config::Config;
use seer_daemon::protocol::{self, AskRequest, Event, ImageRef, Received, Request};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(Parser)]
#[command(version, about = "Talk to the Seer daemon")]
struct Cli {
    /// Socket path (default: $SEER_SOCKET, else the config's `socket.path`,
    /// else $XDG_RUNTIME_DIR/seer/seer.sock): the one seerd serves.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The config file seerd reads (default: $SEER_CONFIG, else
    /// $XDG_CONFIG_HOME/seer/config.toml): where the socket and models are.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ask a question and stream the answer.
    Ask {
        /// The question.
        text: String,
        /// Print the raw protocol events instead of the text.
        #[arg(long)]
        json: bool,
        /// Continue a conversation.
        #[arg(long)]
        conversation: Option<String>,
        /// Answer length limit in tokens.
        #[arg(long)]
        max_tokens: Option<usize>,
        /// A photo to ask about (the daemon reads the file).
        #[arg(long)]
        image: Option<PathBuf>,
        /// Also speak the answer on the daemon's loudspeaker (waits until
        /// the speech ends).
        #[arg(long)]
        speak: bool,
    },
    /// Say something with Seer's voice (through the daemon, or into a WAV
    /// file with --out, without it).
    Say(say::SayArgs),
    /// Look through the camera and answer about what is in view.
    Look {
        /// The question.
        #[arg(default_value = "What am I looking at?")]
        text: String,
        /// Print the raw protocol events instead of the text.
        #[arg(long)]
        json: bool,
        /// Answer length limit in tokens.
        #[arg(long)]
        max_tokens: Option<usize>,
    },
    /// The daemon's state.
    Status,
    /// An interactive conversation (one question per line).
    Chat,
    /// The model catalogue and the models directory (works without the daemon).
    Models {
        /// The models directory (default: config, else $SEER_MODELS_DIR, else
        /// $XDG_CACHE_HOME/seer/models).
        // No clap `env`: the variables are the config's fallback, so a
        // config file's `[model] models_dir` wins over them, as in seerd.
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// An extra catalogue file (default: config, else $SEER_CATALOG, else
        /// $XDG_CONFIG_HOME/seer/catalog.toml).
        #[arg(long)]
        catalog: Option<PathBuf>,
        #[command(subcommand)]
        cmd: models::ModelsCmd,
    },
    /// Audio input and output devices, and cameras.
    Devices,
    /// Transcribe a WAV file or the microphone (works without the daemon).
    #[command(args_override_self = true)]
    Transcribe(transcribe::TranscribeArgs),
    /// Shell completions for bash, zsh, fish, ...
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

enum Failure {
    NotRunning(String),
    Daemon(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Other(e.into())
    }
}

/// The question in flight, for Ctrl-C to cancel.
static CURRENT: Mutex<Option<String>> = Mutex::new(None);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::NotRunning(m)) => {
            eprintln!("seer: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Daemon(m)) => {
            eprintln!("seer: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Other(e)) => {
            eprintln!("seer: {e:#}");
            ExitCode::from(1)
        }
    }
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(socket: &std::path::Path) -> Result<Self, Failure> {
        let s = UnixStream::connect(socket).map_err(|e| {
            Failure::NotRunning(format!(
                "the daemon is not running ({}: {e}); start it with `seerd` (or `systemctl --user start seerd`)",
                socket.display()
            ))
        })?;
        let writer = s.try_clone()?;
        Ok(Self {
            reader: BufReader::new(s),
            writer,
        })
    }

    fn send(&mut self, req: &Request) -> Result<(), Failure> {
        let mut line = protocol::encode_request(req);
        line.push('\n');
        if let Err(e) = self.writer.write_all(line.as_bytes()) {
            // The daemon may have said why it hung up (e.g. permission_denied).
            if let Ok((_, ev)) = self.recv() {
                check_error(&ev.event)?;
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// The next event, with its line as the daemon wrote it.
    fn recv(&mut self) -> Result<(String, Received), Failure> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(Failure::Daemon("the daemon closed the connection".into()));
        }
        let ev = protocol::decode(&line)
            .map_err(|e| Failure::Other(anyhow!("bad event from the daemon: {e}: {line}")))?;
        Ok((line.trim_end().to_owned(), ev))
    }
}

/// The socket `seerd` serves: `--socket`, else `SEER_SOCKET`, else the
/// config file's `socket.path` (the same file seerd reads), else the default.
fn socket_path(cli_socket: Option<PathBuf>, config: Option<&std::path::Path>) -> Result<PathBuf> {
    if let Some(s) = cli_socket {
        return Ok(s);
    }
    let explicit = config.is_some() || std::env::var_os("SEER_CONFIG").is_some();
    let path = Config::locate(config);
    let c = Config::load(path.as_deref(), explicit)?;
    Ok(c.socket.resolved_path())
}

fn run(cli: Cli) -> Result<(), Failure> {
    let config = cli.config;
    let socket = || socket_path(cli.socket.clone(), config.as_deref()).map_err(Failure::Other);
    match cli.cmd {
        Cmd::Transcribe(args) => transcribe::run(args).map_err(Failure::Other),
        Cmd::Devices => devices(config.as_deref()),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "seer", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Models {
            models_dir,
            catalog,
            cmd,
        } => models::run(
            cmd,
            models::Place {
                config: config.clone(),
                models_dir,
                catalog,
            },
        )
        .map_err(Failure::Other),
        Cmd::Status => status(&socket()?),
        Cmd::Ask {
            text,
            json,
            conversation,
            max_tokens,
            image,
            speak,
        } => {
            // The daemon reads the file, so it gets an absolute path.
            let image = match image {
                Some(p) => {
                    let abs = std::fs::canonicalize(&p)
                        .with_context(|| format!("--image {}", p.display()))?;
                    Some(ImageRef::Path(abs))
                }
                None => None,
            };
            let mut c = Conn::open(&socket()?)?;
            install_ctrl_c(&c)?;
            let opts = AskOpts {
                raw: json,
                conversation: conversation.as_deref(),
                max_tokens,
                image,
                speak,
            };
            ask(&mut c, &text, opts)
        }
        Cmd::Say(args) => match &args.out {
            Some(out) => say::to_file(&args, out, config.as_deref()).map_err(Failure::Other),
            None => say_through_daemon(&socket()?, &args.text),
        },
        Cmd::Look {
            text,
            json,
            max_tokens,
        } => {
            let mut c = Conn::open(&socket()?)?;
            install_ctrl_c(&c)?;
            let opts = AskOpts {
                raw: json,
                max_tokens,
                image: Some(ImageRef::Camera),
                ..AskOpts::default()
            };
            ask(&mut c, &text, opts)
        }
        Cmd::Chat => chat(&socket()?),
    }
}

/// `seer devices`: audio inputs with their formats, audio outputs, cameras.
fn devices(config: Option<&std::path::Path>) -> Result<(), Failure> {
    let devices = seer_platform::mic::input_devices().map_err(|e| Failure::Other(e.into()))?;
    if devices.is_empty() {
        println!("no audio input devices");
    }
    for d in devices {
        println!("{}{}", d.name, if d.default { " (default)" } else { "" });
        for c in d.configs {
            println!("    {c}");
        }
    }
    println!("audio outputs ([speech] device):");
    match seer_platform::speaker::output_devices() {
        Ok(outs) if outs.is_empty() => println!("    none"),
        Ok(outs) => {
            for d in outs {
                println!(
                    "    {}{}",
                    d.name,
                    if d.default { " (default)" } else { "" }
                );
            }
        }
        Err(e) => println!("    {e}"),
    }
    print_cameras(config);
    print_gpus();
    Ok(())
}

/// GPU adapters wgpu can see, with the limits that decide how models are
/// cut into buffers, and which one `[model] backend = "auto"` would take.
fn print_gpus() {
    use seer_models::device::wgpu_adapters;
    let adapters = wgpu_adapters();
    println!("GPU adapters ([model] backend):");
    if adapters.is_empty() {
        println!("    none (install a Vulkan driver: libvulkan1 and mesa-vulkan-drivers)");
    }
    let mib = |b: u64| b >> 20;
    for a in &adapters {
        println!(
            "    {} ({}, {}){}",
            a.name,
            a.backend,
            a.device_type,
            if a.is_hardware {
                ""
            } else {
                " software: `auto` skips it, `wgpu` uses it"
            }
        );
        println!(
            "        max buffer {} MiB, max binding {} MiB",
            mib(a.max_buffer),
            mib(a.max_binding)
        );
    }
    let auto = if adapters.iter().any(|a| a.is_hardware) {
        "wgpu"
    } else {
        "cpu"
    };
    println!("    backend = \"auto\" runs on: {auto}");
}

/// `seer status`: the daemon's status event, pretty-printed.
fn status(socket: &std::path::Path) -> Result<(), Failure> {
    let mut c = Conn::open(socket)?;
    c.send(&Request::Status {
        id: Some("status".into()),
    })?;
    let (line, ev) = c.recv()?;
    check_error(&ev.event)?;
    let v: serde_json::Value = serde_json::from_str(&line).context("printing")?;
    println!("{}", serde_json::to_string_pretty(&v).context("printing")?);
    Ok(())
}

/// `seer say TEXT`: spoken by the daemon; returns when the speech ends.
fn say_through_daemon(socket: &std::path::Path, text: &str) -> Result<(), Failure> {
    let mut c = Conn::open(socket)?;
    install_ctrl_c(&c)?;
    let id = request_id("say");
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
    c.send(&Request::Say {
        id,
        text: text.to_owned(),
    })?;
    let result = wait_for_speech(&mut c);
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
    result
}

/// `seer chat`: one conversation, a question per line of stdin.
fn chat(socket: &std::path::Path) -> Result<(), Failure> {
    let mut c = Conn::open(socket)?;
    install_ctrl_c(&c)?;
    let conversation = format!("chat-{}", std::process::id());
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let opts = AskOpts {
            conversation: Some(&conversation),
            ..AskOpts::default()
        };
        match ask(&mut c, line.trim(), opts) {
            Ok(()) => {}
            // Reported, and the conversation goes on.
            Err(Failure::Daemon(m)) => eprintln!("seer: {m}"),
            Err(e) => return Err(e),
        }
    }
}

/// Cameras: the configured image source (what this build captures from) and
/// the V4L2 devices the kernel has.
fn print_cameras(config: Option<&std::path::Path>) {
    println!("cameras:");
    let explicit = config.is_some() || std::env::var_os("SEER_CONFIG").is_some();
    let path = Config::locate(config);
    let source = Config::load(path.as_deref(), explicit)
        .ok()
        .and_then(|c| c.vision.camera)
        .unwrap_or_default();
    match seer_daemon::camera::Source::parse(&source, 0, 0) {
        None => println!("    [vision] camera: not configured"),
        Some(seer_daemon::camera::Source::Device(..)) => {
            println!("    [vision] camera = {source:?}")
        }
        Some(seer_daemon::camera::Source::Images(path)) => {
            match seer_platform::frames::image_files(&path) {
                Ok(files) => {
                    let first = files
                        .first()
                        .and_then(|f| {
                            seer_platform::frames::load(
                                f,
                                seer_platform::frames::DEFAULT_MAX_PIXELS,
                            )
                            .ok()
                        })
                        .map(|i| format!(", first {}×{} RGB", i.width(), i.height()))
                        .unwrap_or_default();
                    println!(
                        "    {} (image source: {} image(s){first})",
                        path.display(),
                        files.len()
                    );
                }
                Err(e) => println!("    {} (image source: {e})", path.display()),
            }
        }
    }
    for c in seer_platform::camera::cameras() {
        println!("    v4l2:{} {:?}", c.index, c.name);
        for f in c.formats {
            println!("        {f}");
        }
    }
}

/// Ctrl-C sends `cancel` for the question in flight (the daemon answers
/// `cancelled`; `ask` exits 1, `chat` goes on); a second Ctrl-C for the same
/// question, or one with nothing in flight, exits at once with 130.
fn install_ctrl_c(c: &Conn) -> Result<(), Failure> {
    let mut writer = c.writer.try_clone()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal thread")?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let mut cancelled: Option<String> = None;
            loop {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
                let current = CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match current {
                    Some(id) if cancelled.as_ref() != Some(&id) => {
                        cancelled = Some(id.clone());
                        let line =
                            format!("{}\n", protocol::encode_request(&Request::Cancel { id }));
                        let _ = writer.write_all(line.as_bytes());
                    }
                    _ => std::process::exit(130),
                }
            }
        });
    });
    Ok(())
}

fn check_error(ev: &Event) -> Result<(), Failure> {
    if let Event::Error { code, message } = ev {
        return Err(Failure::Daemon(format!("{}: {message}", code.as_str())));
    }
    Ok(())
}

/// How `ask` asks.
#[derive(Default)]
struct AskOpts<'a> {
    /// Print the raw protocol events.
    raw: bool,
    conversation: Option<&'a str>,
    max_tokens: Option<usize>,
    image: Option<ImageRef>,
    /// Also speak the answer, and wait for the speech to end.
    speak: bool,
}

/// A request id unique to this process and moment.
fn request_id(kind: &str) -> String {
    format!(
        "{kind}-{}-{}",
        std::process::id(),
        std::time::UNIX_EPOCH
            .elapsed()
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

fn ask(c: &mut Conn, text: &str, o: AskOpts<'_>) -> Result<(), Failure> {
    let id = request_id("ask");
    let req = AskRequest {
        conversation: o.conversation.map(str::to_owned),
        max_tokens: o.max_tokens,
        image: o.image,
        speak: o.speak.then_some(true),
        ..AskRequest::new(id.clone(), text)
    };
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
    c.send(&Request::Ask(req))?;
    let mut result = stream_answer(c, o.raw);
    if o.speak && !matches!(result, Err(Failure::Other(_))) {
        let spoken = wait_for_speech(c);
        result = result.and(spoken);
    }
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
    result
}

/// Waits for `speech.end`; a failed speech is an error naming its cause.
fn wait_for_speech(c: &mut Conn) -> Result<(), Failure> {
    loop {
        let (_, ev) = c.recv()?;
        match ev.event {
            Event::SpeechEnd {
                reason, message, ..
            } => {
                return match (reason.as_str(), message) {
                    ("done", _) => Ok(()),
                    ("cancelled", _) => Err(Failure::Daemon("speech cancelled".into())),
                    (_, m) => Err(Failure::Daemon(format!(
                        "speech failed: {}",
                        m.unwrap_or(reason)
                    ))),
                };
            }
            ev @ Event::Error { .. } => return check_error(&ev),
            _ => {}
        }
    }
}

fn stream_answer(c: &mut Conn, raw: bool) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    loop {
        let (line, ev) = c.recv()?;
        if raw {
            writeln!(out, "{line}")?;
        }
        match ev.event {
            Event::AnswerDelta { text } if !raw => {
                write!(out, "{text}")?;
                out.flush()?;
            }
            Event::AnswerEnd { .. } => {
                if !raw {
                    writeln!(out)?;
                }
                return Ok(());
            }
            Event::Cancelled {} => {
                if !raw {
                    writeln!(out)?;
                }
                return Err(Failure::Daemon("cancelled".into()));
            }
            ev @ Event::Error { .. } => return check_error(&ev),
            _ => {}
        }
    }
}
