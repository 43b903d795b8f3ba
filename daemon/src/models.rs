//! The model catalogue and downloads as the front ends show them: the
//! listing shared by `seer models list` and the socket's `models.list`, and
//! the socket's `models.pull`, which runs the blocking download on a thread
//! of its own and streams `models.progress` events.

use crate::error::ServiceError;
use crate::protocol::{Code, Event, Progress, Pulled};
use seer_cancel::CancelToken;
use seer_store::{Catalog, Hub, ModelStore, PullEvent, PullOutcome, Source, StoreError};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// One row per catalogue model, then installed models the catalogue does
/// not know (added with `seer models add`, or from a catalogue since edited).
pub fn list(catalog: &Catalog, store: &ModelStore) -> Result<Vec<Value>, StoreError> {
    let installed = store.installed()?;
    let mut rows = Vec::new();
    for e in catalog.entries() {
        let m = installed.iter().find(|m| m.name == e.name);
        rows.push(json!({
            "name": e.name,
            "role": e.role,
            "description": e.description,
            "size": e.size(),
            "profiles": e.profiles,
            "licence": e.licence,
            "repo": e.repo,
            "revision": e.revision,
            "unverified": e.unverified,
            "installed": m.is_some(),
            "disk_bytes": m.map(|_| store.disk_usage(&e.name)),
            "path": m.map(|m| store.path_of(m)),
        }));
        // A catalogue name registered over a file of the user's own (how
        // run.sh installs the converted PyPI copies without the Hub).
        if m.is_some_and(|m| matches!(m.source, Source::Local { .. }))
            && let Some(row) = rows.last_mut()
        {
            row["local"] = json!(true);
        }
    }
    for m in installed.iter().filter(|m| catalog.get(&m.name).is_none()) {
        let path = match &m.source {
            Source::Local { path } => path.clone(),
            Source::Hub { .. } => store.path_of(m),
        };
        rows.push(json!({
            "name": m.name,
            "role": m.role,
            "description": "not in the catalogue",
            "size": m.size(),
            "profiles": [],
            "installed": true,
            "local": matches!(m.source, Source::Local { .. }),
            "disk_bytes": store.disk_usage(&m.name),
            "path": path,
        }));
    }
    Ok(rows)
}

/// What the daemon needs to serve `models.*` requests.
#[derive(Debug)]
pub struct Models {
    /// The catalogue.
    pub catalog: Catalog,
    /// The models directory.
    pub store: ModelStore,
    /// The Hub client (`HF_ENDPOINT`, `HF_TOKEN`).
    pub hub: Hub,
    running: Mutex<HashSet<String>>,
}

impl Models {
    /// Serves `store` from `catalog` via `hub`.
    pub fn new(catalog: Catalog, store: ModelStore, hub: Hub) -> Self {
        Self {
            catalog,
            store,
            hub,
            running: Mutex::new(HashSet::new()),
        }
    }

    /// Starts pulling catalogue model `name` on a thread of its own; the
    /// events arrive on `tx` (bounded; the thread waits for a slow
    /// receiver, which is fine: progress is throttled at the source).
    pub fn pull(
        self: &Arc<Self>,
        name: &str,
        cancel: CancelToken,
        tx: tokio::sync::mpsc::Sender<Event>,
    ) -> Result<(), ServiceError> {
        let Some(entry) = self.catalog.get(name).cloned() else {
            return Err(ServiceError::bad_request(
                self.catalog.unknown(name).to_string(),
            ));
        };
        if !self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.name.clone())
        {
            return Err(ServiceError::new(
                Code::Busy,
                format!("{name} is already being pulled by another request"),
            ));
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pull {name}"))
            .spawn(move || {
                let mut on = |ev: PullEvent<'_>| {
                    let v = match ev {
                        PullEvent::Progress {
                            name,
                            file,
                            completed,
                            total,
                        } => Progress {
                            name: name.to_owned(),
                            file: Some(file.to_owned()),
                            completed,
                            total,
                        },
                        PullEvent::Resolved {
                            name,
                            total,
                            present,
                            ..
                        } => Progress {
                            name: name.to_owned(),
                            file: None,
                            completed: present,
                            total,
                        },
                        PullEvent::Retry { name, file, attempt, error, .. } => {
                            tracing::warn!(%name, %file, attempt, "download broke off, retrying: {error}");
                            return;
                        }
                        PullEvent::File { .. } => return,
                    };
                    let _ = tx.blocking_send(Event::ModelsProgress(v));
                };
                let result = this.hub.pull(&this.store, &entry, &mut on, &cancel);
                this.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&entry.name);
                let msg = match result {
                    Ok(out) => {
                        let m = out.manifest();
                        tracing::info!(name = %m.name, "model installed");
                        Event::ModelsPulled(Pulled {
                            name: m.name.clone(),
                            path: this.store.path_of(m),
                            size: m.size(),
                            already_installed: matches!(out, PullOutcome::AlreadyInstalled(_)),
                        })
                    }
                    Err(_) if cancel.is_cancelled() => Event::Cancelled {},
                    Err(e) => {
                        tracing::warn!("pull of {} failed: {e}", entry.name);
                        ServiceError::from(e).into()
                    }
                };
                let _ = tx.blocking_send(msg);
            });
        if let Err(e) = spawned {
            self.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            return Err(ServiceError::internal(format!(
                "cannot start the download thread: {e}"
            )));
        }
        Ok(())
    }
}
