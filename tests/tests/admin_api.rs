//! The admin API, driven through its router without a socket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use courier_host::admin::{AdminState, app};
use courier_tests::*;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn call(router: axum::Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// The admin API of `host`, with no token and not draining.
fn open_router(host: Arc<courier_host::Host>) -> axum::Router {
    app(AdminState {
        host,
        token: None,
        draining: Arc::new(AtomicBool::new(false)),
    })
}

fn post_message(body: &serde_json::Value, token: Option<&str>) -> Request<Body> {
    let mut request =
        Request::post("/v1/messages").header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_posted_to_the_api_are_handled() {
    let host = host_with("", &["probe"]).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    let router = open_router(Arc::clone(&host));

    let (status, body) = call(
        router.clone(),
        post_message(
            &serde_json::json!({"type": test_type("Ping"), "body": {"n": 5}}),
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let pong = tap.next().await;
    assert_eq!(pong.initiator_id.as_deref(), body["id"].as_str());

    let (status, body) = call(
        router.clone(),
        post_message(&serde_json::json!({"type": "Ping", "body": {}}), None),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("urn:message:"));

    let (status, plugins) = call(
        router.clone(),
        Request::get("/v1/plugins").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(plugins[0]["name"], "probe");
    assert_eq!(plugins[0]["digest"].as_str().unwrap().len(), 64);
    assert_eq!(plugins[0]["ordered"], false);
    assert_eq!(plugins[0]["partitions"], serde_json::Value::Null);

    let ready = router
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_plugin_is_listed_with_its_partitions() {
    let host = host_with(
        "[plugins.probe]\nordered = true\npartitions = 8\n",
        &["probe"],
    )
    .await;
    let router = open_router(host);
    let (status, plugins) = call(
        router,
        Request::get("/v1/plugins").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(plugins[0]["name"], "probe");
    assert_eq!(plugins[0]["ordered"], true);
    assert_eq!(plugins[0]["partitions"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_route_but_health_requires_it() {
    let host = host_with("", &["probe"]).await;
    let draining = Arc::new(AtomicBool::new(false));
    let router = app(AdminState {
        host,
        token: Some("s3cret".into()),
        draining: Arc::clone(&draining),
    });
    let message = serde_json::json!({"type": test_type("Ping"), "body": {"n": 1}});
    assert_eq!(
        call(router.clone(), post_message(&message, None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(router.clone(), post_message(&message, Some("wrong")))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(router.clone(), post_message(&message, Some("s3cret")))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    let health = router
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    draining.store(true, std::sync::atomic::Ordering::SeqCst);
    let ready = router
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a draining host is not ready"
    );
}

/// The value of the sample `series` (name and labels, as written) in a scrape.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{scrape}"))
}

async fn scrape(router: &axum::Router) -> String {
    let response = router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_messages_flow() {
    let host = host_with(
        "[defaults]\nconcurrency = 1\nimmediate_retries = 0\nredelivery_delays_ms = [10]\n",
        &["probe"],
    )
    .await;
    let router = open_router(Arc::clone(&host));
    let before = scrape(&router).await;
    assert_eq!(sample(&before, "courier_in_flight"), 0.0);
    assert_eq!(sample(&before, "courier_broker_connected"), 1.0);
    assert_eq!(
        sample(&before, "courier_consumer_prefetch{plugin=\"probe\"}"),
        2.0
    );
    assert_eq!(
        sample(&before, "courier_queue_ready_messages{queue=\"probe\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &before,
            "courier_plugin_reloads_total{plugin=\"probe\",outcome=\"added\"}"
        ),
        1.0
    );
    assert!(!before.contains("courier_messages_total{"), "{before}");

    let mut tap = Tap::new(&host, "tap", &[&test_type("Pong")]).await;
    for n in 0..3 {
        publish(&host, &test_type("Ping"), serde_json::json!({ "n": n })).await;
    }
    tap.take(3).await;
    publish(
        &host,
        &test_type("PublishThenFail"),
        serde_json::json!({ "mode": "retry" }),
    )
    .await;
    drain_queue(&host, "probe_error", 1).await;
    host.wait_until_idle(std::time::Duration::from_millis(20))
        .await
        .unwrap();

    let after = scrape(&router).await;
    let messages = |t: &str, outcome: &str| {
        sample(
            &after,
            &format!(
                "courier_messages_total{{plugin=\"probe\",version=\"0.1.0\",type=\"{}\",outcome=\"{outcome}\"}}",
                test_type(t)
            ),
        )
    };
    assert_eq!(messages("Ping", "handled"), 3.0);
    assert_eq!(messages("PublishThenFail", "retried"), 1.0);
    assert_eq!(messages("PublishThenFail", "dead_lettered"), 1.0);
    assert_eq!(
        sample(
            &after,
            &format!("courier_published_total{{type=\"{}\"}}", test_type("Pong"))
        ),
        3.0
    );
    let calls = "courier_handler_duration_seconds_count{plugin=\"probe\",version=\"0.1.0\"}";
    assert_eq!(
        sample(&after, calls),
        5.0,
        "three pings, two failed attempts"
    );
    assert!(
        sample(
            &after,
            "courier_handler_duration_seconds_sum{plugin=\"probe\",version=\"0.1.0\"}"
        ) > 0.0
    );
    assert_eq!(
        sample(
            &after,
            "courier_instantiation_duration_seconds_count{plugin=\"probe\",version=\"0.1.0\"}"
        ),
        5.0
    );
    assert_eq!(sample(&after, "courier_in_flight"), 0.0);
}
