//! What a lane keeps between deliveries, what it lends while its handler runs, and the timer
//! that takes the loan back from a call that runs long.
//!
//! A lane keeps two things that others wait for:
//! - the plugin's consumer, while its calls are short (`[engine] short_call_us`): handing the
//!   consumer to another lane for every delivery wakes that lane's thread, which costs more
//!   than a short call (docs/performance.md);
//! - on RabbitMQ, the settling it started that waits for confirms (each delivery's publish,
//!   confirms and ack), which it polls whenever it waits, so that a confirm wakes the thread
//!   that acks rather than a task on another one.
//!
//! Neither is polled nor taken from while a handler runs. So for each call the lane lends
//! both to its [`Loan`], and takes back afterwards whatever is still there. A call found still
//! running an epoch tick (`[engine] epoch_tick_ms`) after it started loses both: the consumer
//! goes to the plugin's next lane, and the settling to tasks of the runtime. The timer looks
//! once a tick, so that happens between one and two ticks into the call. The timer
//! measures wall time, so a call that waits in a host function (a WASI clock) lets go as
//! surely as one that computes, and the call's own deadline is left alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::transport::Consumer;

/// A plugin's consumer, held by the lane that takes turns on it now.
pub(super) type HeldConsumer = tokio::sync::OwnedMutexGuard<Option<Box<dyn Consumer>>>;

/// How long lanes may keep what others wait for (`[engine] short_call_us` and
/// `epoch_tick_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Lending {
    /// A lane whose last call was shorter keeps its plugin's consumer through the next one.
    pub short_call: Duration,
    /// A call running this long loses what its lane lent it.
    pub tick: Duration,
}

/// The loans of a dispatcher's lanes, and the timer that calls in overdue ones.
pub(super) struct Loans {
    lending: Lending,
    loans: Mutex<Vec<Weak<Loan>>>,
    /// Set while the timer waits for a loan, having found none out.
    idle: AtomicBool,
    /// Wakes the timer: for a loan while it is idle, and to end once these loans are gone.
    wake: Arc<Notify>,
}

impl Drop for Loans {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl std::fmt::Debug for Loans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loans")
            .field("lending", &self.lending)
            .finish_non_exhaustive()
    }
}

impl Loans {
    /// Starts the timer on the current runtime. It runs as long as the loans do, which the
    /// dispatcher and its lanes hold: a lane draining after the host was told to stop can
    /// still be called in.
    pub(super) fn start(lending: Lending) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let loans = Arc::new(Loans {
            lending,
            loans: Mutex::default(),
            idle: AtomicBool::new(false),
            wake: Arc::clone(&wake),
        });
        tokio::spawn(call_in(Arc::downgrade(&loans), wake, lending.tick));
        loans
    }

    pub(super) fn short_call(&self) -> Duration {
        self.lending.short_call
    }

    /// A lane's loan. Settling it calls in goes to `tasks` on `runtime`.
    pub(super) fn open(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        tasks: &TaskTracker,
    ) -> Lender {
        let loan = Arc::new(Loan {
            lent: Mutex::default(),
            runtime: runtime.clone(),
            tasks: tasks.clone(),
        });
        let mut loans = self.loans.lock().unwrap_or_else(PoisonError::into_inner);
        loans.retain(|loan| loan.strong_count() > 0);
        loans.push(Arc::downgrade(&loan));
        Lender {
            loans: Arc::clone(self),
            loan,
        }
    }

    /// Calls in what is overdue; whether any loan is still out. If none is, the timer goes
    /// idle, to be woken by the next loan.
    fn call_in_or_idle(&self) -> bool {
        if self.call_in_overdue() {
            return true;
        }
        self.idle.store(true, Ordering::SeqCst);
        // A loan made after the scan above and before `idle` was set did not wake the timer:
        // look again.
        if self.call_in_overdue() {
            self.idle.store(false, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Calls in the loans out for a tick or more; whether any loan is still out.
    fn call_in_overdue(&self) -> bool {
        let loans: Vec<Arc<Loan>> = self
            .loans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let now = Instant::now();
        let mut out = false;
        for loan in loans {
            let mut lent = loan.lent();
            match lent.since {
                Some(since) if now.duration_since(since) >= self.lending.tick => {
                    // Released under the lock: the call cannot return and its lane end (and
                    // the runner's drain stop waiting) before the settling is a task of the
                    // runner. Neither dropping the guard nor spawning takes a lock of ours.
                    let called_in = std::mem::take(&mut *lent);
                    loan.release(called_in);
                }
                Some(_) => out = true,
                None => {}
            }
        }
        out
    }
}

/// Every tick: calls in the loans out for a tick or more. With none out it waits for the next
/// loan instead, so that an idle host is not woken. It ends once the loans are dropped.
async fn call_in(loans: Weak<Loans>, wake: Arc<Notify>, tick: Duration) {
    loop {
        let Some(out) = loans.upgrade().map(|loans| loans.call_in_or_idle()) else {
            return;
        };
        if !out {
            wake.notified().await;
        }
        tokio::time::sleep(tick).await;
    }
}

/// What one lane lent to its current call.
struct Loan {
    lent: Mutex<Lent>,
    runtime: tokio::runtime::Handle,
    tasks: TaskTracker,
}

#[derive(Default)]
struct Lent {
    /// When the call started; `None` between calls, and once called in.
    since: Option<Instant>,
    consumer: Option<HeldConsumer>,
    pending: Pending,
}

impl Loan {
    fn lent(&self) -> MutexGuard<'_, Lent> {
        self.lent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The consumer goes to the next lane, and the settling to the runtime.
    fn release(&self, lent: Lent) {
        drop(lent.consumer);
        hand_over(lent.pending, &self.tasks, &self.runtime);
    }
}

/// A lane's side of its loan. Dropped (the lane ends, or its thread unwinds), it releases
/// whatever is lent.
pub(super) struct Lender {
    loans: Arc<Loans>,
    loan: Arc<Loan>,
}

impl Lender {
    /// The lane's settling, which goes to the runtime when the lane lets go of it: when the
    /// lane decides so, when it ends, or when its thread unwinds.
    pub(super) fn settling(&self) -> Settling {
        Settling {
            pending: Pending::default(),
            tasks: self.loan.tasks.clone(),
            runtime: self.loan.runtime.clone(),
        }
    }

    /// Runs `call`, which started at `since`, with `consumer` and `settling` lent, and puts
    /// back whatever was not called in meanwhile.
    pub(super) fn during<T>(
        &self,
        since: Instant,
        consumer: &mut Option<HeldConsumer>,
        settling: &mut Settling,
        call: impl FnOnce() -> T,
    ) -> T {
        {
            let mut lent = self.loan.lent();
            lent.since = Some(since);
            lent.consumer = consumer.take();
            lent.pending = std::mem::take(&mut settling.pending);
        }
        // Read before it is written: every lane of the host comes here for every delivery,
        // and a write would take the flag's cache line from the other cores each time. The
        // timer sets the flag before it looks at the loans a last time, under each loan's
        // lock (and, to list them, the list's, which a loan opened later took too): if that
        // look missed this loan, the flag was set before this lane took one of those locks,
        // and the read sees it.
        if self.loans.idle.load(Ordering::SeqCst) && self.loans.idle.swap(false, Ordering::SeqCst) {
            self.loans.wake.notify_one();
        }
        let result = call();
        let mut lent = self.loan.lent();
        lent.since = None;
        *consumer = lent.consumer.take();
        settling.pending = std::mem::take(&mut lent.pending);
        result
    }
}

impl Drop for Lender {
    fn drop(&mut self) {
        let mut lent = self.loan.lent();
        let called_in = std::mem::take(&mut *lent);
        self.loan.release(called_in);
    }
}

type Pending = FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// The settling a lane started and has not finished: each delivery's publish, confirms and
/// ack, in one future. Dropped, it hands what is left to the runtime, so a lane that ends or
/// unwinds leaves no delivery unsettled.
pub(super) struct Settling {
    pending: Pending,
    tasks: TaskTracker,
    runtime: tokio::runtime::Handle,
}

impl Settling {
    pub(super) fn push(&mut self, settle: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.pending.push(settle);
    }

    /// Waits for `next`, settling what can be settled meanwhile. The settling is polled
    /// first, so the follow-ups of the call just made leave before the lane waits.
    pub(super) async fn alongside<T>(&mut self, next: impl Future<Output = T>) -> T {
        let mut next = std::pin::pin!(next);
        std::future::poll_fn(|cx| {
            while let Poll::Ready(Some(())) = self.pending.poll_next_unpin(cx) {}
            next.as_mut().poll(cx)
        })
        .await
    }

    /// Moves whatever still settles to tasks of the runtime.
    pub(super) fn hand_over(&mut self) {
        hand_over(
            std::mem::take(&mut self.pending),
            &self.tasks,
            &self.runtime,
        );
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        self.hand_over();
    }
}

fn hand_over(pending: Pending, tasks: &TaskTracker, runtime: &tokio::runtime::Handle) {
    for settle in pending {
        tasks.spawn_on(settle, runtime);
    }
}
