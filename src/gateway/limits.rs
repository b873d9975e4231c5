//! Request limits, so that a flooding or slow client cannot take the
//! service's capacity from other queries: the query string's length, how
//! many requests are handled at once, and how long one may take.
//!
//! Shed and timed-out requests show in `adclick_http_request_duration_seconds`
//! as status 503 of their route, refused ones as 414.
//!
//! The connection-level limits (header size, slow header reads, connection
//! count) are the listener's (`listener.rs`): they act before a request
//! exists.

use super::params::{ApiError, ErrorCode};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Paths outside the concurrency limit and the timeout: the probes must
/// answer under a flood, or the orchestrator restarts a busy but healthy
/// process. They do no work worth limiting.
pub const PROBE_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// The limits on each request.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestLimits {
    /// Longest query string (bytes, still percent-encoded); longer is a 414.
    pub max_query_bytes: usize,
    /// Most requests handled at once; more are answered 503 `overloaded`.
    pub max_concurrent_requests: usize,
    /// Longest time to produce a response's head; longer is a 503 `timeout`.
    pub request_timeout: Duration,
}

impl Default for RequestLimits {
    /// The documented defaults (config/default.toml).
    fn default() -> RequestLimits {
        RequestLimits {
            max_query_bytes: 4096,
            max_concurrent_requests: 256,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The limits with the permits they hand out.
pub struct RequestGate {
    limits: RequestLimits,
    permits: Arc<Semaphore>,
}

impl RequestGate {
    /// A gate enforcing `limits`.
    pub fn new(limits: RequestLimits) -> RequestGate {
        RequestGate {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            limits,
        }
    }
}

/// Middleware: a query string over the limit is a 414; past the
/// concurrency limit a 503 `overloaded` with `Retry-After` (shedding at once
/// keeps the answered requests fast, where a queue would make every one
/// slow); a request not answered in time a 503 `timeout`. The permit is
/// held until the response head is ready, not while a body streams.
pub async fn enforce(
    State(gate): State<Arc<RequestGate>>,
    request: Request,
    next: Next,
) -> Response {
    let limits = &gate.limits;
    let query_bytes = request.uri().query().map_or(0, str::len);
    if query_bytes > limits.max_query_bytes {
        return ApiError::new(
            ErrorCode::QueryTooLong,
            format!(
                "the query string has {query_bytes} bytes; at most {} are accepted (http_max_query_bytes)",
                limits.max_query_bytes
            ),
        )
        .into_response();
    }
    if PROBE_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_permit) = gate.permits.clone().try_acquire_owned() else {
        let mut response = ApiError::new(
            ErrorCode::Overloaded,
            format!(
                "{} requests are being answered, the most at once (http_max_concurrent_requests); retry shortly",
                limits.max_concurrent_requests
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!(
                "no answer within {:?} (http_request_timeout)",
                limits.request_timeout
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    /// A router whose `/slow` answers after `hold`, behind the gate.
    fn gated(limits: RequestLimits, hold: Duration) -> Router {
        let gate = Arc::new(RequestGate::new(limits));
        Router::new()
            .route(
                "/slow",
                get(move || async move {
                    tokio::time::sleep(hold).await;
                    "done"
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(gate, enforce))
    }

    async fn call(router: &Router, uri: &str) -> (u16, serde_json::Value, Option<String>) {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body, retry)
    }

    #[tokio::test]
    async fn a_query_string_over_the_limit_is_a_json_414() {
        let limits = RequestLimits {
            max_query_bytes: 10,
            ..RequestLimits::default()
        };
        let router = gated(limits, Duration::ZERO);
        let (status, _, _) = call(&router, "/slow?a=12345678").await;
        assert_eq!(status, 200, "10 bytes is within the limit");
        let (status, body, _) = call(&router, "/slow?a=123456789").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (414, Some("query_too_long"))
        );
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("http_max_query_bytes"));
        // Probes too: the limit is on parsing, which every path does.
        let (status, _, _) = call(&router, "/healthz?a=123456789").await;
        assert_eq!(status, 414);
    }

    #[tokio::test]
    async fn past_the_concurrency_limit_requests_are_shed_and_probes_still_answer() {
        let limits = RequestLimits {
            max_concurrent_requests: 2,
            ..RequestLimits::default()
        };
        let router = gated(limits, Duration::from_millis(500));
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let router = router.clone();
                tokio::spawn(async move { call(&router, "/slow").await.0 })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, body, retry) = call(&router, "/slow").await;
        assert_eq!((status, body["code"].as_str()), (503, Some("overloaded")));
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(call(&router, "/healthz").await.0, 200);
        for task in busy {
            assert_eq!(task.await.unwrap(), 200);
        }
        // The permits came back.
        assert_eq!(call(&router, "/slow").await.0, 200);
    }

    #[tokio::test]
    async fn a_request_not_answered_in_time_is_a_503_timeout() {
        let limits = RequestLimits {
            request_timeout: Duration::from_millis(100),
            ..RequestLimits::default()
        };
        let router = gated(limits, Duration::from_secs(5));
        let started = std::time::Instant::now();
        let (status, body, _) = call(&router, "/slow").await;
        assert_eq!((status, body["code"].as_str()), (503, Some("timeout")));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("http_request_timeout"));
    }
}
