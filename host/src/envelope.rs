//! The envelope: a message body plus the fields every transport carries with it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// MessagePack, the default body encoding.
pub const MSGPACK: &str = "application/msgpack";
/// JSON, accepted and produced on request.
pub const JSON: &str = "application/json";

/// Ids of follow-ups are UUID v5 names in this namespace (a v4 drawn once for Courier).
const FOLLOW_UP_NAMESPACE: Uuid = Uuid::from_u128(0x5c0f_2a57_6d1e_4b8a_9a43_c0de_7b1e_d5a1);

/// A message with its whole envelope, as the transports store and deliver it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    /// The message type URN, `urn:message:<Namespace>:<Type>`.
    pub message_type: String,
    pub content_type: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub correlation_id: Option<String>,
    pub conversation_id: String,
    pub initiator_id: Option<String>,
    pub session_id: Option<String>,
    pub reply_to: Option<String>,
    pub source_address: Option<String>,
    pub sent_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    /// 1 on the first delivery; each redelivery adds one.
    pub attempt: u32,
    pub headers: Vec<(String, String)>,
}

impl Envelope {
    /// A message that starts a conversation: a new time-ordered id that is also the
    /// conversation id.
    pub fn new(
        message_type: impl Into<String>,
        content_type: impl Into<String>,
        body: Vec<u8>,
    ) -> Self {
        let id = Uuid::now_v7().to_string();
        Envelope {
            conversation_id: id.clone(),
            id,
            message_type: message_type.into(),
            content_type: content_type.into(),
            body,
            correlation_id: None,
            initiator_id: None,
            session_id: None,
            reply_to: None,
            source_address: None,
            sent_at_ms: now_ms(),
            expires_at_ms: None,
            attempt: 1,
            headers: Vec::new(),
        }
    }

    /// Whether the message's expiry time has passed.
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|expires| expires <= now_ms)
    }

    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Sets a header, replacing any with the same name.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.into()));
    }

    /// The short type name, `OrderPlaced` for `urn:message:Orders:OrderPlaced`.
    pub fn short_type(&self) -> &str {
        short_type(&self.message_type)
    }
}

/// The id of the `index`-th follow-up of message `parent_id`: the same inputs always give the
/// same id, so a redelivered message re-publishes the ids it published the first time.
pub fn follow_up_id(parent_id: &str, index: u32) -> String {
    let mut name = Vec::with_capacity(parent_id.len() + 5);
    name.extend_from_slice(parent_id.as_bytes());
    name.push(b'#');
    name.extend_from_slice(&index.to_be_bytes());
    Uuid::new_v5(&FOLLOW_UP_NAMESPACE, &name).to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The short type name of a URN: its last `:`-separated part.
pub fn short_type(urn: &str) -> &str {
    urn.rsplit(':').next().unwrap_or(urn)
}

/// Checks that a message type is a URN of the form `urn:message:<Namespace>:<Type>`.
pub fn validate_message_type(urn: &str) -> Result<(), String> {
    let Some(rest) = urn.strip_prefix("urn:message:") else {
        return Err(format!(
            "message type `{urn}` must start with `urn:message:`"
        ));
    };
    match rest.rsplit_once(':') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => Ok(()),
        _ => Err(format!(
            "message type `{urn}` must name a namespace and a type: `urn:message:Namespace:Type`"
        )),
    }
}

/// Whether Courier can carry a body of this content type (the essence, parameters ignored).
pub fn is_known_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    [
        MSGPACK,
        "application/x-msgpack",
        "application/vnd.msgpack",
        JSON,
    ]
    .iter()
    .any(|known| essence.eq_ignore_ascii_case(known))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_message_starts_its_own_conversation() {
        let message = Envelope::new("urn:message:Orders:OrderPlaced", MSGPACK, vec![1]);
        assert_eq!(message.conversation_id, message.id);
        assert_eq!(message.attempt, 1);
        assert!(Uuid::parse_str(&message.id).is_ok_and(|id| id.get_version_num() == 7));
    }

    #[test]
    fn follow_up_ids_are_deterministic_and_distinct_by_index() {
        assert_eq!(follow_up_id("m-1", 0), follow_up_id("m-1", 0));
        assert_ne!(follow_up_id("m-1", 0), follow_up_id("m-1", 1));
        assert_ne!(follow_up_id("m-1", 0), follow_up_id("m-2", 0));
    }

    #[test]
    fn message_types_must_be_urns() {
        assert!(validate_message_type("urn:message:Orders:OrderPlaced").is_ok());
        assert!(validate_message_type("OrderPlaced").is_err());
        assert!(validate_message_type("urn:message:OrderPlaced").is_err());
        assert!(validate_message_type("urn:message:Orders:").is_err());
    }

    #[test]
    fn content_types_are_recognised_by_essence() {
        assert!(is_known_content_type("application/json; charset=utf-8"));
        assert!(is_known_content_type("application/msgpack"));
        assert!(!is_known_content_type("text/plain"));
        assert!(!is_known_content_type(""));
    }

    #[test]
    fn envelopes_round_trip_through_msgpack_and_json() {
        let mut message =
            Envelope::new("urn:message:Orders:OrderPlaced", MSGPACK, vec![0, 159, 255]);
        message.set_header("traceparent", "00-abc-def-01");
        let packed = rmp_serde::to_vec_named(&message).unwrap();
        assert_eq!(rmp_serde::from_slice::<Envelope>(&packed).unwrap(), message);
        let json = serde_json::to_vec(&message).unwrap();
        assert_eq!(serde_json::from_slice::<Envelope>(&json).unwrap(), message);
    }
}
