//! The host's configuration: one TOML file, overridden by command-line flags and `COURIER_*`
//! environment variables, plus an optional sidecar `<plugin>.toml` beside each `.wasm` file.
//!
//! Every table rejects unknown keys, and every value is checked at start-up; an error names
//! the file and the key. Precedence, lowest first: built-in defaults, the `[defaults]` table,
//! the plugin's sidecar file, the host file's `[plugins.<name>]` table.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::inbox::InboxConfig;
use crate::killswitch::KillSwitchConfig;

/// The whole host configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Broker URL: `memory://` (the embedded broker, the default) or `amqp://…`.
    pub broker: Option<String>,
    /// Directory of `.wasm` plugins (and their sidecar `.toml` files).
    pub plugins_dir: Option<PathBuf>,
    pub admin: AdminConfig,
    pub engine: EngineConfig,
    pub memory_broker: MemoryBrokerConfig,
    pub amqp: AmqpConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub reload: ReloadConfig,
    /// De-duplication of redelivered messages (RabbitMQ only).
    pub inbox: InboxConfig,
    /// Settings every plugin starts from.
    pub defaults: PluginOverrides,
    /// Settings for one plugin, by plugin name.
    pub plugins: BTreeMap<String, PluginOverrides>,
    /// Rules that give a message its session id from a field of its body, for messages
    /// published without one (see [`crate::session`]).
    pub session_keys: Vec<crate::session::SessionKeyRule>,
}

/// The admin HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub enabled: bool,
    /// Loopback by default; binding anywhere else requires `token`.
    pub listen: SocketAddr,
    /// Bearer token required on every request except health checks, when set.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 7411)),
            token: None,
        }
    }
}

/// The WebAssembly engine, shared by all plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Instances alive at once across all plugins (the pooling allocator's slots).
    pub max_instances: u32,
    /// The largest linear memory any plugin may be granted, in MiB.
    pub max_memory_mib: u64,
    /// How often deadlines are checked, in milliseconds.
    pub epoch_tick_ms: u64,
    /// A lane whose handler calls take less than this, in µs, keeps its plugin's consumer
    /// from one delivery to the next (0: lanes always hand it on).
    pub short_call_us: u64,
    /// Keep compiled plugins on disk, so a restart or a swap back to a known version does
    /// not compile again.
    pub cache: bool,
    /// Where compiled plugins are kept; `courier run --cache-dir` overrides it.
    pub cache_dir: PathBuf,
    /// The cache's size, in MiB: past it, the entries used least recently are removed.
    pub cache_max_mib: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_instances: 1000,
            max_memory_mib: 256,
            epoch_tick_ms: 5,
            short_call_us: 100,
            cache: true,
            cache_dir: PathBuf::from("courier-cache"),
            cache_max_mib: 2048,
        }
    }
}

/// Hot reload: how the plugins directory is watched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the plugins directory and swap in what changes there.
    pub watch: bool,
    /// A file written in place (not renamed into place) is loaded once it has been quiet this
    /// long, in milliseconds.
    pub settle_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            settle_ms: 300,
        }
    }
}

impl ReloadConfig {
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
}

/// The embedded broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryBrokerConfig {
    /// Messages a queue holds (ready plus unacknowledged) before publishers wait.
    pub queue_capacity: usize,
}

impl Default for MemoryBrokerConfig {
    fn default() -> Self {
        MemoryBrokerConfig {
            queue_capacity: 10_000,
        }
    }
}

/// RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    /// Input and dead-letter queues: `quorum` (replicated, the default) or `classic`.
    pub queue_type: QueueType,
    /// How long start-up, and a publish while the broker is away, wait for a connection.
    pub connect_timeout_ms: u64,
    /// The longest pause between reconnection attempts.
    pub max_reconnect_backoff_ms: u64,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            queue_type: QueueType::Quorum,
            connect_timeout_ms: 10_000,
            max_reconnect_backoff_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Quorum,
    Classic,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,courier::guest=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            filter: "info".to_owned(),
        }
    }
}

/// Traces: a span per handled message, exported over OTLP when an endpoint is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP receiver, e.g. `http://otel-collector:4318`; `/v1/traces` is
    /// appended. Unset: no spans leave the process (they still give log lines their context).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0. A message that arrives with a trace context
    /// follows its sender's decision.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "courier".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    /// The URL spans are posted to, if export is on.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?.trim_end_matches('/');
        Some(format!("{base}/v1/traces"))
    }

    fn validate(&self) -> Result<()> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let shown = redact_url(endpoint);
            let rest = endpoint.strip_prefix("http://").with_context(|| {
                format!(
                    "telemetry.otlp_endpoint `{shown}` must be an http:// URL \
                     (OTLP over HTTP; for TLS, export through a local collector)"
                )
            })?;
            if rest.is_empty() || rest.starts_with('/') {
                bail!("telemetry.otlp_endpoint `{shown}` names no host");
            }
        }
        if self.service_name.trim().is_empty() {
            bail!("telemetry.service_name must not be empty");
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            bail!(
                "telemetry.sample_ratio = {} is out of range: 0.0 to 1.0",
                self.sample_ratio
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// What becomes of a message whose expiry time passed before it was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiredPolicy {
    /// Moved to `<queue>_expired` with the fault headers, where it can be looked at.
    #[default]
    DeadLetter,
    /// Acknowledged and counted, not kept. What the broker itself expired into
    /// `<queue>_expired` is taken from there and dropped too.
    Drop,
}

/// Whether a plugin gets a fresh instance per message or reuses one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstancePolicy {
    /// A fresh store and instance for every message: nothing leaks between messages.
    Fresh,
    /// Instances are kept and reused, recycled after a trap and after `recycle_after`
    /// messages. Faster for guests with costly start-up, but state written by one message
    /// is visible to the next handled by the same instance.
    Reuse,
}

/// Settings of one plugin, every key optional: the layers above fill what is missing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginOverrides {
    /// Handler calls at once; the consumer's prefetch is twice this.
    pub concurrency: Option<u32>,
    /// Longest a handler may run for one message, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Linear memory the plugin may grow to, in MiB.
    pub memory_mib: Option<u64>,
    /// Most messages one handler call may publish, send or reply.
    pub max_publishes: Option<u32>,
    /// Largest body accepted, consumed or published, in bytes.
    pub max_message_bytes: Option<u64>,
    /// Further calls, each on a fresh instance, right after a `retry` or a trap.
    pub immediate_retries: Option<u32>,
    /// Delays before each redelivery once the immediate retries are spent; the broker holds
    /// the message meanwhile. `[]`: none.
    pub redelivery_delays_ms: Option<Vec<u64>>,
    /// The redelivery delays as an exponential series instead of a list.
    pub redelivery_backoff: Option<Backoff>,
    pub instance: Option<InstancePolicy>,
    /// `dead-letter` (the default) or `drop`: what becomes of an expired message.
    pub expired: Option<ExpiredPolicy>,
    /// With `instance = "reuse"`: messages an instance handles before it is replaced.
    pub recycle_after: Option<u64>,
    /// With `instance = "reuse"`: an instance whose linear memory has grown past this many
    /// MiB is replaced once its message is handled.
    pub recycle_above_mib: Option<u64>,
    /// Pause consumption while the plugin fails too often; off unless set.
    pub kill_switch: Option<KillSwitchConfig>,
    /// Handle messages of one session id strictly in order, one at a time (see
    /// [`crate::session`]).
    pub ordered: Option<bool>,
    /// With `ordered`, on RabbitMQ: the partition queues the endpoint's keys are spread over,
    /// each consumed by one host at a time.
    pub partitions: Option<u16>,
    /// Settings the plugin reads with `config.get`; nested tables flatten to dotted keys.
    #[serde(default)]
    pub config: toml::Table,
    /// In a sidecar only: who a component of a foreign world is, since it cannot say so
    /// itself (see [`ForeignConfig`]).
    pub foreign: Option<ForeignConfig>,
}

/// The `[foreign]` table of a sidecar: what a component written for `wasi:messaging` or
/// `wasmcloud:messaging` cannot say about itself, since those worlds have no `describe`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForeignConfig {
    /// The plugin's name: its endpoint, the queue it consumes.
    pub name: String,
    pub version: String,
    /// The message type URNs delivered to its handler.
    pub subscriptions: Vec<String>,
    /// Message type → endpoint: a message the component sends on one of these topics goes to
    /// that endpoint as a command; any other topic is published as an event.
    #[serde(default)]
    pub send_to: BTreeMap<String, String>,
    /// The content type of what the component sends when it does not set one; by default the
    /// content type of the message it is handling.
    pub content_type: Option<String>,
}

/// Redelivery delays that grow by `factor` from `first_ms`, capped at `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub first_ms: u64,
    #[serde(default = "Backoff::default_factor")]
    pub factor: f64,
    pub max_ms: u64,
    /// Redeliveries.
    pub count: u32,
}

impl Backoff {
    fn default_factor() -> f64 {
        2.0
    }

    fn delays(&self) -> Vec<Duration> {
        let mut delay = self.first_ms as f64;
        (0..self.count)
            .map(|_| {
                let ms = delay.min(self.max_ms as f64);
                delay *= self.factor;
                Duration::from_millis(ms as u64)
            })
            .collect()
    }
}

/// What happens to a message whose handler fails transiently (`retry`, or a trap).
///
/// Handler calls are grouped in rounds of `1 + immediate` calls; after each round but the
/// last the message is redelivered after the round's delay. The attempt number travels with
/// the message, so a round survives a restart of the host. A message fails for good after
/// `(1 + immediate) × (1 + delays.len())` calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub immediate: u32,
    pub delays: Vec<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            immediate: 2,
            delays: [1_000, 10_000, 60_000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
        }
    }
}

/// What to do after a transient failure on a given attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAttempt {
    /// Call the handler again now.
    Immediate,
    /// Redeliver through the broker after this delay.
    Redeliver(Duration),
    /// Every attempt is spent.
    GiveUp,
}

impl RetryPolicy {
    /// Handler calls before a message fails for good.
    pub fn total_attempts(&self) -> u64 {
        (u64::from(self.immediate) + 1) * (self.delays.len() as u64 + 1)
    }

    /// What follows a transient failure of call number `attempt` (1-based).
    pub fn after_failure(&self, attempt: u32) -> NextAttempt {
        let per_round = self.immediate.saturating_add(1);
        let index = attempt.max(1) - 1;
        let round = (index / per_round) as usize;
        if index % per_round < self.immediate {
            NextAttempt::Immediate
        } else if let Some(delay) = self.delays.get(round) {
            NextAttempt::Redeliver(*delay)
        } else {
            NextAttempt::GiveUp
        }
    }
}

/// A plugin's settings once every layer has been applied.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    pub concurrency: u32,
    pub deadline: Duration,
    pub memory_bytes: u64,
    pub max_publishes: u32,
    pub max_message_bytes: u64,
    pub retry: RetryPolicy,
    pub kill_switch: Option<KillSwitchConfig>,
    pub instance: InstancePolicy,
    pub expired: ExpiredPolicy,
    pub recycle_after: u64,
    /// With `reuse`: replace an instance whose linear memory is larger than this.
    pub recycle_above_bytes: Option<u64>,
    pub ordered: bool,
    pub partitions: u16,
    pub config: BTreeMap<String, String>,
    /// From the sidecar's `[foreign]` table, for a component of a foreign world.
    pub foreign: Option<ForeignConfig>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            concurrency: 4,
            deadline: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            max_publishes: 100,
            max_message_bytes: 1 << 20,
            retry: RetryPolicy::default(),
            kill_switch: None,
            instance: InstancePolicy::Fresh,
            expired: ExpiredPolicy::DeadLetter,
            recycle_after: 10_000,
            recycle_above_bytes: None,
            ordered: false,
            partitions: 4,
            config: BTreeMap::new(),
            foreign: None,
        }
    }
}

impl PluginOverrides {
    /// Reads a sidecar file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
    }

    /// Applies the keys this layer sets on top of `settings`; `origin` names the layer in errors
    /// (`plugins.payment`, `payment.toml`).
    pub fn apply(
        &self,
        settings: &mut PluginSettings,
        origin: &str,
        max_memory_mib: u64,
    ) -> Result<()> {
        let key = |name: &str| format!("{origin}.{name}");
        if let Some(v) = self.concurrency {
            ensure_range(&key("concurrency"), u64::from(v), 1, 1024)?;
            settings.concurrency = v;
        }
        if let Some(v) = self.deadline_ms {
            ensure_range(&key("deadline_ms"), v, 1, 3_600_000)?;
            settings.deadline = Duration::from_millis(v);
        }
        if let Some(v) = self.memory_mib {
            ensure_range(&key("memory_mib"), v, 1, max_memory_mib)
                .context("raise engine.max_memory_mib to grant more")?;
            settings.memory_bytes = v << 20;
        }
        if let Some(v) = self.max_publishes {
            ensure_range(&key("max_publishes"), u64::from(v), 0, 100_000)?;
            settings.max_publishes = v;
        }
        if let Some(v) = self.max_message_bytes {
            ensure_range(&key("max_message_bytes"), v, 1, 128 << 20)?;
            settings.max_message_bytes = v;
        }
        if let Some(v) = self.immediate_retries {
            ensure_range(&key("immediate_retries"), u64::from(v), 0, 100)?;
            settings.retry.immediate = v;
        }
        match (&self.redelivery_delays_ms, &self.redelivery_backoff) {
            (Some(_), Some(_)) => bail!(
                "{} and {} are both set: give the delays as a list or as a backoff, not both",
                key("redelivery_delays_ms"),
                key("redelivery_backoff")
            ),
            (Some(list), None) => {
                ensure_range(&key("redelivery_delays_ms"), list.len() as u64, 0, 100)
                    .context("that many redeliveries")?;
                for ms in list {
                    ensure_range(&key("redelivery_delays_ms"), *ms, 1, 7 * 86_400_000)?;
                }
                settings.retry.delays = list.iter().copied().map(Duration::from_millis).collect();
            }
            (None, Some(backoff)) => {
                let origin = key("redelivery_backoff");
                ensure_range(
                    &format!("{origin}.first_ms"),
                    backoff.first_ms,
                    1,
                    7 * 86_400_000,
                )?;
                ensure_range(
                    &format!("{origin}.max_ms"),
                    backoff.max_ms,
                    backoff.first_ms,
                    7 * 86_400_000,
                )?;
                ensure_range(&format!("{origin}.count"), u64::from(backoff.count), 0, 100)?;
                if !(1.0..=100.0).contains(&backoff.factor) {
                    bail!(
                        "{origin}.factor = {} is out of range: it must be between 1 and 100",
                        backoff.factor
                    );
                }
                settings.retry.delays = backoff.delays();
            }
            (None, None) => {}
        }
        if let Some(v) = self.instance {
            settings.instance = v;
        }
        if let Some(v) = self.expired {
            settings.expired = v;
        }
        if let Some(v) = self.kill_switch {
            v.validate(&key("kill_switch"))?;
            settings.kill_switch = Some(v);
        }
        if let Some(v) = self.recycle_after {
            ensure_range(&key("recycle_after"), v, 1, u64::MAX)?;
            settings.recycle_after = v;
        }
        if let Some(v) = self.recycle_above_mib {
            ensure_range(&key("recycle_above_mib"), v, 1, 65_536)?;
            settings.recycle_above_bytes = Some(v << 20);
        }
        if let Some(v) = self.ordered {
            settings.ordered = v;
        }
        if let Some(v) = self.partitions {
            ensure_range(&key("partitions"), u64::from(v), 1, 256)?;
            settings.partitions = v;
        }
        flatten_config(&self.config, "", &key("config"), &mut settings.config)?;
        Ok(())
    }
}

fn ensure_range(key: &str, value: u64, min: u64, max: u64) -> Result<()> {
    if value < min || value > max {
        bail!("{key} = {value} is out of range: it must be between {min} and {max}");
    }
    Ok(())
}

fn flatten_config(
    table: &toml::Table,
    prefix: &str,
    origin: &str,
    out: &mut BTreeMap<String, String>,
) -> Result<()> {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Table(inner) => {
                flatten_config(inner, &key, origin, out)?;
                continue;
            }
            toml::Value::Array(_) => {
                bail!("{origin}.{key}: arrays are not supported in plugin config; use a string")
            }
        };
        out.insert(key, text);
    }
    Ok(())
}

impl HostConfig {
    /// Reads and checks a host configuration file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config = Self::parse_file(path)?;
        config
            .validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// Reads a configuration file without checking it, for a caller that completes it first
    /// (flags, environment variables) and then calls [`HostConfig::validate`].
    pub fn parse_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "invalid config file {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })
    }

    /// Parses and checks a host configuration.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: HostConfig = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!(e.to_string().trim_end().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges, and the admin API's exposure.
    pub fn validate(&self) -> Result<()> {
        ensure_range(
            "engine.max_instances",
            u64::from(self.engine.max_instances),
            1,
            100_000,
        )?;
        ensure_range("engine.max_memory_mib", self.engine.max_memory_mib, 1, 4096)?;
        self.inbox.validate()?;
        self.telemetry.validate()?;
        for (index, rule) in self.session_keys.iter().enumerate() {
            rule.validate(&format!("session_keys[{index}]"))?;
        }
        ensure_range("engine.epoch_tick_ms", self.engine.epoch_tick_ms, 1, 1000)?;
        ensure_range(
            "engine.short_call_us",
            self.engine.short_call_us,
            0,
            1_000_000,
        )?;
        if self.engine.cache && self.engine.cache_dir.as_os_str().is_empty() {
            bail!("engine.cache_dir must not be empty while engine.cache is on");
        }
        ensure_range(
            "engine.cache_max_mib",
            self.engine.cache_max_mib,
            16,
            1 << 20,
        )?;
        ensure_range("reload.settle_ms", self.reload.settle_ms, 10, 60_000)?;
        ensure_range(
            "memory_broker.queue_capacity",
            self.memory_broker.queue_capacity as u64,
            1,
            10_000_000,
        )?;
        ensure_range(
            "amqp.connect_timeout_ms",
            self.amqp.connect_timeout_ms,
            100,
            600_000,
        )?;
        ensure_range(
            "amqp.max_reconnect_backoff_ms",
            self.amqp.max_reconnect_backoff_ms,
            100,
            600_000,
        )?;
        if let Some(broker) = &self.broker {
            BrokerUrl::parse(broker).context("broker")?;
        }
        if self.admin.enabled
            && !self.admin.listen.ip().is_loopback()
            && self.admin.token.as_deref().is_none_or(str::is_empty)
        {
            bail!(
                "admin.listen = {} is not a loopback address, so admin.token must be set",
                self.admin.listen
            );
        }
        if self.defaults.foreign.is_some() {
            bail!("defaults.foreign: a [foreign] table belongs in a plugin's sidecar file");
        }
        if let Some(name) = self
            .plugins
            .iter()
            .find_map(|(n, o)| o.foreign.as_ref().map(|_| n))
        {
            bail!("plugins.{name}.foreign: a [foreign] table belongs in the plugin's sidecar file");
        }
        // Check every layer now, so a bad value fails start-up rather than a later load.
        let mut probe = PluginSettings::default();
        self.defaults
            .apply(&mut probe, "defaults", self.engine.max_memory_mib)?;
        for (name, overrides) in &self.plugins {
            overrides.apply(
                &mut probe.clone(),
                &format!("plugins.{name}"),
                self.engine.max_memory_mib,
            )?;
        }
        Ok(())
    }

    /// The settings of plugin `name`, whose sidecar file (if any) is `sidecar`.
    pub fn plugin_settings(
        &self,
        name: &str,
        sidecar: Option<(&Path, &PluginOverrides)>,
    ) -> Result<PluginSettings> {
        let mut settings = PluginSettings::default();
        let max = self.engine.max_memory_mib;
        self.defaults.apply(&mut settings, "defaults", max)?;
        if let Some((path, overrides)) = sidecar {
            let origin = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            overrides.apply(&mut settings, &origin, max)?;
            settings.foreign.clone_from(&overrides.foreign);
        }
        if let Some(overrides) = self.plugins.get(name) {
            overrides.apply(&mut settings, &format!("plugins.{name}"), max)?;
        }
        if let Some(mark) = settings.recycle_above_bytes
            && mark >= settings.memory_bytes
        {
            bail!(
                "plugin {name}: recycle_above_mib = {} must be below its memory_mib = {}, or it never applies",
                mark >> 20,
                settings.memory_bytes >> 20
            );
        }
        Ok(settings)
    }
}

/// Which broker to use, parsed from a URL.
#[derive(Clone, PartialEq, Eq)]
pub enum BrokerUrl {
    /// The embedded broker, `memory://`.
    Memory,
    /// RabbitMQ, `amqp://` or `amqps://`.
    Amqp(String),
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<Self> {
        if url == "memory://" || url == "memory" {
            Ok(BrokerUrl::Memory)
        } else if url.starts_with("amqp://") || url.starts_with("amqps://") {
            Ok(BrokerUrl::Amqp(url.to_owned()))
        } else {
            bail!(
                "unsupported broker URL `{}`: use memory:// or amqp://user:password@host:port/vhost",
                redact_url(url)
            )
        }
    }
}

/// Shows the URL with any password replaced, so broker credentials never reach a log.
impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerUrl::Memory => f.write_str("memory://"),
            BrokerUrl::Amqp(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let redacted = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    match path {
        Some(path) => format!("{scheme}://{redacted}/{path}"),
        None => format!("{scheme}://{redacted}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = HostConfig::from_toml("").unwrap();
        assert_eq!(
            config.plugin_settings("any", None).unwrap(),
            PluginSettings::default()
        );
        assert!(config.admin.listen.ip().is_loopback());
    }

    #[test]
    fn layers_apply_in_order_and_config_tables_flatten() {
        let config = HostConfig::from_toml(
            r#"
            [defaults]
            concurrency = 2
            deadline_ms = 100
            [plugins.inventory]
            concurrency = 8
            [plugins.inventory.config]
            stock.WIDGET = 10
            carrier = "Post"
            "#,
        )
        .unwrap();
        let sidecar = PluginOverrides {
            deadline_ms: Some(250),
            concurrency: Some(3),
            ..Default::default()
        };
        let settings = config
            .plugin_settings("inventory", Some((Path::new("inventory.toml"), &sidecar)))
            .unwrap();
        assert_eq!(settings.concurrency, 8, "host file beats sidecar");
        assert_eq!(
            settings.deadline,
            Duration::from_millis(250),
            "sidecar beats defaults"
        );
        assert_eq!(
            settings.config.get("stock.WIDGET").map(String::as_str),
            Some("10")
        );
        assert_eq!(
            settings.config.get("carrier").map(String::as_str),
            Some("Post")
        );
    }

    /// Each bad file beside the text its error must contain.
    #[test]
    fn bad_configs_fail_naming_the_key() {
        let cases = [
            ("brokr = \"memory://\"", "unknown field `brokr`"),
            ("[engine]\nmax_instance = 3", "unknown field `max_instance`"),
            (
                "[defaults]\nconcurrency = 0",
                "defaults.concurrency = 0 is out of range",
            ),
            (
                "[plugins.payment]\nmemory_mib = 9000",
                "plugins.payment.memory_mib = 9000 is out of range",
            ),
            ("[plugins.payment]\nretries = 3", "unknown field `retries`"),
            (
                "[defaults.foreign]\nname = \"a\"\nversion = \"1\"\nsubscriptions = []",
                "defaults.foreign: a [foreign] table belongs in a plugin's sidecar file",
            ),
            (
                "[plugins.relay.foreign]\nname = \"a\"\nversion = \"1\"\nsubscriptions = []",
                "plugins.relay.foreign: a [foreign] table belongs",
            ),
            (
                "[plugins.relay.foreign]\nname = \"a\"\nversion = \"1\"\nsubscription = []",
                "unknown field `subscription`",
            ),
            (
                "[plugins.payment]\nrecycle_above_mib = 0",
                "plugins.payment.recycle_above_mib = 0 is out of range",
            ),
            (
                "[plugins.payment.config]\nlimits = [1, 2]",
                "plugins.payment.config.limits: arrays are not supported",
            ),
            (
                "broker = \"kafka://x\"",
                "unsupported broker URL `kafka://x`",
            ),
            (
                "[admin]\nlisten = \"0.0.0.0:7411\"",
                "admin.token must be set",
            ),
            (
                "[defaults]\ninstance = \"shared\"",
                "unknown variant `shared`",
            ),
            ("[defaults]\nconcurrency = \"four\"", "invalid type"),
            (
                "[amqp]\nqueue_type = \"stream\"",
                "unknown variant `stream`",
            ),
            (
                "[amqp]\nconnect_timeout_ms = 5",
                "amqp.connect_timeout_ms = 5 is out of range",
            ),
            (
                "[defaults]\nredelivery_delays_ms = [10]\nredelivery_backoff = { first_ms = 1, max_ms = 2, count = 1 }",
                "defaults.redelivery_delays_ms and defaults.redelivery_backoff are both set",
            ),
            (
                "[plugins.payment]\nredelivery_delays_ms = [0]",
                "plugins.payment.redelivery_delays_ms = 0 is out of range",
            ),
            (
                "[defaults]\nredelivery_backoff = { first_ms = 100, max_ms = 50, count = 2 }",
                "defaults.redelivery_backoff.max_ms = 50 is out of range",
            ),
            (
                "[telemetry]\notlp_endpoint = \"https://collector:4318\"",
                "telemetry.otlp_endpoint `https://collector:4318` must be an http:// URL",
            ),
            (
                // The password is not shown.
                "[telemetry]\notlp_endpoint = \"https://otel:hunter2@collector:4318\"",
                "telemetry.otlp_endpoint `https://otel:***@collector:4318` must be an http:// URL",
            ),
            ("[defaults]\nexpired = \"keep\"", "unknown variant `keep`"),
            (
                "[telemetry]\nsample_ratio = 1.5",
                "telemetry.sample_ratio = 1.5 is out of range",
            ),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", HostConfig::from_toml(text).unwrap_err());
            assert!(
                error.contains(expected),
                "config {text:?}: expected {expected:?} in {error:?}"
            );
        }
    }

    #[test]
    fn redelivery_delays_come_as_a_list_or_as_a_capped_series() {
        let config = HostConfig::from_toml(
            "[defaults]\nimmediate_retries = 0\nredelivery_backoff = { first_ms = 100, factor = 3.0, max_ms = 1000, count = 4 }\n[plugins.payment]\nredelivery_delays_ms = [5]",
        )
        .unwrap();
        let inventory = config.plugin_settings("inventory", None).unwrap();
        let ms: Vec<u128> = inventory
            .retry
            .delays
            .iter()
            .map(Duration::as_millis)
            .collect();
        assert_eq!(ms, [100, 300, 900, 1000]);
        assert_eq!(inventory.retry.immediate, 0);
        assert_eq!(inventory.retry.total_attempts(), 5);
        let payment = config.plugin_settings("payment", None).unwrap();
        assert_eq!(payment.retry.delays, [Duration::from_millis(5)]);
        assert_eq!(PluginSettings::default().retry.total_attempts(), 12);
    }

    #[test]
    fn a_recycling_mark_must_be_below_the_memory_cap() {
        let config =
            HostConfig::from_toml("[plugins.p]\nmemory_mib = 32\nrecycle_above_mib = 32").unwrap();
        let error = format!("{:#}", config.plugin_settings("p", None).unwrap_err());
        assert!(
            error.contains("recycle_above_mib = 32 must be below its memory_mib = 32"),
            "{error}"
        );
        let config =
            HostConfig::from_toml("[plugins.p]\nmemory_mib = 32\nrecycle_above_mib = 24").unwrap();
        assert_eq!(
            config
                .plugin_settings("p", None)
                .unwrap()
                .recycle_above_bytes,
            Some(24 << 20)
        );
    }

    #[test]
    fn passwords_never_show() {
        let url = BrokerUrl::parse("amqp://guest:s3cret@rabbit:5672/%2f").unwrap();
        assert_eq!(url.to_string(), "amqp://guest:***@rabbit:5672/%2f");
        assert_eq!(format!("{url:?}"), "amqp://guest:***@rabbit:5672/%2f");
        let error = BrokerUrl::parse("nats://u:s3cret@host")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
        assert_eq!(redact_url("amqp://host"), "amqp://host");
    }
}
