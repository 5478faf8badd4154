//! Moves messages from a plugin's input queue through its handler and settles them.
//!
//! Each plugin has `concurrency` lanes. A lane is a thread of the runtime's blocking pool that
//! takes one delivery at a time from the plugin's consumer and runs the handler synchronously.
//! Settling the delivery (publish the outbox, wait for the confirms, ack) starts on the lane;
//! what must wait goes on as a future the lane keeps and polls whenever it waits (RabbitMQ:
//! a confirm wakes the lane that acks rather than a task on another thread), or as a task of
//! the runtime (the embedded broker; see `Transport::lanes_keep_settling`). Either way the
//! lane goes on to the next delivery while the broker confirms. The consumer's prefetch,
//! [`prefetch_for`] the concurrency, bounds the deliveries handled or being settled.
//!
//! The lanes take turns on the consumer (the plugin's `Feed`): a delivery goes from the
//! broker to the thread that handles it, with no task in between to wake. On two cores, the
//! hop through a pump task and a channel cost three quarters of the embedded broker's
//! throughput (docs/performance.md). A lane whose calls are short keeps the consumer from one
//! delivery to the next, since waking another lane's thread costs more than such a call. What
//! a lane keeps is lent to each call and called in by a timer once the call has run for an
//! epoch tick (`dispatch/loan.rs`), so a call that turns out long holds up the other lanes,
//! and the acks of what its lane handled before, for two ticks at most.
//!
//! Each plugin's feed and lanes form a *runner*, started and stopped on their own: a new
//! version of a plugin needs no new runner (each lane reads the plugin's current version for
//! each message), except when it changes the concurrency or the kill switch, and removing a
//! plugin drains its runner alone.
//!
//! An ordered plugin (see [`crate::session`]) has a sequencer between its consumers and its
//! lanes, which hands out one message per session id at a time (`dispatch/sequencer.rs`), and
//! a pump per input queue that feeds it; on RabbitMQ the pumps of a fleet's hosts also share
//! the endpoint's partitions among them (`dispatch/partitions.rs`).
//!
//! Handlers never run on the async worker threads: a handler that uses its whole deadline, or
//! waits on a WASI clock, holds only its own lane, while the broker connection, the admin API
//! and the other plugins carry on.
//!
//! A delivery is settled only after its outcome is known: on success the outbox is released
//! to the broker first and the message acked after the broker confirmed it; every other
//! outcome follows [`crate::recoverability`].

mod loan;
mod partitions;
mod sequencer;

pub use loan::Lending;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::ExpiredPolicy;
use crate::envelope::{is_known_content_type, now_ms};
use crate::inbox::Inbox;
use crate::killswitch::{Admission, KillSwitch, KillSwitchConfig};
use crate::plugin::{Outcome, Plugin};
use crate::recoverability::{self, Decision, FIRST_FAILURE_HEADER, FaultSource};
use crate::registry::PluginSlot;
use crate::session::{self, SessionKeyRule};
use crate::stats::{Event, Stats};
use crate::telemetry;
use crate::transport::{Consumer, DeadLetter, Delivery, Endpoint, Outbound, Route, Transport};
use loan::{HeldConsumer, Loans, Settling};

/// Runs the lanes of all plugins and tracks their in-flight work.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    transport: Arc<dyn Transport>,
    stats: Arc<Stats>,
    host_name: Arc<str>,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Deliveries taken from a queue and not yet settled.
    in_flight: Arc<AtomicUsize>,
    /// Ids of messages handled, so a redelivery after success is not handled again.
    inbox: Option<Arc<dyn Inbox>>,
    /// The runner of each plugin, by queue.
    runners: Arc<Mutex<HashMap<String, Runner>>>,
    /// Rules that give follow-ups, and the deliveries of ordered plugins, a session id.
    session_keys: Arc<[SessionKeyRule]>,
    /// What the lanes lend to their handler calls (`dispatch/loan.rs`).
    loans: Arc<Loans>,
}

/// One plugin's lanes, and the settling they started.
#[derive(Debug, Clone)]
struct Runner {
    stop: CancellationToken,
    tasks: TaskTracker,
    shape: RunnerShape,
    switch: Option<Arc<KillSwitch>>,
}

/// The settings a runner is built from: a version that changes them needs a new runner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunnerShape {
    pub concurrency: u32,
    pub kill_switch: Option<KillSwitchConfig>,
    /// With `drop`, the runner also empties `<queue>_expired`.
    pub expired: ExpiredPolicy,
    /// Sessions are handled in order, over this many partitions (see [`Endpoint::of`]).
    pub ordered: Option<u16>,
}

impl RunnerShape {
    pub fn of(plugin: &Plugin) -> Self {
        let settings = plugin.settings();
        RunnerShape {
            concurrency: settings.concurrency,
            kill_switch: settings.kill_switch,
            expired: settings.expired,
            ordered: settings.ordered.then_some(settings.partitions),
        }
    }

    /// Deliveries each of the runner's consumers holds at once.
    pub fn prefetch(&self) -> u16 {
        let prefetch = prefetch_for(self.concurrency);
        if self.ordered.is_some() {
            // Held-back messages of busy or failing sessions take room; four times as much
            // leaves the lanes messages of other sessions to work on.
            prefetch.saturating_mul(4)
        } else {
            prefetch
        }
    }
}

impl Runner {
    /// Stops taking deliveries and waits until every one taken is settled.
    async fn drain(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Dispatcher {
    pub fn new(
        transport: Arc<dyn Transport>,
        stats: Arc<Stats>,
        host_name: &str,
        inbox: Option<Arc<dyn Inbox>>,
        session_keys: Arc<[SessionKeyRule]>,
        lending: Lending,
    ) -> Self {
        let dispatcher = Dispatcher {
            transport,
            stats,
            host_name: host_name.into(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            in_flight: Arc::default(),
            inbox,
            runners: Arc::default(),
            session_keys,
            loans: Loans::start(lending),
        };
        if let Some(inbox) = dispatcher.inbox.clone() {
            let stop = dispatcher.stop.clone();
            dispatcher.tasks.spawn(async move {
                // Forget what is past the retention window, once an hour.
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(INBOX_PRUNE_EVERY) => {}
                    }
                    match inbox.prune().await {
                        Ok(forgotten) => tracing::debug!(forgotten, "inbox pruned"),
                        Err(error) => {
                            tracing::warn!(error = format!("{error:#}"), "cannot prune the inbox")
                        }
                    }
                }
            });
        }
        dispatcher
    }

    /// Declares the plugin's endpoint (binding it to what the current version subscribes to)
    /// and starts consuming it. If the plugin had a runner, the new one starts first and the
    /// old one is drained after: the queue always has a consumer. An ordered plugin's old
    /// runner is drained first instead, so two runners never hold one session.
    pub async fn start(&self, slot: Arc<PluginSlot>) -> Result<()> {
        let plugin = slot.load_full();
        let endpoint = Endpoint::of(&plugin);
        self.transport.declare_endpoint(&endpoint).await?;
        let shape = RunnerShape::of(&plugin);
        let concurrency = shape.concurrency;
        let mut consumers = Vec::new();
        for queue in self.transport.input_queues(&endpoint) {
            let consumer = self.transport.consume(&queue, shape.prefetch()).await?;
            consumers.push((queue, consumer));
        }
        let switch = shape
            .kill_switch
            .map(|config| Arc::new(KillSwitch::new(plugin.name(), config)));
        let runner = Runner {
            stop: self.stop.child_token(),
            tasks: TaskTracker::new(),
            shape,
            switch: switch.clone(),
        };
        tracing::info!(
            plugin = plugin.name(),
            version = plugin.version(),
            queue = %endpoint.queue,
            subscriptions = ?endpoint.subscriptions,
            concurrency,
            "consuming"
        );
        if shape.expired == ExpiredPolicy::Drop {
            let expired_queue = DeadLetter::Expired.queue_for(&endpoint.queue);
            let expired = self
                .transport
                .consume(&expired_queue, EXPIRED_SWEEP_PREFETCH)
                .await?;
            runner.tasks.spawn(self.clone().sweep_expired(
                expired,
                endpoint.queue.clone(),
                Arc::clone(&slot),
                runner.stop.clone(),
            ));
        }
        self.retire_if_ordered(&endpoint.queue, shape).await;
        let source = if shape.ordered.is_some() {
            let sequencer = sequencer::Sequencer::new(
                Arc::clone(&self.session_keys),
                Arc::clone(&self.in_flight),
                runner.stop.clone(),
                runner.tasks.clone(),
            );
            let presence = match self.transport.presence_queue(&endpoint) {
                Some(queue) => {
                    let consumer = self.transport.consume(&queue, 1).await?;
                    Some((queue, consumer))
                }
                None => None,
            };
            partitions::start(
                self,
                &runner,
                consumers,
                presence,
                Arc::clone(&sequencer),
                switch.clone(),
            );
            Source::Sequenced(sequencer)
        } else {
            Source::Feed(Arc::new(Feed {
                dispatcher: self.clone(),
                consumer: Arc::new(tokio::sync::Mutex::new(
                    consumers.pop().map(|(_, consumer)| consumer),
                )),
                switch: switch.clone(),
                stop: runner.stop.clone(),
            }))
        };
        for _ in 0..concurrency {
            let lane = Lane {
                dispatcher: self.clone(),
                slot: Arc::clone(&slot),
                queue: endpoint.queue.clone(),
                source: source.clone(),
                switch: switch.clone(),
                settling: runner.tasks.clone(),
            };
            runner.tasks.spawn_blocking(move || lane.run());
        }
        let replaced = self
            .runners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(endpoint.queue.clone(), runner);
        if let Some(replaced) = replaced {
            replaced.drain().await;
            tracing::info!(queue = %endpoint.queue, "previous runner drained");
        }
        Ok(())
    }

    /// Drains the plugin's runner before a new one starts if either is ordered: two runners
    /// at once could each hold a message of one session.
    async fn retire_if_ordered(&self, queue: &str, new: RunnerShape) {
        let was_ordered = self.shape(queue).is_some_and(|old| old.ordered.is_some());
        if new.ordered.is_some() || was_ordered {
            self.retire(queue).await;
        }
    }

    /// The settings the plugin's runner was started with, if it has one.
    pub fn shape(&self, queue: &str) -> Option<RunnerShape> {
        self.runners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
            .map(|runner| runner.shape)
    }

    /// Each consuming queue: its prefetch, and whether its kill switch (if any) is open.
    pub fn consumers(&self) -> Vec<(String, u16, Option<bool>)> {
        self.runners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(queue, runner)| {
                (
                    queue.clone(),
                    runner.shape.prefetch(),
                    runner.switch.as_ref().map(|switch| switch.is_open()),
                )
            })
            .collect()
    }

    /// Stops consuming `queue` and waits until every delivery taken from it is settled.
    pub async fn retire(&self, queue: &str) {
        let runner = self
            .runners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(queue);
        if let Some(runner) = runner {
            runner.drain().await;
        }
    }

    /// With `expired = "drop"`: drops what the broker expired into `<queue>_expired` (a
    /// message whose time-to-live ran out while it waited in the input queue), counting each
    /// as expired, until the runner stops. The input queue dead-letters there for every reason
    /// the broker has, so what it gave up on for another reason (a quorum queue's delivery
    /// limit, a length limit) is moved to `<queue>_error` with that reason instead.
    async fn sweep_expired(
        self,
        mut consumer: Box<dyn Consumer>,
        queue: String,
        slot: Arc<PluginSlot>,
        stop: CancellationToken,
    ) {
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => None,
                delivery = consumer.next() => delivery,
            };
            let Some(delivery) = next else { break };
            let plugin = slot.load();
            if let Some(reason) = not_expired(&delivery) {
                let error = format!("the broker dead-lettered it from {queue}: {reason}");
                self.dead_letter(
                    &plugin,
                    &queue,
                    delivery,
                    DeadLetter::Error,
                    BROKER_DEAD_LETTERED,
                    &error,
                )
                .await;
                continue;
            }
            tracing::debug!(
                plugin = plugin.name(),
                message_id = %delivery.envelope.id,
                "expired in the queue: dropped"
            );
            self.stats.record(
                &delivery.envelope.message_type,
                Some(plugin.label()),
                Event::Expired,
            );
            ack(delivery).await;
        }
        consumer.cancel().await;
    }

    /// Waits until the kill switch (if any) lets a delivery through; `false` if the runner
    /// stops first.
    async fn admitted(&self, switch: Option<&KillSwitch>, stop: &CancellationToken) -> bool {
        let Some(switch) = switch else {
            return !stop.is_cancelled();
        };
        while let Admission::Wait(pause) = switch.admit() {
            tokio::select! {
                biased;
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
        }
        !stop.is_cancelled()
    }

    /// Deliveries being handled now, across all plugins.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops pulling new messages; the lanes end once their handler calls return, and the
    /// settling of what they handled goes on as tasks [`Dispatcher::drain`] waits for.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops pulling new messages and waits for the ones in flight to be settled.
    pub async fn drain(&self) {
        self.stop.cancel();
        let runners: Vec<Runner> = self
            .runners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, runner)| runner)
            .collect();
        for runner in runners {
            runner.drain().await;
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Deliveries the sweeper of `<queue>_expired` holds at once.
const EXPIRED_SWEEP_PREFETCH: u16 = 32;

/// How often the inbox forgets what is past its retention window.
const INBOX_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deliveries a plugin holds at once: twice its handlers, so that while some wait for the
/// broker to confirm their follow-ups, every handler still has a message to work on.
pub fn prefetch_for(concurrency: u32) -> u16 {
    u16::try_from(concurrency.saturating_mul(2)).unwrap_or(u16::MAX)
}

/// A plugin's consumer, which its lanes take turns on.
struct Feed {
    dispatcher: Dispatcher,
    /// `None` once the runner stopped and the consumer was cancelled.
    consumer: Arc<tokio::sync::Mutex<Option<Box<dyn Consumer>>>>,
    switch: Option<Arc<KillSwitch>>,
    stop: CancellationToken,
}

impl Feed {
    /// The next delivery for the calling lane, which keeps the consumer in `held` afterwards
    /// (it empties `held` to let the next lane have it); `None` once the runner stops or the
    /// consumer closes. The lane that sees it first cancels the consumer, so what the broker
    /// sent and no lane took goes back to the queue; the others find it gone.
    async fn next(&self, held: &mut Option<HeldConsumer>) -> Option<Delivery> {
        let consumer = match held.take() {
            Some(consumer) => consumer,
            None => Arc::clone(&self.consumer).lock_owned().await,
        };
        let consumer = held.insert(consumer);
        let delivery = self.take(consumer.as_deref_mut()?).await;
        if delivery.is_none()
            && let Some(mut cancelled) = consumer.take()
        {
            cancelled.cancel().await;
        }
        delivery
    }

    async fn take(&self, consumer: &mut dyn Consumer) -> Option<Delivery> {
        if self.stop.is_cancelled() {
            return None;
        }
        let delivery = tokio::select! {
            biased;
            () = self.stop.cancelled() => None,
            delivery = consumer.next() => delivery,
        }?;
        // Counted from here, so a delivery waiting for its handler is not taken for idleness.
        self.dispatcher.in_flight.fetch_add(1, Ordering::SeqCst);
        // The kill switch is asked once per delivery, now that there is one: letting a
        // delivery through half-open is the trial, and asking again before its outcome is
        // known would wait for ever. While the switch is open the delivery is held
        // (unacknowledged); if the host stops meanwhile, dropping it returns it to the broker.
        if !self
            .dispatcher
            .admitted(self.switch.as_deref(), &self.stop)
            .await
        {
            drop(delivery);
            self.dispatcher.in_flight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(delivery)
    }
}

/// Where a plugin's lanes take their deliveries from.
#[derive(Clone)]
enum Source {
    /// The consumer itself, in the order the broker delivers.
    Feed(Arc<Feed>),
    /// An ordered plugin's sequencer: one delivery per session at a time.
    Sequenced(Arc<sequencer::Sequencer>),
}

impl Source {
    /// The next delivery for a lane. From a feed, the lane keeps the consumer in `held`.
    async fn next(&self, held: &mut Option<HeldConsumer>) -> Option<Delivery> {
        match self {
            Source::Feed(feed) => feed.next(held).await,
            Source::Sequenced(sequencer) => sequencer.next().await,
        }
    }
}

/// One handler call at a time, on a thread of the blocking pool.
struct Lane {
    dispatcher: Dispatcher,
    slot: Arc<PluginSlot>,
    queue: String,
    source: Source,
    switch: Option<Arc<KillSwitch>>,
    /// The runner's tasks, where settling goes once the lane lets go of it.
    settling: TaskTracker,
}

impl Lane {
    fn run(self) {
        let runtime = tokio::runtime::Handle::current();
        let lender = self.dispatcher.loans.open(&runtime, &self.settling);
        let keep_settling = self.dispatcher.transport.lanes_keep_settling();
        // The settling this lane started that still waits on the broker, polled whenever the
        // lane waits for its next delivery.
        let mut settling = lender.settling();
        // The plugin's consumer, while this lane keeps it between deliveries.
        let mut held = None;
        // How long the lane's last handler call took; unknown before the first, which is
        // taken to be long, so that a plugin's first calls spread over its lanes.
        let mut last_call = Duration::MAX;
        while let Some(delivery) = runtime.block_on(settling.alongside(self.source.next(&mut held)))
        {
            // The version current now handles this message, even if a newer one arrives meanwhile.
            let plugin = self.slot.load_full();
            // Everything done for this delivery, settling included, happens inside its span.
            let span = telemetry::message_span(
                self.dispatcher.transport.messaging_system(),
                &self.queue,
                plugin.label(),
                &delivery.envelope,
            );
            let _entered = span.enter();
            // If the last call was long, this one may be too: the next lane has the consumer
            // through it, and the runtime what still settles.
            self.let_go_after(last_call, &mut held, &mut settling);
            let mut delivery = delivery;
            // The inbox's look-up (a round trip with PostgreSQL) and the handler run here, with
            // what the lane keeps lent, and called in if they take a tick. The handler runs
            // outside `block_on`: WASI may block on the runtime itself.
            let started = Instant::now();
            let step = lender.during(started, &mut held, &mut settling, || {
                let seen =
                    self.dispatcher
                        .already_handled(&runtime, &plugin, &self.queue, &delivery);
                (!seen).then(|| self.dispatcher.run(&plugin, &self.queue, &mut delivery))
            });
            last_call = started.elapsed();
            let Some(step) = step else {
                runtime.block_on(ack(delivery));
                self.dispatcher.in_flight.fetch_sub(1, Ordering::SeqCst);
                continue;
            };
            if let Some(switch) = &self.switch {
                match &step {
                    Step::Decided(decision, _) => {
                        switch.record(!matches!(decision, Decision::Complete));
                    }
                    Step::SetAside { .. } | Step::DropExpired { .. } => switch.record_set_aside(),
                }
            }
            // Settling waits on the broker (confirms, then the ack); the lane does not. It
            // starts the settling itself, so the follow-ups leave without a hop to another
            // thread, and keeps what must wait, or hands it to the runtime (see
            // `Transport::lanes_keep_settling`); the prefetch bounds what is in flight.
            let dispatcher = self.dispatcher.clone();
            let queue = self.queue.clone();
            let mut settle = Box::pin(
                async move {
                    dispatcher.settle(&plugin, &queue, delivery, step).await;
                    dispatcher.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                .instrument(span.clone()),
            );
            if runtime
                .block_on(futures_lite::future::poll_once(&mut settle))
                .is_none()
            {
                if keep_settling {
                    settling.push(settle);
                } else {
                    self.settling.spawn_on(settle, &runtime);
                }
            }
            self.let_go_after(last_call, &mut held, &mut settling);
        }
        drop(held);
        // The runner stops: what still settles finishes on the runtime, which the runner's
        // drain waits for.
        settling.hand_over();
        tracing::debug!(queue = %self.queue, "lane stopped");
    }

    /// After a handler call of `took`: lets the next lane have the consumer, and the runtime
    /// what this lane still settles, if the call was long enough for either to matter.
    ///
    /// A lane whose last call was short (`[engine] short_call_us`, 100 µs by default) keeps
    /// the plugin's consumer through its next call and on to the next delivery, and the other
    /// lanes wait: handing the consumer over wakes another lane's thread, which costs more than
    /// a call this short. After a longer call the lane lets the consumer go before its next
    /// call, so that the plugin's lanes run side by side.
    fn let_go_after(
        &self,
        took: Duration,
        held: &mut Option<HeldConsumer>,
        settling: &mut Settling,
    ) {
        if took >= self.dispatcher.loans.short_call() {
            *held = None;
        }
        if took >= SETTLE_ON_LANE_UNDER {
            settling.hand_over();
        }
    }
}

/// A lane whose last call took at least this long hands its unfinished settling to the
/// runtime: the lane polls its settling only between calls, and would otherwise hold acks
/// (and the prefetch they free) for as long as its calls take, until the timer calls them in
/// (within two ticks). Short calls, the usual case, keep it on the lane.
const SETTLE_ON_LANE_UNDER: Duration = Duration::from_millis(1);

impl Dispatcher {
    /// Whether the inbox says this endpoint handled the message before. If the inbox cannot
    /// be asked, the message is handled (at least once beats at most once).
    fn already_handled(
        &self,
        runtime: &tokio::runtime::Handle,
        plugin: &Plugin,
        queue: &str,
        delivery: &Delivery,
    ) -> bool {
        let Some(inbox) = &self.inbox else {
            return false;
        };
        let envelope = &delivery.envelope;
        match runtime.block_on(inbox.seen(queue, &envelope.id)) {
            Ok(false) => false,
            Ok(true) => {
                tracing::info!("handled before: acked without handling it again");
                telemetry::record_outcome("duplicate", None);
                self.stats.record(
                    &envelope.message_type,
                    Some(plugin.label()),
                    Event::Duplicate,
                );
                true
            }
            Err(error) => {
                tracing::warn!(message_id = %envelope.id, error = format!("{error:#}"), "the inbox cannot be asked; handling the message");
                false
            }
        }
    }
}

/// Acks a delivery; if the ack is lost, the broker delivers the message again.
async fn ack(delivery: Delivery) {
    let message_id = delivery.envelope.id;
    if let Err(error) = delivery.acker.ack().await {
        tracing::error!(
            message_id,
            error = format!("{error:#}"),
            "ack failed; the broker will deliver the message again"
        );
    }
}

/// What to do with a delivery once its handler ran (or was not run).
enum Step {
    Decided(Decision, Vec<Outbound>),
    SetAside {
        target: DeadLetter,
        reason: &'static str,
        error: String,
    },
    /// Expired, and the plugin says `expired = "drop"`.
    DropExpired {
        error: String,
    },
}

/// How long a message whose follow-ups met an unreachable broker waits before it is handled
/// again (where the host, not the broker, holds it: the embedded broker, ordered sessions).
const UNREACHABLE_PAUSE: Duration = Duration::from_secs(1);

impl Dispatcher {
    /// Checks a delivery and, if it can be handled, runs its handler. Synchronous: the
    /// handler is bounded by the plugin's deadline.
    fn run(&self, plugin: &Plugin, queue: &str, delivery: &mut Delivery) -> Step {
        let envelope = &delivery.envelope;
        let settings = plugin.settings();
        let set_aside = |target, reason, error| Step::SetAside {
            target,
            reason,
            error,
        };
        if envelope.is_expired_at(now_ms()) {
            let error = format!(
                "expired at {} ms, before it was handled",
                envelope.expires_at_ms.unwrap_or_default()
            );
            return match settings.expired {
                ExpiredPolicy::DeadLetter => set_aside(DeadLetter::Expired, "expired", error),
                ExpiredPolicy::Drop => Step::DropExpired { error },
            };
        }
        if !plugin.handles(&envelope.message_type) {
            let error = format!(
                "plugin {} has no handler for `{}`",
                plugin.name(),
                envelope.message_type
            );
            return set_aside(DeadLetter::Skipped, "no-handler", error);
        }
        if !is_known_content_type(&envelope.content_type) {
            let error = format!(
                "content type `{}` is not supported: use application/msgpack or application/json",
                envelope.content_type
            );
            return set_aside(DeadLetter::Error, "unsupported-content-type", error);
        }
        if envelope.body.len() as u64 > settings.max_message_bytes {
            let error = format!(
                "body of {} bytes is over the limit of {} bytes",
                envelope.body.len(),
                settings.max_message_bytes
            );
            return set_aside(DeadLetter::Error, "too-large", error);
        }

        let mut retrying = false;
        loop {
            let envelope = &delivery.envelope;
            let started = Instant::now();
            let invocation = if retrying {
                plugin.invoke_fresh(envelope, queue)
            } else {
                plugin.invoke(envelope, queue)
            };
            tracing::debug!(
                attempt = envelope.attempt,
                outcome = ?invocation.outcome,
                elapsed_us = started.elapsed().as_micros() as u64,
                "handled"
            );
            self.stats.metrics().handler_call(
                plugin.name(),
                plugin.version(),
                started.elapsed(),
                invocation.instantiation,
            );
            let decision =
                recoverability::decide(&invocation.outcome, envelope.attempt, &settings.retry);
            if !matches!(decision, Decision::Complete)
                && envelope.header(FIRST_FAILURE_HEADER).is_none()
            {
                delivery
                    .envelope
                    .set_header(FIRST_FAILURE_HEADER, now_ms().to_string());
            }
            let Decision::RetryNow { error } = decision else {
                return Step::Decided(decision, invocation.outbox);
            };
            // The outbox of a failed call is dropped; the next call starts clean.
            tracing::info!(
                attempt = delivery.envelope.attempt,
                %error,
                "handling failed; retrying at once on a fresh instance"
            );
            self.stats.record(
                &delivery.envelope.message_type,
                Some(plugin.label()),
                Event::Retried,
            );
            delivery.envelope.attempt = delivery.envelope.attempt.saturating_add(1);
            retrying = true;
        }
    }

    /// Settles a delivery as `step` says: it is settled when this returns.
    async fn settle(&self, plugin: &Plugin, queue: &str, delivery: Delivery, step: Step) {
        let envelope = &delivery.envelope;
        match step {
            Step::SetAside {
                target,
                reason,
                error,
            } => {
                self.dead_letter(plugin, queue, delivery, target, reason, &error)
                    .await;
            }
            Step::DropExpired { error } => {
                tracing::info!(%error, "expired: dropped");
                telemetry::record_outcome("expired", None);
                self.stats
                    .record(&envelope.message_type, Some(plugin.label()), Event::Expired);
                ack(delivery).await;
            }
            Step::Decided(Decision::Complete, outbox) => {
                self.complete(plugin, queue, delivery, outbox).await
            }
            Step::Decided(Decision::RetryNow { error }, _) => {
                // `run` retries at once itself; this is only reached if that changes.
                tracing::error!(message_id = %envelope.id, %error, "unexpected immediate retry; redelivering");
                self.requeue(delivery, None).await;
            }
            Step::Decided(Decision::Redeliver { delay, error }, _) => {
                tracing::warn!(
                    attempt = envelope.attempt,
                    %error,
                    redeliver_in_ms = delay.as_millis() as u64,
                    "handling failed; the message will be delivered again after a delay"
                );
                telemetry::record_outcome("redelivered", Some(&error));
                self.stats
                    .record(&envelope.message_type, Some(plugin.label()), Event::Retried);
                self.requeue(delivery, Some(delay)).await;
            }
            Step::Decided(Decision::DeadLetter { reason, error }, _) => {
                self.dead_letter(plugin, queue, delivery, DeadLetter::Error, reason, &error)
                    .await;
            }
        }
    }

    /// Releases the outbox, and acks once the broker holds all of it. If the broker refuses
    /// (it is unreachable, or a command's endpoint does not exist), the attempt counts as failed
    /// under the plugin's retry policy: the message is delivered again, at once or after a
    /// delay, and goes to the error queue once the policy gives up, so a handler that sends to
    /// an endpoint that does not exist cannot keep its message circling. While the broker is
    /// unreachable the policy is not asked. Redelivered, a message publishes the same ids, so
    /// the follow-ups the broker did take (RabbitMQ takes those before the refused one; the
    /// embedded broker checks every route first and takes none) can be told apart.
    async fn complete(
        &self,
        plugin: &Plugin,
        queue: &str,
        mut delivery: Delivery,
        mut outbox: Vec<Outbound>,
    ) {
        for message in &mut outbox {
            session::stamp(&mut message.envelope, &self.session_keys);
        }
        let published: Vec<String> = outbox
            .iter()
            .map(|m| m.envelope.message_type.clone())
            .collect();
        if let Err(error) = self.transport.dispatch(outbox).await {
            let error = format!("the broker did not take the follow-ups: {error:#}");
            let attempt = delivery.envelope.attempt;
            if !self.transport.is_connected() {
                // The broker is out of reach, not refusing: the handler is not at fault, so the
                // retry policy is not asked and the outage alone never sends the message to the
                // error queue. The requeue waits a little where the host holds the message (or,
                // on RabbitMQ, fails too, and the broker redelivers after reconnection).
                tracing::error!(
                    attempt,
                    error,
                    "the broker is unreachable; the message will be delivered again"
                );
                telemetry::record_outcome("requeued", Some(&error));
                return self.requeue(delivery, Some(UNREACHABLE_PAUSE)).await;
            }
            if delivery.envelope.header(FIRST_FAILURE_HEADER).is_none() {
                delivery
                    .envelope
                    .set_header(FIRST_FAILURE_HEADER, now_ms().to_string());
            }
            let failed = Outcome::Retry(error.clone());
            let delay = match recoverability::decide(&failed, attempt, &plugin.settings().retry) {
                Decision::DeadLetter { reason, error } => {
                    tracing::error!(
                        attempt,
                        error,
                        "the follow-ups could not be released; giving up"
                    );
                    return self
                        .dead_letter(plugin, queue, delivery, DeadLetter::Error, reason, &error)
                        .await;
                }
                Decision::Redeliver { delay, .. } => Some(delay),
                Decision::RetryNow { .. } | Decision::Complete => None,
            };
            tracing::error!(
                attempt,
                error,
                redeliver_in_ms = delay.map_or(0, |d| d.as_millis() as u64),
                "the follow-ups could not be released; the message will be delivered again"
            );
            telemetry::record_outcome("requeued", Some(&error));
            self.stats.record(
                &delivery.envelope.message_type,
                Some(plugin.label()),
                Event::Retried,
            );
            return self.requeue(delivery, delay).await;
        }
        for message_type in &published {
            self.stats.record(message_type, None, Event::Published);
        }
        self.stats.record(
            &delivery.envelope.message_type,
            Some(plugin.label()),
            Event::Handled,
        );
        telemetry::record_outcome("handled", None);
        // Recorded before the ack: a crash in between leaves a redelivery the inbox catches.
        if let Some(inbox) = &self.inbox
            && let Err(error) = inbox.record(queue, &delivery.envelope.id).await
        {
            tracing::warn!(
                message_id = %delivery.envelope.id,
                error = format!("{error:#}"),
                "cannot record the message in the inbox; a redelivery would be handled again"
            );
        }
        ack(delivery).await;
    }

    async fn requeue(&self, delivery: Delivery, delay: Option<Duration>) {
        let message_id = delivery.envelope.id.clone();
        if let Err(error) = delivery.acker.requeue(delivery.envelope, delay).await {
            tracing::error!(
                message_id,
                error = format!("{error:#}"),
                "requeue failed; the broker will deliver the message again"
            );
        }
    }

    /// Moves the message to a dead-letter queue with its fault headers, then acks it.
    async fn dead_letter(
        &self,
        plugin: &Plugin,
        queue: &str,
        delivery: Delivery,
        target: DeadLetter,
        reason: &str,
        error: &str,
    ) {
        let envelope = &delivery.envelope;
        tracing::warn!(
            attempt = envelope.attempt,
            reason,
            error,
            queue = target.queue_for(queue),
            "dead-lettered"
        );
        let source = FaultSource {
            plugin: plugin.name(),
            plugin_version: plugin.version(),
            queue,
            host: &self.host_name,
        };
        let faulted = recoverability::with_fault_headers(envelope, source, reason, error);
        let target_queue = target.queue_for(queue);
        let mut batch = Vec::with_capacity(2);
        if target == DeadLetter::Error {
            // One fault event per message that reaches the error queue, confirmed with it.
            batch.push(Outbound {
                route: Route::Publish,
                envelope: recoverability::fault_event(
                    envelope,
                    source,
                    &target_queue,
                    reason,
                    error,
                ),
                delay: None,
            });
        }
        batch.push(Outbound {
            route: Route::Send(target_queue),
            envelope: faulted,
            delay: None,
        });
        if let Err(error) = self.transport.dispatch(batch).await {
            tracing::error!(message_id = %envelope.id, error = format!("{error:#}"), "cannot dead-letter; the message will be delivered again");
            return self.requeue(delivery, None).await;
        }
        if target == DeadLetter::Error {
            self.stats
                .record(recoverability::FAULT_TYPE, None, Event::Published);
        }
        let (event, outcome) = match target {
            DeadLetter::Error => (Event::DeadLettered, "dead-lettered"),
            DeadLetter::Skipped => (Event::Skipped, "skipped"),
            DeadLetter::Expired => (Event::Expired, "expired"),
        };
        // Only a failed handling marks the span failed; skipped and expired were not handled.
        let failure = (target == DeadLetter::Error).then_some(error);
        telemetry::record_outcome(outcome, failure);
        self.stats
            .record(&envelope.message_type, Some(plugin.label()), event);
        ack(delivery).await;
    }
}

/// The fault reason of a message the broker dead-lettered for a reason other than expiry.
const BROKER_DEAD_LETTERED: &str = "broker-dead-lettered";

/// Why a message in `<queue>_expired` is there if not because it expired: the broker's reason
/// (`rejected`, `maxlen`, `delivery_limit`). `None` for an expired one, whether the broker or a
/// host (`courier-fault-reason`) put it there.
fn not_expired(delivery: &Delivery) -> Option<String> {
    if delivery.envelope.header(recoverability::headers::REASON) == Some("expired") {
        return None;
    }
    match delivery.dead_letter_reason.as_deref() {
        Some("expired") | None => None,
        Some(reason) => Some(reason.to_owned()),
    }
}
