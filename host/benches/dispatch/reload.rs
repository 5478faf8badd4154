//! Hot reload under load: how soon a swapped-in version serves, and what swapping costs a busy
//! queue. The plugin is `stamp`, in two versions (1.0.0, 2.0.0) that publish a `Stamped` for
//! each `Ping`, and the host adds the version that handled it as `courier-handled-by-version`.
//! A swap is what a deployment does: the other version is written beside `stamp.wasm` under a
//! hidden name (which the watcher ignores), then renamed over it.
//!
//! - **Swap latency** (embedded broker): a host watches a plugins directory holding version 1
//!   while a task publishes a `Ping` every millisecond and a tap queue receives the `Stamped`.
//!   A swap's latency runs from the rename to the arrival at the tap of the first `Stamped`
//!   handled by the new version. Two series: from the cache (both versions compiled before),
//!   and cold (the cache emptied before each swap, so the new version is compiled). The bench
//!   keeps a cache directory of its own, and empties only that. Beside them, where the time
//!   goes: per swap, rename → new version serving (watcher, code, link, `describe`, bind, slot
//!   swap) and serving → first `Stamped` of the new version; then each part alone.
//! - **Throughput with swaps** (real RabbitMQ, skipped with `--no-rabbitmq`): N pings wait in
//!   `stamp`'s queue before the host starts; the rate runs from the first to the last `Stamped`
//!   at a sink, (a) without swaps and (b) with `stamp` swapped every N/13 handled pings (12
//!   swaps, alternating versions, from the cache, so the figure is the swap's cost and not the
//!   compiler's). The runs alternate a, b, a, b, each in a vhost of its own; the median of
//!   each is kept. A run fails unless every ping was stamped exactly once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_host::config::{AmqpConfig, EngineConfig, PluginSettings};
use courier_host::engine::CodeSource;
use courier_host::plugin::HANDLED_BY_VERSION_HEADER;
use courier_host::transport::amqp::AmqpTransport;
use courier_host::transport::{Endpoint, wire};
use courier_host::watch::DirWatcher;
use courier_host::{CourierEngine, Envelope, Host, HostConfig, Plugin, PublishRequest, Transport};
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde::Deserialize;
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::mpsc;

use super::rabbitmq::{Vhost, declare_exchange};
use super::{Row, plugin_file};

const PING: &str = "urn:message:Test:Ping";
const STAMPED: &str = "urn:message:Test:Stamped";
const PLUGIN: &str = "stamp";
/// The two versions: the file `cargo xtask plugins` builds, and the version it declares.
const VERSIONS: [(&str, &str); 2] = [("stamp_v1", "1.0.0"), ("stamp_v2", "2.0.0")];
/// Between two pings of the stream in the latency scenario.
const PING_EVERY: Duration = Duration::from_millis(1);
/// After each measured swap: the stream settles and the retired version's last messages are
/// out before the next swap starts.
const BETWEEN_SWAPS: Duration = Duration::from_millis(100);
/// The longest a swap, or a run's last `Stamped`, may take before the bench fails.
const PATIENCE: Duration = Duration::from_secs(300);
/// Swaps during a throughput run (every N/13 handled pings).
const SWAPS: u64 = 12;
/// Handler calls at once, as in the other RabbitMQ scenario.
const CONCURRENCY: u32 = 4;
/// How long the sink keeps listening after the last expected `Stamped`, for duplicates.
const QUIET: Duration = Duration::from_millis(500);

/// A plugins directory holding `stamp.wasm`, with the bytes of both versions to swap in.
struct PluginsDir {
    dir: TempDir,
    versions: [Vec<u8>; 2],
}

impl PluginsDir {
    /// A new directory holding version 1.
    fn new() -> PluginsDir {
        let dir = tempfile::Builder::new()
            .prefix("courier-bench-plugins-")
            .tempdir()
            .unwrap();
        let versions = version_bytes();
        std::fs::write(dir.path().join("stamp.wasm"), &versions[0]).unwrap();
        PluginsDir { dir, versions }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Puts version `index` in place: written under a hidden name, then renamed over
    /// `stamp.wasm`. Returns the moment just before the rename.
    fn put_in_place(&self, index: usize) -> Instant {
        let staged = self.path().join(".stamp.wasm.next");
        std::fs::write(&staged, &self.versions[index]).unwrap();
        let renamed_at = Instant::now();
        std::fs::rename(&staged, self.path().join("stamp.wasm")).unwrap();
        renamed_at
    }
}

/// The bytes of both versions.
fn version_bytes() -> [Vec<u8>; 2] {
    VERSIONS.map(|(file, _)| std::fs::read(plugin_file(file)).unwrap())
}

/// The engine settings of every host here: the defaults, with the bench's own cache.
fn engine_config(cache: &Path) -> EngineConfig {
    EngineConfig {
        cache_dir: cache.to_owned(),
        ..EngineConfig::default()
    }
}

fn cache_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("courier-bench-cache-")
        .tempdir()
        .unwrap()
}

/// Compiles both versions into the cache of `config`.
fn fill_cache(config: &EngineConfig) {
    let engine = CourierEngine::new(config).unwrap();
    for bytes in &version_bytes() {
        engine.compile(bytes).unwrap();
    }
}

/// Removes every entry of the cache (not the directory, which the engine writes into).
fn empty_cache(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
}

/// Waits until the host's `stamp` is no longer `before`; returns when that was seen and the
/// version now serving. It polls every 100 µs on a blocking thread: the async timer's
/// millisecond would blur the split between the swap and its first message.
async fn serving_after(host: &Arc<Host>, before: &Arc<Plugin>) -> (Instant, Arc<Plugin>) {
    let host = Arc::clone(host);
    let before = Arc::clone(before);
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = host.plugin(PLUGIN).expect("stamp stays loaded");
            if !Arc::ptr_eq(&now, &before) {
                return (Instant::now(), now);
            }
            assert!(
                Instant::now() < deadline,
                "the new version was not serving after {PATIENCE:?}; refused: {:?}",
                host.refused()
            );
            std::thread::sleep(Duration::from_micros(100));
        }
    })
    .await
    .unwrap()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The `p`th percentile (nearest rank) of `values`. With 20 samples p99 is the largest.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median, the mean of the middle two for an even count.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// A `Stamped` at the tap: when it arrived and the version that handled its `Ping`.
#[derive(Debug)]
struct Arrival {
    at: Instant,
    version: String,
}

/// One series of swaps, in milliseconds per swap.
#[derive(Debug, Default)]
struct SwapTimes {
    /// Rename → first `Stamped` of the new version at the tap.
    total: Vec<f64>,
    /// Rename → the new version in the plugin's slot.
    to_serving: Vec<f64>,
    /// New version in the slot → its first `Stamped` at the tap.
    to_first_stamped: Vec<f64>,
}

/// The host under the latency scenario: watching its plugins directory, fed a `Ping` every
/// millisecond, its `Stamped` arriving at a tap.
struct StreamedHost {
    host: Arc<Host>,
    plugins: PluginsDir,
    watcher: DirWatcher,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    stream: tokio::task::JoinHandle<()>,
    /// The index in [`VERSIONS`] of the version in `stamp.wasm`.
    current: usize,
}

impl StreamedHost {
    async fn start(engine: EngineConfig) -> StreamedHost {
        let plugins = PluginsDir::new();
        let mut config = HostConfig::default();
        config.admin.enabled = false;
        config.plugins_dir = Some(plugins.path().to_owned());
        config.engine = engine;
        let host = Arc::new(Host::new(config).await.unwrap());
        host.load_plugins_dir(plugins.path()).await.unwrap();
        let watcher = host.watch_plugins(plugins.path()).unwrap();

        // The tap: records each `Stamped` as it arrives.
        let tap = Endpoint {
            queue: "reload-tap".into(),
            subscriptions: vec![STAMPED.into()],
            partitions: 0,
        };
        host.transport().declare_endpoint(&tap).await.unwrap();
        let mut consumer = host.transport().consume(&tap.queue, 1000).await.unwrap();
        let (record, arrivals) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let at = Instant::now();
                let version = delivery
                    .envelope
                    .header(HANDLED_BY_VERSION_HEADER)
                    .expect("every follow-up names the version that handled it")
                    .to_owned();
                delivery.acker.ack().await.unwrap();
                if record.send(Arrival { at, version }).is_err() {
                    break;
                }
            }
        });

        // The stream: one `Ping` a millisecond, straight to the broker.
        let stream = {
            let host = Arc::clone(&host);
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(PING_EVERY);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                for n in 0_u64.. {
                    ticker.tick().await;
                    let ping = PublishRequest::new(PING, json!({ "n": n }))
                        .into_outbound("bench")
                        .unwrap();
                    host.transport().dispatch(vec![ping]).await.unwrap();
                }
            })
        };
        StreamedHost {
            host,
            plugins,
            watcher,
            arrivals,
            stream,
            current: 0,
        }
    }

    /// First arrival at the tap, after `since`, of a `Stamped` handled by `version`.
    async fn first_stamped_by(&mut self, version: &str, since: Instant) -> Instant {
        loop {
            let arrival = tokio::time::timeout(PATIENCE, self.arrivals.recv())
                .await
                .expect("no Stamped of the new version reached the tap in time")
                .expect("the tap stopped");
            if arrival.at > since && arrival.version == version {
                return arrival.at;
            }
        }
    }

    /// Swaps `swaps` times to the other version, measuring each; with `cold`, the cache in
    /// that directory is emptied first, so each new version is compiled.
    async fn swap(&mut self, swaps: usize, cold: Option<&Path>) -> SwapTimes {
        let expected_code = if cold.is_some() {
            CodeSource::Compiled
        } else {
            CodeSource::Cache
        };
        let mut times = SwapTimes::default();
        for _ in 0..swaps {
            if let Some(cache) = cold {
                empty_cache(cache);
            }
            // What arrived before this swap is of no interest.
            while self.arrivals.try_recv().is_ok() {}
            let next = 1 - self.current;
            let (_, version) = VERSIONS[next];
            let before = self.host.plugin(PLUGIN).unwrap();

            let renamed = self.plugins.put_in_place(next);
            let (serving, plugin) = serving_after(&self.host, &before).await;
            let stamped = self.first_stamped_by(version, renamed).await;

            // A swap that did not do what this series measures would measure something else.
            assert_eq!(plugin.version(), version);
            assert_eq!(plugin.code_source(), expected_code);
            times.total.push(ms(stamped.duration_since(renamed)));
            times.to_serving.push(ms(serving.duration_since(renamed)));
            times
                .to_first_stamped
                .push(ms(stamped.saturating_duration_since(serving)));
            self.current = next;
            tokio::time::sleep(BETWEEN_SWAPS).await;
        }
        times
    }

    async fn stop(self) {
        self.stream.abort();
        drop(self.watcher);
        self.host.shutdown().await;
    }
}

/// The parts of a swap, each measured alone (milliseconds per sample).
#[derive(Debug, Default)]
struct SwapParts {
    /// Rename → the watcher reports the change.
    watcher: Vec<f64>,
    /// Compiling a version (and writing it into the cache).
    compile: Vec<f64>,
    /// Reading a version's compiled code from the cache.
    cache_read: Vec<f64>,
    /// A version from the cache to a checked plugin: cache read, link, `describe`.
    load_from_cache: Vec<f64>,
}

/// Measures the watcher, the compiler, the cache and `describe` alone, `samples` times each.
async fn swap_parts(samples: usize, config: &EngineConfig) -> SwapParts {
    let plugins = PluginsDir::new();
    let mut parts = SwapParts::default();

    // The watcher, with the host's default settle time (a rename is reported without it).
    let (watcher, mut changes) =
        DirWatcher::start(plugins.path(), HostConfig::default().reload.settle()).unwrap();
    for sample in 0..samples {
        let renamed = plugins.put_in_place((sample + 1) % 2);
        tokio::time::timeout(PATIENCE, changes.recv())
            .await
            .expect("the watcher reports the rename")
            .expect("the watcher runs");
        parts.watcher.push(ms(renamed.elapsed()));
    }
    drop(watcher);

    // The code: compiled from cold, read back from the cache, loaded as a plugin from it.
    let engine = CourierEngine::new(config).unwrap();
    let file = plugins.path().join("stamp.wasm");
    for sample in 0..samples {
        let bytes = &plugins.versions[sample % 2];
        empty_cache(&config.cache_dir);
        let started = Instant::now();
        let (_, code) = engine.compile(bytes).unwrap();
        parts.compile.push(ms(started.elapsed()));
        assert_eq!(code, CodeSource::Compiled);

        let started = Instant::now();
        let (_, code) = engine.compile(bytes).unwrap();
        parts.cache_read.push(ms(started.elapsed()));
        assert_eq!(code, CodeSource::Cache);

        let started = Instant::now();
        let plugin =
            Plugin::from_bytes(&engine, bytes, &file, |_| Ok(PluginSettings::default())).unwrap();
        parts.load_from_cache.push(ms(started.elapsed()));
        assert_eq!(plugin.code_source(), CodeSource::Cache);
    }
    parts
}

/// Swap latency on the embedded broker, from the cache and from cold, and its parts.
pub fn swap_latency(quick: bool, rows: &mut Vec<Row>) {
    let swaps = if quick { 6 } else { 20 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = cache_dir();
    let engine = engine_config(cache.path());
    let (warm, cold, parts) = runtime.block_on(async {
        let mut streamed = StreamedHost::start(engine.clone()).await;
        fill_cache(&engine);
        // Two swaps left out of the figures: the first of anything pays for lazy set-ups
        // (the exchange of the type version 2 adds, the first runner swap).
        streamed.swap(2, None).await;
        eprintln!("hot reload swap latency, from the cache: {swaps} swaps ...");
        let warm = streamed.swap(swaps, None).await;
        eprintln!("hot reload swap latency, cold: {swaps} swaps ...");
        let cold = streamed.swap(swaps, Some(cache.path())).await;
        streamed.stop().await;
        eprintln!("hot reload swap latency, each part alone ...");
        let parts = swap_parts(swaps, &engine).await;
        (warm, cold, parts)
    });

    // The ratio column compares each series with the cold one, measured in the same run: what
    // the cache saves. Against the target instead, it would read as "vs native" of a figure
    // that was not measured; the targets are in the labels.
    let scenario = "hot reload, swap latency, embedded broker";
    let cold_p50 = percentile(&cold.total, 50.0);
    let cold_p99 = percentile(&cold.total, 99.0);
    for (variant, times, target) in [
        ("from the cache", &warm, 50),
        ("cold (compiled)", &cold, 500),
    ] {
        for (p, reference, label) in [
            (50.0, cold_p50, String::new()),
            (99.0, cold_p99, format!(" (target ≤ {target} ms)")),
        ] {
            let value = percentile(&times.total, p);
            rows.push(Row {
                scenario: scenario.to_owned(),
                variant: format!("{variant}, p{p}{label}"),
                value,
                unit: "ms",
                ratio: value / reference,
            });
        }
    }

    // Where the time goes, as medians; the ratio is the part's share of its series' median.
    // The parts measured alone are not a partition of a swap (each runs on an idle host), so
    // their shares are indicative.
    let scenario = "hot reload, where a swap's time goes (p50)";
    let warm_p50 = percentile(&warm.total, 50.0);
    let mut part = |variant: &str, values: &[f64], whole: f64| {
        let value = median(values);
        rows.push(Row {
            scenario: scenario.to_owned(),
            variant: variant.to_owned(),
            value,
            unit: "ms",
            ratio: value / whole,
        });
    };
    part(
        "from the cache: rename → serving",
        &warm.to_serving,
        warm_p50,
    );
    part(
        "from the cache: serving → first Stamped",
        &warm.to_first_stamped,
        warm_p50,
    );
    part("cold: rename → serving", &cold.to_serving, cold_p50);
    part(
        "cold: serving → first Stamped",
        &cold.to_first_stamped,
        cold_p50,
    );
    part(
        "alone: watcher, rename → reported",
        &parts.watcher,
        warm_p50,
    );
    part(
        "alone: code read from the cache",
        &parts.cache_read,
        warm_p50,
    );
    part(
        "alone: cache to plugin (read, link, describe)",
        &parts.load_from_cache,
        warm_p50,
    );
    part("alone: code compiled and cached", &parts.compile, cold_p50);
}

#[derive(Debug, Deserialize)]
struct Stamped {
    n: u64,
    version: String,
}

/// What reached the sink.
#[derive(Debug, Default)]
struct Stamps {
    /// Per ping, how many `Stamped` it got.
    by_ping: HashMap<u64, u32>,
    /// Per version, how many pings it stamped.
    by_version: BTreeMap<String, u64>,
    total: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Stamps {
    fn record(&mut self, at: Instant, envelope: &Envelope) {
        let stamped: Stamped = if envelope.content_type.starts_with("application/json") {
            serde_json::from_slice(&envelope.body).unwrap()
        } else {
            rmp_serde::from_slice(&envelope.body).unwrap()
        };
        assert_eq!(
            envelope.header(HANDLED_BY_VERSION_HEADER),
            Some(stamped.version.as_str()),
            "the host's header and the plugin's stamp agree"
        );
        *self.by_ping.entry(stamped.n).or_default() += 1;
        *self.by_version.entry(stamped.version).or_default() += 1;
        self.total += 1;
        self.first.get_or_insert(at);
        self.last = Some(at);
    }
}

/// A classic queue bound to `Test:Stamped` (declared as Courier declares it), consumed
/// without acks; returns what it records and its connection.
async fn start_sink(url: &str) -> (Arc<Mutex<Stamps>>, Connection) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ is reachable");
    let channel = connection.create_channel().await.unwrap();
    let exchange = wire::exchange_for(STAMPED);
    declare_exchange(&channel, exchange).await;
    channel
        .queue_declare(
            "bench-sink".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            "bench-sink".into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            "bench-sink".into(),
            "sink".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let stamps = Arc::new(Mutex::new(Stamps::default()));
    let record = Arc::clone(&stamps);
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let at = Instant::now();
            let envelope = wire::from_delivery(
                &delivery.properties,
                delivery.data,
                delivery.exchange.as_str(),
            );
            record.lock().unwrap().record(at, &envelope);
        }
    });
    (stamps, connection)
}

/// Declares `stamp`'s queue as the host does, and fills it with pings `0..messages`.
async fn preload(url: &str, messages: u64) {
    let transport = AmqpTransport::connect(url, AmqpConfig::default())
        .await
        .unwrap();
    let endpoint = Endpoint {
        queue: PLUGIN.into(),
        subscriptions: vec![PING.into()],
        partitions: 0,
    };
    transport.declare_endpoint(&endpoint).await.unwrap();
    for batch in (0..messages).collect::<Vec<_>>().chunks(1000) {
        let pings = batch
            .iter()
            .map(|n| {
                PublishRequest::new(PING, json!({ "n": n }))
                    .into_outbound("bench")
                    .unwrap()
            })
            .collect();
        transport.dispatch(pings).await.unwrap();
    }
    transport.close().await;
}

/// Swaps `stamp` to the other version each time another `messages / 13` pings are handled;
/// returns the versions swapped in.
async fn swap_while_handling(
    host: Arc<Host>,
    plugins: Arc<PluginsDir>,
    messages: u64,
) -> Vec<Arc<Plugin>> {
    let mut current = 0;
    let mut swapped = Vec::new();
    for swap in 1..=SWAPS {
        let due = swap * messages / (SWAPS + 1);
        let deadline = Instant::now() + PATIENCE;
        while host.summary().of(PING).handled < due {
            assert!(Instant::now() < deadline, "{due} pings not handled in time");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let before = host.plugin(PLUGIN).unwrap();
        current = 1 - current;
        plugins.put_in_place(current);
        let (_, plugin) = serving_after(&host, &before).await;
        assert_eq!(plugin.version(), VERSIONS[current].1);
        assert_eq!(plugin.code_source(), CodeSource::Cache);
        swapped.push(plugin);
    }
    swapped
}

/// One run: `messages` pings waiting, then a watching host on them, swapping `stamp` or not.
/// Returns the rate between the first and the last `Stamped` at the sink, in msg/s.
async fn stamp_queue_rate(
    base: &str,
    label: &str,
    messages: u64,
    swaps: bool,
    engine: &EngineConfig,
) -> f64 {
    let vhost = Vhost::create(base, &format!("reload-{label}"));
    let plugins = Arc::new(PluginsDir::new());
    let data = tempfile::Builder::new()
        .prefix("courier-bench-inbox-")
        .tempdir()
        .unwrap();
    let (stamps, sink) = start_sink(&vhost.url).await;
    preload(&vhost.url, messages).await;

    // The host: consumes from the moment the directory is loaded.
    let mut config =
        HostConfig::from_toml(&format!("[defaults]\nconcurrency = {CONCURRENCY}")).unwrap();
    config.admin.enabled = false;
    config.broker = Some(vhost.url.clone());
    config.plugins_dir = Some(plugins.path().to_owned());
    config.engine = engine.clone();
    config.inbox.data_dir = data.path().to_owned();
    let host = Arc::new(Host::new(config).await.unwrap());
    host.load_plugins_dir(plugins.path()).await.unwrap();
    let watcher = host.watch_plugins(plugins.path()).unwrap();
    let swapper = swaps.then(|| {
        tokio::spawn(swap_while_handling(
            Arc::clone(&host),
            Arc::clone(&plugins),
            messages,
        ))
    });

    // Every ping stamped, then a moment more for any duplicate to show.
    let deadline = Instant::now() + PATIENCE;
    while (stamps.lock().unwrap().by_ping.len() as u64) < messages {
        assert!(
            Instant::now() < deadline,
            "only {} of {messages} pings stamped in {PATIENCE:?}",
            stamps.lock().unwrap().by_ping.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let swapped = match swapper {
        Some(swapper) => swapper.await.unwrap(),
        None => Vec::new(),
    };
    tokio::time::sleep(QUIET).await;
    drop(watcher);
    host.shutdown().await;
    let _ = sink.close(200, "done".into()).await;

    let stamps = std::mem::take(&mut *stamps.lock().unwrap());
    let stamped_twice = stamps.by_ping.values().filter(|count| **count > 1).count();
    assert_eq!(
        stamps.by_ping.len() as u64,
        messages,
        "every ping stamped: {:?}",
        stamps.by_version
    );
    assert!(
        stamps.by_ping.keys().all(|n| *n < messages),
        "only the pings published were stamped"
    );
    assert_eq!(stamped_twice, 0, "every ping stamped exactly once");
    assert_eq!(stamps.total, messages);
    let versions: Vec<&str> = stamps.by_version.keys().map(String::as_str).collect();
    if swaps {
        assert_eq!(swapped.len() as u64, SWAPS);
        assert_eq!(versions, ["1.0.0", "2.0.0"], "both versions stamped pings");
        eprintln!("  stamped per version: {:?}", stamps.by_version);
    } else {
        assert_eq!(versions, ["1.0.0"]);
    }
    let (first, last) = (stamps.first.unwrap(), stamps.last.unwrap());
    (messages - 1) as f64 / last.duration_since(first).as_secs_f64()
}

/// Throughput of `stamp`'s queue on RabbitMQ without swaps and with 12, in alternating runs.
pub fn throughput_with_swaps(quick: bool, base: &str, rows: &mut Vec<Row>) {
    let messages: u64 = if quick { 4_000 } else { 20_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = cache_dir();
    let engine = engine_config(cache.path());
    fill_cache(&engine);
    let mut without = Vec::new();
    let mut with = Vec::new();
    runtime.block_on(async {
        for round in 1..=2 {
            for swaps in [false, true] {
                let label = if swaps { "swaps" } else { "no-swap" };
                eprintln!(
                    "hot reload on rabbitmq, {messages} pings, {label}: round {round} of 2 ..."
                );
                let rate =
                    stamp_queue_rate(base, &format!("{label}-{round}"), messages, swaps, &engine)
                        .await;
                if swaps { &mut with } else { &mut without }.push(rate);
            }
        }
    });
    let without = median(&without);
    let with = median(&with);
    let scenario = format!("hot reload on rabbitmq, {messages} pings waiting");
    for (variant, rate) in [
        ("no swap".to_owned(), without),
        (
            format!("{SWAPS} swaps from the cache (target ≥ 0.95x)"),
            with,
        ),
    ] {
        rows.push(Row {
            scenario: scenario.clone(),
            variant,
            value: rate,
            unit: "msg/s",
            ratio: rate / without,
        });
    }
}
