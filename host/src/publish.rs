//! Messages put into Courier from outside: the admin API's `POST /v1/messages`, seed files
//! (one request per line), and `courier publish` / `courier send` all use this shape.
//!
//! ```json
//! {"type": "urn:message:Orders:OrderPlaced", "body": {"order_id": "o-1"},
//!  "correlation_id": "o-1", "content_type": "application/msgpack"}
//! ```
//! The body is given as JSON and encoded to `content_type` (MessagePack by default).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, JSON, MSGPACK, now_ms, validate_message_type};
use crate::transport::{Outbound, Route};

/// One message to publish (an event) or send (a command, when `destination` is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The message type URN.
    #[serde(rename = "type")]
    pub message_type: String,
    /// The body, as JSON; encoded to `content_type`.
    pub body: serde_json::Value,
    /// `application/msgpack` (default) or `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Send to this queue instead of publishing to the type's subscribers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl PublishRequest {
    /// A request to publish `body` as `message_type`, with every option at its default.
    pub fn new(message_type: impl Into<String>, body: serde_json::Value) -> Self {
        PublishRequest {
            message_type: message_type.into(),
            body,
            content_type: None,
            destination: None,
            correlation_id: None,
            session_id: None,
            reply_to: None,
            ttl_ms: None,
            delay_ms: None,
            headers: BTreeMap::new(),
        }
    }

    /// Checks the request and builds the message: a new conversation, from `source`.
    pub fn into_outbound(self, source: &str) -> Result<Outbound> {
        validate_message_type(&self.message_type).map_err(anyhow::Error::msg)?;
        let content_type = self.content_type.unwrap_or_else(|| MSGPACK.to_owned());
        let body = match content_type.split(';').next().unwrap_or_default().trim() {
            MSGPACK | "application/x-msgpack" | "application/vnd.msgpack" => {
                rmp_serde::to_vec_named(&self.body)
                    .context("the body cannot be encoded as MessagePack")?
            }
            JSON => serde_json::to_vec(&self.body)?,
            other => bail!(
                "content type `{other}` is not supported: use application/msgpack or application/json"
            ),
        };
        let mut envelope = Envelope::new(self.message_type, content_type, body);
        envelope.correlation_id = self.correlation_id;
        envelope.session_id = self.session_id;
        envelope.reply_to = self.reply_to;
        envelope.source_address = Some(source.to_owned());
        envelope.expires_at_ms = self.ttl_ms.map(|ttl| now_ms().saturating_add(ttl));
        for (name, value) in self.headers {
            envelope.set_header(&name, value);
        }
        let route = match self.destination {
            Some(queue) if !queue.trim().is_empty() => Route::Send(queue),
            Some(_) => bail!("the destination queue is empty"),
            None => Route::Publish,
        };
        Ok(Outbound {
            route,
            envelope,
            delay: self.delay_ms.map(Duration::from_millis),
        })
    }
}

/// Reads a seed file: one JSON request per line; blank lines and lines starting with `#` are
/// skipped. An error names the file and the line.
pub fn read_seed_file(path: &Path) -> Result<Vec<PublishRequest>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read seed file {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|(index, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a valid message", path.display(), index + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_encoded_to_the_content_type_asked() {
        let body = serde_json::json!({"order_id": "o-1", "amount_cents": 10});
        let packed = PublishRequest::new("urn:message:Orders:OrderPlaced", body.clone())
            .into_outbound("test")
            .unwrap();
        assert_eq!(packed.envelope.content_type, MSGPACK);
        assert_eq!(
            rmp_serde::from_slice::<serde_json::Value>(&packed.envelope.body).unwrap(),
            body
        );
        assert_eq!(packed.route, Route::Publish);

        let mut request = PublishRequest::new("urn:message:Orders:ShipOrder", body.clone());
        request.content_type = Some(JSON.into());
        request.destination = Some("shipping".into());
        let json = request.into_outbound("test").unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json.envelope.body).unwrap(),
            body
        );
        assert_eq!(json.route, Route::Send("shipping".into()));
    }

    #[test]
    fn bad_requests_say_why() {
        let bad_type = PublishRequest::new("OrderPlaced", serde_json::json!({}));
        assert!(
            bad_type
                .into_outbound("t")
                .unwrap_err()
                .to_string()
                .contains("urn:message:")
        );
        let mut bad_ct = PublishRequest::new("urn:message:A:B", serde_json::json!({}));
        bad_ct.content_type = Some("text/xml".into());
        assert!(
            bad_ct
                .into_outbound("t")
                .unwrap_err()
                .to_string()
                .contains("text/xml")
        );
    }

    #[test]
    fn seed_files_report_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("courier-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seed.jsonl");
        std::fs::write(
            &path,
            "# orders\n{\"type\":\"urn:message:A:B\",\"body\":{}}\n\n{\"type\":1}\n",
        )
        .unwrap();
        let error = format!("{:#}", read_seed_file(&path).unwrap_err());
        assert!(error.contains("seed.jsonl:4"), "{error}");
        std::fs::write(&path, "{\"type\":\"urn:message:A:B\",\"body\":{}}\n").unwrap();
        assert_eq!(read_seed_file(&path).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
