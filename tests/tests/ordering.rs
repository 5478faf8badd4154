//! Ordered plugins: the messages of one session id are handled in order, one at a time, while
//! sessions run in parallel; a failing message holds back its own session only. On the
//! embedded broker with one host, and on the real RabbitMQ with a fleet of `courier run`
//! processes, one of them killed mid-run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_host::transport::Outbound;
use courier_host::{Host, PublishRequest};
use courier_tests::*;
use serde_json::{Value, json};

/// Keys and steps per key of the large runs.
const KEYS: u64 = 200;
const STEPS: u64 = 100;

/// How long a large run may take to see every step.
const RUN_PATIENCE: Duration = Duration::from_secs(240);

/// `Step` for `key` and `seq`, with a handler delay of 0 to 2 ms that varies with both.
fn step(key: u64, seq: u64, session: bool) -> Outbound {
    let mut request = PublishRequest::new(
        test_type("Step"),
        json!({"key": key_name(key), "seq": seq, "ms": (key * 7 + seq * 13) % 3, "fail_until": 0}),
    );
    if session {
        request.session_id = Some(key_name(key));
    }
    request.into_outbound("test").unwrap()
}

fn key_name(key: u64) -> String {
    format!("key-{key}")
}

/// Publishes every step, round-robin over the keys so sessions interleave in the queue, in
/// batches the broker confirms at once.
fn publish_steps(host: &Arc<Host>, session: bool) -> tokio::task::JoinHandle<()> {
    let host = Arc::clone(host);
    tokio::spawn(async move {
        let mut batch = Vec::new();
        for seq in 0..STEPS {
            for key in 0..KEYS {
                batch.push(step(key, seq, session));
                if batch.len() == 500 {
                    dispatch_retrying(&host, std::mem::take(&mut batch)).await;
                }
            }
        }
        dispatch_retrying(&host, batch).await;
    })
}

async fn dispatch_retrying(host: &Host, batch: Vec<Outbound>) {
    while let Err(error) = host.transport().dispatch(batch.clone()).await {
        eprintln!("publishing a batch again: {error:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the tap saw: per key, the next step expected and when the last one finished. Fails
/// the test at the first step handled before the one before it, or overlapping it.
#[derive(Default)]
struct Sink {
    next: HashMap<String, u64>,
    finished: HashMap<String, u64>,
    /// Every handling, as (started, finished) in microseconds.
    spans: Vec<(u64, u64)>,
    handled: u64,
    /// Steps handled again (a redelivery after a host died before its ack).
    again: u64,
    /// Steps handled by each host (the probe's config value `host`).
    by_host: HashMap<String, u64>,
    /// The hosts of the last steps handled, newest last.
    recent: std::collections::VecDeque<String>,
}

impl Sink {
    fn take(&mut self, stepped: &Value) {
        let key = stepped["key"].as_str().unwrap().to_owned();
        let seq = stepped["seq"].as_u64().unwrap();
        let started = stepped["started_us"].as_u64().unwrap();
        let finished = stepped["finished_us"].as_u64().unwrap();
        self.spans.push((started, finished));
        self.handled += 1;
        let host = stepped["host"].as_str().unwrap_or_default().to_owned();
        *self.by_host.entry(host.clone()).or_default() += 1;
        self.recent.push_back(host);
        if self.recent.len() > 500 {
            self.recent.pop_front();
        }
        let next = self.next.entry(key.clone()).or_insert(0);
        if seq < *next {
            self.again += 1;
            return;
        }
        assert_eq!(
            seq, *next,
            "{key}: step {seq} was handled before step {next}"
        );
        *next += 1;
        if let Some(before) = self.finished.get(&key) {
            assert!(
                started >= *before,
                "{key}: step {seq} started at {started} µs, before step {} finished at {before} µs",
                seq - 1
            );
        }
        self.finished.insert(key, finished);
    }

    fn complete(&self, keys: u64, steps: u64) -> bool {
        self.next.len() as u64 == keys && self.next.values().all(|next| *next == steps)
    }

    /// Of the hosts still running, the one that handled the most of the last steps, then the
    /// most of all. The tap can lag the hosts, so its recent steps may still be mostly a
    /// killed host's: the dead are never chosen.
    fn busiest_host<'a>(&self, running: impl Iterator<Item = &'a String>) -> String {
        running
            .max_by_key(|host| {
                let recent = self.recent.iter().filter(|seen| seen == host).count();
                (recent, self.by_host.get(*host).copied().unwrap_or_default())
            })
            .expect("a host is running")
            .clone()
    }

    /// The most handler calls that ran at the same moment.
    fn most_at_once(&self) -> usize {
        let mut edges: Vec<(u64, i32)> = self
            .spans
            .iter()
            .flat_map(|(started, finished)| [(*started, 1), (*finished, -1)])
            .collect();
        // At equal times the end comes first: touching spans do not overlap.
        edges.sort();
        let mut now = 0_i32;
        let mut most = 0_i32;
        for (_, change) in edges {
            now += change;
            most = most.max(now);
        }
        most as usize
    }

    /// Reads the tap until every key has all its steps, running `interrupt` (with the index
    /// of the threshold and what was seen so far) once as each of `interrupt_at` steps have
    /// been handled.
    async fn collect(
        &mut self,
        tap: &mut Tap,
        keys: u64,
        steps: u64,
        interrupt_at: &[u64],
        mut interrupt: impl FnMut(usize, &Sink),
    ) {
        let started = Instant::now();
        let mut interrupted = 0;
        while !self.complete(keys, steps) {
            assert!(
                started.elapsed() < RUN_PATIENCE,
                "only {} of {} steps handled in {RUN_PATIENCE:?}",
                self.handled - self.again,
                keys * steps
            );
            if let Some(stepped) = tap.try_next(Duration::from_secs(1)).await {
                self.take(&body_json(&stepped));
            }
            if interrupt_at
                .get(interrupted)
                .is_some_and(|at| self.handled >= *at)
            {
                interrupt(interrupted, self);
                interrupted += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_handled_in_order_while_they_run_in_parallel() {
    // The key comes from a rule of the configuration: the steps are published without one.
    let host = host_with(
        r#"
[[session_keys]]
types = "urn:message:Test:Step"
field = "key"

[plugins.probe]
ordered = true
concurrency = 8
"#,
        &["probe"],
    )
    .await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Stepped")]).await;
    let publisher = publish_steps(&host, false);
    let mut sink = Sink::default();
    sink.collect(&mut tap, KEYS, STEPS, &[], |_, _| {}).await;
    publisher.await.unwrap();
    let most = sink.most_at_once();
    println!(
        "{} steps of {KEYS} keys handled in order; up to {most} handler calls at once",
        sink.handled
    );
    assert_eq!(sink.again, 0, "the embedded broker handled a step twice");
    assert!(most > 1, "the sessions never ran in parallel");
    host.shutdown().await;
}

/// Steps of five keys, ten each; `key-a`'s step 2 fails twice before it succeeds, and
/// `key-z`'s step 1 fails until it is dead-lettered. Checks that each key stays in order, that
/// the other keys finish while `key-a` is held, and what reached the error queue.
async fn a_failing_message_holds_back_its_own_session(host: &Host, client: &Host) {
    let mut tap = Tap::new(client, "tap", &[&test_type("Stepped")]).await;
    let keys = ["key-a", "key-b", "key-c", "key-d", "key-z"];
    for seq in 0..10_u64 {
        for key in keys {
            let fail_until = match (key, seq) {
                ("key-a", 2) => 3,
                ("key-z", 1) => 1000,
                _ => 0,
            };
            let mut request = PublishRequest::new(
                test_type("Step"),
                json!({"key": key, "seq": seq, "ms": 0, "fail_until": fail_until}),
            );
            request.session_id = Some(key.to_owned());
            // Sent to the plugin's queue by name: on RabbitMQ that is the ordered endpoint's
            // exchange, which the client host never declared.
            request.destination = Some("probe".to_owned());
            client.submit(request, "test").await.unwrap();
        }
    }
    let mut sink = Sink::default();
    let mut seen: HashMap<(String, u64), Value> = HashMap::new();
    // `key-z`'s step 1 is never handled: it goes to the error queue, and its step 2 is next.
    while seen.len() < keys.len() * 10 - 1 {
        let stepped = body_json(&tap.next().await);
        let key = stepped["key"].as_str().unwrap().to_owned();
        let seq = stepped["seq"].as_u64().unwrap();
        if key == "key-z" && seq >= 2 {
            // Seen by the sink as the step after 0.
            let mut shifted = stepped.clone();
            shifted["seq"] = json!(seq - 1);
            sink.take(&shifted);
        } else {
            sink.take(&stepped);
        }
        seen.insert((key, seq), stepped);
    }
    assert_eq!(
        sink.next["key-z"], 9,
        "key-z's steps after the dead-lettered one"
    );
    let held = &seen[&("key-a".to_owned(), 2)];
    assert_eq!(
        held["attempt"], 3,
        "key-a's step 2 succeeds on its third call"
    );
    let released = held["started_us"].as_u64().unwrap();
    for key in ["key-b", "key-c", "key-d"] {
        let last = &seen[&(key.to_owned(), 9)];
        assert!(
            last["finished_us"].as_u64().unwrap() < released,
            "{key} waited for key-a's failing step"
        );
    }
    tap.expect_nothing(Duration::from_millis(300)).await;
    let summary = host.summary();
    assert_eq!(
        summary.by_type[&test_type("Step")].dead_lettered,
        1,
        "key-z's step 1 went to the error queue"
    );
}

const HOLDING: &str = r#"
[plugins.probe]
ordered = true
concurrency = 4
immediate_retries = 0
redelivery_delays_ms = [250, 250]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_message_holds_back_its_session_and_no_other() {
    let host = host_with(HOLDING, &["probe"]).await;
    a_failing_message_holds_back_its_own_session(&host, &host).await;
    let failed = host.error_messages("probe").unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(body_json(&failed[0])["key"], "key-z");
    assert_eq!(body_json(&failed[0])["seq"], 1);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_an_ordered_endpoint_is_partitioned_and_holds_a_failing_session() {
    let vhost = Vhost::new("ordered");
    let host = amqp_host_with(&vhost, &format!("{HOLDING}partitions = 3\n"), &["probe"]).await;
    let exchanges = rabbitmqctl(&["list_exchanges", "-p", &vhost.name, "name", "type"]);
    assert!(
        exchanges
            .lines()
            .any(|line| line == "probe\tx-consistent-hash"),
        "no consistent-hash exchange `probe`:\n{exchanges}"
    );
    let queues = rabbitmqctl(&["list_queues", "-p", &vhost.name, "name", "arguments"]);
    for partition in ["probe.0", "probe.1", "probe.2"] {
        let line = queues
            .lines()
            .find(|line| line.starts_with(&format!("{partition}\t")))
            .unwrap_or_else(|| panic!("no partition {partition}:\n{queues}"));
        assert!(
            line.contains("x-single-active-consumer"),
            "{partition} has no single active consumer: {line}"
        );
    }
    assert!(
        !queues.lines().any(|line| line.starts_with("probe\t")),
        "an ordered endpoint has no single input queue:\n{queues}"
    );
    // A host that knows nothing of the endpoint sends to it by name.
    let client = amqp_host_with(&vhost, "", &[]).await;
    a_failing_message_holds_back_its_own_session(&host, &client).await;
    client.shutdown().await;
    // A delayed send by name, from another host that never saw the endpoint, reaches it too:
    // a holding queue cannot be returned, so the sender finds out what the name is first.
    let late = amqp_host_with(&vhost, "", &[]).await;
    let mut tap = Tap::new(&late, "late-tap", &[&test_type("Stepped")]).await;
    let mut request = PublishRequest::new(
        test_type("Step"),
        json!({"key": "key-late", "seq": 0, "ms": 0, "fail_until": 0}),
    );
    request.session_id = Some("key-late".to_owned());
    request.destination = Some("probe".to_owned());
    request.delay_ms = Some(200);
    late.submit(request, "test").await.unwrap();
    assert_eq!(body_json(&tap.next().await)["key"], "key-late");
    late.shutdown().await;
    host.shutdown().await;
}

/// The probe, ordered, at concurrency 4 over 8 partitions.
fn ordered_plugins_dir(test: &str) -> std::path::PathBuf {
    let dir = plugins_dir(test, &["probe"]);
    std::fs::write(
        dir.join("probe.toml"),
        "ordered = true\nconcurrency = 4\npartitions = 8\n",
    )
    .unwrap();
    dir
}

/// A `courier run` process whose probe says it is `name` in what it publishes.
fn spawn_named(vhost: &Vhost, dir: &std::path::Path, name: &str) -> HostProcess {
    let config = format!("[plugins.probe.config]\nhost = \"{name}\"\n");
    spawn_host_with_config(vhost, dir, name, &format!("{name}-data"), &config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_three_keeps_every_session_in_order_through_a_kill_and_a_stop() {
    let vhost = Vhost::new("ordered-fleet");
    let dir = ordered_plugins_dir("ordered-fleet");
    let mut hosts: HashMap<String, HostProcess> = ["one", "two", "three"]
        .into_iter()
        .map(|name| (name.to_owned(), spawn_named(&vhost, &dir, name)))
        .collect();
    for partition in 0..8 {
        wait_for_consumers(&vhost, &format!("probe.{partition}"), 3).await;
    }
    let client = amqp_host_with(&vhost, "", &[]).await;
    let mut tap = Tap::new(&client, "tap", &[&test_type("Stepped")]).await;
    let publisher = publish_steps(&client, true);
    let mut sink = Sink::default();
    let (mut killed, mut stopped) = (String::new(), String::new());
    // The running host that handled the most of the last steps the tap saw is most likely
    // serving partitions. After a third of the steps it is killed and a new host started;
    // after two thirds the busiest then is stopped with SIGTERM, handing its partitions over
    // as it drains.
    let thirds = [KEYS * STEPS / 3, KEYS * STEPS * 2 / 3];
    sink.collect(&mut tap, KEYS, STEPS, &thirds, |index, sink| {
        let busiest = sink.busiest_host(hosts.keys());
        let mut host = hosts.remove(&busiest).unwrap();
        if index == 0 {
            host.0.kill().unwrap();
            host.0.wait().unwrap();
            hosts.insert(
                "restarted".to_owned(),
                spawn_named(&vhost, &dir, "restarted"),
            );
            killed = busiest;
        } else {
            terminate(host);
            stopped = busiest;
        }
    })
    .await;
    publisher.await.unwrap();
    for (_, host) in hosts.drain() {
        terminate(host);
    }
    let mut by_host: Vec<(String, u64)> = sink.by_host.clone().into_iter().collect();
    by_host.sort();
    println!(
        "{} steps of {KEYS} keys handled in order; by host {by_host:?}, `{killed}` killed after \
         a third, `{stopped}` stopped with SIGTERM after two thirds; {} handled again; up to {} \
         handler calls at once",
        sink.handled,
        sink.again,
        sink.most_at_once()
    );
    assert!(
        by_host.iter().filter(|(_, handled)| *handled > 0).count() >= 3,
        "the partitions were not shared among the hosts: {by_host:?}"
    );
    client.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An endpoint switched between ordered and unordered keeps its old queue or exchange, and
/// what waits there, but the old shape stops receiving its types, both ways round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_switching_an_endpoint_between_shapes_unbinds_the_old_one() {
    use courier_host::Transport as _;
    use courier_host::transport::amqp::{AmqpTransport, partition_queues};
    use courier_host::transport::{Endpoint, Route};

    let vhost = Vhost::new("shapes");
    let url = vhost.url();
    let connect = || AmqpTransport::connect(&url, Default::default());
    let (declaring, counting) = (connect().await.unwrap(), connect().await.unwrap());
    let types = [test_type("ShapeA"), test_type("ShapeB")];
    let endpoint = |partitions| Endpoint {
        queue: "shapes".into(),
        subscriptions: types.to_vec(),
        partitions,
    };
    let publish = |message_type: &String| Outbound {
        route: Route::Publish,
        envelope: courier_host::Envelope::new(message_type, "application/json", b"{}".to_vec()),
        delay: None,
    };
    let plain = vec!["shapes".to_owned()];
    let partitions = partition_queues("shapes", 2);
    let counts = || async {
        (
            counting.ready_count(&plain).await.unwrap(),
            counting.ready_count(&partitions).await.unwrap(),
        )
    };

    // Declares the endpoint in a shape, then publishes one message of the types given.
    let declare_then_publish = |partitions, types: &[String]| {
        let messages: Vec<Outbound> = types.iter().map(publish).collect();
        let declaring = &declaring;
        let endpoint = endpoint(partitions);
        async move {
            declaring.declare_endpoint(&endpoint).await.unwrap();
            declaring.dispatch(messages).await.unwrap();
        }
    };

    declare_then_publish(0, &types[..1]).await;
    declare_then_publish(2, &types).await;
    assert_eq!(
        counts().await,
        (1, 2),
        "ordered now: the plain queue keeps its message and gets no more"
    );
    declare_then_publish(0, &types).await;
    assert_eq!(
        counts().await,
        (3, 2),
        "unordered again: the partitions keep theirs and get no more"
    );
    declaring.close().await;
    counting.close().await;
}
