//! A running host: the engine, the loaded plugins, a broker and the dispatcher, behind one
//! handle. `courier run`, the admin API and the tests all drive a host through this type.
//! How versions are swapped in, rolled back and removed is in [`deploy`].

mod deploy;

pub use deploy::{DeployChange, Deployed, PluginSource};

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Result, bail};
use tracing::Instrument as _;

use crate::config::{BrokerUrl, HostConfig};
use crate::dispatch::{Dispatcher, Lending};
use crate::engine::CourierEngine;
use crate::envelope::Envelope;
use crate::inbox::{self, Inbox};
use crate::metrics::Present;
use crate::plugin::Plugin;
use crate::publish::PublishRequest;
use crate::recoverability;
use crate::registry::Registry;
use crate::stats::{Event, Stats, Summary};
use crate::transport::amqp::AmqpTransport;
use crate::transport::memory::MemoryBroker;
use crate::transport::{DeadLetter, Outbound, Transport};

/// The error of an error-queue command about a queue the embedded broker does not have.
#[derive(Debug, thiserror::Error)]
#[error("no queue named `{0}`")]
pub struct UnknownQueue(pub String);

/// The error of an error-queue command sent to a host on RabbitMQ.
#[derive(Debug, thiserror::Error)]
#[error(
    "this host runs on RabbitMQ: `courier errors` reads its error queues from the broker \
     (pass --broker amqp://…)"
)]
pub struct NotEmbedded;

/// How long a scrape of `/metrics` waits for the broker to tell a queue's depth.
const QUEUE_DEPTH_PATIENCE: Duration = Duration::from_millis(500);

/// A plugin file that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    pub file: String,
    pub error: String,
}

/// The running host.
#[derive(Debug)]
pub struct Host {
    config: Arc<HostConfig>,
    registry: Registry,
    transport: Arc<dyn Transport>,
    memory: Option<MemoryBroker>,
    dispatcher: Dispatcher,
    stats: Arc<Stats>,
    refused: Mutex<Vec<Refusal>>,
    name: String,
    /// One deployment (load, swap, rollback, removal) at a time.
    deploying: tokio::sync::Mutex<()>,
    waiting: deploy::Waiting,
}

impl Host {
    /// A host on the broker its configuration names (the embedded one by default).
    pub async fn new(config: HostConfig) -> Result<Self> {
        config.validate()?;
        let broker = BrokerUrl::parse(config.broker.as_deref().unwrap_or("memory://"))?;
        match broker {
            BrokerUrl::Memory => {
                let memory = MemoryBroker::new(config.memory_broker.queue_capacity);
                let transport: Arc<dyn Transport> = Arc::new(memory.clone());
                // The embedded broker never delivers a message again once it was handled, and
                // keeps nothing across restarts: there is nothing for an inbox to catch.
                Self::assemble(config, transport, Some(memory), None)
            }
            BrokerUrl::Amqp(url) => {
                let inbox = inbox::open(&config.inbox).await?;
                tracing::info!(inbox = %inbox.describe(), "de-duplicating redelivered messages");
                let transport = AmqpTransport::connect(&url, config.amqp.clone()).await?;
                Self::assemble(config, Arc::new(transport), None, Some(inbox))
            }
        }
    }

    /// A host on a transport built by the caller.
    pub fn with_transport(config: HostConfig, transport: Arc<dyn Transport>) -> Result<Self> {
        config.validate()?;
        Self::assemble(config, transport, None, None)
    }

    fn assemble(
        config: HostConfig,
        transport: Arc<dyn Transport>,
        memory: Option<MemoryBroker>,
        inbox: Option<Arc<dyn Inbox>>,
    ) -> Result<Self> {
        let engine = CourierEngine::new(&config.engine)?;
        let config = Arc::new(config);
        let stats = Arc::new(Stats::default());
        let name = gethostname::gethostname().to_string_lossy().into_owned();
        Ok(Host {
            registry: Registry::new(engine, Arc::clone(&config)),
            dispatcher: Dispatcher::new(
                Arc::clone(&transport),
                Arc::clone(&stats),
                &name,
                inbox,
                config.session_keys.clone().into(),
                Lending {
                    short_call: Duration::from_micros(config.engine.short_call_us),
                    tick: Duration::from_millis(config.engine.epoch_tick_ms),
                },
            ),
            config,
            transport,
            memory,
            stats,
            refused: Mutex::default(),
            name,
            deploying: tokio::sync::Mutex::default(),
            waiting: deploy::Waiting::default(),
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The transport, for publishing and consuming beside the host (tests, tools).
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The embedded broker, when the host runs on it.
    pub fn memory_broker(&self) -> Option<&MemoryBroker> {
        self.memory.as_ref()
    }

    /// The messages of `<queue>_error` on the embedded broker, oldest first, left in place.
    /// (On RabbitMQ, `courier errors` reads the error queues from the broker itself.)
    pub fn error_messages(&self, queue: &str) -> Result<Vec<Envelope>> {
        let (memory, error_queue) = self.error_queue(queue)?;
        Ok(memory.peek(&error_queue))
    }

    /// Sends the messages of `<queue>_error` with these ids back to their queue, each on its
    /// first attempt again and without its fault headers, and takes them off the error queue,
    /// each in one step (see [`MemoryBroker::move_ready`]). A message that cannot be sent stays
    /// in its place in the error queue, and the moves stop there; the count so far is in the
    /// error. Returns how many were replayed (an id no longer there is passed over).
    pub fn replay_errors(&self, queue: &str, ids: &[String]) -> Result<usize> {
        let (memory, error_queue) = self.error_queue(queue)?;
        let (replayed, stopped) = memory.move_ready(&error_queue, ids, |failed| {
            let target = failed
                .header(recoverability::headers::ORIGINAL_QUEUE)
                .unwrap_or(queue)
                .to_owned();
            (target, crate::errors::replay_copy(failed))
        });
        match stopped {
            None => Ok(replayed),
            Some(error) => Err(error.context(format!(
                "{replayed} replayed; the rest stay in {error_queue}"
            ))),
        }
    }

    /// Removes the messages of `<queue>_error` with these ids; returns how many there were.
    pub fn purge_errors(&self, queue: &str, ids: &[String]) -> Result<usize> {
        let (memory, error_queue) = self.error_queue(queue)?;
        Ok(memory.take(&error_queue, ids).len())
    }

    /// The embedded broker and the name of `<queue>_error`, which must have been declared.
    fn error_queue(&self, queue: &str) -> Result<(&MemoryBroker, String)> {
        let memory = self.embedded_only()?;
        let error_queue = DeadLetter::Error.queue_for(queue);
        if !memory.has_queue(&error_queue) {
            bail!(UnknownQueue(error_queue));
        }
        Ok((memory, error_queue))
    }

    /// The embedded broker, or the error that says the error queues are read elsewhere.
    fn embedded_only(&self) -> Result<&MemoryBroker> {
        Ok(self.memory.as_ref().ok_or(NotEmbedded)?)
    }

    /// Loads every `.wasm` file of `dir`. A file that fails is refused with its reason (logged
    /// and kept in [`Host::refused`]); the others load.
    pub async fn load_plugins_dir(self: &Arc<Self>, dir: &Path) -> Result<Vec<Arc<Plugin>>> {
        let mut loaded = Vec::new();
        for file in Registry::plugin_files(dir)? {
            if let Ok(deployed) = self.deploy_file(&file).await {
                loaded.push(deployed.plugin);
            }
        }
        Ok(loaded)
    }

    /// The plugin files refused and not loaded since, with the reason of their last refusal.
    pub fn refused(&self) -> Vec<Refusal> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn note_refusal(&self, file: &Path, error: &anyhow::Error) {
        let refusal = Refusal {
            file: file.display().to_string(),
            error: format!("{error:#}"),
        };
        tracing::error!(file = %refusal.file, error = %refusal.error, "plugin refused");
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        refused.retain(|known| known.file != refusal.file);
        refused.push(refusal);
    }

    fn clear_refusal(&self, file: &Path) {
        let file = file.display().to_string();
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|known| known.file != file);
    }

    /// The current version of every loaded plugin.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.registry.current()
    }

    /// The current version of one plugin.
    pub fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.registry.get(name).map(|slot| slot.load_full())
    }

    /// The version a rollback of `name` would return to.
    pub fn previous_version(&self, name: &str) -> Option<String> {
        self.registry
            .previous(name)
            .map(|previous| previous.plugin.version().to_owned())
    }

    /// Puts a message in from outside (publish or send); returns its id once the broker has it.
    pub async fn submit(&self, request: PublishRequest, source: &str) -> Result<String> {
        let mut outbound = request.into_outbound(source)?;
        let id = outbound.envelope.id.clone();
        let span =
            crate::telemetry::producer_span(self.transport.messaging_system(), &mut outbound);
        self.dispatch(outbound).instrument(span).await?;
        Ok(id)
    }

    /// Hands one prepared message to the broker, with the session id the configuration's
    /// rules give it if it has none.
    pub async fn dispatch(&self, mut outbound: Outbound) -> Result<()> {
        crate::session::stamp(&mut outbound.envelope, &self.config.session_keys);
        let message_type = outbound.envelope.message_type.clone();
        self.transport.dispatch(vec![outbound]).await?;
        self.stats.record(&message_type, None, Event::Published);
        Ok(())
    }

    /// Waits until no message is left: on the embedded broker, none ready, unsettled or delayed;
    /// on RabbitMQ, none ready in the plugins' queues and none being handled. Seen twice,
    /// `poll` apart.
    pub async fn wait_until_idle(&self, poll: Duration) -> Result<()> {
        let mut quiet_polls = 0;
        while quiet_polls < 2 {
            tokio::time::sleep(poll).await;
            quiet_polls = if self.is_idle().await? {
                quiet_polls + 1
            } else {
                0
            };
        }
        Ok(())
    }

    async fn is_idle(&self) -> Result<bool> {
        if let Some(memory) = &self.memory {
            // Every delivery stays unacknowledged until settled, and follow-ups are enqueued
            // before their parent is acked, so an idle broker means no work is left.
            return Ok(memory.is_idle());
        }
        if self.dispatcher.in_flight() > 0 {
            return Ok(false);
        }
        let queues: Vec<String> = self.plugins().iter().map(|p| p.name().to_owned()).collect();
        Ok(self.transport.ready_count(&queues).await? == 0 && self.dispatcher.in_flight() == 0)
    }

    /// Stops consuming and waits for every message in flight to be settled.
    pub async fn shutdown(&self) {
        tracing::info!("draining: no new messages are taken; waiting for those in flight");
        self.dispatcher.drain().await;
        self.transport.close().await;
        tracing::info!("drained");
    }

    /// The metrics in the Prometheus text format, with the gauges read now.
    pub async fn metrics_text(&self) -> String {
        let consumers = self.dispatcher.consumers();
        let mut present = Present {
            in_flight: self.dispatcher.in_flight(),
            broker_connected: self.transport.is_connected(),
            ..Present::default()
        };
        for (queue, prefetch, switch) in consumers {
            // A broker that does not answer soon leaves the depth out rather than the scrape
            // waiting for it.
            let ready = tokio::time::timeout(
                QUEUE_DEPTH_PATIENCE,
                self.transport.ready_count(std::slice::from_ref(&queue)),
            )
            .await;
            if let Ok(Ok(ready)) = ready {
                present.queue_ready.push((queue.clone(), ready));
            }
            if let Some(open) = switch {
                present.kill_switch_open.push((queue.clone(), open));
            }
            present.prefetch.push((queue, prefetch));
        }
        self.stats.metrics().set_present(&present);
        self.stats.metrics().encode()
    }

    /// Whether the broker connection is up.
    pub fn broker_connected(&self) -> bool {
        self.transport.is_connected()
    }

    /// What the host did so far.
    pub fn summary(&self) -> Summary {
        self.stats.summary()
    }

    /// The host's name, as written in fault headers.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A host that goes away without [`Host::shutdown`] still stops its lanes, so the runtime they
/// run on can shut down.
impl Drop for Host {
    fn drop(&mut self) {
        self.dispatcher.stop();
    }
}
