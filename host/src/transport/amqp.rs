//! RabbitMQ (`amqp://`, `amqps://`) through lapin, following the contract in
//! [`crate::transport`].
//!
//! Topology, declared idempotently at start-up and again after every reconnection:
//! - a durable fanout exchange per message type, named `<Namespace>:<Type>`;
//! - a durable input queue per endpoint (quorum by default), bound to the exchanges of the
//!   types it handles, whose expired messages the broker dead-letters to `<queue>_expired`;
//! - `<queue>_error`, `<queue>_skipped`, `<queue>_expired` beside it.
//!
//! An ordered endpoint (see [`crate::session`]) has no single input queue. Its name is an
//! exchange of type `x-consistent-hash` (the broker's `rabbitmq_consistent_hash_exchange`
//! plugin), bound to the exchanges of the types it handles, which spreads messages over the
//! partition queues `<queue>.0` … `<queue>.<n-1>` by their routing key. Courier publishes every
//! message with its session id as the routing key (its message id if it has none), so one
//! session always lands in one partition. Each partition is declared with single active
//! consumer: every host consumes every partition, the broker delivers each partition to one of
//! them at a time, and when that host goes away its partition moves to another, which gets
//! the unacknowledged messages first, in order. A publisher outside Courier publishes to the
//! type's exchange, or to the endpoint's exchange, with the session id as the routing key.
//!
//! Events are published to their type's exchange; commands go through the default exchange
//! straight to a queue (`mandatory`, so a missing queue is an error, not a silent drop). Every
//! publish is confirmed by the broker; a batch is pipelined and waits for its confirms once.
//! A delayed message, and a redelivery after a delay, waits in a holding queue
//! (`courier.delay.<ms>.<target>`) whose TTL dead-letters it to its target: the broker, not the
//! host, holds it. With quorum queues the dead-lettering is at least once, so a delay that ends
//! while the broker restarts does not drop the message.
//!
//! When the connection or a channel is lost, consumers and publishers reconnect with backoff
//! and declare the topology again; deliveries that were not acknowledged are redelivered by
//! the broker.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use async_trait::async_trait;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeUnbindOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use super::wire::{self, exchange_for};
use super::{Acker, Consumer, DeadLetter, Delivery, Endpoint, Outbound, Route, Transport};
use crate::config::{AmqpConfig, QueueType, redact_url};
use crate::envelope::Envelope;

/// The RabbitMQ transport.
#[derive(Debug, Clone)]
pub struct AmqpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL as configured; it may hold a password, so it is never logged.
    url: String,
    /// The URL with the password replaced, for logs and errors.
    shown: String,
    config: AmqpConfig,
    link: tokio::sync::Mutex<Option<Link>>,
    /// Declared endpoints, declared again after a reconnection.
    endpoints: Mutex<Vec<Endpoint>>,
    /// Names of ordered endpoints (consistent-hash exchanges) seen so far: sends to them go
    /// to the exchange, not the default one.
    partitioned: Mutex<HashSet<String>>,
    /// Names known to be queues: declared here, or found by asking.
    queues: Mutex<HashSet<String>>,
    generation: AtomicU64,
    closed: AtomicBool,
    /// Whether the last look at the link found it open (publishers and consumers look at it
    /// whenever they use it, and consumers as soon as their connection drops).
    connected: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("broker", &self.shown)
            .finish_non_exhaustive()
    }
}

/// One connection, with its confirming publisher channel.
#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    /// Shared by every clone of the link (one per publish): see [`AmqpConsumer::current`].
    publisher: Arc<Channel>,
    generation: u64,
    /// Exchanges known to exist on this connection.
    exchanges: Arc<Mutex<HashSet<String>>>,
}

impl Link {
    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

impl AmqpTransport {
    /// Connects to the broker; fails if it cannot be reached within `connect_timeout_ms`.
    pub async fn connect(url: &str, config: AmqpConfig) -> Result<Self> {
        let transport = AmqpTransport {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                shown: redact_url(url),
                config,
                link: tokio::sync::Mutex::new(None),
                endpoints: Mutex::default(),
                partitioned: Mutex::default(),
                queues: Mutex::default(),
                generation: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                connected: AtomicBool::new(false),
            }),
        };
        let patience = transport.inner.connect_timeout();
        transport.inner.link(Some(patience)).await?;
        Ok(transport)
    }

    /// Whether the connection is up now.
    pub async fn is_connected(&self) -> bool {
        self.inner
            .link
            .lock()
            .await
            .as_ref()
            .is_some_and(Link::is_open)
    }
}

impl Inner {
    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.config.connect_timeout_ms)
    }

    /// A live connection: the current one, or a new one after backoff. Gives up after
    /// `patience` (never, with `None`, unless the transport is closed).
    async fn link(&self, patience: Option<Duration>) -> Result<Link> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let max_backoff = Duration::from_millis(self.config.max_reconnect_backoff_ms);
        loop {
            let failure = {
                let mut current = self.link.lock().await;
                if let Some(link) = current.as_ref().filter(|link| link.is_open()) {
                    return Ok(link.clone());
                }
                self.connected.store(false, Ordering::SeqCst);
                if self.closed.load(Ordering::SeqCst) {
                    bail!("the connection to {} is closed", self.shown);
                }
                match self.connect_once().await {
                    Ok(link) => {
                        if link.generation > 1 {
                            tracing::info!(broker = %self.shown, "reconnected to the broker");
                        }
                        *current = Some(link.clone());
                        self.connected.store(true, Ordering::SeqCst);
                        return Ok(link);
                    }
                    Err(error) => error,
                }
            };
            if patience.is_some_and(|p| started.elapsed() + backoff > p) {
                return Err(failure.context(format!("the broker {} cannot be reached", self.shown)));
            }
            tracing::warn!(broker = %self.shown, error = format!("{failure:#}"), retry_in_ms = backoff.as_millis() as u64, "broker unreachable");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max_backoff);
        }
    }

    async fn connect_once(&self) -> Result<Link> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let properties = ConnectionProperties::default().with_connection_name(LongString::from(
            format!("courier@{}", gethostname::gethostname().to_string_lossy()),
        ));
        let connect = Connection::connect(&self.url, properties);
        let connection = tokio::time::timeout(self.connect_timeout(), connect)
            .await
            .map_err(|_| {
                anyhow!(
                    "no answer from {} in {:?}",
                    self.shown,
                    self.connect_timeout()
                )
            })?
            .map_err(|e| {
                anyhow!(
                    "cannot connect to {}: {}",
                    self.shown,
                    scrub(&e.to_string(), &self.url)
                )
            })?;
        let publisher = connection
            .create_channel()
            .await
            .context("cannot open a channel")?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("cannot enable publisher confirms")?;
        let link = Link {
            connection: Arc::new(connection),
            publisher: Arc::new(publisher),
            generation,
            exchanges: Arc::default(),
        };
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for endpoint in &endpoints {
            self.declare(&link, endpoint).await?;
        }
        Ok(link)
    }

    /// A channel of its own for a request that may fail: a failed request closes its channel,
    /// which must not be the publisher's.
    async fn side_channel(&self) -> Result<Channel> {
        let link = self.link(Some(self.connect_timeout())).await?;
        link.connection
            .create_channel()
            .await
            .context("cannot open a channel")
    }

    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        let kind = match self.config.queue_type {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        arguments.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        arguments
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        queue: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .with_context(|| {
                format!("cannot declare queue `{queue}` (does it exist with other arguments?)")
            })?;
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.to_owned());
        Ok(())
    }

    async fn declare_exchange(&self, link: &Link, exchange: &str) -> Result<()> {
        if link
            .exchanges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(exchange)
        {
            return Ok(());
        }
        link.publisher
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("cannot declare exchange `{exchange}`"))?;
        link.exchanges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(exchange.to_owned());
        Ok(())
    }

    /// The arguments of an input queue (or partition): its expired messages go to
    /// `<queue>_expired`.
    fn input_arguments(&self, queue: &str) -> FieldTable {
        let mut input = self.queue_arguments();
        input.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        input.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(DeadLetter::Expired.queue_for(queue).into()),
        );
        input
    }

    fn is_partitioned(&self, name: &str) -> bool {
        self.partitioned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    /// An endpoint that was ordered and is not any more, or the other way round, keeps the
    /// queue or exchange of its old shape (and what waits in it) but stops it receiving copies
    /// of its types. One look finds out whether the old shape exists; asking about what does
    /// not exist closes the channel, so the usual answer (it does not) costs one channel.
    async fn unbind_other_shape(&self, link: &Link, endpoint: &Endpoint) {
        if endpoint.subscriptions.is_empty() {
            return;
        }
        let Ok(channel) = link.connection.create_channel().await else {
            return;
        };
        let queue = endpoint.queue.as_str();
        // The old shape is the queue of an endpoint now ordered, or the exchange of one no
        // longer ordered.
        let old_is_exchange = endpoint.partitions == 0;
        let exists = if old_is_exchange {
            look_at_exchange(&channel, queue).await.is_ok()
        } else {
            look_at_queue(&channel, queue).await.is_ok()
        };
        if !exists {
            close_quietly(&channel).await;
            return;
        }
        // The types' exchanges exist: the new shape was just bound to each of them.
        for message_type in &endpoint.subscriptions {
            let exchange = exchange_for(message_type);
            if let Err(error) = unbind_from(&channel, queue, old_is_exchange, exchange).await {
                tracing::warn!(endpoint = queue, exchange, %error, "cannot unbind the endpoint's former shape");
                break;
            }
            tracing::info!(
                endpoint = queue,
                exchange,
                ordered = endpoint.partitions > 0,
                "unbound the endpoint's former shape from a type it handles"
            );
        }
        close_quietly(&channel).await;
    }

    /// An ordered endpoint: its consistent-hash exchange, bound to the types' exchanges, and
    /// its partitions, each with a single active consumer, bound to it with equal weights.
    async fn declare_partitioned(&self, link: &Link, endpoint: &Endpoint) -> Result<()> {
        let queue = &endpoint.queue;
        link.publisher
            .exchange_declare(
                queue.as_str().into(),
                ExchangeKind::Custom(CONSISTENT_HASH.into()),
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| {
                format!(
                    "cannot declare the {CONSISTENT_HASH} exchange `{queue}` of an ordered \
                     endpoint (is the broker's plugin enabled? `rabbitmq-plugins enable \
                     rabbitmq_consistent_hash_exchange`)"
                )
            })?;
        self.partitioned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.clone());
        for partition in partition_queues(queue, endpoint.partitions) {
            let mut arguments = self.input_arguments(queue);
            arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            self.declare_queue(&link.publisher, &partition, arguments)
                .await?;
            link.publisher
                .queue_bind(
                    partition.as_str().into(),
                    queue.as_str().into(),
                    PARTITION_WEIGHT.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("cannot bind partition `{partition}` to `{queue}`"))?;
        }
        // The hosts' roll call: a classic queue nothing is bound to, one consumer per host.
        let mut classic = FieldTable::default();
        classic.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("classic".into()),
        );
        self.declare_queue(&link.publisher, &presence_queue(queue), classic)
            .await?;
        for message_type in &endpoint.subscriptions {
            let exchange = exchange_for(message_type);
            self.declare_exchange(link, exchange).await?;
            link.publisher
                .exchange_bind(
                    queue.as_str().into(),
                    exchange.into(),
                    "".into(),
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("cannot bind exchange `{queue}` to `{exchange}`"))?;
        }
        Ok(())
    }

    async fn declare(&self, link: &Link, endpoint: &Endpoint) -> Result<()> {
        for dead_letter in DeadLetter::ALL {
            self.declare_queue(
                &link.publisher,
                &dead_letter.queue_for(&endpoint.queue),
                self.queue_arguments(),
            )
            .await?;
        }
        // The new shape is bound before the old one is unbound, so that no message of the
        // endpoint's types is routed nowhere in between.
        if endpoint.partitions > 0 {
            self.declare_partitioned(link, endpoint).await?;
        } else {
            self.declare_plain(link, endpoint).await?;
        }
        self.unbind_other_shape(link, endpoint).await;
        Ok(())
    }

    /// An endpoint with one input queue, bound to the types' exchanges.
    async fn declare_plain(&self, link: &Link, endpoint: &Endpoint) -> Result<()> {
        // No longer ordered, if it was: sends go to its queue again.
        self.partitioned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&endpoint.queue);
        let input = self.input_arguments(&endpoint.queue);
        self.declare_queue(&link.publisher, &endpoint.queue, input)
            .await?;
        for message_type in &endpoint.subscriptions {
            let exchange = exchange_for(message_type);
            self.declare_exchange(link, exchange).await?;
            link.publisher
                .queue_bind(
                    endpoint.queue.as_str().into(),
                    exchange.into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| {
                    format!("cannot bind queue `{}` to `{exchange}`", endpoint.queue)
                })?;
        }
        Ok(())
    }

    /// A holding queue whose TTL dead-letters to `(exchange, routing_key)` after `delay`.
    async fn delay_queue(
        &self,
        link: &Link,
        delay: Duration,
        exchange: &str,
        routing_key: &str,
    ) -> Result<String> {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1);
        let target = if exchange.is_empty() {
            routing_key
        } else {
            exchange
        };
        let queue = format!("courier.delay.{ms}.{target}");
        let mut arguments = self.queue_arguments();
        if self.config.queue_type == QueueType::Quorum {
            // The broker's default dead-lettering is at most once: a message whose delay ends
            // while its target has no leader (a broker restart) would be dropped. Quorum
            // holding queues dead-letter at least once, retrying until the target takes it.
            arguments.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString("at-least-once".into()),
            );
            arguments.insert(
                "x-overflow".into(),
                AMQPValue::LongString("reject-publish".into()),
            );
        }
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(ms).unwrap_or(i64::MAX)),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(exchange.into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(routing_key.into()),
        );
        // An idle holding queue removes itself a while after its last message left.
        let expires = ms.saturating_add(600_000);
        arguments.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(i64::try_from(expires).unwrap_or(i64::MAX)),
        );
        self.declare_queue(&link.publisher, &queue, arguments)
            .await?;
        Ok(queue)
    }

    fn is_known_queue(&self, name: &str) -> bool {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    /// Finds out whether `name` is a queue or an ordered endpoint's exchange, and remembers it.
    async fn resolve_send_target(&self, name: &str) -> Result<()> {
        let channel = self.side_channel().await?;
        let is_queue = look_at_queue(&channel, name).await.is_ok();
        if is_queue {
            close_quietly(&channel).await;
            self.queues
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_owned());
            return Ok(());
        }
        // The failed look closed that channel.
        let channel = self.side_channel().await?;
        let is_exchange = look_at_exchange(&channel, name).await.is_ok();
        close_quietly(&channel).await;
        if !is_exchange {
            bail!("no queue named `{name}`");
        }
        self.partitioned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
        Ok(())
    }

    /// Publishes a batch and waits for every confirm. A send the broker returned for want of
    /// a queue of that name is sent again if the name is an ordered endpoint's exchange.
    async fn publish(&self, messages: &[Outbound]) -> Result<()> {
        let returned = self.publish_once(messages.iter()).await?;
        if returned.is_empty() {
            return Ok(());
        }
        let channel = self.side_channel().await?;
        let mut again = Vec::with_capacity(returned.len());
        for index in returned {
            let message = &messages[index];
            let Route::Send(queue) = &message.route else {
                bail!("{} was returned by the broker", describe(message));
            };
            if !self.is_partitioned(queue) {
                // Asking about an exchange that does not exist closes the channel, so the
                // first answer of no ends the batch.
                look_at_exchange(&channel, queue).await.map_err(|_| {
                    anyhow!(
                        "cannot send {}: no queue named `{queue}`",
                        describe(message)
                    )
                })?;
                self.partitioned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(queue.clone());
            }
            again.push(message);
        }
        close_quietly(&channel).await;
        let returned = self.publish_once(again.iter().copied()).await?;
        if let Some(index) = returned.first() {
            bail!("{} was returned by the broker", describe(again[*index]));
        }
        Ok(())
    }

    /// Publishes a batch and waits for every confirm; returns the positions of the messages
    /// the broker confirmed but returned as unroutable.
    async fn publish_once<'a>(
        &self,
        messages: impl Iterator<Item = &'a Outbound>,
    ) -> Result<Vec<usize>> {
        let link = self.link(Some(self.connect_timeout())).await?;
        let mut pending = Vec::new();
        for message in messages {
            let envelope = &message.envelope;
            // Ordered endpoints hash the routing key: the session id keeps a session in one
            // partition, and the message id spreads messages that have none.
            let key = || routing_key_for(envelope);
            let delayed = message.delay.is_some_and(|d| !d.is_zero());
            if let Route::Send(queue) = &message.route
                && delayed
                && !self.is_partitioned(queue)
                && !self.is_known_queue(queue)
            {
                // A delayed message waits in a holding queue, which the broker cannot return
                // for want of its target: the target's kind must be known before it goes.
                self.resolve_send_target(queue)
                    .await
                    .with_context(|| format!("cannot send {}", describe(message)))?;
            }
            let (mut exchange, mut routing_key, mandatory) = match &message.route {
                Route::Publish => {
                    let exchange = exchange_for(&envelope.message_type).to_owned();
                    self.declare_exchange(&link, &exchange).await?;
                    (exchange, key(), false)
                }
                Route::Send(queue) if self.is_partitioned(queue) => (queue.clone(), key(), true),
                Route::Send(queue) => (String::new(), queue.clone(), true),
            };
            if let Some(delay) = message.delay.filter(|d| !d.is_zero()) {
                // The holding queue dead-letters with one routing key for all its messages:
                // the target queue's name, or none for an exchange. A delayed message to an
                // ordered endpoint therefore reaches one partition, not its session's.
                if !exchange.is_empty() {
                    routing_key.clear();
                }
                routing_key = self
                    .delay_queue(&link, delay, &exchange, &routing_key)
                    .await?;
                exchange = String::new();
            }
            let confirm = link
                .publisher
                .basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(routing_key),
                    BasicPublishOptions {
                        mandatory,
                        ..BasicPublishOptions::default()
                    },
                    &envelope.body,
                    wire::to_properties(envelope),
                )
                .await
                .with_context(|| {
                    format!("cannot publish {} ({})", envelope.message_type, envelope.id)
                })?;
            pending.push((confirm, message));
        }
        let mut returned = Vec::new();
        for (index, (confirm, message)) in pending.into_iter().enumerate() {
            let what = describe(message);
            match confirm
                .await
                .with_context(|| format!("no confirm for {what}"))?
            {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => returned.push(index),
                Confirmation::Nack(_) => bail!("the broker refused {what}"),
                Confirmation::NotRequested => bail!("the broker did not confirm {what}"),
            }
        }
        Ok(returned)
    }
}

/// The routing key of a message: its session id, or its id if it has none, which an ordered
/// endpoint's exchange hashes. AMQP caps a routing key at 255 bytes, so a longer session id is
/// cut at a character boundary: the same id always gives the same key.
fn routing_key_for(envelope: &Envelope) -> String {
    let key = envelope.session_id.as_deref().unwrap_or(&envelope.id);
    let mut end = key.len().min(MAX_ROUTING_KEY);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key[..end].to_owned()
}

/// The longest routing key AMQP carries, in bytes.
const MAX_ROUTING_KEY: usize = 255;

/// A message in errors: its type and id.
fn describe(message: &Outbound) -> String {
    format!(
        "{} ({})",
        message.envelope.message_type, message.envelope.id
    )
}

/// The exchange type of an ordered endpoint.
const CONSISTENT_HASH: &str = "x-consistent-hash";

/// Each partition's weight on the hash ring: its binding key. Equal for all, so keys spread
/// evenly; more points than one smooth the spread.
const PARTITION_WEIGHT: &str = "16";

/// The queue whose consumers are the hosts serving an ordered endpoint.
fn presence_queue(queue: &str) -> String {
    format!("{queue}.hosts")
}

/// The partition queues of an ordered endpoint.
pub fn partition_queues(queue: &str, partitions: u16) -> Vec<String> {
    (0..partitions)
        .map(|index| format!("{queue}.{index}"))
        .collect()
}

/// Removes the URL (and so any password in it) from an error text.
fn scrub(text: &str, url: &str) -> String {
    text.replace(url, &redact_url(url))
}

#[async_trait]
impl Transport for AmqpTransport {
    async fn declare_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let link = self.inner.link(Some(self.inner.connect_timeout())).await?;
        self.inner.declare(&link, endpoint).await?;
        let mut endpoints = self
            .inner
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        endpoints.retain(|known| known.queue != endpoint.queue);
        endpoints.push(endpoint.clone());
        Ok(())
    }

    fn presence_queue(&self, endpoint: &Endpoint) -> Option<String> {
        (endpoint.partitions > 0).then(|| presence_queue(&endpoint.queue))
    }

    fn input_queues(&self, endpoint: &Endpoint) -> Vec<String> {
        if endpoint.partitions == 0 {
            return vec![endpoint.queue.clone()];
        }
        partition_queues(&endpoint.queue, endpoint.partitions)
    }

    async fn unbind(&self, queue: &str, message_types: &[String]) -> Result<()> {
        // Forgotten first, so a reconnection meanwhile does not bind them again.
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
            .filter(|known| known.queue == queue)
            .for_each(|known| known.subscriptions.retain(|t| !message_types.contains(t)));
        let channel = self.inner.side_channel().await?;
        let partitioned = self.inner.is_partitioned(queue);
        for message_type in message_types {
            let exchange = exchange_for(message_type);
            let what = if partitioned { "exchange" } else { "queue" };
            unbind_from(&channel, queue, partitioned, exchange)
                .await
                .with_context(|| format!("cannot unbind {what} `{queue}` from `{exchange}`"))?;
        }
        close_quietly(&channel).await;
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(AmqpConsumer {
            inner: Arc::clone(&self.inner),
            queue: queue.to_owned(),
            prefetch: prefetch.max(1),
            current: None,
            rejoin_at: None,
            cancelled: None,
        }))
    }

    async fn dispatch(&self, messages: Vec<Outbound>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.inner.publish(&messages).await
    }

    async fn ready_count(&self, queues: &[String]) -> Result<u64> {
        // Asking about a queue that does not exist makes the broker close the channel.
        let channel = self.inner.side_channel().await?;
        let mut ready = 0;
        // An ordered endpoint's messages are in its partitions.
        let partitions: Vec<String> = {
            let endpoints = self
                .inner
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            queues
                .iter()
                .flat_map(|queue| match endpoints.iter().find(|e| &e.queue == queue) {
                    Some(endpoint) => self.input_queues(endpoint),
                    None => vec![queue.clone()],
                })
                .collect()
        };
        for queue in &partitions {
            let declared = look_at_queue(&channel, queue)
                .await
                .with_context(|| format!("cannot look at queue `{queue}`"))?;
            ready += u64::from(declared.message_count());
        }
        close_quietly(&channel).await;
        Ok(ready)
    }

    async fn consumer_count(&self, queue: &str) -> Result<u32> {
        let channel = self.inner.side_channel().await?;
        let declared = look_at_queue(&channel, queue)
            .await
            .with_context(|| format!("cannot look at queue `{queue}`"))?;
        close_quietly(&channel).await;
        Ok(declared.consumer_count())
    }

    fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::SeqCst)
    }

    fn messaging_system(&self) -> &'static str {
        "rabbitmq"
    }

    fn lanes_keep_settling(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        self.inner.shown.clone()
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        // Everything is settled by now, so the close is a courtesy to the broker: a broker (or
        // client) that never answers it must not keep the process from exiting, nor hold a
        // reconnection that owns the link.
        let closing = async {
            let link = self.inner.link.lock().await.take();
            if let Some(link) = link
                && let Err(error) = link
                    .connection
                    .close(200, "courier host stopped".into())
                    .await
            {
                tracing::debug!(%error, "closing the broker connection");
            }
        };
        if tokio::time::timeout(CLOSE_PATIENCE, closing).await.is_err() {
            tracing::warn!(
                "the broker did not answer the connection's close within {CLOSE_PATIENCE:?}; \
                 dropping the connection"
            );
        }
    }
}

/// How long cancelling a consumer or closing the connection may take at shutdown before Courier
/// goes on without the broker's answer.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// Consumes one queue, re-subscribing after the connection or channel is lost.
struct AmqpConsumer {
    inner: Arc<Inner>,
    queue: String,
    prefetch: u16,
    /// The channel is shared with the ackers of its deliveries: cloning a lapin `Channel`
    /// clones a dozen `Arc`s, too many to do for every delivery.
    current: Option<(Arc<Channel>, lapin::Consumer)>,
    /// After [`Consumer::rejoin`]: subscribe again no sooner than this.
    rejoin_at: Option<tokio::time::Instant>,
    /// The channel of a cancelled consumer, open until [`Consumer::close`].
    cancelled: Option<Arc<Channel>>,
}

impl AmqpConsumer {
    async fn subscribe(&self) -> Result<(Channel, lapin::Consumer)> {
        let link = self.inner.link(None).await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .context("cannot open a channel")?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .context("cannot set the prefetch")?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("cannot consume `{}`", self.queue))?;
        Ok((channel, consumer))
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.inner.closed.load(Ordering::SeqCst) {
                return None;
            }
            let Some((channel, consumer)) = self.current.as_mut() else {
                if let Some(at) = self.rejoin_at.take() {
                    tokio::time::sleep_until(at).await;
                }
                match self.subscribe().await {
                    Ok((channel, consumer)) => {
                        tracing::debug!(queue = %self.queue, prefetch = self.prefetch, "subscribed");
                        self.current = Some((Arc::new(channel), consumer));
                        backoff = Duration::from_millis(100);
                    }
                    Err(error) => {
                        tracing::warn!(queue = %self.queue, error = format!("{error:#}"), "cannot consume; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(
                            self.inner.config.max_reconnect_backoff_ms,
                        ));
                    }
                }
                continue;
            };
            match consumer.next().await {
                Some(Ok(delivery)) => {
                    let dead_letter_reason = wire::dead_letter_reason(&delivery.properties);
                    let envelope = wire::from_delivery(
                        &delivery.properties,
                        delivery.data,
                        delivery.exchange.as_str(),
                    );
                    return Some(Delivery {
                        envelope,
                        redelivered: delivery.redelivered,
                        dead_letter_reason,
                        acker: Box::new(AmqpAcker {
                            delivery_tag: delivery.delivery_tag,
                            channel: Arc::clone(channel),
                            inner: Arc::clone(&self.inner),
                            queue: self.queue.clone(),
                        }),
                    });
                }
                Some(Err(error)) => {
                    tracing::warn!(queue = %self.queue, %error, "consumer lost; subscribing again");
                    self.current = None;
                }
                None => {
                    tracing::warn!(queue = %self.queue, "consumer cancelled; subscribing again");
                    self.current = None;
                }
            }
        }
    }

    async fn close(&mut self) {
        let cancelled = self.cancelled.take();
        let current = self.current.take().map(|(channel, _)| channel);
        for channel in cancelled.into_iter().chain(current) {
            close_quietly(&channel).await;
        }
    }

    async fn rejoin(&mut self, pause: Duration) {
        // Nothing taken from this channel is unsettled: closing it returns only what the
        // broker sent ahead, and hands the queue to the next consumer.
        if let Some((channel, _)) = self.current.take() {
            close_quietly(&channel).await;
        }
        self.rejoin_at = Some(tokio::time::Instant::now() + pause);
    }

    async fn cancel(&mut self) {
        // The channel stays open while deliveries taken from it are settled (each acker holds
        // it); the broker returns the ones it sent and nobody took when it closes.
        let Some((channel, consumer)) = self.current.take() else {
            return;
        };
        // Bounded like the connection's close: a cancel the broker never confirms must not
        // keep the host from draining. Closing the channel or the connection ends the
        // consumer anyway.
        self.cancelled = Some(Arc::clone(&channel));
        let cancelling = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
        match tokio::time::timeout(CLOSE_PATIENCE, cancelling).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(queue = %self.queue, %error, "cancelling a consumer");
            }
            Err(_) => tracing::warn!(
                queue = %self.queue,
                "the broker did not confirm the consumer's cancel within {CLOSE_PATIENCE:?}"
            ),
        }
    }
}

/// Settles a delivery on the channel it came on, which it keeps open until then.
///
/// It acks through the channel itself rather than lapin's `Acker`, which hands each ack to
/// lapin's internal task on the runtime and waits for that task: from a thread that is not
/// the runtime's (a lane), two more hops between threads per ack. The channel refuses an
/// ack once it is closed, so a delivery of a lost connection is never acked on the next one
/// (its delivery tag would name another message there), and says so, where a poisoned
/// `Acker` answered `Ok(false)`.
struct AmqpAcker {
    delivery_tag: u64,
    channel: Arc<Channel>,
    inner: Arc<Inner>,
    queue: String,
}

impl std::fmt::Debug for AmqpAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpAcker")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.channel
            .basic_ack(self.delivery_tag, BasicAckOptions::default())
            .await
            .with_context(|| format!("cannot ack on `{}`", self.queue))
    }

    /// Publishes the message back to its queue with the attempt raised (so the count lives
    /// in the message and survives a crash), through the holding queue of its delay if it has
    /// one, then acks the delivery. If the publish fails the delivery is returned to the queue
    /// as it is.
    async fn requeue(
        self: Box<Self>,
        mut envelope: Envelope,
        delay: Option<Duration>,
    ) -> Result<()> {
        envelope.attempt = envelope.attempt.saturating_add(1);
        let again = Outbound {
            route: Route::Send(self.queue.clone()),
            envelope,
            delay,
        };
        match self.inner.publish(std::slice::from_ref(&again)).await {
            Ok(()) => self.ack().await,
            Err(error) => {
                tracing::warn!(queue = %self.queue, error = format!("{error:#}"), "cannot requeue by publishing; returning the delivery");
                self.channel
                    .basic_nack(
                        self.delivery_tag,
                        BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        },
                    )
                    .await
                    .with_context(|| format!("cannot return a delivery to `{}`", self.queue))
            }
        }
    }
}

/// Asks about a queue without declaring it. A queue that does not exist closes the channel.
async fn look_at_queue(channel: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Asks about an ordered endpoint's exchange without declaring it. An exchange that does not
/// exist closes the channel.
async fn look_at_exchange(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Custom(CONSISTENT_HASH.into()),
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Unbinds an endpoint (its queue, or an ordered one's exchange) from a type's exchange.
async fn unbind_from(
    channel: &Channel,
    endpoint: &str,
    ordered: bool,
    exchange: &str,
) -> lapin::Result<()> {
    if ordered {
        channel
            .exchange_unbind(
                endpoint.into(),
                exchange.into(),
                "".into(),
                ExchangeUnbindOptions::default(),
                FieldTable::default(),
            )
            .await
    } else {
        channel
            .queue_unbind(
                endpoint.into(),
                exchange.into(),
                "".into(),
                FieldTable::default(),
            )
            .await
    }
}

/// Closes a channel that served its purpose; an error only means it is already gone.
async fn close_quietly(channel: &Channel) {
    if let Err(error) = channel.close(200, "done".into()).await {
        tracing::debug!(%error, "closing a channel");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_key_is_the_session_id_cut_to_what_amqp_carries() {
        let mut envelope = Envelope::new("urn:message:Test:Ping", "application/msgpack", vec![]);
        assert_eq!(routing_key_for(&envelope), envelope.id);
        envelope.session_id = Some("order-7".into());
        assert_eq!(routing_key_for(&envelope), "order-7");
        // 200 two-byte characters: 400 bytes, cut to 254 (the 255th byte is mid-character).
        envelope.session_id = Some("é".repeat(200));
        let key = routing_key_for(&envelope);
        assert_eq!(key.len(), 254);
        assert_eq!(key, "é".repeat(127));
        assert_eq!(routing_key_for(&envelope.clone()), key);
    }
}
