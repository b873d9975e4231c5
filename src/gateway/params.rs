//! Query-string parsing for the REST API: strict, so a typo never silently
//! widens a query. Every problem is an [`ApiError`] with a sentence and a code.
//!
//! Each endpoint's parameters are a table of [`Param`]s. The parser reads
//! names, bounds and defaults from that table, and the OpenAPI document
//! (`openapi.rs`) is built from the same table, so the two cannot disagree.
//! Declared extra dimensions are query parameters of both endpoints too:
//! their names come from the configuration, so the parser takes them from
//! the settings and the document is generated from the same settings when
//! the router is built ([`extra_dimension_description`], [`MAX_VALUE_BYTES`]).

use adclick_actors::dimension::{ExtraDimension, MAX_VALUE_BYTES};
use adclick_actors::time::{minute_floor, parse_rfc3339};
use adclick_actors::{Country, DimensionSet, FilterQuery, IpType, PipelineSettings};
use axum::http::StatusCode;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The machine-readable `code` of an error body. Each code has exactly one
/// HTTP status ([`ErrorCode::status`]), so the document can say which codes
/// each status carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the path's ad id is not `[A-Za-z0-9_-]{1,64}`.
    InvalidAdId,
    /// 400: the query string cannot be decoded.
    InvalidQuery,
    /// 400: a query parameter the endpoint does not know (a typo must not widen a query).
    UnknownParameter,
    /// 400: a query parameter given twice.
    RepeatedParameter,
    /// 400: a whole-number parameter outside its bounds or not a number.
    InvalidParameter,
    /// 400: a time parameter that is neither RFC 3339 nor epoch ms in 1970..=9999.
    InvalidTime,
    /// 400: a dimension value that cannot exist (`country=USA`).
    InvalidFilterValue,
    /// 400: a combination of dimensions that is not configured.
    UnsupportedFilter,
    /// 400: `minutes` together with `from`/`to`.
    ConflictingParameters,
    /// 400: `from` without `to`, or the reverse.
    MissingParameter,
    /// 400: `from` is not before `to`.
    InvalidRange,
    /// 400: a range longer than 31 days.
    RangeTooLong,
    /// 400: a range that starts before the retained history.
    OutsideRetention,
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint exists but answers GET only.
    MethodNotAllowed,
    /// 500: a partition could not read its stored counts.
    StorageError,
    /// 503: a partition is recovering or restarting.
    NotReady,
    /// 503: a partition did not answer within the query timeout, or the
    /// request was not answered within the request timeout.
    Timeout,
    /// 503: no metrics recorder is installed.
    NoMetrics,
    /// 503: as many `/v1/live` streams are open as are served at once.
    TooManyStreams,
    /// 401: the endpoint needs a bearer token and none (or a malformed one) was sent.
    Unauthorized,
    /// 403: the bearer token is not one the service accepts.
    Forbidden,
    /// 414: the query string is longer than the service accepts.
    QueryTooLong,
    /// 503: the service answers its most requests at once; retry shortly.
    Overloaded,
}

impl ErrorCode {
    /// Every code, in the order the document lists them.
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::InvalidAdId,
        ErrorCode::InvalidQuery,
        ErrorCode::UnknownParameter,
        ErrorCode::RepeatedParameter,
        ErrorCode::InvalidParameter,
        ErrorCode::InvalidTime,
        ErrorCode::InvalidFilterValue,
        ErrorCode::UnsupportedFilter,
        ErrorCode::ConflictingParameters,
        ErrorCode::MissingParameter,
        ErrorCode::InvalidRange,
        ErrorCode::RangeTooLong,
        ErrorCode::OutsideRetention,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::StorageError,
        ErrorCode::NotReady,
        ErrorCode::Timeout,
        ErrorCode::NoMetrics,
        ErrorCode::TooManyStreams,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::QueryTooLong,
        ErrorCode::Overloaded,
    ];

    /// The HTTP status an error with this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::StorageError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NotReady
            | ErrorCode::Timeout
            | ErrorCode::NoMetrics
            | ErrorCode::TooManyStreams
            | ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::QueryTooLong => StatusCode::URI_TOO_LONG,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The code as it appears in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidAdId => "invalid_ad_id",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::UnknownParameter => "unknown_parameter",
            ErrorCode::RepeatedParameter => "repeated_parameter",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::InvalidTime => "invalid_time",
            ErrorCode::InvalidFilterValue => "invalid_filter_value",
            ErrorCode::UnsupportedFilter => "unsupported_filter",
            ErrorCode::ConflictingParameters => "conflicting_parameters",
            ErrorCode::MissingParameter => "missing_parameter",
            ErrorCode::InvalidRange => "invalid_range",
            ErrorCode::RangeTooLong => "range_too_long",
            ErrorCode::OutsideRetention => "outside_retention",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NoMetrics => "no_metrics",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::QueryTooLong => "query_too_long",
            ErrorCode::Overloaded => "overloaded",
        }
    }
}

/// A 4xx/5xx answer: `{"code": "<machine_code>", "error": "<sentence>"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Machine-readable code; it decides the HTTP status.
    pub code: ErrorCode,
    /// Human sentence.
    pub error: String,
}

impl ApiError {
    /// An error with this code and sentence.
    pub fn new(code: ErrorCode, error: impl Into<String>) -> ApiError {
        ApiError {
            code,
            error: error.into(),
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

/// A whole-number query parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntParam {
    /// Its name in the query string.
    pub name: &'static str,
    /// Smallest accepted value.
    pub min: i64,
    /// Largest accepted value.
    pub max: i64,
    /// The value when the parameter is absent.
    pub default: i64,
    /// One sentence for the document.
    pub description: &'static str,
}

/// A query parameter whose values are text of some form (a time, a dimension value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextParam {
    /// Its name in the query string.
    pub name: &'static str,
    /// One sentence for the document.
    pub description: &'static str,
}

/// One query parameter an endpoint accepts, with what values it takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param {
    /// A whole number within bounds.
    Int(IntParam),
    /// RFC 3339 or epoch milliseconds, 1970..=9999, floored to the minute.
    Time(TextParam),
    /// The `country` dimension: two ASCII letters, any case.
    Country(TextParam),
    /// The `ip_type` dimension: `v4`, `v6` or `unknown`.
    IpType(TextParam),
}

impl Param {
    /// Its name in the query string.
    pub fn name(&self) -> &'static str {
        match self {
            Param::Int(p) => p.name,
            Param::Time(p) | Param::Country(p) | Param::IpType(p) => p.name,
        }
    }

    /// One sentence for the document.
    pub fn description(&self) -> &'static str {
        match self {
            Param::Int(p) => p.description,
            Param::Time(p) | Param::Country(p) | Param::IpType(p) => p.description,
        }
    }
}

/// `from`: start of a count range.
pub const FROM: TextParam = TextParam {
    name: "from",
    description: "Range start, inclusive (give it with `to`, not with `minutes`): RFC 3339 or epoch milliseconds, floored to the minute.",
};
/// `to`: end of a count range.
pub const TO: TextParam = TextParam {
    name: "to",
    description: "Range end, exclusive (give it with `from`): RFC 3339 or epoch milliseconds, floored to the minute; at most 31 days after `from`.",
};
/// `minutes`: the last M closed minutes.
pub const MINUTES: IntParam = IntParam {
    name: "minutes",
    min: 1,
    max: 1440,
    default: 1,
    description: "The last M minutes up to the latest minute closed in the ad's partition (instead of `from` and `to`).",
};
/// `minutes` of `series`: the last M closed minutes, an hour by default.
pub const SERIES_MINUTES: IntParam = IntParam {
    name: "minutes",
    min: 1,
    max: 1440,
    default: 60,
    description: "The last M minutes up to the latest minute closed in the ad's partition.",
};
/// `count`: how many ads `popular` returns at most.
pub const COUNT: IntParam = IntParam {
    name: "count",
    min: 1,
    max: 1000,
    default: 100,
    description: "How many ads to return at most.",
};
/// `window`: the length of `popular`'s window.
pub const WINDOW: IntParam = IntParam {
    name: "window",
    min: 1,
    max: 1440,
    default: 1,
    description: "Window length in minutes.",
};
/// `at`: the end of `popular`'s window.
pub const AT: TextParam = TextParam {
    name: "at",
    description: "End of the window, exclusive: RFC 3339 or epoch milliseconds, floored to the minute. Default: the end of the latest minute closed on every partition.",
};
/// `country`: the country dimension filter.
pub const COUNTRY: TextParam = TextParam {
    name: "country",
    description: "Only clicks from this country: a two-letter ISO 3166-1 code, any case (ZZ: unknown). Allowed only in a configured combination of dimensions.",
};
/// `ip_type`: the address-family dimension filter.
pub const IP_TYPE: TextParam = TextParam {
    name: "ip_type",
    description: "Only clicks whose ip was of this family. Allowed only in a configured combination of dimensions.",
};

/// The query parameters of `GET /v1/ads/{ad_id}/aggregated_count`.
pub const AGGREGATED_COUNT_PARAMS: &[Param] = &[
    Param::Time(FROM),
    Param::Time(TO),
    Param::Int(MINUTES),
    Param::Country(COUNTRY),
    Param::IpType(IP_TYPE),
];
/// The query parameters of `GET /v1/ads/{ad_id}/series`.
pub const SERIES_PARAMS: &[Param] = &[
    Param::Int(SERIES_MINUTES),
    Param::Country(COUNTRY),
    Param::IpType(IP_TYPE),
];
/// The query parameters of `GET /v1/ads/popular`.
pub const POPULAR_PARAMS: &[Param] = &[
    Param::Int(COUNT),
    Param::Int(WINDOW),
    Param::Time(AT),
    Param::Country(COUNTRY),
    Param::IpType(IP_TYPE),
];

/// The document's sentence for the query parameter of a declared extra dimension.
pub fn extra_dimension_description(name: &str) -> String {
    format!(
        "Only clicks whose `{name}` field had this value (an extra dimension declared in the \
         configuration): 1 to {MAX_VALUE_BYTES} bytes of UTF-8; `other` is the clicks past the \
         dimension's cap or with a longer value, `unknown` those without the field. Allowed \
         only in a configured combination of dimensions."
    )
}

/// The last millisecond of year 9999: times are refused beyond it (and
/// before 1970), so range arithmetic can never overflow.
pub const LATEST_MS: i64 = 253_402_300_799_999;

/// The decoded query string: each parameter at most once.
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Decodes `raw` and refuses repeated parameters and any not in `known`
    /// or named after a declared extra dimension (`extras`).
    pub fn parse(
        raw: Option<&str>,
        known: &[Param],
        extras: &[ExtraDimension],
    ) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("cannot decode the query string: {e}"),
                )
            })?;
        let mut values = BTreeMap::new();
        for (name, value) in pairs {
            if !known.iter().any(|p| p.name() == name) && !extras.iter().any(|d| d.name == name) {
                let mut all: Vec<&str> = known.iter().map(Param::name).collect();
                all.extend(extras.iter().map(|d| d.name.as_str()));
                return Err(ApiError::new(
                    ErrorCode::UnknownParameter,
                    format!(
                        "unknown query parameter `{name}`; known: {}",
                        all.join(", ")
                    ),
                ));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(ApiError::new(
                    ErrorCode::RepeatedParameter,
                    format!("query parameter `{name}` is given more than once"),
                ));
            }
        }
        Ok(Params { values })
    }

    /// The raw text of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A whole-number parameter within its bounds, or its default when absent.
    pub fn int(&self, param: &IntParam) -> Result<i64, ApiError> {
        let IntParam { name, min, max, .. } = *param;
        match self.get(name) {
            None => Ok(param.default),
            Some(text) => match text.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("`{name}` must be a whole number from {min} to {max}, got `{text}`"),
                )),
            },
        }
    }

    /// A time parameter (RFC 3339 or epoch ms), floored to its minute.
    pub fn minute(&self, param: &TextParam) -> Result<Option<i64>, ApiError> {
        let name = param.name;
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let ms = text
            .parse::<i64>()
            .ok()
            .or_else(|| parse_rfc3339(text))
            .filter(|ms| (0..=LATEST_MS).contains(ms))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidTime,
                    format!("`{name}` must be RFC 3339 (2026-11-29T10:00:00Z) or epoch milliseconds, between 1970 and 9999, got `{text}`"),
                )
            })?;
        Ok(Some(minute_floor(ms)))
    }

    /// The filter given by dimension parameters (built-in and declared
    /// extra ones); it must be one of the configured sets. Extra values stay
    /// text: each partition resolves them ([`FilterQuery::resolve`]).
    pub fn filter(&self, settings: &PipelineSettings) -> Result<FilterQuery, ApiError> {
        let (sets, extras) = (&settings.dimension_sets, &settings.extra_dimensions);
        let mut filter = FilterQuery::default();
        let mut asked = DimensionSet::default();
        if let Some(text) = self.get(COUNTRY.name) {
            asked.country = true;
            filter.country = Some(Country::parse(text).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidFilterValue,
                    format!("`country` must be a two-letter ISO 3166-1 code (ZZ for unknown), got `{text}`"),
                )
            })?);
        }
        if let Some(text) = self.get(IP_TYPE.name) {
            asked.ip_type = true;
            filter.ip_type = Some(IpType::parse(text).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidFilterValue,
                    format!("`ip_type` must be v4, v6 or unknown, got `{text}`"),
                )
            })?);
        }
        for (i, dim) in extras.iter().enumerate() {
            if let Some(text) = self.get(&dim.name) {
                if text.is_empty() || text.len() > MAX_VALUE_BYTES {
                    return Err(ApiError::new(
                        ErrorCode::InvalidFilterValue,
                        format!(
                            "`{}` must be 1 to {MAX_VALUE_BYTES} bytes (longer values count as `other`), got {} bytes",
                            dim.name,
                            text.len()
                        ),
                    ));
                }
                asked.extra |= 1 << i;
                filter.extras.push((dim.name.clone(), text.to_string()));
            }
        }
        if !sets.contains(&asked) {
            let supported: Vec<String> = sets
                .iter()
                .map(|s| format!("[{}]", s.names(extras).join(", ")))
                .collect();
            return Err(ApiError::new(
                ErrorCode::UnsupportedFilter,
                format!(
                    "filtering by [{}] is not configured; supported combinations: {}",
                    asked.names(extras).join(", "),
                    supported.join(", ")
                ),
            ));
        }
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictness() {
        let known = [
            Param::Int(MINUTES),
            Param::Country(COUNTRY),
            Param::IpType(IP_TYPE),
        ];
        let defaults = PipelineSettings::with_defaults(1);
        assert_eq!(
            Params::parse(Some("contry=US"), &known, &[])
                .err()
                .unwrap()
                .code,
            ErrorCode::UnknownParameter
        );
        assert_eq!(
            Params::parse(Some("country=US&country=FR"), &known, &[])
                .err()
                .unwrap()
                .code,
            ErrorCode::RepeatedParameter
        );
        let p = Params::parse(Some("country=us&minutes=5"), &known, &[]).unwrap();
        assert_eq!(p.int(&MINUTES).unwrap(), 5);
        let f = p.filter(&defaults).unwrap();
        assert_eq!(f.entries(), vec![("country".into(), "US".into())]);
        let mut only_all = PipelineSettings::with_defaults(1);
        only_all.dimension_sets = vec![DimensionSet::default()];
        let err = p.filter(&only_all).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedFilter);
        assert!(
            err.error.contains("supported combinations: []"),
            "{}",
            err.error
        );
        let p = Params::parse(
            Some("from=2026-11-29T10:00:59Z&to=60000"),
            &[Param::Time(FROM), Param::Time(TO)],
            &[],
        )
        .unwrap();
        assert_eq!(p.minute(&FROM).unwrap(), Some(1_795_946_400_000));
        assert_eq!(p.minute(&TO).unwrap(), Some(60_000));
        let p = Params::parse(Some("from=yesterday"), &[Param::Time(FROM)], &[]).unwrap();
        assert_eq!(p.minute(&FROM).unwrap_err().code, ErrorCode::InvalidTime);
        for extreme in [
            "-1",
            "-5000000000000000000",
            "9223372036854775807",
            "10000-01-01T00:00:00Z",
        ] {
            let p =
                Params::parse(Some(&format!("from={extreme}")), &[Param::Time(FROM)], &[]).unwrap();
            assert_eq!(
                p.minute(&FROM).unwrap_err().code,
                ErrorCode::InvalidTime,
                "{extreme}"
            );
        }
    }

    #[test]
    fn extra_dimensions_filter_when_declared() {
        let mut settings = PipelineSettings::with_defaults(1);
        settings.extra_dimensions = vec![
            ExtraDimension {
                name: "device".into(),
                cap: 10,
            },
            ExtraDimension {
                name: "placement".into(),
                cap: 10,
            },
        ];
        let set = |names: &[&str]| DimensionSet::from_names(names, &settings.extra_dimensions);
        settings.dimension_sets = vec![
            DimensionSet::default(),
            set(&["device"]).unwrap(),
            set(&["country", "device"]).unwrap(),
        ];
        let extras = &settings.extra_dimensions;
        let p = Params::parse(Some("device=i%26os&country=us"), POPULAR_PARAMS, extras).unwrap();
        let f = p.filter(&settings).unwrap();
        assert_eq!(
            f.entries(),
            vec![
                ("country".to_string(), "US".to_string()),
                ("device".to_string(), "i&os".to_string())
            ]
        );
        let p = Params::parse(Some("placement=top"), POPULAR_PARAMS, extras).unwrap();
        let err = p.filter(&settings).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedFilter);
        assert!(
            err.error
                .contains("filtering by [placement] is not configured")
                && err
                    .error
                    .contains("supported combinations: [], [device], [country, device]"),
            "{}",
            err.error
        );
        let long = format!("device={}", "x".repeat(MAX_VALUE_BYTES + 1));
        let p = Params::parse(Some(&long), POPULAR_PARAMS, extras).unwrap();
        assert_eq!(
            p.filter(&settings).unwrap_err().code,
            ErrorCode::InvalidFilterValue
        );
        let err = Params::parse(Some("device=ios"), POPULAR_PARAMS, &[])
            .err()
            .unwrap();
        assert_eq!(
            err.code,
            ErrorCode::UnknownParameter,
            "undeclared, a dimension name is a typo like any other"
        );
        let err = Params::parse(Some("devise=ios"), POPULAR_PARAMS, extras)
            .err()
            .unwrap();
        assert!(
            err.error
                .ends_with("known: count, window, at, country, ip_type, device, placement"),
            "{}",
            err.error
        );
    }

    #[test]
    fn every_code_serializes_as_its_text() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
        }
    }
}
