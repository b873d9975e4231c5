//! Service configuration: built-in defaults, then an optional TOML file, then
//! `ADCLICK_*` environment variables. Every key of `config/default.toml` can
//! be set from the environment as `ADCLICK_<KEY IN UPPER CASE>`.
//!
//! A bad value stops start-up with a message naming the key and the problem.

use crate::archive::ArchiveSettings;
use crate::gateway::access::{ApiAccess, TokenDigest};
use crate::gateway::limits::RequestLimits;
use crate::gateway::listener::{ListenerSettings, TlsFiles};
use crate::nats::NatsSecurity;
use adclick_actors::dimension::{check_name, ExtraDimension, MAX_EXTRA_DIMENSIONS};
use adclick_actors::{DimensionSet, FeedSettings, PipelineSettings};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The complete configuration of `adclick serve`.
#[derive(Clone, Debug)]
pub struct Config {
    /// NATS server URL(s), comma-separated.
    pub nats_url: String,
    /// REST listen address.
    pub http_addr: SocketAddr,
    /// Directory of the partition files.
    pub data_dir: PathBuf,
    /// Retention of the clicks stream by age.
    pub stream_max_age: Duration,
    /// Retention of the clicks stream by size (-1: unlimited).
    pub stream_max_bytes: i64,
    /// JetStream's window for dropping re-published `Nats-Msg-Id`s.
    pub duplicate_window: Duration,
    /// Retention of the rejected stream by age.
    pub rejected_max_age: Duration,
    /// The output feed's stream (`agg.>` subjects).
    pub feed_stream: String,
    /// Retention of the output feed by age.
    pub feed_max_age: Duration,
    /// How long a query waits for a partition.
    pub query_timeout: Duration,
    /// How long a SIGTERM may take to commit and exit.
    pub shutdown_timeout: Duration,
    /// Who may query the REST API: bearer token digests, `/metrics` too or not.
    pub api_access: ApiAccess,
    /// Limits on each REST request (query length, concurrency, time).
    pub http_limits: RequestLimits,
    /// The REST listener: TLS, request head size and time, connections.
    pub http_listener: ListenerSettings,
    /// What every partition needs.
    pub pipeline: PipelineSettings,
    /// Whether partitions are shared with the other `adclick serve`
    /// processes on the same NATS (leases), or all owned by this one.
    pub cluster: bool,
    /// This process's unique name in a cluster (default: the host name).
    pub member_id: String,
    /// How long a silent member keeps its partitions' leases.
    pub lease_ttl: Duration,
    /// How often a held partition ships its state to the object store.
    pub state_ship_interval: Duration,
    /// Replicas of every stream and bucket adclick creates.
    pub stream_replicas: usize,
    /// Credentials and TLS for NATS (the `nats_*` keys).
    pub nats_security: NatsSecurity,
    /// The raw archive (the `archive*` keys, docs/ARCHIVE.md).
    pub archive: ArchiveSettings,
}

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is wrong.
    #[error("configuration key `{key}` (from {source_name}): {problem}")]
    Bad {
        /// The key.
        key: String,
        /// Where the value came from: the file or the environment variable.
        source_name: String,
        /// What is wrong.
        problem: String,
    },
    /// The file could not be read or parsed.
    #[error("configuration file {path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Every key, with its documented default (the same text as in `config/default.toml`).
pub const KEYS: &[(&str, &str)] = &[
    ("nats_url", "nats://127.0.0.1:4222"),
    ("http_addr", "127.0.0.1:8080"),
    ("data_dir", "./data"),
    ("partitions", "16"),
    ("watermark_delay", "5s"),
    ("allowed_lateness", "10m"),
    ("idle_timeout", "5s"),
    ("max_future_skew", "1m"),
    ("stream_name", "CLICKS"),
    ("rejected_stream_name", "CLICKS_REJECTED"),
    ("stream_max_age", "7d"),
    ("stream_max_bytes", "-1"),
    ("duplicate_window", "2m"),
    ("rejected_max_age", "7d"),
    ("batch_size", "1000"),
    ("max_batches_in_flight", "32"),
    ("checkpoint_interval", "100ms"),
    ("memory_minutes", "1440"),
    ("snapshot_log_floor", "100000"),
    ("history_retention", "30d"),
    (
        "dimension_sets",
        "[], [country], [ip_type], [country, ip_type]",
    ),
    ("extra_dimensions", ""),
    ("dimension_cap", "1000"),
    ("dimension_caps", ""),
    ("feed", "true"),
    ("feed_stream_name", "ADCLICK_AGG"),
    ("feed_max_age", "7d"),
    ("top_windows", "1, 5, 60"),
    ("top_n", "100"),
    ("query_timeout", "5s"),
    ("shutdown_timeout", "10s"),
    ("api_token_sha256", ""),
    ("metrics_require_token", "false"),
    ("http_tls_cert", ""),
    ("http_tls_key", ""),
    ("http_max_header_bytes", "16384"),
    ("http_max_query_bytes", "4096"),
    ("http_max_concurrent_requests", "256"),
    ("http_request_timeout", "10s"),
    ("http_header_read_timeout", "10s"),
    ("http_max_connections", "1024"),
    ("http_max_connections_per_ip", "0"),
    ("cluster", "false"),
    ("member_id", ""),
    ("lease_ttl", "6s"),
    ("state_ship_interval", "30s"),
    ("stream_replicas", "1"),
    ("nats_creds_file", ""),
    ("nats_nkey_seed_file", ""),
    ("nats_user", ""),
    ("nats_password", ""),
    ("nats_token", ""),
    ("nats_tls_ca_file", ""),
    ("nats_tls_cert_file", ""),
    ("nats_tls_key_file", ""),
    ("nats_tls_required", "false"),
    ("archive", "false"),
    ("archive_url", "./archive"),
    ("archive_flush_interval", "5m"),
    ("archive_max_rows", "1000000"),
    ("archive_retention", "30d"),
];

/// A raw value and where it came from.
struct Raw {
    value: toml::Value,
    source_name: String,
}

/// Parses `250ms`, `5s`, `10m`, `2h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` needs a unit: ms, s, m, h or d (e.g. 5s)"))?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1_000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(format!(
                "`{text}` has unknown unit `{unit}`; use ms, s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_millis(ms))
}

impl Config {
    /// Where the raw archive is, for a job that reads it (`reconcile`): the
    /// `archive_url` when `archive = true`, or when something was archived
    /// there already (an `adclick archive` process writes it with `archive`
    /// left false in its own configuration).
    pub fn archive_location(&self) -> Option<String> {
        let archived = crate::archive::parse_archive_url(&self.archive.url)
            .is_ok_and(|root| root.join("_manifests").is_dir());
        (self.archive.enabled || archived).then(|| self.archive.url.clone())
    }

    /// Loads defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`], with the environment given (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Builder::read(file, env)?.build()
    }

    /// Only the NATS credentials and TLS (the `nats_*` keys) of `file` and
    /// the environment: for `adclick loadgen`, which connects as `serve` does.
    pub fn load_nats_security(file: Option<&Path>) -> Result<NatsSecurity, ConfigError> {
        let builder = Builder::read(file, std::env::vars())?;
        NatsSecurity::from_keys(|key| builder.text(key))
    }
}

struct Builder {
    raw: BTreeMap<&'static str, Raw>,
}

impl Builder {
    /// The raw values of `file`, then `env` (which wins).
    fn read(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Builder, ConfigError> {
        let mut raw: BTreeMap<&'static str, Raw> = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                problem: e.to_string(),
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.to_path_buf(),
                        problem: e.to_string(),
                    })?;
            for (key, value) in table {
                let known =
                    KEYS.iter()
                        .find(|(k, _)| *k == key)
                        .ok_or_else(|| ConfigError::File {
                            path: path.to_path_buf(),
                            problem: format!("unknown key `{key}`"),
                        })?;
                raw.insert(
                    known.0,
                    Raw {
                        value,
                        source_name: path.display().to_string(),
                    },
                );
            }
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("ADCLICK_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if let Some(known) = KEYS.iter().find(|(k, _)| *k == key) {
                raw.insert(
                    known.0,
                    Raw {
                        value: toml::Value::String(value),
                        source_name: format!("environment variable {name}"),
                    },
                );
            }
        }
        Ok(Builder { raw })
    }

    /// The value of `key` as text, with where it came from.
    fn text(&self, key: &'static str) -> (String, String) {
        match self.raw.get(key) {
            Some(Raw {
                value: toml::Value::String(s),
                source_name,
            }) => (s.clone(), source_name.clone()),
            Some(Raw { value, source_name }) => {
                let text = match value {
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => format!("{other:?}"),
                };
                (text, source_name.clone())
            }
            None => {
                let default = KEYS.iter().find(|(k, _)| *k == key).map(|(_, d)| *d);
                (
                    default.unwrap_or_default().to_string(),
                    "the default".into(),
                )
            }
        }
    }

    fn parse<T>(
        &self,
        key: &'static str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (text, source_name) = self.text(key);
        f(&text).map_err(|problem| ConfigError::Bad {
            key: key.into(),
            source_name,
            problem,
        })
    }

    fn duration(&self, key: &'static str) -> Result<Duration, ConfigError> {
        self.parse(key, parse_duration)
    }

    fn ms(&self, key: &'static str) -> Result<i64, ConfigError> {
        Ok(self.duration(key)?.as_millis() as i64)
    }

    fn number<T>(&self, key: &'static str, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        self.parse(key, |text| {
            let n: T = text
                .trim()
                .parse()
                .map_err(|_| format!("`{text}` is not a whole number"))?;
            if n < min || n > max {
                return Err(format!("{n} is outside {min}..={max}"));
            }
            Ok(n)
        })
    }

    /// `top_windows`: minutes, from a TOML array of integers or text `1, 5, 60`.
    fn top_windows(&self) -> Result<Vec<i64>, ConfigError> {
        let key = "top_windows";
        let text = match self.raw.get(key).map(|r| &r.value) {
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    toml::Value::Integer(n) => n.to_string(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => self.text(key).0,
        };
        let source_name = self.text(key).1;
        let mut windows = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let n: i64 = part.parse().map_err(|_| ConfigError::Bad {
                key: key.into(),
                source_name: source_name.clone(),
                problem: format!("`{part}` is not a whole number of minutes"),
            })?;
            if !(1..=1440).contains(&n) {
                return Err(ConfigError::Bad {
                    key: key.into(),
                    source_name: source_name.clone(),
                    problem: format!("{n} is outside 1..=1440 (the windows `popular` accepts)"),
                });
            }
            if !windows.contains(&n) {
                windows.push(n);
            }
        }
        Ok(windows)
    }

    fn bad(&self, key: &'static str, problem: String) -> ConfigError {
        ConfigError::Bad {
            key: key.into(),
            source_name: self.text(key).1,
            problem,
        }
    }

    /// `extra_dimensions` (a TOML array of names, or `device,placement`),
    /// with their caps: `dimension_cap`, overridden per dimension by
    /// `dimension_caps` (a TOML table, or `device=50,placement=20`).
    fn extra_dimensions(&self) -> Result<Vec<ExtraDimension>, ConfigError> {
        let key = "extra_dimensions";
        let names: Vec<String> = match self.raw.get(key).map(|r| &r.value) {
            None => Vec::new(),
            Some(toml::Value::Array(names)) => names
                .iter()
                .map(|n| {
                    n.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.bad(key, "dimension names must be strings".into()))
                })
                .collect::<Result<_, _>>()?,
            Some(toml::Value::String(text)) => text
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
            Some(_) => {
                return Err(self.bad(
                    key,
                    "must be an array of names, e.g. [\"device\", \"placement\"]".into(),
                ))
            }
        };
        if names.len() > MAX_EXTRA_DIMENSIONS {
            return Err(self.bad(
                key,
                format!(
                    "{} extra dimensions declared; at most {MAX_EXTRA_DIMENSIONS} are supported",
                    names.len()
                ),
            ));
        }
        for (i, name) in names.iter().enumerate() {
            check_name(name).map_err(|e| self.bad(key, e))?;
            if names[..i].contains(name) {
                return Err(self.bad(key, format!("`{name}` is declared twice")));
            }
        }
        let cap = self.number("dimension_cap", 1usize, 1_000_000)?;
        let mut dims: Vec<ExtraDimension> = names
            .into_iter()
            .map(|name| ExtraDimension { name, cap })
            .collect();
        let key = "dimension_caps";
        let caps: Vec<(String, String)> = match self.raw.get(key).map(|r| &r.value) {
            None => Vec::new(),
            Some(toml::Value::Table(table)) => table
                .iter()
                .map(|(name, v)| {
                    let text = match v {
                        toml::Value::Integer(n) => n.to_string(),
                        toml::Value::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    (name.clone(), text)
                })
                .collect(),
            Some(toml::Value::String(text)) => text
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((n, c)) => Ok((n.trim().to_string(), c.trim().to_string())),
                    None => Err(self.bad(key, format!("`{p}` is not name=cap, e.g. device=50"))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(self.bad(
                    key,
                    "must be a table like { device = 50 } or text like device=50,placement=20"
                        .into(),
                ))
            }
        };
        for (name, text) in caps {
            let dim = dims.iter_mut().find(|d| d.name == name).ok_or_else(|| {
                self.bad(
                    key,
                    format!("`{name}` is not a declared extra dimension (see extra_dimensions)"),
                )
            })?;
            dim.cap = text
                .parse::<usize>()
                .ok()
                .filter(|c| (1..=1_000_000).contains(c))
                .ok_or_else(|| {
                    self.bad(
                        key,
                        format!("the cap of `{name}` must be a whole number from 1 to 1000000, got `{text}`"),
                    )
                })?;
        }
        Ok(dims)
    }

    /// `api_token_sha256` (a TOML array of hex digests, or `d1,d2` from the
    /// environment) and `metrics_require_token`.
    fn api_access(&self) -> Result<ApiAccess, ConfigError> {
        let key = "api_token_sha256";
        let texts: Vec<String> = match self.raw.get(key).map(|r| &r.value) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.bad(key, "digests must be strings".into()))
                })
                .collect::<Result<_, _>>()?,
            Some(toml::Value::String(text)) => text.split(',').map(str::to_string).collect(),
            Some(_) => {
                return Err(self.bad(
                    key,
                    "must be an array of SHA-256 hex digests, e.g. [\"9f86…\"]".into(),
                ))
            }
        };
        let mut digests = Vec::new();
        for (i, text) in texts.iter().filter(|t| !t.trim().is_empty()).enumerate() {
            let digest = TokenDigest::parse_hex(text)
                .map_err(|e| self.bad(key, format!("entry {}: {e}", i + 1)))?;
            digests.push(digest);
        }
        let metrics_require_token = self.parse("metrics_require_token", boolean)?;
        Ok(ApiAccess::with_tokens(digests, metrics_require_token))
    }

    /// The `http_*` limits and the listener's TLS files.
    fn http(
        &self,
        query_timeout: Duration,
    ) -> Result<(RequestLimits, ListenerSettings), ConfigError> {
        let path = |key: &'static str| -> Option<PathBuf> {
            let text = self.text(key).0;
            let text = text.trim();
            (!text.is_empty()).then(|| PathBuf::from(text))
        };
        let tls = match (path("http_tls_cert"), path("http_tls_key")) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.bad("http_tls_key", "must be set when http_tls_cert is".into()))
            }
            (None, Some(_)) => {
                return Err(self.bad("http_tls_cert", "must be set when http_tls_key is".into()))
            }
        };
        let max_header_bytes = self.number("http_max_header_bytes", 1024usize, 1 << 20)?;
        let max_query_bytes = self.number("http_max_query_bytes", 16usize, 1 << 20)?;
        if max_query_bytes >= max_header_bytes {
            return Err(self.bad(
                "http_max_query_bytes",
                format!(
                    "must be below http_max_header_bytes ({max_header_bytes}): a longer query \
                     would be refused as an oversized head, without the JSON 414"
                ),
            ));
        }
        let request_timeout = self.duration("http_request_timeout")?;
        if request_timeout <= query_timeout {
            return Err(self.bad(
                "http_request_timeout",
                format!(
                    "must be longer than query_timeout ({query_timeout:?}), so a slow \
                     partition is answered as such"
                ),
            ));
        }
        let header_read_timeout = self.duration("http_header_read_timeout")?;
        if header_read_timeout.is_zero() {
            return Err(self.bad("http_header_read_timeout", "must be more than 0".into()));
        }
        let limits = RequestLimits {
            max_query_bytes,
            max_concurrent_requests: self.number(
                "http_max_concurrent_requests",
                1usize,
                100_000,
            )?,
            request_timeout,
        };
        let max_connections = self.number("http_max_connections", 1usize, 1_000_000)?;
        let listener = ListenerSettings {
            tls,
            max_header_bytes,
            header_read_timeout,
            max_connections,
            max_connections_per_ip: self.number(
                "http_max_connections_per_ip",
                0usize,
                max_connections,
            )?,
        };
        Ok((limits, listener))
    }

    fn dimension_sets(&self, extras: &[ExtraDimension]) -> Result<Vec<DimensionSet>, ConfigError> {
        let key = "dimension_sets";
        let problem = |source_name: &str, problem: String| ConfigError::Bad {
            key: key.into(),
            source_name: source_name.into(),
            problem,
        };
        let Some(raw) = self.raw.get(key) else {
            return Ok(DimensionSet::defaults());
        };
        // From TOML: an array of arrays. From the environment: `country,ip_type;country;`
        // (sets separated by `;`, names by `,`, an empty set as nothing).
        let lists: Vec<Vec<String>> = match &raw.value {
            toml::Value::Array(sets) => sets
                .iter()
                .map(|set| match set {
                    toml::Value::Array(names) => names
                        .iter()
                        .map(|n| {
                            n.as_str().map(str::to_string).ok_or_else(|| {
                                problem(&raw.source_name, "dimension names must be strings".into())
                            })
                        })
                        .collect(),
                    _ => Err(problem(
                        &raw.source_name,
                        "each set must be an array of names".into(),
                    )),
                })
                .collect::<Result<_, _>>()?,
            toml::Value::String(text) => text
                .split(';')
                .map(|set| {
                    set.split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .collect(),
            _ => {
                return Err(problem(
                    &raw.source_name,
                    "must be an array of arrays of names".into(),
                ))
            }
        };
        let mut sets = Vec::new();
        for names in lists {
            let set = DimensionSet::from_names(&names, extras)
                .map_err(|e| problem(&raw.source_name, e))?;
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        if !sets.contains(&DimensionSet::default()) {
            // Unfiltered counts are what `popular` and counts without filters read.
            sets.insert(0, DimensionSet::default());
        }
        Ok(sets)
    }

    fn build(self) -> Result<Config, ConfigError> {
        let partitions = self.number::<u32>("partitions", 1, 1024)?;
        let watermark_delay_ms = self.ms("watermark_delay")?;
        let allowed_lateness_ms = self.ms("allowed_lateness")?;
        let idle_timeout_ms = self.ms("idle_timeout")?;
        if idle_timeout_ms == 0 {
            return Err(ConfigError::Bad {
                key: "idle_timeout".into(),
                source_name: self.text("idle_timeout").1,
                problem: "must be more than 0".into(),
            });
        }
        let history_retention_ms = self.ms("history_retention")?;
        if history_retention_ms < allowed_lateness_ms + 60_000 {
            return Err(ConfigError::Bad {
                key: "history_retention".into(),
                source_name: self.text("history_retention").1,
                problem: "must be at least allowed_lateness plus one minute: a minute that can still be corrected must not be pruned".into(),
            });
        }
        let extra_dimensions = self.extra_dimensions()?;
        let query_timeout = self.duration("query_timeout")?;
        let (http_limits, http_listener) = self.http(query_timeout)?;
        let pipeline = PipelineSettings {
            partitions,
            stream: self.parse("stream_name", nonempty)?,
            rejected_stream: self.parse("rejected_stream_name", nonempty)?,
            watermark_delay_ms,
            allowed_lateness_ms,
            idle_timeout_ms,
            max_future_skew_ms: self.ms("max_future_skew")?,
            batch_size: self.number("batch_size", 1usize, 100_000)?,
            max_batches_in_flight: self.number("max_batches_in_flight", 1usize, 1_024)?,
            checkpoint_interval_ms: self.ms("checkpoint_interval")?,
            memory_minutes: self.number("memory_minutes", 60i64, 1_000_000)?,
            snapshot_log_floor: self.number("snapshot_log_floor", 1usize, 1_000_000_000)?,
            history_retention_ms,
            dimension_sets: self.dimension_sets(&extra_dimensions)?,
            extra_dimensions,
            feed: FeedSettings {
                enabled: self.parse("feed", |t| match t.trim() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    other => Err(format!("`{other}` is not true or false")),
                })?,
                top_windows: self.top_windows()?,
                top_n: self.number("top_n", 1usize, 1_000)?,
                // Set from the server's limit at start-up (`serve`).
                max_payload: FeedSettings::default().max_payload,
            },
        };
        Ok(Config {
            nats_url: self.parse("nats_url", nonempty)?,
            http_addr: self.parse("http_addr", |t| {
                t.parse()
                    .map_err(|e| format!("`{t}` is not an address like 127.0.0.1:8080: {e}"))
            })?,
            data_dir: PathBuf::from(self.parse("data_dir", nonempty)?),
            stream_max_age: self.duration("stream_max_age")?,
            stream_max_bytes: self.number("stream_max_bytes", -1i64, i64::MAX)?,
            duplicate_window: self.duration("duplicate_window")?,
            rejected_max_age: self.duration("rejected_max_age")?,
            feed_stream: self.parse("feed_stream_name", nonempty)?,
            feed_max_age: self.duration("feed_max_age")?,
            query_timeout,
            shutdown_timeout: self.duration("shutdown_timeout")?,
            api_access: self.api_access()?,
            http_limits,
            http_listener,
            pipeline,
            cluster: self.parse("cluster", boolean)?,
            member_id: self.parse("member_id", |t| match t.trim() {
                "" => Ok(host_name()),
                id if id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
                {
                    Ok(id.to_string())
                }
                id => Err(format!(
                    "`{id}` must be letters, digits, `-` and `_` only (it is a NATS KV key)"
                )),
            })?,
            lease_ttl: self.parse("lease_ttl", |t| {
                let ttl = parse_duration(t)?;
                if ttl < Duration::from_secs(1) {
                    return Err("must be at least 1s".into());
                }
                Ok(ttl)
            })?,
            state_ship_interval: self.duration("state_ship_interval")?,
            stream_replicas: self.number("stream_replicas", 1usize, 5)?,
            nats_security: NatsSecurity::from_keys(|key| self.text(key))?,
            archive: self.archive()?,
        })
    }

    /// The `archive*` keys. `archive = true` with `cluster = true` is
    /// refused: one archiver per archive, as its own Deployment.
    fn archive(&self) -> Result<ArchiveSettings, ConfigError> {
        let enabled = self.parse("archive", boolean)?;
        if enabled && self.parse("cluster", boolean)? {
            return Err(self.bad(
                "archive",
                "cannot be true with cluster = true: every member would archive the same streams. \
                 Run `adclick archive` as its own one-replica Deployment instead \
                 (k8s/adclick/archiver.yaml, docs/ARCHIVE.md)"
                    .into(),
            ));
        }
        let url = self.parse("archive_url", |text| {
            crate::archive::parse_archive_url(text).map(|_| text.trim().to_string())
        })?;
        let flush_interval = self.duration("archive_flush_interval")?;
        if flush_interval.is_zero() {
            return Err(self.bad("archive_flush_interval", "must be more than 0".into()));
        }
        let retention = self.duration("archive_retention")?;
        if retention < Duration::from_secs(3_600) {
            return Err(self.bad(
                "archive_retention",
                "must be at least 1h (files are kept by the hour)".into(),
            ));
        }
        Ok(ArchiveSettings {
            enabled,
            url,
            flush_interval,
            max_rows: self.number("archive_max_rows", 1usize, 100_000_000)?,
            retention,
        })
    }
}

fn boolean(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("`{other}` is not true or false")),
    }
}

/// This machine's host name (a pod's name in a StatefulSet), as a member id.
fn host_name() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let name = from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        format!("adclick-{}", std::process::id())
    } else {
        name
    }
}

fn nonempty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(text.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.pipeline.partitions, 16);
        assert_eq!(c.pipeline.watermark_delay_ms, 5_000);
        assert_eq!(c.pipeline.allowed_lateness_ms, 600_000);
        assert_eq!(c.pipeline.idle_timeout_ms, 5_000);
        assert_eq!(c.pipeline.max_future_skew_ms, 60_000);
        assert_eq!(c.pipeline.dimension_sets, DimensionSet::defaults());
    }

    #[test]
    fn the_shipped_default_file_equals_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let from_file = Config::load_from(Some(&path), env(&[])).unwrap();
        let built_in = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{built_in:?}"));
    }

    #[test]
    fn feed_settings_parse_and_refuse_bad_values() {
        let c = Config::load_from(
            None,
            env(&[
                ("ADCLICK_TOP_WINDOWS", "5, 60,5"),
                ("ADCLICK_FEED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.pipeline.feed.top_windows, vec![5, 60]);
        assert!(!c.pipeline.feed.enabled);
        assert_eq!(
            Config::load_from(None, env(&[]))
                .unwrap()
                .pipeline
                .feed
                .top_windows,
            vec![1, 5, 60]
        );
        for (key, value) in [
            ("ADCLICK_TOP_WINDOWS", "0"),
            ("ADCLICK_TOP_WINDOWS", "five"),
            ("ADCLICK_FEED", "maybe"),
            ("ADCLICK_TOP_N", "0"),
        ] {
            let err = Config::load_from(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            let name = key.trim_start_matches("ADCLICK_").to_ascii_lowercase();
            assert!(err.contains(&format!("`{name}`")), "{key}={value}: {err}");
        }
    }

    #[test]
    fn environment_overrides_and_errors_name_the_key() {
        let c = Config::load_from(
            None,
            env(&[
                ("ADCLICK_PARTITIONS", "4"),
                ("ADCLICK_WATERMARK_DELAY", "250ms"),
                ("ADCLICK_DIMENSION_SETS", ";country"),
            ]),
        )
        .unwrap();
        assert_eq!(c.pipeline.partitions, 4);
        assert_eq!(c.pipeline.watermark_delay_ms, 250);
        assert_eq!(c.pipeline.dimension_sets.len(), 2);

        let err = Config::load_from(None, env(&[("ADCLICK_ALLOWED_LATENESS", "10")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("allowed_lateness")
                && err.contains("ADCLICK_ALLOWED_LATENESS")
                && err.contains("unit"),
            "{err}"
        );
        let err = Config::load_from(None, env(&[("ADCLICK_PARTITIONS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("partitions") && err.contains("outside"),
            "{err}"
        );
        let err = Config::load_from(None, env(&[("ADCLICK_HISTORY_RETENTION", "5m")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("history_retention") && err.contains("allowed_lateness"),
            "{err}"
        );
        let err = Config::load_from(None, env(&[("ADCLICK_DIMENSION_SETS", "contry")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown dimension `contry`"), "{err}");
    }

    #[test]
    fn extra_dimensions_are_declared_capped_and_checked() {
        let c = Config::load_from(
            None,
            env(&[
                ("ADCLICK_EXTRA_DIMENSIONS", "device, placement"),
                ("ADCLICK_DIMENSION_CAP", "50"),
                ("ADCLICK_DIMENSION_CAPS", "placement=3"),
                (
                    "ADCLICK_DIMENSION_SETS",
                    ";device;country,device;device,placement",
                ),
            ]),
        )
        .unwrap();
        let dims: Vec<(&str, usize)> = c
            .pipeline
            .extra_dimensions
            .iter()
            .map(|d| (d.name.as_str(), d.cap))
            .collect();
        assert_eq!(dims, vec![("device", 50), ("placement", 3)]);
        let sets: Vec<Vec<String>> = c
            .pipeline
            .dimension_sets
            .iter()
            .map(|s| s.names(&c.pipeline.extra_dimensions))
            .collect();
        assert_eq!(
            sets,
            vec![
                vec![],
                vec!["device".to_string()],
                vec!["country".into(), "device".into()],
                vec!["device".into(), "placement".into()],
            ]
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "extra_dimensions = [\"device\"]\ndimension_caps = { device = 7 }\n\
             dimension_sets = [[], [\"device\", \"ip_type\"]]\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(c.pipeline.extra_dimensions[0].cap, 7);
        assert_eq!(c.pipeline.dimension_sets.len(), 2);

        for (pairs, want) in [
            (
                vec![("ADCLICK_EXTRA_DIMENSIONS", "device,from")],
                "`from` cannot be",
            ),
            (
                vec![("ADCLICK_EXTRA_DIMENSIONS", "country")],
                "`country` cannot be",
            ),
            (
                vec![("ADCLICK_EXTRA_DIMENSIONS", "a-b")],
                "not a valid dimension name",
            ),
            (vec![("ADCLICK_EXTRA_DIMENSIONS", "a,b,c,d,e")], "at most 4"),
            (vec![("ADCLICK_EXTRA_DIMENSIONS", "a,a")], "declared twice"),
            (
                vec![
                    ("ADCLICK_EXTRA_DIMENSIONS", "a"),
                    ("ADCLICK_DIMENSION_CAPS", "b=3"),
                ],
                "`b` is not a declared extra dimension",
            ),
            (
                vec![
                    ("ADCLICK_EXTRA_DIMENSIONS", "a"),
                    ("ADCLICK_DIMENSION_CAPS", "a=0"),
                ],
                "from 1 to 1000000",
            ),
            (vec![("ADCLICK_DIMENSION_CAP", "0")], "dimension_cap"),
            (
                vec![("ADCLICK_DIMENSION_SETS", ";device")],
                "unknown dimension `device` (known: country, ip_type; declare others",
            ),
        ] {
            let err = Config::load_from(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn api_tokens_and_http_limits_parse_and_errors_name_the_key() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert!(
            !c.api_access.enabled(),
            "no tokens by default: the API is open"
        );
        assert_eq!(c.http_limits, RequestLimits::default());
        assert_eq!(c.http_listener, ListenerSettings::default());

        let digest = |t: &str| TokenDigest::of(t.as_bytes()).to_hex();
        let both = format!("{}, {}", digest("a"), digest("b").to_uppercase());
        let c = Config::load_from(
            None,
            env(&[
                ("ADCLICK_API_TOKEN_SHA256", &both),
                ("ADCLICK_METRICS_REQUIRE_TOKEN", "true"),
                ("ADCLICK_HTTP_TLS_CERT", "/etc/tls/cert.pem"),
                ("ADCLICK_HTTP_TLS_KEY", "/etc/tls/key.pem"),
                ("ADCLICK_HTTP_MAX_QUERY_BYTES", "100"),
                ("ADCLICK_HTTP_HEADER_READ_TIMEOUT", "2s"),
            ]),
        )
        .unwrap();
        let auth = |t: &str| {
            let value = axum::http::HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
            c.api_access.check(Some(&value)).is_ok()
        };
        assert!(auth("a") && auth("b") && !auth("c"));
        assert!(c.api_access.protects("/metrics"));
        assert_eq!(c.http_limits.max_query_bytes, 100);
        assert_eq!(c.http_listener.header_read_timeout, Duration::from_secs(2));
        assert_eq!(
            c.http_listener.tls,
            Some(TlsFiles {
                cert: "/etc/tls/cert.pem".into(),
                key: "/etc/tls/key.pem".into()
            })
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, format!("api_token_sha256 = [\"{}\"]\n", digest("a"))).unwrap();
        assert!(Config::load_from(Some(&file), env(&[]))
            .unwrap()
            .api_access
            .enabled());

        for (pairs, key, want) in [
            (
                vec![("ADCLICK_API_TOKEN_SHA256", "my-secret-token")],
                "api_token_sha256",
                "entry 1: a value of 15 characters is not a SHA-256 digest",
            ),
            (
                vec![("ADCLICK_HTTP_TLS_CERT", "cert.pem")],
                "http_tls_key",
                "must be set when http_tls_cert is",
            ),
            (
                vec![("ADCLICK_HTTP_TLS_KEY", "key.pem")],
                "http_tls_cert",
                "must be set when http_tls_key is",
            ),
            (
                vec![("ADCLICK_HTTP_MAX_QUERY_BYTES", "16384")],
                "http_max_query_bytes",
                "must be below http_max_header_bytes",
            ),
            (
                vec![("ADCLICK_HTTP_REQUEST_TIMEOUT", "5s")],
                "http_request_timeout",
                "longer than query_timeout",
            ),
            (
                vec![("ADCLICK_HTTP_HEADER_READ_TIMEOUT", "0s")],
                "http_header_read_timeout",
                "more than 0",
            ),
            (
                vec![("ADCLICK_HTTP_MAX_CONCURRENT_REQUESTS", "0")],
                "http_max_concurrent_requests",
                "outside",
            ),
            (
                vec![
                    ("ADCLICK_HTTP_MAX_CONNECTIONS", "10"),
                    ("ADCLICK_HTTP_MAX_CONNECTIONS_PER_IP", "11"),
                ],
                "http_max_connections_per_ip",
                "outside 0..=10",
            ),
            (
                vec![("ADCLICK_METRICS_REQUIRE_TOKEN", "yes")],
                "metrics_require_token",
                "not true or false",
            ),
        ] {
            let err = Config::load_from(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains(want),
                "{pairs:?}: {err}"
            );
            assert!(!err.contains("my-secret-token"), "echoes a token: {err}");
        }
    }

    #[test]
    fn archive_keys() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert!(!c.archive.enabled);
        assert_eq!(c.archive.url, "./archive");
        assert_eq!(c.archive.flush_interval, Duration::from_secs(300));
        assert_eq!(c.archive.max_rows, 1_000_000);
        assert_eq!(c.archive.retention, Duration::from_secs(30 * 86_400));
        let c = Config::load_from(
            None,
            env(&[
                ("ADCLICK_ARCHIVE", "true"),
                ("ADCLICK_ARCHIVE_URL", "file:///tmp/a"),
            ]),
        )
        .unwrap();
        assert!(c.archive.enabled);
        assert_eq!(c.archive.url, "file:///tmp/a");
        for (pairs, key, want) in [
            (
                vec![("ADCLICK_ARCHIVE_URL", "s3://bucket/a")],
                "archive_url",
                "plain path or a file:// URL",
            ),
            (
                vec![("ADCLICK_ARCHIVE", "true"), ("ADCLICK_CLUSTER", "true")],
                "archive",
                "adclick archive",
            ),
            (
                vec![("ADCLICK_ARCHIVE_MAX_ROWS", "0")],
                "archive_max_rows",
                "outside",
            ),
            (
                vec![("ADCLICK_ARCHIVE_RETENTION", "10m")],
                "archive_retention",
                "at least 1h",
            ),
        ] {
            let err = Config::load_from(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains(want),
                "{pairs:?}: {err}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
