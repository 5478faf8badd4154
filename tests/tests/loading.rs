//! Loading plugins: what is refused, why, and what the host says about a component.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::sync::Arc;

use courier_host::inspect::inspect;
use courier_host::{CourierEngine, Host, HostConfig, PluginSettings};
use courier_tests::*;
use serde_json::json;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_component_without_the_handler_export_is_refused_naming_the_file() {
    let host = host_with("", &[]).await;
    let error = format!(
        "{:#}",
        host.load_plugin(&plugin_file("no-exports"))
            .await
            .unwrap_err()
    );
    assert!(error.contains("no_exports.wasm"), "{error}");
    assert!(
        error.contains("does not export `courier:bus/handler@0.1.0`"),
        "{error}"
    );
}

#[tokio::test]
async fn files_that_are_not_components_are_refused_naming_the_file() {
    let dir = temp_dir("garbage");
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").unwrap();
    let truncated = dir.join("truncated.wasm");
    let probe = std::fs::read(plugin_file("probe")).unwrap();
    std::fs::write(&truncated, &probe[..probe.len() / 2]).unwrap();
    let host = host_with("", &[]).await;
    for file in [&garbage, &truncated] {
        let error = format!("{:#}", host.load_plugin(file).await.unwrap_err());
        assert!(error.contains(&file.display().to_string()), "{error}");
        assert!(
            error.contains("not a valid WebAssembly component"),
            "{error}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A directory with good and bad files: the good ones load, each bad one is refused with its
/// reason, and the host serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_directory_loads_what_it_can_and_reports_the_rest() {
    let dir = temp_dir("plugins-dir");
    std::fs::copy(plugin_file("probe"), dir.join("probe.wasm")).unwrap();
    std::fs::copy(plugin_file("no-exports"), dir.join("no-exports.wasm")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a plugin").unwrap();
    std::fs::write(
        dir.join("probe.toml"),
        "deadline_ms = 250\n[config]\ngreeting = \"from the sidecar\"\n",
    )
    .unwrap();
    let mut config = HostConfig::default();
    config.admin.enabled = false;
    use_test_cache(&mut config);
    let host = Arc::new(Host::new(config).await.unwrap());
    let loaded = host.load_plugins_dir(&dir).await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].settings().deadline.as_millis(),
        250,
        "the sidecar applies"
    );
    let refused = host.refused();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].file.ends_with("no-exports.wasm"));

    let mut tap = Tap::new(&host, "tap", &[&test_type("ConfigValue")]).await;
    publish(&host, &test_type("ReadConfig"), json!({"key": "greeting"})).await;
    assert_eq!(body_json(&tap.next().await)["value"], "from the sidecar");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_bad_sidecar_refuses_the_plugin_naming_the_key() {
    let dir = temp_dir("bad-sidecar");
    std::fs::copy(plugin_file("probe"), dir.join("probe.wasm")).unwrap();
    std::fs::write(dir.join("probe.toml"), "concurrency = 0\n").unwrap();
    let host = host_with("", &[]).await;
    let error = format!(
        "{:#}",
        host.load_plugin(&dir.join("probe.wasm")).await.unwrap_err()
    );
    assert!(
        error.contains("probe.toml.concurrency = 0 is out of range"),
        "{error}"
    );
    std::fs::write(dir.join("probe.toml"), "concurency = 2\n").unwrap();
    let error = format!(
        "{:#}",
        host.load_plugin(&dir.join("probe.wasm")).await.unwrap_err()
    );
    assert!(error.contains("unknown field `concurency`"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn two_plugins_with_one_name_are_refused() {
    let dir = temp_dir("duplicate");
    std::fs::copy(plugin_file("probe"), dir.join("copy.wasm")).unwrap();
    let host = host_with("", &["probe"]).await;
    let error = format!(
        "{:#}",
        host.load_plugin(&dir.join("copy.wasm")).await.unwrap_err()
    );
    assert!(error.contains("already taken"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_shows_the_world_the_plugin_and_its_imports() {
    let engine = CourierEngine::new(&test_engine_config()).unwrap();
    let payment = inspect(&engine, &plugin_file("payment")).unwrap();
    assert_eq!(payment.world.as_deref(), Some("courier:bus/plugin@0.1.0"));
    assert_eq!(payment.name.as_deref(), Some("payment"));
    assert_eq!(payment.subscriptions, ["urn:message:Orders:OrderPlaced"]);
    assert!(
        payment.imports.iter().any(|i| i == "courier:bus/bus@0.1.0"),
        "{:?}",
        payment.imports
    );
    assert!(
        payment
            .exports
            .iter()
            .any(|e| e == "courier:bus/handler@0.1.0")
    );
    assert!(payment.refusal.is_none());
    let text = payment.to_string();
    assert!(text.contains("plugin:        payment 0.1.0"), "{text}");

    let other = inspect(&engine, &plugin_file("no-exports")).unwrap();
    assert!(other.world.is_none());
    assert!(other.refusal.unwrap().contains("does not export"));
}

/// The same component in the same engine, invoked directly: every follow-up id is a function
/// of the consumed message's id and the publish's index.
#[test]
fn a_plugin_invoked_twice_with_one_message_stages_the_same_ids() {
    let engine = CourierEngine::new(&test_engine_config()).unwrap();
    let plugin = courier_host::Plugin::load(&engine, &plugin_file("probe"), |_| {
        Ok(PluginSettings::default())
    })
    .unwrap();
    let message = courier_host::PublishRequest::new(test_type("Ping"), json!({"n": 1}))
        .into_outbound("test")
        .unwrap()
        .envelope;
    let first = plugin.invoke(&message, "probe");
    let second = plugin.invoke(&message, "probe");
    assert_eq!(first.outcome, courier_host::Outcome::Handled);
    let ids = |inv: &courier_host::Invocation| {
        inv.outbox
            .iter()
            .map(|o| o.envelope.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first).len(), 1);
    assert_eq!(ids(&first), ids(&second));
}

/// Guest stdout and stderr become log events carrying the plugin and the message id.
#[test]
fn guest_output_becomes_log_events_tagged_with_plugin_and_message() {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let engine = CourierEngine::new(&test_engine_config()).unwrap();
    let plugin = courier_host::Plugin::load(&engine, &plugin_file("probe"), |_| {
        Ok(PluginSettings::default())
    })
    .unwrap();
    let message = courier_host::PublishRequest::new(
        test_type("Print"),
        json!({"text": "hello from the guest"}),
    )
    .into_outbound("test")
    .unwrap()
    .envelope;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let invocation =
        tracing::subscriber::with_default(subscriber, || plugin.invoke(&message, "probe"));
    assert_eq!(invocation.outcome, courier_host::Outcome::Handled);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("hello from the guest"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one line from stdout, one from stderr: {log}"
    );
    for line in lines {
        assert!(line.contains("plugin=\"probe\""), "{line}");
        assert!(line.contains(&message.id), "{line}");
    }
}

#[tokio::test]
async fn plugins_whose_concurrency_exceeds_the_instance_pool_are_refused() {
    let host = host_with(
        "[engine]\nmax_instances = 8\n[defaults]\nconcurrency = 4",
        &["probe"],
    )
    .await;
    let error = format!(
        "{:#}",
        host.load_plugin(&plugin_file("mirror")).await.unwrap_err()
    );
    assert!(
        error.contains("does not fit in the instance pool"),
        "{error}"
    );
    assert!(error.contains("engine.max_instances"), "{error}");
}
