//! The outbox: what a handler publishes is checked and held here during the call, and
//! released to the transport only after the handler returned `Ok`. On an error or a trap it
//! is dropped, so a failed handling leaves nothing behind.

use std::time::Duration;

use crate::envelope::{
    Envelope, follow_up_id, is_known_content_type, now_ms, validate_message_type,
};
use crate::sandbox::bindings::courier::bus::types::{BusError, Outgoing};
use crate::transport::{Outbound, Route};

/// The consumed message, as far as its follow-ups need it.
#[derive(Debug, Clone)]
pub struct Parent {
    pub id: String,
    pub correlation_id: Option<String>,
    pub conversation_id: String,
    pub reply_to: Option<String>,
    /// Its content type: what a foreign component sends without saying is taken to be
    /// encoded the same way.
    pub content_type: String,
    /// The queue the message was consumed from, recorded as the follow-ups' source.
    pub source_address: String,
    /// `traceparent` / `tracestate` of every follow-up (see [`crate::telemetry`]).
    pub trace_headers: Vec<(String, String)>,
}

impl Parent {
    pub fn of(envelope: &Envelope, source_address: &str) -> Self {
        Parent {
            id: envelope.id.clone(),
            correlation_id: envelope.correlation_id.clone(),
            conversation_id: envelope.conversation_id.clone(),
            reply_to: envelope.reply_to.clone(),
            content_type: envelope.content_type.clone(),
            source_address: source_address.to_owned(),
            trace_headers: crate::telemetry::follow_up_trace_headers(envelope),
        }
    }
}

/// Messages staged by one handler call.
#[derive(Debug)]
pub struct Outbox {
    staged: Vec<Outbound>,
    max_publishes: u32,
    max_message_bytes: u64,
}

impl Outbox {
    pub fn new(max_publishes: u32, max_message_bytes: u64) -> Self {
        Outbox {
            staged: Vec::new(),
            max_publishes,
            max_message_bytes,
        }
    }

    /// Checks and stages one message; returns the id it will carry. The id is derived from
    /// the consumed message's id and the message's index in this call.
    pub fn push(
        &mut self,
        parent: &Parent,
        route: Route,
        message: Outgoing,
    ) -> Result<String, BusError> {
        if self.staged.len() >= self.max_publishes as usize {
            return Err(BusError::Denied(format!(
                "publish limit reached: at most {} messages per handled message",
                self.max_publishes
            )));
        }
        validate_message_type(&message.message_type).map_err(BusError::Invalid)?;
        if !is_known_content_type(&message.content_type) {
            return Err(BusError::Invalid(format!(
                "content type `{}` is not supported: use application/msgpack or application/json",
                message.content_type
            )));
        }
        if message.body.len() as u64 > self.max_message_bytes {
            return Err(BusError::Invalid(format!(
                "body of {} bytes is over the limit of {} bytes",
                message.body.len(),
                self.max_message_bytes
            )));
        }
        let index = u32::try_from(self.staged.len()).unwrap_or(u32::MAX);
        let sent_at_ms = now_ms();
        let mut envelope = Envelope {
            id: follow_up_id(&parent.id, index),
            message_type: message.message_type,
            content_type: message.content_type,
            body: message.body,
            correlation_id: message
                .correlation_id
                .or_else(|| parent.correlation_id.clone()),
            conversation_id: parent.conversation_id.clone(),
            initiator_id: Some(parent.id.clone()),
            session_id: message.session_id,
            reply_to: message.reply_to,
            source_address: Some(parent.source_address.clone()),
            sent_at_ms,
            expires_at_ms: message.ttl_ms.map(|ttl| sent_at_ms.saturating_add(ttl)),
            attempt: 1,
            headers: parent.trace_headers.clone(),
        };
        for (name, value) in message.headers {
            envelope.set_header(&name, value);
        }
        let id = envelope.id.clone();
        self.staged.push(Outbound {
            route,
            envelope,
            delay: message.delay_ms.map(Duration::from_millis),
        });
        Ok(id)
    }

    /// Empties the outbox, returning what was staged.
    pub fn take(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.staged)
    }

    /// Drops whatever was staged.
    pub fn clear(&mut self) {
        self.staged.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::MSGPACK;

    fn parent() -> Parent {
        let mut consumed = Envelope::new("urn:message:Orders:OrderPlaced", MSGPACK, vec![]);
        consumed.correlation_id = Some("order-1".into());
        consumed.set_header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        Parent::of(&consumed, "payment")
    }

    fn outgoing(message_type: &str, body: Vec<u8>) -> Outgoing {
        Outgoing {
            message_type: message_type.into(),
            content_type: MSGPACK.into(),
            body,
            correlation_id: None,
            session_id: None,
            reply_to: None,
            headers: vec![],
            delay_ms: None,
            ttl_ms: None,
        }
    }

    #[test]
    fn staged_messages_get_deterministic_ids_and_the_parents_ids() {
        let parent = parent();
        let mut outbox = Outbox::new(10, 1024);
        let first = outbox
            .push(
                &parent,
                Route::Publish,
                outgoing("urn:message:Orders:A", vec![1]),
            )
            .unwrap();
        let second = outbox
            .push(
                &parent,
                Route::Send("shipping".into()),
                outgoing("urn:message:Orders:B", vec![2]),
            )
            .unwrap();
        assert_eq!(first, follow_up_id(&parent.id, 0));
        assert_eq!(second, follow_up_id(&parent.id, 1));
        let staged = outbox.take();
        assert_eq!(staged.len(), 2);
        let envelope = &staged[0].envelope;
        assert_eq!(envelope.initiator_id.as_deref(), Some(parent.id.as_str()));
        assert_eq!(envelope.conversation_id, parent.conversation_id);
        assert_eq!(envelope.correlation_id.as_deref(), Some("order-1"));
        assert_eq!(envelope.source_address.as_deref(), Some("payment"));
        assert!(envelope.header("traceparent").is_some());
        assert!(outbox.take().is_empty());
    }

    #[test]
    fn limits_are_enforced_with_a_reason() {
        let parent = parent();
        let mut outbox = Outbox::new(1, 4);
        assert!(matches!(
            outbox.push(&parent, Route::Publish, outgoing("urn:message:Orders:A", vec![0; 5])),
            Err(BusError::Invalid(reason)) if reason.contains("over the limit")
        ));
        assert!(matches!(
            outbox.push(&parent, Route::Publish, outgoing("OrderPlaced", vec![])),
            Err(BusError::Invalid(reason)) if reason.contains("urn:message:")
        ));
        outbox
            .push(
                &parent,
                Route::Publish,
                outgoing("urn:message:Orders:A", vec![]),
            )
            .unwrap();
        assert!(matches!(
            outbox.push(&parent, Route::Publish, outgoing("urn:message:Orders:A", vec![])),
            Err(BusError::Denied(reason)) if reason.contains("publish limit")
        ));
    }
}
