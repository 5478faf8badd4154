//! The loaded plugins, by name. Each name holds its current version in an `ArcSwap`, so a
//! message in flight keeps the version it started on while the next one sees a newer one, and
//! the version before it, kept for a rollback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::{Context as _, Result, bail};
use arc_swap::ArcSwap;

use crate::config::{HostConfig, PluginOverrides};
use crate::engine::CourierEngine;
use crate::plugin::Plugin;

/// The current version of one plugin.
pub type PluginSlot = ArcSwap<Plugin>;

/// One version of a plugin with the bytes it was compiled from, so that it can be written
/// back to the plugins directory when it becomes current again.
#[derive(Debug, Clone)]
pub struct Version {
    pub plugin: Arc<Plugin>,
    pub bytes: Arc<[u8]>,
}

impl Version {
    pub fn new(plugin: Plugin, bytes: Arc<[u8]>) -> Self {
        Version {
            plugin: Arc::new(plugin),
            bytes,
        }
    }
}

/// A plugin's name, with its current and previous versions.
#[derive(Debug)]
struct Entry {
    slot: Arc<PluginSlot>,
    current_bytes: Arc<[u8]>,
    previous: Option<Version>,
}

/// Loaded plugins by name.
#[derive(Debug)]
pub struct Registry {
    engine: CourierEngine,
    config: Arc<HostConfig>,
    plugins: RwLock<BTreeMap<String, Entry>>,
}

impl Registry {
    pub fn new(engine: CourierEngine, config: Arc<HostConfig>) -> Self {
        Registry {
            engine,
            config,
            plugins: RwLock::default(),
        }
    }

    /// Compiles and checks the plugin in `path`, with its sidecar `<stem>.toml` if there is one.
    /// Does not register it.
    pub fn compile(&self, path: &Path) -> Result<Version> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("plugin {} refused: cannot read it", path.display()))?;
        self.compile_bytes(bytes.into(), path)
    }

    /// Compiles and checks a plugin from its bytes, as if it were the file `path` (whose
    /// sidecar applies). Does not register it.
    pub fn compile_bytes(&self, bytes: Arc<[u8]>, path: &Path) -> Result<Version> {
        let sidecar_path = path.with_extension("toml");
        let sidecar = if sidecar_path.is_file() {
            Some(
                PluginOverrides::from_file(&sidecar_path)
                    .with_context(|| format!("plugin {} refused", path.display()))?,
            )
        } else {
            None
        };
        let foreign = sidecar.as_ref().and_then(|s| s.foreign.as_ref());
        let plugin = Plugin::from_bytes_with(&self.engine, &bytes, path, foreign, |info| {
            self.config.plugin_settings(
                &info.name,
                sidecar.as_ref().map(|s| (sidecar_path.as_path(), s)),
            )
        })
        .with_context(|| format!("plugin {} refused", path.display()))?;
        Ok(Version::new(plugin, bytes))
    }

    /// Checks that `plugin`'s concurrency fits in the engine's instance pool beside the other
    /// plugins' (its own current version, which it would replace, not counted).
    pub fn check_fits(&self, plugin: &Plugin) -> Result<()> {
        let plugins = self.plugins.read().unwrap_or_else(PoisonError::into_inner);
        // Each message in flight holds one instance; one more is kept for loading and inspecting.
        let taken: u64 = plugins
            .iter()
            .filter(|(name, _)| name.as_str() != plugin.name())
            .map(|(_, entry)| u64::from(entry.slot.load().settings().concurrency))
            .sum();
        let wanted = u64::from(plugin.settings().concurrency);
        let capacity = u64::from(self.config.engine.max_instances).saturating_sub(1);
        if taken + wanted > capacity {
            bail!(
                "plugin {} refused: its concurrency of {wanted} does not fit in the instance pool \
                 ({taken} of {capacity} taken by other plugins); raise engine.max_instances",
                plugin.path().display()
            );
        }
        Ok(())
    }

    /// Registers a plugin under a name not taken yet.
    pub fn register(&self, version: Version) -> Result<Arc<PluginSlot>> {
        self.check_fits(&version.plugin)?;
        let mut plugins = self.plugins.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = plugins.get(version.plugin.name()) {
            bail!(
                "plugin {} refused: its name `{}` is already taken by {}",
                version.plugin.path().display(),
                version.plugin.name(),
                existing.slot.load().path().display()
            );
        }
        let slot = Arc::new(ArcSwap::new(Arc::clone(&version.plugin)));
        plugins.insert(
            version.plugin.name().to_owned(),
            Entry {
                slot: Arc::clone(&slot),
                current_bytes: version.bytes,
                previous: None,
            },
        );
        Ok(slot)
    }

    /// Makes `version` the current version of its plugin; the one it replaces is kept as the
    /// previous version and returned. Messages in flight finish on the version they started on.
    pub fn swap(&self, version: Version) -> Result<Version> {
        let mut plugins = self.plugins.write().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = plugins.get_mut(version.plugin.name()) else {
            bail!("no plugin named `{}` is loaded", version.plugin.name());
        };
        let replaced = Version {
            plugin: entry.slot.swap(version.plugin),
            bytes: std::mem::replace(&mut entry.current_bytes, version.bytes),
        };
        entry.previous = Some(replaced.clone());
        Ok(replaced)
    }

    /// Undoes a [`Registry::swap`] whose version could not be started: `replaced` (what the
    /// swap returned) is current again and `previous` (what a rollback returned to before the
    /// swap) is the previous version again.
    pub fn restore(&self, replaced: Version, previous: Option<Version>) {
        let mut plugins = self.plugins.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = plugins.get_mut(replaced.plugin.name()) {
            entry.slot.store(replaced.plugin);
            entry.current_bytes = replaced.bytes;
            entry.previous = previous;
        }
    }

    /// Forgets a plugin; returns its current version.
    pub fn remove(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .map(|entry| entry.slot.load_full())
    }

    /// The version a rollback of `name` returns to.
    pub fn previous(&self, name: &str) -> Option<Version> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .and_then(|entry| entry.previous.clone())
    }

    /// The `.wasm` files of a plugins directory, in name order.
    pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read plugins directory {}", dir.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "wasm"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// A plugin by name.
    pub fn get(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(|entry| Arc::clone(&entry.slot))
    }

    /// The plugin whose current version was loaded from `path`.
    pub fn loaded_from(&self, path: &Path) -> Option<Arc<Plugin>> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|entry| entry.slot.load_full())
            .find(|plugin| plugin.path() == path)
    }

    /// The current version of every plugin, by name.
    pub fn current(&self) -> Vec<Arc<Plugin>> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|entry| entry.slot.load_full())
            .collect()
    }
}
