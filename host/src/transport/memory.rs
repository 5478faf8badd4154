//! The embedded broker (`memory://`): bounded in-process queues with the same semantics as
//! RabbitMQ as Courier uses it (see the contract in [`crate::transport`]). For local work,
//! the demo and tests; it keeps nothing across restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{Acker, Consumer, DeadLetter, Delivery, Endpoint, Outbound, Route, Transport};
use crate::envelope::Envelope;

/// The embedded broker.
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    queues: RwLock<HashMap<String, Arc<MemoryQueue>>>,
    /// Message type → the queues bound to it.
    bindings: RwLock<HashMap<String, Vec<Arc<MemoryQueue>>>>,
    /// Messages waiting out a delay.
    delayed: AtomicUsize,
}

#[derive(Debug)]
struct Stored {
    envelope: Envelope,
    redelivered: bool,
}

#[derive(Debug)]
struct MemoryQueue {
    name: String,
    ready: Mutex<VecDeque<Stored>>,
    /// One permit per ready message.
    available: Semaphore,
    /// One permit per free place: capacity minus ready minus unacknowledged.
    space: Semaphore,
    unacked: AtomicUsize,
}

impl MemoryQueue {
    fn new(name: &str, capacity: usize) -> Self {
        MemoryQueue {
            name: name.to_owned(),
            ready: Mutex::new(VecDeque::new()),
            available: Semaphore::new(0),
            space: Semaphore::new(capacity),
            unacked: AtomicUsize::new(0),
        }
    }

    /// Enqueues after waiting for room.
    async fn enqueue(&self, envelope: Envelope) -> Result<()> {
        self.space
            .acquire()
            .await
            .map_err(|_| anyhow!("queue {} is closed", self.name))?
            .forget();
        self.push(Stored {
            envelope,
            redelivered: false,
        });
        Ok(())
    }

    /// Puts a message at the back; its place is already counted.
    fn push(&self, stored: Stored) {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(stored);
        self.available.add_permits(1);
    }

    /// Puts a message returned unsettled at the front, where RabbitMQ returns it too: it was
    /// taken before everything still ready.
    fn push_front(&self, stored: Stored) {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_front(stored);
        self.available.add_permits(1);
    }

    fn depth(&self) -> usize {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl MemoryBroker {
    /// A broker whose queues each hold at most `capacity` messages (ready plus unacknowledged).
    pub fn new(capacity: usize) -> Self {
        MemoryBroker {
            inner: Arc::new(Inner {
                capacity: capacity.max(1),
                queues: RwLock::default(),
                bindings: RwLock::default(),
                delayed: AtomicUsize::new(0),
            }),
        }
    }

    fn queue(&self, name: &str) -> Option<Arc<MemoryQueue>> {
        self.inner
            .queues
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn declare_queue(&self, name: &str) -> Arc<MemoryQueue> {
        let mut queues = self
            .inner
            .queues
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            queues
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(MemoryQueue::new(name, self.inner.capacity))),
        )
    }

    /// Ready messages in `queue` (0 if it does not exist).
    pub fn depth(&self, queue: &str) -> usize {
        self.queue(queue).map_or(0, |q| q.depth())
    }

    /// Takes every ready message out of `queue`, for inspection (dead-letter queues, taps).
    pub fn drain(&self, queue: &str) -> Vec<Envelope> {
        let Some(queue) = self.queue(queue) else {
            return Vec::new();
        };
        let drained: Vec<Stored> = queue
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        if let Ok(permits) = u32::try_from(drained.len()) {
            // Take the ready permits these messages held, and give their places back.
            if let Ok(taken) = queue.available.try_acquire_many(permits) {
                taken.forget();
            }
        }
        queue.space.add_permits(drained.len());
        drained.into_iter().map(|stored| stored.envelope).collect()
    }

    /// The messages ready in `queue`, oldest first, left in place (an unknown queue has none).
    pub fn peek(&self, queue: &str) -> Vec<Envelope> {
        let Some(queue) = self.queue(queue) else {
            return Vec::new();
        };
        queue
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|stored| stored.envelope.clone())
            .collect()
    }

    /// Takes the ready messages of `queue` whose ids are in `ids` out of it, oldest first; the
    /// others keep their order. An id not (or no longer) in the queue is passed over.
    pub fn take(&self, queue: &str, ids: &[String]) -> Vec<Envelope> {
        let Some(queue) = self.queue(queue) else {
            return Vec::new();
        };
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut taken = Vec::new();
        queue
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|stored| {
                let take = wanted.contains(stored.envelope.id.as_str());
                if take {
                    taken.push(stored.envelope.clone());
                }
                !take
            });
        if let Ok(permits) = u32::try_from(taken.len())
            && let Ok(held) = queue.available.try_acquire_many(permits)
        {
            // As in `drain`: the ready permits of what was taken, and its places back.
            held.forget();
        }
        queue.space.add_permits(taken.len());
        taken
    }

    /// Whether a queue of this name was declared.
    pub fn has_queue(&self, queue: &str) -> bool {
        self.queue(queue).is_some()
    }

    /// Moves the ready messages of `from` whose ids are in `ids`, in that order, each to the
    /// queue `route` names for it and as `route` rewrites it. Each move is one step with no
    /// wait in it, so a caller that is cancelled never leaves a message in both queues or in
    /// neither. A message whose target is missing or full stays where it was, in its place, and
    /// the moves stop there: the result holds how many were moved and, if it stopped, why. An
    /// id not (or no longer) in `from` is passed over.
    pub fn move_ready(
        &self,
        from: &str,
        ids: &[String],
        mut route: impl FnMut(&Envelope) -> (String, Envelope),
    ) -> (usize, Option<anyhow::Error>) {
        let Some(source) = self.queue(from) else {
            return (0, Some(anyhow!("no queue named `{from}`")));
        };
        let mut moved = 0;
        for id in ids {
            let mut ready = source.ready.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(place) = ready.iter().position(|stored| stored.envelope.id == *id) else {
                continue;
            };
            let (target_name, copy) = route(&ready[place].envelope);
            let Some(target) = self.queue(&target_name) else {
                return (
                    moved,
                    Some(anyhow!("cannot move {id}: no queue named `{target_name}`")),
                );
            };
            if Arc::ptr_eq(&target, &source) {
                return (
                    moved,
                    Some(anyhow!("cannot move {id} from `{from}` to itself")),
                );
            }
            let Ok(room) = target.space.try_acquire() else {
                return (
                    moved,
                    Some(anyhow!("cannot move {id}: `{target_name}` is full")),
                );
            };
            room.forget();
            // The message holds one ready permit of `from`; nothing consumes a dead-letter
            // queue, so it is free to take.
            if let Ok(held) = source.available.try_acquire() {
                held.forget();
            }
            ready.remove(place);
            drop(ready);
            source.space.add_permits(1);
            target.push(Stored {
                envelope: copy,
                redelivered: false,
            });
            moved += 1;
        }
        (moved, None)
    }

    /// No message is ready, unacknowledged or delayed on any queue except the dead-letter
    /// queues (which nothing consumes).
    pub fn is_idle(&self) -> bool {
        if self.inner.delayed.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let queues = self
            .inner
            .queues
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        queues.values().all(|q| {
            is_dead_letter_queue(&q.name)
                || (q.unacked.load(Ordering::SeqCst) == 0 && q.depth() == 0)
        })
    }

    /// The queues a message goes to; fails, enqueueing nothing, if a destination is missing.
    fn targets(&self, message: &Outbound) -> Result<Vec<Arc<MemoryQueue>>> {
        match &message.route {
            Route::Publish => Ok(self
                .inner
                .bindings
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&message.envelope.message_type)
                .cloned()
                .unwrap_or_default()),
            Route::Send(queue) => match self.queue(queue) {
                Some(queue) => Ok(vec![queue]),
                None => bail!(
                    "cannot send {} ({}): no queue named `{queue}`",
                    message.envelope.message_type,
                    message.envelope.id
                ),
            },
        }
    }
}

fn is_dead_letter_queue(name: &str) -> bool {
    DeadLetter::ALL.iter().any(|dl| {
        let suffix = dl.queue_for("");
        name.ends_with(&suffix)
    })
}

/// Copies `envelope` into every target queue (moving it into the last).
async fn enqueue_all(targets: Vec<Arc<MemoryQueue>>, envelope: Envelope) -> Result<()> {
    if let Some((last, rest)) = targets.split_last() {
        for queue in rest {
            queue.enqueue(envelope.clone()).await?;
        }
        last.enqueue(envelope).await?;
    }
    Ok(())
}

#[async_trait]
impl Transport for MemoryBroker {
    async fn declare_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let queue = self.declare_queue(&endpoint.queue);
        for dead_letter in DeadLetter::ALL {
            self.declare_queue(&dead_letter.queue_for(&endpoint.queue));
        }
        let mut bindings = self
            .inner
            .bindings
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for message_type in &endpoint.subscriptions {
            let bound = bindings.entry(message_type.clone()).or_default();
            if !bound.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                bound.push(Arc::clone(&queue));
            }
        }
        Ok(())
    }

    async fn unbind(&self, queue: &str, message_types: &[String]) -> Result<()> {
        let mut bindings = self
            .inner
            .bindings
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for message_type in message_types {
            if let Some(bound) = bindings.get_mut(message_type) {
                bound.retain(|q| q.name != queue);
                if bound.is_empty() {
                    bindings.remove(message_type);
                }
            }
        }
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>> {
        let queue = self
            .queue(queue)
            .ok_or_else(|| anyhow!("cannot consume `{queue}`: no such queue"))?;
        Ok(Box::new(MemoryConsumer {
            broker: self.clone(),
            queue,
            prefetch: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
        }))
    }

    async fn dispatch(&self, messages: Vec<Outbound>) -> Result<()> {
        let routed = messages
            .into_iter()
            .map(|message| Ok((self.targets(&message)?, message)))
            .collect::<Result<Vec<_>>>()?;
        for (targets, message) in routed {
            match message.delay {
                Some(delay) if !delay.is_zero() => {
                    let inner = Arc::clone(&self.inner);
                    inner.delayed.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        if let Err(error) = enqueue_all(targets, message.envelope).await {
                            tracing::error!(%error, "delayed message lost: its queue closed");
                        }
                        inner.delayed.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                _ => enqueue_all(targets, message.envelope).await?,
            }
        }
        Ok(())
    }

    async fn ready_count(&self, queues: &[String]) -> Result<u64> {
        Ok(queues.iter().map(|queue| self.depth(queue) as u64).sum())
    }

    fn messaging_system(&self) -> &'static str {
        "courier"
    }

    fn describe(&self) -> String {
        "memory://".to_owned()
    }
}

struct MemoryConsumer {
    broker: MemoryBroker,
    queue: Arc<MemoryQueue>,
    prefetch: Arc<Semaphore>,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let slot = Arc::clone(&self.prefetch).acquire_owned().await.ok()?;
        let stored = loop {
            self.queue.available.acquire().await.ok()?.forget();
            // `drain` may have emptied the queue between the permit and the pop.
            let popped = self
                .queue
                .ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            if let Some(stored) = popped {
                break stored;
            }
        };
        self.queue.unacked.fetch_add(1, Ordering::SeqCst);
        Some(Delivery {
            redelivered: stored.redelivered,
            dead_letter_reason: None,
            acker: Box::new(MemoryAcker {
                broker: self.broker.clone(),
                queue: Arc::clone(&self.queue),
                unsettled: Some(stored.envelope.clone()),
                _slot: slot,
            }),
            envelope: stored.envelope,
        })
    }
}

#[derive(Debug)]
struct MemoryAcker {
    broker: MemoryBroker,
    queue: Arc<MemoryQueue>,
    /// A copy of the delivered message, put back if the delivery is dropped unsettled.
    unsettled: Option<Envelope>,
    /// The consumer's prefetch slot, freed when the delivery is settled.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.unsettled = None;
        self.queue.unacked.fetch_sub(1, Ordering::SeqCst);
        self.queue.space.add_permits(1);
        Ok(())
    }

    async fn requeue(
        mut self: Box<Self>,
        mut envelope: Envelope,
        delay: Option<Duration>,
    ) -> Result<()> {
        self.unsettled = None;
        envelope.attempt = envelope.attempt.saturating_add(1);
        match delay.filter(|d| !d.is_zero()) {
            None => {
                self.queue.unacked.fetch_sub(1, Ordering::SeqCst);
                self.queue.push(Stored {
                    envelope,
                    redelivered: true,
                });
            }
            Some(delay) => {
                // Waits on a timer like any delayed message; counted as delayed before it
                // stops counting as unacknowledged, so the broker never looks idle meanwhile.
                let again = Outbound {
                    route: Route::Send(self.queue.name.clone()),
                    envelope,
                    delay: Some(delay),
                };
                let result = self.broker.dispatch(vec![again]).await;
                self.queue.unacked.fetch_sub(1, Ordering::SeqCst);
                self.queue.space.add_permits(1);
                result?;
            }
        }
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if let Some(envelope) = self.unsettled.take() {
            tracing::warn!(queue = %self.queue.name, message_id = %envelope.id, "delivery dropped unsettled; it will be delivered again");
            self.queue.unacked.fetch_sub(1, Ordering::SeqCst);
            self.queue.push_front(Stored {
                envelope,
                redelivered: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(broker: &MemoryBroker, queue: &str, count: usize) -> Vec<String> {
        let queue = broker.declare_queue(queue);
        (0..count)
            .map(|n| {
                let envelope = Envelope::new(
                    "urn:message:Tests:Ping",
                    "text/plain",
                    vec![u8::try_from(n).unwrap()],
                );
                let id = envelope.id.clone();
                queue.space.try_acquire().unwrap().forget();
                queue.push(Stored {
                    envelope,
                    redelivered: false,
                });
                id
            })
            .collect()
    }

    fn ids(broker: &MemoryBroker, queue: &str) -> Vec<String> {
        broker.peek(queue).into_iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_move_stops_at_a_full_target_and_leaves_the_message_in_its_place() {
        let broker = MemoryBroker::new(2);
        let failed = queued(&broker, "probe_error", 2);
        let waiting = queued(&broker, "probe", 1);
        // `probe` has room for one more: the first move fits, the second does not.
        let wanted = vec![failed[1].clone(), failed[0].clone(), "gone".to_owned()];
        let (moved, stopped) = broker.move_ready("probe_error", &wanted, |failed| {
            ("probe".to_owned(), failed.clone())
        });
        assert_eq!(moved, 1);
        let error = stopped.unwrap().to_string();
        assert!(error.contains("`probe` is full"), "{error}");
        assert_eq!(ids(&broker, "probe_error"), vec![failed[0].clone()]);
        assert_eq!(
            ids(&broker, "probe"),
            vec![waiting[0].clone(), failed[1].clone()]
        );

        // Taking one off `probe` makes room, and the one left moves.
        assert_eq!(broker.drain("probe").len(), 2);
        let (moved, stopped) = broker.move_ready("probe_error", &wanted, |failed| {
            ("probe".to_owned(), failed.clone())
        });
        assert!(stopped.is_none());
        assert_eq!(moved, 1);
        assert!(ids(&broker, "probe_error").is_empty());
        assert_eq!(ids(&broker, "probe"), vec![failed[0].clone()]);
    }

    #[test]
    fn a_move_to_a_missing_queue_leaves_the_message_where_it_was() {
        let broker = MemoryBroker::new(4);
        let failed = queued(&broker, "probe_error", 2);
        let (moved, stopped) = broker.move_ready("probe_error", &failed, |failed| {
            ("nowhere".to_owned(), failed.clone())
        });
        assert_eq!(moved, 0);
        assert!(
            stopped
                .unwrap()
                .to_string()
                .contains("no queue named `nowhere`")
        );
        assert_eq!(ids(&broker, "probe_error"), failed);
        assert!(!broker.has_queue("nowhere"));
    }
}
