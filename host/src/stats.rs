//! Counters of what the host did, by message type and by plugin: the run summary, what the
//! admin API reports, and the Prometheus metrics fed from the same events.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use crate::metrics::Metrics;

/// What happened to messages of one type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TypeCounts {
    /// Handed to the broker (follow-ups released from outboxes, and messages put in from outside).
    pub published: u64,
    /// Handled successfully (once per subscribing plugin).
    pub handled: u64,
    /// Handler calls that failed and were redelivered.
    pub retried: u64,
    /// Sent to an error queue.
    pub dead_lettered: u64,
    /// Sent to a skipped queue (no handler).
    pub skipped: u64,
    /// Sent to an expired queue.
    pub expired: u64,
    /// Delivered again after a successful handling, and acked without running the handler.
    pub duplicates: u64,
}

/// What one plugin did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PluginCounts {
    pub handled: u64,
    pub failures: u64,
}

/// A snapshot of all counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub by_type: BTreeMap<String, TypeCounts>,
    pub by_plugin: BTreeMap<String, PluginCounts>,
}

/// Thread-safe counters.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Summary>,
    metrics: Metrics,
}

/// One event to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Published,
    Handled,
    Retried,
    DeadLettered,
    Skipped,
    Expired,
    Duplicate,
}

impl Stats {
    /// Counts `event` for a message of `message_type`, handled (or not) by `plugin`, given as
    /// its name and version ([`crate::plugin::Plugin::label`]).
    pub fn record(&self, message_type: &str, plugin: Option<(&str, &str)>, event: Event) {
        self.metrics.record(message_type, plugin, event);
        let plugin = plugin.map(|(name, _)| name);
        let mut summary = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = match summary.by_type.get_mut(message_type) {
            Some(counts) => counts,
            None => summary.by_type.entry(message_type.to_owned()).or_default(),
        };
        match event {
            Event::Published => counts.published += 1,
            Event::Handled => counts.handled += 1,
            Event::Retried => counts.retried += 1,
            Event::DeadLettered => counts.dead_lettered += 1,
            Event::Skipped => counts.skipped += 1,
            Event::Expired => counts.expired += 1,
            Event::Duplicate => counts.duplicates += 1,
        }
        if let Some(plugin) = plugin {
            let counts = match summary.by_plugin.get_mut(plugin) {
                Some(counts) => counts,
                None => summary.by_plugin.entry(plugin.to_owned()).or_default(),
            };
            match event {
                Event::Handled => counts.handled += 1,
                Event::Retried | Event::DeadLettered => counts.failures += 1,
                Event::Published | Event::Skipped | Event::Expired | Event::Duplicate => {}
            }
        }
    }

    /// The metrics, for what is not an event of a message.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn summary(&self) -> Summary {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Summary {
    /// The counts of one type (zero if none was seen).
    pub fn of(&self, message_type: &str) -> TypeCounts {
        self.by_type.get(message_type).copied().unwrap_or_default()
    }

    /// A table for people.
    pub fn render(&self) -> String {
        let width = self
            .by_type
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(12)
            .max(12);
        let mut out = format!(
            "{:<width$}  {:>9}  {:>7}  {:>7}  {:>13}  {:>7}  {:>7}\n",
            "message type",
            "published",
            "handled",
            "retried",
            "dead-lettered",
            "skipped",
            "expired"
        );
        for (message_type, c) in &self.by_type {
            out.push_str(&format!(
                "{message_type:<width$}  {:>9}  {:>7}  {:>7}  {:>13}  {:>7}  {:>7}\n",
                c.published, c.handled, c.retried, c.dead_lettered, c.skipped, c.expired
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_by_type_and_plugin() {
        let stats = Stats::default();
        stats.record("urn:message:A:B", None, Event::Published);
        stats.record("urn:message:A:B", Some(("p", "1.0.0")), Event::Handled);
        stats.record("urn:message:A:B", Some(("p", "1.0.0")), Event::Retried);
        let summary = stats.summary();
        assert_eq!(summary.of("urn:message:A:B").published, 1);
        assert_eq!(summary.of("urn:message:A:B").handled, 1);
        assert_eq!(
            summary.by_plugin["p"],
            PluginCounts {
                handled: 1,
                failures: 1
            }
        );
        assert!(summary.render().contains("urn:message:A:B"));
    }
}
