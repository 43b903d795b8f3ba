//! `seer models …`: the catalogue and the models directory, locally (no
//! daemon needed, so a first model can be fetched before `seerd` runs).

use anyhow::{Result, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use seer_cancel::CancelToken;
use seer_daemon::config::Config;
use seer_store::{
    Catalog, Checked, Hub, ModelStore, PullEvent, PullOutcome, Role, StoreError, human_bytes,
    install_from,
};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub(crate) enum ModelsCmd {
    /// The catalogue, what is installed, and the size on disk.
    List {
        /// One JSON object per model instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download models (a name, or a profile: glasses, board, laptop).
    Pull {
        /// Model or profile names; none = the default profile.
        names: Vec<String>,
        /// Install from a local copy (a file, or a directory of the model's
        /// files) instead of the Hub; checked against the catalogue.
        #[arg(long, value_name = "PATH")]
        from: Option<PathBuf>,
        /// Retries after a broken transfer (each resumes where it stopped).
        #[arg(long, default_value_t = 3)]
        retries: u32,
    },
    /// Delete installed models.
    Rm {
        /// Model names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Re-hash installed models against what was installed.
    Verify {
        /// Model names; none = every installed model.
        names: Vec<String>,
    },
    /// Register a local GGUF file or model directory (not copied).
    Add {
        /// The file or directory.
        path: PathBuf,
        /// The name to use it by (`model.name`).
        #[arg(long)]
        name: String,
        /// What it is.
        #[arg(long, value_enum, default_value = "language")]
        role: RoleArg,
    },
    /// Print the path of an installed model (for scripts).
    Path {
        /// The model.
        name: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum RoleArg {
    Speech,
    Vad,
    Language,
    VisionLanguage,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Speech => Role::Speech,
            RoleArg::Vad => Role::Vad,
            RoleArg::Language => Role::Language,
            RoleArg::VisionLanguage => Role::VisionLanguage,
        }
    }
}

/// Where the store and catalogue are: the flags, else the config file's
/// `[model]` section (which itself falls back to `SEER_MODELS_DIR`,
/// `SEER_CATALOG` and the XDG defaults).
pub(crate) struct Place {
    pub(crate) config: Option<PathBuf>,
    pub(crate) models_dir: Option<PathBuf>,
    pub(crate) catalog: Option<PathBuf>,
}

pub(crate) fn run(cmd: ModelsCmd, place: Place) -> Result<()> {
    let explicit = place.config.is_some() || std::env::var_os("SEER_CONFIG").is_some();
    let path = Config::locate(place.config.as_deref());
    let mut config = Config::load(path.as_deref(), explicit)?;
    if let Some(d) = place.models_dir {
        config.model.models_dir = Some(d);
    }
    if let Some(c) = place.catalog {
        config.model.catalog = Some(c);
    }
    let catalog = config.model.catalog()?;
    let store = config.model.store();
    match cmd {
        ModelsCmd::List { json } => list(&catalog, &store, json),
        ModelsCmd::Pull {
            names,
            from,
            retries,
        } => pull(&catalog, &store, names, from.as_deref(), retries),
        ModelsCmd::Rm { names } => {
            for n in names {
                if store.remove(&n)? {
                    println!("{n}: removed");
                } else {
                    bail!("{n} is not installed in {}", store.dir().display());
                }
            }
            Ok(())
        }
        ModelsCmd::Verify { names } => verify(&store, names),
        ModelsCmd::Add { path, name, role } => {
            let m = store.add(&path, &name, role.into())?;
            println!(
                "{name}: registered {} ({} file{}, {}); use it with model.name = {name:?}",
                path.display(),
                m.files.len(),
                if m.files.len() == 1 { "" } else { "s" },
                human_bytes(m.size())
            );
            Ok(())
        }
        ModelsCmd::Path { name } => {
            println!("{}", store.resolve(&name)?.display());
            Ok(())
        }
    }
}

fn list(catalog: &Catalog, store: &ModelStore, json: bool) -> Result<()> {
    let rows = seer_daemon::models::list(catalog, store)?;
    if json {
        for r in rows {
            println!("{r}");
        }
        return Ok(());
    }
    println!("models directory: {}", store.dir().display());
    println!(
        "{:<26} {:<16} {:>9} {:<22} {:<10} DESCRIPTION",
        "NAME", "ROLE", "SIZE", "PROFILES", "INSTALLED"
    );
    for r in &rows {
        let size = r["size"]
            .as_u64()
            .map(human_bytes)
            .unwrap_or_else(|| "?".into());
        let installed = match r["disk_bytes"].as_u64() {
            Some(_) if r["local"] == true => "local".to_owned(),
            Some(n) => human_bytes(n),
            None => "-".into(),
        };
        let profiles: Vec<&str> = r["profiles"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
            .unwrap_or_default();
        let unverified = r["unverified"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| {
                let v: Vec<&str> = a.iter().filter_map(|x| x.as_str()).collect();
                format!(" [unverified: {}]", v.join(", "))
            })
            .unwrap_or_default();
        println!(
            "{:<26} {:<16} {:>9} {:<22} {:<10} {}{}",
            r["name"].as_str().unwrap_or(""),
            r["role"].as_str().unwrap_or(""),
            size,
            profiles.join(","),
            installed,
            r["description"].as_str().unwrap_or(""),
            unverified
        );
    }
    println!();
    for (p, d) in catalog.profiles() {
        let mark = if p == catalog.default_profile() {
            " (default)"
        } else {
            ""
        };
        println!("profile {p}{mark}: {d}");
    }
    Ok(())
}

fn pull(
    catalog: &Catalog,
    store: &ModelStore,
    names: Vec<String>,
    from: Option<&Path>,
    retries: u32,
) -> Result<()> {
    let names = if names.is_empty() {
        vec![catalog.default_profile().to_owned()]
    } else {
        names
    };
    let mut entries = Vec::new();
    for n in &names {
        for e in catalog.select(n)? {
            if !entries
                .iter()
                .any(|x: &&seer_store::Entry| x.name == e.name)
            {
                entries.push(e);
            }
        }
    }
    if from.is_some() && entries.len() != 1 {
        bail!("--from installs one model; name exactly one");
    }
    let mut hub = Hub::from_env();
    hub.retries = retries;
    let cancel = CancelToken::new();
    let mut failed = Vec::new();
    for e in entries {
        let result = match from {
            Some(src) => {
                eprintln!("{}: installing from {}", e.name, src.display());
                install_from(store, e, src)
            }
            None => {
                if !matches!(store.manifest(&e.name), Ok(Some(_))) {
                    eprintln!(
                        "{}: fetching {} ({} file{}, {}) from {}/{} at {}",
                        e.name,
                        e.description,
                        e.files.len(),
                        if e.files.len() == 1 { "" } else { "s" },
                        e.size()
                            .map(human_bytes)
                            .unwrap_or_else(|| "size unknown".into()),
                        hub.endpoint(),
                        e.repo,
                        e.revision
                    );
                }
                let mut progress = Progress::new(&e.name);
                let r = hub.pull(store, e, &mut |ev| progress.event(ev), &cancel);
                progress.finish();
                r
            }
        };
        match result {
            Ok(PullOutcome::AlreadyInstalled(m)) => {
                eprintln!(
                    "{}: already installed ({})",
                    e.name,
                    store.path_of(&m).display()
                )
            }
            Ok(PullOutcome::Installed(m)) => {
                let how = if m.files.iter().all(|f| f.checked == Checked::Catalogue) {
                    "sha256 checked against the catalogue"
                } else if m.files.iter().all(|f| f.checked != Checked::OnArrival) {
                    "sha256 checked against the catalogue and the Hub"
                } else {
                    "no published sha256 for some files: hashed on arrival"
                };
                eprintln!(
                    "{}: installed {} in {} ({how})",
                    e.name,
                    human_bytes(m.size()),
                    store.path_of(&m).display()
                );
            }
            Err(err) => {
                eprintln!("seer: {}: {err}", e.name);
                // Nothing reached us at all: the rest would fail the same way.
                let unreachable = matches!(&err, StoreError::Transfer { kept: 0, partial, .. } if partial.as_os_str().is_empty());
                failed.push((e.name.clone(), err));
                if unreachable {
                    eprintln!(
                        "seer: cannot reach {}; not trying the remaining models",
                        hub.endpoint()
                    );
                    break;
                }
            }
        }
    }
    match failed.len() {
        0 => Ok(()),
        n => bail!(
            "{n} of the models failed: {}",
            failed
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A progress bar with rate and ETA on a terminal; plain lines every few
/// seconds otherwise (logs, CI, `scripts/run.sh` under systemd).
struct Progress {
    name: String,
    bar: Option<ProgressBar>,
    last_line: Instant,
    started: Instant,
    first: u64,
}

impl Progress {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            bar: None,
            last_line: Instant::now(),
            started: Instant::now(),
            first: 0,
        }
    }

    fn event(&mut self, ev: PullEvent<'_>) {
        match ev {
            PullEvent::Resolved { total, present, .. } => {
                self.first = present;
                self.started = Instant::now();
                if present > 0 {
                    eprintln!(
                        "{}: resuming, {} already here",
                        self.name,
                        human_bytes(present)
                    );
                }
                if std::io::stderr().is_terminal() {
                    let bar = ProgressBar::new(total.unwrap_or(0));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(self.name.clone());
                    bar.set_position(present);
                    bar.reset_eta();
                    self.bar = Some(bar);
                }
            }
            PullEvent::Progress {
                completed, total, ..
            } => match &self.bar {
                Some(bar) => bar.set_position(completed),
                None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                    self.last_line = Instant::now();
                    let secs = self.started.elapsed().as_secs_f64().max(0.001);
                    let rate = (completed.saturating_sub(self.first)) as f64 / secs;
                    let of = total
                        .map(|t| {
                            format!(
                                " of {} ({:.0}%)",
                                human_bytes(t),
                                100.0 * completed as f64 / t.max(1) as f64
                            )
                        })
                        .unwrap_or_default();
                    eprintln!(
                        "{}: {}{of}, {}/s",
                        self.name,
                        human_bytes(completed),
                        human_bytes(rate as u64)
                    );
                }
                None => {}
            },
            PullEvent::Retry {
                file,
                attempt,
                error,
                delay,
                ..
            } => {
                let msg = format!(
                    "{}: {file}: {error}; retry {attempt} in {:.0} s",
                    self.name,
                    delay.as_secs_f64()
                );
                match &self.bar {
                    Some(bar) => bar.println(msg),
                    None => eprintln!("{msg}"),
                }
            }
            PullEvent::File { .. } => {}
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn verify(store: &ModelStore, names: Vec<String>) -> Result<()> {
    let names = if names.is_empty() {
        store.installed()?.into_iter().map(|m| m.name).collect()
    } else {
        names
    };
    if names.is_empty() {
        println!("no models installed in {}", store.dir().display());
        return Ok(());
    }
    let mut bad = 0;
    for n in names {
        match store.verify(&n, &mut |_, _| {}) {
            Ok(m) => println!(
                "{n}: ok ({} file{}, {})",
                m.files.len(),
                if m.files.len() == 1 { "" } else { "s" },
                human_bytes(m.size())
            ),
            Err(e @ StoreError::Corrupt { .. }) | Err(e @ StoreError::NotInstalled { .. }) => {
                println!("{n}: FAILED: {e}");
                bad += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if bad > 0 {
        bail!("{bad} model(s) failed verification");
    }
    Ok(())
}
