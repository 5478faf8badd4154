//! `courier errors list | show | replay | purge` as a user runs them: the real `courier` binary
//! against the real RabbitMQ of this machine, on error queues that a host filled (each test
//! in a virtual host of its own).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use courier_host::Envelope;
use courier_host::recoverability::headers;
use courier_host::transport::{Outbound, Route};
use courier_tests::*;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

/// One call per message, no retries, one message at a time. The inbox is not what these tests
/// are about.
const CONFIG: &str = "[defaults]\nconcurrency = 1\nimmediate_retries = 0\nredelivery_delays_ms = []\n\n[inbox]\nstore = \"off\"\n";

/// Runs `courier errors ARGS --broker URL`, with no terminal.
async fn courier(vhost: &Vhost, args: &[&str]) -> Output {
    let mut command = Command::new(courier_bin());
    command
        .arg("errors")
        .args(args)
        .args(["--broker", &vhost.url()])
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn everything(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a command that must succeed; its standard output.
async fn ok(vhost: &Vhost, args: &[&str]) -> String {
    let output = courier(vhost, args).await;
    assert!(
        output.status.success(),
        "courier errors {args:?} failed: {}",
        everything(&output)
    );
    stdout(&output)
}

/// `list --json`, parsed.
async fn listed(vhost: &Vhost, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["list", "--queue", "probe", "--json"];
    all.extend_from_slice(args);
    ok(vhost, &all)
        .await
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A plain AMQP client on the test's virtual host.
struct Rabbit {
    connection: Connection,
}

impl Rabbit {
    async fn connect(vhost: &Vhost) -> Rabbit {
        let connection = Connection::connect(&vhost.url(), ConnectionProperties::default())
            .await
            .unwrap();
        Rabbit { connection }
    }

    /// Messages ready in `queue`.
    async fn count(&self, queue: &str) -> u32 {
        let channel = self.connection.create_channel().await.unwrap();
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel.close(200, "done".into()).await.unwrap();
        declared.message_count()
    }

    async fn wait_for_count(&self, queue: &str, n: u32) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let count = self.count(queue).await;
            if count == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{queue} holds {count} message(s), expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn declare_quorum(&self, queue: &str) {
        let channel = self.connection.create_channel().await.unwrap();
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .unwrap();
        channel.close(200, "done".into()).await.unwrap();
    }

    /// Puts `total` failed messages `message-<n>` into `probe_error` as a plain client would,
    /// with `courier-fault-original-queue` = `original_queue`: those with an even `n` were
    /// rejected, the others ran out of retries.
    async fn fill_error_queue(&self, total: u32, original_queue: &str) {
        self.declare_quorum("probe_error").await;
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mut confirms = Vec::new();
        for n in 0..total {
            let reason = if n % 2 == 0 {
                "rejected"
            } else {
                "retries-exhausted"
            };
            let mut table = BTreeMap::new();
            for (name, value) in [
                (headers::REASON, reason.to_owned()),
                (headers::MESSAGE, format!("message {n}")),
                (headers::ORIGINAL_QUEUE, original_queue.to_owned()),
                ("courier-attempt", "1".to_owned()),
            ] {
                table.insert(
                    ShortString::from(name),
                    AMQPValue::LongString(LongString::from(value)),
                );
            }
            let properties = BasicProperties::default()
                .with_message_id(format!("message-{n}").as_str().into())
                .with_type(test_type("Ping").as_str().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(FieldTable::from(table));
            let body = format!("{{\"n\":{n}}}");
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        "probe_error".into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        properties,
                    )
                    .await
                    .unwrap(),
            );
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
        channel.close(200, "done".into()).await.unwrap();
    }

    /// Takes (and acks) every message of `queue`: properties and body.
    async fn take_all(&self, queue: &str) -> Vec<(BasicProperties, Vec<u8>)> {
        let channel = self.connection.create_channel().await.unwrap();
        let mut taken = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            taken.push((message.delivery.properties, message.delivery.data));
        }
        channel.close(200, "done".into()).await.unwrap();
        taken
    }
}

fn header_names(properties: &BasicProperties) -> Vec<String> {
    properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .keys()
                .map(|k| k.as_str().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(name)
}

fn reject() -> (&'static str, Value) {
    ("PublishThenFail", json!({"mode": "reject"}))
}

fn exhaust(n: u64) -> (&'static str, Value) {
    ("Flaky", json!({"n": n, "succeed_on": 0}))
}

/// Sends each message to the `probe` plugin of a host on `vhost`, waits until every one is in
/// `probe_error`, and stops the host, so nothing consumes `probe` any more. Returns the ids in
/// the order sent and in the order of the error queue (the host's dead-letter publishes are
/// pipelined, so the two may differ).
async fn dead_letter(vhost: &Vhost, messages: &[(&str, Value)]) -> (Vec<String>, Vec<String>) {
    let host = amqp_host_with(vhost, CONFIG, &["probe"]).await;
    let mut sent = Vec::new();
    for (name, body) in messages {
        sent.push(send(&host, "probe", &test_type(name), body.clone()).await);
    }
    let rabbit = Rabbit::connect(vhost).await;
    rabbit
        .wait_for_count("probe_error", messages.len() as u32)
        .await;
    host.shutdown().await;
    let order = ids(&listed(vhost, &[]).await);
    let mut sorted = (sent.clone(), order.clone());
    sorted.0.sort();
    sorted.1.sort();
    assert_eq!(
        sorted.0, sorted.1,
        "every message sent is in the error queue"
    );
    (sent, order)
}

/// The ids of `order` that are among `wanted`, in the order of `order`.
fn only(order: &[String], wanted: &[&String]) -> Vec<String> {
    order
        .iter()
        .filter(|id| wanted.contains(id))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_the_failed_messages_and_leaves_the_queue_as_it_was() {
    let vhost = Vhost::new("errors-list");
    let (sent, order) = dead_letter(
        &vhost,
        &[reject(), exhaust(1), reject(), exhaust(2), reject()],
    )
    .await;
    let rabbit = Rabbit::connect(&vhost).await;
    assert_eq!(rabbit.count("probe_error").await, 5);

    let table = ok(&vhost, &["list", "--queue", "probe"]).await;
    let lines: Vec<&str> = table.lines().collect();
    for heading in [
        "ID",
        "TYPE",
        "REASON",
        "PLUGIN",
        "ATTEMPTS",
        "FAILED AT",
        "ERROR",
    ] {
        assert!(lines[0].contains(heading), "{table}");
    }
    for (line, id) in lines[1..=5].iter().zip(&order) {
        assert!(line.starts_with(id.as_str()), "in queue order:\n{table}");
        assert!(line.contains("probe@"), "{table}");
    }
    let line_of = |id: &String| *lines.iter().find(|l| l.starts_with(id.as_str())).unwrap();
    let rejected_line = line_of(&sent[0]);
    assert!(rejected_line.contains("Test:PublishThenFail"), "{table}");
    assert!(rejected_line.contains("rejected"), "{table}");
    assert!(rejected_line.contains("asked to reject"), "{table}");
    let exhausted_line = line_of(&sent[1]);
    assert!(exhausted_line.contains("Test:Flaky"), "{table}");
    assert!(exhausted_line.contains("retries-exhausted"), "{table}");
    assert!(
        exhausted_line.contains("flaky 1 failed on attempt 1"),
        "{table}"
    );
    assert!(
        table.contains("probe_error: 5 message(s), 5 listed"),
        "{table}"
    );

    let first = listed(&vhost, &[]).await;
    assert_eq!(ids(&first), order);
    let rejected = first.iter().find(|m| m["id"] == sent[0].as_str()).unwrap();
    assert_eq!(rejected["reason"], "rejected");
    assert_eq!(rejected["error"], "asked to reject");
    assert_eq!(rejected["plugin"], "probe");
    assert_eq!(rejected["attempts"], 1);
    assert_eq!(rejected["original_queue"], "probe");
    assert_eq!(rejected["type"], test_type("PublishThenFail"));
    assert_eq!(
        rejected["headers"][headers::REASON],
        "rejected",
        "every header is there"
    );
    assert!(rejected["headers"]["courier-conversation-id"].is_string());
    assert!(rejected["properties"]["message_id"].is_string());

    // Looking again and again neither loses, nor reorders, nor dead-letters anything.
    for round in 0..25 {
        let again = listed(&vhost, &[]).await;
        assert_eq!(ids(&again), order, "round {round}");
        assert_eq!(rabbit.count("probe_error").await, 5, "round {round}");
    }
    let shown = ok(&vhost, &["show", "--queue", "probe", &sent[0]]).await;
    assert!(
        shown.contains("x-delivery-count"),
        "a quorum queue counts every look: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_the_headers_and_the_decoded_body() {
    let vhost = Vhost::new("errors-show");
    let (sent, _) = dead_letter(&vhost, &[exhaust(7), reject()]).await;

    let text = ok(&vhost, &["show", "--queue", "probe", &sent[1]]).await;
    for expected in [
        sent[1].as_str(),
        "properties:",
        "content_type      application/msgpack",
        "headers:",
        headers::REASON,
        headers::MESSAGE,
        headers::PLUGIN_VERSION,
        headers::ORIGINAL_QUEUE,
        headers::TIME,
        "courier-attempt",
        "asked to reject",
        "decoded to JSON",
        "\"mode\": \"reject\"",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from:\n{text}"
        );
    }

    let details: Value =
        serde_json::from_str(&ok(&vhost, &["show", "--queue", "probe", "--json", &sent[0]]).await)
            .unwrap();
    assert_eq!(details["id"], sent[0].as_str());
    assert_eq!(details["reason"], "retries-exhausted");
    assert_eq!(details["body"]["json"], json!({"n": 7, "succeed_on": 0}));
    assert_eq!(details["headers"][headers::ORIGINAL_QUEUE], "probe");

    let missing = courier(&vhost, &["show", "--queue", "probe", "no-such-id"]).await;
    assert!(!missing.status.success());
    assert!(
        everything(&missing).contains("no message no-such-id in probe_error"),
        "{}",
        everything(&missing)
    );
    assert_eq!(Rabbit::connect(&vhost).await.count("probe_error").await, 2);
}

/// Replayed into the plugin's queue while no host consumes it: the copy is there without its
/// fault headers, at attempt 1, with the same id and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_moves_a_message_back_with_its_fault_headers_gone() {
    let vhost = Vhost::new("errors-replay");
    let (sent, _) = dead_letter(&vhost, &[reject(), exhaust(3)]).await;
    let rabbit = Rabbit::connect(&vhost).await;
    let before = listed(&vhost, &[]).await;
    let before = before.iter().find(|m| m["id"] == sent[1].as_str()).unwrap();
    // Look a few times, so the broker's delivery count is up.
    for _ in 0..3 {
        listed(&vhost, &[]).await;
    }

    let out = ok(&vhost, &["replay", "--queue", "probe", &sent[1]]).await;
    assert!(
        out.contains("replayed 1 of 1 message(s) from probe_error"),
        "{out}"
    );
    assert_eq!(rabbit.count("probe_error").await, 1);
    assert_eq!(ids(&listed(&vhost, &[]).await), vec![sent[0].clone()]);

    let copies = rabbit.take_all("probe").await;
    assert_eq!(copies.len(), 1);
    let (properties, body) = &copies[0];
    assert_eq!(
        properties.message_id().as_ref().map(|s| s.as_str()),
        Some(sent[1].as_str())
    );
    assert_eq!(
        properties.kind().as_ref().map(|s| s.as_str()),
        Some(test_type("Flaky").as_str())
    );
    let names = header_names(properties);
    assert!(
        names.iter().all(|name| !name.starts_with("courier-fault-")),
        "{names:?}"
    );
    // The broker's count starts again for the copy: 0 on its first delivery, whatever it
    // reached in the error queue.
    assert!(
        matches!(
            header(properties, "x-delivery-count"),
            None | Some(AMQPValue::LongLongInt(0))
        ),
        "{:?}",
        header(properties, "x-delivery-count")
    );
    assert_eq!(
        header(properties, "courier-attempt"),
        Some(&AMQPValue::LongString(LongString::from("1")))
    );
    assert_eq!(
        header(properties, "courier-conversation-id").is_some(),
        before["headers"]["courier-conversation-id"].is_string(),
        "the other headers stay"
    );
    let decoded: Value = rmp_serde::from_slice(body).unwrap();
    assert_eq!(decoded, json!({"n": 3, "succeed_on": 0}));

    // The rest, with no id given: the error queue empties.
    let out = ok(&vhost, &["replay", "--queue", "probe"]).await;
    assert!(
        out.contains("replayed 1 of 1 message(s) from probe_error"),
        "{out}"
    );
    assert_eq!(rabbit.count("probe_error").await, 0);
    assert_eq!(rabbit.count("probe").await, 1);
    let out = ok(&vhost, &["replay", "--queue", "probe"]).await;
    assert!(
        out.contains("replayed 0 of 0 message(s) from probe_error"),
        "{out}"
    );
}

/// A message too large for the plugin's limit fails; once the limit is raised, the replayed
/// message is handled, on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_message_is_handled_once_its_cause_is_fixed() {
    let vhost = Vhost::new("errors-fixed");
    let strict = format!("{CONFIG}\n[plugins.probe]\nmax_message_bytes = 64\n");
    let host = amqp_host_with(&vhost, &strict, &["probe"]).await;
    let body = format!("{{\"n\":41,\"pad\":\"{}\"}}", "x".repeat(200));
    let big = Envelope::new(test_type("Ping"), "application/json", body.into_bytes());
    let id = big.id.clone();
    host.transport()
        .dispatch(vec![Outbound {
            route: Route::Send("probe".into()),
            envelope: big,
            delay: None,
        }])
        .await
        .unwrap();
    let rabbit = Rabbit::connect(&vhost).await;
    rabbit.wait_for_count("probe_error", 1).await;
    host.shutdown().await;
    let failed = listed(&vhost, &[]).await;
    assert_eq!(failed[0]["reason"], "too-large");
    assert_eq!(failed[0]["id"], id.as_str());

    // The limit raised, the message replayed: handled at attempt 1.
    let host = amqp_host_with(&vhost, CONFIG, &["probe"]).await;
    let mut pongs = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    let out = ok(
        &vhost,
        &["replay", "--queue", "probe", "--reason", "too-large"],
    )
    .await;
    assert!(out.contains("replayed 1 of 1"), "{out}");
    let pong = pongs.next().await;
    assert_eq!(body_json(&pong)["n"], 41);
    assert_eq!(body_json(&pong)["attempt"], 1, "the attempt starts again");
    assert_eq!(pong.initiator_id.as_deref(), Some(id.as_str()));
    host.shutdown().await;
    assert_eq!(rabbit.count("probe_error").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_choose_only_the_matching_messages() {
    let vhost = Vhost::new("errors-filters");
    let (sent, order) = dead_letter(&vhost, &[reject(), exhaust(1), reject(), exhaust(2)]).await;
    let rabbit = Rabbit::connect(&vhost).await;
    let rejected = only(&order, &[&sent[0], &sent[2]]);
    let exhausted = only(&order, &[&sent[1], &sent[3]]);

    assert_eq!(
        ids(&listed(&vhost, &["--reason", "retries-exhausted"]).await),
        exhausted
    );
    for name in [
        "PublishThenFail",
        "Test:PublishThenFail",
        "urn:message:Test:PublishThenFail",
    ] {
        assert_eq!(ids(&listed(&vhost, &["--type", name]).await), rejected);
    }
    assert!(
        listed(&vhost, &["--type", "Flaky", "--reason", "rejected"])
            .await
            .is_empty()
    );
    assert_eq!(
        ids(&listed(&vhost, &["--type", "Flaky", "--type", "PublishThenFail"]).await),
        order
    );
    assert_eq!(ids(&listed(&vhost, &["--since", "1h"]).await), order);
    assert_eq!(
        ids(&listed(
            &vhost,
            &["--since", "2000-01-01T00:00:00Z", "--until", "0s"]
        )
        .await)
        .len(),
        4
    );
    assert!(
        listed(&vhost, &["--until", "2000-01-01T00:00:00Z"])
            .await
            .is_empty()
    );
    assert_eq!(ids(&listed(&vhost, &["--limit", "3"]).await), order[..3]);
    let bad = courier(
        &vhost,
        &["list", "--queue", "probe", "--since", "yesterday"],
    )
    .await;
    assert!(!bad.status.success());
    assert!(everything(&bad).contains("--since"), "{}", everything(&bad));

    // Replay chooses the same way; what it leaves keeps its order.
    let out = ok(
        &vhost,
        &[
            "replay",
            "--queue",
            "probe",
            "--reason",
            "retries-exhausted",
        ],
    )
    .await;
    assert!(
        out.contains("replayed 2 of 2 message(s) from probe_error"),
        "{out}"
    );
    assert_eq!(ids(&listed(&vhost, &[]).await), rejected);
    let replayed: Vec<String> = rabbit
        .take_all("probe")
        .await
        .iter()
        .map(|(p, _)| p.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(replayed, exhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_only_the_matching_messages() {
    let vhost = Vhost::new("errors-purge");
    let (sent, order) = dead_letter(&vhost, &[reject(), exhaust(1), reject(), exhaust(2)]).await;
    let rabbit = Rabbit::connect(&vhost).await;
    let rejected = only(&order, &[&sent[0], &sent[2]]);

    // No terminal to ask, no --yes: nothing happens.
    let refused = courier(&vhost, &["purge", "--queue", "probe"]).await;
    assert!(!refused.status.success());
    assert!(
        everything(&refused).contains("--yes"),
        "{}",
        everything(&refused)
    );
    assert_eq!(rabbit.count("probe_error").await, 4);

    let out = ok(
        &vhost,
        &["purge", "--queue", "probe", "--type", "Flaky", "--yes"],
    )
    .await;
    assert!(
        out.contains("purged 2 of 2 message(s) from probe_error"),
        "{out}"
    );
    assert_eq!(ids(&listed(&vhost, &[]).await), rejected);

    let out = ok(&vhost, &["purge", "--queue", "probe", "--yes", &sent[2]]).await;
    assert!(out.contains("purged 1 of 1"), "{out}");
    assert_eq!(ids(&listed(&vhost, &[]).await), vec![sent[0].clone()]);
    assert_eq!(
        rabbit.count("probe").await,
        0,
        "purge sends nothing anywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_error_queue_fails_and_is_named() {
    let vhost = Vhost::new("errors-missing");
    for args in [
        vec!["list", "--queue", "nowhere"],
        vec!["show", "--queue", "nowhere", "some-id"],
        vec!["replay", "--queue", "nowhere"],
        vec!["purge", "--queue", "nowhere", "--yes"],
    ] {
        let output = courier(&vhost, &args).await;
        let text = everything(&output);
        assert!(!output.status.success(), "{args:?}: {text}");
        assert!(
            text.contains(&format!(
                "no queue named nowhere_error on amqp://guest:***@127.0.0.1:5672/{}",
                vhost.name
            )),
            "{args:?}: {text}"
        );
        assert!(!text.contains("guest:guest"), "{args:?}: {text}");
    }
    let no_broker = Command::new(courier_bin())
        .args(["errors", "list", "--queue", "probe"])
        .env_remove("COURIER_BROKER")
        .env_remove("COURIER_CONFIG")
        .output()
        .unwrap();
    // Without a broker, the embedded broker of a host on the default admin address is asked:
    // the error says so, and how to name a RabbitMQ instead.
    assert!(!no_broker.status.success());
    let said = everything(&no_broker);
    assert!(said.contains("--broker amqp://"), "{said}");
    assert!(said.contains("cannot reach the admin API"), "{said}");
}

/// Commands that look at part of a queue, or take only some of its messages, leave the rest
/// in its order: a quorum queue puts back behind the others any message that goes back alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_left_keeps_its_order() {
    const TOTAL: u32 = 60;
    let vhost = Vhost::new("errors-order");
    let rabbit = Rabbit::connect(&vhost).await;
    rabbit.declare_quorum("parking").await;
    rabbit.fill_error_queue(TOTAL, "parking").await;
    let mut left: Vec<String> = (0..TOTAL).map(|n| format!("message-{n}")).collect();
    let check = |left: &Vec<String>| {
        let left = left.clone();
        let vhost = &vhost;
        async move {
            assert_eq!(ids(&listed(vhost, &[]).await), left);
        }
    };
    check(&left).await;

    // Stopping early, and finding one message, put every message back in its place.
    assert_eq!(listed(&vhost, &["--limit", "2"]).await.len(), 2);
    check(&left).await;
    ok(&vhost, &["show", "--queue", "probe", "message-1"]).await;
    check(&left).await;

    // A queue larger than --scan-limit is not listed in part.
    let refused = courier(&vhost, &["list", "--queue", "probe", "--scan-limit", "10"]).await;
    assert!(!refused.status.success());
    assert!(
        everything(&refused).contains("holds 60 messages, more than --scan-limit 10"),
        "{}",
        everything(&refused)
    );
    check(&left).await;

    // Everything it looks at is taken: a purge or replay may take the first part of a queue.
    let out = ok(
        &vhost,
        &["purge", "--queue", "probe", "--yes", "--scan-limit", "5"],
    )
    .await;
    assert!(out.contains("purged 5 of 5"), "{out}");
    left.drain(..5);
    check(&left).await;
    let out = ok(&vhost, &["replay", "--queue", "probe", "--scan-limit", "3"]).await;
    assert!(out.contains("replayed 3 of 3"), "{out}");
    left.drain(..3);
    check(&left).await;

    // Some of them taken, the others put back.
    let out = ok(
        &vhost,
        &[
            "purge", "--queue", "probe", "--yes", "--reason", "rejected", "--limit", "3",
        ],
    )
    .await;
    assert!(out.contains("purged 3 of 3"), "{out}");
    for id in ["message-8", "message-10", "message-12"] {
        left.retain(|kept| kept != id);
    }
    check(&left).await;
    let out = ok(
        &vhost,
        &[
            "replay",
            "--queue",
            "probe",
            "--reason",
            "retries-exhausted",
        ],
    )
    .await;
    assert!(out.contains("replayed 26 of 26"), "{out}");
    left.retain(|id| id.trim_start_matches("message-").parse::<u32>().unwrap() % 2 == 0);
    check(&left).await;
    assert_eq!(rabbit.count("parking").await, 3 + 26);
}

/// SIGTERM in the middle of a bulk replay: the message being moved is finished, the command
/// stops, and every message is in exactly one of the two queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_loses_and_duplicates_nothing() {
    const TOTAL: u32 = 1500;
    let vhost = Vhost::new("errors-interrupt");
    let rabbit = Rabbit::connect(&vhost).await;
    rabbit.declare_quorum("parking").await;
    rabbit.fill_error_queue(TOTAL, "parking").await;
    let published: Vec<String> = (0..TOTAL).map(|n| format!("message-{n}")).collect();
    // Far more than 32 messages keep their order too, looked at twice in a row.
    for _ in 0..2 {
        assert_eq!(ids(&listed(&vhost, &[]).await), published);
    }

    let replay = Command::new(courier_bin())
        .args([
            "errors",
            "replay",
            "--queue",
            "probe",
            "--broker",
            &vhost.url(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while rabbit.count("parking").await < 20 {
        assert!(Instant::now() < deadline, "the replay never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let term = Command::new("kill")
        .args(["-TERM", &replay.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let output = tokio::task::spawn_blocking(move || replay.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = everything(&output);
    let summary = stdout(&output);
    let replayed: u32 = summary
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line: {text}"));
    assert!(
        summary.starts_with(&format!("replayed {replayed} of {TOTAL} message(s)")),
        "{text}"
    );
    assert!(
        replayed < TOTAL,
        "the replay finished before the signal: {text}"
    );
    assert!(
        !output.status.success(),
        "an interrupted replay fails: {text}"
    );
    assert!(text.contains("interrupted"), "{text}");

    rabbit.wait_for_count("parking", replayed).await;
    rabbit.wait_for_count("probe_error", TOTAL - replayed).await;
    let moved: HashSet<String> = rabbit
        .take_all("parking")
        .await
        .iter()
        .map(|(p, _)| p.message_id().as_ref().unwrap().to_string())
        .collect();
    let left: Vec<String> = rabbit
        .take_all("probe_error")
        .await
        .iter()
        .map(|(p, _)| p.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(moved.len() as u32, replayed, "no copy twice in parking");
    assert!(left.iter().all(|id| !moved.contains(id)), "nothing in both");
    assert_eq!(moved.len() + left.len(), TOTAL as usize);
    let kept_order: Vec<&String> = published.iter().filter(|id| !moved.contains(*id)).collect();
    assert_eq!(
        left.iter().collect::<Vec<_>>(),
        kept_order,
        "what is left keeps its order"
    );
}
