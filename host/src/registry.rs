//! The loaded plugins, by name. Each name holds its current version in an `ArcSwap`, so a
//! message in flight keeps the version it started on while the next one sees a newer one.

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

/// Loaded plugins by name.
#[derive(Debug)]
pub struct Registry {
    engine: CourierEngine,
    config: Arc<HostConfig>,
    plugins: RwLock<BTreeMap<String, Arc<PluginSlot>>>,
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
    pub fn compile(&self, path: &Path) -> Result<Plugin> {
        let sidecar_path = path.with_extension("toml");
        let sidecar = if sidecar_path.is_file() {
            Some(
                PluginOverrides::from_file(&sidecar_path)
                    .with_context(|| format!("plugin {} refused", path.display()))?,
            )
        } else {
            None
        };
        Plugin::load(&self.engine, path, |info| {
            self.config.plugin_settings(
                &info.name,
                sidecar.as_ref().map(|s| (sidecar_path.as_path(), s)),
            )
        })
    }

    /// Registers a plugin under its name. Refused: a name already taken, and a plugin whose
    /// concurrency the engine's instance pool cannot hold beside the others'.
    pub fn register(&self, plugin: Plugin) -> Result<Arc<PluginSlot>> {
        let mut plugins = self.plugins.write().unwrap_or_else(PoisonError::into_inner);
        // Each message in flight holds one instance; one more is kept for loading and inspecting.
        let taken: u64 = plugins
            .values()
            .map(|slot| u64::from(slot.load().settings().concurrency))
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
        if let Some(existing) = plugins.get(plugin.name()) {
            bail!(
                "plugin {} refused: its name `{}` is already taken by {}",
                plugin.path().display(),
                plugin.name(),
                existing.load().path().display()
            );
        }
        let slot = Arc::new(ArcSwap::from_pointee(plugin));
        plugins.insert(slot.load().name().to_owned(), Arc::clone(&slot));
        Ok(slot)
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
            .cloned()
    }

    /// The current version of every plugin, by name.
    pub fn current(&self) -> Vec<Arc<Plugin>> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|slot| slot.load_full())
            .collect()
    }
}
