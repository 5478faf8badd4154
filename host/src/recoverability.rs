//! The one place where the outcome of a handler call becomes a broker action.
//!
//! | outcome                          | action                                              |
//! |----------------------------------|-----------------------------------------------------|
//! | `Ok`                             | release the outbox, then ack                        |
//! | `Err(retry)` or a trap           | redeliver (attempt + 1) until `max_attempts`, then the error queue |
//! | `Err(reject)`                    | the error queue at once                             |
//! | no handler for the type          | `<queue>_skipped`                                   |
//! | expired before handling          | `<queue>_expired`                                   |
//! | unknown content type, body too big | the error queue at once                           |
//!
//! A message in a dead-letter queue is the original, unchanged, plus the fault headers below.

use crate::envelope::{Envelope, now_ms};
use crate::plugin::Outcome;

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
    /// When it was dead-lettered, ms since the Unix epoch.
    pub const TIME: &str = "courier-fault-time-ms";
}

/// What to do with a delivery after its handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Release the outbox, then ack.
    Complete,
    /// Put it back for another attempt.
    Redeliver { error: String },
    /// Send it to the error queue with this reason and error text.
    DeadLetter { reason: &'static str, error: String },
}

/// Maps a handler outcome on delivery `attempt` to a decision.
pub fn decide(outcome: &Outcome, attempt: u32, max_attempts: u32) -> Decision {
    match outcome {
        Outcome::Handled => Decision::Complete,
        Outcome::Reject(error) => Decision::DeadLetter {
            reason: "rejected",
            error: error.clone(),
        },
        Outcome::Retry(error) | Outcome::Trapped(error) => {
            if attempt >= max_attempts {
                Decision::DeadLetter {
                    reason: "retries-exhausted",
                    error: format!("failed {attempt} time(s), last: {error}"),
                }
            } else {
                Decision::Redeliver {
                    error: error.clone(),
                }
            }
        }
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
    faulted.set_header(headers::REASON, reason);
    faulted.set_header(headers::MESSAGE, error);
    faulted.set_header(headers::PLUGIN, source.plugin);
    faulted.set_header(headers::PLUGIN_VERSION, source.plugin_version);
    faulted.set_header(headers::MESSAGE_TYPE, envelope.message_type.as_str());
    faulted.set_header(headers::ATTEMPTS, envelope.attempt.to_string());
    faulted.set_header(headers::ORIGINAL_QUEUE, source.queue);
    faulted.set_header(headers::HOST, source.host);
    faulted.set_header(headers::TIME, now_ms().to_string());
    faulted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_retried_until_the_last_attempt() {
        let retry = Outcome::Retry("db down".into());
        assert!(matches!(decide(&retry, 1, 3), Decision::Redeliver { .. }));
        assert!(matches!(decide(&retry, 2, 3), Decision::Redeliver { .. }));
        assert!(matches!(
            decide(&retry, 3, 3),
            Decision::DeadLetter { reason: "retries-exhausted", error } if error.contains("db down")
        ));
        let trap = Outcome::Trapped("deadline of 10 ms exceeded".into());
        assert!(matches!(decide(&trap, 1, 3), Decision::Redeliver { .. }));
    }

    #[test]
    fn a_rejection_is_never_retried() {
        assert!(matches!(
            decide(&Outcome::Reject("bad order".into()), 1, 5),
            Decision::DeadLetter {
                reason: "rejected",
                ..
            }
        ));
        assert_eq!(decide(&Outcome::Handled, 1, 5), Decision::Complete);
    }

    #[test]
    fn fault_headers_keep_the_original_message() {
        let original = Envelope::new(
            "urn:message:Orders:OrderPlaced",
            "application/msgpack",
            vec![1, 2],
        );
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
    }
}
