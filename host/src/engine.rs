//! The one WebAssembly engine of a host: pooling allocator, epoch deadlines, and the linkers
//! every plugin is instantiated against.
//!
//! There are two linkers with the same imports. Handler calls go through the asynchronous one:
//! its WASI functions are `async`, so a guest waiting on a clock or a stream waits in a future,
//! and the guest runs on a fiber of its own. `describe` and the check that a component
//! instantiates go through the synchronous one, where WASI blocks the calling thread: they run
//! once at load time, on a blocking thread (WASI's blocking calls panic on a runtime worker).
//!
//! Stores are dropped where they finish, not on a helper thread: measured here, handing them
//! to a dropper thread cost more (cross-thread frees contend on the allocator, and every hand-off
//! wakes a thread) than the reset it moved away: 9.8 µs per fresh instance inline against
//! 12–19 µs with the dropper (`cargo xtask bench --quick`).

use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::codecache::CodeCache;
use crate::config::EngineConfig;
use crate::sandbox::{HostState, bindings};

/// Core instances one component may create: a Rust component has a handful, an interpreter
/// (Python, JavaScript) a few more.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
/// Guard pages after each linear memory.
const MEMORY_GUARD_BYTES: u64 = 64 << 10;
/// Bytes of each linear memory kept resident between instances. With `PAGEMAP_SCAN` (Linux
/// 6.7+) only the pages a guest dirtied are reset, with a memset, which is cheaper than giving
/// them back to the kernel and faulting them in again on the next message.
const MEMORY_KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// How a linker's WASI functions wait.
#[derive(Clone, Copy)]
enum Wasi {
    Sync,
    Async,
}

/// A linker with every import the host provides: WASI (deny-by-default, see
/// [`HostState::new`]), `courier:bus`, and the foreign messaging worlds.
fn linker_with(engine: &Engine, wasi: Wasi) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    match wasi {
        Wasi::Sync => wasmtime_wasi::p2::add_to_linker_sync(&mut linker),
        Wasi::Async => wasmtime_wasi::p2::add_to_linker_async(&mut linker),
    }
    .map_err(anyhow::Error::from)
    .context("cannot link WASI")?;
    bindings::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
        .map_err(anyhow::Error::from)
        .context("cannot link the courier:bus imports")?;
    crate::sandbox::foreign::add_to_linker(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link the imports of the foreign messaging worlds")?;
    Ok(linker)
}

/// The engine, its tick, and the linkers with the host's imports.
#[derive(Clone)]
pub struct CourierEngine {
    engine: Engine,
    linker: Linker<HostState>,
    linker_async: Linker<HostState>,
    tick: Duration,
    /// The on-disk cache of compiled components, when on.
    cache: Option<CodeCache>,
}

/// Where a component's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeSource {
    /// Compiled now, and written to the cache.
    Compiled,
    /// Read from the cache: nothing was compiled.
    Cache,
    /// Compiled now; the cache is off (or could not store it).
    Uncached,
}

impl std::fmt::Debug for CourierEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CourierEngine")
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

/// The pooling allocator's knobs, chosen from the host configuration.
fn engine_config(settings: &EngineConfig) -> Config {
    let max_memory = settings.max_memory_mib << 20;
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(settings.max_instances)
        .total_core_instances(
            settings
                .max_instances
                .saturating_mul(CORE_INSTANCES_PER_COMPONENT),
        )
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(settings.max_instances.saturating_mul(2))
        .total_tables(settings.max_instances.saturating_mul(4))
        .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT_BYTES)
        .table_keep_resident(64 << 10)
        // A store keeps the fiber stack of its last call until it is dropped, so there is at
        // most one per store holding an instance: as many as there may be instances.
        .total_stacks(settings.max_instances)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
        .epoch_interruption(true)
        // Handler calls run on fibers, which need none of the machinery of the component
        // model's own concurrency (`run_concurrent`, streams, futures).
        .concurrency_support(false)
        // Reserve only what a memory may grow to, not 4 GiB per slot: with a thousand slots
        // the difference is terabytes of address space to map and unmap.
        .memory_reservation(max_memory)
        .memory_guard_size(MEMORY_GUARD_BYTES)
        .memory_reservation_for_growth(0)
        .memory_init_cow(true);
    config
}

impl CourierEngine {
    /// Builds the engine and starts the epoch tick that enforces deadlines.
    pub fn new(settings: &EngineConfig) -> Result<Self> {
        let engine = Engine::new(&engine_config(settings))
            .map_err(anyhow::Error::from)
            .context("cannot create the WebAssembly engine")?;
        let tick = Duration::from_millis(settings.epoch_tick_ms);

        let weak = engine.weak();
        thread::Builder::new()
            .name("courier-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    thread::sleep(tick);
                }
            })
            .context("cannot start the epoch thread")?;

        let linker = linker_with(&engine, Wasi::Sync)?;
        let linker_async = linker_with(&engine, Wasi::Async)?;

        let cache = if settings.cache {
            let dir = std::path::absolute(&settings.cache_dir).with_context(|| {
                format!(
                    "engine.cache_dir: cannot resolve {}",
                    settings.cache_dir.display()
                )
            })?;
            Some(CodeCache::open(
                &dir,
                &engine,
                settings.cache_max_mib.saturating_mul(1 << 20),
            )?)
        } else {
            None
        };

        Ok(CourierEngine {
            engine,
            linker,
            linker_async,
            tick,
            cache,
        })
    }

    /// Compiles a component, or reads its code from the cache.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, CodeSource)> {
        let Some(cache) = &self.cache else {
            let component = Component::new(&self.engine, bytes).map_err(anyhow::Error::from)?;
            return Ok((component, CodeSource::Uncached));
        };
        if let Some(component) = cache.load(&self.engine, bytes) {
            return Ok((component, CodeSource::Cache));
        }
        let component = Component::new(&self.engine, bytes).map_err(anyhow::Error::from)?;
        match cache.store(bytes, &component) {
            Ok(()) => Ok((component, CodeSource::Compiled)),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot keep the compiled plugin in the cache"
                );
                Ok((component, CodeSource::Uncached))
            }
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker whose WASI blocks the calling thread, for calls made once at load time.
    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// The linker whose WASI is asynchronous, for handler calls.
    pub fn linker_async(&self) -> &Linker<HostState> {
        &self.linker_async
    }

    /// Epoch ticks that cover `deadline` (at least one).
    pub fn ticks_for(&self, deadline: Duration) -> u64 {
        let tick = self.tick.as_nanos().max(1);
        u64::try_from(deadline.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .max(1)
    }
}
