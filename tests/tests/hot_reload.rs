//! Hot reload: versions swapped in from the watched plugins directory and through the admin
//! API, refused when broken, rolled back, removed; subscriptions rebound; the compiled-code
//! cache. The plugin is `stamp`, in two versions that write their version into the `Stamped`
//! event they publish for each `Ping` (version 2 also handles `DoWork`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use courier_host::Host;
use courier_host::admin::{AdminState, app};
use courier_host::engine::CodeSource;
use courier_host::plugin::HANDLED_BY_VERSION_HEADER;
use courier_tests::*;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A plugins directory holding `stamp.wasm` (version 1).
fn stamp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-reload-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(plugin_file("stamp-v1"), dir.join("stamp.wasm")).unwrap();
    dir
}

fn version_of(host: &Host) -> String {
    host.plugin("stamp")
        .map(|p| p.version().to_owned())
        .unwrap_or_default()
}

/// Publishes a `Ping` and returns the version that stamped it, checking that the host's
/// header and the plugin's own stamp agree.
async fn stamped_by(host: &Host, tap: &mut Tap, n: u64) -> String {
    publish(host, &test_type("Ping"), serde_json::json!({ "n": n })).await;
    let stamped = tap.next().await;
    let body = body_json(&stamped);
    assert_eq!(body["n"], n);
    let version = body["version"].as_str().unwrap().to_owned();
    assert_eq!(
        stamped.header(HANDLED_BY_VERSION_HEADER),
        Some(version.as_str())
    );
    assert_eq!(stamped.header("courier-handled-by"), Some("stamp"));
    version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_renamed_or_written_into_place_is_swapped_in() {
    let dir = stamp_dir("changed");
    let (host, _watch) = watched_host("", &dir, None).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Stamped")]).await;
    assert_eq!(stamped_by(&host, &mut tap, 1).await, "1.0.0");

    // Renamed into place (how `courier deploy` and most deployment tools write).
    put_in_place(&plugin_file("stamp-v2"), &dir.join("stamp.wasm"));
    wait_until("version 2 serves", || version_of(&host) == "2.0.0").await;
    assert_eq!(stamped_by(&host, &mut tap, 2).await, "2.0.0");
    assert_eq!(host.previous_version("stamp").as_deref(), Some("1.0.0"));

    // Written in place: picked up once the writer closes the file.
    std::fs::write(
        dir.join("stamp.wasm"),
        std::fs::read(plugin_file("stamp-v1")).unwrap(),
    )
    .unwrap();
    wait_until("version 1 serves again", || version_of(&host) == "1.0.0").await;
    assert_eq!(stamped_by(&host, &mut tap, 3).await, "1.0.0");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_is_refused_and_the_old_version_keeps_serving() {
    let dir = stamp_dir("broken");
    let file = dir.join("stamp.wasm");
    let (host, _watch) = watched_host("", &dir, None).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Stamped")]).await;

    // Truncated: half of version 2.
    let v2 = std::fs::read(plugin_file("stamp-v2")).unwrap();
    let truncated = dir.join("truncated.tmp");
    std::fs::write(&truncated, &v2[..v2.len() / 2]).unwrap();
    std::fs::rename(&truncated, &file).unwrap();
    wait_until("the truncated file is refused", || {
        !host.refused().is_empty()
    })
    .await;
    let refusal = host.refused().remove(0);
    assert_eq!(refusal.file, file.display().to_string());
    assert!(
        refusal.error.contains("stamp.wasm refused")
            && refusal.error.contains("not a valid WebAssembly component"),
        "{refusal:?}"
    );
    // The admin API lists the same refusal.
    let router = app(AdminState {
        host: Arc::clone(&host),
        token: Some("sesame".into()),
        draining: Arc::new(AtomicBool::new(false)),
    });
    let (status, listed) = call(
        &router,
        authorized(Request::get("/v1/refused"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed,
        serde_json::json!([{"file": refusal.file, "error": refusal.error}])
    );
    assert_eq!(stamped_by(&host, &mut tap, 1).await, "1.0.0");

    // A component that is not a Courier plugin.
    put_in_place(&plugin_file("no-exports"), &file);
    wait_until("the component without the handler is refused", || {
        host.refused()
            .iter()
            .any(|r| r.error.contains("does not export `courier:bus/handler"))
    })
    .await;
    assert_eq!(stamped_by(&host, &mut tap, 2).await, "1.0.0");

    // A good version clears the refusal.
    put_in_place(&plugin_file("stamp-v2"), &file);
    wait_until("version 2 serves", || version_of(&host) == "2.0.0").await;
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    assert_eq!(stamped_by(&host, &mut tap, 3).await, "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_change_rebinds_the_queue() {
    let dir = stamp_dir("rebind");
    let (host, _watch) = watched_host("", &dir, None).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Stamped")]).await;
    let memory = host.memory_broker().unwrap().clone();

    // Version 1 does not subscribe to DoWork: a published DoWork reaches no queue.
    publish(&host, &test_type("DoWork"), serde_json::json!({ "n": 1 })).await;
    tap.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(memory.depth("stamp_skipped"), 0);

    put_in_place(&plugin_file("stamp-v2"), &dir.join("stamp.wasm"));
    wait_until("version 2 serves", || version_of(&host) == "2.0.0").await;
    publish(&host, &test_type("DoWork"), serde_json::json!({ "n": 2 })).await;
    let stamped = tap.next().await;
    assert_eq!(body_json(&stamped)["n"], 2);
    assert_eq!(body_json(&stamped)["version"], "2.0.0");

    // Back to version 1: the binding goes with it.
    put_in_place(&plugin_file("stamp-v1"), &dir.join("stamp.wasm"));
    wait_until("version 1 serves", || version_of(&host) == "1.0.0").await;
    publish(&host, &test_type("DoWork"), serde_json::json!({ "n": 3 })).await;
    tap.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(memory.depth("stamp"), 0);
    assert_eq!(memory.depth("stamp_skipped"), 0);
}

async fn call(router: &axum::Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn authorized(request: axum::http::request::Builder) -> axum::http::request::Builder {
    request.header(header::AUTHORIZATION, "Bearer sesame")
}

fn upload(name: &str, file: &Path) -> Request<Body> {
    authorized(Request::put(format!("/v1/plugins/{name}")))
        .header(header::CONTENT_TYPE, "application/wasm")
        .body(Body::from(std::fs::read(file).unwrap()))
        .unwrap()
}

fn rollback(name: &str) -> Request<Body> {
    authorized(Request::post(format!("/v1/plugins/{name}/rollback")))
        .body(Body::empty())
        .unwrap()
}

fn digest_of(file: &Path) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(std::fs::read(file).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_rollback_through_the_api() {
    let dir = stamp_dir("api");
    let file = dir.join("stamp.wasm");
    let (host, _watch) = watched_host("", &dir, None).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Stamped")]).await;
    let router = app(AdminState {
        host: Arc::clone(&host),
        token: Some("sesame".into()),
        draining: Arc::new(AtomicBool::new(false)),
    });

    // Nothing changes without the token.
    let anonymous = Request::put("/v1/plugins/stamp")
        .body(Body::from(std::fs::read(plugin_file("stamp-v2")).unwrap()))
        .unwrap();
    assert_eq!(call(&router, anonymous).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&router, rollback("stamp")).await;
    assert_eq!(status, StatusCode::CONFLICT, "no previous version yet");

    let (status, body) = call(&router, upload("stamp", &plugin_file("stamp-v2"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["change"], "swapped");
    assert_eq!(body["from"], "1.0.0");
    assert_eq!(body["plugin"]["version"], "2.0.0");
    // The directory holds what runs, so a restart would load it too.
    assert_eq!(digest_of(&file), digest_of(&plugin_file("stamp-v2")));
    assert_eq!(stamped_by(&host, &mut tap, 1).await, "2.0.0");

    let (status, body) = call(
        &router,
        authorized(Request::get("/v1/plugins"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let stamp = body
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "stamp")
        .unwrap()
        .clone();
    assert_eq!(stamp["version"], "2.0.0");
    assert_eq!(stamp["previous_version"], "1.0.0");
    assert_eq!(stamp["digest"], digest_of(&plugin_file("stamp-v2")));
    assert_eq!(stamp["handled"], 1);
    assert_eq!(stamp["failures"], 0);
    assert!(stamp["loaded_at_ms"].as_u64().unwrap() > 0);

    // The same bytes again change nothing.
    let (status, body) = call(&router, upload("stamp", &plugin_file("stamp-v2"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["change"], "unchanged");

    // A component under another plugin's name, and one that is not a plugin, are refused.
    let (status, body) = call(&router, upload("other", &plugin_file("stamp-v1"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("describes itself as `stamp`, not `other`"),
        "{body}"
    );
    let (status, body) = call(&router, upload("stamp", &plugin_file("no-exports"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"].as_str().unwrap().contains("does not export"),
        "{body}"
    );
    assert_eq!(version_of(&host), "2.0.0");

    let (status, body) = call(&router, rollback("stamp")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["from"], "2.0.0");
    assert_eq!(body["plugin"]["version"], "1.0.0");
    assert_eq!(digest_of(&file), digest_of(&plugin_file("stamp-v1")));
    assert_eq!(stamped_by(&host, &mut tap, 2).await, "1.0.0");
    // The watcher sees the rolled-back file, and leaves the version as it is.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(version_of(&host), "1.0.0");
    assert_eq!(host.previous_version("stamp").as_deref(), Some("2.0.0"));

    // Removal through the API deletes the file, so a restart does not bring it back.
    let (status, body) = call(
        &router,
        authorized(Request::delete("/v1/plugins/stamp"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!file.exists());
    assert!(host.plugin("stamp").is_none());
    let (status, _) = call(&router, rollback("stamp")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_file_drains_the_plugin_and_unbinds_its_queue_on_rabbitmq() {
    let vhost = Vhost::new("reload-remove");
    let dir = stamp_dir("remove");
    let (host, _watch) = watched_host("[defaults]\nconcurrency = 2\n", &dir, Some(&vhost)).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Stamped")]).await;
    assert_eq!(stamped_by(&host, &mut tap, 0).await, "1.0.0");

    // Pings keep arriving while the file is removed: each is handled once, now or later.
    const PINGS: u64 = 200;
    for n in 1..=PINGS {
        publish(&host, &test_type("Ping"), serde_json::json!({ "n": n })).await;
    }
    std::fs::remove_file(dir.join("stamp.wasm")).unwrap();
    wait_until("the plugin is removed", || host.plugin("stamp").is_none()).await;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(stamped) = tap.try_next(Duration::from_millis(500)).await {
        assert!(seen.insert(body_json(&stamped)["n"].as_u64().unwrap()));
    }
    let left = host
        .transport()
        .ready_count(&["stamp".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        seen.len() as u64 + left,
        PINGS,
        "every ping handled or still queued"
    );

    // Unbound: a ping published now reaches no queue.
    publish(
        &host,
        &test_type("Ping"),
        serde_json::json!({ "n": PINGS + 1 }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        host.transport()
            .ready_count(&["stamp".to_owned()])
            .await
            .unwrap(),
        left
    );

    // Back again: what the queue kept is handled.
    put_in_place(&plugin_file("stamp-v2"), &dir.join("stamp.wasm"));
    wait_until("version 2 serves", || version_of(&host) == "2.0.0").await;
    for _ in 0..left {
        let stamped = tap.next().await;
        assert!(seen.insert(body_json(&stamped)["n"].as_u64().unwrap()));
    }
    assert_eq!(seen.len() as u64, PINGS);
    tap.expect_nothing(Duration::from_millis(300)).await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_another_name_takes_over_when_the_old_one_is_removed() {
    let dir = stamp_dir("rename");
    let (host, _watch) = watched_host("", &dir, None).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Stamped")]).await;
    let newer = dir.join("stamp-2.wasm");
    put_in_place(&plugin_file("stamp-v2"), &newer);
    wait_until("the second file is refused", || !host.refused().is_empty()).await;
    assert!(
        host.refused()[0].error.contains("already taken by"),
        "{:?}",
        host.refused()
    );
    assert_eq!(stamped_by(&host, &mut tap, 1).await, "1.0.0");
    std::fs::remove_file(dir.join("stamp.wasm")).unwrap();
    wait_until("version 2 serves", || version_of(&host) == "2.0.0").await;
    assert_eq!(host.plugin("stamp").unwrap().path(), newer);
    assert_eq!(stamped_by(&host, &mut tap, 2).await, "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_cache_restart_compiles_nothing_and_a_corrupt_cache_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let config = format!("[engine]\ncache_dir = \"{}\"\n", cache.path().display());
    let sources = |host: &Host| -> Vec<CodeSource> {
        host.plugins().iter().map(|p| p.code_source()).collect()
    };

    let cold = host_with(&config, &["probe", "stamp-v1"]).await;
    assert_eq!(sources(&cold), [CodeSource::Compiled, CodeSource::Compiled]);
    cold.shutdown().await;
    drop(cold);

    let warm = host_with(&config, &["probe", "stamp-v1"]).await;
    assert_eq!(sources(&warm), [CodeSource::Cache, CodeSource::Cache]);
    let mut tap = Tap::new(&warm, "tap", &[&test_type("Pong")]).await;
    publish(&warm, &test_type("Ping"), serde_json::json!({ "n": 1 })).await;
    assert_eq!(body_json(&tap.next().await)["n"], 1);
    warm.shutdown().await;
    drop(warm);

    // Every cached entry damaged: none is trusted, each plugin is compiled again and works.
    let mut damaged = 0;
    for entry in walk(cache.path()) {
        let mut bytes = std::fs::read(&entry).unwrap();
        if entry.extension().is_some_and(|ext| ext == "cwasm") {
            let middle = bytes.len() / 2;
            bytes[middle..middle + 32].fill(0xA5);
            std::fs::write(&entry, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged >= 2, "cache entries found: {damaged}");
    let repaired = host_with(&config, &["probe", "stamp-v1"]).await;
    assert_eq!(
        sources(&repaired),
        [CodeSource::Compiled, CodeSource::Compiled]
    );
    let mut tap = Tap::new(&repaired, "tap", &[&test_type("Pong")]).await;
    publish(&repaired, &test_type("Ping"), serde_json::json!({ "n": 2 })).await;
    assert_eq!(body_json(&tap.next().await)["n"], 2);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
