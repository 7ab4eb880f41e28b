//! The HTTP intake: `POST /v1/events` into the spool, CORS for the
//! portal's origins, the tracker script, health and metrics.
//!
//! A request is answered as soon as its events are fsynced in the spool;
//! Kafka is never waited for (the shipper sends later), so the portal's
//! pages are not slowed when the broker is slow or down.

pub mod parse;

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::metrics::CollectorMetrics;
use crate::spool::{AppendError, Spool};
pub use parse::Limits;

/// The tracker script served at `GET /v1/tracker.js`.
pub const TRACKER_JS: &str = include_str!("../../tracker/tauc-tracker.js");

/// Why a request was refused; each becomes a status and `{"error": …}`.
#[derive(Debug)]
pub enum Rejection {
    /// 400: not JSON, not objects, an event too big.
    BadRequest(String),
    /// 413: body or event count over the limit.
    TooLarge(String),
    /// 415: a content type or encoding the intake does not take.
    Unsupported(String),
    /// 403: a browser origin not in the allowed list.
    Forbidden(String),
    /// 503: the spool is full; the client retries later.
    Unavailable(String),
    /// 503: writing the spool failed; the client retries later.
    SpoolFailed(String),
    /// 408: the body did not arrive within [`BODY_READ_TIMEOUT`].
    TimedOut(String),
}

/// Longest a request's body may take to arrive (a slow client holds a
/// connection and a task for no longer than this).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Rejection {
    fn status(&self) -> StatusCode {
        match self {
            Rejection::BadRequest(_) => StatusCode::BAD_REQUEST,
            Rejection::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::Forbidden(_) => StatusCode::FORBIDDEN,
            Rejection::Unavailable(_) | Rejection::SpoolFailed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Rejection::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Rejection::BadRequest(_) => "bad_request",
            Rejection::TooLarge(_) => "too_large",
            Rejection::Unsupported(_) => "unsupported",
            Rejection::Forbidden(_) => "forbidden",
            Rejection::Unavailable(_) => "spool_full",
            Rejection::SpoolFailed(_) => "spool_error",
            Rejection::TimedOut(_) => "timeout",
        }
    }

    fn message(&self) -> &str {
        match self {
            Rejection::BadRequest(m)
            | Rejection::TooLarge(m)
            | Rejection::Unsupported(m)
            | Rejection::Forbidden(m)
            | Rejection::Unavailable(m)
            | Rejection::SpoolFailed(m)
            | Rejection::TimedOut(m) => m,
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message() }).to_string();
        let mut resp = (self.status(), body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(self, Rejection::Unavailable(_) | Rejection::SpoolFailed(_)) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct Intake {
    /// The spool requests are written to.
    pub spool: Spool,
    /// Exact browser origins allowed to post.
    pub origins: Arc<HashSet<String>>,
    /// Request limits.
    pub limits: Limits,
    /// Counters.
    pub metrics: Arc<CollectorMetrics>,
}

/// The collector's routes.
pub fn router(intake: Intake) -> Router {
    Router::new()
        .route("/v1/events", post(post_events).options(preflight))
        .route("/v1/tracker.js", get(tracker))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(intake)
}

async fn post_events(State(intake): State<Intake>, headers: HeaderMap, body: Body) -> Response {
    let origin = match check_origin(&intake, &headers) {
        Ok(origin) => origin,
        Err(r) => {
            intake.metrics.count(r.outcome(), 0);
            return with_vary(r.into_response());
        }
    };
    let mut resp = match accept(&intake, &headers, body).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => {
            intake.metrics.count(r.outcome(), 0);
            tracing::debug!(error = r.message(), "request rejected");
            r.into_response()
        }
    };
    if let Some(origin) = origin {
        allow(resp.headers_mut(), &origin);
    }
    with_vary(resp)
}

/// Reads, checks and spools one request; the number of events on success.
async fn accept(intake: &Intake, headers: &HeaderMap, body: Body) -> Result<usize, Rejection> {
    let max = intake.limits.max_body;
    let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, max))
        .await
        .map_err(|_| {
            Rejection::TimedOut(format!(
                "the body did not arrive within {} s; send it at once and retry",
                BODY_READ_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| {
            Rejection::TooLarge(format!(
                "body is over {max} bytes or could not be read: {e}"
            ))
        })?;
    let text = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    let decoded = parse::decode(
        text(header::CONTENT_TYPE),
        text(header::CONTENT_ENCODING),
        &bytes,
        intake.limits,
    )?;
    let lines = parse::events(&decoded, now_ms(), intake.limits)?;
    // Spool and count in a task of its own: a client that hangs up while
    // its events are being synced does not cancel the write, so what is
    // spooled is always counted (and shipped; the client, seeing no 204,
    // retries with the same event ids).
    let spool = intake.spool.clone();
    let metrics = intake.metrics.clone();
    let n = lines.len();
    let appended = tokio::spawn(async move {
        let r = spool.append(&lines).await;
        if r.is_ok() {
            metrics.count("accepted", n);
        }
        r
    });
    match appended.await {
        Ok(Ok(())) => Ok(n),
        Ok(Err(e @ AppendError::Full { .. })) => Err(Rejection::Unavailable(format!(
            "{e} (Kafka may be unreachable; the spool ships when it is back)"
        ))),
        Ok(Err(e)) => Err(Rejection::SpoolFailed(e.to_string())),
        Err(e) => Err(Rejection::SpoolFailed(format!("spool task failed: {e}"))),
    }
}

/// `Ok(Some(origin))` for an allowed browser origin, `Ok(None)` without an
/// `Origin` header (server-side senders), an error for any other origin.
fn check_origin(intake: &Intake, headers: &HeaderMap) -> Result<Option<String>, Rejection> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let origin = origin.to_str().unwrap_or("").to_string();
    if intake.origins.contains(&origin) {
        Ok(Some(origin))
    } else {
        Err(Rejection::Forbidden(format!(
            "origin '{origin}' is not allowed (the collector's --allowed-origin list)"
        )))
    }
}

async fn preflight(State(intake): State<Intake>, headers: HeaderMap) -> Response {
    match check_origin(&intake, &headers) {
        Ok(Some(origin)) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            let h = resp.headers_mut();
            allow(h, &origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type, content-encoding"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            with_vary(resp)
        }
        Ok(None) => with_vary(
            Rejection::BadRequest("a preflight needs an Origin header".into()).into_response(),
        ),
        Err(r) => with_vary(r.into_response()),
    }
}

fn allow(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

fn with_vary(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

async fn tracker() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        TRACKER_JS,
    )
        .into_response()
}

async fn ready(State(intake): State<Intake>) -> Response {
    if intake.spool.healthy() {
        "ready\n".into_response()
    } else {
        Rejection::SpoolFailed(format!(
            "spool directory '{}' is not writable",
            intake.spool.dir().display()
        ))
        .into_response()
    }
}

async fn metrics(State(intake): State<Intake>) -> Response {
    let text = intake.metrics.render(intake.spool.bytes(), now_ms());
    (
        [(header::CONTENT_TYPE, tauc_common::metrics::TEXT_FORMAT)],
        text,
    )
        .into_response()
}

/// The collector's clock, epoch ms.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
