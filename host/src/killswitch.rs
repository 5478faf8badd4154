//! The kill switch: when a plugin's handlers fail too often, stop feeding it for a while.
//!
//! Closed (normal): every outcome is recorded over a sliding window. Once the window holds at
//! least `min_messages` outcomes and the share of failures reaches `failure_rate`, the switch
//! opens: no delivery is handed to the plugin for `cooldown_ms` (the broker keeps them; those
//! already prefetched wait unacknowledged). Then it is half-open: one delivery goes through. If
//! it succeeds the switch closes and the window starts afresh; if it fails, the switch opens for
//! another cool-down.
//!
//! A failure is a handler call that did not end in `Ok` once its immediate retries were spent
//! (`retry`, `reject`, a trap). Messages set aside before any handler ran (no handler, expired,
//! too large) are not counted.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// When to stop feeding a plugin that keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KillSwitchConfig {
    /// Share of failed messages (0 to 1) that opens the switch.
    pub failure_rate: f64,
    /// The window the rate is measured over, in milliseconds.
    pub window_ms: u64,
    /// Outcomes the window must hold before the rate counts.
    pub min_messages: u32,
    /// How long the switch stays open before one message is let through, in milliseconds.
    pub cooldown_ms: u64,
}

impl Default for KillSwitchConfig {
    fn default() -> Self {
        KillSwitchConfig {
            failure_rate: 0.5,
            window_ms: 60_000,
            min_messages: 20,
            cooldown_ms: 30_000,
        }
    }
}

impl KillSwitchConfig {
    /// Checks the values; `origin` names the table in errors (`plugins.payment.kill_switch`).
    pub fn validate(&self, origin: &str) -> anyhow::Result<()> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            anyhow::bail!(
                "{origin}.failure_rate = {} is out of range: it must be above 0 and at most 1",
                self.failure_rate
            );
        }
        for (key, value) in [
            ("window_ms", self.window_ms),
            ("cooldown_ms", self.cooldown_ms),
        ] {
            if !(1..=86_400_000).contains(&value) {
                anyhow::bail!(
                    "{origin}.{key} = {value} is out of range: it must be between 1 and 86400000"
                );
            }
        }
        if self.min_messages == 0 {
            anyhow::bail!("{origin}.min_messages = 0 is out of range: it must be at least 1");
        }
        Ok(())
    }
}

/// Whether the next delivery may go to the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// Ask again after this long.
    Wait(Duration),
}

#[derive(Debug)]
enum Mode {
    Closed,
    Open {
        until: Instant,
    },
    /// One delivery was let through; waiting for its outcome.
    Probing,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// Recent outcomes: when, and whether it failed.
    window: VecDeque<(Instant, bool)>,
}

/// One plugin's kill switch.
#[derive(Debug)]
pub struct KillSwitch {
    plugin: String,
    config: KillSwitchConfig,
    state: Mutex<State>,
}

/// How often a paused feed looks again while a probe is out.
const PROBE_POLL: Duration = Duration::from_millis(20);

impl KillSwitch {
    pub fn new(plugin: &str, config: KillSwitchConfig) -> Self {
        KillSwitch {
            plugin: plugin.to_owned(),
            config,
            state: Mutex::new(State {
                mode: Mode::Closed,
                window: VecDeque::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asked before a delivery is handed to the plugin.
    pub fn admit(&self) -> Admission {
        let mut state = self.state();
        match state.mode {
            Mode::Closed => Admission::Go,
            Mode::Probing => Admission::Wait(PROBE_POLL),
            Mode::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Admission::Wait(until - now);
                }
                tracing::info!(plugin = %self.plugin, "kill switch half-open: letting one message through");
                state.mode = Mode::Probing;
                Admission::Go
            }
        }
    }

    /// Records the outcome of one delivery handed to the plugin.
    pub fn record(&self, failed: bool) {
        let now = Instant::now();
        let cooldown = Duration::from_millis(self.config.cooldown_ms);
        let mut state = self.state();
        match state.mode {
            Mode::Probing if failed => {
                tracing::warn!(plugin = %self.plugin, cooldown_ms = self.config.cooldown_ms, "kill switch open again: the trial message failed");
                state.mode = Mode::Open {
                    until: now + cooldown,
                };
            }
            Mode::Probing => {
                tracing::info!(plugin = %self.plugin, "kill switch closed: the trial message succeeded");
                state.mode = Mode::Closed;
                state.window.clear();
            }
            // Outcomes of deliveries handed out before the switch opened change nothing.
            Mode::Open { .. } => {}
            Mode::Closed => {
                let window = Duration::from_millis(self.config.window_ms);
                state.window.push_back((now, failed));
                while state
                    .window
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > window)
                {
                    state.window.pop_front();
                }
                let seen = state.window.len();
                let failures = state.window.iter().filter(|(_, failed)| *failed).count();
                let rate = failures as f64 / seen.max(1) as f64;
                if seen >= self.config.min_messages as usize && rate >= self.config.failure_rate {
                    tracing::warn!(
                        plugin = %self.plugin,
                        failures,
                        messages = seen,
                        window_ms = self.config.window_ms,
                        cooldown_ms = self.config.cooldown_ms,
                        "kill switch open: the plugin fails too often; consumption paused"
                    );
                    state.mode = Mode::Open {
                        until: now + cooldown,
                    };
                    state.window.clear();
                }
            }
        }
    }

    /// A delivery handed out was set aside before any handler ran: it says nothing about the
    /// plugin, so a trial that ended that way lets the next delivery through.
    pub fn record_set_aside(&self) {
        let mut state = self.state();
        if matches!(state.mode, Mode::Probing) {
            state.mode = Mode::Open {
                until: Instant::now(),
            };
        }
    }

    /// Whether deliveries are held back now.
    pub fn is_open(&self) -> bool {
        !matches!(self.state().mode, Mode::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(cooldown_ms: u64) -> KillSwitch {
        KillSwitch::new(
            "payment",
            KillSwitchConfig {
                failure_rate: 0.5,
                window_ms: 60_000,
                min_messages: 4,
                cooldown_ms,
            },
        )
    }

    #[test]
    fn opens_at_the_rate_once_the_window_holds_enough() {
        let switch = switch(60_000);
        for failed in [true, true, true] {
            switch.record(failed);
        }
        assert_eq!(switch.admit(), Admission::Go, "three outcomes are too few");
        switch.record(false);
        assert!(
            matches!(switch.admit(), Admission::Wait(_)),
            "3 of 4 failed"
        );
    }

    #[test]
    fn half_open_lets_one_through_and_closes_on_success_or_opens_on_failure() {
        let switch = switch(1);
        for _ in 0..4 {
            switch.record(true);
        }
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(switch.admit(), Admission::Go, "the trial message");
        assert_eq!(switch.admit(), Admission::Wait(PROBE_POLL), "only one");
        switch.record(true);
        assert!(switch.is_open());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(switch.admit(), Admission::Go);
        switch.record(false);
        assert!(!switch.is_open());
        assert_eq!(switch.admit(), Admission::Go);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let bad = KillSwitchConfig {
            failure_rate: 1.5,
            ..KillSwitchConfig::default()
        };
        let error = bad.validate("plugins.payment.kill_switch").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("plugins.payment.kill_switch.failure_rate = 1.5")
        );
    }
}
