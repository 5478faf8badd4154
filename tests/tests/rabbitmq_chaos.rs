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
use std::path::Path;
use std::process::{Child, Command, Stdio};
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

/// A `courier run` process, killed if the test ends while it still runs.
struct HostProcess(Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `courier run` as its own process, on `vhost`, serving the plugins in `dir`.
fn spawn_host(vhost: &Vhost, dir: &Path, name: &str) -> HostProcess {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new(courier_bin())
        .args(["run", "--no-admin", "--broker", &vhost.url(), "--plugins"])
        .arg(dir)
        .arg("--summary")
        .arg(dir.join(format!("{name}.json")))
        .env("COURIER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(HostProcess)
        .unwrap()
}

/// Waits until `queue` has `consumers` consumers.
async fn wait_for_consumers(vhost: &Vhost, queue: &str, consumers: usize) {
    let expected = format!("{queue}\t{consumers}");
    let deadline = Instant::now() + PATIENCE;
    while !rabbitmqctl(&["list_queues", "-p", &vhost.name, "name", "consumers"])
        .lines()
        .any(|line| line == expected)
    {
        assert!(
            Instant::now() < deadline,
            "{queue} never had {consumers} consumer(s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// Sends SIGTERM and waits for a clean exit.
fn terminate(mut host: HostProcess) {
    let status = Command::new("kill")
        .args(["-TERM", &host.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = host.0.wait().unwrap();
    assert!(exit.success(), "the host exited with {exit} after SIGTERM");
}

fn handled_by(dir: &Path, name: &str) -> u64 {
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    summary["by_plugin"]["probe"]["handled"]
        .as_u64()
        .unwrap_or(0)
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
