//! The order flow's payment step on the real RabbitMQ: Courier beside a native lapin consumer
//! doing the same work (decode the order, publish one confirmed follow-up, ack after the
//! confirm) with the same prefetch and the same topology, in the same run.
//!
//! Each variant runs in a vhost of its own, created for the run and deleted after it:
//! `Orders:OrderPlaced` (fanout) → quorum queue `payment`; the follow-ups go to
//! `Orders:PaymentProcessed` (fanout) → a sink queue the benchmark consumes.
//!
//! - **Throughput**: N orders are waiting in the queue before the consumer starts; the rate is
//!   measured between the first and the last follow-up the sink receives.
//! - **Latency**: orders are published at a fixed rate, 50% and 90% of the slower variant's
//!   peak, the same offered load for both. (A share of the faster one's peak can be past the
//!   slower one's, and then measures its queue rather than what it adds to a message.) A
//!   message's latency runs from its publish to the arrival of its follow-up at the sink. The
//!   follow-up is confirmed before the order is acked, so this is publish to ack plus one
//!   delivery to the sink, the same for both.
//! - **CPU per message**, at the peak: this process's (the consumer under test, plus the sink)
//!   and the broker's, if it runs here, from `/proc/<pid>/stat`. On two cores shared with the
//!   broker, throughput follows it.
//! - **Rounds**: the full run has three, alternating the variants so that a slow spell of the
//!   machine falls on both; each figure is the median of the rounds'. The quick run has one.
//! - **The naive host** (`naive.rs`) is measured at the peak only, beside the other two.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_host::transport::Endpoint;
use courier_host::transport::wire;
use courier_host::{Envelope, Host, HostConfig};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::Deserialize;

use super::{Row, native_payment, order_message, plugin_file};

const ORDER_PLACED: &str = "Orders:OrderPlaced";
const PAYMENT_PROCESSED: &str = "Orders:PaymentProcessed";
const SINK: &str = "bench-sink";

/// Courier's handler calls at once.
const CONCURRENCY: u32 = 4;

/// Deliveries in flight, in both variants: what Courier derives from the concurrency.
fn prefetch() -> u16 {
    courier_host::dispatch::prefetch_for(CONCURRENCY)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Native,
    Courier,
    /// The obvious lapin + wasmtime host (`naive.rs`), for the peak only.
    Naive,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Native => "native lapin consumer",
            Variant::Courier => "courier, payment plugin, fresh instances",
            Variant::Naive => "naive lapin + wasmtime host, payment plugin",
        }
    }
}

/// A vhost that exists for one run (of a variant here, of a hot-reload run in `reload.rs`).
pub(crate) struct Vhost {
    name: String,
    pub(crate) url: String,
}

impl Vhost {
    pub(crate) fn create(base: &str, label: &str) -> Vhost {
        let name = format!("courier-bench-{}-{label}", std::process::id());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Vhost {
            url: format!("{}/{name}", base.trim_end_matches('/')),
            name,
        }
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        // Not asserted: a failed run may be unwinding through here.
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// Runs `rabbitmqctl`, which must succeed; returns what it printed.
fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the RabbitMQ scenario needs a local broker)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[derive(Debug, Deserialize)]
struct Processed {
    order_id: String,
}

/// The sink's record of what arrived: per order sequence number, the time its follow-up came.
#[derive(Debug, Default)]
struct Arrivals {
    at: Mutex<HashMap<u64, Instant>>,
}

impl Arrivals {
    fn count(&self) -> usize {
        self.at.lock().unwrap().len()
    }
}

/// A channel in confirm mode: every publish on it is confirmed by the broker.
pub(crate) async fn confirming_channel(connection: &Connection) -> Channel {
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
}

/// Publishes `envelope` to its type's exchange and waits for the broker's confirm.
pub(crate) async fn publish_confirmed(channel: &Channel, envelope: &Envelope) {
    let confirm = channel
        .basic_publish(
            wire::exchange_for(&envelope.message_type).into(),
            "".into(),
            BasicPublishOptions::default(),
            &envelope.body,
            wire::to_properties(envelope),
        )
        .await
        .unwrap();
    assert!(confirm.await.unwrap().is_ack());
}

/// Starts consuming `queue` with manual acks.
pub(crate) async fn consume(channel: &Channel, queue: &str, tag: &str) -> lapin::Consumer {
    channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}

pub(crate) async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ is reachable")
}

pub(crate) async fn declare_exchange(channel: &Channel, name: &str) {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// The sink queue and the consumer that records every follow-up's arrival.
async fn start_sink(url: &str) -> (Arc<Arrivals>, Connection) {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.unwrap();
    declare_exchange(&channel, PAYMENT_PROCESSED).await;
    channel
        .queue_declare(
            SINK.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            SINK.into(),
            PAYMENT_PROCESSED.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            SINK.into(),
            "sink".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let arrivals = Arc::new(Arrivals::default());
    let record = Arc::clone(&arrivals);
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let now = Instant::now();
            let processed: Processed = rmp_serde::from_slice(&delivery.data).unwrap();
            let seq = processed
                .order_id
                .strip_prefix("o-")
                .and_then(|n| n.parse().ok())
                .unwrap();
            record.at.lock().unwrap().insert(seq, now);
        }
    });
    (arrivals, connection)
}

/// Declares what Courier declares for the payment plugin, for the native variant.
async fn declare_payment_queue(channel: &Channel) {
    declare_exchange(channel, ORDER_PLACED).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            "payment".into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            "payment".into(),
            ORDER_PLACED.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// Publishes orders `from..to` to `Orders:OrderPlaced`, paced at `rate` a second (`None`:
/// as fast as confirms allow), recording when each left. Waits for every confirm.
async fn publish_orders(
    channel: &Channel,
    range: std::ops::Range<u64>,
    rate: Option<f64>,
    sent: &Mutex<HashMap<u64, Instant>>,
) {
    let template = order_message();
    let started = Instant::now();
    let mut confirms = Vec::new();
    for seq in range.clone() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64((seq - range.start) as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now())
                && wait > Duration::from_micros(200)
            {
                tokio::time::sleep(wait).await;
            }
        }
        let envelope = order(&template, seq);
        let properties = wire::to_properties(&envelope);
        sent.lock().unwrap().insert(seq, Instant::now());
        confirms.push(
            channel
                .basic_publish(
                    ORDER_PLACED.into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &envelope.body,
                    properties,
                )
                .await
                .unwrap(),
        );
        if confirms.len() >= 500 {
            for confirm in confirms.drain(..) {
                assert!(confirm.await.unwrap().is_ack());
            }
        }
    }
    for confirm in confirms {
        assert!(confirm.await.unwrap().is_ack());
    }
}

fn order(template: &Envelope, seq: u64) -> Envelope {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        sku: &'a str,
        quantity: u32,
    }
    #[derive(serde::Serialize)]
    struct Order<'a> {
        order_id: String,
        customer: &'a str,
        lines: [Line<'a>; 1],
        amount_cents: u64,
    }
    let mut envelope = template.clone();
    envelope.id = uuid::Uuid::now_v7().to_string();
    envelope.conversation_id.clone_from(&envelope.id);
    envelope.body = rmp_serde::to_vec_named(&Order {
        order_id: format!("o-{seq}"),
        customer: "ada",
        lines: [Line {
            sku: "WIDGET",
            quantity: 2,
        }],
        amount_cents: 2400,
    })
    .unwrap();
    envelope
}

/// The native consumer: one channel with the prefetch, a confirming publisher channel, and a
/// task per delivery that decodes, publishes the follow-up, waits for its confirm and acks.
async fn run_native(connection: &Connection) -> tokio::task::JoinHandle<()> {
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(prefetch(), BasicQosOptions::default())
        .await
        .unwrap();
    let publisher = confirming_channel(connection).await;
    let mut consumer = consume(&channel, "payment", "native").await;
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                let envelope = wire::from_delivery(
                    &delivery.properties,
                    delivery.data,
                    delivery.exchange.as_str(),
                );
                let follow_up = native_payment(&envelope);
                publish_confirmed(&publisher, &follow_up).await;
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .unwrap();
            });
        }
    })
}

/// One variant's consumer, running until dropped.
enum Running {
    Native(tokio::task::JoinHandle<()>, Box<Connection>),
    /// The host, and its inbox's directory (removed when dropped).
    Courier(Arc<Host>, tempfile::TempDir),
}

impl Running {
    async fn stop(self) {
        match self {
            Running::Native(task, connection) => {
                task.abort();
                let _ = connection.close(200, "done".into()).await;
            }
            Running::Courier(host, _inbox) => host.shutdown().await,
        }
    }
}

async fn start(variant: Variant, url: &str) -> Running {
    match variant {
        Variant::Native => {
            let connection = connect(url).await;
            let handle = run_native(&connection).await;
            Running::Native(handle, Box::new(connection))
        }
        Variant::Naive => {
            let (handle, connection) = super::naive::consume(url, "payment").await;
            Running::Native(handle, Box::new(connection))
        }
        Variant::Courier => {
            let mut config = HostConfig::from_toml(&format!(
                "broker = \"{url}\"\n[defaults]\nconcurrency = {CONCURRENCY}"
            ))
            .unwrap();
            config.admin.enabled = false;
            let inbox = fresh_inbox(&mut config);
            let host = Arc::new(Host::new(config).await.unwrap());
            host.load_plugin(&plugin_file("payment")).await.unwrap();
            Running::Courier(host, inbox)
        }
    }
}

/// Gives the host a fresh inbox, as a new host has: one kept across runs grows with every run
/// and is read back at every start. It is removed when the returned directory is dropped.
pub(crate) fn fresh_inbox(config: &mut HostConfig) -> tempfile::TempDir {
    let inbox = tempfile::Builder::new()
        .prefix("courier-bench-inbox-")
        .tempdir()
        .unwrap();
    config.inbox.data_dir = inbox.path().to_owned();
    inbox
}

/// Declares the input queue the variant consumes, before any order is published.
async fn declare_input(variant: Variant, url: &str, channel: &Channel) {
    match variant {
        Variant::Native | Variant::Naive => declare_payment_queue(channel).await,
        Variant::Courier => {
            let transport =
                courier_host::transport::amqp::AmqpTransport::connect(url, Default::default())
                    .await
                    .unwrap();
            let endpoint = Endpoint {
                queue: "payment".into(),
                subscriptions: vec!["urn:message:Orders:OrderPlaced".into()],
                partitions: 0,
            };
            courier_host::Transport::declare_endpoint(&transport, &endpoint)
                .await
                .unwrap();
            courier_host::Transport::close(&transport).await;
        }
    }
}

async fn wait_for(arrivals: &Arrivals, count: usize, patience: Duration) {
    let started = Instant::now();
    while arrivals.count() < count {
        assert!(
            started.elapsed() < patience,
            "only {} of {count} follow-ups arrived in {patience:?}",
            arrivals.count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One variant's run: its vhost, the sink recording follow-ups, a confirming publisher of
/// orders, and the input queue declared before anything is published.
struct Stage {
    vhost: Vhost,
    arrivals: Arc<Arrivals>,
    sink: Connection,
    publisher_connection: Connection,
    publisher: Channel,
}

impl Stage {
    async fn new(variant: Variant, base: &str, label: &str) -> Stage {
        let vhost = Vhost::create(base, label);
        let (arrivals, sink) = start_sink(&vhost.url).await;
        let publisher_connection = connect(&vhost.url).await;
        let publisher = confirming_channel(&publisher_connection).await;
        declare_input(variant, &vhost.url, &publisher).await;
        Stage {
            vhost,
            arrivals,
            sink,
            publisher_connection,
            publisher,
        }
    }

    async fn close(self) {
        let _ = self.sink.close(200, "done".into()).await;
        let _ = self.publisher_connection.close(200, "done".into()).await;
    }
}

/// What one peak run measured.
struct Peak {
    /// Messages a second.
    rate: f64,
    /// CPU time per message, in µs, of this process: the variant's consumer, and the sink,
    /// which is the same for every variant (the orders were all published before).
    process_cpu: f64,
    /// CPU time per message, in µs, of the broker, if it runs on this machine.
    broker_cpu: Option<f64>,
}

/// Throughput with `messages` orders waiting before the consumer starts, and the CPU time it
/// took, counted from the first follow-up's arrival (the consumer's start-up left out).
async fn peak(variant: Variant, base: &str, messages: u64, broker: Option<&str>) -> Peak {
    let stage = Stage::new(variant, base, "peak").await;
    let sent = Mutex::default();
    publish_orders(&stage.publisher, 0..messages, None, &sent).await;
    let running = start(variant, &stage.vhost.url).await;
    let count = usize::try_from(messages).unwrap();
    wait_for(&stage.arrivals, 1, Duration::from_secs(60)).await;
    // A profiler attached from here sees the consumer alone (the orders are all published).
    eprintln!("  the first follow-up arrived; measuring ...");
    let already = stage.arrivals.count();
    let (process_before, broker_before) = (cpu_seconds("self"), broker.and_then(cpu_seconds));
    wait_for(&stage.arrivals, count, Duration::from_secs(300)).await;
    let (process_after, broker_after) = (cpu_seconds("self"), broker.and_then(cpu_seconds));
    running.stop().await;
    let per_message = |before: Option<f64>, after: Option<f64>| {
        Some((after? - before?) * 1e6 / (count - already) as f64)
    };
    let rate = {
        let at = stage.arrivals.at.lock().unwrap();
        let first = at.values().min().unwrap();
        let last = at.values().max().unwrap();
        (messages - 1) as f64 / last.duration_since(*first).as_secs_f64()
    };
    stage.close().await;
    Peak {
        rate,
        process_cpu: per_message(process_before, process_after)
            .expect("this process's CPU time is readable from /proc"),
        broker_cpu: per_message(broker_before, broker_after),
    }
}

/// The CPU time (user and system, in seconds) process `pid` ("self" for this one) has used,
/// from `/proc/<pid>/stat`, whose clock ticks at 100 Hz on Linux.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index)?.parse::<f64>().ok();
    // utime and stime, fields 14 and 15 of the line, 12 and 13 after the command name.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// The broker's process id if it runs on this machine: the id `rabbitmqctl` reports, if a
/// process of this machine with that id is an Erlang VM (a broker in a container reports an
/// id of its own namespace).
fn broker_pid() -> Option<String> {
    let answer = rabbitmqctl(&["eval", "os:getpid()."]);
    let pid = answer.trim().trim_matches('"');
    let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    command.starts_with("beam").then(|| pid.to_owned())
}

/// Publish-to-follow-up latencies (µs, sorted) with orders published at `rate` a second.
async fn latencies(variant: Variant, base: &str, messages: u64, rate: f64) -> Vec<f64> {
    let stage = Stage::new(variant, base, "latency").await;
    let running = start(variant, &stage.vhost.url).await;
    let sent = Mutex::default();
    // A short warm-up at the same rate, left out of the figures.
    let warm_up = messages / 10;
    publish_orders(&stage.publisher, 0..messages + warm_up, Some(rate), &sent).await;
    let count = usize::try_from(messages + warm_up).unwrap();
    wait_for(&stage.arrivals, count, Duration::from_secs(300)).await;
    running.stop().await;
    let sent = sent.into_inner().unwrap();
    let mut figures: Vec<f64> = {
        let at = stage.arrivals.at.lock().unwrap();
        (warm_up..messages + warm_up)
            .map(|seq| at[&seq].duration_since(sent[&seq]).as_secs_f64() * 1e6)
            .collect()
    };
    figures.sort_by(f64::total_cmp);
    stage.close().await;
    figures
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs the RabbitMQ scenarios and adds their rows. Returns the latencies (µs, sorted) at 50%
/// of the slower peak, per variant, for the plot.
pub fn run(quick: bool, base: &str, rows: &mut Vec<Row>) -> Vec<(&'static str, Vec<f64>)> {
    let (messages, rounds, sampled) = if quick {
        (3_000, 1, 2_000)
    } else {
        (20_000, 3, 10_000)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut curves = Vec::new();
        let broker = broker_pid();
        let variants = [Variant::Native, Variant::Courier, Variant::Naive];
        let mut peaks: [Vec<Peak>; 3] = Default::default();
        for round in 0..rounds {
            for (i, variant) in variants.into_iter().enumerate() {
                eprintln!(
                    "rabbitmq peak throughput, {}: round {} of {rounds} ...",
                    variant.label(),
                    round + 1
                );
                peaks[i].push(peak(variant, base, messages, broker.as_deref()).await);
            }
        }
        // Each figure is the median of the rounds', taken alone.
        let of = |figure: fn(&Peak) -> Option<f64>| {
            peaks.each_ref().map(|runs| {
                runs.iter()
                    .map(figure)
                    .collect::<Option<Vec<f64>>>()
                    .map(median)
            })
        };
        let [native, courier, naive] = of(|p| Some(p.rate)).map(Option::unwrap);
        let scenario = format!("rabbitmq, payment, prefetch {}, peak", prefetch());
        for (variant, rate) in [
            (Variant::Native, native),
            (Variant::Courier, courier),
            (Variant::Naive, naive),
        ] {
            rows.push(Row {
                scenario: scenario.clone(),
                variant: variant.label().to_owned(),
                value: rate,
                unit: "msg/s",
                ratio: rate / native,
            });
        }
        for (whose, figures) in [
            ("this process", of(|p| Some(p.process_cpu))),
            ("the broker", of(|p| p.broker_cpu)),
        ] {
            let [Some(reference), ..] = figures else {
                continue;
            };
            for (variant, figure) in variants.into_iter().zip(figures) {
                let figure = figure.unwrap_or(f64::NAN);
                rows.push(Row {
                    scenario: format!("rabbitmq peak, CPU per message, {whose}"),
                    variant: variant.label().to_owned(),
                    value: figure,
                    unit: "µs",
                    ratio: figure / reference,
                });
            }
        }
        rows.push(Row {
            scenario,
            variant: "courier over the naive host".to_owned(),
            value: courier / naive,
            unit: "x",
            ratio: courier / naive,
        });
        let slower = native.min(courier);
        for share in [0.5, 0.9] {
            let rate = slower * share;
            // Rounds alternate the variants, so a slow spell of the machine falls on both;
            // each percentile is the median of the rounds'.
            let mut runs = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                for (i, variant) in [Variant::Native, Variant::Courier].into_iter().enumerate() {
                    eprintln!(
                        "rabbitmq latency at {:.0}% of the slower peak ({rate:.0} msg/s), {}: \
                         round {} of {rounds} ...",
                        share * 100.0,
                        variant.label(),
                        round + 1
                    );
                    runs[i].push(latencies(variant, base, sampled, rate).await);
                }
            }
            let scenario = |p: f64| {
                format!(
                    "rabbitmq latency p{p} at {:.0}% of slower peak",
                    share * 100.0
                )
            };
            let at = |runs: &[Vec<f64>], p: f64| {
                median(runs.iter().map(|sorted| percentile(sorted, p)).collect())
            };
            for p in [50.0, 99.0, 99.9] {
                let reference = at(&runs[0], p);
                let value = at(&runs[1], p);
                for (variant, figure) in [(Variant::Native, reference), (Variant::Courier, value)] {
                    rows.push(Row {
                        scenario: scenario(p),
                        variant: variant.label().to_owned(),
                        value: figure,
                        unit: "µs",
                        ratio: figure / reference,
                    });
                }
                rows.push(Row {
                    scenario: scenario(p),
                    variant: "added by courier (courier - native)".to_owned(),
                    value: value - reference,
                    unit: "µs",
                    ratio: (value - reference) / reference,
                });
            }
            if share == 0.5 {
                // The plot shows every round's samples together.
                let [native_runs, courier_runs] = runs;
                for (variant, samples) in [
                    (Variant::Native, native_runs),
                    (Variant::Courier, courier_runs),
                ] {
                    let mut all: Vec<f64> = samples.into_iter().flatten().collect();
                    all.sort_by(f64::total_cmp);
                    curves.push((variant.label(), all));
                }
            }
        }
        curves
    })
}
