//! The order of an ordered plugin: one delivery per session id at a time (see
//! [`crate::session`] for the rule as users read it).
//!
//! The plugin's consumers (one per input queue or partition) offer every delivery here, and
//! its lanes take them. A delivery whose session has none in progress is *ready*; one whose
//! session has is *held back*, behind the others of its session, in arrival order. A ready
//! delivery of a session carries that session's *turn* inside its acker: when the delivery is
//! acknowledged, the turn ends and the next held-back delivery of the session becomes ready.
//! A delivery dropped unsettled (the runner stopped, a lane died) *abandons* its session
//! instead: the held-back deliveries go back to the broker unsettled too, behind it, so none
//! of them is handled before it. A requeue does not end the turn: the delivery itself waits out its
//! delay here and is handled again before anything else of its session, still unacknowledged,
//! so a later message cannot overtake it. Deliveries without a session id are ready at once.
//!
//! Nothing here grows without bound: every delivery was taken within the consumers' prefetch,
//! and stays unacknowledged until it is settled.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::envelope::Envelope;
use crate::session::{self, SessionKeyRule};
use crate::transport::{Acker, Delivery};

/// One ordered plugin's deliveries between its consumers and its lanes.
#[derive(Debug)]
pub(super) struct Sequencer {
    lines: Mutex<Lines>,
    /// Wakes a lane when a delivery becomes ready.
    ready: tokio::sync::Notify,
    rules: Arc<[SessionKeyRule]>,
    /// The dispatcher's count of deliveries taken and not settled.
    in_flight: Arc<AtomicUsize>,
    stop: CancellationToken,
    /// Where the waits of requeued deliveries run, so a drain waits for them.
    tasks: TaskTracker,
}

#[derive(Debug, Default)]
struct Lines {
    ready: VecDeque<Delivery>,
    /// Every session with a delivery in progress (ready, being handled, being settled or
    /// waiting out a requeue), and its deliveries held back behind it.
    sessions: HashMap<String, VecDeque<Delivery>>,
    closed: bool,
}

impl Sequencer {
    pub(super) fn new(
        rules: Arc<[SessionKeyRule]>,
        in_flight: Arc<AtomicUsize>,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Sequencer {
            lines: Mutex::default(),
            ready: tokio::sync::Notify::new(),
            rules,
            in_flight,
            stop,
            tasks,
        })
    }

    fn lines(&self) -> MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a delivery from a consumer: ready if its session is free, held back if not.
    pub(super) fn offer(self: &Arc<Self>, delivery: Delivery) {
        let Some(key) = session::key_of(&delivery.envelope, &self.rules) else {
            return self.make_ready(delivery, false);
        };
        let mut lines = self.lines();
        if lines.closed {
            drop(lines);
            return self.discard(vec![delivery]);
        }
        if let Some(held) = lines.sessions.get_mut(&key) {
            held.push_back(delivery);
            return;
        }
        lines.sessions.insert(key.clone(), VecDeque::new());
        lines.ready.push_back(self.with_turn(delivery, key));
        drop(lines);
        self.ready.notify_one();
    }

    /// The next ready delivery; `None` once the runner stops.
    pub(super) async fn next(&self) -> Option<Delivery> {
        loop {
            if self.stop.is_cancelled() {
                // Nothing more is handled once the runner stops, not even what is ready.
                self.close();
                return None;
            }
            {
                let mut lines = self.lines();
                if lines.closed {
                    return None;
                }
                if let Some(delivery) = lines.ready.pop_front() {
                    return Some(delivery);
                }
            }
            // A notification sent between the look above and this wait is kept for it.
            tokio::select! {
                biased;
                () = self.stop.cancelled() => {
                    self.close();
                    return None;
                }
                () = self.ready.notified() => {}
            }
        }
    }

    /// No more deliveries: those ready or held back go back to the broker unsettled.
    pub(super) fn close(&self) {
        let mut returned: Vec<Delivery> = {
            let mut lines = self.lines();
            lines.closed = true;
            let sessions = std::mem::take(&mut lines.sessions);
            lines
                .ready
                .drain(..)
                .chain(sessions.into_values().flatten())
                .collect()
        };
        // Dropped outside the lock (a dropped turn ends, which takes the lock), and the last
        // first: each goes back to the front of its queue, so they return in their order.
        returned.reverse();
        self.discard(returned);
        self.ready.notify_waiters();
    }

    fn discard(&self, deliveries: Vec<Delivery>) {
        self.in_flight.fetch_sub(deliveries.len(), Ordering::SeqCst);
        drop(deliveries);
    }

    fn make_ready(&self, delivery: Delivery, first: bool) {
        let mut lines = self.lines();
        if lines.closed {
            drop(lines);
            return self.discard(vec![delivery]);
        }
        if first {
            lines.ready.push_front(delivery);
        } else {
            lines.ready.push_back(delivery);
        }
        drop(lines);
        self.ready.notify_one();
    }

    fn with_turn(self: &Arc<Self>, delivery: Delivery, key: String) -> Delivery {
        let turn = Turn {
            sequencer: Arc::clone(self),
            key,
            acked: false,
        };
        Delivery {
            acker: Box::new(TurnAcker {
                turn,
                acker: delivery.acker,
            }),
            ..delivery
        }
    }

    /// A session's delivery in progress was dropped unsettled: the session's held-back
    /// deliveries go back to the broker unsettled as well, the last first, so each queue gets
    /// them back in their order (see [`Sequencer::close`]).
    fn abandon(&self, key: &str) {
        let held = self.lines().sessions.remove(key);
        if let Some(mut held) = held {
            held.make_contiguous().reverse();
            self.discard(held.into());
        }
    }

    /// A session's turn ended: its next held-back delivery, if any, becomes ready.
    fn end_turn(self: &Arc<Self>, key: String) {
        let mut lines = self.lines();
        let Some(held) = lines.sessions.get_mut(&key) else {
            return;
        };
        match held.pop_front() {
            Some(next) => {
                let next = self.with_turn(next, key);
                lines.ready.push_back(next);
                drop(lines);
                self.ready.notify_one();
            }
            None => {
                lines.sessions.remove(&key);
            }
        }
    }

    /// Hands a failed delivery back, to be handled again after `delay` before anything else
    /// of its session. It stays unacknowledged: if the runner stops first, it goes back to the
    /// broker as it was.
    fn again(self: &Arc<Self>, delivery: Delivery, delay: Option<Duration>) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let Some(delay) = delay.filter(|d| !d.is_zero()) else {
            return self.make_ready(delivery, true);
        };
        let sequencer = Arc::clone(self);
        self.tasks.spawn(async move {
            tokio::select! {
                biased;
                () = sequencer.stop.cancelled() => {
                    sequencer.close();
                    sequencer.discard(vec![delivery]);
                }
                () = tokio::time::sleep(delay) => sequencer.make_ready(delivery, true),
            }
        });
    }
}

/// A session's turn: when dropped, it ends if its delivery was acknowledged, and abandons
/// the session if not.
#[derive(Debug)]
struct Turn {
    sequencer: Arc<Sequencer>,
    key: String,
    acked: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let key = std::mem::take(&mut self.key);
        if self.acked {
            self.sequencer.end_turn(key);
        } else {
            self.sequencer.abandon(&key);
        }
    }
}

/// The acker of a delivery that holds its session's turn.
#[derive(Debug)]
struct TurnAcker {
    /// Declared first, so it is dropped first: an abandoned session's held-back deliveries go
    /// back before this one, which then goes back in front of them.
    turn: Turn,
    acker: Box<dyn Acker>,
}

#[async_trait]
impl Acker for TurnAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        let TurnAcker { mut turn, acker } = *self;
        let acked = acker.ack().await;
        // The next of the session is handled once this one is acknowledged. An ack that
        // failed leaves the message to the broker, which delivers it again: the session is
        // abandoned, so nothing of it is handled ahead of the message.
        turn.acked = acked.is_ok();
        drop(turn);
        acked
    }

    /// Keeps the delivery, and the turn, here: see [`Sequencer::again`]. The attempt is raised
    /// as a transport raises it.
    async fn requeue(
        self: Box<Self>,
        mut envelope: Envelope,
        delay: Option<Duration>,
    ) -> Result<()> {
        envelope.attempt = envelope.attempt.saturating_add(1);
        let sequencer = Arc::clone(&self.turn.sequencer);
        let delivery = Delivery {
            envelope,
            redelivered: true,
            dead_letter_reason: None,
            acker: self,
        };
        sequencer.again(delivery, delay);
        Ok(())
    }
}
