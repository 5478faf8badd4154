//! The conformance suite: the same behaviours, checked the same way, against the reference
//! plugin of every guest language (docs/conformance.md), each loaded into a real host on the
//! embedded broker.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use courier_host::recoverability::headers;
use courier_host::{Host, HostConfig, PublishRequest};
use courier_tests::*;
use serde_json::json;

/// `urn:message:Conformance:<name>`.
fn conformance_type(name: &str) -> String {
    format!("urn:message:Conformance:{name}")
}

/// The reference plugin of `language`.
fn reference_plugin(language: &str) -> PathBuf {
    match language {
        "rust" => plugin_file("conformance"),
        other => plugin_file(&format!("{other}/conformance")),
    }
}

/// A host on the embedded broker serving `language`'s reference plugin with the plugin
/// settings `settings` (TOML keys of `[plugins.conformance]`).
async fn host_for(language: &str, settings: &str) -> Arc<Host> {
    capture_logs();
    let mut config = HostConfig::from_toml(&format!("[plugins.conformance]\n{settings}")).unwrap();
    config.admin.enabled = false;
    use_test_cache(&mut config);
    let host = Arc::new(Host::new(config).await.unwrap());
    host.load_plugin(&reference_plugin(language))
        .await
        .unwrap_or_else(|e| panic!("the {language} reference plugin does not load: {e:#}"));
    host
}

/// Everything the hosts of this test binary log, guest lines included.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(Arc::default)
}

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let writer = LogWriter(logs().clone());
        tracing_subscriber::fmt()
            .with_env_filter("warn,courier::guest=info,courier::message=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
    });
}

/// Waits for a log line that holds every one of `parts`.
async fn expect_log_line(parts: &[&str]) {
    wait_until(&format!("a log line with {parts:?}"), || {
        let logs = logs().lock().unwrap();
        String::from_utf8_lossy(&logs)
            .lines()
            .any(|line| parts.iter().all(|part| line.contains(part)))
    })
    .await;
}

/// Typed decode and encode, publish, send as JSON, reply, the config, the log and the
/// envelope's ids, on fresh and on reused instances.
async fn echo(language: &str) {
    for instance in ["fresh", "reuse"] {
        let host = host_for(
            language,
            &format!("instance = \"{instance}\"\nconfig.greeting = \"hej\""),
        )
        .await;
        let mut echoed = Tap::new(&host, "tap", &[&conformance_type("Echoed")]).await;
        let mut sink = Tap::new(&host, "conformance-sink", &[]).await;
        let mut replies = Tap::new(&host, "replies", &[]).await;
        for n in 0..2 {
            let text = format!("{language}-{instance}-{n}");
            let mut request = PublishRequest::new(
                conformance_type("Echo"),
                json!({
                    "text": text,
                    "count": 41,
                    "tags": ["a", "b", "c"],
                    "nested": {"flag": true, "ratio": 0.75},
                }),
            );
            request.correlation_id = Some(format!("order-{text}"));
            request.reply_to = Some("replies".to_owned());
            let id = host.submit(request, "test").await.unwrap();

            let out = echoed.next().await;
            assert_eq!(out.content_type, "application/msgpack");
            assert_eq!(
                body_json(&out),
                json!({
                    "text": text,
                    "count": 42,
                    "tags": ["c", "b", "a"],
                    "nested": {"flag": false, "ratio": 1.5},
                    "language": language,
                    "greeting": "hej",
                })
            );
            assert_eq!(
                out.correlation_id.as_deref(),
                Some(&*format!("order-{text}"))
            );
            assert_eq!(out.conversation_id, id);
            assert_eq!(out.initiator_id.as_deref(), Some(&*id));
            assert_eq!(out.source_address.as_deref(), Some("conformance"));

            let recorded = sink.next().await;
            assert_eq!(recorded.message_type, conformance_type("Recorded"));
            assert_eq!(recorded.content_type, "application/json");
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&recorded.body).unwrap(),
                json!({"text": text})
            );
            assert_eq!(recorded.initiator_id.as_deref(), Some(&*id));

            let reply = replies.next().await;
            assert_eq!(reply.message_type, conformance_type("EchoReply"));
            assert_eq!(body_json(&reply), json!({"text": text}));

            expect_log_line(&["conformance", &format!("echo {text}")]).await;
        }
    }
}

/// A body that does not fit the typed message is rejected with the field's name.
async fn bad_bodies_are_rejected_naming_the_field(language: &str) {
    let host = host_for(language, "").await;
    let missing = json!({"text": "x", "tags": [], "nested": {"flag": true, "ratio": 1.0}});
    let wrong =
        json!({"text": "x", "count": 1, "tags": [], "nested": {"flag": "yes", "ratio": 1.0}});
    publish(&host, &conformance_type("Echo"), missing).await;
    publish(&host, &conformance_type("Echo"), wrong).await;
    let failed = drain_queue(&host, "conformance_error", 2).await;
    let mut reasons: Vec<String> = failed
        .iter()
        .map(|m| {
            assert_eq!(m.header(headers::REASON), Some("rejected"));
            m.header(headers::MESSAGE).unwrap().to_owned()
        })
        .collect();
    reasons.sort_by_key(|reason| !reason.contains("count"));
    assert!(reasons[0].contains("count"), "{reasons:?}");
    assert!(reasons[1].contains("flag"), "{reasons:?}");
}

/// `retry` is retried, `reject` goes to the error queue at once, an unplanned failure is
/// treated as transient; none of them releases what the handler published.
async fn failures_drop_the_outbox(language: &str) {
    let host = host_for(language, "immediate_retries = 1\nredelivery_delays_ms = []").await;
    let mut leaked = Tap::new(&host, "tap", &[&conformance_type("Leaked")]).await;
    for mode in ["reject", "retry", "trap"] {
        publish(&host, &conformance_type("Fail"), json!({"mode": mode})).await;
    }
    let failed = drain_queue(&host, "conformance_error", 3).await;
    leaked.expect_nothing(Duration::from_millis(300)).await;
    let outcome = |mode: &str| {
        let m = failed
            .iter()
            .find(|m| body_json(m)["mode"] == mode)
            .unwrap_or_else(|| panic!("no dead letter for mode {mode}"));
        (
            m.header(headers::REASON).unwrap().to_owned(),
            m.header(headers::MESSAGE).unwrap().to_owned(),
            m.attempt,
        )
    };
    let (reason, error, attempt) = outcome("reject");
    assert_eq!((reason.as_str(), attempt), ("rejected", 1));
    assert!(error.contains("asked to reject"), "{error}");
    let (reason, error, attempt) = outcome("retry");
    assert_eq!((reason.as_str(), attempt), ("retries-exhausted", 2));
    assert!(error.contains("asked to retry"), "{error}");
    let (reason, error, attempt) = outcome("trap");
    assert_eq!((reason.as_str(), attempt), ("retries-exhausted", 2));
    if matches!(language, "rust" | "c") {
        // Both fail the unplanned way by calling `abort()`, which traps.
        assert!(error.contains("wasm trap"), "{error}");
    } else {
        // An exception the handler did not plan for: its type and text are the reason.
        assert!(
            error.contains("unhandled") && error.contains("asked to trap"),
            "{error}"
        );
    }

    publish(&host, &conformance_type("Fail"), json!({"mode": "ok"})).await;
    assert_eq!(body_json(&leaked.next().await)["mode"], "ok");
}

/// A handler that never returns is stopped at its deadline, one that allocates without bound
/// at its memory cap, and the plugin keeps serving.
async fn limits_stop_runaway_handlers(language: &str) {
    let host = host_for(
        language,
        "deadline_ms = 500\nmemory_mib = 48\nimmediate_retries = 0\nredelivery_delays_ms = []",
    )
    .await;
    publish(&host, &conformance_type("Fail"), json!({"mode": "spin"})).await;
    let stopped = drain_queue(&host, "conformance_error", 1).await;
    let error = stopped[0].header(headers::MESSAGE).unwrap();
    assert!(error.contains("deadline of 500 ms exceeded"), "{error}");

    publish(&host, &conformance_type("Fail"), json!({"mode": "hog"})).await;
    let stopped = drain_queue(&host, "conformance_error", 1).await;
    let error = stopped[0].header(headers::MESSAGE).unwrap();
    assert!(error.contains("memory cap exceeded"), "{error}");
    assert!(error.contains("49152 KiB"), "{error}");

    let mut leaked = Tap::new(&host, "tap", &[&conformance_type("Leaked")]).await;
    publish(&host, &conformance_type("Fail"), json!({"mode": "ok"})).await;
    assert_eq!(body_json(&leaked.next().await)["mode"], "ok");
}

/// No file and no socket reach the guest, whatever its language's runtime tries. (The
/// JavaScript engine has no file or socket API at all, and wasi-libc no socket API, so those
/// plugins can only report that.)
async fn the_sandbox_denies_files_and_sockets(language: &str) {
    let host = host_for(language, "").await;
    let mut reports = Tap::new(&host, "tap", &[&conformance_type("SandboxReport")]).await;
    let secret = std::env::temp_dir().join(format!(
        "courier-conformance-{language}-{}",
        std::process::id()
    ));
    std::fs::write(&secret, "secret").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    publish(
        &host,
        &conformance_type("Sandbox"),
        json!({"path": secret.to_str().unwrap(), "address": listener.local_addr().unwrap().to_string()}),
    )
    .await;
    let report = body_json(&reports.next().await);
    std::fs::remove_file(&secret).unwrap();
    for field in ["file", "socket"] {
        let outcome = report[field].as_str().unwrap();
        assert!(
            outcome.starts_with("error:"),
            "{language} {field}: {outcome}"
        );
    }
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the {language} guest must not have connected"
    );
}

macro_rules! conformance {
    ($language:ident) => {
        mod $language {
            const LANGUAGE: &str = stringify!($language);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn echo_decodes_encodes_publishes_sends_replies_reads_config_and_logs() {
                super::echo(LANGUAGE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bad_bodies_are_rejected_naming_the_field() {
                super::bad_bodies_are_rejected_naming_the_field(LANGUAGE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retry_reject_and_unplanned_failures_drop_the_outbox() {
                super::failures_drop_the_outbox(LANGUAGE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deadline_and_memory_cap_stop_runaway_handlers() {
                super::limits_stop_runaway_handlers(LANGUAGE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_sandbox_denies_files_and_sockets() {
                super::the_sandbox_denies_files_and_sockets(LANGUAGE).await;
            }
        }
    };
}

conformance!(rust);
conformance!(python);
conformance!(js);
conformance!(c);
