//! What a partition needs to know from the service configuration.

use crate::dimension::ExtraDimension;

/// The default fewest logged totals that make a full snapshot due: below it
/// the log is cheap to replay whatever the state, and tiny states are not
/// rewritten on every batch.
pub const SNAPSHOT_LOG_FLOOR: usize = 100_000;

/// Which dimensions a counted filter keeps. The default sets are `[]`,
/// `[country]`, `[ip_type]` and `[country, ip_type]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct DimensionSet {
    /// Keeps `country`.
    pub country: bool,
    /// Keeps `ip_type`.
    pub ip_type: bool,
    /// Keeps the declared extra dimensions whose bit is set (bit i: the i-th
    /// of [`PipelineSettings::extra_dimensions`]).
    pub extra: u8,
}

impl DimensionSet {
    /// Builds a set from dimension names, built-in or among `extras`; an
    /// unknown name is an error naming it and the known ones.
    pub fn from_names<S: AsRef<str>>(
        names: &[S],
        extras: &[ExtraDimension],
    ) -> Result<DimensionSet, String> {
        let mut set = DimensionSet::default();
        for name in names {
            match name.as_ref() {
                "country" => set.country = true,
                "ip_type" => set.ip_type = true,
                other => match extras.iter().position(|d| d.name == other) {
                    Some(i) => set.extra |= 1 << i,
                    None => {
                        let mut known = vec!["country", "ip_type"];
                        known.extend(extras.iter().map(|d| d.name.as_str()));
                        return Err(format!(
                            "unknown dimension `{other}` (known: {}; declare others in extra_dimensions)",
                            known.join(", ")
                        ));
                    }
                },
            }
        }
        Ok(set)
    }

    /// The dimension names, alphabetical (`extras` names the extra bits).
    pub fn names(&self, extras: &[ExtraDimension]) -> Vec<String> {
        let mut names = Vec::new();
        if self.country {
            names.push("country".to_string());
        }
        if self.ip_type {
            names.push("ip_type".to_string());
        }
        for (i, d) in extras.iter().enumerate() {
            if self.extra & (1 << i) != 0 {
                names.push(d.name.clone());
            }
        }
        names.sort();
        names
    }

    /// The sets every deployment gets unless configured otherwise.
    pub fn defaults() -> Vec<DimensionSet> {
        vec![
            DimensionSet::default(),
            DimensionSet {
                country: true,
                ..DimensionSet::default()
            },
            DimensionSet {
                ip_type: true,
                ..DimensionSet::default()
            },
            DimensionSet {
                country: true,
                ip_type: true,
                ..DimensionSet::default()
            },
        ]
    }
}

/// The settings every actor of a partition reads. Durations are milliseconds.
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    /// Number of partitions of the stream.
    pub partitions: u32,
    /// JetStream stream holding the clicks.
    pub stream: String,
    /// JetStream stream for rejected messages.
    pub rejected_stream: String,
    /// How far the watermark trails the largest event time seen.
    pub watermark_delay_ms: i64,
    /// How long after its close a minute still takes corrections.
    pub allowed_lateness_ms: i64,
    /// Quiet time after which the watermark follows the wall clock.
    pub idle_timeout_ms: i64,
    /// How far ahead of the wall clock a click's `ts` may be.
    pub max_future_skew_ms: i64,
    /// Most messages in one batch.
    pub batch_size: usize,
    /// Most batches between ingest and a finished commit (the backpressure bound).
    pub max_batches_in_flight: usize,
    /// Least time between the starts of two commits of a partition (unless
    /// half the in-flight batches wait, or a drain asks): fewer, larger
    /// commits, each folding more increments of the same counters.
    pub checkpoint_interval_ms: i64,
    /// Minutes of counts the reducer keeps in memory; older ones are read from redb.
    pub memory_minutes: i64,
    /// Fewest count-log totals that make a full snapshot due (see
    /// [`crate::reducer::snapshots`]); tests lower it to snapshot often.
    pub snapshot_log_floor: usize,
    /// How long minute counts are kept (behind the watermark) before pruning.
    pub history_retention_ms: i64,
    /// The filters counted.
    pub dimension_sets: Vec<DimensionSet>,
    /// Declared extra dimensions, in configuration order (at most
    /// [`crate::dimension::MAX_EXTRA_DIMENSIONS`]).
    pub extra_dimensions: Vec<ExtraDimension>,
    /// The output feed and the stored top-N.
    pub feed: FeedSettings,
}

/// What a partition publishes to the output feed when minutes close,
/// change and turn final, and which top-N it stores.
#[derive(Clone, Debug)]
pub struct FeedSettings {
    /// Whether the feed is published (the top-N are stored either way).
    pub enabled: bool,
    /// Top-N windows, in minutes, precomputed and stored per minute.
    pub top_windows: Vec<i64>,
    /// Ads in each precomputed top-N.
    pub top_n: usize,
    /// Largest message payload, bytes: larger publications are chunked.
    pub max_payload: usize,
}

impl Default for FeedSettings {
    fn default() -> FeedSettings {
        FeedSettings {
            enabled: true,
            top_windows: vec![1, 5, 60],
            top_n: 100,
            max_payload: 512 * 1024,
        }
    }
}

impl PipelineSettings {
    /// Settings with the documented defaults, for tests and tools.
    pub fn with_defaults(partitions: u32) -> PipelineSettings {
        PipelineSettings {
            partitions,
            stream: "CLICKS".into(),
            rejected_stream: "CLICKS_REJECTED".into(),
            watermark_delay_ms: 5_000,
            allowed_lateness_ms: 600_000,
            idle_timeout_ms: 5_000,
            max_future_skew_ms: 60_000,
            batch_size: 1_000,
            max_batches_in_flight: 32,
            checkpoint_interval_ms: 100,
            memory_minutes: 1_440,
            snapshot_log_floor: SNAPSHOT_LOG_FLOOR,
            history_retention_ms: 30 * 24 * 3_600_000,
            dimension_sets: DimensionSet::defaults(),
            extra_dimensions: Vec::new(),
            feed: FeedSettings::default(),
        }
    }

    /// The name of the durable consumer of a partition, for an ownership
    /// epoch (0: one process owns every partition). Each owner of a cluster
    /// consumes through a consumer of its own epoch, so a replaced owner's
    /// late ack lands on its own (deleted) consumer, never on the new one.
    pub fn consumer_name(&self, partition: u32, epoch: u64) -> String {
        match epoch {
            0 => format!("adclick-p{partition}"),
            _ => format!("adclick-p{partition}-e{epoch}"),
        }
    }

    /// The stored subjects of a partition, as a consumer filter.
    pub fn partition_subject(&self, partition: u32) -> String {
        format!("clicks.p.{partition}.*")
    }
}
