//! The REST gateway (SPEC §3): parses a query, asks the reducer of the ad's
//! partition (or every reducer, for `popular`), and shapes the answer.

pub mod params;

use adclick_actors::partition::directory::{partition_of, PartitionDirectory};
use adclick_actors::reducer::top_n::top_n;
use adclick_actors::reducer::{Answer, CountQuery, ReducerMsg, TopQuery};
use adclick_actors::telemetry::HTTP_SECONDS;
use adclick_actors::time::{format_rfc3339, minute_floor, now_ms, MINUTE_MS};
use adclick_actors::window::event_clock::{closed_until, final_until, NO_WATERMARK};
use adclick_actors::writer::history_start;
use adclick_actors::{AdId, FilterQuery, PipelineSettings};
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use params::{ApiError, Params};
use ractor::rpc::CallResult;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A browsable page of the API, rendered from `/openapi.json` in the browser
/// with no external scripts (it works offline).
pub const DOCS_PAGE: &str = include_str!("docs.html");

/// Longest range a count query may cover (31 days), so one query cannot
/// occupy a partition for long.
pub const MAX_RANGE_MINUTES: i64 = 31 * 24 * 60;

/// What every handler shares.
pub struct Gateway {
    /// The partitions and their reducers.
    pub directory: Arc<PartitionDirectory>,
    /// Service settings (partition count, filters, lateness).
    pub settings: Arc<PipelineSettings>,
    /// How long to wait for a reducer.
    pub query_timeout: Duration,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({"error": self.error, "code": self.code})),
        )
            .into_response()
    }
}

/// The router of every endpoint.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/ads/popular", get(popular))
        .route("/v1/ads/{ad_id}/aggregated_count", get(aggregated_count))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route(
            "/docs",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    DOCS_PAGE,
                )
            }),
        )
        .fallback(|| async {
            ApiError {
                status: 404,
                code: "not_found",
                error: "no such endpoint; see /openapi.json".into(),
            }
        })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: 405,
                code: "method_not_allowed",
                error: "this endpoint answers GET only".into(),
            }
        })
        .layer(axum::middleware::from_fn(record_latency))
        .with_state(gateway)
}

async fn record_latency(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(HTTP_SECONDS, "route" => route, "status" => response.status().as_u16().to_string())
        .record(started.elapsed().as_secs_f64());
    response
}

fn filter_json(filter: &FilterQuery) -> Value {
    Value::Object(
        filter
            .entries()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect::<Map<_, _>>(),
    )
}

/// The end of the latest closed minute of a watermark, or the current minute
/// when nothing has closed yet (the answer is then marked incomplete).
fn closed_end(watermark: i64) -> i64 {
    match closed_until(watermark) {
        NO_WATERMARK => minute_floor(now_ms()),
        end => end,
    }
}

impl Gateway {
    async fn ask<T: Send + 'static>(
        &self,
        reducer: &ractor::ActorRef<ReducerMsg>,
        partition: u32,
        make: impl FnOnce(ractor::RpcReplyPort<Result<Answer<T>, String>>) -> ReducerMsg,
    ) -> Result<Answer<T>, ApiError> {
        match reducer.call(make, Some(self.query_timeout)).await {
            Ok(CallResult::Success(Ok(answer))) => Ok(answer),
            Ok(CallResult::Success(Err(e))) => Err(ApiError {
                status: 500,
                code: "storage_error",
                error: format!("partition {partition} could not read its data: {e}"),
            }),
            Ok(CallResult::Timeout) => Err(ApiError::unavailable(
                "timeout",
                format!(
                    "partition {partition} did not answer within {:?}",
                    self.query_timeout
                ),
            )),
            _ => Err(ApiError::unavailable(
                "not_ready",
                format!("partition {partition} is restarting; retry shortly"),
            )),
        }
    }

    /// Refuses a range that starts before the retained history of a partition
    /// with this watermark: its count would silently be too small.
    fn check_retained(&self, from: i64, watermark: i64) -> Result<(), ApiError> {
        let start = history_start(watermark, self.settings.history_retention_ms);
        if watermark != NO_WATERMARK && from < start {
            return Err(ApiError::bad(
                "outside_retention",
                format!(
                    "the range starts before {}, the oldest minute kept (history_retention)",
                    format_rfc3339(start)
                ),
            ));
        }
        Ok(())
    }

    fn check_range(from: i64, to: i64) -> Result<(), ApiError> {
        if from >= to {
            return Err(ApiError::bad(
                "invalid_range",
                "`from` must be before `to` (both are floored to the minute)",
            ));
        }
        if (to - from) / MINUTE_MS > MAX_RANGE_MINUTES {
            return Err(ApiError::bad(
                "range_too_long",
                format!("a range may cover at most {MAX_RANGE_MINUTES} minutes (31 days)"),
            ));
        }
        Ok(())
    }
}

async fn aggregated_count(
    State(gw): State<Arc<Gateway>>,
    Path(ad_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let ad = AdId::parse(&ad_id).ok_or_else(|| {
        ApiError::bad(
            "invalid_ad_id",
            format!("ad id `{ad_id}` must match [A-Za-z0-9_-]{{1,64}}"),
        )
    })?;
    let params = Params::parse(raw.as_deref(), &["from", "to", "minutes"], &gw.settings)?;
    let filter = params.filter(&gw.settings)?;
    let partition = partition_of(ad.as_str(), gw.settings.partitions);
    let slot = gw.directory.slot(partition).ok_or_else(|| {
        ApiError::unavailable(
            "not_ready",
            format!("partition {partition} is not served here"),
        )
    })?;
    let (from, to) = match (
        params.minute("from")?,
        params.minute("to")?,
        params.get("minutes"),
    ) {
        (Some(from), Some(to), None) => (from, to),
        (None, None, _) => {
            let minutes = params.int("minutes", 1, 1440, Some(1))?.unwrap_or(1);
            let to = closed_end(slot.watermark());
            (to - minutes * MINUTE_MS, to)
        }
        (_, _, Some(_)) => {
            return Err(ApiError::bad(
                "conflicting_parameters",
                "give either `from` and `to`, or `minutes`, not both",
            ))
        }
        _ => {
            return Err(ApiError::bad(
                "missing_parameter",
                "`from` and `to` go together: give both",
            ))
        }
    };
    Gateway::check_range(from, to)?;
    gw.check_retained(from, slot.watermark())?;
    // Readiness last: a malformed request is a 400 even while recovering.
    let reducer = slot.reducer().ok_or_else(|| {
        ApiError::unavailable(
            "not_ready",
            format!("partition {partition} is still recovering; retry shortly"),
        )
    })?;
    let query = CountQuery {
        ad,
        filter: filter.clone(),
        from,
        to,
    };
    let answer = gw
        .ask(&reducer, partition, |reply| ReducerMsg::Count(query, reply))
        .await?;
    Ok(Json(json!({
        "ad_id": ad.as_str(),
        "from": format_rfc3339(from),
        "to": format_rfc3339(to),
        "filter": filter_json(&filter),
        "count": answer.value,
        "complete": to <= closed_until(answer.watermark) && answer.watermark != NO_WATERMARK,
        "final": to <= final_until(answer.watermark, gw.settings.allowed_lateness_ms) && answer.watermark != NO_WATERMARK,
    })))
}

async fn popular(
    State(gw): State<Arc<Gateway>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(raw.as_deref(), &["count", "window", "at"], &gw.settings)?;
    let filter = params.filter(&gw.settings)?;
    let n = params.int("count", 1, 1000, Some(100))?.unwrap_or(100) as usize;
    let window = params.int("window", 1, 1440, Some(1))?.unwrap_or(1);
    let at_param = params.minute("at")?;
    let mut reducers = Vec::new();
    let mut not_ready = Vec::new();
    for slot in gw.directory.slots() {
        match slot.reducer() {
            Some(r) => reducers.push((slot.partition, r)),
            None => not_ready.push(slot.partition.to_string()),
        }
    }
    if !not_ready.is_empty() {
        return Err(ApiError::unavailable(
            "not_ready",
            format!(
                "partitions {} are still recovering; retry shortly",
                not_ready.join(", ")
            ),
        ));
    }
    let at = match at_param {
        Some(at) => at,
        None => {
            let slowest = gw
                .directory
                .slots()
                .iter()
                .map(|s| s.watermark())
                .min()
                .unwrap_or(NO_WATERMARK);
            closed_end(slowest)
        }
    };
    let from = at - window * MINUTE_MS;
    let newest = gw.directory.slots().iter().map(|s| s.watermark()).max();
    gw.check_retained(from, newest.unwrap_or(NO_WATERMARK))?;
    let asks = reducers.iter().map(|(p, reducer)| {
        let query = TopQuery {
            filter: filter.clone(),
            from,
            to: at,
            n,
        };
        gw.ask(reducer, *p, move |reply| ReducerMsg::Top(query, reply))
    });
    let answers = futures::future::join_all(asks).await;
    let mut merged = Vec::new();
    let (mut complete, mut fin) = (true, true);
    for answer in answers {
        let answer = answer?;
        complete &= answer.watermark != NO_WATERMARK && at <= closed_until(answer.watermark);
        fin &= answer.watermark != NO_WATERMARK
            && at <= final_until(answer.watermark, gw.settings.allowed_lateness_ms);
        merged.extend(answer.value);
    }
    // All clicks of an ad are in one partition, so the per-partition exact
    // top-N lists merge into the exact global top-N.
    let ads: Vec<Value> = top_n(merged, n)
        .into_iter()
        .map(|(ad, count)| json!({"ad_id": ad.as_str(), "count": count}))
        .collect();
    Ok(Json(json!({
        "window_minutes": window,
        "from": format_rfc3339(from),
        "to": format_rfc3339(at),
        "filter": filter_json(&filter),
        "complete": complete,
        "final": fin,
        "ads": ads,
    })))
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let not_ready: Vec<u32> = gw
        .directory
        .slots()
        .iter()
        .filter(|s| !s.is_ready())
        .map(|s| s.partition)
        .collect();
    let body = json!({
        "ready": not_ready.is_empty(),
        "partitions": gw.directory.slots().len(),
        "not_ready": not_ready,
    });
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    match &gw.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => {
            ApiError::unavailable("no_metrics", "no metrics recorder is installed").into_response()
        }
    }
}
