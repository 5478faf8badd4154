//! Metrics in the Prometheus text format, served by the admin API on `/metrics`, with
//! `prometheus-client` (the Prometheus project's Rust client).
//!
//! Counters and histograms are updated where things happen; the gauges that describe the
//! present (in flight, broker connection, prefetch, queue depth, kill switches) are read when
//! `/metrics` is scraped. Every metric is described in `docs/operations.md`.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::stats::Event;

/// What became of a message a plugin took.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    reason = "label values are written as Prometheus spells them"
)]
pub enum Outcome {
    handled,
    retried,
    dead_lettered,
    skipped,
    expired,
    duplicate,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    plugin: String,
    version: String,
    r#type: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    plugin: String,
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// What a deployment did, for `courier_plugin_reloads_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    reason = "label values are written as Prometheus spells them"
)]
pub enum Reload {
    added,
    swapped,
    unchanged,
    rolled_back,
    removed,
    refused,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    plugin: String,
    outcome: Reload,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 50 µs to about 3.3 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

/// The host's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    published: Family<TypeLabels, Counter>,
    handler_seconds: Histograms<VersionLabels>,
    instantiation_seconds: Histograms<VersionLabels>,
    reloads: Family<ReloadLabels, Counter>,
    in_flight: Gauge,
    broker_connected: Gauge,
    prefetch: Family<PluginLabels, Gauge>,
    queue_ready: Family<QueueLabels, Gauge>,
    kill_switch_open: Family<PluginLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("courier"),
            messages: Family::default(),
            published: Family::default(),
            handler_seconds: Family::new_with_constructor(seconds),
            instantiation_seconds: Family::new_with_constructor(seconds),
            reloads: Family::default(),
            in_flight: Gauge::default(),
            broker_connected: Gauge::default(),
            prefetch: Family::default(),
            queue_ready: Family::default(),
            kill_switch_open: Family::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "messages",
            "Messages taken by a plugin, by plugin, version, type and outcome",
            metrics.messages.clone(),
        );
        registry.register(
            "published",
            "Messages handed to the broker: follow-ups, fault events, messages put in from outside",
            metrics.published.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "Time in one handler call, instance creation included",
            metrics.handler_seconds.clone(),
        );
        registry.register(
            "instantiation_duration_seconds",
            "Time to create a fresh instance of a plugin",
            metrics.instantiation_seconds.clone(),
        );
        registry.register(
            "plugin_reloads",
            "Deployments by plugin and outcome",
            metrics.reloads.clone(),
        );
        registry.register(
            "in_flight",
            "Messages taken from queues and not yet settled",
            metrics.in_flight.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while the host is connected to its broker",
            metrics.broker_connected.clone(),
        );
        registry.register(
            "consumer_prefetch",
            "Unsettled messages a plugin's consumer may hold",
            metrics.prefetch.clone(),
        );
        registry.register(
            "queue_ready_messages",
            "Messages waiting in a plugin's input queue (read at scrape time)",
            metrics.queue_ready.clone(),
        );
        registry.register(
            "kill_switch_open",
            "1 while a plugin's kill switch holds its messages back",
            metrics.kill_switch_open.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Counts one event of the host's statistics.
    pub fn record(&self, message_type: &str, plugin: Option<(&str, &str)>, event: Event) {
        let outcome = match event {
            Event::Published => {
                self.published
                    .get_or_create(&TypeLabels {
                        r#type: message_type.to_owned(),
                    })
                    .inc();
                return;
            }
            Event::Handled => Outcome::handled,
            Event::Retried => Outcome::retried,
            Event::DeadLettered => Outcome::dead_lettered,
            Event::Skipped => Outcome::skipped,
            Event::Expired => Outcome::expired,
            Event::Duplicate => Outcome::duplicate,
        };
        let (plugin, version) = plugin.unwrap_or_default();
        self.messages
            .get_or_create(&MessageLabels {
                plugin: plugin.to_owned(),
                version: version.to_owned(),
                r#type: message_type.to_owned(),
                outcome,
            })
            .inc();
    }

    /// One handler call of `plugin` at `version` took `elapsed`, of which `instantiation`
    /// creating its instance.
    pub fn handler_call(
        &self,
        plugin: &str,
        version: &str,
        elapsed: Duration,
        instantiation: Option<Duration>,
    ) {
        let labels = VersionLabels {
            plugin: plugin.to_owned(),
            version: version.to_owned(),
        };
        if let Some(instantiation) = instantiation {
            self.instantiation_seconds
                .get_or_create(&labels)
                .observe(instantiation.as_secs_f64());
        }
        self.handler_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn reload(&self, plugin: &str, outcome: Reload) {
        self.reloads
            .get_or_create(&ReloadLabels {
                plugin: plugin.to_owned(),
                outcome,
            })
            .inc();
    }

    /// The gauges, as read at scrape time.
    pub fn set_present(&self, present: &Present) {
        self.in_flight
            .set(i64::try_from(present.in_flight).unwrap_or(i64::MAX));
        self.broker_connected
            .set(i64::from(present.broker_connected));
        let plugin = |name: &String| PluginLabels {
            plugin: name.clone(),
        };
        replace_all(
            &self.prefetch,
            present
                .prefetch
                .iter()
                .map(|(name, prefetch)| (plugin(name), i64::from(*prefetch))),
        );
        replace_all(
            &self.queue_ready,
            present.queue_ready.iter().map(|(queue, ready)| {
                let labels = QueueLabels {
                    queue: queue.clone(),
                };
                (labels, i64::try_from(*ready).unwrap_or(i64::MAX))
            }),
        );
        replace_all(
            &self.kill_switch_open,
            present
                .kill_switch_open
                .iter()
                .map(|(name, open)| (plugin(name), i64::from(*open))),
        );
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Sets a family of gauges to exactly `values`: series not in it (a plugin removed) go.
fn replace_all<L>(family: &Family<L, Gauge>, values: impl Iterator<Item = (L, i64)>)
where
    L: Clone + std::hash::Hash + Eq,
{
    family.clear();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
}

/// The state of the host now, for the gauges.
#[derive(Debug, Default)]
pub struct Present {
    pub in_flight: usize,
    pub broker_connected: bool,
    pub prefetch: Vec<(String, u16)>,
    pub queue_ready: Vec<(String, u64)>,
    pub kill_switch_open: Vec<(String, bool)>,
}
