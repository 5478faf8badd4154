//! The dispatch benchmark: what one message costs through a real plugin, beside a native Rust
//! function doing the same work, measured in the same run.
//!
//! Run it with `cargo xtask bench` (which builds the plugins first), or `cargo xtask bench
//! --quick` for a smoke run. It prints a table and writes the figures as JSON to
//! `target/courier-bench/dispatch.json`.
//!
//! Scenarios:
//! 1. per-message cost on one thread — native function, reused instance, fresh instance — for
//!    a trivial handler (decode, return) and the order flow's payment handler (decode, one
//!    publish);
//! 2. messages per second through the embedded broker with one lane (concurrency 1) and a
//!    single-threaded async runtime, with the trivial plugin beside a native consumer doing the
//!    same work;
//! 3. the payment step on the real RabbitMQ beside a native lapin consumer: peak throughput,
//!    and latency at 50% and 90% of the slower variant's peak (see `rabbitmq.rs`). It needs
//!    the local broker (`COURIER_BENCH_BROKER`, default `amqp://guest:guest@127.0.0.1:5672`)
//!    and `rabbitmqctl`; `--no-rabbitmq` leaves it out.
//! 4. hot reload (see `reload.rs`): swap latency on the embedded broker, from the cache and
//!    cold, and the throughput of a queue on RabbitMQ with 12 swaps beside none (the latter left
//!    out by `--no-rabbitmq`); `--no-reload` leaves both out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark stops at the first thing that is not as expected"
)]

mod rabbitmq;
mod reload;

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
    ratio_to_native: f64,
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
                ratio_to_native: us / native_us,
            });
        }
    }
}

/// Messages per second through the embedded broker on a single-threaded runtime.
fn broker_throughput(quick: bool, rows: &mut Vec<Row>) {
    let messages: usize = if quick { 5_000 } else { 50_000 };
    let rounds = if quick { 1 } else { 3 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut native_rates = Vec::new();
    let mut courier_rates = Vec::new();
    for round in 0..rounds {
        eprintln!(
            "embedded broker throughput: round {} of {rounds} ...",
            round + 1
        );
        native_rates.push(runtime.block_on(native_consumer(messages)));
        courier_rates.push(runtime.block_on(courier_host_run(messages)));
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let native = median(&mut native_rates);
    let courier = median(&mut courier_rates);
    for (variant, rate) in [
        ("native consumer", native),
        ("courier, trivial plugin, fresh instances", courier),
    ] {
        rows.push(Row {
            scenario: "embedded broker, concurrency 1".to_owned(),
            variant: variant.to_owned(),
            value: rate,
            unit: "msg/s",
            ratio_to_native: rate / native,
        });
    }
}

async fn publish_all(transport: &dyn Transport, messages: usize) {
    let template = ping_message();
    for batch in (0..messages).collect::<Vec<_>>().chunks(100) {
        let outbound = batch
            .iter()
            .map(|_| {
                let mut envelope = template.clone();
                envelope.id = uuid_like();
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

async fn courier_host_run(messages: usize) -> f64 {
    let mut config = HostConfig::from_toml("[defaults]\nconcurrency = 1").unwrap();
    config.admin.enabled = false;
    config.memory_broker.queue_capacity = messages + 1;
    let host = Arc::new(Host::new(config).await.unwrap());
    host.load_plugin(&plugin_file("trivial")).await.unwrap();
    let started = Instant::now();
    publish_all(host.transport().as_ref(), messages).await;
    host.wait_until_idle(Duration::from_millis(1))
        .await
        .unwrap();
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    host.shutdown().await;
    let handled = host.summary().of("urn:message:Test:Ping").handled;
    assert_eq!(
        handled,
        messages as u64,
        "every message handled once: {:?}",
        host.summary()
    );
    rate
}

fn main() {
    if let Ok(filter) = std::env::var("COURIER_BENCH_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let mut rows = Vec::new();
    per_message_costs(quick, &mut rows);
    broker_throughput(quick, &mut rows);
    let reload = !std::env::args().any(|a| a == "--no-reload");
    if reload {
        reload::swap_latency(quick, &mut rows);
    }
    if !std::env::args().any(|a| a == "--no-rabbitmq") {
        let broker = std::env::var("COURIER_BENCH_BROKER")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
        rabbitmq::run(quick, &broker, &mut rows);
        if reload {
            reload::throughput_with_swaps(quick, &broker, &mut rows);
        }
    }

    println!(
        "\n{:<44} {:<44} {:>14} {:>10}",
        "scenario", "variant", "value", "vs native"
    );
    for row in &rows {
        println!(
            "{:<44} {:<44} {:>9.2} {:<6} {:>9.2}x",
            row.scenario, row.variant, row.value, row.unit, row.ratio_to_native
        );
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/courier-bench");
    std::fs::create_dir_all(&out).unwrap();
    let report = json!({
        "quick": quick,
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)},
        "rows": rows,
    });
    std::fs::write(
        out.join("dispatch.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .unwrap();
    println!(
        "\nfigures written to {}",
        out.join("dispatch.json").display()
    );
}
