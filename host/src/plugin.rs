//! A loaded plugin: compiled once into an `InstancePre`, checked at load, described by
//! itself, and invoked once per message in a store of its own.
//!
//! Handler calls are asynchronous underneath (the engine's asynchronous linker, the guest on a
//! fiber): the guest yields at every epoch tick and is interrupted at its deadline, measured in
//! wall time from the start of the call. [`Plugin::invoke`] drives such a call to its end on
//! the calling thread.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use sha2::{Digest, Sha256};
use wasmtime::{Store, Trap};

use crate::config::{ForeignConfig, InstancePolicy, PluginSettings};
use crate::engine::{CodeSource, CourierEngine};
use crate::envelope::{Envelope, now_ms, validate_message_type};
use crate::outbox::Parent;
use crate::sandbox::bindings::courier::bus::types as wit;
use crate::sandbox::foreign::{Instance, Pre, World};
use crate::sandbox::{HostState, PluginIdentity};
use crate::transport::Outbound;

/// The export of a Courier plugin. (A component written for a foreign messaging world exports
/// that world's handler instead; see [`World`].)
pub const HANDLER_EXPORT: &str = "courier:bus/handler@0.1.0";

/// Headers the host writes on every follow-up: the plugin, and the version of it, that
/// handled the message the follow-up came from. Set after the handler ran, so a handler
/// cannot write them itself.
pub const HANDLED_BY_HEADER: &str = "courier-handled-by";
pub const HANDLED_BY_VERSION_HEADER: &str = "courier-handled-by-version";

/// The refusal of a component of a foreign world whose sidecar does not say who it is.
#[derive(Debug, thiserror::Error)]
#[error(
    "it is written for {}, which cannot say its name or subscriptions: give them in its \
     sidecar `{}` under [foreign] (name, version, subscriptions)",
    world.name(),
    sidecar.file_name().unwrap_or_default().to_string_lossy()
)]
pub struct NoForeignTable {
    pub world: World,
    pub sidecar: PathBuf,
}

/// What a plugin says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub subscriptions: Vec<String>,
}

/// How one handler call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `Ok`: release the outbox, then ack.
    Handled,
    /// `Err(retry)`: a transient failure.
    Retry(String),
    /// `Err(reject)`: a permanent failure.
    Reject(String),
    /// The instance trapped (a panic, the deadline, the memory cap): transient, and the
    /// instance is never used again.
    Trapped(String),
}

/// The result of one handler call: its outcome and what it staged in the outbox.
#[derive(Debug)]
pub struct Invocation {
    pub outcome: Outcome,
    pub outbox: Vec<Outbound>,
    /// How long creating the instance took, when the call created one.
    pub instantiation: Option<Duration>,
    /// The instance's linear memory when the call ended, in bytes (0 if it was never created).
    pub memory_bytes: u64,
}

/// A reusable instance (for `instance = "reuse"`), with the number of messages it handled.
struct Warm {
    store: Store<HostState>,
    bindings: Instance,
    uses: u64,
}

/// A plugin ready to handle messages.
pub struct Plugin {
    info: PluginInfo,
    path: PathBuf,
    digest: String,
    code: CodeSource,
    loaded_at_ms: u64,
    counts: VersionCounts,
    /// Set once a newer version replaced this one: its instances are no longer kept warm.
    retired: AtomicBool,
    settings: PluginSettings,
    identity: Arc<PluginIdentity>,
    /// Pre-instantiated against the asynchronous linker, for handler calls.
    pre: Pre,
    engine: CourierEngine,
    warm: Mutex<Vec<Warm>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("info", &self.info)
            .field("path", &self.path)
            .field("digest", &self.digest)
            .field("world", &self.pre.world())
            .finish_non_exhaustive()
    }
}

/// Handler calls made on one version of a plugin.
#[derive(Debug, Default)]
pub struct VersionCounts {
    handled: AtomicU64,
    failed: AtomicU64,
}

impl VersionCounts {
    /// Calls that returned `Ok`.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Calls that failed (an error returned or a trap), retried ones included.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Deadline for `describe` at load time: generous, since it runs once.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(10);

impl Plugin {
    /// Loads the Courier plugin in `path`. `settings_for` gives the settings of the plugin
    /// once its name is known. Every error names the file and the problem.
    pub fn load(
        engine: &CourierEngine,
        path: &Path,
        settings_for: impl FnOnce(&PluginInfo) -> Result<PluginSettings>,
    ) -> Result<Plugin> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read plugin {}", path.display()))?;
        Self::from_bytes(engine, &bytes, path, settings_for)
            .with_context(|| format!("plugin {} refused", path.display()))
    }

    /// Loads a Courier plugin from its bytes; `path` names it in errors.
    pub fn from_bytes(
        engine: &CourierEngine,
        bytes: &[u8],
        path: &Path,
        settings_for: impl FnOnce(&PluginInfo) -> Result<PluginSettings>,
    ) -> Result<Plugin> {
        Self::from_bytes_with(engine, bytes, path, None, settings_for)
    }

    /// Loads a plugin of any world from its bytes. `foreign` is the `[foreign]` table of its
    /// sidecar, which a component of a foreign world needs and a Courier plugin must not have.
    pub fn from_bytes_with(
        engine: &CourierEngine,
        bytes: &[u8],
        path: &Path,
        foreign: Option<&ForeignConfig>,
        settings_for: impl FnOnce(&PluginInfo) -> Result<PluginSettings>,
    ) -> Result<Plugin> {
        let (component, code) = engine
            .compile(bytes)
            .map_err(|e| anyhow!("not a valid WebAssembly component: {}", first_line(&e)))?;
        let missing_imports =
            |e: wasmtime::Error| anyhow!("it needs imports the host does not provide: {e:#}");
        let instance_pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(missing_imports)?;
        let instance_pre_async = engine
            .linker_async()
            .instantiate_pre(&component)
            .map_err(missing_imports)?;
        let world = World::of(&component, engine.engine()).ok_or_else(|| {
            anyhow!(
                "it does not export `{HANDLER_EXPORT}` (with describe and handle), nor the \
                 handler of a foreign world (`{}` or `{}`)",
                World::WasiMessaging.export(),
                World::WasmcloudMessaging.export()
            )
        })?;
        let wrong_export = |e: wasmtime::Error| {
            anyhow!(
                "its `{}` export is not the one the host knows: {e:#}",
                world.export()
            )
        };
        // `describe` and the instantiation check run once, through the synchronous linker.
        let pre_at_load = Pre::new(world, instance_pre).map_err(wrong_export)?;
        let pre = Pre::new(world, instance_pre_async).map_err(wrong_export)?;

        let provisional = Arc::new(identity_for("(loading)", "", &PluginSettings::default()));
        let info = match (world.is_foreign(), foreign) {
            (false, None) => describe(engine, &pre_at_load, provisional)?,
            (false, Some(_)) => bail!(
                "its sidecar has a [foreign] table, but it is a Courier plugin and describes \
                 itself: remove the table"
            ),
            (true, None) => bail!(NoForeignTable {
                world,
                sidecar: path.with_extension("toml"),
            }),
            (true, Some(foreign)) => {
                let info = foreign_info(foreign)?;
                check_instantiates(engine, &pre_at_load, provisional)?;
                info
            }
        };
        let settings = settings_for(&info)?;
        Ok(Plugin {
            identity: Arc::new(identity_for(&info.name, &info.version, &settings)),
            digest: hex_digest(bytes),
            code,
            loaded_at_ms: now_ms(),
            counts: VersionCounts::default(),
            retired: AtomicBool::new(false),
            path: path.to_owned(),
            engine: engine.clone(),
            warm: Mutex::new(Vec::new()),
            info,
            settings,
            pre,
        })
    }

    /// The world the plugin is written for.
    pub fn world(&self) -> World {
        self.pre.world()
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn version(&self) -> &str {
        &self.info.version
    }

    /// Name and version, as metrics and counters label a plugin.
    pub fn label(&self) -> (&str, &str) {
        (&self.info.name, &self.info.version)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the component's bytes, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    /// Whether this version's code was compiled or read from the cache.
    pub fn code_source(&self) -> CodeSource {
        self.code
    }

    /// When this version was loaded, in milliseconds since the Unix epoch.
    pub fn loaded_at_ms(&self) -> u64 {
        self.loaded_at_ms
    }

    /// What this version did so far.
    pub fn counts(&self) -> &VersionCounts {
        &self.counts
    }

    /// Drops the instances kept warm, returning their slots to the engine's pool: called once a
    /// newer version replaced this one. A message still in flight on it finishes normally.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.warm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Whether the plugin has a handler for `message_type`.
    pub fn handles(&self, message_type: &str) -> bool {
        self.info.subscriptions.iter().any(|s| s == message_type)
    }

    /// Handles one message consumed from `queue`, on the calling thread, bounded by the
    /// plugin's deadline.
    pub fn invoke(&self, envelope: &Envelope, queue: &str) -> Invocation {
        let message = to_wit(envelope);
        let parent = Parent::of(envelope, queue);
        let invocation = run_to_end(async {
            match self.settings.instance {
                InstancePolicy::Fresh => self.invoke_in_fresh(&message, parent).await,
                InstancePolicy::Reuse => self.invoke_warm(&message, parent).await,
            }
        });
        self.signed(invocation)
    }

    /// Handles one message on a new instance, whatever the instance policy: an immediate
    /// retry never runs where the failure happened.
    pub fn invoke_fresh(&self, envelope: &Envelope, queue: &str) -> Invocation {
        let message = to_wit(envelope);
        let parent = Parent::of(envelope, queue);
        let invocation = run_to_end(self.invoke_in_fresh(&message, parent));
        self.signed(invocation)
    }

    /// Counts the call, and marks every follow-up with the version that produced it.
    fn signed(&self, mut invocation: Invocation) -> Invocation {
        let counter = match invocation.outcome {
            Outcome::Handled => &self.counts.handled,
            _ => &self.counts.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        for outbound in &mut invocation.outbox {
            let envelope = &mut outbound.envelope;
            envelope.set_header(HANDLED_BY_HEADER, self.info.name.clone());
            envelope.set_header(HANDLED_BY_VERSION_HEADER, self.info.version.clone());
        }
        invocation
    }

    async fn invoke_in_fresh(&self, message: &wit::Message, parent: Parent) -> Invocation {
        let started = Instant::now();
        let mut store = self.new_store();
        store
            .data_mut()
            .begin(parent, started + self.settings.deadline);
        let instance = self.pre.instantiate_async(&mut store).await;
        let instantiation = Some(started.elapsed());
        let result = match instance {
            Ok(bindings) => bindings.handle(&mut store, message).await,
            Err(error) => Err(error),
        };
        let outbox = store.data_mut().finish();
        let memory_bytes = store.data().linear_memory_bytes();
        drop(store);
        Invocation {
            outcome: self.outcome(result),
            outbox,
            instantiation,
            memory_bytes,
        }
    }

    async fn invoke_warm(&self, message: &wit::Message, parent: Parent) -> Invocation {
        // Creating the instance, if the call needs one, counts against its deadline.
        let started = Instant::now();
        let deadline_at = started + self.settings.deadline;
        let pooled = self
            .warm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut instantiation = None;
        let warm = match pooled {
            Some(warm) => Ok(warm),
            None => {
                let mut store = self.new_store();
                // Instantiating runs the guest's start functions: the deadline bounds them.
                store.data_mut().arm_deadline(deadline_at);
                let created = self
                    .pre
                    .instantiate_async(&mut store)
                    .await
                    .map(|bindings| Warm {
                        store,
                        bindings,
                        uses: 0,
                    });
                instantiation = Some(started.elapsed());
                created
            }
        };
        let mut warm = match warm {
            Ok(warm) => warm,
            Err(error) => {
                return Invocation {
                    outcome: self.outcome(Err(error)),
                    outbox: Vec::new(),
                    instantiation,
                    memory_bytes: 0,
                };
            }
        };
        warm.store.data_mut().begin(parent, deadline_at);
        // The epoch deadline its last call left may be long past: the next tick, as for a
        // new store, so the call does not yield at its first function.
        warm.store.set_epoch_deadline(1);
        let result = warm.bindings.handle(&mut warm.store, message).await;
        let outbox = warm.store.data_mut().finish();
        let memory_bytes = warm.store.data().linear_memory_bytes();
        warm.uses += 1;
        let outcome = self.outcome(result);
        // A trapped instance is never used again, nor one that has handled its share or grown
        // too large; dropping it returns its slot to the pool.
        if !matches!(outcome, Outcome::Trapped(_))
            && warm.uses < self.settings.recycle_after
            && self
                .settings
                .recycle_above_bytes
                .is_none_or(|limit| memory_bytes <= limit)
            && !self.retired.load(Ordering::SeqCst)
        {
            self.warm
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(warm);
        }
        Invocation {
            outcome,
            outbox,
            instantiation,
            memory_bytes,
        }
    }

    /// A store for handler calls: the guest yields to the executor at every epoch tick, and
    /// is interrupted (`Trap::Interrupt`) once the deadline its data holds has passed.
    fn new_store(&self) -> Store<HostState> {
        let mut store = Store::new(
            self.engine.engine(),
            HostState::new(Arc::clone(&self.identity)),
        );
        store.limiter(|state| state.limiter());
        store.epoch_deadline_callback(|mut context| Ok(context.data_mut().on_epoch_tick()));
        store.set_epoch_deadline(1);
        store
    }

    fn outcome(&self, result: wasmtime::Result<Result<(), wit::HandleError>>) -> Outcome {
        match result {
            Ok(Ok(())) => Outcome::Handled,
            Ok(Err(wit::HandleError::Retry(reason))) => Outcome::Retry(reason),
            Ok(Err(wit::HandleError::Reject(reason))) => Outcome::Reject(reason),
            Err(error) => Outcome::Trapped(describe_trap(&error, self.settings.deadline)),
        }
    }
}

/// A store for the calls made at load time, through the synchronous linker: the call traps
/// once `ticks` epoch ticks have passed.
fn new_store_at_load(
    engine: &CourierEngine,
    identity: Arc<PluginIdentity>,
    ticks: u64,
) -> Store<HostState> {
    let mut store = Store::new(engine.engine(), HostState::new(identity));
    store.limiter(|state| state.limiter());
    store.epoch_deadline_trap();
    store.set_epoch_deadline(ticks);
    store
}

/// Creates one instance in a store of its own, as a check that the component can start.
fn check_instantiates(
    engine: &CourierEngine,
    pre: &Pre,
    identity: Arc<PluginIdentity>,
) -> Result<(Store<HostState>, Instance)> {
    let mut store = new_store_at_load(engine, identity, engine.ticks_for(DESCRIBE_DEADLINE));
    let instance = pre.instantiate(&mut store).map_err(|e| {
        anyhow!(
            "it cannot be instantiated: {}",
            describe_trap(&e, DESCRIBE_DEADLINE)
        )
    })?;
    Ok((store, instance))
}

/// The self-description of a foreign component, from its sidecar, checked as `describe`'s
/// answer is.
fn foreign_info(foreign: &ForeignConfig) -> Result<PluginInfo> {
    let info = PluginInfo {
        name: foreign.name.clone(),
        version: foreign.version.clone(),
        subscriptions: foreign.subscriptions.clone(),
    };
    validate_info(&info, "it gives").context("in its sidecar's [foreign] table")?;
    for (message_type, endpoint) in &foreign.send_to {
        validate_message_type(message_type).map_err(|e| anyhow!("[foreign] send_to: {e}"))?;
        if endpoint.trim().is_empty() {
            bail!("[foreign] send_to: the endpoint of {message_type} is empty");
        }
    }
    if let Some(content_type) = &foreign.content_type
        && !crate::envelope::is_known_content_type(content_type)
    {
        bail!(
            "[foreign] content_type = `{content_type}` is not supported: use \
             application/msgpack or application/json"
        );
    }
    Ok(info)
}

/// Calls `describe` in a store of its own and checks the answer.
fn describe(
    engine: &CourierEngine,
    pre: &Pre,
    identity: Arc<PluginIdentity>,
) -> Result<PluginInfo> {
    let (mut store, instance) = check_instantiates(engine, pre, identity)?;
    let Instance::Courier(bindings) = instance else {
        bail!("only a Courier plugin describes itself");
    };
    let info = run_to_end(bindings.courier_bus_handler().call_describe(&mut store))
        .map_err(|e| anyhow!("describe failed: {}", describe_trap(&e, DESCRIBE_DEADLINE)))?;
    let info = PluginInfo {
        name: info.name,
        version: info.version,
        subscriptions: info.subscriptions,
    };
    validate_info(&info, "describe returned")?;
    Ok(info)
}

/// A plugin's self-description must give a usable queue name, a version, and at least one
/// message type, each handled once. `source` says where it came from.
fn validate_info(info: &PluginInfo, source: &str) -> Result<()> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 200
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        bail!(
            "{source} the name `{}`: a plugin name is 1 to 200 of the characters A-Z a-z 0-9 - _ .",
            info.name
        );
    }
    if info.version.trim().is_empty() {
        bail!("{source} an empty version for plugin `{}`", info.name);
    }
    if info.subscriptions.is_empty() {
        bail!("plugin `{}` subscribes to no message type", info.name);
    }
    let mut seen = HashSet::new();
    for message_type in &info.subscriptions {
        validate_message_type(message_type).map_err(|e| anyhow!("plugin `{}`: {e}", info.name))?;
        if !seen.insert(message_type) {
            bail!(
                "plugin `{}` has two handlers for {message_type}: one handler per message type",
                info.name
            );
        }
    }
    Ok(())
}

fn identity_for(name: &str, version: &str, settings: &PluginSettings) -> PluginIdentity {
    PluginIdentity {
        name: name.to_owned(),
        version: version.to_owned(),
        config: settings.config.clone(),
        max_publishes: settings.max_publishes,
        max_message_bytes: settings.max_message_bytes,
        memory_bytes: settings.memory_bytes,
        send_to: settings
            .foreign
            .as_ref()
            .map(|f| f.send_to.clone())
            .unwrap_or_default(),
        content_type: settings
            .foreign
            .as_ref()
            .and_then(|f| f.content_type.clone()),
    }
}

/// Drives a call to its end on the calling thread. WASI's asynchronous functions need a Tokio
/// runtime for their timers and streams: the caller's if it runs in one (a lane is a thread of
/// the host's blocking pool), else wasmtime-wasi's own.
fn run_to_end<F: std::future::Future>(call: F) -> F::Output {
    wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| futures_lite::future::block_on(call))
}

/// Says why an instance trapped, in words an operator can act on.
fn describe_trap(error: &wasmtime::Error, deadline: Duration) -> String {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!("deadline of {} ms exceeded", deadline.as_millis()),
        Some(trap) => format!("trap: {trap}"),
        // A host-raised trap (such as the memory cap) is the root of a chain whose outer
        // links are the wasm backtrace.
        None => error.root_cause().to_string(),
    }
}

/// The error chain on one line, without a backtrace.
fn first_line(error: &anyhow::Error) -> String {
    format!("{error:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn to_wit(envelope: &Envelope) -> wit::Message {
    wit::Message {
        id: envelope.id.clone(),
        message_type: envelope.message_type.clone(),
        content_type: envelope.content_type.clone(),
        body: envelope.body.clone(),
        correlation_id: envelope.correlation_id.clone(),
        conversation_id: envelope.conversation_id.clone(),
        initiator_id: envelope.initiator_id.clone(),
        session_id: envelope.session_id.clone(),
        reply_to: envelope.reply_to.clone(),
        source_address: envelope.source_address.clone(),
        sent_at_ms: envelope.sent_at_ms,
        expires_at_ms: envelope.expires_at_ms,
        attempt: envelope.attempt,
        headers: envelope.headers.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler call can run as a task on the runtime's workers: its future is `Send`.
    /// Checked by compiling; never called.
    #[allow(dead_code, reason = "a compile-time check")]
    fn handler_calls_can_be_spawned(plugin: &Plugin, message: &wit::Message, parent: Parent) {
        fn spawnable<T: Send>(_: T) {}
        spawnable(plugin.invoke_in_fresh(message, parent.clone()));
        spawnable(plugin.invoke_warm(message, parent));
    }

    fn info(name: &str, subscriptions: &[&str]) -> PluginInfo {
        PluginInfo {
            name: name.into(),
            version: "1.0.0".into(),
            subscriptions: subscriptions.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn descriptions_are_checked() {
        let valid = info("payment", &["urn:message:Orders:OrderPlaced"]);
        assert!(validate_info(&valid, "describe returned").is_ok());
        let cases = [
            (info("", &["urn:message:A:B"]), "a plugin name is"),
            (info("has space", &["urn:message:A:B"]), "a plugin name is"),
            (info("p", &[]), "subscribes to no message type"),
            (
                info("p", &["OrderPlaced"]),
                "must start with `urn:message:`",
            ),
            (
                info("p", &["urn:message:A:B", "urn:message:A:B"]),
                "two handlers",
            ),
        ];
        for (info, expected) in cases {
            let error = validate_info(&info, "describe returned")
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{info:?}: {error}");
        }
    }
}
