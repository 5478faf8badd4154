//! What a plugin instance can reach: the state of its store, and the host side of the
//! `courier:bus` imports (bus, log, config). WASI is linked deny-by-default: no preopened
//! directory, no socket, no environment, no arguments; stdout and stderr become log events.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use wasmtime::{ResourceLimiter, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::outbox::{Outbox, Parent};
use crate::transport::Route;

pub mod foreign;

/// Host bindings generated from Courier's own WIT package in `wit/`. The exports are called
/// asynchronously (the guest runs on a fiber); the imports are synchronous host functions.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        exports: { default: async },
    });
}

use bindings::courier::bus::types::{BusError, Level, Outgoing};

/// Who the instance belongs to: fixed for the life of a loaded plugin version.
#[derive(Debug)]
pub struct PluginIdentity {
    pub name: String,
    pub version: String,
    pub config: BTreeMap<String, String>,
    pub max_publishes: u32,
    pub max_message_bytes: u64,
    pub memory_bytes: u64,
    /// For a component of a foreign world: the endpoints of the message types it sends as
    /// commands, and the content type of what it sends without saying.
    pub send_to: BTreeMap<String, String>,
    pub content_type: Option<String>,
}

/// The data of one store: WASI, the resource limits, and the call in progress.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limits,
    identity: Arc<PluginIdentity>,
    /// The id of the message being handled, shared with the guest's output streams.
    current: Arc<Mutex<String>>,
    /// The consumed message, while `handle` runs; `None` during `describe`.
    parent: Option<Parent>,
    outbox: Outbox,
    /// What the host holds for a component of a foreign world.
    foreign: foreign::Held,
    /// When the handler call in progress must end (see [`HostState::on_epoch_tick`]).
    deadline_at: Option<Instant>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("plugin", &self.identity.name)
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

impl HostState {
    /// A store's data for `identity`, deny-by-default.
    pub fn new(identity: Arc<PluginIdentity>) -> Self {
        let current = Arc::new(Mutex::new(String::new()));
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(GuestOutput::new(&identity, &current, "stdout"))
            .stderr(GuestOutput::new(&identity, &current, "stderr"));
        let limits = Limits {
            memory_bytes: usize::try_from(identity.memory_bytes).unwrap_or(usize::MAX),
            linear_bytes: 0,
            pending_bytes: 0,
            held_bytes: 0,
        };
        HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits,
            outbox: Outbox::new(identity.max_publishes, identity.max_message_bytes),
            identity,
            current,
            parent: None,
            foreign: foreign::Held::default(),
            deadline_at: None,
        }
    }

    /// Sets when the call about to start must end.
    pub fn arm_deadline(&mut self, at: Instant) {
        self.deadline_at = Some(at);
    }

    /// What the guest does at an epoch tick of a handler call: yield to the executor, or,
    /// once the deadline has passed, stop (wasmtime raises `Trap::Interrupt`). The deadline
    /// is wall time from the start of the call, so time the guest spent waiting in a host
    /// function (a WASI clock) counts as surely as time it spent computing.
    pub fn on_epoch_tick(&mut self) -> UpdateDeadline {
        match self.deadline_at {
            Some(at) if Instant::now() < at => UpdateDeadline::Yield(1),
            // Past the deadline, or a call whose deadline was never armed.
            _ => UpdateDeadline::Interrupt,
        }
    }

    /// Prepares the state for handling one message, which must end by `deadline_at`.
    pub fn begin(&mut self, parent: Parent, deadline_at: Instant) {
        self.arm_deadline(deadline_at);
        parent
            .id
            .clone_into(&mut self.current.lock().unwrap_or_else(PoisonError::into_inner));
        self.outbox.clear();
        self.foreign.begin();
        self.parent = Some(parent);
    }

    /// Ends the call: what the handler published, to be released only if it succeeded.
    pub fn finish(&mut self) -> Vec<crate::transport::Outbound> {
        self.parent = None;
        self.outbox.take()
    }

    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    /// The instance's memory, in bytes: its linear memories together, plus the messages the
    /// host holds for it (a component of a foreign world builds its messages in the host).
    pub fn linear_memory_bytes(&self) -> u64 {
        (self.limits.linear_bytes + self.limits.held_bytes) as u64
    }

    fn stage(&mut self, route: Route, message: Outgoing) -> Result<String, BusError> {
        let Some(parent) = &self.parent else {
            return Err(BusError::Denied(
                "messages can only be published while handling one".into(),
            ));
        };
        self.outbox.push(parent, route, message)
    }
}

/// Most elements a guest table may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The per-plugin memory cap. Growing past it traps with a message that says so, rather than
/// failing the allocation quietly inside the guest. Also adds up the sizes the instance's
/// memories have grown to (wasmtime asks here when it creates a memory, growing it from zero).
struct Limits {
    memory_bytes: usize,
    linear_bytes: usize,
    /// The growth last allowed, taken back if wasmtime then fails to grow the memory.
    pending_bytes: usize,
    /// What the host holds for the instance (the messages a foreign component builds), counted
    /// against the cap beside its memory.
    held_bytes: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired.saturating_add(self.held_bytes) > self.memory_bytes {
            if self.held_bytes > 0 {
                wasmtime::bail!(
                    "memory cap exceeded: the handler asked for {} KiB beside {} KiB of messages \
                     held in the host, its cap is {} KiB",
                    desired >> 10,
                    self.held_bytes >> 10,
                    self.memory_bytes >> 10
                );
            }
            wasmtime::bail!(
                "memory cap exceeded: the handler asked for {} KiB, its cap is {} KiB",
                desired >> 10,
                self.memory_bytes >> 10
            );
        }
        self.pending_bytes = desired.saturating_sub(current);
        self.linear_bytes += self.pending_bytes;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.linear_bytes -= std::mem::take(&mut self.pending_bytes);
        tracing::debug!(
            error = format!("{error:#}"),
            "a guest memory could not grow"
        );
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::courier::bus::types::Host for HostState {}

impl bindings::courier::bus::bus::Host for HostState {
    fn publish(&mut self, message: Outgoing) -> Result<String, BusError> {
        self.stage(Route::Publish, message)
    }

    fn send(&mut self, destination: String, message: Outgoing) -> Result<String, BusError> {
        if destination.trim().is_empty() {
            return Err(BusError::Invalid(
                "the destination endpoint is empty".into(),
            ));
        }
        self.stage(Route::Send(destination), message)
    }

    fn reply(&mut self, message: Outgoing) -> Result<String, BusError> {
        let reply_to = self.parent.as_ref().and_then(|p| p.reply_to.clone());
        match reply_to {
            Some(endpoint) => self.stage(Route::Send(endpoint), message),
            None => Err(BusError::Invalid(
                "the consumed message has no reply-to address".into(),
            )),
        }
    }
}

/// One guest log line. While a message is handled, the message's span names the plugin, the
/// version and the message; otherwise (in `describe`) the line names the plugin itself.
macro_rules! guest_event {
    ($level:expr, $state:expr, $message:expr) => {
        if $state.parent.is_some() {
            tracing::event!(target: "courier::guest", $level, "{}", $message)
        } else {
            tracing::event!(
                target: "courier::guest",
                $level,
                plugin = $state.identity.name.as_str(),
                version = $state.identity.version.as_str(),
                "{}",
                $message
            )
        }
    };
}

impl bindings::courier::bus::log::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        match level {
            Level::Trace => guest_event!(tracing::Level::TRACE, self, message),
            Level::Debug => guest_event!(tracing::Level::DEBUG, self, message),
            Level::Info => guest_event!(tracing::Level::INFO, self, message),
            Level::Warn => guest_event!(tracing::Level::WARN, self, message),
            Level::Error => guest_event!(tracing::Level::ERROR, self, message),
        }
    }
}

impl bindings::courier::bus::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.identity.config.get(&key).cloned()
    }
}

/// Longest line kept from guest output; the rest of an overlong line is cut.
const MAX_OUTPUT_LINE: usize = 8 << 10;

/// A guest's stdout or stderr: each complete line becomes a `tracing` event tagged with the
/// plugin and the message being handled.
#[derive(Clone)]
struct GuestOutput {
    plugin: Arc<str>,
    stream: &'static str,
    current: Arc<Mutex<String>>,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl GuestOutput {
    fn new(identity: &PluginIdentity, current: &Arc<Mutex<String>>, stream: &'static str) -> Self {
        GuestOutput {
            plugin: identity.name.as_str().into(),
            stream,
            current: Arc::clone(current),
            pending: Arc::default(),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for &byte in bytes {
            if byte == b'\n' {
                self.emit(&pending);
                pending.clear();
            } else if pending.len() < MAX_OUTPUT_LINE {
                pending.push(byte);
            }
        }
    }

    fn emit(&self, line: &[u8]) {
        let message_id = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let line = String::from_utf8_lossy(line);
        tracing::info!(target: "courier::guest", plugin = &*self.plugin, message_id, stream = self.stream, "{line}");
    }
}

impl Drop for GuestOutput {
    fn drop(&mut self) {
        // The last clone flushes a final line that had no newline.
        if Arc::strong_count(&self.pending) == 1 {
            let pending =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
            if !pending.is_empty() {
                self.emit(&pending);
            }
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
