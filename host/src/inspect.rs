//! `courier inspect FILE.wasm`: what a component is, imports and exports, and — for a Courier
//! plugin — what it says about itself (for a component of a foreign world, what its sidecar's
//! `[foreign]` table says).

use std::fmt;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;
use wasmtime::component::Component;

use crate::config::{PluginOverrides, PluginSettings};
use crate::engine::CourierEngine;
use crate::plugin::{HANDLER_EXPORT, Plugin};
use crate::sandbox::foreign::World;

/// What `inspect` found.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub file: String,
    pub size_bytes: u64,
    /// The world the component targets, when Courier recognises it.
    pub world: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub subscriptions: Vec<String>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Why the host would refuse it, if it would.
    pub refusal: Option<String>,
}

/// Inspects a component file.
pub fn inspect(engine: &CourierEngine, path: &Path) -> Result<Inspection> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let component = Component::new(engine.engine(), &bytes).map_err(|e| {
        anyhow!(
            "{} is not a valid WebAssembly component: {e:#}",
            path.display()
        )
    })?;
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine.engine())
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports: Vec<String> = ty
        .exports(engine.engine())
        .map(|(name, _)| name.to_owned())
        .collect();
    let mut inspection = Inspection {
        file: path.display().to_string(),
        size_bytes: bytes.len() as u64,
        world: World::of(&component, engine.engine()).map(|world| world.name().to_owned()),
        name: None,
        version: None,
        subscriptions: Vec::new(),
        imports,
        exports,
        refusal: None,
    };
    // A foreign component is described by its sidecar, if it has one beside it.
    let sidecar = path.with_extension("toml");
    let overrides = if sidecar.is_file() {
        PluginOverrides::from_file(&sidecar).map(Some)
    } else {
        Ok(None)
    };
    let loaded = overrides.and_then(|overrides| {
        let foreign = overrides.as_ref().and_then(|o| o.foreign.as_ref());
        Plugin::from_bytes_with(engine, &bytes, path, foreign, |_| {
            Ok(PluginSettings::default())
        })
    });
    match loaded {
        Ok(plugin) => {
            inspection.name = Some(plugin.name().to_owned());
            inspection.version = Some(plugin.version().to_owned());
            inspection.subscriptions = plugin.info().subscriptions.clone();
        }
        Err(error) => inspection.refusal = Some(format!("{error:#}")),
    }
    Ok(inspection)
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "file:          {} ({} bytes)",
            self.file, self.size_bytes
        )?;
        match &self.world {
            Some(world) => writeln!(f, "world:         {world}")?,
            None => writeln!(
                f,
                "world:         not a Courier plugin (no `{HANDLER_EXPORT}` export, nor a \
                 foreign handler)"
            )?,
        }
        if let (Some(name), Some(version)) = (&self.name, &self.version) {
            writeln!(f, "plugin:        {name} {version}")?;
        }
        if !self.subscriptions.is_empty() {
            writeln!(f, "subscriptions:")?;
            for s in &self.subscriptions {
                writeln!(f, "  {s}")?;
            }
        }
        writeln!(f, "imports:")?;
        for i in &self.imports {
            writeln!(f, "  {i}")?;
        }
        writeln!(f, "exports:")?;
        for e in &self.exports {
            writeln!(f, "  {e}")?;
        }
        if let Some(refusal) = &self.refusal {
            writeln!(f, "refused:       {refusal}")?;
        }
        Ok(())
    }
}
