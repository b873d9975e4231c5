//! What an operator watches: the service's status (`GET /v1/status`), the
//! same pushed every second with the top ads (`GET /v1/live`, server-sent
//! events), and the page at `/` that shows them.
//!
//! The event counts come from the metrics this process already keeps (the
//! Prometheus text of `/metrics`, read once a second): the hot path counts
//! nothing twice for the page.

use super::body::{EventTotals, LiveSnapshot, PartitionRow, RejectedTotals, ServiceStatus};
use super::{ApiError, Gateway};
use adclick_actors::partitions::Partitions;
use adclick_actors::telemetry::{
    CONSUMED, CONSUMER_PENDING, COUNTED, DUPLICATE, FUTURE, INVALID, LATE_CORRECTIONS, TOO_LATE,
};
use adclick_actors::time::event_clock::{closed_until, final_until, NO_WATERMARK};
use adclick_actors::time::{format_rfc3339, now_ms};
use adclick_actors::FilterQuery;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The page at `/`: one HTML file with its script and styles inline, no
/// external fonts or scripts (it works offline).
pub const STATUS_PAGE: &str = include_str!("status.html");

/// How often `/v1/live` sends a snapshot.
pub const LIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Most `/v1/live` streams open at once: each costs a top-N query over
/// every partition a second, so watchers cannot crowd out queries.
pub const MAX_LIVE_STREAMS: usize = 32;

/// How many ads each window of a live snapshot lists.
pub const LIVE_TOP_ADS: usize = 10;

/// The event counts and consumer backlogs read off the Prometheus text of
/// this process's metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MeterReading {
    /// Totals over every partition.
    pub totals: EventTotals,
    /// Each partition's consumer backlog (messages pending).
    pub pending: BTreeMap<u32, u64>,
}

impl MeterReading {
    /// Reads the samples adclick's partitions export (other lines, comments
    /// and unknown metrics are passed over).
    pub fn from_prometheus(text: &str) -> MeterReading {
        let mut reading = MeterReading::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let t = &mut reading.totals;
            match name {
                CONSUMED => t.consumed += value,
                COUNTED => t.counted += value,
                DUPLICATE => t.duplicate += value,
                LATE_CORRECTIONS => t.late_corrections += value,
                INVALID => t.rejected.invalid += value,
                TOO_LATE => t.rejected.too_late += value,
                FUTURE => t.rejected.future += value,
                CONSUMER_PENDING => {
                    if let Some(partition) = label(labels, "partition").and_then(|p| p.parse().ok())
                    {
                        reading.pending.insert(partition, value.max(0.0) as u64);
                    }
                }
                _ => {}
            }
        }
        reading
    }
}

/// The value of label `name` in `a="1",b="2"` (adclick's label values never
/// hold quotes or commas).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

/// Per-second rates between two totals `seconds` apart.
pub fn rates(before: &EventTotals, after: &EventTotals, seconds: f64) -> EventTotals {
    let per_second = |a: f64, b: f64| {
        if seconds > 0.0 {
            ((b - a) / seconds).max(0.0)
        } else {
            0.0
        }
    };
    EventTotals {
        consumed: per_second(before.consumed, after.consumed),
        counted: per_second(before.counted, after.counted),
        duplicate: per_second(before.duplicate, after.duplicate),
        late_corrections: per_second(before.late_corrections, after.late_corrections),
        rejected: RejectedTotals {
            future: per_second(before.rejected.future, after.rejected.future),
            invalid: per_second(before.rejected.invalid, after.rejected.invalid),
            too_late: per_second(before.rejected.too_late, after.rejected.too_late),
        },
    }
}

/// A time as the bodies show it; `None` for no watermark yet.
fn known_time(ms: i64) -> Option<String> {
    (ms != NO_WATERMARK).then(|| format_rfc3339(ms))
}

impl Gateway {
    /// The metrics as read now, when a recorder is installed.
    fn meter_reading(&self) -> Option<MeterReading> {
        self.metrics
            .as_ref()
            .map(|handle| MeterReading::from_prometheus(&handle.render()))
    }

    /// The service's status now.
    fn status(&self, reading: Option<&MeterReading>) -> ServiceStatus {
        let partitions: &Partitions = &self.partitions;
        let now = now_ms();
        let rows = partitions
            .status()
            .into_iter()
            .map(|p| PartitionRow {
                partition: p.partition,
                owner: p.owner,
                runs_here: p.runs_here,
                ready: p.ready,
                watermark: known_time(p.watermark),
                watermark_lag_seconds: (p.watermark != NO_WATERMARK)
                    .then(|| (now - p.watermark) as f64 / 1000.0),
                pending: reading
                    .filter(|_| p.runs_here)
                    .and_then(|r| r.pending.get(&p.partition).copied()),
                last_commit: p.last_commit.map(|(_, at)| format_rfc3339(at)),
                last_commit_seq: p.last_commit.map(|(seq, _)| seq),
                restarts: p.restarts,
            })
            .collect();
        let slowest = partitions.slowest_watermark();
        ServiceStatus {
            closed_until: known_time(slowest).map(|_| format_rfc3339(closed_until(slowest))),
            final_until: known_time(slowest)
                .map(|_| format_rfc3339(final_until(slowest, self.settings.allowed_lateness_ms))),
            member: self.member.clone(),
            now: format_rfc3339(now),
            partitions: rows,
            ready: partitions.not_ready().is_empty(),
            totals: reading.map(|r| r.totals),
        }
    }
}

/// The partitions, their owners, watermarks, lag and last commits, and the
/// event counts since start.
#[utoipa::path(
    get,
    path = "/v1/status",
    operation_id = "status",
    tag = "service",
    responses((status = 200, description = "The service's status", body = ServiceStatus))
)]
pub(super) async fn status(State(gw): State<Arc<Gateway>>) -> Json<ServiceStatus> {
    let reading = gw.meter_reading();
    Json(gw.status(reading.as_ref()))
}

/// A stream of snapshots, one a second: status, rates, top ads.
///
/// Server-sent events (`text/event-stream`); each `snapshot` event's data
/// is a `LiveSnapshot` as JSON.
#[utoipa::path(
    get,
    path = "/v1/live",
    operation_id = "live",
    tag = "service",
    responses(
        (status = 200, description = "Server-sent events: `event: snapshot`, data a LiveSnapshot (JSON), one a second", body = LiveSnapshot, content_type = "text/event-stream"),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub(super) async fn live(State(gw): State<Arc<Gateway>>) -> Response {
    let Ok(permit) = gw.live_streams.clone().try_acquire_owned() else {
        return ApiError::new(
            super::params::ErrorCode::TooManyStreams,
            format!("at most {MAX_LIVE_STREAMS} live streams are served at once; retry later"),
        )
        .into_response();
    };
    // The first tick is at once: the page has something to show on load.
    let mut ticks = tokio::time::interval(LIVE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watcher = Watcher {
        gateway: gw,
        previous: None,
        ticks,
        _permit: permit,
    };
    let snapshots = futures::stream::unfold(watcher, |mut watcher| async move {
        watcher.ticks.tick().await;
        let snapshot = watcher.snapshot().await;
        let event = Event::default()
            .event("snapshot")
            .json_data(&snapshot)
            .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
        Some((Ok::<_, Infallible>(event), watcher))
    });
    Sse::new(snapshots)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One open `/v1/live` stream.
struct Watcher {
    gateway: Arc<Gateway>,
    /// The totals of the previous snapshot, and when they were read.
    previous: Option<(EventTotals, Instant)>,
    /// When the next snapshot is due.
    ticks: tokio::time::Interval,
    /// Held while the stream is open (see [`MAX_LIVE_STREAMS`]).
    _permit: OwnedSemaphorePermit,
}

impl Watcher {
    async fn snapshot(&mut self) -> LiveSnapshot {
        let gw = &self.gateway;
        let reading = gw.meter_reading();
        let read_at = Instant::now();
        let rates = match (&self.previous, &reading) {
            (Some((before, at)), Some(now)) => Some(rates(
                before,
                &now.totals,
                read_at.duration_since(*at).as_secs_f64(),
            )),
            _ => None,
        };
        self.previous = reading.as_ref().map(|r| (r.totals, read_at));
        let status = gw.status(reading.as_ref());
        let mut tops = Vec::new();
        let mut tops_error = None;
        for &window in &gw.settings.feed.top_windows {
            match gw
                .popular_answer(FilterQuery::default(), LIVE_TOP_ADS, window, None)
                .await
            {
                Ok(top) => tops.push(top),
                Err(e) => {
                    tops_error = Some(e.error);
                    tops.clear();
                    break;
                }
            }
        }
        LiveSnapshot {
            rates,
            status,
            tops,
            tops_error,
        }
    }
}

/// A semaphore of [`MAX_LIVE_STREAMS`] permits.
pub fn live_streams() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_LIVE_STREAMS))
}

/// The status page.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "statusPage",
    tag = "service",
    responses((status = 200, description = "The live status page (HTML; it reads /v1/live)", body = String, content_type = "text/html"))
)]
pub(super) async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        STATUS_PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP adclick_events_consumed_total Messages consumed from JetStream
# TYPE adclick_events_consumed_total counter
adclick_events_consumed_total{partition="0"} 10
adclick_events_consumed_total{partition="1"} 5
adclick_events_counted_total{partition="0"} 8
adclick_events_counted_total{partition="1"} 4
adclick_events_duplicate_total{partition="0"} 2
adclick_events_invalid_total{partition="1"} 1
adclick_events_too_late_total{partition="1"} 0
adclick_events_future_total{partition="0"} 3
adclick_late_corrections_total{partition="0"} 7
adclick_consumer_pending{partition="0"} 12
adclick_consumer_pending{partition="1"} 0
adclick_checkpoint_duration_seconds_bucket{partition="0",le="0.001"} 4
adclick_http_request_duration_seconds_count{route="/v1/status",status="200"} 9
"#;

    #[test]
    fn a_reading_sums_partitions_and_keeps_each_backlog() {
        let reading = MeterReading::from_prometheus(TEXT);
        assert_eq!(
            reading.totals,
            EventTotals {
                consumed: 15.0,
                counted: 12.0,
                duplicate: 2.0,
                late_corrections: 7.0,
                rejected: RejectedTotals {
                    future: 3.0,
                    invalid: 1.0,
                    too_late: 0.0,
                },
            }
        );
        assert_eq!(reading.pending, BTreeMap::from([(0, 12), (1, 0)]));
    }

    #[test]
    fn garbage_lines_change_nothing() {
        let text = "adclick_events_consumed_total{partition=\"0\"} nan-ish\nnonsense\n\n{\n";
        assert_eq!(MeterReading::from_prometheus(text), MeterReading::default());
    }

    #[test]
    fn rates_are_per_second_and_never_negative() {
        let before = MeterReading::from_prometheus(TEXT).totals;
        let mut after = before;
        after.consumed += 30.0;
        after.rejected.invalid += 3.0;
        // A counter that went down (a partition moved away) is not a negative rate.
        after.counted -= 5.0;
        let r = rates(&before, &after, 2.0);
        assert_eq!(r.consumed, 15.0);
        assert_eq!(r.rejected.invalid, 1.5);
        assert_eq!(r.counted, 0.0);
        assert_eq!(rates(&before, &after, 0.0).consumed, 0.0);
    }
}
