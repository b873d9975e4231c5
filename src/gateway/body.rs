//! The JSON bodies the gateway answers with (SPEC §3), as types: serde writes
//! them and utoipa describes them, so the document's schemas are the code's.
//!
//! Fields are declared in alphabetical order on purpose: these bodies used to
//! be built with `serde_json::json!`, whose maps sort their keys, and the
//! contract's answers stay byte for byte the same (`tests` below pin that).

use adclick_actors::{FilterQuery, IpType};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

/// The dimension values an answer is restricted to (`{}`: all clicks).
///
/// Declared extra dimensions are members too, their values as text. Their
/// names depend on the configuration, so the derived schema has only the
/// built-in ones and `openapi::document` adds a property per declared extra
/// dimension when the router is built (extra members stay refused:
/// `additionalProperties: false`). Serialized by hand so every member,
/// built-in or extra, comes in alphabetical order, as `json!` maps did.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterBody {
    /// Two-letter ISO 3166-1 code, upper case (ZZ: unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    /// Address family of the click's ip.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ip_type: Option<IpTypeName>,
    /// (dimension, value) of the declared extra dimensions filtered by.
    #[serde(skip)]
    pub extras: Vec<(String, String)>,
}

impl Serialize for FilterBody {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&str, &str)> = Vec::with_capacity(2 + self.extras.len());
        if let Some(country) = &self.country {
            entries.push(("country", country));
        }
        if let Some(ip_type) = self.ip_type {
            entries.push(("ip_type", ip_type.as_str()));
        }
        entries.extend(self.extras.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        entries.sort_unstable();
        let mut map = serializer.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The `ip_type` dimension's values.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IpTypeName {
    /// An IPv4 address.
    V4,
    /// An IPv6 address.
    V6,
    /// No ip, or one that does not parse.
    Unknown,
}

impl IpTypeName {
    /// The value as it appears in bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            IpTypeName::V4 => "v4",
            IpTypeName::V6 => "v6",
            IpTypeName::Unknown => "unknown",
        }
    }
}

impl From<&FilterQuery> for FilterBody {
    fn from(filter: &FilterQuery) -> FilterBody {
        let mut extras = filter.extras.clone();
        extras.sort();
        FilterBody {
            country: filter.country.map(|c| c.as_str().to_string()),
            ip_type: filter.ip_type.map(|t| match t {
                IpType::V4 => IpTypeName::V4,
                IpType::V6 => IpTypeName::V6,
                IpType::Unknown => IpTypeName::Unknown,
            }),
            extras,
        }
    }
}

/// `GET /v1/ads/{ad_id}/aggregated_count`: the clicks of one ad over `[from, to)`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AggregatedCount {
    /// The ad asked about.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub ad_id: String,
    /// Every minute of the range is closed by the watermark.
    pub complete: bool,
    /// Clicks counted in the range (so far, if not `complete`).
    pub count: u64,
    /// The filter applied.
    pub filter: FilterBody,
    /// No late correction can change the count any more (the range is past allowed lateness).
    #[serde(rename = "final")]
    #[schema(rename = "final")]
    pub is_final: bool,
    /// Range start (inclusive), RFC 3339 UTC, on a minute.
    #[schema(format = DateTime)]
    pub from: String,
    /// Range end (exclusive), RFC 3339 UTC, on a minute.
    #[schema(format = DateTime)]
    pub to: String,
    /// Present (true) when a minute of the range was rewritten by
    /// `adclick reconcile --repair`: its counts are a recount of the raw
    /// clicks (docs/RECONCILIATION.md). Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub reconciled: bool,
}

/// One ad of a `popular` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdCount {
    /// The ad.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub ad_id: String,
    /// Its clicks over the whole window.
    pub count: u64,
}

/// `GET /v1/ads/popular`: the most clicked ads over a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct Popular {
    /// At most `count` ads: clicks descending, ties by `ad_id` ascending.
    pub ads: Vec<AdCount>,
    /// Every minute of the window is closed on every partition.
    pub complete: bool,
    /// The filter applied.
    pub filter: FilterBody,
    /// No late correction can change the ranking any more.
    #[serde(rename = "final")]
    #[schema(rename = "final")]
    pub is_final: bool,
    /// Window start (inclusive), RFC 3339 UTC, on a minute.
    #[schema(format = DateTime)]
    pub from: String,
    /// Window end (exclusive), RFC 3339 UTC, on a minute.
    #[schema(format = DateTime)]
    pub to: String,
    /// The window's length in minutes.
    #[schema(minimum = 1, maximum = 1440)]
    pub window_minutes: i64,
    /// Present (true) when a minute of the window was rewritten by
    /// `adclick reconcile --repair` on some partition (docs/RECONCILIATION.md).
    /// Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub reconciled: bool,
}

/// `GET /healthz`: the process is alive.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: HealthStatus,
}

/// The only value of `status` in `/healthz`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Alive.
    Ok,
}

/// `GET /readyz`: whether every owned partition has recovered and consumes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// The partitions still recovering.
    pub not_ready: Vec<u32>,
    /// How many partitions this node owns.
    pub partitions: usize,
    /// `not_ready` is empty.
    pub ready: bool,
}

/// One minute of a [`MinuteSeries`].
#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteCount {
    /// The minute's start, RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub minute: String,
    /// Clicks counted in it.
    pub count: u64,
}

/// `GET /v1/ads/{ad_id}/series`: one ad's clicks minute by minute (the
/// status page draws its sparkline from it).
#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteSeries {
    /// The ad asked about.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub ad_id: String,
    /// Every minute of the range is closed by the watermark.
    pub complete: bool,
    /// The filter applied.
    pub filter: FilterBody,
    /// Range start (inclusive), RFC 3339 UTC, on a minute.
    #[schema(format = DateTime)]
    pub from: String,
    /// Each minute of `[from, to)`, oldest first.
    pub minutes: Vec<MinuteCount>,
    /// Range end (exclusive), RFC 3339 UTC, on a minute.
    #[schema(format = DateTime)]
    pub to: String,
}

/// One partition as `GET /v1/status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PartitionRow {
    /// The partition number.
    pub partition: u32,
    /// In a cluster: the member holding its lease (absent: nobody, or no cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub owner: Option<String>,
    /// This process runs it.
    pub runs_here: bool,
    /// It answers queries (recovered and consuming).
    pub ready: bool,
    /// Its watermark, RFC 3339 UTC (absent before its first click).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub watermark: Option<String>,
    /// Wall clock minus watermark, seconds (absent before its first click).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub watermark_lag_seconds: Option<f64>,
    /// Messages of its consumer not yet delivered: how far it is behind the
    /// stream (absent where it does not run here).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub pending: Option<u64>,
    /// The time of this process's latest commit of it, RFC 3339 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub last_commit: Option<String>,
    /// The stream sequence that commit covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_commit_seq: Option<u64>,
    /// Rebuilds after a failure since this process started.
    pub restarts: u64,
}

/// Clicks rejected, by reason (the `CLICKS_REJECTED` stream holds each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RejectedTotals {
    /// Too far in the future (`max_future_skew`).
    pub future: f64,
    /// Not a valid click.
    pub invalid: f64,
    /// Later than `allowed_lateness`.
    pub too_late: f64,
}

/// Event counts of the partitions this process runs, since it started: as
/// totals in `/v1/status`, as per-second rates in `/v1/live`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventTotals {
    /// Messages consumed from the stream.
    pub consumed: f64,
    /// Clicks counted.
    pub counted: f64,
    /// Repeats of a counted click id, not counted again.
    pub duplicate: f64,
    /// Clicks counted as corrections of a closed minute.
    pub late_corrections: f64,
    /// Rejected, by reason.
    pub rejected: RejectedTotals,
}

/// `GET /v1/status`: what an operator checks first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceStatus {
    /// Every minute before this has closed on every partition (absent
    /// before the first click).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub closed_until: Option<String>,
    /// Every minute before this is final on every partition: past allowed
    /// lateness, no correction can change it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub final_until: Option<String>,
    /// In a cluster: this member's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub member: Option<String>,
    /// When this answer was made, RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub now: String,
    /// Every partition of the stream.
    pub partitions: Vec<PartitionRow>,
    /// Every partition this process should run answers queries.
    pub ready: bool,
    /// Event counts since start (absent when no metrics recorder is installed).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub totals: Option<EventTotals>,
}

/// One event of `GET /v1/live`: the status, the rates since the previous
/// event, and the top ads of each configured window.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveSnapshot {
    /// Events per second since the previous snapshot of this stream (absent
    /// in the first one, or with no metrics recorder).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rates: Option<EventTotals>,
    /// The service's status.
    pub status: ServiceStatus,
    /// The top 10 ads of each window of `top_windows`, as `GET /v1/ads/popular` answers them.
    pub tops: Vec<Popular>,
    /// Why `tops` is empty, when it is (e.g. a partition still recovering).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub tops_error: Option<String>,
}

/// Every error: a machine code and a human sentence. Its schema in the
/// document is built per HTTP status (`openapi.rs`), listing the codes that
/// status carries.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Machine-readable code.
    pub code: &'static str,
    /// Human sentence.
    pub error: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use adclick_actors::Country;
    use serde_json::json;

    // The bodies as the handlers built them before they were types: the
    // contract's bytes must not change.
    #[test]
    fn bodies_serialize_as_the_json_macro_did() {
        let filter = FilterQuery {
            country: Country::parse("us"),
            ip_type: Some(IpType::V6),
            extras: Vec::new(),
        };
        let typed = AggregatedCount {
            ad_id: "ad-1".into(),
            complete: true,
            count: 1234,
            filter: FilterBody::from(&filter),
            is_final: false,
            from: "2026-11-29T10:00:00Z".into(),
            to: "2026-11-29T10:05:00Z".into(),
            reconciled: false,
        };
        let before = json!({
            "ad_id": "ad-1",
            "from": "2026-11-29T10:00:00Z",
            "to": "2026-11-29T10:05:00Z",
            "filter": {"country": "US", "ip_type": "v6"},
            "count": 1234,
            "complete": true,
            "final": false,
        });
        assert_eq!(
            serde_json::to_string(&typed).unwrap(),
            serde_json::to_string(&before).unwrap()
        );

        let typed = Popular {
            ads: vec![AdCount {
                ad_id: "ad-7".into(),
                count: 99,
            }],
            complete: true,
            filter: FilterBody::from(&FilterQuery::default()),
            is_final: true,
            from: "2026-11-29T10:00:00Z".into(),
            to: "2026-11-29T10:05:00Z".into(),
            window_minutes: 5,
            reconciled: false,
        };
        let before = json!({
            "window_minutes": 5,
            "from": "2026-11-29T10:00:00Z",
            "to": "2026-11-29T10:05:00Z",
            "filter": {},
            "complete": true,
            "final": true,
            "ads": [{"ad_id": "ad-7", "count": 99}],
        });
        assert_eq!(
            serde_json::to_string(&typed).unwrap(),
            serde_json::to_string(&before).unwrap()
        );

        let typed = Readiness {
            not_ready: vec![3],
            partitions: 4,
            ready: false,
        };
        let before = json!({"ready": false, "partitions": 4, "not_ready": [3]});
        assert_eq!(
            serde_json::to_string(&typed).unwrap(),
            serde_json::to_string(&before).unwrap()
        );
        let typed = Health {
            status: HealthStatus::Ok,
        };
        assert_eq!(serde_json::to_string(&typed).unwrap(), r#"{"status":"ok"}"#);
        let typed = ErrorBody {
            code: "not_found",
            error: "no such endpoint",
        };
        let before = json!({"error": "no such endpoint", "code": "not_found"});
        assert_eq!(
            serde_json::to_string(&typed).unwrap(),
            serde_json::to_string(&before).unwrap()
        );
    }

    #[test]
    fn extra_dimensions_are_members_in_alphabetical_order() {
        let filter = FilterQuery {
            country: Country::parse("de"),
            ip_type: Some(IpType::V4),
            extras: vec![
                ("placement".into(), "top".into()),
                ("browser".into(), "a\"b".into()),
            ],
        };
        assert_eq!(
            serde_json::to_string(&FilterBody::from(&filter)).unwrap(),
            r#"{"browser":"a\"b","country":"DE","ip_type":"v4","placement":"top"}"#
        );
    }
}
