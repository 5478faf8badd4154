//! The naive baseline: the payment step run the way a first lapin + wasmtime host runs it,
//! to show what Courier's design gains over the obvious one.
//!
//! - wasmtime's default engine: instances allocated on demand, no pooling allocator;
//! - a new store, WASI context and instance for every message, linked from scratch (no
//!   pre-instantiation);
//! - one message at a time, with no prefetch set (the broker pushes everything it has);
//! - each follow-up published and its confirm awaited before the next, then the ack.
//!
//! It uses the same compiled plugin, WIT contract and wire mapping as Courier; only the host
//! around them differs.

use std::sync::Arc;

use futures_lite::StreamExt;
use lapin::Connection;
use lapin::options::BasicAckOptions;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use courier_host::Envelope;
use courier_host::envelope::follow_up_id;
use courier_host::transport::wire;

use super::{plugin_file, rabbitmq};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
    });
}

use bindings::courier::bus::types::{BusError, Level, Message, Outgoing};

/// A store's data: WASI and what the handler published.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    published: Vec<Outgoing>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::courier::bus::types::Host for State {}

impl bindings::courier::bus::bus::Host for State {
    fn publish(&mut self, message: Outgoing) -> Result<String, BusError> {
        self.published.push(message);
        Ok(String::new())
    }

    fn send(&mut self, _destination: String, _message: Outgoing) -> Result<String, BusError> {
        Err(BusError::Denied("the naive host only publishes".to_owned()))
    }

    fn reply(&mut self, _message: Outgoing) -> Result<String, BusError> {
        Err(BusError::Denied("the naive host only publishes".to_owned()))
    }
}

impl bindings::courier::bus::log::Host for State {
    fn log(&mut self, _level: Level, _message: String) {}
}

impl bindings::courier::bus::config::Host for State {
    fn get(&mut self, _key: String) -> Option<String> {
        None
    }
}

fn to_message(envelope: Envelope) -> Message {
    Message {
        id: envelope.id,
        message_type: envelope.message_type,
        content_type: envelope.content_type,
        body: envelope.body,
        correlation_id: envelope.correlation_id,
        conversation_id: envelope.conversation_id,
        initiator_id: envelope.initiator_id,
        session_id: envelope.session_id,
        reply_to: envelope.reply_to,
        source_address: envelope.source_address,
        sent_at_ms: envelope.sent_at_ms,
        expires_at_ms: envelope.expires_at_ms,
        attempt: envelope.attempt,
        headers: envelope.headers,
    }
}

/// Runs `handle` on a new instance; returns what it published.
fn handle(
    engine: &Engine,
    linker: &Linker<State>,
    component: &Component,
    message: &Message,
) -> Vec<Outgoing> {
    let state = State {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
        published: Vec::new(),
    };
    let mut store = Store::new(engine, state);
    let plugin = bindings::Plugin::instantiate(&mut store, component, linker).unwrap();
    plugin
        .courier_bus_handler()
        .call_handle(&mut store, message)
        .unwrap()
        .unwrap();
    store.into_data().published
}

/// Consumes `queue` until dropped: one delivery at a time, each on a new instance, each
/// follow-up confirmed before the ack.
pub async fn consume(url: &str, queue: &str) -> (tokio::task::JoinHandle<()>, Connection) {
    let engine = Engine::default();
    let component = Component::from_file(&engine, plugin_file("payment")).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    bindings::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state).unwrap();
    let wasm = Arc::new((engine, linker, component));

    let connection = rabbitmq::connect(url).await;
    let channel = rabbitmq::confirming_channel(&connection).await;
    let mut consumer = rabbitmq::consume(&channel, queue, "naive").await;
    let task = tokio::spawn(async move {
        let (engine, linker, component) = &*wasm;
        while let Some(Ok(delivery)) = consumer.next().await {
            let envelope = wire::from_delivery(
                &delivery.properties,
                delivery.data,
                delivery.exchange.as_str(),
            );
            let parent = envelope.clone();
            let published = handle(engine, linker, component, &to_message(envelope));
            for (index, outgoing) in (0u32..).zip(published) {
                let mut follow_up =
                    Envelope::new(outgoing.message_type, outgoing.content_type, outgoing.body);
                follow_up.id = follow_up_id(&parent.id, index);
                follow_up
                    .conversation_id
                    .clone_from(&parent.conversation_id);
                follow_up.initiator_id = Some(parent.id.clone());
                rabbitmq::publish_confirmed(&channel, &follow_up).await;
            }
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .unwrap();
        }
    });
    (task, connection)
}
