//! The error queues: `courier errors list | show | replay | purge`, on RabbitMQ (this module) and
//! on the embedded broker through its host's admin API ([`embedded`]).
//!
//! A message whose handler rejected it, failed every attempt, or could not be read sits in
//! `<queue>_error`: the original message plus the `courier-fault-*` headers of
//! [`crate::recoverability::headers`]. These commands look at those messages, send them back
//! to their queue, or remove them. The user's guide is `docs/errors.md`.
//!
//! ```text
//! courier errors list    --queue payment [--type T] [--reason R] [--since 2h] [--json]
//! courier errors show    --queue payment ID
//! courier errors replay  --queue payment [filters] [ID…]
//! courier errors purge   --queue payment [filters] [ID…] [--yes]
//! ```
//!
//! # Looking without taking: how a queue is browsed
//!
//! AMQP 0-9-1 has no "peek". A command opens a channel, consumes the error queue without
//! auto-ack with a prefetch as large as the queue (which bounds what it holds unacknowledged:
//! at most `--scan-limit`, 10,000 by default, 65,535 at most), reads as many deliveries as the
//! queue held when it started, cancels the consumer, and closes the channel: the broker puts
//! back every delivery that was not acked. Replay and purge ack what they moved or removed
//! between the cancel and the close. Before it returns, a command waits until the queue's ready
//! count is back, so that the next command sees every message.
//!
//! What we found on RabbitMQ 3.10.8 with Courier's error queues (quorum, no delivery limit),
//! trying each way 25 times in a row on 10 to 3,000 messages; `tests/tests/errors_cli.rs`
//! checks the chosen way on every run:
//! - **Consume the whole queue, then close the channel** keeps the order, also after acking
//!   every second message: the rest came back in the order they were in. This is what the
//!   commands do.
//! - **`basic.get` without ack, then close** (the usual recipe) does not: 10 messages come back
//!   rotated (`0 9 1 2 … 8` after one browse, `0 8 9 1 …` after three), 200 in no recognisable
//!   order at all.
//! - **`basic.nack` with `multiple` and `requeue`** kept the order of 10 messages and scrambled
//!   200; nacking one by one puts them back in the order nacked.
//! - **Taking only part of the queue** does not keep the order either: a quorum queue serves
//!   the messages that came back before the others, so once a queue has been browsed, a message
//!   that goes back without the rest lands behind them. Hence a command always takes every
//!   message (after `--limit`, or once `show` has found its message, it still takes the rest
//!   before closing), refuses a queue larger than `--scan-limit` (except a replay or purge of
//!   everything, which keeps none of what it takes), and cancels its consumer before its first
//!   ack (an ack would make room in the prefetch for one more delivery, which would then go back
//!   alone).
//! - Every return counts: a quorum queue raises `x-delivery-count` by one each time a message
//!   is looked at (`show` prints it). Nothing is dropped, because Courier sets no
//!   `x-delivery-limit`: on a queue with a limit of 5, all ten messages were gone after the
//!   sixth browse. A delivery limit set by a policy (or RabbitMQ 4.x, whose quorum queues get a
//!   default limit of 20) turns browsing into a slow purge: check before relying on it there.
//!   Replay removes the count from the copy, or the host would add it to the attempt.
//! - Classic queues (`amqp.queue_type = "classic"`) put returned messages back in their place.
//! - Two commands on one queue at the same time each see only part of it, and may reorder it:
//!   run one at a time.
//!
//! # Replay, and why an interruption cannot lose a message
//!
//! Replay publishes each chosen message to its original queue (`courier-fault-original-queue`,
//! else the queue given) through the default exchange, `mandatory` and with publisher
//! confirms, without its `courier-fault-*` headers, the broker's `x-delivery-count` and
//! `courier-first-failure-ms`, with `courier-attempt` back to 1 and the same `message_id`.
//! Only once the broker has confirmed the copy does it ack the message in the error queue. On
//! ctrl-c or SIGTERM it finishes the message it is moving (confirm, then ack) and stops; a
//! second signal exits at once.
//!
//! A `kill -9` (or a lost connection) at any point leaves every message in at least one queue:
//! before the confirm, the error queue still holds it (the unacked delivery goes back when the
//! connection drops) and the copy may or may not have been taken; between the confirm and the
//! ack, it is in both. The copy keeps the message's id, so once one of the two is handled, the
//! host's de-duplication inbox (unless `inbox.store = "off"`) acks the other without running
//! the handler again (replaying it a second time is harmless). Nothing is ever acked before its copy is confirmed.

use std::io::{IsTerminal as _, Write};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::types::ShortString;
use tokio_util::sync::CancellationToken;

use crate::transport::DeadLetter;

mod browse;
pub mod embedded;
mod message;

pub use browse::Broker;
pub use message::{FailedMessage, Selection, parse_moment, replay_copy};

use browse::{Browse, Session, publish_confirmed};
use message::{Row, render_table, table_row};

/// Most messages a command looks at in one queue: each is held unacknowledged (and its
/// delivery buffered) until the command ends. A larger queue is refused, except by a replay or
/// purge of everything, which takes it in several runs.
pub const DEFAULT_SCAN_LIMIT: u16 = 10_000;
/// Every fault header starts with this.
pub const FAULT_HEADER_PREFIX: &str = "courier-fault-";

/// What `list` prints.
#[derive(Debug, Clone)]
pub struct ListOptions {
    /// Input queues (plugin names): their `<queue>_error` is listed.
    pub queues: Vec<String>,
    pub selection: Selection,
    /// One JSON object per line instead of a table.
    pub json: bool,
    pub scan_limit: u16,
}

/// `courier errors list`: the messages of each error queue, oldest first, left in place.
pub async fn list(broker: &Broker, options: &ListOptions, out: &mut impl Write) -> Result<()> {
    let session = Session::open(broker).await?;
    let result = list_with(&session, options, out).await;
    session.close().await;
    result
}

async fn list_with(session: &Session, options: &ListOptions, out: &mut impl Write) -> Result<()> {
    let mut listing = Listing::new(options);
    for queue in listing.queues.clone() {
        if listing.full() {
            break;
        }
        let error_queue = DeadLetter::Error.queue_for(&queue);
        let mut browse = session
            .browse(&error_queue, options.scan_limit, false)
            .await?;
        let mut matching = 0_usize;
        while !listing.full() {
            let Some(message) = browse.next().await? else {
                break;
            };
            if listing.add(&message, out)? {
                matching += 1;
            }
        }
        let ready = browse.ready;
        let unseen = browse.release(session).await?;
        listing.note(&error_queue, ready, matching);
        if unseen > 0 {
            eprintln!(
                "{error_queue}: {unseen} message(s) were taken by another consumer while listing"
            );
        }
    }
    listing.finish(out)
}

/// What `list` prints, gathered queue by queue.
struct Listing<'a> {
    options: &'a ListOptions,
    /// The queues asked for, each once.
    queues: Vec<String>,
    rows: Vec<Row>,
    notes: Vec<String>,
    listed: usize,
}

impl<'a> Listing<'a> {
    fn new(options: &'a ListOptions) -> Self {
        let mut queues = options.queues.clone();
        let mut seen_queues = std::collections::HashSet::new();
        queues.retain(|queue| seen_queues.insert(queue.clone()));
        Listing {
            options,
            queues,
            rows: Vec::new(),
            notes: Vec::new(),
            listed: 0,
        }
    }

    /// Whether `--limit` messages are listed already.
    fn full(&self) -> bool {
        self.options
            .selection
            .limit
            .is_some_and(|limit| self.listed >= limit)
    }

    /// Lists `message` if the selection takes it; says whether it did.
    fn add(&mut self, message: &FailedMessage, out: &mut impl Write) -> Result<bool> {
        if !self.options.selection.matches(message) {
            return Ok(false);
        }
        self.listed += 1;
        if self.options.json {
            writeln!(out, "{}", message.summary_json())?;
        } else {
            self.rows.push(table_row(message));
        }
        Ok(true)
    }

    fn note(&mut self, error_queue: &str, ready: u32, matching: usize) {
        self.notes.push(if ready == 0 {
            format!("{error_queue} is empty")
        } else {
            format!("{error_queue}: {ready} message(s), {matching} listed")
        });
    }

    fn finish(self, out: &mut impl Write) -> Result<()> {
        if self.options.json {
            for note in self.notes {
                eprintln!("{note}");
            }
        } else {
            let with_queue = self.queues.len() > 1;
            write!(out, "{}", render_table(&self.rows, with_queue))?;
            for note in self.notes {
                writeln!(out, "{note}")?;
            }
        }
        out.flush()?;
        Ok(())
    }
}

/// `courier errors show`: everything about the message `id` in `<queue>_error`.
pub async fn show(
    broker: &Broker,
    queue: &str,
    id: &str,
    json: bool,
    scan_limit: u16,
    out: &mut impl Write,
) -> Result<()> {
    let session = Session::open(broker).await?;
    let error_queue = DeadLetter::Error.queue_for(queue);
    let found = async {
        let mut browse = session.browse(&error_queue, scan_limit, false).await?;
        let mut found = None;
        while let Some(message) = browse.next().await? {
            if message.id == id {
                found = Some(message);
                break;
            }
        }
        let seen = browse.seen;
        browse.release(&session).await?;
        Ok::<_, anyhow::Error>((found, seen))
    }
    .await;
    session.close().await;
    let (found, seen) = found?;
    let Some(message) = found else {
        bail!("no message {id} in {error_queue} (looked at {seen} message(s))");
    };
    print_details(&message, json, out)
}

/// What `show` prints of the message it found.
fn print_details(message: &FailedMessage, json: bool, out: &mut impl Write) -> Result<()> {
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&message.details_json())?
        )?;
    } else {
        write!(out, "{}", message.details())?;
    }
    out.flush()?;
    Ok(())
}

/// Which messages `replay` and `purge` act on.
#[derive(Debug, Clone)]
pub struct MoveOptions {
    /// The input queue (plugin name): the messages are taken from `<queue>_error`.
    pub queue: String,
    pub selection: Selection,
    pub scan_limit: u16,
}

/// `courier errors replay`: each chosen message back to its queue, then off the error queue.
pub async fn replay(broker: &Broker, options: &MoveOptions, out: &mut impl Write) -> Result<()> {
    let stop = stop_on_signal();
    let session = Session::open(broker).await?;
    let result = replay_with(&session, options, &stop, out).await;
    session.close().await;
    result
}

async fn replay_with(
    session: &Session,
    options: &MoveOptions,
    stop: &CancellationToken,
    out: &mut impl Write,
) -> Result<()> {
    let (error_queue, mut browse, chosen) = browse_and_choose(session, options, stop).await?;
    let total = chosen.len();
    let publisher = session.confirming_channel().await?;
    let bar = progress(total, &format!("replaying from {error_queue}"));
    let mut replayed = 0_usize;
    let mut failure = None;
    for message in &chosen {
        if stop.is_cancelled() {
            break;
        }
        let target = message
            .original_queue()
            .unwrap_or_else(|| options.queue.clone());
        if let Err(error) = publish_confirmed(&publisher, &target, message).await {
            failure = Some(error);
            break;
        }
        // Confirmed: only now may the error queue let go of it.
        if let Err(error) = browse.remove(message).await {
            failure = Some(error.context(format!(
                "{} was replayed to {target} but stays in {error_queue} too (same id: the inbox drops the second copy)",
                message.id
            )));
            break;
        }
        replayed += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let _ = publisher.close(200, ShortString::from("done")).await;
    let released = browse.release(session).await;
    writeln!(
        out,
        "replayed {replayed} of {total} message(s) from {error_queue}"
    )?;
    out.flush()?;
    if let Some(error) = failure {
        return Err(error.context(format!(
            "replay stopped; {} message(s) not replayed stay in {error_queue}",
            total - replayed
        )));
    }
    note_unseen(&error_queue, released?);
    if stop.is_cancelled() && replayed < total {
        bail!(
            "interrupted: {} message(s) not replayed stay in {error_queue}",
            total - replayed
        );
    }
    Ok(())
}

/// A purge asks first unless `assume_yes`; without a terminal to ask on, it does not start.
fn may_ask(assume_yes: bool) -> Result<()> {
    if !assume_yes && !std::io::stdin().is_terminal() {
        bail!("refusing to purge without --yes: there is no terminal to ask for confirmation");
    }
    Ok(())
}

/// `courier errors purge`: removes the chosen messages, after asking unless `assume_yes`.
pub async fn purge(
    broker: &Broker,
    options: &MoveOptions,
    assume_yes: bool,
    out: &mut impl Write,
) -> Result<()> {
    may_ask(assume_yes)?;
    let stop = stop_on_signal();
    let session = Session::open(broker).await?;
    let result = purge_with(&session, options, assume_yes, &stop, out).await;
    session.close().await;
    result
}

async fn purge_with(
    session: &Session,
    options: &MoveOptions,
    assume_yes: bool,
    stop: &CancellationToken,
    out: &mut impl Write,
) -> Result<()> {
    let (error_queue, mut browse, chosen) = browse_and_choose(session, options, stop).await?;
    let total = chosen.len();
    if total == 0 || stop.is_cancelled() {
        browse.release(session).await?;
        writeln!(out, "purged 0 of {total} message(s) from {error_queue}")?;
        if stop.is_cancelled() {
            bail!("interrupted: nothing was purged");
        }
        return Ok(());
    }
    if !assume_yes && !confirm(&format!("purge {total} message(s) from {error_queue}?")).await? {
        browse.release(session).await?;
        writeln!(out, "purge cancelled: nothing removed from {error_queue}")?;
        return Ok(());
    }
    let bar = progress(total, &format!("purging {error_queue}"));
    let mut purged = 0_usize;
    let mut failure = None;
    for message in &chosen {
        if stop.is_cancelled() {
            break;
        }
        if let Err(error) = browse.remove(message).await {
            failure = Some(error);
            break;
        }
        purged += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let unseen = browse
        .release(session)
        .await
        .with_context(|| format!("purging {error_queue}"))?;
    writeln!(
        out,
        "purged {purged} of {total} message(s) from {error_queue}"
    )?;
    out.flush()?;
    note_unseen(&error_queue, unseen);
    if let Some(error) = failure {
        return Err(error);
    }
    if stop.is_cancelled() && purged < total {
        bail!(
            "interrupted: {} message(s) not purged stay in {error_queue}",
            total - purged
        );
    }
    Ok(())
}

/// Looks at every message of the browse and keeps those `selection` chooses; stops early on
/// a signal.
/// Opens the error queue of `options` for a command that moves messages off it, and picks the
/// ones its selection names. On failure what was looked at goes back.
async fn browse_and_choose(
    session: &Session,
    options: &MoveOptions,
    stop: &CancellationToken,
) -> Result<(String, Browse, Vec<FailedMessage>)> {
    let error_queue = DeadLetter::Error.queue_for(&options.queue);
    // Taking every message looked at, a command may look at part of a larger queue.
    let part = options.selection == Selection::default();
    let mut browse = session
        .browse(&error_queue, options.scan_limit, part)
        .await?;
    match choose(&mut browse, &options.selection, stop).await {
        Ok(chosen) => Ok((error_queue, browse, chosen)),
        Err(error) => {
            let _ = browse.release(session).await;
            Err(error)
        }
    }
}

async fn choose(
    browse: &mut Browse,
    selection: &Selection,
    stop: &CancellationToken,
) -> Result<Vec<FailedMessage>> {
    let bar = progress(
        browse.expected as usize,
        &format!("looking at {}", browse.queue),
    );
    let mut chosen = Vec::new();
    while selection.limit.is_none_or(|limit| chosen.len() < limit) {
        let next = tokio::select! {
            next = browse.next() => next?,
            () = stop.cancelled() => None,
        };
        let Some(message) = next else {
            break;
        };
        bar.inc(1);
        if selection.matches(&message) {
            chosen.push(message);
        }
    }
    bar.finish_and_clear();
    browse.stop_deliveries().await?;
    Ok(chosen)
}

fn note_unseen(error_queue: &str, unseen: u32) {
    if unseen > 0 {
        eprintln!(
            "{error_queue}: {unseen} message(s) were not looked at (past --scan-limit, or taken meanwhile): run again for them"
        );
    }
}

/// A progress bar on stderr when it is a terminal, else nothing.
fn progress(length: usize, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(length as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Asks on the terminal; only `y` or `yes` agrees.
async fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} This cannot be undone. [y/N] ");
    let _ = std::io::stderr().flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("cannot read the answer")?
    .context("cannot read the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Cancelled on the first ctrl-c or SIGTERM, so the command stops after the message it is
/// moving; a second signal ends the process at once.
fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        crate::signal::shutdown().await;
        eprintln!("stopping after the message being moved (a second signal exits at once)");
        token.cancel();
        crate::signal::shutdown().await;
        eprintln!(
            "second signal: exiting now (on RabbitMQ, a message being moved may be left in both \
             queues, with the same id; an embedded broker's host finishes the batch it was sent)"
        );
        std::process::exit(130);
    });
    stop
}
