//! Courier: a WebAssembly plugin host for message handlers.
//!
//! A [`Host`] consumes messages from a broker — the embedded [`MemoryBroker`] or RabbitMQ —
//! and hands each to a sandboxed WebAssembly component through the `courier:bus` WIT
//! contract. A handler's follow-up messages are held in an outbox and released only when it
//! succeeds; the message is acknowledged only after the broker holds them.
//!
//! ```no_run
//! use std::sync::Arc;
//! use courier_host::{Host, HostConfig, PublishRequest};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let host = Arc::new(Host::new(HostConfig::default()).await?);
//! host.load_plugins_dir("plugins".as_ref()).await?;
//! let body = serde_json::json!({"order_id": "o-1", "customer": "ada", "lines": [], "amount_cents": 500});
//! host.submit(PublishRequest::new("urn:message:Orders:OrderPlaced", body), "example").await?;
//! host.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod codecache;
pub mod config;
pub mod dispatch;
pub mod engine;
pub mod envelope;
pub mod errors;
pub mod host;
pub mod inbox;
pub mod inspect;
pub mod killswitch;
pub mod metrics;
pub mod outbox;
pub mod plugin;
pub mod publish;
pub mod recoverability;
pub mod registry;
pub mod sandbox;
pub mod scaffold;
pub mod session;
pub mod signal;
pub mod stats;
pub mod telemetry;
pub mod transport;
pub mod watch;

pub use config::{HostConfig, InstancePolicy, PluginSettings};
pub use engine::CourierEngine;
pub use envelope::Envelope;
pub use host::Host;
pub use plugin::{Invocation, Outcome, Plugin, PluginInfo};
pub use publish::PublishRequest;
pub use stats::Summary;
pub use transport::memory::MemoryBroker;
pub use transport::{Route, Transport};
