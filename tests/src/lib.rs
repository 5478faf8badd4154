//! Helpers shared by the workspace tests: where the compiled plugins are, a host factory on
//! the embedded broker, and a tap that consumes what plugins publish.
//!
//! The plugins are built by `cargo xtask plugins` (which `cargo xtask test` runs first); the
//! tests never build them themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a failed expectation should stop the test with its message"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_host::transport::{Consumer, Endpoint};
use courier_host::{Envelope, Host, HostConfig, PublishRequest};
use serde::de::DeserializeOwned;

/// How long a test waits for a message before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The compiled plugin `name` (`probe`, `payment`, …), or `<language>/<name>` for a plugin
/// in another language (`python/inventory`, `js/shipping`, `c/notification`).
pub fn plugin_file(name: &str) -> PathBuf {
    if let Some((language, name)) = name.split_once('/') {
        return polyglot_plugin_file(language, name);
    }
    let dir = std::env::var_os("COURIER_PLUGIN_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release"),
        PathBuf::from,
    );
    let file = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        file.is_file(),
        "{} is missing: build the plugins first with `cargo xtask plugins` (or run the tests with `cargo xtask test`)",
        file.display()
    );
    file
}

/// The compiled Python, JavaScript or C plugin `name` (`language` is `python`, `js` or `c`), built
/// by `cargo xtask plugins` into `target/polyglot/<language>/`.
pub fn polyglot_plugin_file(language: &str, name: &str) -> PathBuf {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/polyglot")
        .join(language)
        .join(format!("{name}.wasm"));
    assert!(
        file.is_file(),
        "{} is missing: build the plugins first with `cargo xtask plugins` (or run the tests with `cargo xtask test`)",
        file.display()
    );
    file
}

/// Logs go to the test's output when `COURIER_TEST_LOG` is set (e.g. `debug`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("COURIER_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A host on the embedded broker with `config` (TOML), serving the named plugins.
pub async fn host_with(config: &str, plugins: &[&str]) -> Arc<Host> {
    init_logging();
    let mut config = HostConfig::from_toml(config).unwrap();
    config.admin.enabled = false;
    use_test_cache(&mut config);
    let host = Arc::new(Host::new(config).await.unwrap());
    for name in plugins {
        host.load_plugin(&plugin_file(name)).await.unwrap();
    }
    host
}

/// Test hosts share one cache of compiled plugins, outside the source tree, unless the test
/// chose its own.
pub fn use_test_cache(config: &mut HostConfig) {
    if config.engine.cache_dir == HostConfig::default().engine.cache_dir {
        config.engine.cache_dir = test_cache_dir();
    }
}

/// Engine settings for a test that builds an engine itself: the default, with the tests' cache.
pub fn test_engine_config() -> courier_host::config::EngineConfig {
    courier_host::config::EngineConfig {
        cache_dir: test_cache_dir(),
        ..Default::default()
    }
}

/// The cache of compiled plugins the tests share (wasmtime's cache takes concurrent users).
pub fn test_cache_dir() -> PathBuf {
    std::env::temp_dir().join("courier-test-cache")
}

/// Publishes `body` (JSON, sent as MessagePack) as `message_type`; returns the message id.
pub async fn publish(host: &Host, message_type: &str, body: serde_json::Value) -> String {
    host.submit(PublishRequest::new(message_type, body), "test")
        .await
        .unwrap()
}

/// Sends `body` as `message_type` to the queue `destination`; returns the message id.
pub async fn send(
    host: &Host,
    destination: &str,
    message_type: &str,
    body: serde_json::Value,
) -> String {
    let mut request = PublishRequest::new(message_type, body);
    request.destination = Some(destination.to_owned());
    host.submit(request, "test").await.unwrap()
}

/// Checks `expired = "drop"` on the `probe` plugin of `host`: a `Ping` sent after its expiry
/// time and a `Ping` found in `probe_expired` (where the broker puts what expires in the
/// queue) are both dropped and counted as expired, and neither is handled.
pub async fn assert_expired_messages_are_dropped(host: &Host) {
    let ping = test_type("Ping");
    let mut tap = Tap::new(host, "tap", &[&test_type("Pong")]).await;
    let mut stale = PublishRequest::new(&ping, serde_json::json!({"n": 1}))
        .into_outbound("test")
        .unwrap();
    stale.envelope.expires_at_ms = Some(courier_host::envelope::now_ms() - 1_000);
    host.dispatch(stale).await.unwrap();
    send(host, "probe_expired", &ping, serde_json::json!({"n": 2})).await;
    wait_until("both messages are counted as expired", || {
        host.summary().of(&ping).expired == 2
    })
    .await;
    let left = host
        .transport()
        .ready_count(&["probe_expired".to_owned()])
        .await
        .unwrap();
    assert_eq!(left, 0, "nothing is kept in probe_expired");
    assert_eq!(host.summary().of(&ping).handled, 0);
    tap.expect_nothing(Duration::from_millis(200)).await;
}

/// A queue of the test's own, bound to some message types: sees what the plugins publish.
#[allow(
    missing_debug_implementations,
    reason = "holds a boxed consumer with nothing to show"
)]
pub struct Tap {
    consumer: Box<dyn Consumer>,
}

impl Tap {
    pub async fn new(host: &Host, queue: &str, message_types: &[&str]) -> Tap {
        let endpoint = Endpoint {
            queue: queue.to_owned(),
            subscriptions: message_types.iter().map(|t| (*t).to_owned()).collect(),
            partitions: 0,
        };
        host.transport().declare_endpoint(&endpoint).await.unwrap();
        let consumer = host.transport().consume(queue, 1000).await.unwrap();
        Tap { consumer }
    }

    /// Consumes a queue that already exists (a dead-letter queue, say).
    pub async fn attach(host: &Host, queue: &str) -> Tap {
        Tap {
            consumer: host.transport().consume(queue, 1000).await.unwrap(),
        }
    }

    /// The next message, if one arrives within `wait`.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Envelope> {
        let delivery = tokio::time::timeout(wait, self.consumer.next())
            .await
            .ok()??;
        let envelope = delivery.envelope.clone();
        let _ = delivery.acker.ack().await;
        Some(envelope)
    }

    /// The next message, acked; fails the test after [`PATIENCE`].
    pub async fn next(&mut self) -> Envelope {
        let delivery = tokio::time::timeout(PATIENCE, self.consumer.next())
            .await
            .expect("no message reached the tap in time")
            .expect("the tap's consumer closed");
        let envelope = delivery.envelope.clone();
        // After a reconnection an ack can fail; the broker then delivers the message again,
        // which tests that count at-least-once delivery allow for.
        let _ = delivery.acker.ack().await;
        envelope
    }

    /// The next `n` messages.
    pub async fn take(&mut self, n: usize) -> Vec<Envelope> {
        let mut messages = Vec::with_capacity(n);
        for _ in 0..n {
            messages.push(self.next().await);
        }
        messages
    }

    /// Asserts that nothing arrives within `wait`.
    pub async fn expect_nothing(&mut self, wait: Duration) {
        if let Ok(Some(delivery)) = tokio::time::timeout(wait, self.consumer.next()).await {
            panic!(
                "expected no message, got {} ({})",
                delivery.envelope.message_type, delivery.envelope.id
            );
        }
    }
}

/// Waits until the queue holds `n` messages, then takes them out (embedded broker only).
pub async fn drain_queue(host: &Host, queue: &str, n: usize) -> Vec<Envelope> {
    let memory = host
        .memory_broker()
        .expect("the test host runs on the embedded broker");
    let deadline = Instant::now() + PATIENCE;
    while memory.depth(queue) < n {
        assert!(
            Instant::now() < deadline,
            "queue {queue} holds {} message(s), expected {n}",
            memory.depth(queue)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    memory.drain(queue)
}

/// Decodes a MessagePack or JSON body as `T`.
pub fn decode<T: DeserializeOwned>(envelope: &Envelope) -> T {
    if envelope.content_type.starts_with("application/json") {
        serde_json::from_slice(&envelope.body).unwrap()
    } else {
        rmp_serde::from_slice(&envelope.body).unwrap()
    }
}

/// The body as a JSON value, whatever its encoding.
pub fn body_json(envelope: &Envelope) -> serde_json::Value {
    decode(envelope)
}

/// `urn:message:Test:<name>`.
pub fn test_type(name: &str) -> String {
    format!("urn:message:Test:{name}")
}

/// The real RabbitMQ on this machine: a virtual host of the test's own, removed afterwards.
#[derive(Debug)]
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub fn new(test: &str) -> Vhost {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("courier-test-{test}-{}-{nanos}", std::process::id());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Vhost { name }
    }

    /// The broker URL for this virtual host.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// Runs `rabbitmqctl`; fails the test with its output if it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed (the RabbitMQ server runs on this machine)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

static NEXT_DATA_DIR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `courier-test-inbox-<pid>` in the temporary directory. The first call removes those of
/// test processes that have ended, so runs do not pile up directories.
fn inbox_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("courier-test-inbox-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        tmp.join(format!("courier-test-inbox-{}", std::process::id()))
    })
    .clone()
}

/// A host on RabbitMQ (virtual host `vhost`) with `config` (TOML), serving the named plugins.
pub async fn amqp_host_with(vhost: &Vhost, config: &str, plugins: &[&str]) -> Arc<Host> {
    init_logging();
    let mut config = HostConfig::from_toml(config).unwrap();
    config.admin.enabled = false;
    use_test_cache(&mut config);
    config.broker = Some(vhost.url());
    // Each host keeps its inbox apart, under a directory of this test process.
    if config.inbox.data_dir == HostConfig::default().inbox.data_dir {
        config.inbox.data_dir = inbox_root().join(
            NEXT_DATA_DIR
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                .to_string(),
        );
    }
    let host = Arc::new(Host::new(config).await.unwrap());
    for name in plugins {
        host.load_plugin(&plugin_file(name)).await.unwrap();
    }
    host
}

/// A host serving the plugins directory `dir` and watching it, on the embedded broker or on
/// RabbitMQ (`vhost`). The watch ends when the returned watcher is dropped.
pub async fn watched_host(
    config: &str,
    dir: &Path,
    vhost: Option<&Vhost>,
) -> (Arc<Host>, courier_host::watch::DirWatcher) {
    init_logging();
    let mut config = HostConfig::from_toml(config).unwrap();
    config.admin.enabled = false;
    config.plugins_dir = Some(dir.to_owned());
    use_test_cache(&mut config);
    if let Some(vhost) = vhost {
        config.broker = Some(vhost.url());
        if config.inbox.data_dir == HostConfig::default().inbox.data_dir {
            config.inbox.data_dir = dir.join("data");
        }
    }
    let host = Arc::new(Host::new(config).await.unwrap());
    host.load_plugins_dir(dir).await.unwrap();
    let watcher = host.watch_plugins(dir).unwrap();
    (host, watcher)
}

/// Puts a copy of `source` at `file` the way a deployment should: written under a temporary
/// name beside it, then renamed into place in one step.
pub fn put_in_place(source: &Path, file: &Path) {
    let temp = file.with_extension("wasm.tmp");
    std::fs::copy(source, &temp).unwrap();
    std::fs::rename(&temp, file).unwrap();
}

/// Waits until `done` holds; fails the test with `what` after [`PATIENCE`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the `courier` binary with `args` and waits for it.
pub fn courier(args: &[&str]) -> std::process::Output {
    std::process::Command::new(courier_bin())
        .args(args)
        .output()
        .unwrap()
}

/// The `courier` binary built beside the tests (`cargo xtask test` builds it).
pub fn courier_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir.join("courier");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p courier-host` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// A directory holding copies of the named plugins, for `courier run --plugins`.
pub fn plugins_dir(test: &str, plugins: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in plugins {
        std::fs::copy(plugin_file(name), dir.join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

/// Every order of the flow ended exactly one way: `placed` orders in, and as many shipped,
/// declined or out of stock.
pub fn assert_orders_add_up(summary: &courier_host::Summary, placed: usize) {
    let count = |t: &str| summary.of(&format!("urn:message:Orders:{t}")).published;
    assert_eq!(count("OrderPlaced") as usize, placed);
    assert_eq!(
        count("OrderShipped") + count("PaymentFailed") + count("StockReservationFailed"),
        count("OrderPlaced")
    );
}

/// The notification plugin handled every event of the order flow, and failed none.
pub fn assert_notification_followed_every_event(summary: &courier_host::Summary) {
    let events = [
        "OrderPlaced",
        "PaymentProcessed",
        "PaymentFailed",
        "InventoryReserved",
        "StockReservationFailed",
        "OrderShipped",
    ];
    let published: u64 = events
        .iter()
        .map(|t| summary.of(&format!("urn:message:Orders:{t}")).published)
        .sum();
    let notification = &summary.by_plugin["notification"];
    assert_eq!(
        (notification.handled, notification.failures),
        (published, 0),
        "notification must handle each of the {published} events once, failing none"
    );
}

/// A `courier run` process, killed if the test ends while it still runs.
#[derive(Debug)]
pub struct HostProcess(pub Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `courier run` as its own process, on `vhost`, serving the plugins in `dir`, keeping its
/// inbox in `dir/<data>`: a host restarted with the same `data` remembers what it handled.
pub fn spawn_host_with_data(vhost: &Vhost, dir: &Path, name: &str, data: &str) -> HostProcess {
    spawn_host_with_config(vhost, dir, name, data, "")
}

/// [`spawn_host_with_data`] with a configuration file of its own, `config` (TOML).
pub fn spawn_host_with_config(
    vhost: &Vhost,
    dir: &Path,
    name: &str,
    data: &str,
    config: &str,
) -> HostProcess {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    // Beside the plugins, under a name no plugin has, so it is nobody's sidecar file.
    let config_file = dir.join(format!("host-{name}.toml"));
    std::fs::write(&config_file, config).unwrap();
    Command::new(courier_bin())
        .args(["run", "--config"])
        .arg(&config_file)
        .args(["--no-admin", "--broker", &vhost.url(), "--plugins"])
        .arg(dir)
        .arg("--data-dir")
        .arg(dir.join(data))
        .arg("--summary")
        .arg(dir.join(format!("{name}.json")))
        .env("COURIER_LOG", "warn")
        .env("COURIER_CACHE_DIR", test_cache_dir())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(HostProcess)
        .unwrap()
}

/// `courier run` with a data directory of its own.
pub fn spawn_host(vhost: &Vhost, dir: &Path, name: &str) -> HostProcess {
    spawn_host_with_data(vhost, dir, name, &format!("{name}-data"))
}

/// Waits until `queue` has `consumers` consumers.
pub async fn wait_for_consumers(vhost: &Vhost, queue: &str, consumers: usize) {
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

/// Sends SIGTERM and waits for a clean exit.
pub fn terminate(mut host: HostProcess) {
    let status = Command::new("kill")
        .args(["-TERM", &host.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = host.0.wait().unwrap();
    assert!(exit.success(), "the host exited with {exit} after SIGTERM");
}

/// Messages the probe handled in the `courier run` process `name`, from its summary file
/// (`--summary <dir>/<name>.json`, written when it exits).
pub fn handled_by(dir: &Path, name: &str) -> u64 {
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    summary["by_plugin"]["probe"]["handled"]
        .as_u64()
        .unwrap_or(0)
}
