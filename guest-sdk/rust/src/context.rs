//! The handler's view of the message it handles and of the bus.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::bindings::courier::bus::{bus, config, log, types};
use crate::Envelope;
use crate::codec::{ContentType, Message};
use crate::error::{BusError, HandleError};

/// Log levels, as the host's log understands them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Options for one publish, send or reply. The defaults suit most messages: MessagePack, the
/// consumed message's correlation id, no session, no delay, no expiry.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    content_type: ContentType,
    correlation_id: Option<String>,
    session_id: Option<String>,
    reply_to: Option<String>,
    headers: Vec<(String, String)>,
    delay_ms: Option<u64>,
    ttl_ms: Option<u64>,
}

impl SendOptions {
    /// Encode the body as JSON instead of MessagePack.
    pub fn json(mut self) -> Self {
        self.content_type = ContentType::Json;
        self
    }

    /// Set a correlation id instead of copying the consumed message's.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Messages with the same session id are handled in order, one at a time.
    pub fn with_session_id(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    /// Ask the receiver to reply to this endpoint.
    pub fn with_reply_to(mut self, endpoint: impl Into<String>) -> Self {
        self.reply_to = Some(endpoint.into());
        self
    }

    /// Add a free-form header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Deliver no sooner than this many milliseconds after the handler succeeds.
    pub fn with_delay_ms(mut self, delay_ms: u64) -> Self {
        self.delay_ms = Some(delay_ms);
        self
    }

    /// The message expires this many milliseconds after it is sent.
    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = Some(ttl_ms);
        self
    }

    fn outgoing<M: Message + Serialize>(self, message: &M) -> Result<types::Outgoing, BusError> {
        let body = self
            .content_type
            .encode(message)
            .map_err(|e| BusError::Invalid(format!("{} does not encode: {e}", M::MESSAGE_TYPE)))?;
        Ok(types::Outgoing {
            message_type: M::MESSAGE_TYPE.to_owned(),
            content_type: self.content_type.mime().to_owned(),
            body,
            correlation_id: self.correlation_id,
            session_id: self.session_id,
            reply_to: self.reply_to,
            headers: self.headers,
            delay_ms: self.delay_ms,
            ttl_ms: self.ttl_ms,
        })
    }
}

/// What a handler receives beside its message: the envelope, and the bus to publish on.
///
/// Everything published through the context is held by the host until the handler returns
/// `Ok`; if it returns an error or traps, none of it is sent.
#[derive(Debug)]
pub struct Context {
    envelope: Envelope,
}

impl Context {
    #[doc(hidden)]
    pub fn new(envelope: Envelope) -> Self {
        Context { envelope }
    }

    /// The consumed message's envelope: ids, type, headers, attempt.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The consumed message's id.
    pub fn message_id(&self) -> &str {
        &self.envelope.id
    }

    /// The consumed message's correlation id, if it has one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.envelope.correlation_id.as_deref()
    }

    /// The conversation the consumed message belongs to.
    pub fn conversation_id(&self) -> &str {
        &self.envelope.conversation_id
    }

    /// 1 on the first delivery, counting up on redeliveries.
    pub fn attempt(&self) -> u32 {
        self.envelope.attempt
    }

    /// A header of the consumed message.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.envelope
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Decodes the consumed body as `T`, by its content type. An unknown content type or a
    /// body that does not decode is a permanent failure, so it is rejected with the reason.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, HandleError> {
        let content_type =
            ContentType::from_mime(&self.envelope.content_type).ok_or_else(|| {
                HandleError::reject(format!(
                    "unsupported content type `{}`",
                    self.envelope.content_type
                ))
            })?;
        content_type.decode(&self.envelope.body).map_err(|e| {
            HandleError::reject(format!(
                "body of {} does not decode as {}: {e}",
                self.envelope.message_type,
                content_type.mime()
            ))
        })
    }

    /// Publishes an event to every plugin that subscribes to its type.
    /// Returns the id the message will carry.
    pub fn publish<M: Message + Serialize>(&mut self, message: &M) -> Result<String, BusError> {
        self.publish_with(message, SendOptions::default())
    }

    /// Publishes an event with options.
    pub fn publish_with<M: Message + Serialize>(
        &mut self,
        message: &M,
        options: SendOptions,
    ) -> Result<String, BusError> {
        bus::publish(&options.outgoing(message)?).map_err(BusError::from)
    }

    /// Sends a command to one endpoint (a plugin's input queue).
    pub fn send<M: Message + Serialize>(
        &mut self,
        destination: &str,
        message: &M,
    ) -> Result<String, BusError> {
        self.send_with(destination, message, SendOptions::default())
    }

    /// Sends a command with options.
    pub fn send_with<M: Message + Serialize>(
        &mut self,
        destination: &str,
        message: &M,
        options: SendOptions,
    ) -> Result<String, BusError> {
        bus::send(destination, &options.outgoing(message)?).map_err(BusError::from)
    }

    /// Replies to the consumed message's `reply-to` endpoint.
    pub fn reply<M: Message + Serialize>(&mut self, message: &M) -> Result<String, BusError> {
        self.reply_with(message, SendOptions::default())
    }

    /// Replies with options.
    pub fn reply_with<M: Message + Serialize>(
        &mut self,
        message: &M,
        options: SendOptions,
    ) -> Result<String, BusError> {
        bus::reply(&options.outgoing(message)?).map_err(BusError::from)
    }

    /// Writes to the host's log, tagged with this plugin and message.
    pub fn log(&self, level: Level, text: impl AsRef<str>) {
        let level = match level {
            Level::Trace => types::Level::Trace,
            Level::Debug => types::Level::Debug,
            Level::Info => types::Level::Info,
            Level::Warn => types::Level::Warn,
            Level::Error => types::Level::Error,
        };
        log::log(level, text.as_ref());
    }

    /// Logs at `info`.
    pub fn info(&self, text: impl AsRef<str>) {
        self.log(Level::Info, text);
    }

    /// Logs at `warn`.
    pub fn warn(&self, text: impl AsRef<str>) {
        self.log(Level::Warn, text);
    }

    /// A setting granted to this plugin by the host's configuration.
    pub fn config(&self, key: &str) -> Option<String> {
        config::get(key)
    }

    /// A setting parsed as `T`. A value that does not parse is a permanent failure that
    /// names the key, since retrying will not change the configuration.
    pub fn config_parsed<T>(&self, key: &str) -> Result<Option<T>, HandleError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.config(key) {
            None => Ok(None),
            Some(raw) => raw.parse().map(Some).map_err(|e| {
                HandleError::reject(format!("config key `{key}` = `{raw}` is invalid: {e}"))
            }),
        }
    }
}

impl From<types::BusError> for BusError {
    fn from(error: types::BusError) -> Self {
        match error {
            types::BusError::Denied(reason) => BusError::Denied(reason),
            types::BusError::Invalid(reason) => BusError::Invalid(reason),
            types::BusError::Unavailable(reason) => BusError::Unavailable(reason),
        }
    }
}
