//! Components written for another messaging world, run unmodified: `wasi:messaging@0.2.0-draft`
//! (world `messaging-core`: export `incoming-handler`, import `producer`) and
//! `wasmcloud:messaging@0.2.0` (export `handler`, import `consumer`).
//!
//! Such a component cannot describe itself, so its name, version and subscriptions come from
//! the `[foreign]` table of its sidecar file. Everything else is Courier's: it gets the same
//! sandbox, deadline and memory cap, and what it sends goes through the same outbox, released
//! only if its handler succeeded, with the consumed message's correlation and conversation.
//!
//! The mapping, both ways:
//! - the topic (wasi) or subject (wasmCloud) is the message type URN;
//! - a topic listed in `[foreign] send_to` is sent to that endpoint as a command, any other is
//!   published as an event;
//! - wasi metadata are the envelope's headers; wasmCloud's `reply-to` is the envelope's;
//! - what the component sends without a content type takes the sidecar's `content_type`, or
//!   else the consumed message's;
//! - a wasi `timeout`, `connection` or `other` error is retried, `permission-denied` is
//!   rejected; a wasmCloud error (a bare string) is retried, unless the host refused something
//!   the component asked for in that call, which no retry would change: then it is rejected;
//! - `courier-*` headers are the host's: the component neither sees nor sets them, nor the
//!   trace context of its follow-ups.
//!
//! A wasi component builds its messages in the host, so the bytes of the messages it holds
//! count against its memory cap beside its linear memory.

use wasmtime::Store;
use wasmtime::bail;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, Resource};

use super::HostState;
use super::bindings::courier::bus::types::{BusError, HandleError, Message, Outgoing};
use super::bindings::{Plugin as CourierWorld, PluginPre as CourierPre};
use crate::transport::Route;

/// Host bindings of `wasi:messaging@0.2.0-draft`, world `messaging-core`.
pub mod wasi {
    wasmtime::component::bindgen!({
        path: "../wit/foreign/wasi-messaging",
        world: "wasi:messaging/messaging-core",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:messaging/types.client": super::Client,
            "wasi:messaging/types.message": super::ForeignMessage,
        },
    });
}

/// Host bindings of `wasmcloud:messaging@0.2.0`.
pub mod wasmcloud {
    wasmtime::component::bindgen!({
        path: "../wit/foreign/wasmcloud-messaging",
        world: "wasmcloud:messaging/messaging",
        exports: { default: async },
    });
}

use wasi::wasi::messaging::types as wasi_types;
use wasmcloud::wasmcloud::messaging::types::BrokerMessage;

/// The worlds a plugin may be written for, told apart by what the component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `courier:bus/plugin`: the component describes itself.
    Courier,
    WasiMessaging,
    WasmcloudMessaging,
}

impl World {
    /// Every world, in the order they are looked for.
    pub const ALL: [World; 3] = [
        World::Courier,
        World::WasiMessaging,
        World::WasmcloudMessaging,
    ];

    /// The export that marks a component as written for this world.
    pub const fn export(self) -> &'static str {
        match self {
            World::Courier => "courier:bus/handler@0.1.0",
            World::WasiMessaging => "wasi:messaging/incoming-handler@0.2.0-draft",
            World::WasmcloudMessaging => "wasmcloud:messaging/handler@0.2.0",
        }
    }

    /// The world's name, as `courier inspect` and the admin API show it.
    pub const fn name(self) -> &'static str {
        match self {
            World::Courier => "courier:bus/plugin@0.1.0",
            World::WasiMessaging => "wasi:messaging/messaging-core@0.2.0-draft",
            World::WasmcloudMessaging => "wasmcloud:messaging@0.2.0",
        }
    }

    /// Whether the component cannot describe itself, and so needs a `[foreign]` table.
    pub const fn is_foreign(self) -> bool {
        !matches!(self, World::Courier)
    }

    /// The world `component` is written for, by its exports.
    pub fn of(component: &Component, engine: &wasmtime::Engine) -> Option<World> {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        World::ALL
            .into_iter()
            .find(|world| exports.iter().any(|e| e == world.export()))
    }
}

/// Adds the imports of the foreign worlds to the host's linker.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasi::MessagingCore::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    wasmcloud::Messaging::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

/// A component pre-instantiated for its world.
pub enum Pre {
    Courier(CourierPre<HostState>),
    WasiMessaging(wasi::MessagingCorePre<HostState>),
    WasmcloudMessaging(wasmcloud::MessagingPre<HostState>),
}

impl std::fmt::Debug for Pre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pre").field(&self.world()).finish()
    }
}

impl Pre {
    /// The world this component is written for.
    pub fn world(&self) -> World {
        match self {
            Pre::Courier(_) => World::Courier,
            Pre::WasiMessaging(_) => World::WasiMessaging,
            Pre::WasmcloudMessaging(_) => World::WasmcloudMessaging,
        }
    }

    pub fn new(world: World, pre: InstancePre<HostState>) -> wasmtime::Result<Pre> {
        Ok(match world {
            World::Courier => Pre::Courier(CourierPre::new(pre)?),
            World::WasiMessaging => Pre::WasiMessaging(wasi::MessagingCorePre::new(pre)?),
            World::WasmcloudMessaging => {
                Pre::WasmcloudMessaging(wasmcloud::MessagingPre::new(pre)?)
            }
        })
    }

    /// Instantiates through a linker whose host functions are all synchronous.
    pub fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::Courier(pre) => Instance::Courier(pre.instantiate(store)?),
            Pre::WasiMessaging(pre) => Instance::WasiMessaging(pre.instantiate(store)?),
            Pre::WasmcloudMessaging(pre) => Instance::WasmcloudMessaging(pre.instantiate(store)?),
        })
    }

    /// Instantiates through a linker with asynchronous host functions (WASI's).
    pub async fn instantiate_async(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::Courier(pre) => Instance::Courier(pre.instantiate_async(store).await?),
            Pre::WasiMessaging(pre) => Instance::WasiMessaging(pre.instantiate_async(store).await?),
            Pre::WasmcloudMessaging(pre) => {
                Instance::WasmcloudMessaging(pre.instantiate_async(store).await?)
            }
        })
    }
}

/// An instance of a plugin, of whichever world.
pub enum Instance {
    Courier(CourierWorld),
    WasiMessaging(wasi::MessagingCore),
    WasmcloudMessaging(wasmcloud::Messaging),
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let world = match self {
            Instance::Courier(_) => World::Courier,
            Instance::WasiMessaging(_) => World::WasiMessaging,
            Instance::WasmcloudMessaging(_) => World::WasmcloudMessaging,
        };
        f.debug_tuple("Instance").field(&world).finish()
    }
}

impl Instance {
    /// Hands `message` to the component's handler. The outer error is a trap.
    pub async fn handle(
        &self,
        store: &mut Store<HostState>,
        message: &Message,
    ) -> wasmtime::Result<Result<(), HandleError>> {
        let result = match self {
            Instance::Courier(bindings) => {
                return bindings
                    .courier_bus_handler()
                    .call_handle(store, message)
                    .await;
            }
            Instance::WasiMessaging(bindings) => {
                let received = ForeignMessage {
                    topic: Some(message.message_type.clone()),
                    content_type: Some(message.content_type.clone()),
                    data: message.body.clone(),
                    metadata: Some(
                        message
                            .headers
                            .iter()
                            .filter(|(name, _)| !is_hosts_header(name))
                            .cloned()
                            .collect(),
                    ),
                };
                let resource = store.data_mut().hold(received)?;
                let result = bindings
                    .wasi_messaging_incoming_handler()
                    .call_handle(&mut *store, resource)
                    .await?;
                result.map_err(|error| match error {
                    wasi_types::Error::Timeout => HandleError::Retry("timeout".into()),
                    wasi_types::Error::Connection(reason) => {
                        HandleError::Retry(format!("connection: {reason}"))
                    }
                    wasi_types::Error::PermissionDenied(reason) => {
                        HandleError::Reject(format!("permission denied: {reason}"))
                    }
                    wasi_types::Error::Other(reason) => HandleError::Retry(reason),
                })
            }
            Instance::WasmcloudMessaging(bindings) => {
                let received = BrokerMessage {
                    subject: message.message_type.clone(),
                    body: message.body.clone(),
                    reply_to: message.reply_to.clone(),
                };
                bindings
                    .wasmcloud_messaging_handler()
                    .call_handle_message(&mut *store, &received)
                    .await?
                    .map_err(HandleError::Retry)
            }
        };
        // A refusal is permanent (an invalid message, a limit, a request): a retry would be
        // refused the same way, so a failure that follows one is not retried.
        let refusal = store.data_mut().foreign.refusal.take();
        Ok(match (result, refusal) {
            (Err(HandleError::Retry(reason)), Some(refusal)) => Err(HandleError::Reject(format!(
                "{reason} (not retried: the host had refused the handler's request: {refusal})"
            ))),
            (result, _) => result,
        })
    }
}

/// Headers the host writes and reads itself: the `courier-*` ones, and the trace context.
fn is_hosts_header(name: &str) -> bool {
    name.get(..8)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("courier-"))
        || crate::telemetry::is_trace_header(name)
}

/// What a handle costs the host beyond its bytes, so that empty messages are not free.
const HANDLE_COST: usize = 64;

/// What the host keeps for a component of a foreign world between its calls into the host:
/// what it refused the component in this call. (The bytes of the messages the component holds
/// are counted with its memory, in the store's limits.)
#[derive(Debug, Default)]
pub struct Held {
    refusal: Option<String>,
}

impl Held {
    /// A new call: what was refused in the last one no longer matters.
    pub(super) fn begin(&mut self) {
        self.refusal = None;
    }
}

/// A `wasi:messaging` client. Every name connects to the host's bus, so it holds nothing.
#[derive(Debug)]
pub struct Client;

/// A `wasi:messaging` message: one the component received, or one it is building to send.
#[derive(Debug, Default)]
pub struct ForeignMessage {
    topic: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
    metadata: Option<Vec<(String, String)>>,
}

impl ForeignMessage {
    /// What holding it costs the host, in bytes.
    fn cost(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        HANDLE_COST
            + text(&self.topic)
            + text(&self.content_type)
            + self.data.len()
            + self
                .metadata
                .iter()
                .flatten()
                .map(|(key, value)| key.len() + value.len())
                .sum::<usize>()
    }
}

impl HostState {
    /// Counts a change of `before` to `after` bytes held for the component; trapping, as the
    /// memory cap does, if it would hold more than its cap beside its linear memory.
    fn charge(&mut self, before: usize, after: usize) -> wasmtime::Result<()> {
        let held = self.limits.held_bytes.saturating_sub(before) + after;
        if held + self.limits.linear_bytes > self.limits.memory_bytes {
            bail!(
                "memory cap exceeded: the handler holds {} KiB of messages in the host beside \
                 {} KiB of linear memory, its cap is {} KiB",
                held >> 10,
                self.limits.linear_bytes >> 10,
                self.limits.memory_bytes >> 10
            );
        }
        self.limits.held_bytes = held;
        Ok(())
    }

    /// Holds a message for the component, counted against its cap.
    fn hold(&mut self, message: ForeignMessage) -> wasmtime::Result<Resource<ForeignMessage>> {
        self.charge(0, message.cost())?;
        Ok(self.table.push(message)?)
    }

    /// Takes a message back from the component (dropped, or sent).
    fn release(&mut self, message: Resource<ForeignMessage>) -> wasmtime::Result<ForeignMessage> {
        let message = self.table.delete(message)?;
        self.limits.held_bytes = self.limits.held_bytes.saturating_sub(message.cost());
        Ok(message)
    }

    /// Changes a message the component holds, counting what it costs now.
    fn edit(
        &mut self,
        message: &Resource<ForeignMessage>,
        change: impl FnOnce(&mut ForeignMessage),
    ) -> wasmtime::Result<()> {
        let held = self.table.get_mut(message)?;
        let before = held.cost();
        change(held);
        let after = held.cost();
        self.charge(before, after)
    }

    /// Stages a message a foreign component sends on `topic`.
    fn stage_foreign(
        &mut self,
        topic: String,
        content_type: Option<String>,
        body: Vec<u8>,
        reply_to: Option<String>,
        headers: Vec<(String, String)>,
    ) -> Result<String, BusError> {
        let content_type = content_type
            .or_else(|| self.identity.content_type.clone())
            .or_else(|| self.parent.as_ref().map(|p| p.content_type.clone()))
            .unwrap_or_default();
        let route = match self.identity.send_to.get(&topic) {
            Some(endpoint) => Route::Send(endpoint.clone()),
            None => Route::Publish,
        };
        // The host's headers (the follow-up's trace context, the first failure of a
        // redelivered message) are the host's to set, whatever a component copies over.
        let headers = headers
            .into_iter()
            .filter(|(name, _)| !is_hosts_header(name))
            .collect();
        let staged = self.stage(
            route,
            Outgoing {
                message_type: topic,
                content_type,
                body,
                correlation_id: None,
                session_id: None,
                reply_to,
                headers,
                delay_ms: None,
                ttl_ms: None,
            },
        );
        if let Err(BusError::Denied(reason) | BusError::Invalid(reason)) = &staged {
            self.foreign.refusal = Some(reason.clone());
        }
        staged
    }
}

impl wasi_types::Host for HostState {}

impl wasi_types::HostClient for HostState {
    fn connect(
        &mut self,
        _name: String,
    ) -> wasmtime::Result<Result<Resource<Client>, wasi_types::Error>> {
        self.charge(0, HANDLE_COST)?;
        Ok(Ok(self.table.push(Client)?))
    }

    fn disconnect(
        &mut self,
        client: Resource<Client>,
    ) -> wasmtime::Result<Result<(), wasi_types::Error>> {
        self.table.get(&client)?;
        Ok(Ok(()))
    }

    fn drop(&mut self, client: Resource<Client>) -> wasmtime::Result<()> {
        self.table.delete(client)?;
        self.limits.held_bytes = self.limits.held_bytes.saturating_sub(HANDLE_COST);
        Ok(())
    }
}

impl wasi_types::HostMessage for HostState {
    fn new(&mut self, data: Vec<u8>) -> wasmtime::Result<Resource<ForeignMessage>> {
        self.hold(ForeignMessage {
            data,
            ..ForeignMessage::default()
        })
    }

    fn topic(&mut self, message: Resource<ForeignMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&message)?.topic.clone())
    }

    fn content_type(
        &mut self,
        message: Resource<ForeignMessage>,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&message)?.content_type.clone())
    }

    fn set_content_type(
        &mut self,
        message: Resource<ForeignMessage>,
        content_type: String,
    ) -> wasmtime::Result<()> {
        self.edit(&message, |m| m.content_type = Some(content_type))
    }

    fn data(&mut self, message: Resource<ForeignMessage>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&message)?.data.clone())
    }

    fn set_data(
        &mut self,
        message: Resource<ForeignMessage>,
        data: Vec<u8>,
    ) -> wasmtime::Result<()> {
        self.edit(&message, |m| m.data = data)
    }

    fn metadata(
        &mut self,
        message: Resource<ForeignMessage>,
    ) -> wasmtime::Result<Option<Vec<(String, String)>>> {
        Ok(self.table.get(&message)?.metadata.clone())
    }

    fn add_metadata(
        &mut self,
        message: Resource<ForeignMessage>,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        self.edit(&message, |m| {
            let metadata = m.metadata.get_or_insert_default();
            match metadata.iter_mut().find(|(name, _)| *name == key) {
                Some(entry) => entry.1 = value,
                None => metadata.push((key, value)),
            }
        })
    }

    fn set_metadata(
        &mut self,
        message: Resource<ForeignMessage>,
        metadata: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.edit(&message, |m| m.metadata = Some(metadata))
    }

    fn remove_metadata(
        &mut self,
        message: Resource<ForeignMessage>,
        key: String,
    ) -> wasmtime::Result<()> {
        self.edit(&message, |m| {
            if let Some(metadata) = &mut m.metadata {
                metadata.retain(|(name, _)| *name != key);
            }
        })
    }

    fn drop(&mut self, message: Resource<ForeignMessage>) -> wasmtime::Result<()> {
        self.release(message)?;
        Ok(())
    }
}

impl wasi::wasi::messaging::producer::Host for HostState {
    fn send(
        &mut self,
        client: Resource<Client>,
        topic: String,
        message: Resource<ForeignMessage>,
    ) -> wasmtime::Result<Result<(), wasi_types::Error>> {
        self.table.get(&client)?;
        let message = self.release(message)?;
        let staged = self.stage_foreign(
            topic,
            message.content_type,
            message.data,
            None,
            message.metadata.unwrap_or_default(),
        );
        Ok(staged.map(drop).map_err(|refusal| match refusal {
            BusError::Denied(reason) => wasi_types::Error::PermissionDenied(reason),
            BusError::Invalid(reason) => wasi_types::Error::Other(reason),
            BusError::Unavailable(reason) => wasi_types::Error::Connection(reason),
        }))
    }
}

impl wasmcloud::wasmcloud::messaging::types::Host for HostState {}

impl wasmcloud::wasmcloud::messaging::consumer::Host for HostState {
    fn request(
        &mut self,
        subject: String,
        _body: Vec<u8>,
        _timeout_ms: u32,
    ) -> Result<BrokerMessage, String> {
        let refusal = format!(
            "request on {subject} is not supported: what a handler sends leaves only once it \
             has succeeded, so no reply can arrive while it runs; publish instead"
        );
        self.foreign.refusal = Some(refusal.clone());
        Err(refusal)
    }

    fn publish(&mut self, message: BrokerMessage) -> Result<(), String> {
        self.stage_foreign(
            message.subject,
            None,
            message.body,
            message.reply_to,
            Vec::new(),
        )
        .map(drop)
        .map_err(|refusal| match refusal {
            BusError::Denied(reason) => format!("denied: {reason}"),
            BusError::Invalid(reason) => format!("invalid: {reason}"),
            BusError::Unavailable(reason) => format!("unavailable: {reason}"),
        })
    }
}
