//! A core WebAssembly module that implements a WIT world (what clang makes of a C plugin) made
//! a component: the world's type information embedded, and the module's WASI preview 1
//! imports adapted to WASI 0.2 by the reactor adapter built for the wasmtime the host runs on.
//! This is what `wasm-tools component embed` and `wasm-tools component new --adapt` do; shared
//! by `courier component new` and xtask's build of the C plugins.

use anyhow::Result;
use wit_parser::{Resolve, WorldId};

/// The component of `module`, which implements `world` of `resolve`.
pub fn component_from_module(resolve: &Resolve, world: WorldId, module: &[u8]) -> Result<Vec<u8>> {
    let mut module = module.to_vec();
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)?
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
}
