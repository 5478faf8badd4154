//! A failed message as the error-queue commands see it: its fault headers, whether a
//! [`Selection`] takes it, and how it is shown (a row of the `list` table, `show`, JSON).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::{Map, Value, json};

use super::FAULT_HEADER_PREFIX;
use crate::envelope::Envelope;
use crate::recoverability::{FIRST_FAILURE_HEADER, headers};
use crate::transport::wire::{self, ATTEMPT};

/// Set by RabbitMQ on quorum queues: how often the message went back to the queue.
const DELIVERY_COUNT: &str = "x-delivery-count";
/// The error text is cut to this many characters in the table.
const ERROR_COLUMN: usize = 60;
/// `show` prints at most this many bytes of a body it cannot decode.
const HEX_BYTES: usize = 4096;

/// Which messages a command takes. Every condition given must hold; a condition given several
/// times (two `--type`s) holds when any of its values does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Message types: the URN, `Namespace:Type` or just `Type`.
    pub types: Vec<String>,
    /// Fault reasons (`rejected`, `retries-exhausted`, …).
    pub reasons: Vec<String>,
    /// Failed at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Failed at or before this time (ms since the Unix epoch).
    pub until_ms: Option<u64>,
    /// Message ids.
    pub ids: Vec<String>,
    /// At most this many messages.
    pub limit: Option<usize>,
}

impl Selection {
    /// Whether `message` meets every condition (the limit is the caller's to count).
    pub fn matches(&self, message: &FailedMessage) -> bool {
        let message_type = message.message_type();
        (self.types.is_empty() || self.types.iter().any(|t| type_matches(t, &message_type)))
            && (self.reasons.is_empty()
                || message
                    .reason()
                    .is_some_and(|reason| self.reasons.contains(&reason)))
            && (self.ids.is_empty() || self.ids.contains(&message.id))
            && self
                .since_ms
                .is_none_or(|since| message.failed_at_ms().is_some_and(|at| at >= since))
            && self
                .until_ms
                .is_none_or(|until| message.failed_at_ms().is_some_and(|at| at <= until))
    }
}

/// `wanted` names `actual` as the full URN, as `Namespace:Type` or as `Type`.
fn type_matches(wanted: &str, actual: &str) -> bool {
    let short = actual.strip_prefix("urn:message:").unwrap_or(actual);
    wanted == actual || wanted == short || short.rsplit(':').next() == Some(wanted)
}

/// A moment given on the command line: a duration back from `now_ms` (`2h`, `30m`, `1d`,
/// `1h30m`) or an RFC 3339 time (`2025-01-31T12:00:00Z`), as ms since the Unix epoch.
pub fn parse_moment(text: &str, now_ms: u64) -> Result<u64> {
    let text = text.trim();
    let millis =
        |timestamp: jiff::Timestamp| u64::try_from(timestamp.as_millisecond()).unwrap_or(0);
    if let Ok(timestamp) = text.parse::<jiff::Timestamp>() {
        return Ok(millis(timestamp));
    }
    if let Ok(span) = text.parse::<jiff::Span>() {
        let back = span
            .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
            .with_context(|| format!("`{text}` is too long a duration"))?;
        let now = jiff::Timestamp::from_millisecond(i64::try_from(now_ms).unwrap_or(i64::MAX))
            .context("the clock is out of range")?;
        let then = now
            .checked_sub(back)
            .with_context(|| format!("`{text}` reaches too far back"))?;
        return Ok(millis(then));
    }
    bail!(
        "`{text}` is neither a duration back from now (2h, 30m, 1d) nor an RFC 3339 time (2025-01-31T12:00:00Z)"
    )
}

/// A time in ms since the Unix epoch as `2025-01-31T12:00:00Z`.
fn format_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || ms.to_string(),
            |at| at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

/// One message of an error queue, as the broker holds it.
#[derive(Debug, Clone)]
pub struct FailedMessage {
    /// The error queue it is in.
    pub queue: String,
    /// Its place in the queue among the messages looked at, from 1 (the oldest).
    pub position: usize,
    /// Its `message_id` (or, for a message published without one, the id Courier derives).
    pub id: String,
    pub properties: BasicProperties,
    /// The body; empty in an embedded broker's listing, which leaves bodies out.
    pub body: Vec<u8>,
    /// The body's size, also where the body was left out.
    pub body_bytes: usize,
    pub(super) delivery_tag: u64,
}

impl FailedMessage {
    pub(super) fn new(
        queue: &str,
        position: usize,
        delivery_tag: u64,
        properties: BasicProperties,
        body: Vec<u8>,
    ) -> FailedMessage {
        let id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| wire::from_delivery(&properties, body.clone(), "").id);
        FailedMessage {
            queue: queue.to_owned(),
            position,
            id,
            properties,
            body_bytes: body.len(),
            body,
            delivery_tag,
        }
    }

    /// A message of the embedded broker's `queue`, seen as RabbitMQ would carry it.
    pub fn of_envelope(queue: &str, position: usize, envelope: &Envelope) -> FailedMessage {
        FailedMessage {
            queue: queue.to_owned(),
            position,
            id: envelope.id.clone(),
            properties: wire::to_properties(envelope),
            body: envelope.body.clone(),
            body_bytes: envelope.body.len(),
            delivery_tag: 0,
        }
    }

    /// A header's value as text (numbers as digits; arrays and tables as JSON).
    pub fn header(&self, name: &str) -> Option<String> {
        let value = self.properties.headers().as_ref()?.inner().get(name)?;
        Some(match header_json(value) {
            Value::String(text) => text,
            other => other.to_string(),
        })
    }

    /// The type URN: the `type` property, else the fault header.
    pub fn message_type(&self) -> String {
        short_string(self.properties.kind())
            .or_else(|| self.header(headers::MESSAGE_TYPE))
            .unwrap_or_default()
    }

    pub fn reason(&self) -> Option<String> {
        self.header(headers::REASON)
    }

    /// The error text.
    pub fn error(&self) -> Option<String> {
        self.header(headers::MESSAGE)
    }

    /// When it was dead-lettered, ms since the Unix epoch.
    pub fn failed_at_ms(&self) -> Option<u64> {
        self.header(headers::TIME)?.trim().parse().ok()
    }

    /// The input queue it failed in.
    pub fn original_queue(&self) -> Option<String> {
        self.header(headers::ORIGINAL_QUEUE)
            .filter(|queue| !queue.trim().is_empty())
    }

    /// The AMQP properties that are set, by name.
    pub fn properties_json(&self) -> Map<String, Value> {
        let p = &self.properties;
        let mut map = Map::new();
        let mut text = |name: &str, value: &Option<ShortString>| {
            if let Some(value) = value {
                map.insert(name.to_owned(), Value::String(value.as_str().to_owned()));
            }
        };
        text("message_id", p.message_id());
        text("type", p.kind());
        text("content_type", p.content_type());
        text("content_encoding", p.content_encoding());
        text("correlation_id", p.correlation_id());
        text("reply_to", p.reply_to());
        text("expiration", p.expiration());
        text("user_id", p.user_id());
        text("app_id", p.app_id());
        text("cluster_id", p.cluster_id());
        if let Some(timestamp) = p.timestamp() {
            map.insert("timestamp".into(), json!(timestamp));
        }
        if let Some(mode) = p.delivery_mode() {
            map.insert("delivery_mode".into(), json!(mode));
        }
        if let Some(priority) = p.priority() {
            map.insert("priority".into(), json!(priority));
        }
        map
    }

    /// Every header, by name, with its AMQP value as JSON.
    pub fn headers_json(&self) -> Map<String, Value> {
        self.properties
            .headers()
            .as_ref()
            .map(table_json)
            .unwrap_or_default()
    }

    /// One line of `list --json`: the fault fields, properties and headers.
    pub fn summary_json(&self) -> Value {
        json!({
            "queue": self.queue,
            "position": self.position,
            "id": self.id,
            "type": self.message_type(),
            "reason": self.reason(),
            "error": self.error(),
            "plugin": self.header(headers::PLUGIN),
            "plugin_version": self.header(headers::PLUGIN_VERSION),
            "attempts": self.header(headers::ATTEMPTS).and_then(|a| a.parse::<u64>().ok()),
            "failed_at": self.failed_at_ms().map(format_ms),
            "failed_at_ms": self.failed_at_ms(),
            "original_queue": self.original_queue(),
            "host": self.header(headers::HOST),
            "content_type": short_string(self.properties.content_type()),
            "bytes": self.body_bytes,
            "properties": self.properties_json(),
            "headers": self.headers_json(),
        })
    }

    /// `show --json`: everything, the body decoded where it can be.
    pub fn details_json(&self) -> Value {
        let mut details = self.summary_json();
        if let Some(map) = details.as_object_mut() {
            map.insert("body".into(), body_json(self));
        }
        details
    }

    /// `show`: everything, as text.
    pub fn details(&self) -> String {
        let mut out = format!(
            "message {} (number {} in {})\n",
            self.id, self.position, self.queue
        );
        let fault = [
            ("reason", self.reason()),
            ("error", self.error()),
            (
                "plugin",
                self.header(headers::PLUGIN).map(|plugin| {
                    match self.header(headers::PLUGIN_VERSION) {
                        Some(version) => format!("{plugin}@{version}"),
                        None => plugin,
                    }
                }),
            ),
            ("attempts", self.header(headers::ATTEMPTS)),
            ("failed at", self.failed_at_ms().map(format_ms)),
            ("original queue", self.original_queue()),
        ];
        for (name, value) in fault {
            if let Some(value) = value {
                out.push_str(&field(name, 15, &value));
            }
        }
        out.push_str("properties:\n");
        for (name, value) in self.properties_json() {
            let mut text = value_text(&value);
            if name == "timestamp"
                && let Some(seconds) = value.as_u64()
            {
                text = format!("{text} ({})", format_ms(seconds.saturating_mul(1000)));
            }
            out.push_str(&field(&name, 17, &text));
        }
        out.push_str("headers:\n");
        let headers = self.headers_json();
        let width = headers.keys().map(String::len).max().unwrap_or(0);
        for (name, value) in &headers {
            out.push_str(&field(name, width, &value_text(value)));
        }
        out.push_str(&body_text(self));
        out
    }

    /// The properties of the replayed copy: the same, with every fault header, the broker's
    /// delivery count and the first-failure time removed, the attempt back to 1 and the id kept.
    pub fn replay_properties(&self) -> BasicProperties {
        let mut table: BTreeMap<ShortString, AMQPValue> = BTreeMap::new();
        if let Some(headers) = self.properties.headers() {
            for (name, value) in headers.inner() {
                if is_failure_header(name.as_str()) {
                    continue;
                }
                table.insert(name.clone(), value.clone());
            }
        }
        table.insert(
            ShortString::from(ATTEMPT),
            AMQPValue::LongString(LongString::from("1")),
        );
        self.properties
            .clone()
            .with_message_id(ShortString::from(self.id.as_str()))
            .with_headers(FieldTable::from(table))
    }
}

/// The headers a replayed copy leaves behind: the fault headers, the broker's delivery count
/// and the first-failure time.
fn is_failure_header(name: &str) -> bool {
    name.starts_with(FAULT_HEADER_PREFIX) || name == FIRST_FAILURE_HEADER || name == DELIVERY_COUNT
}

/// The replayed copy of a message of the embedded broker's error queue, by the rule of
/// [`FailedMessage::replay_properties`]: the same message and id, without the failure headers,
/// on its first attempt again.
pub fn replay_copy(failed: &Envelope) -> Envelope {
    let mut copy = failed.clone();
    copy.headers.retain(|(name, _)| !is_failure_header(name));
    copy.attempt = 1;
    copy
}

fn short_string(value: &Option<ShortString>) -> Option<String> {
    value
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .filter(|s| !s.is_empty())
}

/// `  name  value`, the value's further lines indented under its first.
fn field(name: &str, width: usize, value: &str) -> String {
    let indent = format!("\n{}", " ".repeat(width + 3));
    format!("  {name:<width$} {}\n", value.replace('\n', &indent))
}

/// A JSON value as a person reads it: strings without quotes.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn table_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), header_json(value)))
        .collect()
}

/// An AMQP field value as JSON.
fn header_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::DecimalValue(d) => json!({"scale": d.scale, "value": d.value}),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(s.to_string()),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(header_json).collect())
        }
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(table) => Value::Object(table_json(table)),
        AMQPValue::ByteArray(bytes) => json!(hex(bytes.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a body reads: JSON (a JSON body, or MessagePack decoded), text, or bytes.
enum Decoded {
    Json(Value),
    Text(String),
    Bytes(Option<String>),
}

fn decode_body(content_type: &str, body: &[u8]) -> Decoded {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        match serde_json::from_slice(body) {
            Ok(value) => Decoded::Json(value),
            Err(error) => Decoded::Bytes(Some(format!("not valid JSON: {error}"))),
        }
    } else if matches!(
        essence.as_str(),
        "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack"
    ) {
        match rmp_serde::from_slice(body) {
            Ok(value) => Decoded::Json(value),
            Err(error) => Decoded::Bytes(Some(format!("not valid MessagePack: {error}"))),
        }
    } else if essence.starts_with("text/") {
        match std::str::from_utf8(body) {
            Ok(text) => Decoded::Text(text.to_owned()),
            Err(_) => Decoded::Bytes(Some("not valid UTF-8".into())),
        }
    } else {
        Decoded::Bytes(None)
    }
}

fn body_json(message: &FailedMessage) -> Value {
    let content_type = short_string(message.properties.content_type()).unwrap_or_default();
    let mut body = json!({"content_type": content_type, "bytes": message.body.len()});
    if let Some(map) = body.as_object_mut() {
        match decode_body(&content_type, &message.body) {
            Decoded::Json(value) => {
                map.insert("json".into(), value);
            }
            Decoded::Text(text) => {
                map.insert("text".into(), Value::String(text));
            }
            Decoded::Bytes(note) => {
                map.insert("hex".into(), Value::String(hex(&message.body)));
                if let Some(note) = note {
                    map.insert("note".into(), Value::String(note));
                }
            }
        }
    }
    body
}

fn body_text(message: &FailedMessage) -> String {
    let content_type = short_string(message.properties.content_type()).unwrap_or_default();
    let shown_type = if content_type.is_empty() {
        "no content type"
    } else {
        &content_type
    };
    let size = message.body.len();
    match decode_body(&content_type, &message.body) {
        Decoded::Json(value) => {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            let how = if content_type.contains("msgpack") {
                ", decoded to JSON"
            } else {
                ""
            };
            format!("body ({shown_type}, {size} bytes{how}):\n{pretty}\n")
        }
        Decoded::Text(text) => format!("body ({shown_type}, {size} bytes):\n{text}\n"),
        Decoded::Bytes(note) => {
            let note = note.map(|n| format!(", {n}")).unwrap_or_default();
            let mut out = format!("body ({shown_type}, {size} bytes{note}), as hex:\n");
            for (row, chunk) in message.body.chunks(16).take(HEX_BYTES / 16).enumerate() {
                let bytes: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                let ascii: String = chunk
                    .iter()
                    .map(|&b| {
                        if b.is_ascii_graphic() || b == b' ' {
                            char::from(b)
                        } else {
                            '.'
                        }
                    })
                    .collect();
                out.push_str(&format!(
                    "  {:08x}  {:<47}  {ascii}\n",
                    row * 16,
                    bytes.join(" ")
                ));
            }
            if size > HEX_BYTES {
                out.push_str(&format!("  … {} more bytes\n", size - HEX_BYTES));
            }
            out
        }
    }
}

/// One row of the `list` table.
#[derive(Debug, Clone)]
pub(super) struct Row {
    queue: String,
    cells: [String; 7],
}

const HEADINGS: [&str; 7] = [
    "ID",
    "TYPE",
    "REASON",
    "PLUGIN",
    "ATTEMPTS",
    "FAILED AT",
    "ERROR",
];

pub(super) fn table_row(message: &FailedMessage) -> Row {
    let message_type = message.message_type();
    let plugin = match (
        message.header(headers::PLUGIN),
        message.header(headers::PLUGIN_VERSION),
    ) {
        (Some(plugin), Some(version)) => format!("{plugin}@{version}"),
        (Some(plugin), None) => plugin,
        (None, _) => "-".into(),
    };
    let dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    Row {
        queue: message.queue.clone(),
        cells: [
            message.id.clone(),
            message_type
                .strip_prefix("urn:message:")
                .unwrap_or(&message_type)
                .to_owned(),
            dash(message.reason()),
            plugin,
            dash(message.header(headers::ATTEMPTS)),
            dash(message.failed_at_ms().map(format_ms)),
            shorten(&dash(message.error()), ERROR_COLUMN),
        ],
    }
}

/// `text` on one line, cut to `max` characters with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() <= max {
        line
    } else {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

pub(super) fn render_table(rows: &[Row], with_queue: bool) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    let mut heading: Vec<String> = HEADINGS.iter().map(|h| (*h).to_owned()).collect();
    if with_queue {
        heading.insert(0, "QUEUE".into());
    }
    lines.push(heading);
    for row in rows {
        let mut cells = row.cells.to_vec();
        if with_queue {
            cells.insert(0, row.queue.clone());
        }
        lines.push(cells);
    }
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|line| line[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c + 1 == columns {
                text.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(headers: &[(&str, &str)], content_type: &str, body: &[u8]) -> FailedMessage {
        let table: BTreeMap<ShortString, AMQPValue> = headers
            .iter()
            .map(|(name, value)| {
                (
                    ShortString::from(*name),
                    AMQPValue::LongString(LongString::from(*value)),
                )
            })
            .collect();
        let mut table = FieldTable::from(table);
        table.insert(ShortString::from(DELIVERY_COUNT), AMQPValue::LongLongInt(3));
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from("id-1"))
            .with_type(ShortString::from("urn:message:Orders:OrderPlaced"))
            .with_content_type(ShortString::from(content_type))
            .with_headers(table);
        FailedMessage::new("payment_error", 1, 7, properties, body.to_vec())
    }

    fn faulted() -> FailedMessage {
        message(
            &[
                (headers::REASON, "rejected"),
                (headers::MESSAGE, "card declined"),
                (headers::TIME, "1700000000000"),
                (headers::ORIGINAL_QUEUE, "payment"),
                ("courier-fault-something-new", "x"),
                (FIRST_FAILURE_HEADER, "1699999999000"),
                (ATTEMPT, "5"),
                ("traceparent", "00-abc-def-01"),
            ],
            "application/json",
            br#"{"order_id":"o-1"}"#,
        )
    }

    #[test]
    fn selections_match_types_by_urn_or_short_name_and_every_condition_must_hold() {
        let m = faulted();
        let pick = |selection: Selection| selection.matches(&m);
        assert!(pick(Selection::default()));
        for name in [
            "urn:message:Orders:OrderPlaced",
            "Orders:OrderPlaced",
            "OrderPlaced",
        ] {
            assert!(pick(Selection {
                types: vec![name.into()],
                ..Selection::default()
            }));
        }
        assert!(!pick(Selection {
            types: vec!["Placed".into()],
            ..Selection::default()
        }));
        assert!(pick(Selection {
            reasons: vec!["too-large".into(), "rejected".into()],
            ids: vec!["id-1".into()],
            since_ms: Some(1_700_000_000_000),
            until_ms: Some(1_700_000_000_000),
            ..Selection::default()
        }));
        assert!(!pick(Selection {
            reasons: vec!["rejected".into()],
            since_ms: Some(1_700_000_000_001),
            ..Selection::default()
        }));
        assert!(!pick(Selection {
            ids: vec!["id-2".into()],
            ..Selection::default()
        }));
    }

    #[test]
    fn moments_are_durations_back_from_now_or_rfc3339_times() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_moment("2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_moment("1d", now).unwrap(), now - 86_400_000);
        assert_eq!(parse_moment("1h30m", now).unwrap(), now - 5_400_000);
        assert_eq!(
            parse_moment("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_moment("2023-11-15T00:13:20+02:00", now).unwrap(),
            1_700_000_000_000
        );
        let error = parse_moment("yesterday", now).unwrap_err().to_string();
        assert!(error.contains("RFC 3339"), "{error}");
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn a_replayed_copy_loses_its_fault_headers_and_starts_again_at_attempt_one() {
        let m = faulted();
        let properties = m.replay_properties();
        let headers = properties.headers().as_ref().unwrap().inner();
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec![ATTEMPT, "traceparent"]);
        assert_eq!(
            headers.get(ATTEMPT),
            Some(&AMQPValue::LongString(LongString::from("1")))
        );
        assert_eq!(
            properties.message_id().as_ref().map(|s| s.as_str()),
            Some("id-1")
        );
        assert_eq!(properties.kind(), m.properties.kind());
        assert_eq!(m.original_queue().as_deref(), Some("payment"));
    }

    #[test]
    fn bodies_are_decoded_by_content_type() {
        let json_body = faulted();
        assert!(body_text(&json_body).contains("\"order_id\": \"o-1\""));
        let packed = rmp_serde::to_vec_named(&json!({"n": 5})).unwrap();
        let msgpack = message(&[], "application/msgpack", &packed);
        let text = body_text(&msgpack);
        assert!(
            text.contains("decoded to JSON") && text.contains("\"n\": 5"),
            "{text}"
        );
        assert_eq!(body_json(&msgpack)["json"]["n"], 5);
        let binary = message(&[], "application/octet-stream", &[0, 1, 2, 0xff]);
        let text = body_text(&binary);
        assert!(
            text.contains("4 bytes") && text.contains("00 01 02 ff"),
            "{text}"
        );
        let broken = message(&[], "application/json", b"{oops");
        assert!(body_text(&broken).contains("not valid JSON"));
    }

    #[test]
    fn the_table_lines_up_and_shortens_the_error() {
        let mut m = faulted();
        let long = "x".repeat(200);
        let mut table = m.properties.headers().clone().unwrap();
        table.insert(
            ShortString::from(headers::MESSAGE),
            AMQPValue::LongString(LongString::from(long.as_str())),
        );
        m.properties = m.properties.clone().with_headers(table);
        let text = render_table(&[table_row(&m)], false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID  ") && lines[1].starts_with("id-1"));
        assert_eq!(
            lines[0].find("TYPE"),
            lines[1].find("Orders:OrderPlaced"),
            "{text}"
        );
        assert!(lines[1].ends_with(&format!("{}…", "x".repeat(ERROR_COLUMN - 1))));
        assert_eq!(shorten("a\nb", 10), "a b");
    }
}
