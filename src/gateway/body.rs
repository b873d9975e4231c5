//! The JSON bodies the gateway answers with (SPEC §3), as types: serde writes
//! them and utoipa describes them, so the document's schemas are the code's.
//!
//! Fields are declared in alphabetical order on purpose: these bodies used to
//! be built with `serde_json::json!`, whose maps sort their keys, and the
//! contract's answers stay byte for byte the same (`tests` below pin that).

use adclick_actors::{Filter, IpType};
use serde::Serialize;
use utoipa::ToSchema;

/// The dimension values an answer is restricted to (`{}`: all clicks).
#[derive(Debug, Serialize, ToSchema)]
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

impl From<&Filter> for FilterBody {
    fn from(filter: &Filter) -> FilterBody {
        FilterBody {
            country: filter.country.map(|c| c.as_str().to_string()),
            ip_type: filter.ip_type.map(|t| match t {
                IpType::V4 => IpTypeName::V4,
                IpType::V6 => IpTypeName::V6,
                IpType::Unknown => IpTypeName::Unknown,
            }),
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
        let filter = Filter {
            country: Country::parse("us"),
            ip_type: Some(IpType::V6),
        };
        let typed = AggregatedCount {
            ad_id: "ad-1".into(),
            complete: true,
            count: 1234,
            filter: FilterBody::from(&filter),
            is_final: false,
            from: "2026-11-29T10:00:00Z".into(),
            to: "2026-11-29T10:05:00Z".into(),
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
            filter: FilterBody::from(&Filter::ALL),
            is_final: true,
            from: "2026-11-29T10:00:00Z".into(),
            to: "2026-11-29T10:05:00Z".into(),
            window_minutes: 5,
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
}
