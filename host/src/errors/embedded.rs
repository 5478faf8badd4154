//! `courier errors` on the embedded broker. Its error queues live inside the `courier run`
//! process, so the commands ask that host's admin API (`GET /v1/errors/{queue}`, `POST
//! /v1/errors/{queue}/show|replay|purge`) and show what they find the way they show a RabbitMQ
//! error queue.
//!
//! The host moves or removes each message inside its broker, so no message is ever in both
//! queues or in neither. The commands send the chosen ids in batches of [`BATCH`]; ctrl-c or
//! SIGTERM stops them between two batches, and what was not sent stays in the error queue.

use std::io::Write;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use super::{
    FailedMessage, ListOptions, Listing, MoveOptions, confirm, may_ask, print_details, progress,
    stop_on_signal,
};
use crate::envelope::Envelope;
use crate::transport::DeadLetter;

/// Ids sent to the host in one request.
const BATCH: usize = 100;

/// The admin API of the host that runs the embedded broker.
pub trait AdminApi {
    /// The body of a `GET`.
    fn get(&self, path: &str) -> Result<String>;
    /// The body of a `POST` of `body` as JSON.
    fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<String>;
}

/// A message of an error queue as `GET /v1/errors/{queue}` lists it: the envelope without its
/// body (a queue of messages refused as too large would make a large answer), and the body's
/// size. `POST /v1/errors/{queue}/show` gives chosen messages whole.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listed {
    pub envelope: Envelope,
    pub body_bytes: usize,
}

impl Listed {
    pub fn of(mut envelope: Envelope) -> Listed {
        let body_bytes = envelope.body.len();
        envelope.body = Vec::new();
        Listed {
            envelope,
            body_bytes,
        }
    }
}

/// The messages of `<queue>_error`, oldest first, without their bodies.
fn fetch(api: &dyn AdminApi, queue: &str) -> Result<(String, Vec<FailedMessage>)> {
    let error_queue = DeadLetter::Error.queue_for(queue);
    let text = api.get(&format!("/v1/errors/{queue}"))?;
    let listed: Vec<Listed> = serde_json::from_str(&text)
        .with_context(|| format!("the host's answer about {error_queue} is not a message list"))?;
    let messages = listed
        .iter()
        .enumerate()
        .map(|(place, listed)| {
            let mut message = FailedMessage::of_envelope(&error_queue, place + 1, &listed.envelope);
            message.body_bytes = listed.body_bytes;
            message
        })
        .collect();
    Ok((error_queue, messages))
}

/// `courier errors list` on the embedded broker.
pub fn list(api: &dyn AdminApi, options: &ListOptions, out: &mut impl Write) -> Result<()> {
    let mut listing = Listing::new(options);
    for queue in listing.queues.clone() {
        if listing.full() {
            break;
        }
        let (error_queue, messages) = fetch(api, &queue)?;
        let mut matching = 0_usize;
        for message in &messages {
            if listing.full() {
                break;
            }
            if listing.add(message, out)? {
                matching += 1;
            }
        }
        let ready = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        listing.note(&error_queue, ready, matching);
    }
    listing.finish(out)
}

/// `courier errors show` on the embedded broker.
pub fn show(
    api: &dyn AdminApi,
    queue: &str,
    id: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let (error_queue, messages) = fetch(api, queue)?;
    let position = messages.iter().position(|m| m.id == id).with_context(|| {
        format!(
            "no message {id} in {error_queue} ({} message(s) there)",
            messages.len()
        )
    })?;
    let text = api.post_json(
        &format!("/v1/errors/{queue}/show"),
        &serde_json::json!({ "ids": [id] }),
    )?;
    let whole: Vec<Envelope> = serde_json::from_str(&text)
        .with_context(|| format!("the host's answer about {id} is not a message list"))?;
    let envelope = whole
        .first()
        .with_context(|| format!("{id} left {error_queue} while it was being shown"))?;
    let message = FailedMessage::of_envelope(&error_queue, position + 1, envelope);
    print_details(&message, json, out)
}

/// The ids of the messages `options` chooses, oldest first.
fn choose(api: &dyn AdminApi, options: &MoveOptions) -> Result<(String, Vec<String>)> {
    let (error_queue, messages) = fetch(api, &options.queue)?;
    let limit = options.selection.limit.unwrap_or(usize::MAX);
    let chosen = messages
        .iter()
        .filter(|message| options.selection.matches(message))
        .take(limit)
        .map(|message| message.id.clone())
        .collect();
    Ok((error_queue, chosen))
}

#[derive(Deserialize)]
struct Moved {
    replayed: Option<usize>,
    purged: Option<usize>,
}

/// Sends `ids` to `/v1/errors/{queue}/{action}` in batches; returns how many the host moved
/// and whether a signal stopped it early.
async fn in_batches(
    api: &dyn AdminApi,
    queue: &str,
    action: &str,
    ids: &[String],
    what: &str,
) -> Result<(usize, bool)> {
    let stop = stop_on_signal();
    let bar = progress(ids.len(), what);
    let mut moved = 0;
    for batch in ids.chunks(BATCH) {
        if stop.is_cancelled() {
            break;
        }
        let text = api.post_json(
            &format!("/v1/errors/{queue}/{action}"),
            &serde_json::json!({ "ids": batch }),
        );
        let text = text.with_context(|| {
            format!("{action} stopped; the batches before this one moved {moved} message(s)")
        })?;
        let answer: Moved = serde_json::from_str(&text)
            .with_context(|| format!("the host's answer to {action} is not understood"))?;
        moved += answer.replayed.or(answer.purged).unwrap_or(0);
        bar.inc(batch.len() as u64);
        // Let a signal that came during the request be seen before the next batch.
        tokio::task::yield_now().await;
    }
    bar.finish_and_clear();
    Ok((moved, stop.is_cancelled()))
}

/// `courier errors replay` on the embedded broker.
pub async fn replay(api: &dyn AdminApi, options: &MoveOptions, out: &mut impl Write) -> Result<()> {
    let (error_queue, ids) = choose(api, options)?;
    let total = ids.len();
    let what = format!("replaying from {error_queue}");
    let (replayed, stopped) = in_batches(api, &options.queue, "replay", &ids, &what).await?;
    writeln!(
        out,
        "replayed {replayed} of {total} message(s) from {error_queue}"
    )?;
    out.flush()?;
    if stopped && replayed < total {
        bail!("interrupted: the message(s) not replayed stay in {error_queue}");
    }
    Ok(())
}

/// `courier errors purge` on the embedded broker: asks first unless `assume_yes`.
pub async fn purge(
    api: &dyn AdminApi,
    options: &MoveOptions,
    assume_yes: bool,
    out: &mut impl Write,
) -> Result<()> {
    may_ask(assume_yes)?;
    let (error_queue, ids) = choose(api, options)?;
    let total = ids.len();
    if total > 0
        && !assume_yes
        && !confirm(&format!("purge {total} message(s) from {error_queue}?")).await?
    {
        writeln!(out, "purge cancelled: nothing removed from {error_queue}")?;
        return Ok(());
    }
    let what = format!("purging {error_queue}");
    let (purged, stopped) = in_batches(api, &options.queue, "purge", &ids, &what).await?;
    writeln!(
        out,
        "purged {purged} of {total} message(s) from {error_queue}"
    )?;
    out.flush()?;
    if stopped && purged < total {
        bail!("interrupted: the message(s) not purged stay in {error_queue}");
    }
    Ok(())
}
