//! The REST gateway (SPEC §3): parses a query, asks the reducer of the ad's
//! partition (or every reducer, for `popular`), and shapes the answer.
//!
//! Each handler carries its `#[utoipa::path]`; `openapi.rs` assembles them
//! into the document served at `/openapi.json`.

pub mod access;
pub mod body;
pub mod limits;
pub mod listener;
pub mod live;
pub mod openapi;
pub mod params;

use access::ApiAccess;
use adclick_actors::partitions::{CountQuery, TopQuery};
use adclick_actors::partitions::{Partitions, QueryError};
use adclick_actors::store::history_start;
use adclick_actors::telemetry::HTTP_SECONDS;
use adclick_actors::time::event_clock::{closed_until, final_until, NO_WATERMARK};
use adclick_actors::time::{format_rfc3339, minute_floor, now_ms, MINUTE_MS};
use adclick_actors::{AdId, PipelineSettings};
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use body::{
    AdCount, AggregatedCount, ErrorBody, FilterBody, Health, HealthStatus, MinuteCount,
    MinuteSeries, Popular, Readiness,
};
use limits::{RequestGate, RequestLimits};
use metrics_exporter_prometheus::PrometheusHandle;
use openapi::{
    AdIdPath, AggregatedCountQuery, BadRequest, PopularQuery, SeriesQuery, ServerError, Unavailable,
};
use params::{
    ApiError, ErrorCode, Params, AGGREGATED_COUNT_PARAMS, AT, COUNT, FROM, MINUTES, POPULAR_PARAMS,
    SERIES_MINUTES, SERIES_PARAMS, TO, WINDOW,
};
use std::sync::Arc;
use std::time::Instant;

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
    /// The partitions: where every question goes.
    pub partitions: Arc<Partitions>,
    /// Service settings (partition count, filters, lateness).
    pub settings: Arc<PipelineSettings>,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Which paths need a bearer token, and which tokens are accepted.
    pub access: ApiAccess,
    /// Query length, concurrency and time limits of each request.
    pub limits: RequestLimits,
    /// In a cluster: this member's id (the status shows it).
    pub member: Option<String>,
    /// Permits of the open `/v1/live` streams ([`live::live_streams`]).
    pub live_streams: Arc<tokio::sync::Semaphore>,
}

impl Gateway {
    /// The gateway of `partitions`: open (no tokens), default request
    /// limits, no cluster member id.
    pub fn new(
        partitions: Arc<Partitions>,
        settings: Arc<PipelineSettings>,
        metrics: Option<PrometheusHandle>,
    ) -> Gateway {
        Gateway {
            partitions,
            settings,
            metrics,
            access: ApiAccess::open(),
            limits: RequestLimits::default(),
            member: None,
            live_streams: live::live_streams(),
        }
    }
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
        ("/", get(live::page)),
        ("/v1/ads/popular", get(popular)),
        ("/v1/ads/{ad_id}/aggregated_count", get(aggregated_count)),
        ("/v1/ads/{ad_id}/series", get(series)),
        ("/v1/status", get(live::status)),
        ("/v1/live", get(live::live)),
        ("/healthz", get(healthz)),
        ("/readyz", get(readyz)),
        ("/metrics", get(metrics)),
        ("/openapi.json", get(openapi_json)),
        ("/docs", get(docs)),
    ]
}

/// The router of every endpoint. The OpenAPI document is generated here,
/// from the gateway's settings, because the query parameters of declared
/// extra dimensions and which operations need a token depend on the
/// configuration. Fails only if the document cannot be serialized, which
/// start-up reports.
pub fn router(gateway: Arc<Gateway>) -> Result<Router, serde_json::Error> {
    let document: Arc<str> = openapi::document(&gateway.settings, &gateway.access)?.into();
    let gate = Arc::new(RequestGate::new(gateway.limits.clone()));
    let access = Arc::new(gateway.access.clone());
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
        // Outermost last: latency is recorded for every answer, refusals
        // included; a token is checked before a request takes a permit.
        .layer(axum::middleware::from_fn_with_state(gate, limits::enforce))
        .layer(axum::middleware::from_fn_with_state(
            access,
            access::require_token,
        ))
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

impl From<QueryError> for ApiError {
    /// The error's type decides the status: a partition that cannot answer
    /// now is a 503 (retry), one that cannot read its file a 500.
    fn from(e: QueryError) -> ApiError {
        let code = match &e {
            QueryError::Storage { .. } | QueryError::StorageElsewhere { .. } => {
                ErrorCode::StorageError
            }
            QueryError::Timeout { .. } => ErrorCode::Timeout,
            QueryError::NotServed { .. }
            | QueryError::NotReady { .. }
            | QueryError::Restarting { .. } => ErrorCode::NotReady,
        };
        ApiError::new(code, e.to_string())
    }
}

impl Gateway {
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
    let ad = parse_ad_id(ad_id)?;
    let params = Params::parse(
        raw.as_deref(),
        AGGREGATED_COUNT_PARAMS,
        &gw.settings.extra_dimensions,
    )?;
    let filter = params.filter(&gw.settings)?;
    let partition = gw.partitions.partition_of(&ad);
    let watermark = gw.partitions.watermark(partition)?;
    let (from, to) = match (
        params.minute(&FROM)?,
        params.minute(&TO)?,
        params.get(MINUTES.name),
    ) {
        (Some(from), Some(to), None) => (from, to),
        (None, None, _) => {
            let minutes = params.int(&MINUTES)?;
            let to = closed_end(watermark);
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
    gw.check_retained(from, watermark)?;
    // Readiness last (inside `count`): a malformed request is a 400 even
    // while recovering.
    let query = CountQuery {
        ad,
        filter: filter.clone(),
        from,
        to,
    };
    let answer = gw.partitions.count(query).await?;
    let known = answer.watermark != NO_WATERMARK;
    Ok(Json(AggregatedCount {
        ad_id: ad.as_str().to_string(),
        complete: known && to <= closed_until(answer.watermark),
        count: answer.value,
        filter: FilterBody::from(&filter),
        is_final: known && to <= final_until(answer.watermark, gw.settings.allowed_lateness_ms),
        from: format_rfc3339(from),
        to: format_rfc3339(to),
        reconciled: answer.reconciled,
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
    let params = Params::parse(
        raw.as_deref(),
        POPULAR_PARAMS,
        &gw.settings.extra_dimensions,
    )?;
    let filter = params.filter(&gw.settings)?;
    let n = params.int(&COUNT)? as usize;
    let window = params.int(&WINDOW)?;
    let at = params.minute(&AT)?;
    Ok(Json(gw.popular_answer(filter, n, window, at).await?))
}

impl Gateway {
    /// The top `n` ads of the `window` minutes ending at `at` (default: the
    /// end of the latest minute closed on every partition).
    pub(crate) async fn popular_answer(
        &self,
        filter: adclick_actors::FilterQuery,
        n: usize,
        window: i64,
        at: Option<i64>,
    ) -> Result<Popular, ApiError> {
        // Readiness before the retention check (a 503 wins over that 400), as
        // `Partitions::top` would only find it after.
        let not_ready = self.partitions.not_ready();
        if !not_ready.is_empty() {
            return Err(QueryError::NotReady {
                partitions: not_ready,
            }
            .into());
        }
        let at = at.unwrap_or_else(|| closed_end(self.partitions.slowest_watermark()));
        let from = at - window * MINUTE_MS;
        self.check_retained(from, self.partitions.newest_watermark())?;
        let query = TopQuery {
            filter: filter.clone(),
            from,
            to: at,
            n,
        };
        // The merged answer carries the slowest partition's watermark: the
        // window is complete (final) only where every partition says so.
        let answer = self.partitions.top(query).await?;
        let known = answer.watermark != NO_WATERMARK;
        let complete = known && at <= closed_until(answer.watermark);
        let fin = known && at <= final_until(answer.watermark, self.settings.allowed_lateness_ms);
        let ads = answer
            .value
            .into_iter()
            .map(|(ad, count)| AdCount {
                ad_id: ad.as_str().to_string(),
                count,
            })
            .collect();
        Ok(Popular {
            ads,
            complete,
            filter: FilterBody::from(&filter),
            is_final: fin,
            from: format_rfc3339(from),
            to: format_rfc3339(at),
            window_minutes: window,
            reconciled: answer.reconciled,
        })
    }
}

/// One ad's clicks minute by minute over the last closed minutes.
#[utoipa::path(
    get,
    path = "/v1/ads/{ad_id}/series",
    operation_id = "series",
    tag = "counts",
    params(AdIdPath, SeriesQuery),
    responses(
        (status = 200, description = "The counts, oldest minute first", body = MinuteSeries),
        (status = 400, response = BadRequest),
        (status = 500, response = ServerError),
        (status = 503, response = Unavailable),
    )
)]
async fn series(
    State(gw): State<Arc<Gateway>>,
    ad_id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<MinuteSeries>, ApiError> {
    let ad = parse_ad_id(ad_id)?;
    let params = Params::parse(raw.as_deref(), SERIES_PARAMS, &gw.settings.extra_dimensions)?;
    let filter = params.filter(&gw.settings)?;
    let minutes = params.int(&SERIES_MINUTES)?;
    let partition = gw.partitions.partition_of(&ad);
    let watermark = gw.partitions.watermark(partition)?;
    let to = closed_end(watermark);
    let from = to - minutes * MINUTE_MS;
    gw.check_retained(from, watermark)?;
    let mut counts = Vec::with_capacity(minutes as usize);
    let mut last_watermark = NO_WATERMARK;
    for minute in (from..to).step_by(MINUTE_MS as usize) {
        let answer = gw
            .partitions
            .count(CountQuery {
                ad,
                filter: filter.clone(),
                from: minute,
                to: minute + MINUTE_MS,
            })
            .await?;
        last_watermark = answer.watermark;
        counts.push(MinuteCount {
            minute: format_rfc3339(minute),
            count: answer.value,
        });
    }
    Ok(Json(MinuteSeries {
        ad_id: ad.as_str().to_string(),
        complete: last_watermark != NO_WATERMARK && to <= closed_until(last_watermark),
        filter: FilterBody::from(&filter),
        from: format_rfc3339(from),
        minutes: counts,
        to: format_rfc3339(to),
    }))
}

/// The ad id of a path, or the 400 that says what is wrong with it.
fn parse_ad_id(ad_id: Result<Path<String>, PathRejection>) -> Result<AdId, ApiError> {
    let invalid_ad_id = |shown: &str| {
        ApiError::new(
            ErrorCode::InvalidAdId,
            format!("ad id `{shown}` must match [A-Za-z0-9_-]{{1,64}}"),
        )
    };
    // A path segment that is not UTF-8 once percent-decoded never reaches
    // `AdId::parse`: it is still a bad ad id, answered as JSON like the others.
    let Path(ad_id) = ad_id.map_err(|_| invalid_ad_id("(not UTF-8)"))?;
    AdId::parse(&ad_id).ok_or_else(|| invalid_ad_id(&ad_id))
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
    let not_ready = gw.partitions.not_ready();
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready: not_ready.is_empty(),
        partitions: gw.partitions.len(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A partition that cannot answer now is a 503 to retry; one that cannot
    /// read its data is a 500.
    #[test]
    fn each_query_error_has_its_status() {
        let cases = [
            (QueryError::NotServed { partition: 1 }, 503, "not_ready"),
            (
                QueryError::NotReady {
                    partitions: vec![1],
                },
                503,
                "not_ready",
            ),
            (QueryError::Restarting { partition: 1 }, 503, "not_ready"),
            (
                QueryError::Timeout {
                    partition: 1,
                    after: Duration::from_secs(5),
                },
                503,
                "timeout",
            ),
            (
                QueryError::StorageElsewhere {
                    partition: 1,
                    message: "disk".into(),
                },
                500,
                "storage_error",
            ),
        ];
        for (error, status, code) in cases {
            let text = error.to_string();
            let api = ApiError::from(error);
            assert_eq!(api.status().as_u16(), status, "{text}");
            assert_eq!(api.code.as_str(), code, "{text}");
            assert_eq!(api.error, text);
        }
    }
}
