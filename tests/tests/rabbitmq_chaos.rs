//! Courier on the real RabbitMQ while things go wrong: connections closed, the broker app
//! restarted, a host killed, a host stopped with SIGTERM. In every case every message is
//! handled at least once and none is lost. These tests restart the broker, so they run one at
//! a time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_host::{Host, PublishRequest};
use courier_tests::*;
use serde_json::json;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// How long a chaos test may take to see every message.
const CHAOS_PATIENCE: Duration = Duration::from_secs(120);

/// Publishes `Slow { n, ms }` for n in `range`, retrying each until the broker takes it.
fn publish_slow(
    host: &Arc<Host>,
    range: std::ops::Range<u64>,
    ms: u64,
) -> tokio::task::JoinHandle<()> {
    let host = Arc::clone(host);
    tokio::spawn(async move {
        for n in range {
            loop {
                let request = PublishRequest::new(test_type("Slow"), json!({"n": n, "ms": ms}));
                match host.submit(request, "test").await {
                    Ok(_) => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    })
}

/// Counts `SlowDone` by `n` until every n in 0..`total` was seen, running `interrupt` once
/// `interrupt_after` distinct ones have been seen. Returns how often each n was seen.
async fn collect_done(
    tap: &mut Tap,
    total: u64,
    interrupt_after: u64,
    mut interrupt: impl FnMut(),
) -> BTreeMap<u64, u32> {
    let started = Instant::now();
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let mut interrupted = false;
    while (seen.len() as u64) < total {
        assert!(
            started.elapsed() < CHAOS_PATIENCE,
            "only {} of {total} messages were handled in {CHAOS_PATIENCE:?}",
            seen.len()
        );
        if let Some(done) = tap.try_next(Duration::from_secs(1)).await {
            *seen
                .entry(body_json(&done)["n"].as_u64().unwrap())
                .or_default() += 1;
        }
        if !interrupted && seen.len() as u64 >= interrupt_after {
            interrupted = true;
            interrupt();
        }
    }
    seen
}

fn duplicates(seen: &BTreeMap<u64, u32>) -> u32 {
    seen.values().map(|count| count - 1).sum()
}

/// Runs 1,500 slow messages through a host on `vhost`, calling `interrupt` once a quarter are
/// handled; every message must still be handled.
async fn survives(vhost: &Vhost, interrupt: impl FnMut()) {
    let host = amqp_host_with(vhost, "[plugins.probe]\nconcurrency = 8", &["probe"]).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("SlowDone")]).await;
    let total = 1500;
    let publisher = publish_slow(&host, 0..total, 2);
    let seen = collect_done(&mut tap, total, total / 4, interrupt).await;
    publisher.await.unwrap();
    println!(
        "handled {} of {total}; {} reached the tap more than once (at least once, as promised)",
        seen.len(),
        duplicates(&seen)
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_every_connection_mid_stream_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let vhost = Vhost::new("close-connections");
    let name = vhost.name.clone();
    survives(&vhost, || {
        rabbitmqctl(&["close_all_connections", "--vhost", &name, "chaos test"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_broker_mid_stream_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let vhost = Vhost::new("broker-restart");
    survives(&vhost, || {
        rabbitmqctl(&["stop_app"]);
        std::thread::sleep(Duration::from_secs(1));
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    })
    .await;
}

/// A plugins directory with the probe at concurrency 4, a client host to publish and watch,
/// and a tap on `SlowDone`.
async fn slow_setup(vhost: &Vhost, test: &str) -> (std::path::PathBuf, Arc<Host>, Tap) {
    let dir = plugins_dir(test, &["probe"]);
    std::fs::write(dir.join("probe.toml"), "concurrency = 4\n").unwrap();
    let client = amqp_host_with(vhost, "", &[]).await;
    let tap = Tap::new(&client, "tap", &[&test_type("SlowDone")]).await;
    (dir, client, tap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_the_queue_and_killing_one_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let vhost = Vhost::new("competing");
    let (dir, client, mut tap) = slow_setup(&vhost, "competing").await;
    // The plugin's queue exists before anything is published to it.
    let mut first = spawn_host(&vhost, &dir, "first");
    let second = spawn_host(&vhost, &dir, "second");
    wait_for_consumers(&vhost, "probe", 2).await;

    let total = 2000;
    let publisher = publish_slow(&client, 0..total, 5);
    let mut restarted = None;
    let seen = collect_done(&mut tap, total, total / 3, || {
        first.0.kill().unwrap();
        first.0.wait().unwrap();
        restarted = Some(spawn_host(&vhost, &dir, "restarted"));
    })
    .await;
    publisher.await.unwrap();
    terminate(second);
    terminate(restarted.unwrap());
    let by_second = handled_by(&dir, "second");
    println!(
        "handled {} of {total}; the surviving host handled {by_second}, the restarted one {}; {} redelivered after the kill",
        seen.len(),
        handled_by(&dir, "restarted"),
        duplicates(&seen)
    );
    assert!(
        by_second > 0 && by_second < total,
        "the hosts shared the load"
    );
    client.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SIGTERM stops taking messages, finishes those in flight, confirms their follow-ups and acks
/// them: after a restart every message is handled, and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_without_losing_or_repeating_a_message() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let vhost = Vhost::new("sigterm");
    let (dir, client, mut tap) = slow_setup(&vhost, "sigterm").await;
    let mut host = Some(spawn_host(&vhost, &dir, "before"));
    wait_for_consumers(&vhost, "probe", 1).await;

    let total = 400;
    publish_slow(&client, 0..total, 20).await.unwrap();
    let mut after = None;
    let seen = collect_done(&mut tap, total, total / 4, || {
        terminate(host.take().unwrap());
        after = Some(spawn_host(&vhost, &dir, "after"));
    })
    .await;
    // Anything handled twice would arrive now.
    tap.expect_nothing(Duration::from_secs(1)).await;
    terminate(after.unwrap());
    let (before, after) = (handled_by(&dir, "before"), handled_by(&dir, "after"));
    println!("handled {before} before SIGTERM and {after} after the restart, of {total}");
    assert_eq!(
        duplicates(&seen),
        0,
        "no message is handled again after its ack"
    );
    assert_eq!(before + after, total);
    client.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What the recoverability chaos test saw, by order number.
#[derive(Debug, Default)]
struct Ledger {
    /// Order → the distinct ids of its `ChaosDone` (a sink that applies each id once).
    done: BTreeMap<u64, std::collections::BTreeSet<String>>,
    /// Copies of `ChaosDone` that arrived again with an id already applied.
    redelivered_done: u64,
    /// Failed message id → the distinct ids of its fault events.
    faults: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Ledger {
    fn take(&mut self, envelope: &courier_host::Envelope) {
        if envelope.message_type == courier_host::recoverability::FAULT_TYPE {
            let failed = body_json(envelope)["message_id"]
                .as_str()
                .unwrap()
                .to_owned();
            self.faults
                .entry(failed)
                .or_default()
                .insert(envelope.id.clone());
        } else {
            let n = body_json(envelope)["n"].as_u64().unwrap();
            if !self.done.entry(n).or_default().insert(envelope.id.clone()) {
                self.redelivered_done += 1;
            }
        }
    }
}

/// 10,000 orders on RabbitMQ with transient failures and a poison subset, while the host is
/// killed with SIGKILL twice, every connection is closed once and the broker app restarts
/// once. Every order ends handled or in the error queue with its reason; none is lost; no
/// order's effect is applied twice; each dead-lettered message raises exactly one fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recoverability_holds_through_kills_disconnects_and_a_broker_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let vhost = Vhost::new("recoverability-chaos");
    let dir = plugins_dir("recoverability-chaos", &["probe"]);
    std::fs::write(
        dir.join("probe.toml"),
        "concurrency = 8\nimmediate_retries = 1\nredelivery_delays_ms = [200, 500]\n\
         [config]\ntransient_failure_percent = 10\n",
    )
    .unwrap();
    let client = amqp_host_with(&vhost, "", &[]).await;
    let mut sink = Tap::new(
        &client,
        "sink",
        &[
            &test_type("ChaosDone"),
            courier_host::recoverability::FAULT_TYPE,
        ],
    )
    .await;
    let mut host = spawn_host_with_data(&vhost, &dir, "run-1", "data");
    wait_for_consumers(&vhost, "probe", 1).await;

    let total: u64 = 10_000;
    let is_poison = |n: u64| n % 250 == 7;
    let publisher = {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            let orders: Vec<u64> = (0..total).collect();
            for batch in orders.chunks(200) {
                let outbound: Vec<_> = batch
                    .iter()
                    .map(|&n| {
                        PublishRequest::new(
                            test_type("Chaos"),
                            json!({"n": n, "poison": is_poison(n)}),
                        )
                        .into_outbound("chaos-test")
                        .unwrap()
                    })
                    .collect();
                // A batch refused during a disconnect is sent again: the same ids.
                while client.transport().dispatch(outbound.clone()).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
    };

    let mut ledger = Ledger::default();
    let started = Instant::now();
    let mut step = 0;
    let mut runs = 1;
    let settled = |ledger: &Ledger| (ledger.done.len() + ledger.faults.len()) as u64;
    while settled(&ledger) < total {
        if started.elapsed() > Duration::from_secs(300) {
            let missing: Vec<u64> = (0..total)
                .filter(|n| !ledger.done.contains_key(n))
                .filter(|n| !is_poison(*n))
                .take(20)
                .collect();
            let queues = rabbitmqctl(&[
                "list_queues",
                "-p",
                &vhost.name,
                "name",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
            ]);
            panic!(
                "only {} of {total} orders settled in 300 s; not done (poison aside): {missing:?}\n{queues}",
                settled(&ledger)
            );
        }
        if let Some(envelope) = sink.try_next(Duration::from_secs(1)).await {
            ledger.take(&envelope);
        }
        let progress = settled(&ledger) * 100 / total;
        let due = [15, 35, 55, 75];
        if step < due.len() && progress >= due[step] {
            match step {
                0 | 3 => {
                    host.0.kill().unwrap();
                    host.0.wait().unwrap();
                    runs += 1;
                    host = spawn_host_with_data(&vhost, &dir, &format!("run-{runs}"), "data");
                }
                1 => {
                    rabbitmqctl(&[
                        "close_all_connections",
                        "--vhost",
                        &vhost.name,
                        "chaos test",
                    ]);
                }
                _ => {
                    rabbitmqctl(&["stop_app"]);
                    std::thread::sleep(Duration::from_secs(1));
                    rabbitmqctl(&["start_app"]);
                    rabbitmqctl(&["await_startup"]);
                }
            }
            println!("chaos step {step} at {progress}% settled");
            step += 1;
        }
    }
    publisher.await.unwrap();
    // Late copies (redeliveries of work whose ack was lost) arrive now, if any.
    while let Some(envelope) = sink.try_next(Duration::from_secs(2)).await {
        ledger.take(&envelope);
    }
    terminate(host);

    let mut errors = Tap::attach(&client, "probe_error").await;
    let mut dead: BTreeMap<u64, (String, String)> = BTreeMap::new();
    while let Some(failed) = errors.try_next(Duration::from_secs(2)).await {
        let n = body_json(&failed)["n"].as_u64().unwrap();
        let reason = failed
            .header(courier_host::recoverability::headers::REASON)
            .unwrap()
            .to_owned();
        dead.insert(n, (failed.id.clone(), reason));
    }

    let lost: Vec<u64> = (0..total)
        .filter(|n| !ledger.done.contains_key(n) && !dead.contains_key(n))
        .collect();
    let applied_twice = ledger.done.values().filter(|ids| ids.len() > 1).count();
    let poison = (0..total).filter(|&n| is_poison(n)).count();
    let poison_dead = dead.keys().filter(|&&n| is_poison(n)).count();
    let faults_per_dead: Vec<usize> = dead
        .values()
        .map(|(id, _)| ledger.faults.get(id).map_or(0, |ids| ids.len()))
        .collect();
    println!("\n  orders published          {total:>6}");
    println!("  completed                 {:>6}", ledger.done.len());
    println!(
        "  in the error queue        {:>6} (poison {poison_dead} of {poison})",
        dead.len()
    );
    println!("  lost                      {:>6}", lost.len());
    println!("  applied twice             {applied_twice:>6}");
    println!("  redelivered copies seen   {:>6}", ledger.redelivered_done);
    println!("  fault events (distinct)   {:>6}", ledger.faults.len());
    println!("  host runs                 {runs:>6}\n");

    assert!(lost.is_empty(), "lost orders: {lost:?}");
    assert_eq!(applied_twice, 0);
    assert_eq!(
        poison_dead, poison,
        "every poison order ends in the error queue"
    );
    assert!(
        dead.values()
            .all(|(_, reason)| reason == "retries-exhausted"),
        "{dead:?}"
    );
    assert!(
        faults_per_dead.iter().all(|&count| count == 1),
        "one fault event per dead-lettered message: {faults_per_dead:?}"
    );
    assert_eq!(
        ledger.faults.len(),
        dead.len(),
        "no fault without a dead letter"
    );
    assert!(
        ledger.done.keys().all(|n| !dead.contains_key(n)),
        "no order both completed and dead-lettered"
    );
    client.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_unready_while_the_broker_is_stopped_and_ready_after() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use courier_host::admin::{AdminState, app};
    use tower::ServiceExt as _;

    let _serial = ONE_AT_A_TIME.lock().await;
    let vhost = Vhost::new("readyz");
    let host = amqp_host_with(&vhost, "", &["probe"]).await;
    let router = app(AdminState {
        host: Arc::clone(&host),
        token: None,
        draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    });
    let ready = |router: axum::Router| async move {
        router
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    };
    let wait_for = |wanted: StatusCode| {
        let router = router.clone();
        async move {
            let deadline = Instant::now() + PATIENCE;
            while ready(router.clone()).await != wanted {
                assert!(Instant::now() < deadline, "/readyz never answered {wanted}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(StatusCode::OK).await;
    tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
        .await
        .unwrap();
    wait_for(StatusCode::SERVICE_UNAVAILABLE).await;
    tokio::task::spawn_blocking(|| {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    })
    .await
    .unwrap();
    wait_for(StatusCode::OK).await;
    // And it works again: a ping is answered.
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    publish(&host, &test_type("Ping"), serde_json::json!({ "n": 1 })).await;
    assert_eq!(body_json(&tap.next().await)["n"], 1);
    host.shutdown().await;
}
