//! Sessions: messages that share a session id are handled in order, one at a time.
//!
//! A message's session id (its ordering key) is set by whoever publishes it: `courier publish
//! --session-id`, the `session_id` of a publish request, a plugin's publish options, or the
//! `courier-session-id` header of a message published from outside Courier. A message
//! published without one can get it from a rule of the host configuration, which reads a field
//! of the body:
//!
//! ```toml
//! [[session_keys]]
//! types = "urn:message:Orders:*"   # one type, or every type that starts with the part before `*`
//! field = "order_id"               # a field of the body; `customer.id` reaches into a map
//! ```
//!
//! Courier applies the rules to everything it publishes (so the broker can route by the key)
//! and again to every message an ordered plugin receives without a session id.
//!
//! # The rule of an ordered plugin (`ordered = true`)
//! - Messages with the same session id are handled one at a time, in the order the plugin's
//!   queue holds them; messages with different ids run in parallel, up to the concurrency.
//!   Messages with no session id are not ordered.
//! - The next message of a session is handled once the one before it is settled: handled and
//!   acknowledged, dead-lettered, or skipped.
//! - A message whose handling fails holds back the later messages of its session, and only
//!   those, until it succeeds or goes to the error queue. Its delayed redeliveries wait in the
//!   host rather than at the back of the queue, so nothing of its session overtakes it. If the
//!   host stops meanwhile, the broker delivers it again from the start of its attempts.
//! - Held-back messages count against the prefetch: a session that keeps failing can fill it,
//!   and then its queue (or, on RabbitMQ, its partition) waits for that session.
//!
//! On RabbitMQ an ordered endpoint is spread over partition queues by a consistent-hash
//! exchange, each partition consumed by one host at a time (see [`crate::transport::amqp`]).

use anyhow::{Result, bail};
use serde::Deserialize;

use crate::envelope::{Envelope, JSON, MSGPACK};

/// Gives messages of some types a session id from a field of their body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionKeyRule {
    /// A message type URN, or a prefix of one followed by `*`.
    pub types: String,
    /// The body field whose value is the session id; dots reach into nested maps.
    pub field: String,
}

impl SessionKeyRule {
    pub fn validate(&self, origin: &str) -> Result<()> {
        let prefix = self.types.strip_suffix('*').unwrap_or(&self.types);
        if prefix.is_empty() || prefix.contains('*') {
            bail!(
                "{origin}.types = {:?}: give a message type, or the start of one followed by a single `*`",
                self.types
            );
        }
        if self.field.split('.').any(str::is_empty) {
            bail!(
                "{origin}.field = {:?}: give a field name (dots reach into nested maps)",
                self.field
            );
        }
        Ok(())
    }

    fn matches(&self, message_type: &str) -> bool {
        match self.types.strip_suffix('*') {
            Some(prefix) => message_type.starts_with(prefix),
            None => message_type == self.types,
        }
    }
}

/// The session id of `envelope`: its own, or the one the first matching rule reads from its
/// body. `None` if it has none and no rule gives one (a body that does not decode, or lacks
/// the field, gives none).
pub fn key_of(envelope: &Envelope, rules: &[SessionKeyRule]) -> Option<String> {
    if let Some(session) = &envelope.session_id {
        return Some(session.clone());
    }
    let rule = rules
        .iter()
        .find(|rule| rule.matches(&envelope.message_type))?;
    let body = decode(envelope)?;
    let value = rule
        .field
        .split('.')
        .try_fold(&body, |value, name| value.get(name))?;
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        serde_json::Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Sets the session id of a message that has none, if a rule gives it one.
pub fn stamp(envelope: &mut Envelope, rules: &[SessionKeyRule]) {
    if envelope.session_id.is_none() && !rules.is_empty() {
        envelope.session_id = key_of(envelope, rules);
    }
}

fn decode(envelope: &Envelope) -> Option<serde_json::Value> {
    match envelope.content_type.split(';').next()?.trim() {
        MSGPACK | "application/x-msgpack" | "application/vnd.msgpack" => {
            rmp_serde::from_slice(&envelope.body).ok()
        }
        JSON => serde_json::from_slice(&envelope.body).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(types: &str, field: &str) -> SessionKeyRule {
        SessionKeyRule {
            types: types.into(),
            field: field.into(),
        }
    }

    fn message(message_type: &str, body: serde_json::Value) -> Envelope {
        Envelope::new(
            message_type,
            MSGPACK,
            rmp_serde::to_vec_named(&body).unwrap(),
        )
    }

    #[test]
    fn a_rule_reads_the_key_from_the_body() {
        let rules = [
            rule("urn:message:Orders:*", "order_id"),
            rule("urn:message:Billing:Invoice", "biller.id"),
        ];
        let placed = message(
            "urn:message:Orders:OrderPlaced",
            serde_json::json!({"order_id": "o-7"}),
        );
        assert_eq!(key_of(&placed, &rules).as_deref(), Some("o-7"));
        let invoice = message(
            "urn:message:Billing:Invoice",
            serde_json::json!({"biller": {"id": 42}}),
        );
        assert_eq!(key_of(&invoice, &rules).as_deref(), Some("42"));
        let other = message(
            "urn:message:Billing:Paid",
            serde_json::json!({"order_id": "o-7"}),
        );
        assert_eq!(key_of(&other, &rules), None);
        let missing = message("urn:message:Orders:OrderPlaced", serde_json::json!({}));
        assert_eq!(key_of(&missing, &rules), None);
    }

    #[test]
    fn the_message_s_own_session_id_wins_and_stamping_keeps_it() {
        let rules = [rule("urn:message:Orders:*", "order_id")];
        let mut placed = message(
            "urn:message:Orders:OrderPlaced",
            serde_json::json!({"order_id": "o-7"}),
        );
        placed.session_id = Some("customer-3".into());
        assert_eq!(key_of(&placed, &rules).as_deref(), Some("customer-3"));
        stamp(&mut placed, &rules);
        assert_eq!(placed.session_id.as_deref(), Some("customer-3"));
        let mut json = Envelope::new(
            "urn:message:Orders:OrderPlaced",
            JSON,
            br#"{"order_id":"o-8"}"#.to_vec(),
        );
        stamp(&mut json, &rules);
        assert_eq!(json.session_id.as_deref(), Some("o-8"));
    }

    #[test]
    fn a_bad_rule_is_refused_naming_its_key() {
        let error = rule("urn:*:Orders:*", "order_id")
            .validate("session_keys[0]")
            .unwrap_err();
        assert!(
            error.to_string().contains("session_keys[0].types"),
            "{error}"
        );
        let error = rule("urn:message:Orders:*", "order..id")
            .validate("session_keys[1]")
            .unwrap_err();
        assert!(
            error.to_string().contains("session_keys[1].field"),
            "{error}"
        );
    }
}
