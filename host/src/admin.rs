//! The admin HTTP API (axum). Loopback by default; when a token is configured every route
//! but the health checks requires `Authorization: Bearer <token>`.
//!
//! | route                | what                                                         |
//! |----------------------|--------------------------------------------------------------|
//! | `GET /healthz`       | the process is alive                                         |
//! | `GET /readyz`        | plugins are loaded and the host is not draining              |
//! | `GET /v1/plugins`    | loaded plugins: name, version, digest, subscriptions         |
//! | `POST /v1/messages`  | publish (or send, with `destination`) a [`PublishRequest`]    |
//! | `GET /v1/stats`      | counters by message type and plugin                          |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::host::Host;
use crate::publish::PublishRequest;

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
        .route("/v1/plugins", get(list_plugins))
        .route("/v1/messages", post(post_message))
        .route("/v1/stats", get(stats))
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
    if state.host.plugins().is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no plugin loaded").into_response();
    }
    "ready".into_response()
}

#[derive(Debug, Serialize)]
struct PluginView {
    name: String,
    version: String,
    digest: String,
    file: String,
    subscriptions: Vec<String>,
    concurrency: u32,
}

async fn list_plugins(State(state): State<AdminState>) -> Json<Vec<PluginView>> {
    Json(
        state
            .host
            .plugins()
            .iter()
            .map(|plugin| PluginView {
                name: plugin.name().to_owned(),
                version: plugin.version().to_owned(),
                digest: plugin.digest().to_owned(),
                file: plugin.path().display().to_string(),
                subscriptions: plugin.info().subscriptions.clone(),
                concurrency: plugin.settings().concurrency,
            })
            .collect(),
    )
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

async fn stats(State(state): State<AdminState>) -> Json<crate::stats::Summary> {
    Json(state.host.summary())
}
