//! Ordered endpoints beside unordered ones with the same concurrency: the trivial plugin at
//! concurrency 4, its pings spread round-robin over 100 session ids, then over 4 (as many as
//! the handlers, so each session's wait for its ack shows), on the embedded broker and on
//! RabbitMQ (one host, four partitions, in a vhost of its own). The unordered run is the
//! baseline of its broker. An ordered plugin's prefetch is four times an unordered one's (and
//! on RabbitMQ it applies per partition), which is part of what is measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_host::transport::{Outbound, Route};
use courier_host::{Host, HostConfig};

use super::rabbitmq::{Vhost, fresh_inbox};
use super::{Row, ping_message, plugin_file, uuid_like};

/// Session ids the pings are spread over, round-robin, in the ordered runs.
const SESSIONS: [usize; 2] = [100, 4];

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
        for sessions in [None, Some(SESSIONS[0]), Some(SESSIONS[1])] {
            eprintln!("ordered sessions: {label}, sessions {sessions:?} ...");
            let name = format!("sessions-{}", sessions.unwrap_or(0));
            let vhost = base.map(|base| Vhost::create(base, &name));
            let url = vhost.as_ref().map(|vhost| vhost.url.clone());
            let rate = runtime.block_on(measure(url, sessions, messages));
            let variant = match sessions {
                Some(sessions) => format!("ordered, {sessions} sessions"),
                None => {
                    unordered = rate;
                    "unordered".to_owned()
                }
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

/// Messages per second through a host whose trivial plugin is ordered over `sessions`, or
/// not ordered.
async fn measure(broker: Option<String>, sessions: Option<usize>, messages: usize) -> f64 {
    let ordered = sessions.is_some();
    let sessions = sessions.unwrap_or(1);
    let mut config = HostConfig::from_toml(&format!(
        "[plugins.trivial]\nconcurrency = {CONCURRENCY}\nordered = {ordered}\npartitions = 4"
    ))
    .unwrap();
    config.admin.enabled = false;
    config.memory_broker.queue_capacity = messages + 1;
    config.broker = broker;
    let _inbox = fresh_inbox(&mut config);
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
                envelope.session_id = Some(format!("session-{}", n % sessions));
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
