//! Ordered endpoints beside unordered ones with the same concurrency: the trivial plugin at
//! concurrency 4, its pings spread over [`SESSIONS`] session ids, on the embedded broker and
//! on RabbitMQ (one host, four partitions, in a vhost of its own). The unordered run is the
//! baseline of its broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_host::transport::{Outbound, Route};
use courier_host::{Host, HostConfig};

use super::rabbitmq::Vhost;
use super::{Row, ping_message, plugin_file, uuid_like};

/// Session ids the pings are spread over, round-robin.
const SESSIONS: usize = 100;

const CONCURRENCY: u32 = 4;

pub(crate) fn run(quick: bool, broker: Option<&str>, rows: &mut Vec<Row>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut brokers = vec![("embedded broker", None, if quick { 5_000 } else { 50_000 })];
    if let Some(base) = broker {
        brokers.push(("RabbitMQ", Some(base), if quick { 2_000 } else { 20_000 }));
    }
    for (label, base, messages) in brokers {
        let mut unordered = 0.0;
        for ordered in [false, true] {
            eprintln!("ordered sessions: {label}, ordered = {ordered} ...");
            let vhost = base.map(|base| Vhost::create(base, &format!("ordered-{ordered}")));
            let url = vhost.as_ref().map(|vhost| vhost.url.clone());
            let rate = runtime.block_on(measure(url, ordered, messages));
            let variant = if ordered {
                format!("ordered, {SESSIONS} sessions")
            } else {
                unordered = rate;
                "unordered".to_owned()
            };
            rows.push(Row {
                scenario: format!("{label}, trivial handler, concurrency {CONCURRENCY}"),
                variant,
                value: rate,
                unit: "msg/s",
                ratio: rate / unordered,
            });
        }
    }
}

/// Messages per second through a host whose trivial plugin is (or is not) ordered.
async fn measure(broker: Option<String>, ordered: bool, messages: usize) -> f64 {
    let mut config = HostConfig::from_toml(&format!(
        "[plugins.trivial]\nconcurrency = {CONCURRENCY}\nordered = {ordered}\npartitions = 4"
    ))
    .unwrap();
    config.admin.enabled = false;
    config.memory_broker.queue_capacity = messages + 1;
    config.broker = broker;
    let inbox = tempfile::Builder::new()
        .prefix("courier-bench-inbox-")
        .tempdir()
        .unwrap();
    config.inbox.data_dir = inbox.path().to_owned();
    let host = Arc::new(Host::new(config).await.unwrap());
    host.load_plugin(&plugin_file("trivial")).await.unwrap();
    let template = ping_message();
    let started = Instant::now();
    for batch in (0..messages).collect::<Vec<_>>().chunks(100) {
        let outbound = batch
            .iter()
            .map(|n| {
                let mut envelope = template.clone();
                envelope.id = uuid_like();
                envelope.conversation_id.clone_from(&envelope.id);
                envelope.session_id = Some(format!("session-{}", n % SESSIONS));
                Outbound {
                    route: Route::Publish,
                    envelope,
                    delay: None,
                }
            })
            .collect();
        host.transport().dispatch(outbound).await.unwrap();
    }
    while host.summary().of("urn:message:Test:Ping").handled < messages as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    host.shutdown().await;
    assert_eq!(
        host.summary().of("urn:message:Test:Ping").handled,
        messages as u64,
        "every ping handled once"
    );
    rate
}
