//! `adclick reconcile --input FILE`: a batch recount of a JSON-lines file
//! of SPEC §1 payloads (what `adclick loadgen --out` writes), with no NATS.
//!
//! Every valid click counts once, in its event-time minute: dedup by (ad id,
//! click id) over the whole file, no lateness limit. The counting is
//! [`adclick_actors::recount::Recount`], the live path's decoder, dedup set
//! and counters; this module reads the file, writes the CSV files and the
//! summary. docs/RECONCILIATION.md is the operator's guide.
//!
//! The file is read in 8 MiB blocks and cut into lines in place: no
//! allocation per line. `--from/--to` (a range of the raw archive and the
//! stream, compared with the partitions' files, `--repair`) is [`range`];
//! [`diff`] compares and reports.

pub mod diff;
pub mod range;

use adclick_actors::recount::{Recount, RecountTally, Recounted};
use adclick_actors::time::format_rfc3339;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `adclick reconcile`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReconcileArgs {
    /// JSON-lines file of SPEC §1 payloads, one a line (e.g. from
    /// `adclick loadgen --out`), or a Parquet file (name ending `.parquet`:
    /// the raw archive's, or one with columns click_id, ad_id, ts, …).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Start of the range to recount and compare (RFC 3339 or epoch ms,
    /// floored to the minute): from the raw archive and the stream.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// End of the range (exclusive).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// A whole UTC day instead of --from/--to: `YYYY-MM-DD`, `yesterday` or
    /// `today` (what a daily job passes).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub day: Option<String>,
    /// With --from/--to: the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With --from/--to: write the recount over the final minutes that
    /// differ (the service stopped), publish them as `reconciled` on the
    /// feed at its next start, and check again.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: also write minutes whose all-clicks count goes down
    /// (refused otherwise: a recount normally finds more clicks, not fewer).
    #[arg(long, requires = "repair")]
    pub allow_decrease: bool,
    /// With --from/--to: where the clicks are read from.
    #[arg(long, value_enum, default_value_t = range::Source::Auto)]
    pub source: range::Source,
    /// With --from/--to: the raw archive (a path or file:// URL); default
    /// the configuration's `archive_url` when `archive = true`.
    #[arg(long)]
    pub archive: Option<String>,
    /// With --from/--to: the partitions' files to compare (default the
    /// configuration's `data_dir`); a copy works too.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// With --from/--to: which partition files to compare. `files`: those
    /// in the data directory (the service stopped, or a copy); `shipped`:
    /// the latest state each cluster member shipped to NATS (cluster =
    /// true; at most `state_ship_interval` old; report only, no --repair).
    #[arg(long, value_enum, default_value_t = range::Stored::Files)]
    pub stored: range::Stored,
    /// The configuration file (as for `serve`).
    #[arg(long, env = "ADCLICK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the per-minute counts go, CSV `minute,ad_id,count` (minute as
    /// RFC 3339 UTC; sorted by minute, then ad id); `-` for stdout; Parquet
    /// when the name ends in `.parquet`.
    #[arg(long, default_value = "-")]
    pub counts_out: PathBuf,
    /// Where the top ads of each minute go, CSV `minute,rank,ad_id,count`
    /// (rank from 1; ties by ad id ascending); `-` for stdout. Not written
    /// without it.
    #[arg(long)]
    pub top_out: Option<PathBuf>,
    /// How many ads per minute `--top-out` lists.
    #[arg(long, default_value_t = 100)]
    pub top: usize,
    /// Where the invalid lines go, with their reasons: `line<TAB>reason<TAB>payload`
    /// (the payload as read). Without it they are counted by reason only.
    #[arg(long)]
    pub rejects_out: Option<PathBuf>,
}

/// Why a reconcile run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Neither an input file nor a range.
    #[error(
        "nothing to recount: give --input FILE (JSON lines or Parquet), or --from T --to T \
         (a range of the archive and the stream)"
    )]
    NoInput,
    /// A command line that cannot work, said why.
    #[error("{0}")]
    Usage(String),
    /// A range run that could not finish, said why.
    #[error("{0}")]
    Range(String),
    /// `--input` with `--from/--to`.
    #[error("--input counts a whole file: --from/--to do not apply to it")]
    RangeWithInput,
    /// The input could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The input file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// An output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output file (`-`: stdout).
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

impl ReconcileError {
    /// Whether the command line was wrong (exit code 2, as clap's own
    /// usage errors) rather than a file.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ReconcileError::NoInput | ReconcileError::RangeWithInput | ReconcileError::Usage(_)
        )
    }
}

/// What a run read and counted, for the summary.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Lines, valid clicks, repeats, invalid lines.
    pub tally: RecountTally,
    /// Invalid lines by reason (the reject reason without its details).
    pub invalid_by_reason: BTreeMap<String, u64>,
    /// Clicks counted (valid, first of their id).
    pub counted: u64,
    /// Minutes with clicks.
    pub minutes: usize,
    /// Distinct ads with clicks.
    pub ads: usize,
    /// Reading and counting.
    pub count_time: Duration,
    /// Writing the CSV files.
    pub write_time: Duration,
}

impl Summary {
    /// The whole run.
    pub fn elapsed(&self) -> Duration {
        self.count_time + self.write_time
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.tally;
        let elapsed = self.elapsed().as_secs_f64();
        writeln!(f, "lines read   {}", t.payloads)?;
        writeln!(f, "valid        {}", t.valid)?;
        writeln!(f, "repeats      {} (valid, not counted again)", t.repeats)?;
        writeln!(f, "counted      {}", self.counted)?;
        writeln!(f, "invalid      {}", t.invalid)?;
        for (reason, n) in &self.invalid_by_reason {
            writeln!(f, "  {n:>10}  {reason}")?;
        }
        writeln!(f, "minutes      {}", self.minutes)?;
        writeln!(f, "ads          {}", self.ads)?;
        writeln!(
            f,
            "elapsed      {elapsed:.3} s (read and count {:.3} s, write {:.3} s)",
            self.count_time.as_secs_f64(),
            self.write_time.as_secs_f64()
        )?;
        write!(
            f,
            "clicks/s     {:.0} (lines read per second of the whole run)",
            t.payloads as f64 / elapsed.max(1e-9)
        )
    }
}

/// Exit code of a range run whose stored counts differ from the recount
/// (0: they agree; 1: it could not run; 2: a command line that cannot work).
pub const EXIT_DIFFER: u8 = 3;

/// Exit code of a range run whose recount could not read every click of
/// the range (the report's `gaps` say what is missing): whatever it found,
/// its comparison proves nothing.
pub const EXIT_INCOMPLETE: u8 = 4;

/// How a range run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeVerdict {
    /// The stored counts equal the recount.
    Agree,
    /// They differ.
    Differ,
    /// The recount missed clicks of the range.
    Incomplete,
}

impl RangeVerdict {
    /// The process's exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            RangeVerdict::Agree => 0,
            RangeVerdict::Differ => EXIT_DIFFER,
            RangeVerdict::Incomplete => EXIT_INCOMPLETE,
        }
    }
}

/// Runs `adclick reconcile --from T --to T`: prints the report (a table, or
/// JSON with `--json`) on stdout and says whether the stored counts agree
/// with the recount (after the repair, with `--repair`).
pub async fn run_range(args: &ReconcileArgs) -> Result<RangeVerdict, ReconcileError> {
    if args.input.is_some() {
        return Err(ReconcileError::RangeWithInput);
    }
    let (from, to) = match (&args.day, &args.from, &args.to) {
        (Some(day), _, _) => range::parse_day(day, adclick_actors::time::now_ms())?,
        (None, Some(from), Some(to)) => range::parse_range(from, to)?,
        _ => return Err(ReconcileError::NoInput),
    };
    let config = crate::config::Config::load(args.config.as_deref())
        .map_err(|e| ReconcileError::Usage(e.to_string()))?;
    let mut data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.clone());
    // Lives until the run ends: the shipped files are read from it.
    let mut _shipped_dir = None;
    if args.stored == range::Stored::Shipped {
        if args.repair {
            return Err(ReconcileError::Usage(
                "--repair writes the partitions' own files: stop the members and run it on \
                 their data directories (--stored files), not on shipped copies"
                    .into(),
            ));
        }
        let dir = tempfile::tempdir().map_err(|source| ReconcileError::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        range::fetch_shipped(&config, dir.path()).await?;
        data_dir = dir.path().to_path_buf();
        _shipped_dir = Some(dir);
    }
    let archive_url = args.archive.clone().or_else(|| config.archive_location());
    let outcome = range::run(
        range::RangeJob {
            config: &config,
            archive_url,
            source: args.source,
            data_dir: &data_dir,
            repair: args.repair,
            archive_retention_ms: config.archive.retention.as_millis() as i64,
            allow_decrease: args.allow_decrease,
        },
        from,
        to,
    )
    .await?;
    let report = if args.json {
        diff::report_json(&outcome.comparison, &outcome.context).to_string()
    } else {
        diff::report_table(&outcome.comparison, &outcome.context)
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{report}")
        .and_then(|_| stdout.flush())
        .map_err(|source| ReconcileError::Write {
            path: PathBuf::from("-"),
            source,
        })?;
    Ok(if !outcome.complete {
        RangeVerdict::Incomplete
    } else if outcome.agree {
        RangeVerdict::Agree
    } else {
        RangeVerdict::Differ
    })
}

/// Bytes read at a time.
const BLOCK: usize = 8 << 20;

/// Most clicks the dedup set is sized for before reading.
const PRESIZE_CAP: u64 = 1 << 26;

/// Runs `adclick reconcile` and returns its summary (the caller prints it).
pub fn run(args: &ReconcileArgs) -> Result<Summary, ReconcileError> {
    let input = match (&args.input, args.from.is_some() || args.to.is_some()) {
        (Some(_), true) => return Err(ReconcileError::RangeWithInput),
        (Some(input), false) => input,
        (None, true) => {
            return Err(ReconcileError::Usage(
                "--from/--to is a range run: call `reconcile::run_range`".into(),
            ))
        }
        (None, false) => return Err(ReconcileError::NoInput),
    };
    let started = Instant::now();
    let mut rejects = match &args.rejects_out {
        Some(path) => Some(Output::create(path)?),
        None => None,
    };
    let mut invalid_by_reason = BTreeMap::new();
    let on_invalid = |line_number: u64, line: &[u8], reason: &str| {
        *invalid_by_reason
            .entry(reason_kind(reason).to_string())
            .or_insert(0) += 1;
        match &mut rejects {
            Some(out) => out.reject(line_number, reason, line),
            None => Ok(()),
        }
    };
    let (recounted, tally) = if is_parquet(input) {
        count_parquet(input, on_invalid)?
    } else {
        count_file(input, on_invalid)?
    };
    if let Some(out) = rejects {
        out.finish()?;
    }
    let count_time = started.elapsed();
    let written = Instant::now();
    if is_parquet(&args.counts_out) {
        write_counts_parquet(&recounted, &args.counts_out)?;
    } else {
        write_counts(&recounted, Output::create(&args.counts_out)?)?;
    }
    if let Some(path) = &args.top_out {
        if is_parquet(path) {
            write_top_parquet(&recounted, args.top, path)?;
        } else {
            write_top(&recounted, args.top, Output::create(path)?)?;
        }
    }
    Ok(Summary {
        tally,
        invalid_by_reason,
        counted: recounted.total(),
        minutes: recounted.minute_count(),
        ads: recounted.ad_count(),
        count_time,
        write_time: written.elapsed(),
    })
}

/// Counts the lines of `path`; `on_invalid(line number, line, reason)` sees
/// every invalid one.
pub fn count_file(
    path: &Path,
    mut on_invalid: impl FnMut(u64, &[u8], &str) -> Result<(), ReconcileError>,
) -> Result<(Recounted, RecountTally), ReconcileError> {
    let read_error = |source| ReconcileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    let mut buffer = vec![0u8; BLOCK];
    // Bytes of `buffer` holding a line not yet ended.
    let mut carried = 0;
    // Bytes of a line longer than the buffer skipped so far (it is invalid
    // whatever it holds: the payload limit is 4 KiB).
    let mut overlong: Option<usize> = None;
    let mut recount: Option<Recount> = None;
    let mut line_number = 0u64;
    loop {
        let read = read_some(&mut file, &mut buffer[carried..]).map_err(read_error)?;
        let filled = carried + read;
        let at_end = read == 0;
        let recount = recount.get_or_insert_with(|| {
            // Size the dedup set from the first block's line length.
            let lines = memchr::memchr_iter(b'\n', &buffer[..filled]).count().max(1);
            let per_line = (filled / lines).max(16) as u64;
            // Capped: past ~64 M ids (about 1.1 GiB) the set grows as
            // needed rather than taking memory a file of repeats never uses.
            Recount::with_capacity((size / per_line + 1).min(PRESIZE_CAP) as usize)
        });
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &buffer[..filled]) {
            line_number += 1;
            if let Some(skipped) = overlong.take() {
                overlong_line(
                    recount,
                    line_number,
                    skipped + end,
                    &buffer[..end],
                    &mut on_invalid,
                )?;
            } else {
                let line = &buffer[start..end];
                if let Err(reason) = recount.add(line_number, line) {
                    on_invalid(line_number, line, &reason)?;
                }
            }
            start = end + 1;
        }
        if at_end {
            // A last line without its line end.
            if start < filled || overlong.is_some() {
                line_number += 1;
                match overlong.take() {
                    Some(skipped) => overlong_line(
                        recount,
                        line_number,
                        skipped + filled,
                        &buffer[..filled],
                        &mut on_invalid,
                    )?,
                    None => {
                        let line = &buffer[start..filled];
                        if let Err(reason) = recount.add(line_number, line) {
                            on_invalid(line_number, line, &reason)?;
                        }
                    }
                }
            }
            break;
        }
        if start == 0 && filled == buffer.len() {
            // No line end in a whole buffer: skip it, remembering its length.
            overlong = Some(overlong.unwrap_or(0) + filled);
            carried = 0;
            continue;
        }
        if overlong.is_some() {
            *overlong.get_or_insert(0) += filled - start;
            carried = 0;
            continue;
        }
        buffer.copy_within(start..filled, 0);
        carried = filled - start;
    }
    Ok(recount
        .unwrap_or_else(|| Recount::with_capacity(0))
        .finish())
}

/// Whether a file is read or written as Parquet: its name ends in `.parquet`.
fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Counts the rows of a Parquet file (the raw archive's, with a `payload`
/// column, or one with the payload's fields as columns), row by row through
/// the same recount; `on_invalid(row number, payload, reason)` sees every
/// invalid one.
pub fn count_parquet(
    path: &Path,
    mut on_invalid: impl FnMut(u64, &[u8], &str) -> Result<(), ReconcileError>,
) -> Result<(Recounted, RecountTally), ReconcileError> {
    let mut recount = Recount::with_capacity(1 << 16);
    // The first failure to keep an invalid row stops the count.
    let mut failed = None;
    crate::archive::parquet_file::for_each_payload(path, |row, payload| {
        if failed.is_some() {
            return;
        }
        if let Err(reason) = recount.add(row, payload) {
            if let Err(e) = on_invalid(row, payload, &reason) {
                failed = Some(e);
            }
        }
    })
    .map_err(|e| ReconcileError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(recount.finish())
}

/// Fills as much of `into` as one or more reads give, stopping at the end
/// of the file: 0 only at the end.
fn read_some(file: &mut File, into: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < into.len() {
        match file.read(&mut into[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A line longer than the read buffer: invalid whatever it holds, reported
/// with its real length and (in the rejects file) its last bytes read, at
/// most 1 KiB.
fn overlong_line(
    recount: &mut Recount,
    line_number: u64,
    length: usize,
    tail: &[u8],
    on_invalid: &mut impl FnMut(u64, &[u8], &str) -> Result<(), ReconcileError>,
) -> Result<(), ReconcileError> {
    let reason = recount.refuse_oversize(length);
    on_invalid(
        line_number,
        &tail[tail.len().saturating_sub(1024)..],
        &reason,
    )
}

/// The kind of a reject reason, for the summary: the reason without the
/// details after `: ` or `, got` (serde's position, the value found).
pub fn reason_kind(reason: &str) -> &str {
    if reason.starts_with("payload is ") && reason.ends_with("-byte limit") {
        return "payload over the byte limit";
    }
    let cut = [": ", ", got"]
        .iter()
        .filter_map(|sep| reason.find(sep))
        .min()
        .unwrap_or(reason.len());
    &reason[..cut]
}

/// A CSV or rejects file being written (or stdout), buffered.
struct Output {
    path: PathBuf,
    out: BufWriter<Box<dyn Write>>,
}

impl Output {
    fn create(path: &Path) -> Result<Output, ReconcileError> {
        let sink: Box<dyn Write> = if path.as_os_str() == "-" {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(File::create(path).map_err(|source| ReconcileError::Write {
                path: path.to_path_buf(),
                source,
            })?)
        };
        Ok(Output {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, sink),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ReconcileError> {
        self.out
            .write_all(bytes)
            .map_err(|source| ReconcileError::Write {
                path: self.path.clone(),
                source,
            })
    }

    fn reject(&mut self, line: u64, reason: &str, payload: &[u8]) -> Result<(), ReconcileError> {
        let mut head = line.to_string();
        head.push('\t');
        // A reason is one line of text; keep it one TSV field.
        head.extend(
            reason
                .chars()
                .map(|c| if c == '\t' || c == '\n' { ' ' } else { c }),
        );
        head.push('\t');
        self.write(head.as_bytes())?;
        self.write(payload)?;
        self.write(b"\n")
    }

    fn finish(mut self) -> Result<(), ReconcileError> {
        self.out.flush().map_err(|source| ReconcileError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Appends `n` in decimal to `line` (no formatter: millions of rows).
fn push_count(line: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[at..]);
}

/// `minute,ad_id,count`, by minute then ad id.
fn write_counts(recounted: &Recounted, mut out: Output) -> Result<(), ReconcileError> {
    out.write(b"minute,ad_id,count\n")?;
    let mut line = Vec::with_capacity(128);
    for minute in recounted.minutes() {
        let stamp = format_rfc3339(minute.minute);
        for (ad, n) in &minute.ads {
            line.clear();
            line.extend_from_slice(stamp.as_bytes());
            line.push(b',');
            line.extend_from_slice(ad.as_str().as_bytes());
            line.push(b',');
            push_count(&mut line, *n);
            line.push(b'\n');
            out.write(&line)?;
        }
    }
    out.finish()
}

/// `minute,rank,ad_id,count`: each minute's first `n` ads.
fn write_top(recounted: &Recounted, n: usize, mut out: Output) -> Result<(), ReconcileError> {
    out.write(b"minute,rank,ad_id,count\n")?;
    let mut line = Vec::with_capacity(128);
    for minute in recounted.minutes() {
        let stamp = format_rfc3339(minute.minute);
        for (rank, (ad, clicks)) in minute.top(n).iter().enumerate() {
            line.clear();
            line.extend_from_slice(stamp.as_bytes());
            line.push(b',');
            push_count(&mut line, rank as u64 + 1);
            line.push(b',');
            line.extend_from_slice(ad.as_str().as_bytes());
            line.push(b',');
            push_count(&mut line, *clicks);
            line.push(b'\n');
            out.write(&line)?;
        }
    }
    out.finish()
}

/// The counts as Parquet: `minute` (TIMESTAMP millis), `ad_id`, `count`.
fn write_counts_parquet(recounted: &Recounted, path: &Path) -> Result<(), ReconcileError> {
    let rows = recounted.minutes().flat_map(|m| {
        let minute = m.minute;
        m.ads
            .into_iter()
            .map(move |(ad, n)| (minute, ad.as_str().to_string(), n))
    });
    crate::archive::parquet_file::write_counts(path, rows).map_err(|e| ReconcileError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// The top ads as Parquet: `minute`, `rank`, `ad_id`, `count`.
fn write_top_parquet(recounted: &Recounted, n: usize, path: &Path) -> Result<(), ReconcileError> {
    let rows = recounted.minutes().flat_map(|m| {
        let minute = m.minute;
        m.top(n)
            .into_iter()
            .enumerate()
            .map(move |(rank, (ad, clicks))| {
                (minute, rank as u32 + 1, ad.as_str().to_string(), clicks)
            })
    });
    crate::archive::parquet_file::write_top(path, rows).map_err(|e| ReconcileError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_text(text: &[u8]) -> (Vec<(u64, String)>, RecountTally, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clicks.jsonl");
        std::fs::write(&path, text).unwrap();
        let mut invalid = Vec::new();
        let (recounted, tally) = count_file(&path, |n, _, reason| {
            invalid.push((n, reason_kind(reason).to_string()));
            Ok(())
        })
        .unwrap();
        (invalid, tally, recounted.total())
    }

    #[test]
    fn every_line_is_counted_or_refused_with_its_number() {
        let text = b"{\"click_id\":\"a\",\"ad_id\":\"x\",\"ts\":1}\n\n{not json\n\
                     {\"click_id\":\"a\",\"ad_id\":\"x\",\"ts\":2}\n{\"click_id\":\"b\",\"ad_id\":\"x\",\"ts\":3}";
        let (invalid, tally, counted) = count_text(text);
        assert_eq!(
            invalid,
            vec![
                (2, "payload is not a valid click JSON object".to_string()),
                (3, "payload is not a valid click JSON object".to_string())
            ]
        );
        assert_eq!((tally.payloads, tally.valid, tally.repeats), (5, 3, 1));
        assert_eq!(counted, 2);
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_one_invalid_line() {
        let mut text = b"{\"click_id\":\"a\",\"ad_id\":\"x\",\"ts\":1}\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', BLOCK * 2 + 5));
        text.extend(b"\n{\"click_id\":\"b\",\"ad_id\":\"x\",\"ts\":1}\n");
        text.extend(std::iter::repeat_n(b'y', BLOCK + 1));
        let (invalid, tally, counted) = count_text(&text);
        assert_eq!(
            invalid,
            vec![
                (2, "payload over the byte limit".to_string()),
                (4, "payload over the byte limit".to_string())
            ]
        );
        assert_eq!((tally.payloads, tally.invalid, counted), (4, 2, 2));
    }

    #[test]
    fn lines_across_block_ends_are_read_whole() {
        let line = b"{\"click_id\":\"c\",\"ad_id\":\"ad-7\",\"ts\":60000}\n";
        let mut text = Vec::new();
        let mut i = 0u64;
        while text.len() < BLOCK * 2 + 1000 {
            let own = String::from_utf8_lossy(line).replace("\"c\"", &format!("\"c{i}\""));
            text.extend(own.as_bytes());
            i += 1;
        }
        let (invalid, tally, counted) = count_text(&text);
        assert!(invalid.is_empty(), "{invalid:?}");
        assert_eq!((tally.payloads, counted), (i, i));
    }

    #[test]
    fn reason_kinds_drop_the_details() {
        assert_eq!(
            reason_kind(
                "payload is not a valid click JSON object: expected value at line 1 column 2"
            ),
            "payload is not a valid click JSON object"
        );
        assert_eq!(
            reason_kind("click_id must be 1 to 128 characters, got 0"),
            "click_id must be 1 to 128 characters"
        );
        assert_eq!(
            reason_kind("missing required field ts"),
            "missing required field ts"
        );
    }
}
