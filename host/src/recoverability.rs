//! The one place where the outcome of a handler call becomes a broker action.
//!
//! | outcome                          | action                                              |
//! |----------------------------------|-----------------------------------------------------|
//! | `Ok`                             | release the outbox, then ack                        |
//! | `Ok`, but the broker refuses the outbox (unreachable, no such endpoint) | a failed attempt under the [`RetryPolicy`], as for `Err(retry)` |
//! | `Err(retry)` or a trap           | the plugin's [`RetryPolicy`]: immediate retries on fresh instances, then redeliveries held by the broker, then the error queue and one fault event |
//! | `Err(reject)`                    | the error queue at once                             |
//! | no handler for the type          | `<queue>_skipped`                                   |
//! | expired before handling          | `<queue>_expired`                                   |
//! | unknown content type, body too big | the error queue at once                           |
//!
//! A message in a dead-letter queue is the original, unchanged, plus the fault headers below.
//! When a message goes to the error queue, one [`FAULT_TYPE`] event is published with it, in
//! the same confirmed batch: one per dead-lettered message, never one per attempt.

use serde::Serialize;

use crate::config::{NextAttempt, RetryPolicy};
use crate::envelope::{Envelope, MSGPACK, follow_up_id, now_ms};
use crate::plugin::Outcome;

/// The type of the event published when a message goes to an error queue.
pub const FAULT_TYPE: &str = "urn:message:Courier:Fault";

/// Carried on a message between its attempts: when its first attempt failed, ms since the
/// Unix epoch.
pub const FIRST_FAILURE_HEADER: &str = "courier-first-failure-ms";

/// Fault header names, written on every dead-lettered message.
pub mod headers {
    /// Why: `rejected`, `retries-exhausted`, `no-handler`, `expired`, `unsupported-content-type`,
    /// `too-large`.
    pub const REASON: &str = "courier-fault-reason";
    /// The error text (the handler's reason, the trap).
    pub const MESSAGE: &str = "courier-fault-message";
    pub const PLUGIN: &str = "courier-fault-plugin";
    pub const PLUGIN_VERSION: &str = "courier-fault-plugin-version";
    pub const MESSAGE_TYPE: &str = "courier-fault-message-type";
    /// Deliveries made before the message was dead-lettered.
    pub const ATTEMPTS: &str = "courier-fault-attempts";
    pub const ORIGINAL_QUEUE: &str = "courier-fault-original-queue";
    pub const HOST: &str = "courier-fault-host";
    /// When its last attempt failed (when it was dead-lettered), ms since the Unix epoch.
    pub const TIME: &str = "courier-fault-time-ms";
    /// When its first attempt failed, ms since the Unix epoch.
    pub const FIRST_FAILURE: &str = "courier-fault-first-failure-ms";
}

/// What to do with a delivery after its handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Release the outbox, then ack.
    Complete,
    /// Call the handler again now, on a fresh instance.
    RetryNow { error: String },
    /// Put it back for another attempt after `delay`.
    Redeliver {
        delay: std::time::Duration,
        error: String,
    },
    /// Send it to the error queue with this reason and error text.
    DeadLetter { reason: &'static str, error: String },
}

/// Maps a handler outcome on call number `attempt` to a decision.
pub fn decide(outcome: &Outcome, attempt: u32, policy: &RetryPolicy) -> Decision {
    match outcome {
        Outcome::Handled => Decision::Complete,
        Outcome::Reject(error) => Decision::DeadLetter {
            reason: "rejected",
            error: error.clone(),
        },
        Outcome::Retry(error) | Outcome::Trapped(error) => match policy.after_failure(attempt) {
            NextAttempt::Immediate => Decision::RetryNow {
                error: error.clone(),
            },
            NextAttempt::Redeliver(delay) => Decision::Redeliver {
                delay,
                error: error.clone(),
            },
            NextAttempt::GiveUp => Decision::DeadLetter {
                reason: "retries-exhausted",
                error: format!("failed {attempt} time(s), last: {error}"),
            },
        },
    }
}

/// Who dead-letters a message: written into its fault headers.
#[derive(Debug, Clone, Copy)]
pub struct FaultSource<'a> {
    pub plugin: &'a str,
    pub plugin_version: &'a str,
    pub queue: &'a str,
    pub host: &'a str,
}

/// The original message plus its fault headers.
pub fn with_fault_headers(
    envelope: &Envelope,
    source: FaultSource<'_>,
    reason: &str,
    error: &str,
) -> Envelope {
    let mut faulted = envelope.clone();
    // A dead-letter queue keeps what it is given until someone replays or purges it: the
    // copy carries no expiry, which on RabbitMQ would make the broker drop it there (RabbitMQ
    // clears a message's expiration when it dead-letters one itself, for the same reason).
    faulted.expires_at_ms = None;
    faulted.set_header(headers::REASON, reason);
    faulted.set_header(headers::MESSAGE, error);
    faulted.set_header(headers::PLUGIN, source.plugin);
    faulted.set_header(headers::PLUGIN_VERSION, source.plugin_version);
    faulted.set_header(headers::MESSAGE_TYPE, envelope.message_type.as_str());
    faulted.set_header(headers::ATTEMPTS, envelope.attempt.to_string());
    faulted.set_header(headers::ORIGINAL_QUEUE, source.queue);
    faulted.set_header(headers::HOST, source.host);
    let now = now_ms().to_string();
    let first = envelope
        .header(FIRST_FAILURE_HEADER)
        .unwrap_or(&now)
        .to_owned();
    faulted.set_header(headers::FIRST_FAILURE, first);
    faulted.set_header(headers::TIME, now);
    faulted
}

/// The body of a [`FAULT_TYPE`] event.
#[derive(Debug, Serialize)]
pub struct Fault<'a> {
    pub message_id: &'a str,
    pub message_type: &'a str,
    pub reason: &'a str,
    pub error: &'a str,
    pub plugin: &'a str,
    pub plugin_version: &'a str,
    pub queue: &'a str,
    pub error_queue: &'a str,
    pub attempts: u32,
    pub host: &'a str,
}

/// The fault event for `envelope` going to `error_queue`. Its id is derived from the
/// message's, so a repeated dead-lettering (after a crash) republishes the same event.
pub fn fault_event(
    envelope: &Envelope,
    source: FaultSource<'_>,
    error_queue: &str,
    reason: &str,
    error: &str,
) -> Envelope {
    let fault = Fault {
        message_id: &envelope.id,
        message_type: &envelope.message_type,
        reason,
        error,
        plugin: source.plugin,
        plugin_version: source.plugin_version,
        queue: source.queue,
        error_queue,
        attempts: envelope.attempt,
        host: source.host,
    };
    // Serialising a struct of strings and numbers cannot fail.
    let body = rmp_serde::to_vec_named(&fault).unwrap_or_default();
    let mut event = Envelope::new(FAULT_TYPE, MSGPACK, body);
    event.id = follow_up_id(&envelope.id, u32::MAX);
    event.conversation_id.clone_from(&envelope.conversation_id);
    event.initiator_id = Some(envelope.id.clone());
    event.correlation_id = envelope
        .correlation_id
        .clone()
        .or_else(|| Some(envelope.id.clone()));
    // The fault belongs to the trace of the message that failed.
    for (name, value) in crate::telemetry::follow_up_trace_headers(envelope) {
        event.set_header(&name, value);
    }
    event
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn transient_failures_are_retried_until_the_last_attempt() {
        let policy = RetryPolicy {
            immediate: 1,
            delays: vec![Duration::from_millis(100), Duration::from_millis(500)],
        };
        assert_eq!(policy.total_attempts(), 6);
        let retry = Outcome::Retry("db down".into());
        let decisions: Vec<Decision> = (1..=6).map(|a| decide(&retry, a, &policy)).collect();
        assert!(matches!(decisions[0], Decision::RetryNow { .. }));
        assert!(
            matches!(decisions[1], Decision::Redeliver { delay, .. } if delay == Duration::from_millis(100))
        );
        assert!(matches!(decisions[2], Decision::RetryNow { .. }));
        assert!(
            matches!(decisions[3], Decision::Redeliver { delay, .. } if delay == Duration::from_millis(500))
        );
        assert!(matches!(decisions[4], Decision::RetryNow { .. }));
        assert!(matches!(
            &decisions[5],
            Decision::DeadLetter { reason: "retries-exhausted", error } if error.contains("db down")
        ));
        let trap = Outcome::Trapped("deadline of 10 ms exceeded".into());
        assert!(matches!(
            decide(&trap, 1, &policy),
            Decision::RetryNow { .. }
        ));
        let once = RetryPolicy {
            immediate: 0,
            delays: Vec::new(),
        };
        assert!(matches!(
            decide(&trap, 1, &once),
            Decision::DeadLetter { .. }
        ));
    }

    #[test]
    fn a_rejection_is_never_retried() {
        assert!(matches!(
            decide(
                &Outcome::Reject("bad order".into()),
                1,
                &RetryPolicy::default()
            ),
            Decision::DeadLetter {
                reason: "rejected",
                ..
            }
        ));
        assert_eq!(
            decide(&Outcome::Handled, 1, &RetryPolicy::default()),
            Decision::Complete
        );
    }

    #[test]
    fn fault_headers_keep_the_original_message() {
        let mut original = Envelope::new(
            "urn:message:Orders:OrderPlaced",
            "application/msgpack",
            vec![1, 2],
        );
        original.expires_at_ms = Some(1);
        let source = FaultSource {
            plugin: "payment",
            plugin_version: "1.2.0",
            queue: "payment",
            host: "h1",
        };
        let faulted = with_fault_headers(&original, source, "rejected", "bad order");
        assert_eq!(faulted.body, original.body);
        assert_eq!(faulted.id, original.id);
        assert_eq!(faulted.header(headers::REASON), Some("rejected"));
        assert_eq!(faulted.header(headers::PLUGIN_VERSION), Some("1.2.0"));
        assert_eq!(faulted.header(headers::ORIGINAL_QUEUE), Some("payment"));
        // Not its expiry: the error queue must not lose it when that time passes.
        assert_eq!(faulted.expires_at_ms, None);
        assert!(
            crate::transport::wire::to_properties(&faulted)
                .expiration()
                .is_none()
        );
    }
}
