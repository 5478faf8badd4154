//! Settling the deliveries of one channel: acks that wait together go out as one.
//!
//! A channel's delivery tags count up from 1, and an ack with `multiple` set settles every
//! unsettled tag up to its own. Deliveries finish out of order (several lanes handle them at
//! once), so an ack may fold in only the tags below it that are already settled or acked
//! with it; a tag still being handled stops the fold, and the acks above it go out one by
//! one. Every ack or return of a channel goes through one task, in order, so a folded ack
//! never overtakes the return of a tag it covers, and while one write is on its way the
//! next acks gather behind it.
//!
//! On a quorum queue each ack frame is one command in the queue's log, so under load this
//! saves the broker as much as the host: see docs/performance.md.

use std::collections::BTreeSet;

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::{mpsc, oneshot};

/// Settled tags above the fold that may wait there, after which the channel stops folding
/// (a tag held long, or dropped unsettled, would otherwise keep every later one). Plain acks
/// need no memory, and a new channel starts folding again.
const MOST_WAITING: usize = 65_536;

/// Acks a batch may gather: an ack taken from the queue is sent with at most this many.
const MOST_AT_ONCE: usize = 1_024;

/// What a delivery's acker asks of its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack(u64),
    /// Back to the queue unsettled, at once (`basic.nack` with requeue).
    Return(u64),
    /// The acker was dropped unsettled: the broker returns the delivery when the channel
    /// closes, so no ack may fold over it.
    Dropped(u64),
}

/// Where the outcome of a settle goes (nowhere for [`Settle::Dropped`]).
type Answer = Option<oneshot::Sender<lapin::Result<()>>>;

/// The settling side of one channel, cloned into each delivery's acker.
#[derive(Debug, Clone)]
pub(super) struct Settler {
    requests: mpsc::UnboundedSender<(Settle, Answer)>,
}

impl Settler {
    /// Starts the channel's settling task, which holds the channel open until every settler
    /// is dropped. Must run within the runtime.
    pub(super) fn start(channel: Channel) -> Self {
        let (requests, waiting) = mpsc::unbounded_channel();
        tokio::spawn(settle_in_order(channel, waiting));
        Self { requests }
    }

    pub(super) async fn ack(&self, tag: u64) -> lapin::Result<()> {
        self.ask(Settle::Ack(tag)).await
    }

    pub(super) async fn give_back(&self, tag: u64) -> lapin::Result<()> {
        self.ask(Settle::Return(tag)).await
    }

    /// `tag` will not be settled on this channel.
    pub(super) fn dropped(&self, tag: u64) {
        let _ = self.requests.send((Settle::Dropped(tag), None));
    }

    async fn ask(&self, settle: Settle) -> lapin::Result<()> {
        let (answer, answered) = oneshot::channel();
        if self.requests.send((settle, Some(answer))).is_err() {
            return Err(gone());
        }
        answered.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// The task ended (its runtime is shutting down): the channel goes with it.
fn gone() -> lapin::Error {
    lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "settle").into()
}

/// Which tags of a channel are settled, as far as folding needs to know.
#[derive(Debug, Default)]
struct Tally {
    /// Every tag up to this one is settled.
    through: u64,
    /// Settled tags above `through`.
    ahead: BTreeSet<u64>,
    /// A tag was dropped unsettled, or too many waited: no more folding on this channel.
    stopped: bool,
}

impl Tally {
    /// Of `acks` (ascending, none settled yet), the highest that one ack with `multiple`
    /// can settle together with every lower one of them: each tag below it is settled
    /// already or among `acks`. `None` if the lowest of them waits behind an unsettled tag.
    fn fold(&self, acks: &[u64]) -> Option<u64> {
        if self.stopped {
            return None;
        }
        let mut next = self.through + 1;
        let mut folded = None;
        let mut acks = acks.iter().peekable();
        loop {
            if acks.next_if_eq(&&next).is_some() {
                folded = Some(next);
            } else if !self.ahead.contains(&next) {
                return folded;
            }
            next += 1;
        }
    }

    fn settled(&mut self, tag: u64) {
        if self.stopped || tag <= self.through {
            return;
        }
        self.ahead.insert(tag);
        while self.ahead.first() == Some(&(self.through + 1)) {
            self.ahead.pop_first();
            self.through += 1;
        }
        if self.ahead.len() > MOST_WAITING {
            self.stop();
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.ahead = BTreeSet::new();
    }
}

async fn settle_in_order(
    channel: Channel,
    mut requests: mpsc::UnboundedReceiver<(Settle, Answer)>,
) {
    let mut tally = Tally::default();
    let mut batch = Vec::with_capacity(MOST_AT_ONCE);
    while requests.recv_many(&mut batch, MOST_AT_ONCE).await > 0 {
        // Returns first: an ack folded over a tag before its return would settle it.
        let mut acks = Vec::with_capacity(batch.len());
        for (settle, answer) in batch.drain(..) {
            match settle {
                Settle::Ack(tag) => acks.push((tag, answer)),
                Settle::Return(tag) => {
                    let requeue = BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    };
                    let returned = channel.basic_nack(tag, requeue).await;
                    tally.settled(tag);
                    reply(answer, returned);
                }
                Settle::Dropped(_) => tally.stop(),
            }
        }
        acks.sort_unstable_by_key(|(tag, _)| *tag);
        let tags: Vec<u64> = acks.iter().map(|(tag, _)| *tag).collect();
        let mut acks = acks.into_iter().peekable();
        if let Some(folded) = tally.fold(&tags) {
            let together = tags.partition_point(|tag| *tag <= folded);
            let acked = channel
                .basic_ack(
                    folded,
                    BasicAckOptions {
                        multiple: together > 1,
                    },
                )
                .await;
            while let Some((tag, answer)) = acks.next_if(|(tag, _)| *tag <= folded) {
                tally.settled(tag);
                reply(answer, acked.clone());
            }
        }
        for (tag, answer) in acks {
            let acked = channel.basic_ack(tag, BasicAckOptions::default()).await;
            tally.settled(tag);
            reply(answer, acked);
        }
    }
}

fn reply(answer: Answer, settled: lapin::Result<()>) {
    if let Some(answer) = answer {
        let _ = answer.send(settled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(tags: &[u64]) -> Tally {
        let mut tally = Tally::default();
        for tag in tags {
            tally.settled(*tag);
        }
        tally
    }

    #[test]
    fn acks_fold_up_to_the_first_tag_still_unsettled() {
        let tally = settled(&[1, 2, 4]);
        assert_eq!(tally.through, 2);
        // 3 and 5 come together; 4 is settled between them, 7 waits behind 6.
        assert_eq!(tally.fold(&[3, 5, 7]), Some(5));
        // The lowest waits behind 3: nothing folds.
        assert_eq!(tally.fold(&[5, 7]), None);
        assert_eq!(Tally::default().fold(&[1]), Some(1));
        assert_eq!(Tally::default().fold(&[]), None);
    }

    #[test]
    fn the_tally_keeps_only_what_is_above_the_fold() {
        let mut tally = settled(&[2, 3, 5]);
        assert_eq!((tally.through, tally.ahead.len()), (0, 3));
        tally.settled(1);
        assert_eq!((tally.through, tally.ahead.len()), (3, 1));
        tally.settled(4);
        assert_eq!((tally.through, tally.ahead.len()), (5, 0));
    }

    #[test]
    fn a_tag_dropped_unsettled_or_too_many_waiting_stops_the_folding() {
        let mut tally = settled(&[2]);
        tally.stop();
        assert_eq!(tally.fold(&[1]), None);
        let mut tally = Tally::default();
        for tag in 2..=(MOST_WAITING as u64 + 2) {
            tally.settled(tag);
        }
        assert!(tally.stopped && tally.ahead.is_empty());
        assert_eq!(tally.fold(&[1]), None);
    }
}
