//! The envelope on the AMQP wire: which fields travel as AMQP properties and which as headers.
//!
//! | envelope field    | AMQP                                                        |
//! |-------------------|-------------------------------------------------------------|
//! | id                | `message_id`                                                |
//! | message type      | `type` (if absent: derived from the exchange `<Ns>:<Type>`) |
//! | content type      | `content_type`                                              |
//! | correlation id    | `correlation_id`                                            |
//! | reply-to          | `reply_to`                                                  |
//! | sent time         | `timestamp` (seconds) and header `courier-sent-at-ms`       |
//! | expiry time       | `expiration` (ms left, so the broker expires it too) and header `courier-expires-at-ms` |
//! | conversation id   | header `courier-conversation-id`                            |
//! | initiator id      | header `courier-initiator-id`                               |
//! | session id        | header `courier-session-id`                                 |
//! | source address    | header `courier-source-address`                             |
//! | attempt           | header `courier-attempt` (plus the broker's `x-delivery-count`) |
//! | headers           | headers, as strings (`traceparent`, `tracestate`, …)        |
//!
//! Messages are persistent (`delivery_mode = 2`).

use std::collections::BTreeMap;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use uuid::Uuid;

use crate::envelope::{Envelope, now_ms};

pub const CONVERSATION_ID: &str = "courier-conversation-id";
pub const INITIATOR_ID: &str = "courier-initiator-id";
pub const SESSION_ID: &str = "courier-session-id";
pub const SOURCE_ADDRESS: &str = "courier-source-address";
pub const ATTEMPT: &str = "courier-attempt";
pub const SENT_AT_MS: &str = "courier-sent-at-ms";
pub const EXPIRES_AT_MS: &str = "courier-expires-at-ms";
/// Set by RabbitMQ on quorum queues: how often the message was returned to the queue.
const DELIVERY_COUNT: &str = "x-delivery-count";

/// Names for messages whose publisher gave no id: stable across redeliveries of one message.
const ASSIGNED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x8e1b_03c4_2f0d_4c59_b1a7_5d2c_9e40_c0de);

const ENVELOPE_HEADERS: [&str; 7] = [
    CONVERSATION_ID,
    INITIATOR_ID,
    SESSION_ID,
    SOURCE_ADDRESS,
    ATTEMPT,
    SENT_AT_MS,
    EXPIRES_AT_MS,
];

/// The exchange of a message type: `urn:message:Orders:OrderPlaced` → `Orders:OrderPlaced`.
pub fn exchange_for(message_type: &str) -> &str {
    message_type
        .strip_prefix("urn:message:")
        .unwrap_or(message_type)
}

/// AMQP properties (with headers) for an envelope.
pub fn to_properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = BTreeMap::new();
    let mut put = |name: &str, value: String| {
        headers.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value)),
        );
    };
    for (name, value) in &envelope.headers {
        put(name, value.clone());
    }
    put(CONVERSATION_ID, envelope.conversation_id.clone());
    if let Some(initiator) = &envelope.initiator_id {
        put(INITIATOR_ID, initiator.clone());
    }
    if let Some(session) = &envelope.session_id {
        put(SESSION_ID, session.clone());
    }
    if let Some(source) = &envelope.source_address {
        put(SOURCE_ADDRESS, source.clone());
    }
    put(ATTEMPT, envelope.attempt.to_string());
    put(SENT_AT_MS, envelope.sent_at_ms.to_string());
    if let Some(expires) = envelope.expires_at_ms {
        put(EXPIRES_AT_MS, expires.to_string());
    }

    let mut properties = BasicProperties::default()
        .with_message_id(envelope.id.as_str().into())
        .with_type(envelope.message_type.as_str().into())
        .with_content_type(envelope.content_type.as_str().into())
        .with_timestamp(envelope.sent_at_ms / 1000)
        .with_delivery_mode(2)
        .with_headers(FieldTable::from(headers));
    if let Some(correlation) = &envelope.correlation_id {
        properties = properties.with_correlation_id(correlation.as_str().into());
    }
    if let Some(reply_to) = &envelope.reply_to {
        properties = properties.with_reply_to(reply_to.as_str().into());
    }
    if let Some(expires) = envelope.expires_at_ms {
        // At least 1 ms: an expiration of 0 would mean "deliver now or never".
        let left = expires.saturating_sub(now_ms()).max(1);
        properties = properties.with_expiration(left.to_string().as_str().into());
    }
    properties
}

/// The envelope of a delivered message. Fields a foreign publisher left out are filled in:
/// an id derived from the message's content (stable across redeliveries), the type from the
/// exchange it came through, a new conversation.
pub fn from_delivery(properties: &BasicProperties, body: Vec<u8>, exchange: &str) -> Envelope {
    let mut headers: BTreeMap<String, String> = properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .filter_map(|(name, value)| {
                    header_text(value).map(|text| (name.as_str().to_owned(), text))
                })
                .collect()
        })
        .unwrap_or_default();
    let short = |value: &Option<ShortString>| {
        value
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .filter(|s| !s.is_empty())
    };

    let message_type = short(properties.kind()).unwrap_or_else(|| {
        if exchange.contains(':') {
            format!("urn:message:{exchange}")
        } else {
            String::new()
        }
    });
    let id = short(properties.message_id()).unwrap_or_else(|| {
        let mut name = message_type.as_bytes().to_vec();
        name.extend_from_slice(&body);
        Uuid::new_v5(&ASSIGNED_ID_NAMESPACE, &name).to_string()
    });
    let number = |headers: &BTreeMap<String, String>, name: &str| {
        headers.get(name).and_then(|v| v.parse::<u64>().ok())
    };
    let sent_at_ms = number(&headers, SENT_AT_MS)
        .or_else(|| {
            properties
                .timestamp()
                .map(|seconds| seconds.saturating_mul(1000))
        })
        .unwrap_or_else(now_ms);
    let expires_at_ms = number(&headers, EXPIRES_AT_MS);
    let returned = number(&headers, DELIVERY_COUNT).unwrap_or(0);
    let attempt = number(&headers, ATTEMPT)
        .unwrap_or(1)
        .saturating_add(returned);
    let mut take = |name: &str| headers.remove(name).filter(|v| !v.is_empty());
    let conversation_id = take(CONVERSATION_ID).unwrap_or_else(|| id.clone());
    let initiator_id = take(INITIATOR_ID);
    let session_id = take(SESSION_ID);
    let source_address = take(SOURCE_ADDRESS);
    for name in ENVELOPE_HEADERS {
        headers.remove(name);
    }
    headers.retain(|name, _| !name.starts_with("x-"));

    Envelope {
        id,
        message_type,
        content_type: short(properties.content_type()).unwrap_or_default(),
        body,
        correlation_id: short(properties.correlation_id()),
        conversation_id,
        initiator_id,
        session_id,
        reply_to: short(properties.reply_to()),
        source_address,
        sent_at_ms,
        expires_at_ms,
        attempt: u32::try_from(attempt).unwrap_or(u32::MAX).max(1),
        headers: headers.into_iter().collect(),
    }
}

/// A header value as text; arrays and tables are left out.
/// RabbitMQ's reason for the first time it dead-lettered a message (`x-first-death-reason`),
/// which [`from_delivery`] leaves out of the envelope with the broker's other `x-` headers.
pub fn dead_letter_reason(properties: &BasicProperties) -> Option<String> {
    properties
        .headers()
        .as_ref()?
        .inner()
        .get("x-first-death-reason")
        .and_then(header_text)
}

fn header_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_envelope() -> Envelope {
        let mut envelope = Envelope::new(
            "urn:message:Orders:OrderPlaced",
            "application/msgpack",
            vec![1, 2, 3],
        );
        envelope.correlation_id = Some("order-1".into());
        envelope.conversation_id = "conv-1".into();
        envelope.initiator_id = Some("parent-1".into());
        envelope.session_id = Some("customer-9".into());
        envelope.reply_to = Some("requester".into());
        envelope.source_address = Some("payment".into());
        envelope.expires_at_ms = Some(now_ms() + 60_000);
        envelope.attempt = 3;
        envelope.headers = vec![
            (
                "traceparent".into(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            ),
            ("tenant".into(), "acme".into()),
        ];
        envelope
    }

    #[test]
    fn the_envelope_round_trips_through_amqp_properties() {
        let original = full_envelope();
        let properties = to_properties(&original);
        assert_eq!(
            properties.kind().as_ref().map(|s| s.as_str()),
            Some("urn:message:Orders:OrderPlaced")
        );
        assert_eq!(
            properties.message_id().as_ref().map(|s| s.as_str()),
            Some(original.id.as_str())
        );
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert!(properties.expiration().is_some());
        let mut back = from_delivery(&properties, original.body.clone(), "Orders:OrderPlaced");
        back.headers.sort();
        let mut expected = original;
        expected.headers.sort();
        assert_eq!(back, expected);
    }

    #[test]
    fn a_foreign_message_gets_its_type_from_the_exchange_and_a_stable_id() {
        let properties = BasicProperties::default().with_content_type("application/json".into());
        let first = from_delivery(&properties, b"{}".to_vec(), "Orders:OrderPlaced");
        let again = from_delivery(&properties, b"{}".to_vec(), "Orders:OrderPlaced");
        assert_eq!(first.message_type, "urn:message:Orders:OrderPlaced");
        assert_eq!(first.id, again.id, "a redelivery keeps its id");
        assert_eq!(first.conversation_id, first.id);
        assert_eq!(first.attempt, 1);
    }

    #[test]
    fn the_brokers_delivery_count_adds_to_the_attempt() {
        let mut headers = BTreeMap::new();
        headers.insert(
            ShortString::from(ATTEMPT),
            AMQPValue::LongString("2".into()),
        );
        headers.insert(ShortString::from(DELIVERY_COUNT), AMQPValue::LongLongInt(1));
        let properties = BasicProperties::default().with_headers(FieldTable::from(headers));
        let envelope = from_delivery(&properties, vec![], "");
        assert_eq!(envelope.attempt, 3);
        assert!(
            envelope.headers.is_empty(),
            "broker headers are not the message's"
        );
        assert_eq!(
            envelope.message_type, "",
            "no type, no exchange: nothing to route by"
        );
    }
    #[test]
    fn the_brokers_dead_letter_reason_is_read_but_not_kept_in_the_envelope() {
        let mut headers = BTreeMap::new();
        headers.insert(
            ShortString::from("x-first-death-reason"),
            AMQPValue::LongString("delivery_limit".into()),
        );
        let properties = BasicProperties::default().with_headers(FieldTable::from(headers));
        assert_eq!(
            dead_letter_reason(&properties).as_deref(),
            Some("delivery_limit")
        );
        assert!(from_delivery(&properties, vec![], "").headers.is_empty());
        assert_eq!(dead_letter_reason(&BasicProperties::default()), None);
    }
}
