//! `adclick reconcile --input`, run as a process on a file `adclick loadgen
//! --out` wrote plus hand-made lines (repeats, late clicks, every kind of
//! invalid line, several minutes): its CSV files equal an independent
//! oracle (serde_json and a plain map, the rules of SPEC §1 read here
//! again), and DuckDB's recount of the same file row for row.

mod common;

use common::duckdb_path;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ADCLICK: &str = env!("CARGO_BIN_EXE_adclick");
/// 2026-11-29T10:00:00Z.
const START: i64 = 1_795_946_400_000;
const TOP: usize = 5;

/// Lines the generator does not write: each valid or invalid for a reason
/// of its own (all of them read alike by DuckDB's SQL version of the rules).
fn hand_made_lines() -> Vec<Vec<u8>> {
    let click = |id: &str, ad: &str, ts: &str| {
        format!(r#"{{"click_id":"{id}","ad_id":"{ad}","ts":{ts}}}"#).into_bytes()
    };
    let mut lines = vec![
        // Valid: far behind everything else (no lateness limit), escapes,
        // unknown nested fields, spaces, a carriage return.
        click("old-1", "ad-1", &(START - 3_600_000).to_string()),
        br#"{"click_id":"esc-\u0031","ad_id":"ad-2","ts":1795946401000,"x":{"y":[1,{"z":null}]}}"#
            .to_vec(),
        br#" { "ts" : 1795946402000 , "ad_id" : "ad_3" , "click_id" : "spaced" } "#.to_vec(),
        format!(
            "{}\r",
            String::from_utf8_lossy(&click("cr", "ad-4", "1795946403000"))
        )
        .into_bytes(),
        // A repeat of the escaped one, written plainly: the same click.
        br#"{"click_id":"esc-1","ad_id":"ad-2","ts":1795946401000}"#.to_vec(),
        // The same click id under another ad: another click.
        click("esc-1", "ad-5", "1795946401000"),
        // Invalid, one reason each.
        Vec::new(),
        b"[1,2]".to_vec(),
        b"{\"click_id\":\"t\",\"ad_id\":\"ad-1\",\"ts\":1795946400000".to_vec(),
        click("neg", "ad-1", "-1"),
        click("float", "ad-1", "1795946400000.5"),
        click("big", "ad-1", "18446744073709551615"),
        br#"{"click_id":"str","ad_id":"ad-1","ts":"1795946400000"}"#.to_vec(),
        click("", "ad-1", "1795946400000"),
        click(&"k".repeat(129), "ad-1", "1795946400000"),
        click("dot", "ad.1", "1795946400000"),
        click("long-ad", &"a".repeat(65), "1795946400000"),
        br#"{"click_id":7,"ad_id":"ad-1","ts":1795946400000}"#.to_vec(),
        br#"{"click_id":null,"ad_id":"ad-1","ts":1795946400000}"#.to_vec(),
        format!(
            r#"{{"click_id":"u","ad_id":"ad-1","ts":1795946400000,"user_id":"{}"}}"#,
            "u".repeat(129)
        )
        .into_bytes(),
    ];
    // Over the 4 KiB limit, otherwise valid.
    lines.push(
        format!(
            r#"{{"click_id":"huge","ad_id":"ad-1","ts":1795946400000,"pad":"{}"}}"#,
            "p".repeat(4100)
        )
        .into_bytes(),
    );
    lines
}

/// Writes the test file: loadgen's clicks (repeats, late, invalid; five
/// minutes at 20 clicks/s) with the hand-made lines spread through them.
fn write_clicks(dir: &Path) -> PathBuf {
    let generated = dir.join("generated.jsonl");
    let out = Command::new(ADCLICK)
        .args(["loadgen", "--rate", "20", "--count", "6000", "--ads", "300"])
        .args([
            "--seed",
            "16",
            "--duplicate-ratio",
            "0.05",
            "--late-ratio",
            "0.05",
        ])
        .args(["--late-by", "3m", "--invalid-ratio", "0.02"])
        .arg(format!("--start-ts={START}"))
        .arg("--out")
        .arg(&generated)
        .output()
        .expect("adclick loadgen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read(&generated).unwrap();
    let mut lines: Vec<Vec<u8>> = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    assert_eq!(lines.pop(), Some(Vec::new()), "loadgen ends every line");
    assert_eq!(lines.len(), 6000);
    for (i, line) in hand_made_lines().into_iter().enumerate() {
        lines.insert(i * 250 + 7, line);
    }
    let path = dir.join("clicks.jsonl");
    // No line end after the last line: it is read all the same.
    std::fs::write(&path, lines.join(&b'\n')).unwrap();
    path
}

/// SPEC §1's rules, read independently of the decoder: `(ad, click id, ts)`
/// of a valid payload.
fn oracle_click(line: &[u8]) -> Option<(String, String, i64)> {
    if line.len() > 4096 {
        return None;
    }
    let value: Value = serde_json::from_slice(line).ok()?;
    let object = value.as_object()?;
    let id = object.get("click_id")?.as_str()?;
    let ad = object.get("ad_id")?.as_str()?;
    let ts = object.get("ts")?.as_i64()?;
    let ad_ok = (1..=64).contains(&ad.len())
        && ad
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let user_ok = match object.get("user_id") {
        None | Some(Value::Null) => true,
        Some(Value::String(user)) => user.chars().count() <= 128,
        Some(_) => false,
    };
    let id_ok = (1..=128).contains(&id.chars().count());
    (ad_ok && user_ok && id_ok && ts >= 0).then(|| (ad.to_string(), id.to_string(), ts))
}

/// What the oracle expects: the counts CSV, the top CSV, and the number of
/// lines, repeats and invalid lines.
fn oracle(path: &Path) -> (String, String, [u64; 3]) {
    let text = std::fs::read(path).unwrap();
    let mut seen = HashSet::new();
    let mut counts: HashMap<(i64, String), u64> = HashMap::new();
    let (mut lines, mut repeats, mut invalid) = (0, 0, 0);
    for line in text.split(|b| *b == b'\n') {
        lines += 1;
        match oracle_click(line) {
            None => invalid += 1,
            Some((ad, id, ts)) => {
                if seen.insert((ad.clone(), id)) {
                    *counts.entry((ts - ts % 60_000, ad)).or_default() += 1;
                } else {
                    repeats += 1;
                }
            }
        }
    }
    let stamp = |minute: i64| adclick_actors::time::format_rfc3339(minute);
    let mut rows: Vec<_> = counts.into_iter().collect();
    rows.sort();
    let mut counts_csv = String::from("minute,ad_id,count\n");
    let mut by_minute: Vec<(i64, Vec<(String, u64)>)> = Vec::new();
    for ((minute, ad), n) in rows {
        counts_csv += &format!("{},{ad},{n}\n", stamp(minute));
        match by_minute.last_mut() {
            Some((m, ads)) if *m == minute => ads.push((ad, n)),
            _ => by_minute.push((minute, vec![(ad, n)])),
        }
    }
    let mut top_csv = String::from("minute,rank,ad_id,count\n");
    for (minute, mut ads) in by_minute {
        ads.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (rank, (ad, n)) in ads.iter().take(TOP).enumerate() {
            top_csv += &format!("{},{},{ad},{n}\n", stamp(minute), rank + 1);
        }
    }
    (counts_csv, top_csv, [lines, repeats, invalid])
}

/// Runs `adclick reconcile --input` on `path`; the CSV files are `counts.csv`
/// and `top.csv` beside it.
fn reconcile(path: &Path) -> Output {
    let dir = path.parent().unwrap();
    Command::new(ADCLICK)
        .arg("reconcile")
        .arg("--input")
        .arg(path)
        .arg("--counts-out")
        .arg(dir.join("counts.csv"))
        .arg("--top-out")
        .arg(dir.join("top.csv"))
        .args(["--top", &TOP.to_string()])
        .arg("--rejects-out")
        .arg(dir.join("rejects.tsv"))
        .output()
        .expect("adclick reconcile runs")
}

/// The number on the summary line that starts with `label`.
fn summary_number(stderr: &str, label: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` in the summary:\n{stderr}"))
}

#[test]
fn reconcile_equals_an_independent_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_clicks(dir.path());
    let out = reconcile(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let (counts, top, [lines, repeats, invalid]) = oracle(&path);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("counts.csv")).unwrap(),
        counts
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("top.csv")).unwrap(),
        top
    );
    // The file is what the test means it to be: several minutes, late
    // clicks (the hour-old one among them), repeats, every kind of invalid.
    assert!(
        counts
            .lines()
            .filter(|l| l.starts_with("2026-11-29T09:5"))
            .count()
            > 10
    );
    assert!(counts.contains("2026-11-29T09:00:00Z,ad-1,1\n"), "{counts}");
    assert!(
        counts.contains("2026-11-29T10:04:"),
        "five minutes of clicks"
    );
    assert!(
        repeats > 200 && invalid > 50,
        "{repeats} repeats, {invalid} invalid"
    );
    assert_eq!(summary_number(&stderr, "lines read"), lines);
    assert_eq!(summary_number(&stderr, "repeats"), repeats);
    assert_eq!(summary_number(&stderr, "invalid"), invalid);
    assert_eq!(
        summary_number(&stderr, "minutes"),
        top.lines().filter(|l| l.contains(",1,")).count() as u64
    );
    // Nothing dropped silently: every invalid line is in the rejects file
    // with its line number and a reason.
    let rejects = std::fs::read_to_string(dir.path().join("rejects.tsv")).unwrap();
    assert_eq!(rejects.lines().count() as u64, invalid);
    assert!(
        rejects.contains("\tts must not be negative, got -1\t"),
        "{rejects}"
    );
    assert!(rejects.contains("\tpayload is 4162 bytes, more than the 4096-byte limit\t"));
    assert!(stderr.contains("missing required field ts"), "{stderr}");
}

#[test]
fn a_range_that_cannot_work_is_a_usage_error_naming_why() {
    let run = |args: &[&str]| {
        let out = Command::new(ADCLICK)
            .arg("reconcile")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stderr) = run(&[
        "--from",
        "2026-11-29T11:00:00Z",
        "--to",
        "2026-11-29T10:00:00Z",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--from must be before --to"), "{stderr}");
    let (code, stderr) = run(&["--from", "yesterday", "--to", "2026-11-29T10:00:00Z"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("neither RFC 3339"), "{stderr}");
    let (code, stderr) = run(&[
        "--input",
        "clicks.jsonl",
        "--from",
        "2026-11-29T10:00:00Z",
        "--to",
        "2026-11-29T11:00:00Z",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--input counts a whole file"), "{stderr}");
}

#[test]
fn an_unreadable_input_is_an_error_naming_it() {
    let out = Command::new(ADCLICK)
        .args(["reconcile", "--input", "/nonexistent/clicks.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/clicks.jsonl"),
        "{stderr}"
    );
}

#[test]
fn duckdb_gives_the_same_rows() {
    let duckdb = duckdb_path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let path = write_clicks(dir.path());
    let out = reconcile(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("python3")
        .arg(root.join("scripts/reconcile/duckdb_recount.py"))
        .arg("--input")
        .arg(&path)
        .arg("--counts-out")
        .arg(dir.path().join("duckdb-counts.csv"))
        .arg("--top-out")
        .arg(dir.path().join("duckdb-top.csv"))
        .args(["--top", &TOP.to_string(), "--mode", "rules"])
        .env("PYTHONPATH", &duckdb)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let (ours, theirs) = (read("counts.csv"), read("duckdb-counts.csv"));
    assert!(ours.lines().count() > 1000, "{ours}");
    assert_eq!(ours, theirs);
    assert_eq!(read("top.csv"), read("duckdb-top.csv"));
}

/// Parquet in and out: DuckDB writes a loadgen file's clicks as a Parquet
/// file of columns (`ts` a TIMESTAMP), adclick counts it into Parquet
/// files, and DuckDB's reading of those equals adclick's CSV counts of the
/// JSON-lines file, row for row.
#[test]
fn parquet_in_and_out_equal_the_json_lines_counts() {
    let duckdb = duckdb_path();
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("clean.jsonl");
    let out = Command::new(ADCLICK)
        .args(["loadgen", "--rate", "20", "--count", "4000", "--ads", "200"])
        .args([
            "--seed",
            "61",
            "--duplicate-ratio",
            "0.05",
            "--late-ratio",
            "0.05",
            "--invalid-ratio",
            "0",
        ])
        .arg(format!("--start-ts={START}"))
        .arg("--out")
        .arg(&jsonl)
        .output()
        .expect("adclick loadgen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(ADCLICK)
            .arg("reconcile")
            .args(args)
            .output()
            .expect("adclick reconcile runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |name: &str| dir.path().join(name).into_os_string();
    run(&[
        "--input".as_ref(),
        jsonl.as_os_str(),
        "--counts-out".as_ref(),
        &p("counts.csv"),
        "--top-out".as_ref(),
        &p("top.csv"),
    ]);
    let python = |script: String| {
        let out = Command::new("python3")
            .args(["-c", &script])
            .env("PYTHONPATH", &duckdb)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "DuckDB ({}): {}",
            duckdb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let input = dir.path().join("clean.parquet");
    python(format!(
        "import duckdb\n\
         duckdb.sql(\"COPY (SELECT click_id, ad_id, make_timestamp(ts * 1000) AS ts \
         FROM read_json('{}', format = 'newline_delimited', \
         columns = {{click_id: 'VARCHAR', ad_id: 'VARCHAR', ts: 'BIGINT'}})) \
         TO '{}' (FORMAT parquet)\")",
        jsonl.display(),
        input.display()
    ));
    run(&[
        "--input".as_ref(),
        input.as_os_str(),
        "--counts-out".as_ref(),
        &p("counts.parquet"),
        "--top-out".as_ref(),
        &p("top.parquet"),
    ]);
    let as_csv = |file: &str, columns: &str, order: &str| {
        python(format!(
            "import duckdb\n\
             duckdb.sql(\"SET TimeZone = 'UTC'\")\n\
             print('{columns}')\n\
             for row in duckdb.sql(\"SELECT strftime(minute, '%Y-%m-%dT%H:%M:%SZ'), * EXCLUDE (minute) \
             FROM '{}' ORDER BY {order}\").fetchall():\n\
             \x20   print(','.join(str(v) for v in row))",
            dir.path().join(file).display()
        ))
    };
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let counts = read("counts.csv");
    assert!(counts.lines().count() > 500, "{counts}");
    assert_eq!(
        as_csv("counts.parquet", "minute,ad_id,count", "minute, ad_id"),
        counts
    );
    assert_eq!(
        as_csv("top.parquet", "minute,rank,ad_id,count", "minute, rank"),
        read("top.csv")
    );
}
