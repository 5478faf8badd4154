//! The transport contract (see `courier_host::transport`), checked on the embedded broker
//! through the `Transport` trait.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::time::Duration;

use courier_host::transport::{Endpoint, Outbound, Route, Transport};
use courier_host::{Envelope, MemoryBroker};

fn message(message_type: &str) -> Envelope {
    Envelope::new(message_type, "application/json", b"{}".to_vec())
}

fn publish(envelope: Envelope) -> Outbound {
    Outbound {
        route: Route::Publish,
        envelope,
        delay: None,
    }
}

fn send(queue: &str, envelope: Envelope) -> Outbound {
    Outbound {
        route: Route::Send(queue.to_owned()),
        envelope,
        delay: None,
    }
}

async fn endpoint(broker: &MemoryBroker, queue: &str, types: &[&str]) {
    broker
        .declare_endpoint(&Endpoint {
            queue: queue.into(),
            subscriptions: types.iter().map(|t| (*t).to_owned()).collect(),
            partitions: 0,
        })
        .await
        .unwrap();
}

const A: &str = "urn:message:Test:A";
const B: &str = "urn:message:Test:B";

#[tokio::test]
async fn a_published_message_is_copied_to_every_bound_queue_and_declaring_twice_changes_nothing() {
    let broker = MemoryBroker::new(100);
    endpoint(&broker, "one", &[A]).await;
    endpoint(&broker, "one", &[A]).await;
    endpoint(&broker, "two", &[A, B]).await;
    broker
        .dispatch(vec![publish(message(A)), publish(message(B))])
        .await
        .unwrap();
    assert_eq!(broker.depth("one"), 1);
    assert_eq!(broker.depth("two"), 2);
    // Dead-letter queues exist beside each input queue.
    broker
        .dispatch(vec![send("one_error", message(A))])
        .await
        .unwrap();
    assert_eq!(broker.depth("one_error"), 1);
}

#[tokio::test]
async fn an_event_nobody_subscribes_to_is_dropped_but_a_send_to_a_missing_queue_fails() {
    let broker = MemoryBroker::new(100);
    endpoint(&broker, "one", &[A]).await;
    broker.dispatch(vec![publish(message(B))]).await.unwrap();
    assert!(broker.is_idle());
    let error = broker
        .dispatch(vec![send("one", message(A)), send("nowhere", message(A))])
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("no queue named `nowhere`"), "{error}");
    assert_eq!(
        broker.depth("one"),
        0,
        "nothing of a failed batch is enqueued"
    );
}

#[tokio::test]
async fn ack_removes_and_requeue_redelivers_with_the_attempt_raised() {
    let broker = MemoryBroker::new(100);
    endpoint(&broker, "q", &[A]).await;
    let original = message(A);
    broker
        .dispatch(vec![publish(original.clone())])
        .await
        .unwrap();
    let mut consumer = broker.consume("q", 10).await.unwrap();
    let first = consumer.next().await.unwrap();
    assert_eq!((first.envelope.attempt, first.redelivered), (1, false));
    assert!(
        !broker.is_idle(),
        "an unsettled delivery is work in progress"
    );
    first
        .acker
        .requeue(first.envelope.clone(), None)
        .await
        .unwrap();
    let second = consumer.next().await.unwrap();
    assert_eq!(second.envelope.id, original.id);
    assert_eq!((second.envelope.attempt, second.redelivered), (2, true));
    second.acker.ack().await.unwrap();
    assert!(broker.is_idle());
}

#[tokio::test]
async fn a_delivery_dropped_unsettled_is_delivered_again() {
    let broker = MemoryBroker::new(100);
    endpoint(&broker, "q", &[A]).await;
    broker.dispatch(vec![publish(message(A))]).await.unwrap();
    let mut consumer = broker.consume("q", 10).await.unwrap();
    drop(consumer.next().await.unwrap());
    let again = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert!(again.redelivered);
    again.acker.ack().await.unwrap();
}

#[tokio::test]
async fn a_consumer_holds_at_most_prefetch_unsettled_deliveries() {
    let broker = MemoryBroker::new(100);
    endpoint(&broker, "q", &[A]).await;
    broker
        .dispatch((0..3).map(|_| publish(message(A))).collect())
        .await
        .unwrap();
    let mut consumer = broker.consume("q", 2).await.unwrap();
    let first = consumer.next().await.unwrap();
    let _second = consumer.next().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), consumer.next())
            .await
            .is_err(),
        "a third delivery must wait for a settlement"
    );
    first.acker.ack().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_full_queue_makes_publishers_wait_instead_of_growing() {
    let broker = MemoryBroker::new(2);
    endpoint(&broker, "q", &[A]).await;
    broker
        .dispatch(vec![publish(message(A)), publish(message(A))])
        .await
        .unwrap();
    let blocked = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.dispatch(vec![publish(message(A))]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !blocked.is_finished(),
        "the third message must wait for room"
    );
    assert_eq!(broker.depth("q"), 2);
    let mut consumer = broker.consume("q", 10).await.unwrap();
    let delivery = consumer.next().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !blocked.is_finished(),
        "an unacknowledged message still takes its place"
    );
    delivery.acker.ack().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(broker.depth("q"), 2);
}

#[tokio::test]
async fn a_delayed_message_is_held_until_its_time() {
    let broker = MemoryBroker::new(100);
    endpoint(&broker, "q", &[A]).await;
    let mut delayed = publish(message(A));
    delayed.delay = Some(Duration::from_millis(300));
    broker.dispatch(vec![delayed]).await.unwrap();
    assert_eq!(broker.depth("q"), 0);
    assert!(!broker.is_idle(), "a delayed message is pending work");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(broker.depth("q"), 1);
}
