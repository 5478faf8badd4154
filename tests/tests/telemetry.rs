//! Traces: `courier run` exports a span per handled message over OTLP/HTTP, and one order
//! through the order flow's plugins is one trace. The receiver here is a real OTLP/HTTP endpoint
//! that decodes what the host's exporter sends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use prost::Message as _;

use courier_tests::*;

/// The context the seeded order arrives with, as an upstream sender would set it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN_ID: &str = "00f067aa0ba902b7";

/// What the receiver was sent: every span, and the `service.name` of each batch.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: Vec<String>,
}

async fn receive(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut received = received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        for attribute in resource.attributes {
            if attribute.key == "service.name" {
                received.services.push(text_of(attribute.value));
            }
        }
        for scope in resource_spans.scope_spans {
            received.spans.extend(scope.spans);
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

fn text_of(value: Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value) {
        Some(Value::StringValue(text)) => text,
        Some(Value::IntValue(n)) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute(span: &Span, key: &str) -> String {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| text_of(a.value.clone()))
        .unwrap_or_else(|| panic!("span {} has no attribute {key}", span.name))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_order_through_the_order_flow_is_one_trace_of_parent_and_child_spans() {
    let received = Arc::new(Mutex::new(Received::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(Arc::clone(&received));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = plugins_dir(
        "telemetry",
        &["payment", "inventory", "shipping", "notification"],
    );
    let seed = dir.join("order.jsonl");
    std::fs::write(
        &seed,
        serde_json::json!({
            "type": "urn:message:Orders:OrderPlaced",
            "correlation_id": "order-traced",
            "headers": {"traceparent": format!("00-{TRACE_ID}-{SENDER_SPAN_ID}-01")},
            "body": {"order_id": "order-traced", "customer": "ada",
                     "lines": [{"sku": "WIDGET", "quantity": 1}], "amount_cents": 1200},
        })
        .to_string()
            + "\n"
            // No trace context, and no lines: payment rejects it.
            + &serde_json::json!({
                "type": "urn:message:Orders:OrderPlaced",
                "body": {"order_id": "order-broken", "customer": "bob",
                         "lines": [], "amount_cents": 100},
            })
            .to_string(),
    )
    .unwrap();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/courier.toml");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(courier_bin())
            .args(["run", "--exit-when-idle", "--no-watch", "--config"])
            .arg(&config)
            .arg("--plugins")
            .arg(&dir)
            .arg("--seed")
            .arg(&seed)
            .args(["--otlp-endpoint", &endpoint, "--log-format", "json"])
            .env("COURIER_CACHE_DIR", test_cache_dir())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "courier run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Every log line about a message names it, its plugin and version, in the JSON log too.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let guest_lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "courier::guest")
        .collect();
    // Five for the traced order, one (notification's) for the broken one.
    assert_eq!(guest_lines.len(), 6, "{stderr}");
    for line in &guest_lines {
        let span = &line["span"];
        for key in [
            "courier.plugin.name",
            "courier.plugin.version",
            "courier.message.type",
            "messaging.message.id",
            "messaging.message.conversation_id",
        ] {
            assert!(span[key].is_string(), "no {key} in {line}");
        }
    }

    // The host sends what it still holds before it exits.
    let received = received.lock().unwrap();
    assert!(received.services.iter().all(|s| s == "courier"));
    // Each seeded order is published under a producer span of its own.
    let (published, processed): (Vec<&Span>, Vec<&Span>) = received
        .spans
        .iter()
        .partition(|s| s.name == "publish Orders:OrderPlaced");
    assert_eq!(published.len(), 2, "{:#?}", received.spans);
    assert!(
        published
            .iter()
            .all(|s| s.kind == SpanKind::Producer as i32)
    );
    let (traced_publish, broken_publish) = if hex(&published[0].trace_id) == TRACE_ID {
        (published[0], published[1])
    } else {
        (published[1], published[0])
    };
    assert_eq!(hex(&traced_publish.parent_span_id), SENDER_SPAN_ID);
    let (spans, others): (Vec<&Span>, Vec<&Span>) = processed
        .into_iter()
        .filter(|s| s.name.starts_with("process "))
        .partition(|s| hex(&s.trace_id) == TRACE_ID);

    // The order that came without a context starts a trace at its publish span, and both
    // plugins that take it join that trace; the rejection marks payment's span as failed.
    assert!(broken_publish.parent_span_id.is_empty());
    assert_eq!(others.len(), 2, "{others:#?}");
    for span in &others {
        assert_eq!(span.trace_id, broken_publish.trace_id);
        assert_eq!(span.parent_span_id, broken_publish.span_id);
    }
    let rejected = others
        .iter()
        .find(|s| attribute(s, "courier.plugin.name") == "payment")
        .unwrap();
    assert_eq!(attribute(rejected, "courier.outcome"), "dead-lettered");
    let status = rejected.status.clone().unwrap_or_default();
    assert_eq!(status.code, StatusCode::Error as i32);
    assert!(status.message.contains("no lines"), "{status:?}");

    // payment, inventory and shipping once each; notification for each of the four events.
    assert_eq!(spans.len(), 7, "{:#?}", received.spans);
    for span in &spans {
        assert_eq!(hex(&span.trace_id), TRACE_ID, "{}", span.name);
        assert_eq!(span.kind, SpanKind::Consumer as i32);
        assert_eq!(attribute(span, "messaging.system"), "courier");
        assert_eq!(attribute(span, "messaging.operation.type"), "process");
        assert_eq!(attribute(span, "courier.outcome"), "handled");
        assert_eq!(attribute(span, "courier.plugin.version"), "0.1.0");
        assert_eq!(
            attribute(span, "messaging.destination.name"),
            span.name.trim_start_matches("process ")
        );
        assert_ne!(
            span.status.clone().unwrap_or_default().code,
            StatusCode::Error as i32
        );
    }

    // Each span by (plugin, message type); each is the child of the span that sent its message.
    let by: HashMap<(String, String), &Span> = spans
        .iter()
        .map(|s| {
            let key = (
                attribute(s, "courier.plugin.name"),
                attribute(s, "courier.message.type"),
            );
            (key, *s)
        })
        .collect();
    let span = |plugin: &str, message_type: &str| {
        *by.get(&(plugin.to_owned(), message_type.to_owned()))
            .unwrap_or_else(|| panic!("no span of {plugin} for {message_type}: {by:#?}"))
    };
    let payment = span("payment", "OrderPlaced");
    let inventory = span("inventory", "PaymentProcessed");
    let shipping = span("shipping", "ShipOrder");
    assert_eq!(payment.parent_span_id, traced_publish.span_id);
    assert_eq!(inventory.parent_span_id, payment.span_id);
    assert_eq!(shipping.parent_span_id, inventory.span_id);
    for (message_type, sender) in [
        ("OrderPlaced", None),
        ("PaymentProcessed", Some(payment)),
        ("InventoryReserved", Some(inventory)),
        ("OrderShipped", Some(shipping)),
    ] {
        let notified = span("notification", message_type);
        match sender {
            Some(sender) => assert_eq!(notified.parent_span_id, sender.span_id),
            None => assert_eq!(notified.parent_span_id, traced_publish.span_id),
        }
        // The guest's log call is an event inside its span.
        assert!(
            notified
                .events
                .iter()
                .any(|e| e.name.contains("order order-traced")),
            "{:#?}",
            notified.events
        );
    }
}
