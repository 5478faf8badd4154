//! The broker as the host sees it. Two implementations: [`memory::MemoryBroker`] (the embedded
//! broker, `memory://`) and RabbitMQ. Both follow the contract written here, and the tests in
//! `tests/` check it through this trait.
//!
//! # The contract
//! - **Endpoints.** [`Transport::declare_endpoint`] creates an endpoint's input queue and binds
//!   it to the message types it subscribes to, idempotently; it also creates the dead-letter
//!   queues beside it: `<queue>_error`, `<queue>_skipped`, `<queue>_expired`.
//!   [`Transport::unbind`] removes bindings and leaves the queue and its messages alone.
//! - **Partitions.** An endpoint may ask for partitions ([`Endpoint::partitions`]). A broker
//!   shared by several hosts then spreads the endpoint's messages over that many queues by
//!   their session id, each consumed by one host at a time, and sends to the endpoint's name
//!   reach them too; [`Transport::input_queues`] names them. The embedded broker serves one
//!   host and keeps one queue.
//! - **Routing.** A published message ([`Route::Publish`]) is copied to every queue bound to its
//!   type, and to none if no queue is bound. A sent message ([`Route::Send`]) goes to the one
//!   queue named; sending to a queue that does not exist is an error.
//! - **Confirms.** [`Transport::dispatch`] returns `Ok` only once the broker holds every message
//!   it was given (for RabbitMQ: publisher confirms). A message with a delay is held by the
//!   broker and enqueued when the delay has passed.
//! - **Deliveries.** A consumer yields each message of its queue to one consumer at a time.
//!   A delivery is settled exactly once: [`Acker::ack`] removes it; [`Acker::requeue`] puts it
//!   back with its attempt count raised by one. A delivery that is never settled (the host
//!   crashed, the connection dropped) is delivered again, marked `redelivered`, ahead of the
//!   messages still waiting.
//! - **Backpressure.** A consumer holds at most `prefetch` unsettled deliveries. Queues are
//!   bounded: when one is full, `dispatch` waits for room instead of growing without limit.

pub mod amqp;
pub mod memory;
pub mod wire;

use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;

use crate::envelope::Envelope;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An event: every queue bound to the message's type gets a copy.
    Publish,
    /// A command or reply: the one named queue gets it.
    Send(String),
}

/// A message on its way to the broker.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub route: Route,
    pub envelope: Envelope,
    /// Hold the message this long before it is enqueued.
    pub delay: Option<Duration>,
}

/// An endpoint: one input queue, bound to the message types its plugin handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub queue: String,
    pub subscriptions: Vec<String>,
    /// For an ordered endpoint on a broker of several hosts, the partitions its session ids are
    /// spread over (see [`Transport::input_queues`]); 0 for one input queue.
    pub partitions: u16,
}

impl Endpoint {
    /// The endpoint of a plugin's current version: named after the plugin, bound to what it
    /// subscribes to, partitioned if it is ordered.
    pub fn of(plugin: &crate::plugin::Plugin) -> Self {
        let settings = plugin.settings();
        Endpoint {
            queue: plugin.name().to_owned(),
            subscriptions: plugin.info().subscriptions.clone(),
            partitions: if settings.ordered {
                settings.partitions
            } else {
                0
            },
        }
    }
}

/// Which dead-letter queue beside an input queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetter {
    /// `<queue>_error`: failed for good, or could not be read.
    Error,
    /// `<queue>_skipped`: no handler for its type.
    Skipped,
    /// `<queue>_expired`: its expiry time passed before it was handled.
    Expired,
}

impl DeadLetter {
    /// The dead-letter queue's name beside `queue`.
    pub fn queue_for(self, queue: &str) -> String {
        let suffix = match self {
            DeadLetter::Error => "_error",
            DeadLetter::Skipped => "_skipped",
            DeadLetter::Expired => "_expired",
        };
        format!("{queue}{suffix}")
    }

    pub const ALL: [DeadLetter; 3] = [DeadLetter::Error, DeadLetter::Skipped, DeadLetter::Expired];
}

/// A message taken from a queue, to be settled once.
#[derive(Debug)]
pub struct Delivery {
    pub envelope: Envelope,
    /// The broker delivered it before and it was never settled.
    pub redelivered: bool,
    /// Why the broker dead-lettered it into the queue it came from (RabbitMQ's
    /// `x-first-death-reason`: `expired`, `rejected`, `maxlen`, `delivery_limit`); `None` if it
    /// did not, and always on the embedded broker, where only a host dead-letters.
    pub dead_letter_reason: Option<String>,
    pub acker: Box<dyn Acker>,
}

/// Settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync + std::fmt::Debug {
    /// The message was handled: remove it from the queue.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Deliver the message again, as `envelope` (whose attempt the transport raises): at once,
    /// or after `delay`, which the broker holds (a crash of the host does not lose it).
    async fn requeue(self: Box<Self>, envelope: Envelope, delay: Option<Duration>) -> Result<()>;
}

/// Yields deliveries from one queue.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` once the consumer is closed.
    async fn next(&mut self) -> Option<Delivery>;

    /// Asks the broker to send no more deliveries. Those already taken are still settled
    /// normally; those the broker sent and [`Consumer::next`] has not yielded go back to the
    /// queue.
    async fn cancel(&mut self) {}

    /// Leaves the queue and joins it again after `pause`, behind the consumers already waiting
    /// for it: on a queue with a single active consumer, another host takes it over. What the
    /// broker sent and [`Consumer::next`] has not yielded goes back to the front of the queue.
    /// Only called once every delivery taken is settled. The embedded broker has nobody to
    /// hand over to and does nothing.
    async fn rejoin(&mut self, _pause: Duration) {}

    /// Once every delivery taken is settled or dropped, cancelled or not: ends the consumer,
    /// returning what was dropped unsettled, and what the broker sent and
    /// [`Consumer::next`] has not yielded, to the queue now, not when the connection closes.
    async fn close(&mut self) {}
}

/// A broker.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Creates (or confirms) an endpoint's queues and bindings.
    async fn declare_endpoint(&self, endpoint: &Endpoint) -> Result<()>;

    /// Stops routing the given message types to `queue`. The queue keeps what it holds.
    async fn unbind(&self, queue: &str, message_types: &[String]) -> Result<()>;

    /// The queues an endpoint's messages wait in, to be consumed: its one input queue, or,
    /// for a partitioned endpoint on a broker that partitions, each partition.
    fn input_queues(&self, endpoint: &Endpoint) -> Vec<String> {
        vec![endpoint.queue.clone()]
    }

    /// For a partitioned endpoint on a broker shared by several hosts: a queue nothing is
    /// routed to, where each host that serves the endpoint keeps one consumer, so that
    /// [`Transport::consumer_count`] of it tells how many hosts share the partitions.
    fn presence_queue(&self, _endpoint: &Endpoint) -> Option<String> {
        None
    }

    /// Starts consuming `queue` with at most `prefetch` unsettled deliveries.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>>;

    /// Hands messages to the broker; `Ok` once it holds every one of them.
    async fn dispatch(&self, messages: Vec<Outbound>) -> Result<()>;

    /// The broker, for logs (credentials removed).
    fn describe(&self) -> String;

    /// The broker's name as the OpenTelemetry messaging conventions spell it
    /// (`messaging.system`): `rabbitmq`, or `courier` for the embedded broker.
    fn messaging_system(&self) -> &'static str;

    /// Whether a lane keeps the settling of what it handled that must wait, polling it
    /// between calls, rather than handing it to a task of the runtime. It pays where the
    /// wait is for the broker's answer over the network (a confirm), which wakes one thread
    /// either way: the lane's, which then acks itself. On the embedded broker a settle waits
    /// only for room in a full queue, which another lane's ack makes, and a lane parked on
    /// that is a thread woken for every ack (docs/performance.md).
    fn lanes_keep_settling(&self) -> bool {
        false
    }

    /// Messages ready in the given queues (not counting those delivered and not yet settled).
    async fn ready_count(&self, queues: &[String]) -> Result<u64>;

    /// Consumers subscribed to `queue`, waiting ones included: on a partition, the hosts that
    /// serve or could serve it.
    async fn consumer_count(&self, _queue: &str) -> Result<u32> {
        Ok(1)
    }

    /// Whether the host is connected to the broker now, as far as it knows without asking.
    fn is_connected(&self) -> bool {
        true
    }

    /// Closes the connection once the host has drained.
    async fn close(&self) {}
}

impl std::fmt::Debug for dyn Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
