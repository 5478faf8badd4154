//! Dispatch through real compiled plugins on the embedded broker: routing, the outbox, the
//! sandbox's limits, and how ids flow from message to message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::time::Duration;

use courier_host::recoverability::headers;
use courier_host::{
    CourierEngine, Host, InstancePolicy, Outcome, Plugin, PluginSettings, PublishRequest,
};
use courier_tests::*;
use serde_json::json;

/// Both fixtures subscribe to `Ping`, so each answers once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_reaches_every_subscriber() {
    let host = host_with("", &["probe", "mirror"]).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    publish(&host, &test_type("Ping"), json!({"n": 7})).await;
    let mut by: Vec<String> = tap
        .take(2)
        .await
        .iter()
        .map(|pong| body_json(pong)["by"].as_str().unwrap().to_owned())
        .collect();
    by.sort();
    assert_eq!(by, ["mirror", "probe"]);
    tap.expect_nothing(Duration::from_millis(200)).await;
}

/// Both fixtures can handle `DoWork`, but a command sent to `probe` reaches only `probe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_one_handler() {
    let host = host_with("", &["probe", "mirror"]).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("WorkDone")]).await;
    send(&host, "probe", &test_type("DoWork"), json!({"n": 1})).await;
    send(&host, "mirror", &test_type("DoWork"), json!({"n": 2})).await;
    let mut done: Vec<(u64, String)> = tap
        .take(2)
        .await
        .iter()
        .map(|m| {
            let body = body_json(m);
            (
                body["n"].as_u64().unwrap(),
                body["by"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    done.sort();
    assert_eq!(done, [(1, "probe".to_owned()), (2, "mirror".to_owned())]);
    tap.expect_nothing(Duration::from_millis(200)).await;
}

// That the outbox is dropped when a handler fails or traps is checked by the conformance
// suite (`conformance.rs`), for the Rust, Python and JavaScript reference plugins alike.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_loops_forever_is_stopped_at_its_deadline_while_others_are_served() {
    let host = host_with(
        "[plugins.probe]\ndeadline_ms = 200\nimmediate_retries = 0\nredelivery_delays_ms = []\nconcurrency = 2",
        &["probe", "mirror"],
    )
    .await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    publish(&host, &test_type("Spin"), json!({})).await;
    publish(&host, &test_type("Ping"), json!({"n": 1})).await;
    // Both plugins answer the ping while the spinning handler burns its deadline.
    assert_eq!(tap.take(2).await.len(), 2);
    let stopped = drain_queue(&host, "probe_error", 1).await;
    let error = stopped[0].header(headers::MESSAGE).unwrap();
    assert!(error.contains("deadline of 200 ms exceeded"), "{error}");
    // And the plugin keeps serving after the trap.
    publish(&host, &test_type("Ping"), json!({"n": 2})).await;
    assert_eq!(tap.take(2).await.len(), 2);
}

/// A deadline is wall time from the start of the call: a handler that waits on a WASI clock
/// past it is stopped as soon as its own code runs again, rather than given its deadline
/// afresh. With a reused instance the clock starts again at each call.
#[test]
fn a_deadline_counts_the_time_a_handler_waits_in_the_host() {
    let engine = CourierEngine::new(&test_engine_config()).unwrap();
    let message = |ms: u64| {
        PublishRequest::new(test_type("Slow"), json!({"n": 1, "ms": ms}))
            .into_outbound("test")
            .unwrap()
            .envelope
    };
    for instance in [InstancePolicy::Fresh, InstancePolicy::Reuse] {
        let plugin = Plugin::load(&engine, &plugin_file("probe"), |_| {
            Ok(PluginSettings {
                deadline: Duration::from_millis(500),
                instance,
                ..PluginSettings::default()
            })
        })
        .unwrap();
        // Two calls of 300 ms each: within the deadline one at a time, past it together.
        for _ in 0..2 {
            let within = plugin.invoke(&message(300), "probe");
            assert_eq!(within.outcome, Outcome::Handled, "{instance:?}");
            assert_eq!(within.outbox.len(), 1, "{instance:?}");
        }
        let past = plugin.invoke(&message(800), "probe");
        assert_eq!(
            past.outcome,
            Outcome::Trapped("deadline of 500 ms exceeded".to_owned()),
            "{instance:?}"
        );
        assert!(past.outbox.is_empty(), "{instance:?}");
    }
}

/// A lane whose calls are short keeps the plugin's consumer from one delivery to the next. A
/// call that turns out long must let the other lane take deliveries within an epoch tick
/// (5 ms), not only once it ends, whether it waits in a host function (a WASI clock) or
/// computes. Each long call here runs for seconds; the ping sent after it must be answered
/// well before the call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_after_short_ones_lets_the_other_lanes_take_deliveries() {
    // Calls count as short below 50 ms here, so that the debug build's count too.
    let host = host_with(
        "[engine]\nshort_call_us = 50000\n[plugins.probe]\ndeadline_ms = 6000\nimmediate_retries = 0\nredelivery_delays_ms = []\nconcurrency = 2",
        &["probe"],
    )
    .await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    let mut slow_done = Tap::new(&host, "slow-done", &[&test_type("SlowDone")]).await;
    // A call that sleeps for 4 s on a WASI clock: no guest code runs meanwhile.
    let ping = short_calls(&host, &mut tap, 0).await;
    publish(&host, &test_type("Slow"), json!({"n": 1, "ms": 4000})).await;
    publish(&host, &test_type("Ping"), json!({"n": ping})).await;
    let pong = tokio::time::timeout(Duration::from_secs(2), tap.next())
        .await
        .expect("the ping waited for the sleeping call to end");
    assert_eq!(body_json(&pong)["n"], ping);
    assert_eq!(body_json(&slow_done.next().await)["n"], 1);

    // A call that spins until its deadline, 6 s.
    let ping = short_calls(&host, &mut tap, ping + 1).await;
    publish(&host, &test_type("Spin"), json!({})).await;
    publish(&host, &test_type("Ping"), json!({"n": ping})).await;
    let pong = tokio::time::timeout(Duration::from_secs(3), tap.next())
        .await
        .expect("the ping waited for the spinning call to end");
    assert_eq!(body_json(&pong)["n"], ping);
    let stopped = drain_queue(&host, "probe_error", 1).await;
    let error = stopped[0].header(headers::MESSAGE).unwrap();
    assert!(error.contains("deadline of 6000 ms exceeded"), "{error}");
}

/// Pings answered one after another, numbered from `first`: the lane that makes these calls
/// keeps the consumer. Returns the number of the next ping.
async fn short_calls(host: &Host, tap: &mut Tap, first: u64) -> u64 {
    for n in first..first + 20 {
        publish(host, &test_type("Ping"), json!({"n": n})).await;
        assert_eq!(body_json(&tap.next().await)["n"], n);
    }
    first + 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_allocates_without_bound_is_stopped_at_its_memory_cap() {
    let host = host_with(
        "[plugins.probe]\nmemory_mib = 16\nimmediate_retries = 0\nredelivery_delays_ms = []",
        &["probe"],
    )
    .await;
    publish(&host, &test_type("Hog"), json!({})).await;
    let stopped = drain_queue(&host, "probe_error", 1).await;
    let error = stopped[0].header(headers::MESSAGE).unwrap();
    assert!(error.contains("memory cap exceeded"), "{error}");
    assert!(error.contains("16384 KiB"), "{error}");
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    publish(&host, &test_type("Ping"), json!({"n": 1})).await;
    assert_eq!(body_json(&tap.next().await)["by"], "probe");
}

/// WASI is deny-by-default: no file, no directory, no socket, no environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_denies_files_sockets_and_the_environment() {
    let host = host_with("", &["probe"]).await;
    let mut tap = Tap::new(
        &host,
        "tap",
        &[&test_type("SandboxReport"), &test_type("Pong")],
    )
    .await;
    let secret = std::env::temp_dir().join(format!("courier-sandbox-{}", std::process::id()));
    std::fs::write(&secret, "secret").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    publish(
        &host,
        &test_type("ProbeSandbox"),
        json!({"path": secret.to_str().unwrap(), "address": listener.local_addr().unwrap().to_string()}),
    )
    .await;
    let report = body_json(&tap.next().await);
    std::fs::remove_file(&secret).unwrap();
    for field in ["file", "directory", "socket"] {
        let outcome = report[field].as_str().unwrap();
        assert!(outcome.starts_with("error:"), "{field}: {outcome}");
    }
    assert_eq!(report["environment"], json!([]));
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the guest must not have connected"
    );
    // The host is unharmed.
    publish(&host, &test_type("Ping"), json!({"n": 1})).await;
    assert_eq!(tap.next().await.message_type, test_type("Pong"));
}

/// HopOne (probe) → HopTwo (mirror) → HopThree (probe) → HopDone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_propagate_over_three_hops() {
    let host = host_with("", &["probe", "mirror"]).await;
    let mut tap = Tap::new(
        &host,
        "tap",
        &[
            &test_type("HopTwo"),
            &test_type("HopThree"),
            &test_type("HopDone"),
        ],
    )
    .await;
    let mut request = courier_host::PublishRequest::new(test_type("HopOne"), json!({}));
    request.correlation_id = Some("journey-1".into());
    let first = host.submit(request, "test").await.unwrap();

    let mut hops = tap.take(3).await;
    hops.sort_by_key(|m| {
        ["HopTwo", "HopThree", "HopDone"]
            .iter()
            .position(|t| m.message_type.ends_with(t))
    });
    let [two, three, done] = [&hops[0], &hops[1], &hops[2]];
    assert!(done.message_type.ends_with("HopDone"));
    assert_eq!(two.initiator_id.as_deref(), Some(first.as_str()));
    assert_eq!(three.initiator_id.as_deref(), Some(two.id.as_str()));
    assert_eq!(done.initiator_id.as_deref(), Some(three.id.as_str()));
    for hop in [two, three, done] {
        assert_eq!(
            hop.conversation_id, first,
            "the first message's id names the conversation"
        );
        assert_eq!(hop.correlation_id.as_deref(), Some("journey-1"));
    }
    assert_eq!(two.source_address.as_deref(), Some("probe"));
    assert_eq!(three.source_address.as_deref(), Some("mirror"));
}

/// A message delivered twice (an ack lost in a crash) publishes follow-ups with the same ids,
/// so a downstream inbox can drop the second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_up_ids_are_identical_when_a_message_is_redelivered() {
    let host = host_with("", &["probe"]).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    let outbound = courier_host::PublishRequest::new(test_type("Ping"), json!({"n": 3}))
        .into_outbound("test")
        .unwrap();
    host.dispatch(outbound.clone()).await.unwrap();
    let first = tap.next().await;
    let mut again = outbound;
    again.envelope.attempt = 2;
    host.dispatch(again).await.unwrap();
    let second = tap.next().await;
    assert_eq!(first.id, second.id);
    assert_eq!(
        body_json(&second)["attempt"],
        2,
        "the handler saw the redelivery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_cannot_be_read_take_the_reject_path_with_their_reason() {
    let host = host_with("[plugins.probe]\nmax_message_bytes = 64", &["probe"]).await;
    // A body of the wrong shape: the SDK rejects it.
    publish(&host, &test_type("Ping"), json!({"n": "not a number"})).await;
    // A content type nobody speaks, and a body over the limit: the host refuses them.
    let mut xml = courier_host::PublishRequest::new(test_type("Ping"), json!({"n": 1}))
        .into_outbound("test")
        .unwrap();
    xml.envelope.content_type = "text/xml".into();
    host.dispatch(xml).await.unwrap();
    publish(
        &host,
        &test_type("Ping"),
        json!({"n": 1, "padding": "x".repeat(100)}),
    )
    .await;
    // A type the plugin has no handler for is skipped, not failed.
    send(&host, "probe", &test_type("Unheard"), json!({})).await;

    let errors = drain_queue(&host, "probe_error", 3).await;
    let reasons: Vec<(&str, &str)> = errors
        .iter()
        .map(|m| {
            (
                m.header(headers::REASON).unwrap(),
                m.header(headers::MESSAGE).unwrap(),
            )
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(r, e)| *r == "rejected" && e.contains("does not decode")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(r, e)| *r == "unsupported-content-type" && e.contains("text/xml")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(r, e)| *r == "too-large" && e.contains("over the limit of 64 bytes")),
        "{reasons:?}"
    );
    for message in &errors {
        assert_eq!(message.attempt, 1, "never retried");
        assert_eq!(message.header(headers::PLUGIN), Some("probe"));
        assert_eq!(message.header(headers::ORIGINAL_QUEUE), Some("probe"));
    }
    let skipped = drain_queue(&host, "probe_skipped", 1).await;
    assert_eq!(skipped[0].header(headers::REASON), Some("no-handler"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_is_not_handled() {
    let host = host_with("", &["probe"]).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    let mut stale = courier_host::PublishRequest::new(test_type("Ping"), json!({"n": 1}))
        .into_outbound("test")
        .unwrap();
    stale.envelope.expires_at_ms = Some(1);
    host.dispatch(stale).await.unwrap();
    let expired = drain_queue(&host, "probe_expired", 1).await;
    assert_eq!(expired[0].header(headers::REASON), Some("expired"));
    tap.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_dropped_when_the_plugin_says_so() {
    let host = host_with("[plugins.probe]\nexpired = \"drop\"", &["probe"]).await;
    assert_expired_messages_are_dropped(&host).await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_read_their_config_and_are_held_to_their_publish_limit() {
    let host = host_with(
        "[plugins.probe]\nmax_publishes = 3\n[plugins.probe.config]\ngreeting = \"hello\"\nlimits.daily = 5",
        &["probe"],
    )
    .await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("ConfigValue")]).await;
    publish(&host, &test_type("ReadConfig"), json!({"key": "greeting"})).await;
    let value = tap.next().await;
    assert_eq!(
        value.content_type, "application/json",
        "the handler asked for JSON"
    );
    assert_eq!(body_json(&value)["value"], "hello");
    publish(
        &host,
        &test_type("ReadConfig"),
        json!({"key": "limits.daily"}),
    )
    .await;
    assert_eq!(body_json(&tap.next().await)["value"], "5");
    publish(&host, &test_type("ReadConfig"), json!({"key": "absent"})).await;
    assert_eq!(
        body_json(&tap.next().await)["value"],
        serde_json::Value::Null
    );

    publish(&host, &test_type("Flood"), json!({"count": 10, "size": 8})).await;
    let refused = drain_queue(&host, "probe_error", 1).await;
    let error = refused[0].header(headers::MESSAGE).unwrap();
    assert!(
        error.contains("publish 4 of 10 refused") && error.contains("publish limit"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_goes_to_the_reply_to_address() {
    let host = host_with("", &["probe"]).await;
    let mut replies = Tap::new(&host, "requester", &[]).await;
    let mut request = courier_host::PublishRequest::new(test_type("Request"), json!({"n": 9}));
    request.reply_to = Some("requester".into());
    request.correlation_id = Some("req-9".into());
    let id = host.submit(request, "test").await.unwrap();
    let reply = replies.next().await;
    assert_eq!(body_json(&reply)["n"], 9);
    assert_eq!(reply.initiator_id.as_deref(), Some(id.as_str()));
    assert_eq!(reply.correlation_id.as_deref(), Some("req-9"));

    // Without a reply-to the reply is refused, and the handler's `?` rejects the message.
    publish(&host, &test_type("Request"), json!({"n": 10})).await;
    let refused = drain_queue(&host, "probe_error", 1).await;
    assert!(
        refused[0]
            .header(headers::MESSAGE)
            .unwrap()
            .contains("no reply-to")
    );
}

/// With `recycle_above_mib`, a reused instance that has grown past the mark is replaced after
/// the message that took it there; one below it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_that_grew_past_its_mark_is_recycled() {
    let host = host_with(
        "[plugins.probe]\ninstance = \"reuse\"\nconcurrency = 1\nrecycle_above_mib = 8",
        &["probe"],
    )
    .await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Counted")]).await;
    // Each `Retain` keeps 3 MiB more: after two the instance is still under 8 MiB, after the
    // third it is over.
    for expected in 1..=3 {
        publish(&host, &test_type("Retain"), json!({"mib": 3})).await;
        assert_eq!(counted(&mut tap).await, expected);
    }
    publish(&host, &test_type("Count"), json!({})).await;
    assert_eq!(
        counted(&mut tap).await,
        1,
        "the instance past the mark was replaced"
    );
}

/// The next `Counted`: how many messages the instance that sent it has handled.
async fn counted(tap: &mut Tap) -> u64 {
    body_json(&tap.next().await)["handled_by_this_instance"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_instances_share_nothing_and_reused_ones_are_recycled_after_a_trap() {
    let fresh = host_with("", &["probe"]).await;
    let mut tap = Tap::new(&fresh, "tap", &[&test_type("Counted")]).await;
    for _ in 0..3 {
        publish(&fresh, &test_type("Count"), json!({})).await;
        assert_eq!(body_json(&tap.next().await)["handled_by_this_instance"], 1);
    }

    let reused = host_with(
        "[plugins.probe]\ninstance = \"reuse\"\nconcurrency = 1\nrecycle_after = 100\nimmediate_retries = 0\nredelivery_delays_ms = []",
        &["probe"],
    )
    .await;
    let mut tap = Tap::new(&reused, "tap", &[&test_type("Counted")]).await;
    for expected in 1..=3 {
        publish(&reused, &test_type("Count"), json!({})).await;
        assert_eq!(
            body_json(&tap.next().await)["handled_by_this_instance"],
            expected
        );
    }
    publish(
        &reused,
        &test_type("PublishThenFail"),
        json!({"mode": "trap"}),
    )
    .await;
    drain_queue(&reused, "probe_error", 1).await;
    publish(&reused, &test_type("Count"), json!({})).await;
    assert_eq!(
        body_json(&tap.next().await)["handled_by_this_instance"],
        1,
        "a trapped instance is never reused"
    );
}
