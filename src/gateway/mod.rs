//! The REST gateway (SPEC §3): parses a query, asks the reducer of the ad's
//! partition (or every reducer, for `popular`), and shapes the answer.
//!
//! Each handler carries its `#[utoipa::path]`; `openapi.rs` assembles them
//! into the document served at `/openapi.json`.

pub mod body;
pub mod openapi;
pub mod params;

use adclick_actors::partition::directory::{partition_of, PartitionDirectory};
use adclick_actors::reducer::top_n::top_n;
use adclick_actors::reducer::{Answer, CountQuery, ReducerMsg, TopQuery};
use adclick_actors::telemetry::HTTP_SECONDS;
use adclick_actors::time::{format_rfc3339, minute_floor, now_ms, MINUTE_MS};
use adclick_actors::window::event_clock::{closed_until, final_until, NO_WATERMARK};
use adclick_actors::writer::history_start;
use adclick_actors::{AdId, PipelineSettings};
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use body::{
    AdCount, AggregatedCount, ErrorBody, FilterBody, Health, HealthStatus, Popular, Readiness,
};
use metrics_exporter_prometheus::PrometheusHandle;
use openapi::{AdIdPath, AggregatedCountQuery, BadRequest, PopularQuery, ServerError, Unavailable};
use params::{
    ApiError, ErrorCode, Params, AGGREGATED_COUNT_PARAMS, AT, COUNT, FROM, MINUTES, POPULAR_PARAMS,
    TO, WINDOW,
};
use ractor::rpc::CallResult;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an ad id in a path must match (SPEC §1).
pub const AD_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

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
        let body = ErrorBody {
            code: self.code.as_str(),
            error: &self.error,
        };
        (self.status(), Json(body)).into_response()
    }
}

/// Every route: its path and what answers it. The router is built from this
/// list, and a test checks it against the OpenAPI document path by path.
pub fn routes() -> Vec<(&'static str, MethodRouter<Arc<Gateway>>)> {
    vec![
        ("/v1/ads/popular", get(popular)),
        ("/v1/ads/{ad_id}/aggregated_count", get(aggregated_count)),
        ("/healthz", get(healthz)),
        ("/readyz", get(readyz)),
        ("/metrics", get(metrics)),
        ("/openapi.json", get(openapi_json)),
        ("/docs", get(docs)),
    ]
}

/// The router of every endpoint. Fails only if the OpenAPI document cannot
/// be serialized, which start-up reports.
pub fn router(gateway: Arc<Gateway>) -> Result<Router, serde_json::Error> {
    let document: Arc<str> = openapi::document()?.into();
    let mut router = Router::new();
    for (path, method_router) in routes() {
        router = router.route(path, method_router);
    }
    Ok(router
        .fallback(|| async {
            ApiError::new(ErrorCode::NotFound, "no such endpoint; see /openapi.json")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this endpoint answers GET only",
            )
        })
        .layer(axum::Extension(OpenApiDocument(document)))
        .layer(axum::middleware::from_fn(record_latency))
        .with_state(gateway))
}

/// The serialized OpenAPI document, made once when the router is built.
#[derive(Clone)]
struct OpenApiDocument(Arc<str>);

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
            Ok(CallResult::Success(Err(e))) => Err(ApiError::new(
                ErrorCode::StorageError,
                format!("partition {partition} could not read its data: {e}"),
            )),
            Ok(CallResult::Timeout) => Err(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "partition {partition} did not answer within {:?}",
                    self.query_timeout
                ),
            )),
            _ => Err(ApiError::new(
                ErrorCode::NotReady,
                format!("partition {partition} is restarting; retry shortly"),
            )),
        }
    }

    /// Refuses a range that starts before the retained history of a partition
    /// with this watermark: its count would silently be too small.
    fn check_retained(&self, from: i64, watermark: i64) -> Result<(), ApiError> {
        let start = history_start(watermark, self.settings.history_retention_ms);
        if watermark != NO_WATERMARK && from < start {
            return Err(ApiError::new(
                ErrorCode::OutsideRetention,
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
            return Err(ApiError::new(
                ErrorCode::InvalidRange,
                "`from` must be before `to` (both are floored to the minute)",
            ));
        }
        if (to - from) / MINUTE_MS > MAX_RANGE_MINUTES {
            return Err(ApiError::new(
                ErrorCode::RangeTooLong,
                format!("a range may cover at most {MAX_RANGE_MINUTES} minutes (31 days)"),
            ));
        }
        Ok(())
    }
}

/// Clicks of one ad over a range of minutes.
#[utoipa::path(
    get,
    path = "/v1/ads/{ad_id}/aggregated_count",
    operation_id = "aggregatedCount",
    tag = "counts",
    params(AdIdPath, AggregatedCountQuery),
    responses(
        (status = 200, description = "The count", body = AggregatedCount),
        (status = 400, response = BadRequest),
        (status = 500, response = ServerError),
        (status = 503, response = Unavailable),
    )
)]
async fn aggregated_count(
    State(gw): State<Arc<Gateway>>,
    ad_id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AggregatedCount>, ApiError> {
    let invalid_ad_id = |shown: &str| {
        ApiError::new(
            ErrorCode::InvalidAdId,
            format!("ad id `{shown}` must match [A-Za-z0-9_-]{{1,64}}"),
        )
    };
    // A path segment that is not UTF-8 once percent-decoded never reaches
    // `AdId::parse`: it is still a bad ad id, answered as JSON like the others.
    let Path(ad_id) = ad_id.map_err(|_| invalid_ad_id("(not UTF-8)"))?;
    let ad = AdId::parse(&ad_id).ok_or_else(|| invalid_ad_id(&ad_id))?;
    let params = Params::parse(raw.as_deref(), AGGREGATED_COUNT_PARAMS)?;
    let filter = params.filter(&gw.settings.dimension_sets)?;
    let partition = partition_of(ad.as_str(), gw.settings.partitions);
    let slot = gw.directory.slot(partition).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotReady,
            format!("partition {partition} is not served here"),
        )
    })?;
    let (from, to) = match (
        params.minute(&FROM)?,
        params.minute(&TO)?,
        params.get(MINUTES.name),
    ) {
        (Some(from), Some(to), None) => (from, to),
        (None, None, _) => {
            let minutes = params.int(&MINUTES)?;
            let to = closed_end(slot.watermark());
            (to - minutes * MINUTE_MS, to)
        }
        (_, _, Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::ConflictingParameters,
                "give either `from` and `to`, or `minutes`, not both",
            ))
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::MissingParameter,
                "`from` and `to` go together: give both",
            ))
        }
    };
    Gateway::check_range(from, to)?;
    gw.check_retained(from, slot.watermark())?;
    // Readiness last: a malformed request is a 400 even while recovering.
    let reducer = slot.reducer().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotReady,
            format!("partition {partition} is still recovering; retry shortly"),
        )
    })?;
    let query = CountQuery {
        ad,
        filter,
        from,
        to,
    };
    let answer = gw
        .ask(&reducer, partition, |reply| ReducerMsg::Count(query, reply))
        .await?;
    let known = answer.watermark != NO_WATERMARK;
    Ok(Json(AggregatedCount {
        ad_id: ad.as_str().to_string(),
        complete: known && to <= closed_until(answer.watermark),
        count: answer.value,
        filter: FilterBody::from(&filter),
        is_final: known && to <= final_until(answer.watermark, gw.settings.allowed_lateness_ms),
        from: format_rfc3339(from),
        to: format_rfc3339(to),
    }))
}

/// The most clicked ads over a sliding window.
#[utoipa::path(
    get,
    path = "/v1/ads/popular",
    operation_id = "popular",
    tag = "counts",
    params(PopularQuery),
    responses(
        (status = 200, description = "The top ads, count descending, ties by ad_id ascending", body = Popular),
        (status = 400, response = BadRequest),
        (status = 500, response = ServerError),
        (status = 503, response = Unavailable),
    )
)]
async fn popular(
    State(gw): State<Arc<Gateway>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Popular>, ApiError> {
    let params = Params::parse(raw.as_deref(), POPULAR_PARAMS)?;
    let filter = params.filter(&gw.settings.dimension_sets)?;
    let n = params.int(&COUNT)? as usize;
    let window = params.int(&WINDOW)?;
    let at_param = params.minute(&AT)?;
    let mut reducers = Vec::new();
    let mut not_ready = Vec::new();
    for slot in gw.directory.slots() {
        match slot.reducer() {
            Some(r) => reducers.push((slot.partition, r)),
            None => not_ready.push(slot.partition.to_string()),
        }
    }
    if !not_ready.is_empty() {
        return Err(ApiError::new(
            ErrorCode::NotReady,
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
            filter,
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
    let ads = top_n(merged, n)
        .into_iter()
        .map(|(ad, count)| AdCount {
            ad_id: ad.as_str().to_string(),
            count,
        })
        .collect();
    Ok(Json(Popular {
        ads,
        complete,
        filter: FilterBody::from(&filter),
        is_final: fin,
        from: format_rfc3339(from),
        to: format_rfc3339(at),
        window_minutes: window,
    }))
}

/// The process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "service",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// Every owned partition has recovered and consumes.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "service",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: some partitions are still recovering", body = Readiness),
    )
)]
async fn readyz(State(gw): State<Arc<Gateway>>) -> (StatusCode, Json<Readiness>) {
    let not_ready: Vec<u32> = gw
        .directory
        .slots()
        .iter()
        .filter(|s| !s.is_ready())
        .map(|s| s.partition)
        .collect();
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready: not_ready.is_empty(),
        partitions: gw.directory.slots().len(),
        not_ready,
    };
    (status, Json(body))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "service",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 503, response = Unavailable),
    )
)]
async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    match &gw.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => {
            ApiError::new(ErrorCode::NoMetrics, "no metrics recorder is installed").into_response()
        }
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object, content_type = "application/json"))
)]
async fn openapi_json(
    axum::Extension(OpenApiDocument(document)): axum::Extension<OpenApiDocument>,
) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}

/// This API as a browsable page.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "service",
    responses((status = 200, description = "HTML page rendered from /openapi.json in the browser", body = String, content_type = "text/html"))
)]
async fn docs() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DOCS_PAGE,
    )
        .into_response()
}
