//! Components written for another messaging world, run unmodified: the fixtures `wasi-relay`
//! (`wasi:messaging@0.2.0-draft`) and `wasmcloud-relay` (`wasmcloud:messaging@0.2.0`) are built
//! from those worlds' WIT alone, without the Courier SDK. Their name and subscriptions come
//! from the `[foreign]` table of a sidecar each test writes beside a copy of the component.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use courier_host::recoverability::headers;
use courier_host::{Host, PublishRequest};
use courier_tests::*;
use serde_json::json;

/// A copy of `fixture` in a directory of the test's own, with `sidecar` beside it.
fn foreign_file(test: &str, fixture: &str, sidecar: &str) -> PathBuf {
    let dir = plugins_dir(test, &[]);
    let file = dir.join(format!("{fixture}.wasm"));
    std::fs::copy(plugin_file(fixture), &file).unwrap();
    std::fs::write(file.with_extension("toml"), sidecar).unwrap();
    file
}

/// A host on the embedded broker, and a copy of `fixture` with `sidecar` beside it.
async fn foreign_host(test: &str, fixture: &str, sidecar: &str) -> (Arc<Host>, PathBuf) {
    (
        host_with("", &[]).await,
        foreign_file(test, fixture, sidecar),
    )
}

fn wasi_sidecar() -> String {
    format!(
        r#"
immediate_retries = 0
redelivery_delays_ms = []

[foreign]
name = "relay"
version = "2.1.0"
subscriptions = ["{ping}", "{refuse}", "{flaky}", "{send_then_fail}", "{hoard}"]
send_to = {{ "{command}" = "tap" }}
"#,
        ping = test_type("Ping"),
        refuse = test_type("Refuse"),
        flaky = test_type("Flaky"),
        send_then_fail = test_type("SendThenFail"),
        hoard = test_type("Hoard"),
        command = test_type("RelayCommand"),
    )
}

/// What a wasi:messaging component sends is published, or sent where `send_to` says, with the
/// consumed message's correlation, conversation and content type, and the metadata it set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_messaging_component_handles_messages_and_its_follow_ups_are_delivered() {
    let (host, file) = foreign_host("wasi-relay", "wasi-relay", &wasi_sidecar()).await;
    let plugin = host.load_plugin(&file).await.unwrap();
    assert_eq!((plugin.name(), plugin.version()), ("relay", "2.1.0"));
    assert_eq!(
        plugin.world().name(),
        "wasi:messaging/messaging-core@0.2.0-draft"
    );

    let mut tap = Tap::new(&host, "tap", &[&test_type("Relayed")]).await;
    let mut request = PublishRequest::new(test_type("Ping"), json!({"n": 7}));
    request.content_type = Some("application/json".into());
    request.correlation_id = Some("order-7".into());
    request.headers.insert("tenant".into(), "acme".into());
    let id = host.submit(request, "test").await.unwrap();

    let mut received = tap.take(2).await;
    received.sort_by_key(|m| m.message_type.clone());
    let (command, event) = (&received[0], &received[1]);

    assert_eq!(event.message_type, test_type("Relayed"));
    assert_eq!(
        body_json(event),
        json!({"n": 7}),
        "the data is relayed as is"
    );
    assert_eq!(event.content_type, "application/json", "the consumed one's");
    assert_eq!(event.header("tenant"), Some("acme"), "metadata copied");
    assert_eq!(
        event.header("relayed-from"),
        Some(test_type("Ping").as_str())
    );
    assert_eq!(event.header("courier-handled-by"), Some("relay"));
    assert_eq!(event.header("courier-handled-by-version"), Some("2.1.0"));

    assert_eq!(command.message_type, test_type("RelayCommand"));
    assert_eq!(
        command.content_type, "application/msgpack",
        "set by the component"
    );
    assert_eq!(body_json(command), json!({"relayed": true}));

    for follow_up in [event, command] {
        assert_eq!(follow_up.initiator_id.as_deref(), Some(id.as_str()));
        assert_eq!(follow_up.correlation_id.as_deref(), Some("order-7"));
        assert_eq!(follow_up.source_address.as_deref(), Some("relay"));
    }
    assert_eq!(event.conversation_id, command.conversation_id);
    tap.expect_nothing(Duration::from_millis(200)).await;
}

/// `permission-denied` is rejected at once; the other errors are retried, then dead-lettered.
/// What the handler sent before failing is not released. Messages the component builds in the
/// host count against its memory cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_messaging_errors_are_rejected_or_retried_by_kind() {
    let (host, file) = foreign_host("wasi-relay-errors", "wasi-relay", &wasi_sidecar()).await;
    host.load_plugin(&file).await.unwrap();
    let mut leaked = Tap::new(&host, "tap", &[&test_type("Relayed")]).await;
    for name in ["Refuse", "Flaky", "SendThenFail", "Hoard"] {
        publish(&host, &test_type(name), json!({})).await;
    }
    let failed = drain_queue(&host, "relay_error", 4).await;
    leaked.expect_nothing(Duration::from_millis(300)).await;
    let fault = |name: &str| {
        let m = failed
            .iter()
            .find(|m| m.message_type == test_type(name))
            .unwrap_or_else(|| panic!("no dead letter for {name}"));
        (
            m.header(headers::REASON).unwrap().to_owned(),
            m.header(headers::MESSAGE).unwrap().to_owned(),
        )
    };
    let (reason, message) = fault("Refuse");
    assert_eq!(reason, "rejected");
    assert!(
        message.contains("permission denied: this relay refuses such messages"),
        "{message}"
    );
    let (reason, message) = fault("Flaky");
    assert_eq!(reason, "retries-exhausted");
    assert!(message.contains("no handling for"), "{message}");
    let (reason, message) = fault("SendThenFail");
    assert_eq!(reason, "retries-exhausted");
    assert!(message.contains("failed after sending"), "{message}");
    let (reason, message) = fault("Hoard");
    assert_eq!(reason, "retries-exhausted");
    assert!(
        message.contains("memory cap exceeded: the handler holds"),
        "{message}"
    );
}

/// With `instance = "reuse"`, one instance handles message after message; what it held for
/// one message is gone by the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_wasi_messaging_instance_handles_one_message_after_another() {
    let sidecar = wasi_sidecar().replace(
        "immediate_retries = 0",
        "immediate_retries = 0\ninstance = \"reuse\"\nconcurrency = 1",
    );
    let (host, file) = foreign_host("wasi-relay-reuse", "wasi-relay", &sidecar).await;
    let plugin = host.load_plugin(&file).await.unwrap();
    let mut tap = Tap::new(&host, "tap", &[&test_type("Relayed")]).await;
    for n in 0..5 {
        publish(&host, &test_type("Ping"), json!({"n": n})).await;
    }
    let mut relayed: Vec<u64> = tap
        .take(10)
        .await
        .iter()
        .filter(|m| m.message_type == test_type("Relayed"))
        .map(|m| body_json(m)["n"].as_u64().unwrap())
        .collect();
    relayed.sort_unstable();
    assert_eq!(relayed, [0, 1, 2, 3, 4]);
    assert_eq!(plugin.counts().handled(), 5);
    tap.expect_nothing(Duration::from_millis(200)).await;
}

/// A wasmCloud component's publish becomes an event with its reply-to, in the sidecar's content
/// type; a request is refused with the reason, as is a subject that is not a message type, and
/// the error the component then returns is not retried, since a retry would be refused again.
/// (The default redelivery delays would hold a retried message for over a minute.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasmcloud_messaging_component_handles_messages_and_is_told_what_it_cannot_do() {
    let sidecar = format!(
        r#"
[foreign]
name = "cloud-relay"
version = "0.3.0"
subscriptions = ["{}", "{}", "{}"]
content_type = "application/json"
"#,
        test_type("Ping"),
        test_type("Ask"),
        test_type("Stray"),
    );
    let (host, file) = foreign_host("wasmcloud-relay", "wasmcloud-relay", &sidecar).await;
    let plugin = host.load_plugin(&file).await.unwrap();
    assert_eq!(plugin.world().name(), "wasmcloud:messaging@0.2.0");

    let mut tap = Tap::new(&host, "tap", &[&test_type("Relayed")]).await;
    let mut request = PublishRequest::new(test_type("Ping"), json!({"n": 3}));
    request.correlation_id = Some("order-3".into());
    let id = host.submit(request, "test").await.unwrap();
    let event = tap.next().await;
    assert_eq!(
        event.content_type, "application/json",
        "the sidecar's, not the consumed one's"
    );
    assert_eq!(body_json(&event), json!({"relayed": true}));
    assert_eq!(event.reply_to.as_deref(), Some("wasmcloud-relay"));
    assert_eq!(event.initiator_id.as_deref(), Some(id.as_str()));
    assert_eq!(event.correlation_id.as_deref(), Some("order-3"));

    publish(&host, &test_type("Ask"), json!({})).await;
    publish(&host, &test_type("Stray"), json!({})).await;
    let failed = drain_queue(&host, "cloud-relay_error", 2).await;
    let message = |name: &str| {
        let m = failed
            .iter()
            .find(|m| m.message_type == test_type(name))
            .unwrap_or_else(|| panic!("no dead letter for {name}"));
        assert_eq!(m.header(headers::REASON), Some("rejected"), "{name}");
        m.header(headers::MESSAGE).unwrap().to_owned()
    };
    let ask = message("Ask");
    assert!(
        ask.contains("request on") && ask.contains("not supported"),
        "{ask}"
    );
    let stray = message("Stray");
    assert!(
        stray.contains("invalid:") && stray.contains("urn:message:"),
        "{stray}"
    );
    tap.expect_nothing(Duration::from_millis(200)).await;
}

/// A foreign component without its `[foreign]` table is refused with what to write, and a
/// Courier plugin with one is refused too: each names the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_foreign_table_is_required_of_foreign_components_alone() {
    let (host, file) = foreign_host("foreign-missing", "wasmcloud-relay", "").await;
    let error = format!("{:#}", host.load_plugin(&file).await.unwrap_err());
    assert!(error.contains("wasmcloud-relay.wasm"), "{error}");
    assert!(
        error.contains("wasmcloud:messaging@0.2.0")
            && error.contains("wasmcloud-relay.toml")
            && error.contains("[foreign]"),
        "{error}"
    );

    let sidecar = "[foreign]\nname = \"probe\"\nversion = \"1\"\nsubscriptions = [\"urn:message:Test:Ping\"]\n";
    let (host, file) = foreign_host("foreign-extra", "probe", sidecar).await;
    let error = format!("{:#}", host.load_plugin(&file).await.unwrap_err());
    assert!(
        error.contains("probe.wasm") && error.contains("describes itself"),
        "{error}"
    );

    let bad = "[foreign]\nname = \"relay\"\nversion = \"1\"\nsubscriptions = [\"Ping\"]\n";
    let (host, file) = foreign_host("foreign-bad", "wasi-relay", bad).await;
    let error = format!("{:#}", host.load_plugin(&file).await.unwrap_err());
    assert!(
        error.contains("[foreign]") && error.contains("urn:message:"),
        "{error}"
    );
}

/// Both worlds on RabbitMQ, beside each other: one event reaches both relays, and each one's
/// follow-ups cross the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_foreign_worlds_run_on_rabbitmq() {
    let vhost = Vhost::new("foreign");
    let host = amqp_host_with(&vhost, "", &[]).await;
    let wasi = foreign_file("foreign-amqp-wasi", "wasi-relay", &wasi_sidecar());
    let cloud = foreign_file(
        "foreign-amqp-wasmcloud",
        "wasmcloud-relay",
        &format!(
            "[foreign]\nname = \"cloud-relay\"\nversion = \"0.3.0\"\nsubscriptions = [\"{}\"]\n",
            test_type("Ping")
        ),
    );
    host.load_plugin(&wasi).await.unwrap();
    host.load_plugin(&cloud).await.unwrap();
    let mut tap = Tap::new(&host, "tap", &[&test_type("Relayed")]).await;
    let id = publish(&host, &test_type("Ping"), json!({"n": 11})).await;
    let mut received: Vec<(String, String)> = tap
        .take(3)
        .await
        .iter()
        .map(|m| {
            assert_eq!(m.initiator_id.as_deref(), Some(id.as_str()));
            (
                m.message_type.clone(),
                m.source_address.clone().unwrap_or_default(),
            )
        })
        .collect();
    received.sort();
    assert_eq!(
        received,
        [
            (test_type("RelayCommand"), "relay".to_owned()),
            (test_type("Relayed"), "cloud-relay".to_owned()),
            (test_type("Relayed"), "relay".to_owned()),
        ]
    );
    tap.expect_nothing(Duration::from_millis(300)).await;
    host.shutdown().await;
}

/// A foreign component's sidecar is found by its name, so it is deployed under one; deployed
/// without, it is refused with how to do it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_component_is_deployed_under_its_name() {
    let dir = plugins_dir("foreign-deploy", &[]);
    let host = host_with(&format!("plugins_dir = '{}'", dir.display()), &[]).await;
    let bytes = std::fs::read(plugin_file("wasmcloud-relay")).unwrap();
    let error = format!(
        "{:#}",
        host.deploy_upload(None, bytes.clone()).await.unwrap_err()
    );
    assert!(
        error.contains("--name NAME") && error.contains("[foreign]"),
        "{error}"
    );

    let sidecar = format!(
        "[foreign]\nname = \"cloud-relay\"\nversion = \"0.3.0\"\nsubscriptions = [\"{}\"]\n",
        test_type("Ping")
    );
    std::fs::write(dir.join("cloud-relay.toml"), sidecar).unwrap();
    let deployed = host
        .deploy_upload(Some("cloud-relay"), bytes)
        .await
        .unwrap();
    assert_eq!(deployed.plugin.version(), "0.3.0");
    assert!(dir.join("cloud-relay.wasm").is_file());
}

/// A file serves one plugin: a sidecar edited to give the component another name is refused,
/// and the plugin it serves goes on serving under its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_foreign_component_in_its_sidecar_is_refused() {
    let (host, file) = foreign_host("foreign-rename", "wasi-relay", &wasi_sidecar()).await;
    host.load_plugin(&file).await.unwrap();
    let renamed = wasi_sidecar().replace("name = \"relay\"", "name = \"relay-2\"");
    std::fs::write(file.with_extension("toml"), renamed).unwrap();
    let error = format!("{:#}", host.load_plugin(&file).await.unwrap_err());
    assert!(
        error.contains("now named `relay-2`, but the file serves `relay`"),
        "{error}"
    );
    let names: Vec<String> = host.plugins().iter().map(|p| p.name().to_owned()).collect();
    assert_eq!(names, ["relay"]);
}

/// `courier inspect` tells a foreign component's world whether or not it would load, and says
/// why it would not.
#[test]
fn inspect_names_the_foreign_world_and_what_is_missing() {
    let engine = courier_host::CourierEngine::new(&test_engine_config()).unwrap();
    let bare = foreign_file("foreign-inspect", "wasmcloud-relay", "");
    std::fs::remove_file(bare.with_extension("toml")).unwrap();
    let inspection = courier_host::inspect::inspect(&engine, &bare).unwrap();
    assert_eq!(
        inspection.world.as_deref(),
        Some("wasmcloud:messaging@0.2.0")
    );
    assert!(inspection.name.is_none());
    let refusal = inspection.refusal.unwrap();
    assert!(refusal.contains("[foreign]"), "{refusal}");

    let described = foreign_file("foreign-inspect-2", "wasi-relay", &wasi_sidecar());
    let inspection = courier_host::inspect::inspect(&engine, &described).unwrap();
    assert_eq!(
        inspection.world.as_deref(),
        Some("wasi:messaging/messaging-core@0.2.0-draft")
    );
    assert_eq!(inspection.name.as_deref(), Some("relay"));
    assert_eq!(inspection.subscriptions.len(), 5);
    assert!(inspection.refusal.is_none());
}
