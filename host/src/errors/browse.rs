//! The broker side of the error-queue commands: one connection, a browse that holds the
//! messages of a queue unacknowledged on one channel until it closes it, and a confirmed
//! publish. Why a browse consumes and closes its channel (rather than `basic.get` or a nack) is
//! told in the docs of [`crate::errors`].

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use futures_lite::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, LongString, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};

use super::message::FailedMessage;
use crate::config::{BrokerUrl, HostConfig, redact_url};

/// A browse that receives nothing for this long has seen everything it will see.
const IDLE: Duration = Duration::from_secs(2);
/// After closing its channel, the longest a command waits for the broker to put the held
/// messages back in the queue.
const SETTLE: Duration = Duration::from_secs(10);

/// The RabbitMQ whose error queues the commands work on. The URL may hold a password: it is
/// shown only through [`redact_url`].
#[derive(Clone)]
pub struct Broker {
    url: String,
    connect_timeout: Duration,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("url", &redact_url(&self.url))
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Broker {
    /// The broker of a host configuration (`broker`, `amqp.connect_timeout_ms`); it must be
    /// RabbitMQ, since the embedded broker lives inside a host process.
    pub fn from_config(config: &HostConfig) -> Result<Broker> {
        let url = config.broker.as_deref().unwrap_or("memory://");
        match BrokerUrl::parse(url).context("broker")? {
            BrokerUrl::Amqp(url) => Ok(Broker {
                url,
                connect_timeout: Duration::from_millis(config.amqp.connect_timeout_ms),
            }),
            BrokerUrl::Memory => bail!(
                "this is the RabbitMQ side of the error queue commands; the embedded broker's error queues are reached through its host's admin API (errors::embedded)"
            ),
        }
    }

    /// The URL with its password replaced.
    pub fn describe(&self) -> String {
        redact_url(&self.url)
    }
}

/// A connection to the broker for one command.
pub(super) struct Session {
    connection: Connection,
    url: String,
    shown: String,
}

impl Session {
    pub(super) async fn open(broker: &Broker) -> Result<Session> {
        let shown = broker.describe();
        let properties =
            ConnectionProperties::default().with_connection_name(LongString::from(format!(
                "courier-errors@{}",
                gethostname::gethostname().to_string_lossy()
            )));
        let connection = tokio::time::timeout(
            broker.connect_timeout,
            Connection::connect(&broker.url, properties),
        )
        .await
        .map_err(|_| anyhow!("no answer from {shown} in {:?}", broker.connect_timeout))?
        .map_err(|error| {
            anyhow!(
                "cannot connect to {shown}: {}",
                scrub(&error.to_string(), &broker.url)
            )
        })?;
        Ok(Session {
            connection,
            url: broker.url.clone(),
            shown,
        })
    }

    /// An error from the broker, with any URL in it redacted.
    fn fail(&self, error: &lapin::Error, what: impl fmt::Display) -> anyhow::Error {
        anyhow!(
            "{what} on {}: {}",
            self.shown,
            scrub(&error.to_string(), &self.url)
        )
    }

    async fn channel(&self) -> Result<Channel> {
        self.connection
            .create_channel()
            .await
            .map_err(|e| self.fail(&e, "cannot open a channel"))
    }

    /// Messages ready in `queue`; a queue that does not exist is an error naming it.
    async fn ready_count(&self, queue: &str) -> Result<u32> {
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(declared) => {
                let _ = channel.close(200, ShortString::from("done")).await;
                Ok(declared.message_count())
            }
            Err(error) if is_not_found(&error) => {
                bail!("no queue named {queue} on {}", self.shown)
            }
            Err(error) => Err(self.fail(&error, format!("cannot look at queue {queue}"))),
        }
    }

    /// Starts looking at the messages of `queue`, at most `scan_limit` of them.
    ///
    /// A browse takes every message of the queue, because a quorum queue that gets back only
    /// part of its messages puts them behind the others (see [`crate::errors`]). So a queue
    /// holding more than `scan_limit` messages is refused, unless `part_will_be_removed`: the
    /// caller removes every message it looks at, so none goes back.
    pub(super) async fn browse(
        &self,
        queue: &str,
        scan_limit: u16,
        part_will_be_removed: bool,
    ) -> Result<Browse> {
        let ready = self.ready_count(queue).await?;
        let scan_limit = scan_limit.max(1);
        if ready > u32::from(scan_limit) && !part_will_be_removed {
            bail!(
                "{queue} holds {ready} messages, more than --scan-limit {scan_limit}: a command looks at the whole queue, since putting back only part of a quorum queue would reorder it (raise --scan-limit, at most {})",
                u16::MAX
            );
        }
        let expected = ready.min(u32::from(scan_limit));
        let channel = self.channel().await?;
        let consumer = if expected == 0 {
            None
        } else {
            let prefetch = u16::try_from(expected).unwrap_or(u16::MAX);
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| self.fail(&e, "cannot set the prefetch"))?;
            let consumer = channel
                .basic_consume(
                    ShortString::from(queue),
                    ShortString::from(""),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.fail(&e, format!("cannot consume {queue}")))?;
            Some(consumer)
        };
        Ok(Browse {
            channel,
            consumer,
            queue: queue.to_owned(),
            ready,
            expected,
            seen: 0,
            removed: 0,
            cancelled: false,
        })
    }

    /// A channel whose publishes the broker confirms.
    pub(super) async fn confirming_channel(&self) -> Result<Channel> {
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.fail(&e, "cannot enable publisher confirms"))?;
        Ok(channel)
    }

    pub(super) async fn close(self) {
        let _ = self.connection.close(200, ShortString::from("done")).await;
    }
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

/// Removes the URL (and so any password in it) from an error text.
fn scrub(text: &str, url: &str) -> String {
    text.replace(url, &redact_url(url))
}

/// The messages of one queue held unacknowledged on one channel. Those not acked go back, in
/// their order, when [`Browse::release`] closes the channel (or the connection drops).
pub(super) struct Browse {
    channel: Channel,
    consumer: Option<lapin::Consumer>,
    pub(super) queue: String,
    /// Messages ready when the browse started.
    pub(super) ready: u32,
    /// Messages it will look at: `ready`, at most the scan limit.
    pub(super) expected: u32,
    /// Messages it has looked at.
    pub(super) seen: u32,
    removed: u32,
    /// The consumer is cancelled: nothing more is delivered.
    cancelled: bool,
}

impl Browse {
    /// The next message, oldest first; `None` once every message there was at the start has
    /// been seen (or nothing came for [`IDLE`]).
    pub(super) async fn next(&mut self) -> Result<Option<FailedMessage>> {
        if self.seen >= self.expected || self.cancelled {
            return Ok(None);
        }
        let Some(consumer) = self.consumer.as_mut() else {
            return Ok(None);
        };
        let delivery = match tokio::time::timeout(IDLE, consumer.next()).await {
            Err(_) => {
                // Someone else took the rest: nothing more is coming.
                self.expected = self.seen;
                return Ok(None);
            }
            Ok(None) => bail!("the broker cancelled the consumer of {}", self.queue),
            Ok(Some(Err(error))) => {
                return Err(anyhow!("consuming {}: {error}", self.queue));
            }
            Ok(Some(Ok(delivery))) => delivery,
        };
        self.seen += 1;
        Ok(Some(FailedMessage::new(
            &self.queue,
            self.seen as usize,
            delivery.delivery_tag,
            delivery.properties,
            delivery.data,
        )))
    }

    /// Ends the looking: takes the deliveries still to come (up to the number expected), then
    /// cancels the consumer, so that acking a message does not make room for the broker to
    /// deliver another one, which would then go back behind the rest.
    pub(super) async fn stop_deliveries(&mut self) -> Result<()> {
        while self.next().await?.is_some() {}
        if let Some(consumer) = &self.consumer
            && !self.cancelled
        {
            self.channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await
                .map_err(|e| anyhow!("cannot cancel the consumer of {}: {e}", self.queue))?;
            self.cancelled = true;
        }
        Ok(())
    }

    /// Messages in the queue at the start that it did not look at (past the scan limit, or
    /// taken by someone else meanwhile).
    fn unseen(&self) -> u32 {
        self.ready.saturating_sub(self.seen)
    }

    /// Removes `message` from the queue.
    pub(super) async fn remove(&mut self, message: &FailedMessage) -> Result<()> {
        self.channel
            .basic_ack(message.delivery_tag, BasicAckOptions::default())
            .await
            .map_err(|e| anyhow!("cannot ack {} in {}: {e}", message.id, self.queue))?;
        self.removed += 1;
        Ok(())
    }

    /// Closes the channel, so the broker puts back every message not removed, and waits until
    /// they are back (at most [`SETTLE`]), so that the next command sees them.
    /// Returns how many of the messages there were at the start it never saw (past the scan
    /// limit, or taken by another consumer meanwhile).
    pub(super) async fn release(mut self, session: &Session) -> Result<u32> {
        // Every message the broker is to deliver is taken first, so that all of them go back
        // together, in their order.
        let _ = self.stop_deliveries().await;
        let unseen = self.unseen();
        let closed = self.channel.close(200, ShortString::from("done")).await;
        // An ack the broker refused closes the channel: what was removed is then unknown.
        if let Err(error) = closed
            && self.removed > 0
        {
            return Err(session.fail(
                &error,
                format!(
                    "the channel on {} closed early, so some acks may not have taken effect (`courier errors list` shows what is left)",
                    self.queue
                ),
            ));
        }
        let back = self.ready.saturating_sub(self.removed);
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            if session.ready_count(&self.queue).await? >= back {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(unseen)
    }
}

/// Publishes the replay copy of `message` to `queue` and waits for the broker's confirm.
pub(super) async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    message: &FailedMessage,
) -> Result<()> {
    let confirm = channel
        .basic_publish(
            ShortString::from(""),
            ShortString::from(queue),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &message.body,
            message.replay_properties(),
        )
        .await
        .map_err(|e| anyhow!("cannot replay {} to {queue}: {e}", message.id))?
        .await
        .map_err(|e| anyhow!("no confirm for {} sent to {queue}: {e}", message.id))?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => {
            bail!("cannot replay {}: no queue named {queue}", message.id)
        }
        Confirmation::Nack(_) => bail!("the broker refused the copy of {} for {queue}", message.id),
        Confirmation::NotRequested => bail!("the broker did not confirm {}", message.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_is_never_shown_with_its_password() {
        let config = HostConfig {
            broker: Some("amqp://guest:hunter2@rabbit:5672/%2f".into()),
            ..HostConfig::default()
        };
        let broker = Broker::from_config(&config).unwrap();
        assert_eq!(broker.describe(), "amqp://guest:***@rabbit:5672/%2f");
        assert!(!format!("{broker:?}").contains("hunter2"));
        // The embedded broker's error queues live inside its host and are
        // reached through the admin API, so this side refuses it.
        let error = Broker::from_config(&HostConfig::default()).unwrap_err();
        assert!(error.to_string().contains("admin API"), "{error}");
    }
}
