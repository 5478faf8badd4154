//! The consumers of an ordered plugin, and how a fleet of hosts shares its partitions.
//!
//! Each input queue (the one queue on the embedded broker, each partition on RabbitMQ) has a
//! *pump*: a task that takes its deliveries and offers them to the plugin's sequencer.
//!
//! On RabbitMQ every host consumes every partition, and the broker delivers a partition to one
//! consumer at a time (single active consumer), the first that subscribed. Left alone, the host
//! that starts first would keep every partition while the others wait. So each host balances:
//! every [`BALANCE_EVERY`] it counts the hosts (the consumers of the endpoint's presence queue,
//! where each host keeps one; the broker does not count those waiting on a partition), and if it
//! serves more than its share (partitions ÷ hosts, rounded up) it *yields* the extra ones.
//! A yielding pump stops taking deliveries, waits until every delivery it took is settled, and
//! only then closes its channel, which returns what the broker sent ahead, unread, to the
//! front of the partition. The broker then activates the next waiting host, which starts where
//! this one stopped, and the yielding pump subscribes again at the back of the line. No message
//! of a session is handled by two hosts at once, and none overtakes another.

use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::sequencer::Sequencer;
use super::{Dispatcher, Runner};
use crate::envelope::Envelope;
use crate::killswitch::KillSwitch;
use crate::transport::{Acker, Consumer, Delivery};

/// How often a host compares the partitions it serves with its share.
pub const BALANCE_EVERY: Duration = Duration::from_secs(2);

/// A partition that delivered within this window counts as served by this host.
const ACTIVE_WINDOW: Duration = Duration::from_secs(4);

/// How long a yielding pump waits for its deliveries to be settled before it gives up the
/// yield and goes on serving the partition (a session held by a long redelivery delay).
const YIELD_PATIENCE: Duration = Duration::from_secs(5);

/// How long a pump that yielded waits before it subscribes again, so the broker hands the
/// partition to a host already waiting.
const REJOIN_AFTER: Duration = Duration::from_secs(1);

/// How long a stopped pump waits for its deliveries to be settled before it closes its
/// consumer anyway.
const CLOSE_PATIENCE: Duration = Duration::from_secs(60);

/// One input queue of an ordered plugin, as its pump and the balancer see it.
#[derive(Debug)]
struct Partition {
    queue: String,
    /// Deliveries taken from this queue and not settled yet.
    unsettled: Arc<AtomicUsize>,
    last_delivery: Mutex<Option<Instant>>,
    yield_asked: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Partition {
    fn is_active(&self) -> bool {
        self.last_delivery
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < ACTIVE_WINDOW)
    }
}

/// Starts a pump per consumer, and the balancer when there are partitions to share.
pub(super) fn start(
    dispatcher: &Dispatcher,
    runner: &Runner,
    consumers: Vec<(String, Box<dyn Consumer>)>,
    presence: Option<(String, Box<dyn Consumer>)>,
    sequencer: Arc<Sequencer>,
    switch: Option<Arc<KillSwitch>>,
) {
    let mut partitions = Vec::with_capacity(consumers.len());
    for (queue, consumer) in consumers {
        let partition = Arc::new(Partition {
            queue,
            unsettled: Arc::default(),
            last_delivery: Mutex::new(None),
            yield_asked: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        });
        partitions.push(Arc::clone(&partition));
        let pump = Pump {
            dispatcher: dispatcher.clone(),
            partition,
            consumer,
            sequencer: Arc::clone(&sequencer),
            switch: switch.clone(),
            stop: runner.stop.clone(),
        };
        // Each pump closes the sequencer as it ends (see `Pump::run`).
        runner.tasks.spawn(pump.run());
    }
    if let Some((queue, mut consumer)) = presence {
        // The consumer is this host's presence; nothing is routed to its queue, and anything
        // that lands there anyway is dropped.
        let stop = runner.stop.clone();
        runner.tasks.spawn(async move {
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => None,
                    delivery = consumer.next() => delivery,
                };
                let Some(stray) = next else { break };
                if let Err(error) = stray.acker.ack().await {
                    tracing::debug!(error = format!("{error:#}"), "dropping a stray message");
                }
            }
            consumer.cancel().await;
            consumer.close().await;
        });
        runner.tasks.spawn(balance(
            dispatcher.clone(),
            queue,
            partitions,
            runner.stop.clone(),
        ));
    }
}

struct Pump {
    dispatcher: Dispatcher,
    partition: Arc<Partition>,
    consumer: Box<dyn Consumer>,
    sequencer: Arc<Sequencer>,
    switch: Option<Arc<KillSwitch>>,
    stop: CancellationToken,
}

impl Pump {
    /// Offers the queue's deliveries to the sequencer until the runner stops.
    async fn run(mut self) {
        let dispatcher = self.dispatcher.clone();
        loop {
            if self.partition.yield_asked.swap(false, Ordering::SeqCst) {
                self.give_way().await;
                continue;
            }
            let next = tokio::select! {
                biased;
                () = self.stop.cancelled() => None,
                () = self.partition.wake.notified() => continue,
                delivery = self.consumer.next() => delivery,
            };
            let Some(delivery) = next else { break };
            dispatcher.in_flight.fetch_add(1, Ordering::SeqCst);
            // Asked once per delivery, as the feed asks (see `Feed::take`).
            if !dispatcher
                .admitted(self.switch.as_deref(), &self.stop)
                .await
            {
                drop(delivery);
                dispatcher.in_flight.fetch_sub(1, Ordering::SeqCst);
                break;
            }
            *self
                .partition
                .last_delivery
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            self.sequencer.offer(self.counted(delivery));
        }
        // The partition stays this host's until everything taken from it is settled: a
        // cancel would let the broker activate another host's consumer at once, while a
        // message of one of its sessions is still being handled here. So the sequencer is
        // closed (what it held goes back unsettled), the lanes finish what they hold, and only
        // then is the channel closed, which returns the rest and hands the partition over.
        self.sequencer.close();
        let started = Instant::now();
        while self.partition.unsettled.load(Ordering::SeqCst) > 0
            && started.elapsed() < CLOSE_PATIENCE
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.consumer.close().await;
    }

    /// Counts the delivery as unsettled in this partition until it is settled or dropped.
    fn counted(&self, delivery: Delivery) -> Delivery {
        self.partition.unsettled.fetch_add(1, Ordering::SeqCst);
        Delivery {
            acker: Box::new(CountedAcker {
                acker: delivery.acker,
                _count: Unsettled(Arc::clone(&self.partition.unsettled)),
            }),
            ..delivery
        }
    }

    /// Hands the partition to the next waiting host once every delivery taken from it is
    /// settled; if that takes longer than [`YIELD_PATIENCE`], keeps it.
    async fn give_way(&mut self) {
        let started = Instant::now();
        while self.partition.unsettled.load(Ordering::SeqCst) > 0 {
            if started.elapsed() > YIELD_PATIENCE || self.stop.is_cancelled() {
                tracing::debug!(queue = %self.partition.queue, "keeping the partition: its deliveries are not settled");
                return;
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        tracing::info!(queue = %self.partition.queue, "yielding the partition to another host");
        self.consumer.rejoin(REJOIN_AFTER).await;
        *self
            .partition
            .last_delivery
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Every [`BALANCE_EVERY`] (with a jitter, so hosts do not yield in step), asks the pumps of
/// the partitions this host serves beyond its share to yield them.
async fn balance(
    dispatcher: Dispatcher,
    presence: String,
    partitions: Vec<Arc<Partition>>,
    stop: CancellationToken,
) {
    let jitter = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    let period = BALANCE_EVERY + Duration::from_millis(jitter % 500);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let hosts = match dispatcher.transport.consumer_count(&presence).await {
            Ok(hosts) => (hosts as usize).max(1),
            Err(error) => {
                tracing::debug!(error = format!("{error:#}"), "cannot count the hosts");
                continue;
            }
        };
        let share = partitions.len().div_ceil(hosts);
        let mut active: Vec<&Arc<Partition>> =
            partitions.iter().filter(|p| p.is_active()).collect();
        // Those with the fewest deliveries unsettled are yielded: they hand over soonest, and
        // one whose session waits out a redelivery delay here is kept.
        active.sort_by_key(|p| std::cmp::Reverse(p.unsettled.load(Ordering::SeqCst)));
        for partition in active.iter().skip(share) {
            partition.yield_asked.store(true, Ordering::SeqCst);
            partition.wake.notify_one();
        }
        if active.len() > share {
            tracing::debug!(
                serving = active.len(),
                share,
                hosts,
                "serving more partitions than this host's share; yielding the rest"
            );
        }
    }
}

/// Lowers a partition's count of unsettled deliveries when dropped.
#[derive(Debug)]
struct Unsettled(Arc<AtomicUsize>);

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The acker of a delivery counted in its partition's unsettled deliveries.
#[derive(Debug)]
struct CountedAcker {
    acker: Box<dyn Acker>,
    _count: Unsettled,
}

#[async_trait]
impl Acker for CountedAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.acker.ack().await
    }

    async fn requeue(self: Box<Self>, envelope: Envelope, delay: Option<Duration>) -> Result<()> {
        self.acker.requeue(envelope, delay).await
    }
}
