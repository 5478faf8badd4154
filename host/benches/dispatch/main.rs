//! Courier's benchmark harness: every figure beside a baseline measured in the same run.
//!
//! Run it with `cargo xtask bench` (which builds the plugins first), or `cargo xtask bench
//! --quick` for a smoke run (CI runs it and checks only that it completes). It prints a table,
//! writes the figures as JSON to `target/courier-bench/dispatch.json` and draws the plots
//! beside it (`--out DIR` puts both elsewhere; `docs/bench/` holds the ones the README shows).
//!
//! Scenarios:
//! 1. per-message cost on one thread — native function, reused instance, fresh instance — for
//!    a trivial handler (decode, return) and the order flow's payment handler (decode, one
//!    publish);
//! 2. the embedded broker on a single-threaded async runtime: a native consumer, then the
//!    trivial handler and the four-plugin order flow with 1, 2, 4 and 8 handlers per plugin;
//! 3. scale (see `scale.rs`): start-up with a cold and a warm cache, resident memory and
//!    throughput with 1, 10 and 100 loaded plugins, each in a process of its own;
//! 4. hot reload (see `reload.rs`): swap latency on the embedded broker, from the cache and
//!    cold, and the throughput of a queue on RabbitMQ with 12 swaps beside none (the latter left
//!    out by `--no-rabbitmq`); `--no-reload` leaves both out;
//! 5. the payment step on the real RabbitMQ beside a native lapin consumer and the naive
//!    lapin + wasmtime host (`naive.rs`): peak throughput, and latency at 50% and 90% of the
//!    slower of Courier's and the native peak (see `rabbitmq.rs`). It needs the local broker
//!    (`COURIER_BENCH_BROKER`, default `amqp://guest:guest@127.0.0.1:5672`) and `rabbitmqctl`;
//!    `--no-rabbitmq` leaves it out;
//! 6. ordered sessions (see `ordered.rs`): the trivial plugin ordered by session id beside the
//!    same plugin unordered, at the same concurrency, on the embedded broker and on RabbitMQ;
//! 7. guest languages (see `languages.rs`): the conformance plugin in Rust, Python and
//!    JavaScript, its size, compile and cached load times, per-message cost with fresh and
//!    reused instances, and memory per instance, beside the Rust figures.
//!
//! `--only per-message|embedded|scale|reload|rabbitmq|ordered|languages` runs one scenario, for
//! a profiler.
//!
//! The ratio column is each figure over its scenario's baseline: the native variant, or for
//! the order flow and scale rows the first row of the series (concurrency 1, one plugin).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark stops at the first thing that is not as expected"
)]

mod languages;
mod naive;
mod ordered;
mod plots;
mod rabbitmq;
mod reload;
mod scale;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_host::config::{EngineConfig, InstancePolicy, PluginSettings};
use courier_host::envelope::{MSGPACK, follow_up_id};
use courier_host::transport::{Endpoint, Outbound, Route, Transport};
use courier_host::{
    CourierEngine, Envelope, Host, HostConfig, MemoryBroker, Outcome, Plugin, PublishRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    sku: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
    customer: String,
    lines: Vec<Line>,
    amount_cents: u64,
}

#[derive(Debug, Serialize)]
struct PaymentProcessed<'a> {
    order_id: &'a str,
    customer: &'a str,
    lines: &'a [Line],
    amount_cents: u64,
    payment_reference: String,
}

#[derive(Debug, Serialize)]
struct Row {
    scenario: String,
    variant: String,
    value: f64,
    unit: &'static str,
    /// The figure over its scenario's baseline (see each scenario).
    ratio: f64,
}

fn plugin_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("COURIER_PLUGIN_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release"),
        PathBuf::from,
    );
    let file = dir.join(format!("{name}.wasm"));
    assert!(
        file.is_file(),
        "{} is missing: run `cargo xtask bench`",
        file.display()
    );
    file
}

fn ping_message() -> Envelope {
    PublishRequest::new("urn:message:Test:Ping", json!({"n": 42}))
        .into_outbound("bench")
        .unwrap()
        .envelope
}

fn order_message() -> Envelope {
    let body = json!({
        "order_id": "order-1", "customer": "ada",
        "lines": [{"sku": "WIDGET", "quantity": 2}], "amount_cents": 2400
    });
    PublishRequest::new("urn:message:Orders:OrderPlaced", body)
        .into_outbound("bench")
        .unwrap()
        .envelope
}

/// The trivial handler's work, natively.
fn native_trivial(message: &Envelope) {
    let ping: Ping = rmp_serde::from_slice(&message.body).unwrap();
    std::hint::black_box(ping.n);
}

/// The payment handler's work, natively: decode, decide, encode one follow-up with its envelope.
fn native_payment(message: &Envelope) -> Envelope {
    let order: OrderPlaced = rmp_serde::from_slice(&message.body).unwrap();
    assert!(order.amount_cents <= 100_000);
    let processed = PaymentProcessed {
        order_id: &order.order_id,
        customer: &order.customer,
        lines: &order.lines,
        amount_cents: order.amount_cents,
        payment_reference: format!("pay-{}", order.order_id),
    };
    let body = rmp_serde::to_vec_named(&processed).unwrap();
    let mut follow_up = Envelope::new("urn:message:Orders:PaymentProcessed", MSGPACK, body);
    follow_up.id = follow_up_id(&message.id, 0);
    follow_up
        .conversation_id
        .clone_from(&message.conversation_id);
    follow_up.initiator_id = Some(message.id.clone());
    follow_up
}

/// Median per-iteration time of `f` over `rounds` rounds of `iterations`.
fn per_call(rounds: usize, iterations: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 + 1 {
        f();
    }
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..iterations {
                f();
            }
            started.elapsed() / u32::try_from(iterations).unwrap()
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn load(engine: &CourierEngine, name: &str, instance: InstancePolicy) -> Plugin {
    Plugin::load(engine, &plugin_file(name), |_| {
        Ok(PluginSettings {
            instance,
            recycle_after: u64::MAX,
            ..PluginSettings::default()
        })
    })
    .unwrap()
}

fn per_message_costs(quick: bool, rows: &mut Vec<Row>) {
    let (rounds, iterations) = if quick { (3, 2_000) } else { (7, 20_000) };
    let engine = CourierEngine::new(&EngineConfig::default()).unwrap();
    for (handler, plugin_name, message) in [
        ("trivial", "trivial", ping_message()),
        ("payment", "payment", order_message()),
    ] {
        eprintln!("per-message cost: {handler} ...");
        let native = if handler == "trivial" {
            per_call(rounds, iterations, || native_trivial(&message))
        } else {
            per_call(rounds, iterations, || {
                std::hint::black_box(native_payment(&message));
            })
        };
        let fresh = load(&engine, plugin_name, InstancePolicy::Fresh);
        let reused = load(&engine, plugin_name, InstancePolicy::Reuse);
        for plugin in [&fresh, &reused] {
            assert_eq!(plugin.invoke(&message, "bench").outcome, Outcome::Handled);
        }
        let reuse = per_call(rounds, iterations, || {
            std::hint::black_box(reused.invoke(&message, "bench"));
        });
        let fresh_cost = per_call(rounds, iterations, || {
            std::hint::black_box(fresh.invoke(&message, "bench"));
        });
        let native_us = native.as_secs_f64() * 1e6;
        for (variant, cost) in [
            ("native function", native),
            ("reused instance", reuse),
            ("fresh instance", fresh_cost),
        ] {
            let us = cost.as_secs_f64() * 1e6;
            rows.push(Row {
                scenario: format!("per-message cost, {handler} handler"),
                variant: variant.to_owned(),
                value: us,
                unit: "µs/msg",
                ratio: us / native_us,
            });
        }
    }
}

/// What `--only` accepts.
const SCENARIOS: [&str; 7] = [
    "per-message",
    "embedded",
    "scale",
    "reload",
    "rabbitmq",
    "ordered",
    "languages",
];

/// Concurrent handlers per plugin in the embedded broker's sweep.
const CONCURRENCIES: [u32; 4] = [1, 2, 4, 8];

/// What the embedded broker's sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The `trivial` plugin: decode a ping, return.
    Trivial,
    /// The four order-flow plugins: an order paid, stock reserved, shipped, notified.
    Orders,
}

/// Messages per second through the embedded broker on a single-threaded async runtime: a
/// native consumer, then the trivial handler and the order flow with 1, 2, 4 and 8 handlers
/// per plugin. Returns the curves, per flow, for the plot.
fn broker_throughput(quick: bool, rows: &mut Vec<Row>) -> Vec<(&'static str, Vec<(u32, f64)>)> {
    let (pings, orders) = if quick {
        (5_000, 1_000)
    } else {
        (50_000, 10_000)
    };
    let rounds = if quick { 1 } else { 3 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let median_of = |f: &dyn Fn() -> f64| {
        let mut rates: Vec<f64> = (0..rounds).map(|_| f()).collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    eprintln!("embedded broker: native consumer ...");
    let native = median_of(&|| runtime.block_on(native_consumer(pings)));
    rows.push(Row {
        scenario: "embedded broker, trivial handler".to_owned(),
        variant: "native consumer".to_owned(),
        value: native,
        unit: "msg/s",
        ratio: 1.0,
    });
    let mut curves = Vec::new();
    for (flow, label, messages) in [
        (Flow::Trivial, "trivial handler", pings),
        (Flow::Orders, "order flow (4 plugins)", orders),
    ] {
        let mut curve = Vec::new();
        for concurrency in CONCURRENCIES {
            eprintln!("embedded broker: {label}, concurrency {concurrency} ...");
            let rate =
                median_of(&|| runtime.block_on(courier_host_run(flow, concurrency, messages)));
            curve.push((concurrency, rate));
        }
        // The trivial handler beside the native consumer; the order flow (which has no native
        // twin here) beside its own concurrency 1.
        let baseline = if flow == Flow::Trivial {
            native
        } else {
            curve[0].1
        };
        for &(concurrency, rate) in &curve {
            rows.push(Row {
                scenario: format!("embedded broker, {label}"),
                variant: format!("courier, concurrency {concurrency}"),
                value: rate,
                unit: if flow == Flow::Trivial {
                    "msg/s"
                } else {
                    "orders/s"
                },
                ratio: rate / baseline,
            });
        }
        curves.push((label, curve));
    }
    curves
}

async fn publish_all(transport: &dyn Transport, messages: usize) {
    publish_copies(transport, &ping_message(), messages).await;
}

/// Publishes `count` copies of `template`, each with an id (and conversation) of its own.
async fn publish_copies(transport: &dyn Transport, template: &Envelope, count: usize) {
    for batch in (0..count).collect::<Vec<_>>().chunks(100) {
        let outbound = batch
            .iter()
            .map(|_| {
                let mut envelope = template.clone();
                envelope.id = uuid_like();
                envelope.conversation_id.clone_from(&envelope.id);
                Outbound {
                    route: Route::Publish,
                    envelope,
                    delay: None,
                }
            })
            .collect();
        transport.dispatch(outbound).await.unwrap();
    }
}

fn uuid_like() -> String {
    Envelope::new("urn:message:Test:Ping", MSGPACK, Vec::new()).id
}

async fn native_consumer(messages: usize) -> f64 {
    let broker = MemoryBroker::new(messages + 1);
    let endpoint = Endpoint {
        queue: "native".into(),
        subscriptions: vec!["urn:message:Test:Ping".into()],
        partitions: 0,
    };
    broker.declare_endpoint(&endpoint).await.unwrap();
    let started = Instant::now();
    let consume = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut consumer = broker.consume("native", 1).await.unwrap();
            for _ in 0..messages {
                let delivery = consumer.next().await.unwrap();
                native_trivial(&delivery.envelope);
                delivery.acker.ack().await.unwrap();
            }
        })
    };
    publish_all(&broker, messages).await;
    consume.await.unwrap();
    messages as f64 / started.elapsed().as_secs_f64()
}

/// The order-flow plugins, as the demo deploys them.
const ORDER_FLOW: [&str; 4] = ["payment", "inventory", "shipping", "notification"];

async fn courier_host_run(flow: Flow, concurrency: u32, messages: usize) -> f64 {
    // Enough stock that every order ships: each order asks for two widgets.
    let mut config = HostConfig::from_toml(&format!(
        "[defaults]\nconcurrency = {concurrency}\n\
         [plugins.payment.config]\nmax_amount_cents = 50000\n\
         [plugins.inventory.config]\nstock.WIDGET = 1000000"
    ))
    .unwrap();
    config.admin.enabled = false;
    config.memory_broker.queue_capacity = messages + 1;
    let host = Arc::new(Host::new(config).await.unwrap());
    let plugins: &[&str] = match flow {
        Flow::Trivial => &["trivial"],
        Flow::Orders => &ORDER_FLOW,
    };
    for plugin in plugins {
        host.load_plugin(&plugin_file(plugin)).await.unwrap();
    }
    let started = Instant::now();
    match flow {
        Flow::Trivial => publish_all(host.transport().as_ref(), messages).await,
        Flow::Orders => publish_copies(host.transport().as_ref(), &order_message(), messages).await,
    }
    host.wait_until_idle(Duration::from_millis(1))
        .await
        .unwrap();
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    host.shutdown().await;
    let summary = host.summary();
    let done = match flow {
        Flow::Trivial => summary.of("urn:message:Test:Ping").handled,
        Flow::Orders => summary.of("urn:message:Orders:OrderShipped").published,
    };
    assert_eq!(
        done, messages as u64,
        "every message handled (every order shipped) once: {summary:?}"
    );
    rate
}

/// Where the figures and plots go: `--out DIR` (relative to the workspace root, since cargo
/// runs a benchmark in its package's directory), or `target/courier-bench`.
fn out_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join(arg_after("--out").unwrap_or_else(|| "target/courier-bench".to_owned()))
}

fn arg_after(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    if let Ok(filter) = std::env::var("COURIER_BENCH_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--scale-child") {
        let [plugins, cache, messages] = &args[at + 1..at + 4] else {
            panic!("--scale-child PLUGINS CACHE MESSAGES");
        };
        scale::child(plugins.as_ref(), cache.as_ref(), messages.parse().unwrap());
        return;
    }
    let flag = |name: &str| args.iter().any(|a| a == name);
    let quick = flag("--quick");
    // `--only NAME` runs one scenario (for a profiler, say): one of `SCENARIOS`.
    let only = arg_after("--only");
    if let Some(name) = &only {
        assert!(
            SCENARIOS.contains(&name.as_str()),
            "--only takes one of {SCENARIOS:?}, not {name:?}"
        );
    }
    let runs = |name: &str| only.as_deref().is_none_or(|only| only == name);
    let rabbitmq = !flag("--no-rabbitmq");
    let reload = !flag("--no-reload") && runs("reload");
    let started = Instant::now();
    let mut rows = Vec::new();
    let (mut concurrency, mut fleet, mut latency) = (Vec::new(), Vec::new(), Vec::new());
    if runs("per-message") {
        per_message_costs(quick, &mut rows);
    }
    if runs("embedded") {
        concurrency = broker_throughput(quick, &mut rows);
    }
    if runs("scale") {
        fleet = scale::run(quick, &mut rows);
    }
    if reload {
        reload::swap_latency(quick, &mut rows);
    }
    let broker = std::env::var("COURIER_BENCH_BROKER")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
    if rabbitmq && runs("rabbitmq") {
        latency = rabbitmq::run(quick, &broker, &mut rows);
    }
    if rabbitmq && reload {
        reload::throughput_with_swaps(quick, &broker, &mut rows);
    }
    if runs("ordered") {
        ordered::run(quick, rabbitmq.then_some(broker.as_str()), &mut rows);
    }
    if runs("languages") {
        languages::run(quick, &mut rows);
    }

    println!(
        "\n{:<44} {:<44} {:>14} {:>10}",
        "scenario", "variant", "value", "ratio"
    );
    for row in &rows {
        println!(
            "{:<44} {:<44} {:>9.2} {:<6} {:>9.2}x",
            row.scenario, row.variant, row.value, row.unit, row.ratio
        );
    }
    let out = out_dir();
    std::fs::create_dir_all(&out).unwrap();
    let report = json!({
        "quick": quick,
        "machine": plots::machine(),
        "seconds": started.elapsed().as_secs_f64(),
        "rows": rows,
    });
    std::fs::write(
        out.join("dispatch.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .unwrap();
    let drawn = plots::draw(&out, &concurrency, &fleet, &latency);
    println!(
        "\nfigures written to {}",
        out.join("dispatch.json").display()
    );
    for file in drawn {
        println!("plot written to {}", file.display());
    }
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
}
