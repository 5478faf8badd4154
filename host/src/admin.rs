//! The admin HTTP API (axum). Loopback by default; when a token is configured every route
//! but the health checks requires `Authorization: Bearer <token>`.
//!
//! | route                           | what                                              |
//! |---------------------------------|---------------------------------------------------|
//! | `GET /healthz`                  | the process is alive                              |
//! | `GET /readyz`                   | broker connected, plugins loaded, not draining    |
//! | `GET /v1/plugins`               | loaded plugins: version, digest, counts, …        |
//! | `POST /v1/plugins`              | deploy the `.wasm` in the body (named by itself)  |
//! | `PUT /v1/plugins/{name}`        | deploy the `.wasm` in the body as plugin `name`   |
//! | `DELETE /v1/plugins/{name}`     | remove a plugin (drained, unbound, file deleted)  |
//! | `POST /v1/plugins/{name}/rollback` | back to the version before the current one     |
//! | `GET /v1/refused`               | plugin files refused, with the reason             |
//! | `GET /v1/errors/{queue}`        | the messages of `<queue>_error`, bodies left out (embedded broker) |
//! | `POST /v1/errors/{queue}/show`  | `{"ids": […]}` whole, with their bodies (embedded broker) |
//! | `POST /v1/errors/{queue}/replay`| `{"ids": […]}` back to their queue (embedded broker) |
//! | `POST /v1/errors/{queue}/purge` | `{"ids": […]}` removed (embedded broker)          |
//! | `POST /v1/messages`             | publish (or send, with `destination`) a [`PublishRequest`] |
//! | `GET /v1/stats`                 | counters by message type and plugin               |
//! | `GET /metrics`                  | Prometheus metrics (see `docs/operations.md`)     |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::engine::CodeSource;
use crate::host::{DeployChange, Deployed, Host, Refusal};
use crate::plugin::Plugin;
use crate::publish::PublishRequest;

/// The largest component an upload may carry (an interpreter-based plugin is tens of MiB).
const MAX_UPLOAD_BYTES: usize = 256 << 20;

/// What the routes share.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub host: Arc<Host>,
    pub token: Option<Arc<str>>,
    /// Set while the host drains for shutdown: `/readyz` turns unready.
    pub draining: Arc<AtomicBool>,
}

/// The admin API as a router, so tests can drive it without a socket.
pub fn app(state: AdminState) -> Router {
    let protected = Router::new()
        .route(
            "/v1/plugins",
            get(list_plugins)
                .post(upload_any_plugin)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route(
            "/v1/plugins/{name}",
            put(upload_plugin)
                .delete(delete_plugin)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/v1/plugins/{name}/rollback", post(rollback_plugin))
        .route("/v1/refused", get(refused))
        .route("/v1/errors/{queue}", get(list_errors))
        .route("/v1/errors/{queue}/show", post(show_errors))
        .route("/v1/errors/{queue}/replay", post(replay_errors))
        .route("/v1/errors/{queue}/purge", post(purge_errors))
        .route("/v1/messages", post(post_message))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .merge(protected)
        .with_state(state)
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if presented != Some(token.as_ref()) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(ErrorBody::new("a valid bearer token is required")),
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if !state.host.broker_connected() {
        return (StatusCode::SERVICE_UNAVAILABLE, "broker not connected").into_response();
    }
    if state.host.plugins().is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no plugin loaded").into_response();
    }
    "ready".into_response()
}

/// A plugin's current version, as `GET /v1/plugins` shows it.
#[derive(Debug, Serialize)]
struct PluginView {
    name: String,
    version: String,
    /// SHA-256 of the component's bytes.
    digest: String,
    file: String,
    /// The world the component is written for: `courier:bus/plugin@0.1.0`, or a foreign one.
    world: &'static str,
    subscriptions: Vec<String>,
    concurrency: u32,
    /// Whether messages of one session are handled one at a time, in order.
    ordered: bool,
    /// For an ordered plugin, the partitions its endpoint is spread over on RabbitMQ.
    partitions: Option<u16>,
    /// Milliseconds since the Unix epoch.
    loaded_at_ms: u64,
    /// Whether the code was compiled at load or read from the cache.
    code: CodeSource,
    /// Messages this version handled, and handler calls of it that failed.
    handled: u64,
    failures: u64,
    /// The version a rollback returns to, if any.
    previous_version: Option<String>,
}

impl PluginView {
    fn of(host: &Host, plugin: &Plugin) -> Self {
        PluginView {
            name: plugin.name().to_owned(),
            version: plugin.version().to_owned(),
            digest: plugin.digest().to_owned(),
            file: plugin.path().display().to_string(),
            world: plugin.world().name(),
            subscriptions: plugin.info().subscriptions.clone(),
            concurrency: plugin.settings().concurrency,
            ordered: plugin.settings().ordered,
            partitions: plugin
                .settings()
                .ordered
                .then_some(plugin.settings().partitions),
            loaded_at_ms: plugin.loaded_at_ms(),
            code: plugin.code_source(),
            handled: plugin.counts().handled(),
            failures: plugin.counts().failed(),
            previous_version: host.previous_version(plugin.name()),
        }
    }
}

async fn list_plugins(State(state): State<AdminState>) -> Json<Vec<PluginView>> {
    Json(
        state
            .host
            .plugins()
            .iter()
            .map(|plugin| PluginView::of(&state.host, plugin))
            .collect(),
    )
}

/// What a deployment through the API did.
#[derive(Debug, Serialize)]
struct DeployView {
    #[serde(flatten)]
    change: DeployChange,
    plugin: PluginView,
    elapsed_ms: u64,
}

fn deployed(host: &Host, deployed: &Deployed) -> Response {
    let status = match deployed.change {
        DeployChange::Added => StatusCode::CREATED,
        DeployChange::Swapped { .. } | DeployChange::Unchanged => StatusCode::OK,
    };
    let view = DeployView {
        change: deployed.change.clone(),
        plugin: PluginView::of(host, &deployed.plugin),
        elapsed_ms: u64::try_from(deployed.elapsed.as_millis()).unwrap_or(u64::MAX),
    };
    (status, Json(view)).into_response()
}

fn refusal(status: StatusCode, error: &anyhow::Error) -> Response {
    (status, Json(ErrorBody::new(format!("{error:#}")))).into_response()
}

async fn upload_plugin(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    upload(&state, Some(&name), body).await
}

/// `POST /v1/plugins`: the plugin's name is the one the component gives itself.
async fn upload_any_plugin(State(state): State<AdminState>, body: Bytes) -> Response {
    upload(&state, None, body).await
}

async fn upload(state: &AdminState, name: Option<&str>, body: Bytes) -> Response {
    if body.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(ErrorBody::new(
                "the request body must be the plugin's .wasm file",
            )),
        )
            .into_response();
    }
    match state.host.deploy_upload(name, body.to_vec()).await {
        Ok(done) => deployed(&state.host, &done),
        Err(error) => refusal(StatusCode::UNPROCESSABLE_ENTITY, &error),
    }
}

async fn delete_plugin(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    if state.host.plugin(&name).is_none() {
        return not_loaded(&name);
    }
    match state.host.remove_plugin(&name).await {
        Ok(removed) => Json(PluginView::of(&state.host, &removed)).into_response(),
        Err(error) => refusal(StatusCode::INTERNAL_SERVER_ERROR, &error),
    }
}

async fn rollback_plugin(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    if state.host.plugin(&name).is_none() {
        return not_loaded(&name);
    }
    match state.host.rollback(&name).await {
        Ok(done) => deployed(&state.host, &done),
        Err(error) => refusal(StatusCode::CONFLICT, &error),
    }
}

fn not_loaded(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ErrorBody::new(format!(
            "no plugin named `{name}` is loaded"
        ))),
    )
        .into_response()
}

async fn refused(State(state): State<AdminState>) -> Json<Vec<Refusal>> {
    Json(state.host.refused())
}

#[derive(Debug, Serialize)]
struct Accepted {
    id: String,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

impl ErrorBody {
    fn new(error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
        }
    }
}

async fn post_message(
    State(state): State<AdminState>,
    Json(request): Json<PublishRequest>,
) -> Response {
    match state.host.submit(request, "admin-api").await {
        Ok(id) => (StatusCode::ACCEPTED, Json(Accepted { id })).into_response(),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(ErrorBody::new(format!("{error:#}"))),
        )
            .into_response(),
    }
}

/// The messages a replay or purge acts on.
#[derive(Debug, Deserialize)]
struct Ids {
    ids: Vec<String>,
}

/// What the embedded broker's error queue commands did to how many messages.
#[derive(Debug, Serialize)]
struct Moved {
    replayed: Option<usize>,
    purged: Option<usize>,
}

/// Why an error-queue command failed: 409 on RabbitMQ (its error queues are read from the
/// broker), 404 for a queue the embedded broker does not have, else `otherwise`.
fn error_queue_failure(error: &anyhow::Error, otherwise: StatusCode) -> Response {
    let status = if error.downcast_ref::<crate::host::UnknownQueue>().is_some() {
        StatusCode::NOT_FOUND
    } else if error.downcast_ref::<crate::host::NotEmbedded>().is_some() {
        StatusCode::CONFLICT
    } else {
        otherwise
    };
    (status, Json(ErrorBody::new(format!("{error:#}")))).into_response()
}

async fn list_errors(State(state): State<AdminState>, Path(queue): Path<String>) -> Response {
    match state.host.error_messages(&queue) {
        Ok(messages) => Json(
            messages
                .into_iter()
                .map(crate::errors::embedded::Listed::of)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => error_queue_failure(&error, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn show_errors(
    State(state): State<AdminState>,
    Path(queue): Path<String>,
    Json(ids): Json<Ids>,
) -> Response {
    match state.host.error_messages(&queue) {
        Ok(messages) => Json(
            messages
                .into_iter()
                .filter(|message| ids.ids.contains(&message.id))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => error_queue_failure(&error, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn replay_errors(
    State(state): State<AdminState>,
    Path(queue): Path<String>,
    Json(ids): Json<Ids>,
) -> Response {
    match state.host.replay_errors(&queue, &ids.ids) {
        Ok(replayed) => Json(Moved {
            replayed: Some(replayed),
            purged: None,
        })
        .into_response(),
        Err(error) => error_queue_failure(&error, StatusCode::UNPROCESSABLE_ENTITY),
    }
}

async fn purge_errors(
    State(state): State<AdminState>,
    Path(queue): Path<String>,
    Json(ids): Json<Ids>,
) -> Response {
    match state.host.purge_errors(&queue, &ids.ids) {
        Ok(purged) => Json(Moved {
            replayed: None,
            purged: Some(purged),
        })
        .into_response(),
        Err(error) => error_queue_failure(&error, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn stats(State(state): State<AdminState>) -> Json<crate::stats::Summary> {
    Json(state.host.summary())
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.host.metrics_text().await,
    )
        .into_response()
}
