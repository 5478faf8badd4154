//! Traces and logs: the `tracing` subscriber of `courier run`, one span per handled message,
//! and the W3C trace context (`traceparent`, `tracestate`) carried from a message to the
//! messages its handler sends.
//!
//! # The message span
//!
//! Each delivery a plugin takes gets one span, `process <queue>` (OpenTelemetry kind
//! `consumer`), from the moment a lane takes it to the moment it is settled: the inbox check,
//! every call of the handler (immediate retries included), the confirms of its follow-ups and
//! the ack. Its attributes follow the OpenTelemetry messaging conventions (`messaging.system`,
//! `messaging.destination.name`, `messaging.operation.type`, `messaging.message.id`,
//! `messaging.message.conversation_id`, `messaging.message.body.size`) plus Courier's own
//! (`courier.plugin.name`, `courier.plugin.version`, `courier.message.type`,
//! `courier.attempt`, `courier.outcome`). A failed outcome sets the span's status to error.
//!
//! The span's **parent** is the context in the message's `traceparent` header, that is the
//! span that sent it; every follow-up the handler publishes or sends carries the process span's
//! own context. So an order that passes through three plugins is one trace: the second
//! plugin's process span is a child of the first's, the third's a child of the second's. A
//! message put in through Courier (admin API, `courier publish`, a seed file) first gets a
//! producer span, `publish <exchange>` or `send <queue>` ([`producer_span`]), so all its
//! consumers share a trace even if it came without a context. Guest `log` calls and guest
//! output are events inside the span, and so is every line the host logs about the message.
//!
//! Spans leave the process only when `telemetry.otlp_endpoint` is set (OTLP over HTTP, batched
//! on a thread of its own). Without it the span still exists for the log, and the headers a
//! message arrived with travel on to its follow-ups unchanged.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, Result};
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{Status, TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing::field::{Field, Visit};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::prelude::*;

use crate::config::{HostConfig, LogFormat};
use crate::envelope::Envelope;
use crate::transport::wire::exchange_for;
use crate::transport::{Outbound, Route};

/// The `tracing` target of the message span. The log filter always lets it through, so a
/// line about a message carries the message's fields whatever the filter says.
pub const SPAN_TARGET: &str = "courier::message";

/// The trace context headers, as W3C Trace Context names them.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Longest one export of spans may take, and the last one at shutdown: an unreachable
/// collector must not hold up a host that is stopping.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `install` set up; `shutdown` sends the spans still buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still held. Call once the host has stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            eprintln!("courier: could not send the last spans: {error}");
        }
    }
}

/// Installs the process's `tracing` subscriber: the log (human or JSON, filtered by
/// `COURIER_LOG` or `log.filter`) and, when an OTLP endpoint is configured, the span export.
pub fn install(config: &HostConfig) -> Result<Telemetry> {
    let filter = EnvFilter::try_from_env("COURIER_LOG")
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .with_context(|| format!("log.filter `{}` is not a valid filter", config.log.filter))?
        .add_directive(
            format!("{SPAN_TARGET}=info")
                .parse()
                .context("the message span's filter directive")?,
        );
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = match config.log.format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .compact()
            .fmt_fields(HumanFields)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = match config.telemetry.traces_url() {
        Some(url) => Some(tracer_provider(config, &url)?),
        None => None,
    };
    let export = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("courier")));
    tracing_subscriber::registry()
        .with(log)
        .with(export)
        .with(filter)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(Telemetry { provider })
}

fn tracer_provider(config: &HostConfig, url: &str) -> Result<SdkTracerProvider> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .with_context(|| {
            format!(
                "telemetry.otlp_endpoint: cannot export to {}",
                crate::config::redact_url(url)
            )
        })?;
    let resource = Resource::builder()
        .with_service_name(config.telemetry.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new(
                "host.name",
                gethostname::gethostname().to_string_lossy().into_owned(),
            ),
        ])
        .build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        config.telemetry.sample_ratio,
    )));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

/// The span of one delivery taken from `queue` by `plugin`, a child of the context the
/// message arrived with.
pub fn message_span(
    system: &'static str,
    queue: &str,
    plugin: (&str, &str),
    envelope: &Envelope,
) -> Span {
    let (plugin_name, plugin_version) = plugin;
    // The fields are what a log line about the message shows too; the log formats them once
    // per message, so those only a trace backend needs are set on the exported span alone
    // (`set_attribute` does nothing when spans are not exported).
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "process",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        messaging.message.id = %envelope.id,
        messaging.message.conversation_id = %envelope.conversation_id,
        courier.plugin.name = plugin_name,
        courier.plugin.version = plugin_version,
        courier.message.type = envelope.short_type(),
        courier.attempt = envelope.attempt,
    );
    span.set_attribute("messaging.system", system);
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.destination.name", queue.to_owned());
    span.set_attribute(
        "messaging.message.body.size",
        i64::try_from(envelope.body.len()).unwrap_or(i64::MAX),
    );
    let sender = TraceContextPropagator::new().extract(&HeadersIn(&envelope.headers));
    if sender.span().span_context().is_valid() {
        // Fails only without the export layer, where there is no trace to join.
        let _ = span.set_parent(sender);
    }
    span
}

/// The span of a message put in from outside (the admin API, `courier publish`, a seed file):
/// `publish <exchange>` or `send <queue>`, kind producer, a child of the context the message
/// came with if any. When spans are exported, the message then carries this span's context,
/// so every plugin that takes it joins one trace even if it came with none. Hold the span
/// while the broker takes the message.
pub fn producer_span(system: &'static str, outbound: &mut Outbound) -> Span {
    let envelope = &mut outbound.envelope;
    let (operation, destination) = match &outbound.route {
        Route::Publish => ("publish", exchange_for(&envelope.message_type).to_owned()),
        Route::Send(queue) => ("send", queue.clone()),
    };
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "send",
        otel.name = %format_args!("{operation} {destination}"),
        otel.kind = "producer",
        messaging.message.id = %envelope.id,
        messaging.message.conversation_id = %envelope.conversation_id,
        courier.message.type = envelope.short_type(),
    );
    span.set_attribute("messaging.system", system);
    span.set_attribute("messaging.operation.type", "send");
    span.set_attribute("messaging.destination.name", destination);
    let sender = TraceContextPropagator::new().extract(&HeadersIn(&envelope.headers));
    if sender.span().span_context().is_valid() {
        let _ = span.set_parent(sender);
    }
    let context = span.context();
    if context.span().span_context().is_valid() {
        let mut headers = Vec::with_capacity(TRACE_HEADERS.len());
        TraceContextPropagator::new().inject_context(&context, &mut HeadersOut(&mut headers));
        for (name, value) in headers {
            envelope.set_header(&name, value);
        }
    }
    span
}

/// Records on the exported span how the current message ended; an `error` marks the span as
/// failed. (The log says how each message ended in lines of its own.)
pub fn record_outcome(outcome: &'static str, error: Option<&str>) {
    let span = Span::current();
    span.set_attribute("courier.outcome", outcome);
    if let Some(error) = error {
        span.set_status(Status::error(error.to_owned()));
    }
}

/// Whether `name` is one of the trace context headers, which the host alone writes on a
/// follow-up.
pub fn is_trace_header(name: &str) -> bool {
    TRACE_HEADERS
        .iter()
        .any(|trace| name.eq_ignore_ascii_case(trace))
}

/// The trace headers a follow-up of `consumed` carries: the current span's context when spans
/// are recorded, otherwise the headers `consumed` arrived with.
pub fn follow_up_trace_headers(consumed: &Envelope) -> Vec<(String, String)> {
    let current = Span::current().context();
    if current.span().span_context().is_valid() {
        let mut headers = Vec::with_capacity(TRACE_HEADERS.len());
        TraceContextPropagator::new().inject_context(&current, &mut HeadersOut(&mut headers));
        return headers;
    }
    TRACE_HEADERS
        .into_iter()
        .filter_map(|name| {
            consumed
                .header(name)
                .map(|value| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// An envelope's headers, read by the trace context propagator.
struct HeadersIn<'a>(&'a [(String, String)]);

impl Extractor for HeadersIn<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// Headers written by the trace context propagator.
struct HeadersOut<'a>(&'a mut Vec<(String, String)>);

impl Injector for HeadersOut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// Field formatting of the human log. The message span's attributes are shown under the short
/// names the rest of the log uses (`courier.plugin.name` reads `plugin`,
/// `messaging.message.id` reads `message_id`); those that only matter to a trace backend
/// (`otel.*`, the messaging system, operation, destination and body size) are left out.
#[derive(Debug, Clone, Copy)]
struct HumanFields;

/// The log name of a field, or `None` if the human log leaves it out.
fn human_name(field: &str) -> Option<&str> {
    let short = match field {
        "courier.plugin.name" => "plugin",
        "courier.plugin.version" => "version",
        "courier.message.type" => "message_type",
        "courier.attempt" => "attempt",
        "courier.outcome" => "outcome",
        "messaging.message.id" => "message_id",
        "messaging.message.conversation_id" => "conversation_id",
        other if other.starts_with("otel.") || other.starts_with("messaging.") => return None,
        other => other,
    };
    Some(short)
}

impl<'writer> FormatFields<'writer> for HumanFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = HumanVisitor {
            writer,
            written: false,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct HumanVisitor<'writer> {
    writer: Writer<'writer>,
    written: bool,
    result: fmt::Result,
}

impl HumanVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let Some(name) = human_name(field.name()) else {
            return;
        };
        if self.result.is_err() {
            return;
        }
        let separator = if self.written { " " } else { "" };
        self.written = true;
        self.result = if name == "message" {
            write!(self.writer, "{separator}{value}")
        } else {
            write!(self.writer, "{separator}{name}={value}")
        };
    }
}

impl Visit for HumanVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn envelope_with(headers: &[(&str, &str)]) -> Envelope {
        let mut envelope = Envelope::new(
            "urn:message:Orders:OrderPlaced",
            "application/json",
            Vec::new(),
        );
        for (name, value) in headers {
            envelope.set_header(name, *value);
        }
        envelope
    }

    #[test]
    fn without_a_recorded_span_the_sender_context_travels_on_unchanged() {
        let consumed = envelope_with(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=1"),
            ("x-other", "kept out"),
        ]);
        let headers = follow_up_trace_headers(&consumed);
        assert_eq!(
            headers,
            vec![
                (
                    "traceparent".to_owned(),
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()
                ),
                ("tracestate".to_owned(), "vendor=1".to_owned()),
            ]
        );
        assert!(follow_up_trace_headers(&envelope_with(&[])).is_empty());
    }

    /// A log writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_human_line_about_a_message_names_it_with_the_log_s_short_names() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .compact()
            .fmt_fields(HumanFields)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let envelope = envelope_with(&[]);
        tracing::subscriber::with_default(subscriber, || {
            let span = message_span("courier", "payment", ("payment", "1.2.0"), &envelope);
            let _entered = span.enter();
            tracing::warn!(reason = "test", "something about the message");
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        for expected in [
            "something about the message reason=\"test\"",
            &format!("message_id={}", envelope.id),
            &format!("conversation_id={}", envelope.conversation_id),
            "plugin=\"payment\"",
            "version=\"1.2.0\"",
            "message_type=\"OrderPlaced\"",
            "attempt=1",
        ] {
            assert!(log.contains(expected), "{expected:?} not in {log:?}");
        }
        for left_out in ["otel.", "messaging.", "courier.", "destination"] {
            assert!(!log.contains(left_out), "{left_out:?} in {log:?}");
        }
    }

    #[test]
    fn the_sender_context_is_read_whatever_the_header_case() {
        let headers = vec![(
            "TraceParent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )];
        let sender = TraceContextPropagator::new().extract(&HeadersIn(&headers));
        let context = sender.span().span_context().clone();
        assert!(context.is_valid());
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(context.is_remote());
    }
}
