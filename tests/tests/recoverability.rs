//! Retries, redeliveries held by the broker, the error queue and the fault event, on the
//! embedded broker and on the real RabbitMQ (each RabbitMQ test in a vhost of its own).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_host::Host;
use courier_host::recoverability::{FAULT_TYPE, headers};
use courier_tests::*;
use serde_json::json;

/// One immediate retry, then two redeliveries: six calls in three rounds.
const POLICY: &str = "[plugins.probe]\nimmediate_retries = 1\nredelivery_delays_ms = [300, 600]";

/// A message that fails every time: six calls, at least 900 ms of broker-held delays, then the
/// error queue with its fault headers and exactly one fault event.
async fn a_message_that_always_fails(host: Arc<Host>) {
    let mut faults = Tap::new(&host, "faults", &[FAULT_TYPE]).await;
    let mut errors = Tap::attach(&host, "probe_error").await;
    let started = Instant::now();
    let id = publish(&host, &test_type("Flaky"), json!({"n": 1, "succeed_on": 0})).await;

    let failed = errors.next().await;
    let waited = started.elapsed();
    assert_eq!(failed.id, id, "the original message, unchanged");
    assert_eq!(body_json(&failed), json!({"n": 1, "succeed_on": 0}));
    assert_eq!(
        failed.attempt, 6,
        "(1 + 1 immediate) x (1 + 2 redeliveries)"
    );
    assert_eq!(failed.header(headers::REASON), Some("retries-exhausted"));
    assert_eq!(failed.header(headers::ATTEMPTS), Some("6"));
    assert_eq!(failed.header(headers::PLUGIN), Some("probe"));
    assert_eq!(failed.header(headers::ORIGINAL_QUEUE), Some("probe"));
    let error = failed.header(headers::MESSAGE).unwrap();
    assert!(error.contains("flaky 1 failed on attempt 6"), "{error}");
    let first: u64 = failed
        .header(headers::FIRST_FAILURE)
        .unwrap()
        .parse()
        .unwrap();
    let last: u64 = failed.header(headers::TIME).unwrap().parse().unwrap();
    assert!(
        last - first >= 900,
        "the redeliveries waited {} ms between the first and the last failure",
        last - first
    );
    assert!(waited >= Duration::from_millis(900), "{waited:?}");

    let fault = faults.next().await;
    let body = body_json(&fault);
    assert_eq!(body["message_id"], id.as_str());
    assert_eq!(body["message_type"], test_type("Flaky"));
    assert_eq!(body["reason"], "retries-exhausted");
    assert_eq!(body["attempts"], 6);
    assert_eq!(body["error_queue"], "probe_error");
    assert_eq!(fault.initiator_id.as_deref(), Some(id.as_str()));
    faults.expect_nothing(Duration::from_millis(500)).await;
    errors.expect_nothing(Duration::from_millis(100)).await;

    let summary = host.summary().of(&test_type("Flaky"));
    assert_eq!(
        (summary.retried, summary.dead_lettered),
        (5, 1),
        "{summary:?}"
    );
}

/// A message that succeeds on its fourth call, after one redelivery: handled once, no fault.
async fn a_message_that_recovers(host: Arc<Host>) {
    let mut done = Tap::new(&host, "done", &[&test_type("FlakyDone")]).await;
    let mut faults = Tap::new(&host, "faults", &[FAULT_TYPE]).await;
    publish(&host, &test_type("Flaky"), json!({"n": 2, "succeed_on": 4})).await;
    let handled = done.next().await;
    assert_eq!(body_json(&handled), json!({"n": 2, "attempt": 4}));
    done.expect_nothing(Duration::from_millis(300)).await;
    faults.expect_nothing(Duration::from_millis(100)).await;
    let summary = host.summary().of(&test_type("Flaky"));
    assert_eq!((summary.handled, summary.retried), (1, 3), "{summary:?}");
}

/// `reject` skips every retry.
async fn a_rejected_message_is_not_retried(host: Arc<Host>) {
    let mut faults = Tap::new(&host, "faults", &[FAULT_TYPE]).await;
    let mut errors = Tap::attach(&host, "probe_error").await;
    let id = publish(
        &host,
        &test_type("PublishThenFail"),
        json!({"mode": "reject"}),
    )
    .await;
    let failed = errors.next().await;
    assert_eq!((failed.id.as_str(), failed.attempt), (id.as_str(), 1));
    assert_eq!(failed.header(headers::REASON), Some("rejected"));
    assert_eq!(body_json(&faults.next().await)["reason"], "rejected");
    faults.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_broker_a_message_that_always_fails_ends_in_the_error_queue_once() {
    a_message_that_always_fails(host_with(POLICY, &["probe"]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_a_message_that_always_fails_ends_in_the_error_queue_once() {
    let vhost = Vhost::new("always-fails");
    a_message_that_always_fails(amqp_host_with(&vhost, POLICY, &["probe"]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_broker_a_message_that_recovers_is_handled_once() {
    a_message_that_recovers(host_with(POLICY, &["probe"]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_a_message_that_recovers_is_handled_once() {
    let vhost = Vhost::new("recovers");
    a_message_that_recovers(amqp_host_with(&vhost, POLICY, &["probe"]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_broker_a_rejected_message_is_not_retried() {
    a_rejected_message_is_not_retried(host_with(POLICY, &["probe"]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_a_rejected_message_is_not_retried() {
    let vhost = Vhost::new("rejected");
    a_rejected_message_is_not_retried(amqp_host_with(&vhost, POLICY, &["probe"]).await).await;
}

/// The `conformance` plugin's `Echo` handler sends a command to `conformance-sink`; here no
/// such queue exists, so the broker refuses the follow-up every time. Each refusal counts as a
/// failed attempt: the message goes round the retry policy once, then to the error queue with
/// the reason, instead of circling for ever.
async fn a_follow_up_the_broker_refuses_fails_the_attempt(host: Arc<Host>) {
    let mut errors = Tap::attach(&host, "conformance_error").await;
    let echo = json!({"text": "t", "count": 1, "tags": [], "nested": {"flag": true, "ratio": 1.0}});
    let id = publish(&host, "urn:message:Conformance:Echo", echo).await;
    let failed = errors.next().await;
    assert_eq!(failed.id, id);
    assert_eq!(failed.attempt, 4, "(1 + 1 immediate) x (1 + 1 redelivery)");
    assert_eq!(failed.header(headers::REASON), Some("retries-exhausted"));
    let error = failed.header(headers::MESSAGE).unwrap();
    assert!(
        error.contains("no queue named `conformance-sink`"),
        "{error}"
    );
    errors.expect_nothing(Duration::from_millis(300)).await;
    let handled = host.summary().of("urn:message:Conformance:Echo").handled;
    assert_eq!(
        handled, 0,
        "a message whose follow-ups did not get out is not handled"
    );
}

const REFUSED_POLICY: &str =
    "[plugins.conformance]\nimmediate_retries = 1\nredelivery_delays_ms = [200]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_broker_a_follow_up_the_broker_refuses_fails_the_attempt() {
    let host = host_with(REFUSED_POLICY, &["conformance"]).await;
    a_follow_up_the_broker_refuses_fails_the_attempt(host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_a_follow_up_the_broker_refuses_fails_the_attempt() {
    let vhost = Vhost::new("refused-follow-up");
    let host = amqp_host_with(&vhost, REFUSED_POLICY, &["conformance"]).await;
    a_follow_up_the_broker_refuses_fails_the_attempt(host).await;
}

/// The broker holds a message between attempts, and its attempt travels in its headers: a
/// host that stops while the message waits, and a new one that starts, go on counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_count_survives_a_host_restart_while_the_message_waits_in_a_retry_queue() {
    let vhost = Vhost::new("retry-restart");
    let config = "[plugins.probe]\nimmediate_retries = 0\nredelivery_delays_ms = [2000]";
    let first = amqp_host_with(&vhost, config, &["probe"]).await;
    drop(Tap::new(&first, "done", &[&test_type("FlakyDone")]).await);
    publish(
        &first,
        &test_type("Flaky"),
        json!({"n": 3, "succeed_on": 2}),
    )
    .await;

    // The first call fails and the message moves to the holding queue of its delay.
    // The first call fails; once that is counted, shutting down waits for the message to be
    // moved to the holding queue of its delay (settling finishes before the drain ends).
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.summary().of(&test_type("Flaky")).retried < 1 {
        assert!(Instant::now() < deadline, "the first call never failed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.shutdown().await;
    drop(first);

    let second = amqp_host_with(&vhost, config, &["probe"]).await;
    let mut done = Tap::attach(&second, "done").await;
    let handled = done.next().await;
    assert_eq!(body_json(&handled), json!({"n": 3, "attempt": 2}));
    // The host counts the message handled once the broker has confirmed its follow-up, and
    // the tap may receive that follow-up first.
    wait_until("the second host counts the message handled", || {
        second.summary().of(&test_type("Flaky")).handled >= 1
    })
    .await;
    assert_eq!(second.summary().of(&test_type("Flaky")).handled, 1);
}

/// A plugin that fails too often stops being fed for its cool-down, then gets one trial
/// message, and is fed again once that succeeds. Nothing waiting meanwhile is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_pauses_a_failing_plugin_then_lets_one_message_through() {
    let host = host_with(
        "[plugins.probe]\nconcurrency = 1\nimmediate_retries = 0\nredelivery_delays_ms = []\n\
         kill_switch = { failure_rate = 0.5, window_ms = 60000, min_messages = 4, cooldown_ms = 1500 }",
        &["probe"],
    )
    .await;
    let mut errors = Tap::attach(&host, "probe_error").await;
    let mut pongs = Tap::new(&host, "pongs", &[&test_type("Pong")]).await;
    for _ in 0..4 {
        publish(
            &host,
            &test_type("PublishThenFail"),
            json!({"mode": "reject"}),
        )
        .await;
    }
    assert_eq!(errors.take(4).await.len(), 4);

    // Four failures out of four: the switch is open, the ping waits in the queue.
    let paused_at = Instant::now();
    publish(&host, &test_type("Ping"), json!({"n": 1})).await;
    pongs.expect_nothing(Duration::from_millis(1000)).await;
    assert_eq!(
        host.summary().of(&test_type("Ping")).handled,
        0,
        "held back"
    );

    // After the cool-down it is the trial message; it succeeds, and the switch closes.
    let pong = pongs.next().await;
    assert_eq!(body_json(&pong)["n"], 1);
    assert!(
        paused_at.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        paused_at.elapsed()
    );
    for n in 2..=4 {
        publish(&host, &test_type("Ping"), json!({"n": n})).await;
    }
    assert_eq!(pongs.take(3).await.len(), 3);
}

/// Puts `envelope` on the broker as it is, id included: what a redelivery looks like.
async fn deliver_again(host: &Host, envelope: &courier_host::Envelope) {
    host.dispatch(courier_host::transport::Outbound {
        route: courier_host::Route::Publish,
        envelope: envelope.clone(),
        delay: None,
    })
    .await
    .unwrap();
}

/// A message that comes again after it was handled is acked without running the handler: by
/// the same host (file inbox), and by another host sharing a PostgreSQL inbox.
async fn a_redelivered_message_is_not_handled_twice(config: &str) {
    let vhost = Vhost::new("inbox");
    let first = amqp_host_with(&vhost, config, &["probe"]).await;
    let mut pongs = Tap::new(&first, "pongs", &[&test_type("Pong")]).await;
    let ping = courier_host::PublishRequest::new(test_type("Ping"), json!({"n": 1}))
        .into_outbound("test")
        .unwrap()
        .envelope;
    deliver_again(&first, &ping).await;
    assert_eq!(body_json(&pongs.next().await)["n"], 1);
    deliver_again(&first, &ping).await;
    pongs.expect_nothing(Duration::from_millis(500)).await;
    let counts = first.summary().of(&test_type("Ping"));
    assert_eq!((counts.handled, counts.duplicates), (1, 1), "{counts:?}");
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_inbox_drops_a_redelivered_message() {
    a_redelivered_message_is_not_handled_twice("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_inbox_is_shared_by_the_hosts_of_a_fleet() {
    let table = format!("courier_inbox_test_{}", std::process::id());
    let config = format!(
        "[inbox]\nstore = \"postgres\"\npostgres_url = \"postgres://postgres@127.0.0.1:5432/test\"\ntable = \"{table}\""
    );
    a_redelivered_message_is_not_handled_twice(&config).await;

    // A second host on the same queue and table: the first one's work counts for it too.
    let vhost = Vhost::new("inbox-fleet");
    let one = amqp_host_with(&vhost, &config, &["probe"]).await;
    let mut pongs = Tap::new(&one, "pongs", &[&test_type("Pong")]).await;
    let ping = courier_host::PublishRequest::new(test_type("Ping"), json!({"n": 2}))
        .into_outbound("test")
        .unwrap()
        .envelope;
    deliver_again(&one, &ping).await;
    assert_eq!(body_json(&pongs.next().await)["n"], 2);
    one.shutdown().await;
    let other = amqp_host_with(&vhost, &config, &["probe"]).await;
    let mut pongs = Tap::attach(&other, "pongs").await;
    deliver_again(&other, &ping).await;
    pongs.expect_nothing(Duration::from_millis(800)).await;
    assert_eq!(other.summary().of(&test_type("Ping")).duplicates, 1);
    other.shutdown().await;
    let dropped = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c"])
        .arg(format!("drop table if exists {table}"))
        .status()
        .unwrap();
    assert!(dropped.success());
}
