//! Courier on the real RabbitMQ of this machine. Each test runs in a virtual host of its own,
//! deleted afterwards.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::time::{Duration, Instant};

use courier_host::recoverability::headers;
use courier_host::transport::{Outbound, Route};
use courier_host::{Envelope, PublishRequest};
use courier_tests::*;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;

/// The order flow over RabbitMQ, with the Rust plugins and then with inventory in Python,
/// shipping in JavaScript and notification in C: every order ends once, each ends the same
/// way in both runs, down to its tracking number, and notification handles every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_flow_runs_over_rabbitmq_in_rust_alone_and_in_four_languages() {
    let rust = order_flow_over_rabbitmq(
        "order-flow",
        &["payment", "inventory", "shipping", "notification"],
    )
    .await;
    let polyglot = order_flow_over_rabbitmq(
        "order-flow-polyglot",
        &[
            "payment",
            "python/inventory",
            "js/shipping",
            "c/notification",
        ],
    )
    .await;
    assert_eq!(polyglot, rust);
}

/// Runs the demo's orders through the plugins on a virtual host of their own; returns how
/// each order ended: order id → (final message type, its body).
async fn order_flow_over_rabbitmq(
    test: &str,
    plugins: &[&str],
) -> std::collections::BTreeMap<String, (String, serde_json::Value)> {
    let vhost = Vhost::new(test);
    let config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../demo/courier.toml"))
            .unwrap();
    let host = amqp_host_with(&vhost, &config, plugins).await;
    let ends = ["OrderShipped", "PaymentFailed", "StockReservationFailed"]
        .map(|t| format!("urn:message:Orders:{t}"));
    let mut tap = Tap::new(
        &host,
        "tap",
        &ends.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let orders = courier_host::publish::read_seed_file(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../demo/orders.jsonl").as_ref(),
    )
    .unwrap();
    for order in &orders {
        host.submit(order.clone(), "test").await.unwrap();
    }
    let mut ended = std::collections::BTreeMap::new();
    for _ in 0..orders.len() {
        let end = tap.next().await;
        let body = body_json(&end);
        let order_id = body["order_id"].as_str().unwrap().to_owned();
        assert!(
            ended.insert(order_id, (end.message_type, body)).is_none(),
            "an order ended twice"
        );
    }
    tap.expect_nothing(Duration::from_millis(500)).await;
    host.wait_until_idle(Duration::from_millis(50))
        .await
        .unwrap();
    let summary = host.summary();
    assert_orders_add_up(&summary, orders.len());
    assert_notification_followed_every_event(&summary);
    host.shutdown().await;
    ended
}

/// Every envelope field crosses the broker and comes back as it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envelope_crosses_the_broker_unchanged() {
    let vhost = Vhost::new("envelope");
    let host = amqp_host_with(&vhost, "", &[]).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Ping")]).await;
    let mut sent = Envelope::new(test_type("Ping"), "application/json", b"{\"n\":1}".to_vec());
    sent.correlation_id = Some("c-1".into());
    sent.conversation_id = "conversation-1".into();
    sent.initiator_id = Some("initiator-1".into());
    sent.session_id = Some("session-1".into());
    sent.reply_to = Some("requester".into());
    sent.source_address = Some("test".into());
    sent.expires_at_ms = Some(courier_host::envelope::now_ms() + 60_000);
    sent.headers = vec![
        (
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        ),
        ("tracestate".into(), "courier=1".into()),
    ];
    host.transport()
        .dispatch(vec![Outbound {
            route: Route::Publish,
            envelope: sent.clone(),
            delay: None,
        }])
        .await
        .unwrap();
    let mut received = tap.next().await;
    received.headers.sort();
    sent.headers.sort();
    assert_eq!(received, sent);
    host.shutdown().await;
}

/// A client that knows nothing of Courier publishes to the type's exchange with a content
/// type and a body; the plugin handles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_amqp_client_can_publish_into_courier() {
    let vhost = Vhost::new("interop");
    let host = amqp_host_with(&vhost, "", &["probe"]).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    let connection = Connection::connect(&vhost.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let body = rmp_serde::to_vec_named(&json!({"n": 77})).unwrap();
    channel
        .basic_publish(
            "Test:Ping".into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_content_type("application/msgpack".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let pong = tap.next().await;
    assert_eq!(body_json(&pong)["n"], 77);
    connection.close(200, "done".into()).await.unwrap();
    host.shutdown().await;
}

/// A lane keeps what it settles between calls, and lends it to each call: a call that runs
/// long must let it go within two epoch ticks, so that a delivery handled before the long call
/// is acked (and counted) while the long call still runs, not after it. One lane: the ping
/// is handled, then a call sleeps for 4 s on a WASI clock. Without the call-in this fails
/// whenever the ping's confirm arrives after the lane took the sleeping call (one run in two
/// here); with it, it cannot fail that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_does_not_hold_back_the_settling_of_what_its_lane_handled_before() {
    let vhost = Vhost::new("lent-settling");
    let host = amqp_host_with(
        &vhost,
        "[plugins.probe]\nconcurrency = 1\ndeadline_ms = 6000",
        &["probe"],
    )
    .await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    let mut slow_done = Tap::new(&host, "slow-done", &[&test_type("SlowDone")]).await;
    let handled = || -> u64 {
        let summary = host.summary();
        summary
            .by_plugin
            .values()
            .map(|counts| counts.handled)
            .sum()
    };
    let started = Instant::now();
    publish(&host, &test_type("Ping"), json!({"n": 1})).await;
    publish(&host, &test_type("Slow"), json!({"n": 2, "ms": 4000})).await;
    assert_eq!(body_json(&tap.next().await)["n"], 1);
    wait_until("the ping is settled", || handled() >= 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the ping was settled only after the sleeping call"
    );
    assert_eq!(body_json(&slow_done.next().await)["n"], 2);
    wait_until("both are settled", || handled() == 2).await;
    host.shutdown().await;
}

/// Bad input on the wire is taken off the input queue with its reason, and the host keeps
/// consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_lands_in_the_right_queue_with_its_reason() {
    let vhost = Vhost::new("bad-input");
    let host = amqp_host_with(
        &vhost,
        "[plugins.probe]\nmax_message_bytes = 256",
        &["probe"],
    )
    .await;
    let send = |envelope: Envelope| Outbound {
        route: Route::Send("probe".into()),
        envelope,
        delay: None,
    };
    let ping = |body: &[u8]| Envelope::new(test_type("Ping"), "application/json", body.to_vec());
    let mut no_content_type = ping(b"{\"n\":1}");
    no_content_type.content_type = String::new();
    let mut unknown_content_type = ping(b"{\"n\":1}");
    unknown_content_type.content_type = "text/csv".into();
    let mut no_type = ping(b"{}");
    no_type.message_type = String::new();
    host.transport()
        .dispatch(vec![
            send(Envelope::new(
                test_type("Unheard"),
                "application/json",
                b"{}".to_vec(),
            )),
            send(no_type),
            send(no_content_type),
            send(unknown_content_type),
            send(ping(b"{\"n\": \"not a number\"}")),
            send(ping(
                format!("{{\"n\":1,\"pad\":\"{}\"}}", "x".repeat(300)).as_bytes(),
            )),
        ])
        .await
        .unwrap();

    let mut skipped = Tap::attach(&host, "probe_skipped").await;
    for _ in 0..2 {
        assert_eq!(
            skipped.next().await.header(headers::REASON),
            Some("no-handler")
        );
    }
    let mut errors = Tap::attach(&host, "probe_error").await;
    let mut reasons: Vec<String> = Vec::new();
    for _ in 0..4 {
        let failed = errors.next().await;
        reasons.push(format!(
            "{}: {}",
            failed.header(headers::REASON).unwrap(),
            failed.header(headers::MESSAGE).unwrap()
        ));
    }
    reasons.sort();
    assert!(
        reasons[0].starts_with("rejected: ") && reasons[0].contains("does not decode"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("too-large: "), "{reasons:?}");
    assert!(
        reasons[2].starts_with("unsupported-content-type: content type ``"),
        "{reasons:?}"
    );
    assert!(reasons[3].contains("text/csv"), "{reasons:?}");

    // Still consuming.
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    publish(&host, &test_type("Ping"), json!({"n": 5})).await;
    assert_eq!(body_json(&tap.next().await)["n"], 5);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_goes_to_the_expired_queue_or_is_dropped_by_config() {
    // By default: kept in `probe_expired`. (The message is already past its expiry when it is
    // published: the host or the broker sees that first, and either puts it there.)
    let vhost = Vhost::new("expired");
    let host = amqp_host_with(&vhost, "", &["probe"]).await;
    let mut stale = PublishRequest::new(test_type("Ping"), json!({"n": 1}))
        .into_outbound("test")
        .unwrap();
    stale.envelope.expires_at_ms = Some(courier_host::envelope::now_ms() - 1_000);
    let id = stale.envelope.id.clone();
    host.dispatch(stale).await.unwrap();
    let mut expired = Tap::attach(&host, "probe_expired").await;
    assert_eq!(expired.next().await.id, id);
    host.shutdown().await;
    drop(vhost);

    let vhost = Vhost::new("expired-drop");
    let host = amqp_host_with(&vhost, "[plugins.probe]\nexpired = \"drop\"", &["probe"]).await;
    assert_expired_messages_are_dropped(&host).await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_expired_drop_what_the_broker_gave_up_on_for_another_reason_goes_to_the_error_queue() {
    // The input queue dead-letters into `probe_expired` for any reason. Here the reason is a
    // delivery limit, set by policy, that a consumer exhausts by returning the message.
    let vhost = Vhost::new("expired-limit");
    let declaring = amqp_host_with(&vhost, "", &[]).await;
    let ping = test_type("Ping");
    let endpoint = courier_host::transport::Endpoint {
        queue: "probe".to_owned(),
        subscriptions: vec![ping.clone()],
        partitions: 0,
    };
    declaring
        .transport()
        .declare_endpoint(&endpoint)
        .await
        .unwrap();
    rabbitmqctl(&[
        "set_policy",
        "-p",
        &vhost.name,
        "limit",
        "^probe$",
        r#"{"delivery-limit": 1}"#,
        "--apply-to",
        "queues",
    ]);
    let id = send(&declaring, "probe", &ping, json!({"n": 1})).await;
    let connection = Connection::connect(&vhost.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut returned = 0;
    loop {
        let got = channel
            .basic_get(
                "probe".into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap();
        let Some(message) = got else { break };
        message
            .delivery
            .acker
            .nack(lapin::options::BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .unwrap();
        returned += 1;
        assert!(returned <= 5, "the delivery limit never took effect");
    }
    connection.close(200, "done".into()).await.unwrap();
    wait_until("the broker dead-letters it into probe_expired", || {
        let listed = rabbitmqctl(&["list_queues", "-p", &vhost.name, "name", "messages"]);
        listed
            .lines()
            .any(|line| line.split_whitespace().eq(["probe_expired", "1"]))
    })
    .await;
    declaring.shutdown().await;

    let host = amqp_host_with(&vhost, "[plugins.probe]\nexpired = \"drop\"", &["probe"]).await;
    let mut errors = Tap::attach(&host, "probe_error").await;
    let failed = errors.next().await;
    assert_eq!(failed.id, id);
    assert_eq!(
        failed.header(headers::REASON),
        Some("broker-dead-lettered"),
        "{failed:?}"
    );
    let text = failed.header(headers::MESSAGE).unwrap_or_default();
    assert!(text.contains("delivery_limit"), "{text}");
    assert_eq!(host.summary().of(&ping).expired, 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_to_a_missing_queue_fails_and_a_delayed_one_is_held_by_the_broker() {
    let vhost = Vhost::new("routing");
    let host = amqp_host_with(&vhost, "", &["probe"]).await;
    let mut request = PublishRequest::new(test_type("DoWork"), json!({"n": 1}));
    request.destination = Some("nowhere".into());
    let error = format!("{:#}", host.submit(request, "test").await.unwrap_err());
    assert!(error.contains("no queue named `nowhere`"), "{error}");

    let mut tap = Tap::new(&host, "tap", &[&test_type("WorkDone")]).await;
    let mut delayed = PublishRequest::new(test_type("DoWork"), json!({"n": 2}));
    delayed.destination = Some("probe".into());
    delayed.delay_ms = Some(1500);
    let started = Instant::now();
    host.submit(delayed, "test").await.unwrap();
    assert!(
        tap.try_next(Duration::from_millis(1000)).await.is_none(),
        "held for its delay"
    );
    assert_eq!(body_json(&tap.next().await)["n"], 2);
    assert!(started.elapsed() >= Duration::from_millis(1400));
    host.shutdown().await;
}

/// The broker URL's password never reaches an error.
#[tokio::test]
async fn credentials_never_appear_in_errors() {
    let mut config =
        courier_host::HostConfig::from_toml("[amqp]\nconnect_timeout_ms = 500").unwrap();
    config.admin.enabled = false;
    config.broker = Some("amqp://guest:hunter2-secret@127.0.0.1:1/%2f".into());
    let error = format!("{:#}", courier_host::Host::new(config).await.unwrap_err());
    assert!(error.contains("guest:***@127.0.0.1:1"), "{error}");
    assert!(!error.contains("hunter2-secret"), "{error}");
}

/// Asking how many messages a missing queue holds is an error that leaves the publisher alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_about_a_missing_queue_does_not_break_publishing() {
    let vhost = Vhost::new("missing-queue");
    let host = amqp_host_with(&vhost, "", &["probe"]).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    let error = host
        .transport()
        .ready_count(&["nowhere".to_owned()])
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("nowhere"), "{error:#}");
    assert_eq!(
        host.transport()
            .ready_count(&["probe".to_owned()])
            .await
            .unwrap(),
        0
    );
    publish(&host, &test_type("Ping"), json!({"n": 1})).await;
    assert_eq!(body_json(&tap.next().await)["n"], 1);
    host.shutdown().await;
}

/// Deliveries acked many at once and out of order settle only themselves, never one still
/// held or dropped unsettled: the broker refuses no ack (a refused one closes the channel,
/// and the next delivery would be a redelivery on a new one), and closing the consumer
/// returns exactly the held and dropped ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_out_of_order_settle_only_their_own_deliveries() {
    use courier_host::Transport as _;
    use courier_host::transport::amqp::AmqpTransport;
    use courier_host::transport::{Delivery, Endpoint};

    /// Acks each delivery from a task of its own, all at once.
    async fn ack_together(deliveries: Vec<Delivery>) {
        let acks: Vec<_> = deliveries
            .into_iter()
            .map(|delivery| tokio::spawn(delivery.acker.ack()))
            .collect();
        for ack in acks {
            ack.await.unwrap().unwrap();
        }
    }
    fn body(delivery: &Delivery) -> String {
        String::from_utf8(delivery.envelope.body.clone()).unwrap()
    }

    const MESSAGES: usize = 300;
    let vhost = Vhost::new("out-of-order-acks");
    let transport = AmqpTransport::connect(&vhost.url(), Default::default())
        .await
        .unwrap();
    let message_type = test_type("Settled");
    let queue = "settled".to_owned();
    transport
        .declare_endpoint(&Endpoint {
            queue: queue.clone(),
            subscriptions: vec![message_type.clone()],
            partitions: 0,
        })
        .await
        .unwrap();
    let message = |body: String| Outbound {
        route: Route::Send(queue.clone()),
        envelope: Envelope::new(&message_type, "application/json", body.into()),
        delay: None,
    };
    let messages = (0..MESSAGES).map(|n| message(n.to_string())).collect();
    transport.dispatch(messages).await.unwrap();
    let prefetch = MESSAGES.try_into().unwrap();
    let mut consumer = transport.consume(&queue, prefetch).await.unwrap();
    let mut deliveries = Vec::new();
    for _ in 0..MESSAGES {
        deliveries.push(consumer.next().await.unwrap());
    }
    // Three stay held and one is dropped unsettled once the others are acked.
    let held: Vec<Delivery> = [250, 120, 60]
        .into_iter()
        .map(|at| deliveries.remove(at))
        .collect();
    let dropped = deliveries.remove(200);
    let mut unsettled: Vec<String> = held.iter().chain([&dropped]).map(body).collect();
    unsettled.sort();
    // The others in two waves, the earlier deliveries first, each in reverse order: a run of
    // settled ones below a held one, and runs with held ones among them.
    let mut later = deliveries.split_off(deliveries.len() / 2);
    deliveries.reverse();
    later.reverse();
    ack_together(deliveries).await;
    ack_together(later).await;
    drop(dropped);
    // The channel is still open: the next delivery is a new message, not a redelivery.
    let marker = message("\"marker\"".to_owned());
    transport.dispatch(vec![marker]).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("the marker arrives")
        .unwrap();
    assert_eq!(
        (body(&next).as_str(), next.redelivered),
        ("\"marker\"", false)
    );
    next.acker.ack().await.unwrap();
    // Closing the consumer returns what it holds unsettled, and only that.
    drop(held);
    consumer.close().await;
    let mut again = transport.consume(&queue, prefetch).await.unwrap();
    let mut returned = Vec::new();
    while returned.len() < unsettled.len() {
        let delivery = tokio::time::timeout(Duration::from_secs(30), again.next())
            .await
            .expect("the unsettled deliveries come back")
            .unwrap();
        assert!(
            delivery.redelivered,
            "{} came back as a new delivery",
            body(&delivery)
        );
        returned.push(body(&delivery));
        delivery.acker.ack().await.unwrap();
    }
    returned.sort();
    assert_eq!(returned, unsettled);
    let more = tokio::time::timeout(Duration::from_secs(1), again.next()).await;
    assert!(more.is_err(), "more came back than was unsettled");
    again.close().await;
    let queues = std::slice::from_ref(&queue);
    assert_eq!(transport.ready_count(queues).await.unwrap(), 0);
    transport.close().await;
}
