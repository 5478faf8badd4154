//! The order flow (seed 004) end to end on the embedded broker, with the demo's data: the
//! Rust plugins, and the same flow with steps written in Python, JavaScript and C.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use courier_host::publish::read_seed_file;
use courier_tests::*;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

const TERMINAL: [&str; 3] = ["OrderShipped", "PaymentFailed", "StockReservationFailed"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_ends_exactly_once_in_the_conversation_it_started() {
    let outcomes = order_flow(&["payment", "inventory", "shipping", "notification"]).await;
    // The demo data has orders of each kind; the rules decide which.
    assert_eq!(
        outcomes["order-005"].0, "PaymentFailed",
        "over the payment limit"
    );
    assert_eq!(
        outcomes["order-015"].0, "StockReservationFailed",
        "DOODAD is not stocked"
    );
    assert_eq!(outcomes["order-001"].0, "OrderShipped");
}

/// Inventory in Python, shipping in JavaScript and notification in C, beside payment in Rust:
/// every order ends as it does with the Rust plugins alone, down to its tracking number, and
/// the C notification follows every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_polyglot_order_flow_ends_every_order_as_the_rust_one_does() {
    let rust = order_flow(&["payment", "inventory", "shipping", "notification"]).await;
    let polyglot = order_flow(&[
        "payment",
        "python/inventory",
        "js/shipping",
        "c/notification",
    ])
    .await;
    assert_eq!(polyglot, rust);
}

/// Runs the demo's orders through `plugins` on the embedded broker and checks that each
/// ends once, in its own conversation, and that the counts add up; returns how each order
/// ended: order id → (final message type's short name, its body).
async fn order_flow(plugins: &[&str]) -> BTreeMap<String, (&'static str, serde_json::Value)> {
    let config = std::fs::read_to_string(repo("demo/courier.toml")).unwrap();
    let host = host_with(&config, plugins).await;
    let types: Vec<String> = TERMINAL
        .iter()
        .map(|t| format!("urn:message:Orders:{t}"))
        .collect();
    let mut tap = Tap::new(
        &host,
        "tap",
        &types.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;

    let orders = read_seed_file(&repo("demo/orders.jsonl")).unwrap();
    let mut conversations = BTreeMap::new();
    for order in &orders {
        let order_id = order.body["order_id"].as_str().unwrap().to_owned();
        let id = host.submit(order.clone(), "test").await.unwrap();
        conversations.insert(id, order_id);
    }

    let mut outcomes = BTreeMap::new();
    for _ in 0..orders.len() {
        let end = tap.next().await;
        let order_id = conversations
            .get(&end.conversation_id)
            .unwrap_or_else(|| panic!("{} ended outside any order's conversation", end.id));
        let body = body_json(&end);
        assert_eq!(body["order_id"], order_id.as_str());
        assert_eq!(end.correlation_id.as_deref(), Some(order_id.as_str()));
        let outcome = TERMINAL
            .iter()
            .find(|t| end.message_type.ends_with(*t))
            .unwrap();
        assert!(
            outcomes
                .insert(order_id.clone(), (*outcome, body))
                .is_none(),
            "{order_id} ended twice"
        );
    }
    tap.expect_nothing(Duration::from_millis(300)).await;
    host.wait_until_idle(Duration::from_millis(20))
        .await
        .unwrap();

    let summary = host.summary();
    assert_orders_add_up(&summary, orders.len());
    let count = |t: &str| summary.of(&format!("urn:message:Orders:{t}")).published;
    assert_eq!(
        count("ShipOrder"),
        count("OrderShipped"),
        "each ship command ships once"
    );
    assert_notification_followed_every_event(&summary);
    outcomes
}
