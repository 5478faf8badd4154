//! Deploying plugins into a running host: a new plugin, a new version of a loaded one (from
//! the plugins directory or an upload), a rollback, a removal.
//!
//! A new version is compiled and checked (exports, `describe`, settings, room in the instance
//! pool) before anything changes; one that fails is refused, naming the file and the reason,
//! and the version serving goes on serving. Then, in this order:
//! 1. the queue is bound to any message type the new version adds, so none of them is missed;
//! 2. the plugin's slot is swapped: a message in flight finishes on the version it started on,
//!    the next one runs on the new version (each lane reads the slot once per message);
//! 3. if the concurrency or the kill switch changed, a new runner starts and the old one
//!    drains behind it, so the queue never lacks a consumer;
//! 4. the queue is unbound from the types the new version dropped (messages of those types
//!    already queued go to `<queue>_skipped`, as for any type a plugin does not handle).
//!
//! The version replaced is kept for a rollback, with its bytes: a rollback or an upload writes
//! the bytes into the plugins directory (renamed into place), so the directory always holds
//! what runs and a restart loads the same versions. The watcher then sees a file whose digest
//! and settings are those of the version already current, and leaves it.
//!
//! A plugin's file may also be replaced by a file of another name: the new file is refused
//! while the old one exists (two files cannot serve one name), remembered, and swapped in when
//! the old file is removed, without a moment where the queue has no consumer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::Host;
use crate::dispatch::RunnerShape;
use crate::metrics::Reload;
use crate::plugin::{NoForeignTable, Plugin};
use crate::registry::Version;
use crate::transport::Endpoint;
use crate::watch::{Change, DirWatcher};

/// Where a version came from, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginSource {
    File,
    Upload,
    Rollback,
}

/// What a deployment did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "change")]
pub enum DeployChange {
    /// A plugin that was not loaded is now.
    Added,
    /// The plugin's current version replaced `from`.
    Swapped { from: String },
    /// The version is the one already current (same bytes, same settings).
    Unchanged,
}

/// The outcome of a deployment.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The plugin's current version now.
    pub plugin: Arc<Plugin>,
    pub change: DeployChange,
    /// From the start of the deployment (compilation included) to the new version serving.
    pub elapsed: Duration,
}

impl Host {
    /// Loads one plugin file and starts consuming its queue.
    pub async fn load_plugin(self: &Arc<Self>, path: &Path) -> Result<Arc<Plugin>> {
        Ok(self.deploy_file(path).await?.plugin)
    }

    /// Loads the plugin in `path`, or swaps it in if a version of it is loaded. Refused (and
    /// noted in [`Host::refused`]): a file that does not compile or pass the checks, and a
    /// plugin whose name is served from another file that still exists.
    pub async fn deploy_file(self: &Arc<Self>, path: &Path) -> Result<Deployed> {
        let _one = self.deploying.lock().await;
        let started = Instant::now();
        let result = match self.compile(path.to_owned(), None).await {
            Ok(version) => self.install(version, started, PluginSource::File).await,
            Err(error) => Err(error),
        };
        match &result {
            Ok(_) => self.clear_refusal(path),
            Err(error) => self.note_refusal(path, error),
        }
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        self.count_reload(&stem, &result, false);
        result
    }

    /// Counts a deployment in the metrics: by plugin (or, refused, by what names it) and outcome.
    fn count_reload(&self, name: &str, result: &Result<Deployed>, rollback: bool) {
        let (name, outcome) = match result {
            Err(_) => (name, Reload::refused),
            Ok(done) => {
                let outcome = match done.change {
                    DeployChange::Added => Reload::added,
                    DeployChange::Unchanged => Reload::unchanged,
                    DeployChange::Swapped { .. } if rollback => Reload::rolled_back,
                    DeployChange::Swapped { .. } => Reload::swapped,
                };
                (done.plugin.name(), outcome)
            }
        };
        self.stats.metrics().reload(name, outcome);
    }

    /// Deploys an uploaded component: checked like a file, then written into the plugins
    /// directory (over the plugin's current file, or as `<name>.wasm`). With `expected`, the
    /// component must describe itself by that name.
    pub async fn deploy_upload(
        self: &Arc<Self>,
        expected: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<Deployed> {
        let result = self.upload(expected, bytes).await;
        self.count_reload(expected.unwrap_or("(upload)"), &result, false);
        result
    }

    async fn upload(self: &Arc<Self>, expected: Option<&str>, bytes: Vec<u8>) -> Result<Deployed> {
        let _one = self.deploying.lock().await;
        let started = Instant::now();
        let bytes: Arc<[u8]> = bytes.into();
        let dir = self
            .config
            .plugins_dir
            .clone()
            .context("the host has no plugins directory to keep the upload in")?;
        let file_for = |name: &str| match self.registry.get(name) {
            Some(slot) => slot.load().path().to_owned(),
            None => dir.join(format!("{name}.wasm")),
        };
        // The settings depend on the file (its sidecar), the file on the name, and the name on
        // the component: without an expected name, the component is compiled once to learn it,
        // and checked again (from the cache) as the file it will be.
        let name = match expected {
            Some(name) => name.to_owned(),
            None => {
                let probe = self
                    .compile(dir.join("(upload).wasm"), Some(Arc::clone(&bytes)))
                    .await
                    .map_err(|error| {
                        // Its sidecar, and so its name, is found only by the name it is
                        // deployed under: the refusal of the probe would name a sidecar of
                        // the probe's own.
                        match error
                            .chain()
                            .find_map(|e| e.downcast_ref::<NoForeignTable>())
                        {
                            Some(refusal) => anyhow::anyhow!(
                                "the uploaded component is written for {}, which cannot say \
                                 its name or subscriptions: deploy it under its name (courier \
                                 deploy FILE --name NAME), with the plugin's sidecar, holding a \
                                 [foreign] table, in the plugins directory",
                                refusal.world.name()
                            ),
                            None => error,
                        }
                    })?;
                probe.plugin.name().to_owned()
            }
        };
        let file = file_for(&name);
        let version = self.compile(file.clone(), Some(bytes)).await?;
        if version.plugin.name() != name {
            let named = if version.plugin.world().is_foreign() {
                "is named by its sidecar's [foreign] table"
            } else {
                "describes itself"
            };
            bail!(
                "the uploaded component {named} as `{}`, not `{name}`",
                version.plugin.name()
            );
        }
        let staged = stage(&file, &version.bytes).await?;
        let deployed = self.install(version, started, PluginSource::Upload).await?;
        staged.put_in_place(&file).await?;
        self.clear_refusal(&file);
        Ok(deployed)
    }

    /// Makes the version before the current one current again, and writes it back into the
    /// plugin's file. The version it replaces becomes the one a further rollback returns to.
    pub async fn rollback(self: &Arc<Self>, name: &str) -> Result<Deployed> {
        let result = self.roll_back(name).await;
        self.count_reload(name, &result, true);
        result
    }

    async fn roll_back(self: &Arc<Self>, name: &str) -> Result<Deployed> {
        let _one = self.deploying.lock().await;
        let started = Instant::now();
        let slot = self.loaded(name)?;
        let previous = self
            .registry
            .previous(name)
            .with_context(|| format!("plugin `{name}` has no previous version to roll back to"))?;
        let file = slot.load().path().to_owned();
        let staged = stage(&file, &previous.bytes).await?;
        let deployed = self
            .install(previous, started, PluginSource::Rollback)
            .await?;
        staged.put_in_place(&file).await?;
        Ok(deployed)
    }

    /// Removes a plugin: its queue is unbound (it keeps what it holds, for when the plugin
    /// comes back), the messages in flight are settled, and its file is deleted.
    pub async fn remove_plugin(self: &Arc<Self>, name: &str) -> Result<Arc<Plugin>> {
        let _one = self.deploying.lock().await;
        let plugin = self.loaded(name)?.load_full();
        let removed = self.retire(plugin).await?;
        match tokio::fs::remove_file(removed.path()).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "plugin `{name}` was removed, but its file {} could not be deleted",
                        removed.path().display()
                    )
                });
            }
        }
        Ok(removed)
    }

    /// A file of the plugins directory is gone: the plugin served from it is removed, unless
    /// another file is waiting to serve its name, which is then swapped in.
    pub async fn file_removed(self: &Arc<Self>, path: &Path) -> Result<()> {
        let one = self.deploying.lock().await;
        let Some(plugin) = self.registry.loaded_from(path) else {
            self.clear_refusal(path);
            return Ok(());
        };
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(plugin.name());
        if let Some(successor) = waiting.filter(|file| file.is_file()) {
            tracing::info!(
                plugin = plugin.name(),
                removed = %path.display(),
                successor = %successor.display(),
                "plugin file removed; the file waiting for its name takes over"
            );
            drop(one);
            return self.deploy_file(&successor).await.map(|_| ());
        }
        self.retire(plugin).await.map(|_| ())
    }

    /// Watches the plugins directory and deploys what changes in it, until the returned
    /// watcher is dropped.
    pub fn watch_plugins(self: &Arc<Self>, dir: &Path) -> Result<DirWatcher> {
        let (watcher, mut changes) = DirWatcher::start(dir, self.config.reload.settle())?;
        let host = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                // Refusals are logged and kept in `refused`; the watch goes on.
                let _ = match change {
                    Change::Updated(path) => host.deploy_file(&path).await.map(|_| ()),
                    Change::Removed(path) => host.file_removed(&path).await,
                };
            }
        });
        tracing::info!(dir = %dir.display(), "watching the plugins directory");
        Ok(watcher)
    }

    fn loaded(&self, name: &str) -> Result<Arc<crate::registry::PluginSlot>> {
        self.registry
            .get(name)
            .with_context(|| format!("no plugin named `{name}` is loaded"))
    }

    /// Compiles a version off the async threads: from `bytes`, or from the file `path`.
    async fn compile(self: &Arc<Self>, path: PathBuf, bytes: Option<Arc<[u8]>>) -> Result<Version> {
        let host = Arc::clone(self);
        tokio::task::spawn_blocking(move || match bytes {
            Some(bytes) => host.registry.compile_bytes(bytes, &path),
            None => host.registry.compile(&path),
        })
        .await
        .context("plugin compilation was cancelled")?
    }

    /// Makes a checked version current: see the module documentation for the order of steps.
    async fn install(
        self: &Arc<Self>,
        version: Version,
        started: Instant,
        source: PluginSource,
    ) -> Result<Deployed> {
        let name = version.plugin.name().to_owned();
        // A file serves one plugin: a new version that names another (a renamed `describe`,
        // an edited `[foreign] name`) would leave the old one consuming beside it.
        if let Some(serving) = self.registry.loaded_from(version.plugin.path())
            && serving.name() != name
        {
            bail!(
                "plugin {} refused: it is now named `{name}`, but the file serves `{}`; remove \
                 the file (which drains `{}`), then add it again to serve it as `{name}`",
                version.plugin.path().display(),
                serving.name(),
                serving.name()
            );
        }
        let Some(slot) = self.registry.get(&name) else {
            let slot = self.registry.register(version)?;
            if let Err(error) = self.dispatcher.start(Arc::clone(&slot)).await {
                self.registry.remove(&name);
                return Err(error);
            }
            let plugin = slot.load_full();
            tracing::info!(
                plugin = plugin.name(),
                version = plugin.version(),
                file = %plugin.path().display(),
                digest = &plugin.digest()[..12],
                code = ?plugin.code_source(),
                subscriptions = ?plugin.info().subscriptions,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "plugin loaded"
            );
            return Ok(Deployed {
                plugin,
                change: DeployChange::Added,
                elapsed: started.elapsed(),
            });
        };
        let current = slot.load_full();
        let new = Arc::clone(&version.plugin);
        if source == PluginSource::File && current.path() != new.path() && current.path().is_file()
        {
            self.waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.clone(), new.path().to_owned());
            bail!(
                "plugin {} refused: its name `{name}` is already taken by {} (it takes over \
                 once that file is removed)",
                new.path().display(),
                current.path().display()
            );
        }
        if current.digest() == new.digest() && current.settings() == new.settings() {
            return Ok(Deployed {
                plugin: current,
                change: DeployChange::Unchanged,
                elapsed: started.elapsed(),
            });
        }
        self.registry.check_fits(&new)?;
        self.transport
            .declare_endpoint(&Endpoint::of(&new))
            .await
            .with_context(|| format!("plugin {} refused", new.path().display()))?;
        let reshaped = RunnerShape::of(&current) != RunnerShape::of(&new);
        let previous = self.registry.previous(&name);
        let replaced = self.registry.swap(version)?;
        if reshaped && let Err(error) = self.dispatcher.start(Arc::clone(&slot)).await {
            // The old runner still consumes: its version goes back to serving, and the types
            // only the refused version wanted are unbound again.
            self.registry.restore(replaced, previous);
            let added: Vec<String> = new
                .info()
                .subscriptions
                .iter()
                .filter(|t| !current.handles(t))
                .cloned()
                .collect();
            if !added.is_empty()
                && let Err(unbind) = self.transport.unbind(&name, &added).await
            {
                tracing::error!(plugin = %name, types = ?added, error = format!("{unbind:#}"), "cannot unbind the message types of a refused version");
            }
            return Err(error.context(format!("plugin {} refused", new.path().display())));
        }
        let dropped: Vec<String> = current
            .info()
            .subscriptions
            .iter()
            .filter(|t| !new.handles(t))
            .cloned()
            .collect();
        if !dropped.is_empty()
            && let Err(error) = self.transport.unbind(&name, &dropped).await
        {
            // The swap stands; messages of the dropped types go on arriving and are skipped.
            tracing::error!(plugin = %name, types = ?dropped, error = format!("{error:#}"), "cannot unbind the message types the new version dropped");
        }
        replaced.plugin.retire();
        let elapsed = started.elapsed();
        tracing::info!(
            plugin = %name,
            from_version = replaced.plugin.version(),
            version = new.version(),
            source = ?source,
            file = %new.path().display(),
            digest = &new.digest()[..12],
            code = ?new.code_source(),
            subscriptions = ?new.info().subscriptions,
            elapsed_ms = elapsed.as_millis() as u64,
            "plugin swapped"
        );
        Ok(Deployed {
            plugin: new,
            change: DeployChange::Swapped {
                from: replaced.plugin.version().to_owned(),
            },
            elapsed,
        })
    }

    /// Unbinds a plugin's queue, drains its runner and forgets it.
    async fn retire(&self, plugin: Arc<Plugin>) -> Result<Arc<Plugin>> {
        let name = plugin.name().to_owned();
        self.transport
            .unbind(&name, &plugin.info().subscriptions)
            .await
            .with_context(|| format!("cannot unbind plugin `{name}`'s queue"))?;
        self.dispatcher.retire(&name).await;
        let removed = self.registry.remove(&name).unwrap_or(plugin);
        removed.retire();
        self.stats.metrics().reload(&name, Reload::removed);
        tracing::info!(
            plugin = %name,
            version = removed.version(),
            file = %removed.path().display(),
            "plugin removed; its queue keeps the messages it holds"
        );
        Ok(removed)
    }
}

/// Bytes written beside their destination under a hidden temporary name (the watcher ignores
/// it), to be renamed into place in one step.
struct Staged(tempfile::TempPath);

async fn stage(file: &Path, bytes: &Arc<[u8]>) -> Result<Staged> {
    let dir = file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let bytes = Arc::clone(bytes);
    let staged = tokio::task::spawn_blocking(move || -> Result<Staged> {
        use std::io::Write as _;
        let mut temp = tempfile::Builder::new()
            .prefix(".courier-upload-")
            .tempfile_in(&dir)
            .with_context(|| format!("cannot write into {}", dir.display()))?;
        temp.write_all(&bytes)?;
        temp.as_file().sync_all()?;
        Ok(Staged(temp.into_temp_path()))
    })
    .await
    .context("writing the plugin file was cancelled")??;
    Ok(staged)
}

impl Staged {
    async fn put_in_place(self, file: &Path) -> Result<()> {
        let file = file.to_owned();
        tokio::task::spawn_blocking(move || {
            self.0
                .persist(&file)
                .with_context(|| format!("cannot write {}", file.display()))
        })
        .await
        .context("writing the plugin file was cancelled")??;
        Ok(())
    }
}

/// Files refused because another file serves the name they declare, by that name.
pub(super) type Waiting = std::sync::Mutex<HashMap<String, PathBuf>>;
