//! Query-string parsing for the REST API: strict, so a typo never silently
//! widens a query. Every problem is an [`ApiError`] with a sentence and a code.

use adclick_actors::dimension::MAX_VALUE_BYTES;
use adclick_actors::time::{minute_floor, parse_rfc3339};
use adclick_actors::{Country, DimensionSet, FilterQuery, IpType, PipelineSettings};
use std::collections::BTreeMap;

/// A 4xx/5xx answer: `{"error": "<sentence>", "code": "<machine_code>"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human sentence.
    pub error: String,
}

impl ApiError {
    /// A 400.
    pub fn bad(code: &'static str, error: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code,
            error: error.into(),
        }
    }

    /// A 503.
    pub fn unavailable(code: &'static str, error: impl Into<String>) -> ApiError {
        ApiError {
            status: 503,
            code,
            error: error.into(),
        }
    }
}

/// The decoded query string: each parameter at most once.
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Decodes `raw` and refuses repeated or unknown parameters. Dimension
    /// names (built-in and the declared extra ones of `settings`) are always
    /// allowed here; [`Params::filter`] checks the combination.
    pub fn parse(
        raw: Option<&str>,
        known: &[&str],
        settings: &PipelineSettings,
    ) -> Result<Params, ApiError> {
        let extra = |name: &str| settings.extra_dimensions.iter().any(|d| d.name == name);
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| {
                ApiError::bad(
                    "invalid_query",
                    format!("cannot decode the query string: {e}"),
                )
            })?;
        let mut values = BTreeMap::new();
        for (name, value) in pairs {
            if !known.contains(&name.as_str())
                && !DIMENSIONS.contains(&name.as_str())
                && !extra(&name)
            {
                let mut all: Vec<&str> = known.to_vec();
                all.extend(DIMENSIONS);
                all.extend(settings.extra_dimensions.iter().map(|d| d.name.as_str()));
                return Err(ApiError::bad(
                    "unknown_parameter",
                    format!(
                        "unknown query parameter `{name}`; known: {}",
                        all.join(", ")
                    ),
                ));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(ApiError::bad(
                    "repeated_parameter",
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

    /// An integer parameter within `min..=max`, or `default` when absent.
    pub fn int(
        &self,
        name: &str,
        min: i64,
        max: i64,
        default: Option<i64>,
    ) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => match text.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::bad(
                    "invalid_parameter",
                    format!("`{name}` must be a whole number from {min} to {max}, got `{text}`"),
                )),
            },
        }
    }

    /// A time parameter (RFC 3339 or epoch ms), floored to its minute.
    pub fn minute(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let ms = text
            .parse::<i64>()
            .ok()
            .or_else(|| parse_rfc3339(text))
            .filter(|ms| (0..=LATEST_MS).contains(ms))
            .ok_or_else(|| {
                ApiError::bad(
                    "invalid_time",
                    format!("`{name}` must be RFC 3339 (2026-11-29T10:00:00Z) or epoch milliseconds, between 1970 and 9999, got `{text}`"),
                )
            })?;
        Ok(Some(minute_floor(ms)))
    }

    /// The filter given by dimension parameters; it must be one of the configured sets.
    pub fn filter(&self, settings: &PipelineSettings) -> Result<FilterQuery, ApiError> {
        let (sets, extras) = (&settings.dimension_sets, &settings.extra_dimensions);
        let mut filter = FilterQuery::default();
        let mut asked = DimensionSet::default();
        if let Some(text) = self.get("country") {
            asked.country = true;
            filter.country = Some(Country::parse(text).ok_or_else(|| {
                ApiError::bad(
                    "invalid_filter_value",
                    format!("`country` must be a two-letter ISO 3166-1 code (ZZ for unknown), got `{text}`"),
                )
            })?);
        }
        if let Some(text) = self.get("ip_type") {
            asked.ip_type = true;
            filter.ip_type = Some(IpType::parse(text).ok_or_else(|| {
                ApiError::bad(
                    "invalid_filter_value",
                    format!("`ip_type` must be v4, v6 or unknown, got `{text}`"),
                )
            })?);
        }
        for (i, dim) in extras.iter().enumerate() {
            if let Some(text) = self.get(&dim.name) {
                if text.is_empty() || text.len() > MAX_VALUE_BYTES {
                    return Err(ApiError::bad(
                        "invalid_filter_value",
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
            return Err(ApiError::bad(
                "unsupported_filter",
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

/// The last millisecond of year 9999: times are refused beyond it (and
/// before 1970), so range arithmetic can never overflow.
pub const LATEST_MS: i64 = 253_402_300_799_999;

/// Query parameters that name the built-in dimensions (declared extra
/// dimensions are query parameters too).
pub const DIMENSIONS: [&str; 2] = ["country", "ip_type"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictness() {
        let known = ["minutes"];
        let defaults = PipelineSettings::with_defaults(1);
        assert_eq!(
            Params::parse(Some("contry=US"), &known, &defaults)
                .err()
                .unwrap()
                .code,
            "unknown_parameter"
        );
        assert_eq!(
            Params::parse(Some("country=US&country=FR"), &known, &defaults)
                .err()
                .unwrap()
                .code,
            "repeated_parameter"
        );
        let p = Params::parse(Some("country=us&minutes=5"), &known, &defaults).unwrap();
        assert_eq!(p.int("minutes", 1, 1440, None).unwrap(), Some(5));
        let f = p.filter(&defaults).unwrap();
        assert_eq!(f.entries(), vec![("country".into(), "US".into())]);
        let mut only_all = PipelineSettings::with_defaults(1);
        only_all.dimension_sets = vec![DimensionSet::default()];
        let err = p.filter(&only_all).unwrap_err();
        assert_eq!(err.code, "unsupported_filter");
        assert!(
            err.error.contains("supported combinations: []"),
            "{}",
            err.error
        );
        let p = Params::parse(
            Some("from=2026-11-29T10:00:59Z&to=60000"),
            &["from", "to"],
            &defaults,
        )
        .unwrap();
        assert_eq!(p.minute("from").unwrap(), Some(1_795_946_400_000));
        assert_eq!(p.minute("to").unwrap(), Some(60_000));
        let p = Params::parse(Some("from=yesterday"), &["from"], &defaults).unwrap();
        assert_eq!(p.minute("from").unwrap_err().code, "invalid_time");
        for extreme in [
            "-1",
            "-5000000000000000000",
            "9223372036854775807",
            "10000-01-01T00:00:00Z",
        ] {
            let p = Params::parse(Some(&format!("from={extreme}")), &["from"], &defaults).unwrap();
            assert_eq!(
                p.minute("from").unwrap_err().code,
                "invalid_time",
                "{extreme}"
            );
        }
    }

    #[test]
    fn extra_dimensions_filter_when_declared() {
        let mut settings = PipelineSettings::with_defaults(1);
        settings.extra_dimensions = vec![
            adclick_actors::dimension::ExtraDimension {
                name: "device".into(),
                cap: 10,
            },
            adclick_actors::dimension::ExtraDimension {
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
        let p = Params::parse(Some("device=i%26os&country=us"), &[], &settings).unwrap();
        let f = p.filter(&settings).unwrap();
        assert_eq!(
            f.entries(),
            vec![
                ("country".to_string(), "US".to_string()),
                ("device".to_string(), "i&os".to_string())
            ]
        );
        let p = Params::parse(Some("placement=top"), &[], &settings).unwrap();
        let err = p.filter(&settings).unwrap_err();
        assert_eq!(err.code, "unsupported_filter");
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
        let p = Params::parse(Some(&long), &[], &settings).unwrap();
        assert_eq!(
            p.filter(&settings).unwrap_err().code,
            "invalid_filter_value"
        );
        let defaults = PipelineSettings::with_defaults(1);
        assert_eq!(
            Params::parse(Some("device=ios"), &[], &defaults)
                .err()
                .unwrap()
                .code,
            "unknown_parameter",
            "undeclared, a dimension name is a typo like any other"
        );
    }
}
