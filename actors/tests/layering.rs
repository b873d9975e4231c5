//! The layering rule of ARCHITECTURE.md, checked on the source tree:
//!
//! - a **stage** (`ingest`, `dedup`, `window`, `reducer`, `writer`: the
//!   actor file and its folder) uses only itself and the shared leaves;
//!   it never names another stage (it hands batches on through
//!   `batch::NextStage`, wired by the partition supervisor);
//! - a **shared leaf** (every other module but the wiring) uses only leaves;
//! - the **wiring** (`lib`, `core`, `partition`, `partitions`, `recount`, `testing`)
//!   may use anything: it is where stages are put together.
//!
//! Paths are read from the code with comments stripped: `crate::x`,
//! `crate::{x, y}`, and `super::` paths that climb out of the module.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const STAGES: [&str; 5] = ["ingest", "dedup", "window", "reducer", "writer"];
const WIRING: [&str; 7] = [
    "lib",
    "core",
    "cluster",
    "partition",
    "partitions",
    "recount",
    "testing",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layer {
    Stage,
    Leaf,
    Wiring,
}

fn layer(module: &str) -> Layer {
    if STAGES.contains(&module) {
        Layer::Stage
    } else if WIRING.contains(&module) {
        Layer::Wiring
    } else {
        Layer::Leaf
    }
}

/// The top-level module a file belongs to, and how deep below it the file is
/// (`reducer.rs`: 0; `reducer/top_n.rs`: 1).
fn module_of(relative: &Path) -> (String, usize) {
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    (parts[0].clone(), parts.len() - 1)
}

/// The code of a file without its comments, on one line.
fn code_only(code: &str) -> String {
    code.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The leading identifier of `text`.
fn ident(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The first path segment of each item of a `{…}` group (nested groups
/// skipped: their items hang off a segment already taken).
fn group_heads(group: &str) -> Vec<String> {
    let (mut heads, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                heads.push(ident(&group[start..i]));
                return heads;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(ident(&group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    heads.push(ident(&group[start..]));
    heads
}

/// The top-level modules a file's code names.
fn modules_named(code: &str, depth: usize) -> BTreeSet<String> {
    let code = code_only(code);
    let mut named = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        match rest.trim_start().strip_prefix('{') {
            Some(group) => named.extend(group_heads(group)),
            None => {
                named.insert(ident(rest));
            }
        }
    }
    // `super::super::x` from a file `depth` levels down climbs to the crate
    // root once it has more supers than the depth.
    let mut rest = code.as_str();
    while let Some(i) = rest.find("super::") {
        let mut tail = &rest[i..];
        let mut supers = 0;
        while let Some(t) = tail.strip_prefix("super::") {
            supers += 1;
            tail = t;
        }
        if supers > depth {
            match tail.trim_start().strip_prefix('{') {
                Some(group) => named.extend(group_heads(group)),
                None => {
                    named.insert(ident(tail));
                }
            }
        }
        rest = tail;
    }
    named.retain(|n| !n.is_empty());
    named
}

/// Every breach of the rule in `files` (path relative to `src/`, code).
fn breaches(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, code) in files {
        let (module, depth) = module_of(path);
        let from = layer(&module);
        if from == Layer::Wiring {
            continue;
        }
        for named in modules_named(code, depth) {
            if named == module {
                continue;
            }
            let to = layer(&named);
            let allowed = to == Layer::Leaf;
            if !allowed {
                out.push(format!(
                    "{} ({from:?} `{module}`) uses `crate::{named}` ({to:?})",
                    path.display()
                ));
            }
        }
    }
    out
}

fn source_files(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let code = std::fs::read_to_string(&path).unwrap();
            out.push((path.strip_prefix(root).unwrap().to_path_buf(), code));
        }
    }
}

#[test]
fn stages_use_only_themselves_and_the_shared_leaves() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &src, &mut files);
    assert!(files.len() > 30, "read the source tree");
    let found = breaches(&files);
    assert!(
        found.is_empty(),
        "layering broken (see ARCHITECTURE.md, Invariants):\n{}",
        found.join("\n")
    );
}

fn file(path: &str, code: &str) -> (PathBuf, String) {
    (PathBuf::from(path), code.to_string())
}

#[test]
fn the_check_finds_a_stage_that_uses_another() {
    let files = [
        file(
            "dedup.rs",
            "use crate::window::WindowMsg;\nuse crate::batch::Batch;",
        ),
        file(
            "dedup/deduplicator.rs",
            "use crate::{batch::Batch, reducer::top_n};",
        ),
        file(
            "window/minute_assigner.rs",
            "fn f() { super::super::writer::go() }",
        ),
        file(
            "reducer.rs",
            "// see crate::writer::WriterMsg, a comment\nuse super::x;",
        ),
        // A group over several lines, with a nested group.
        file(
            "writer.rs",
            "use crate::{\n    batch::Batch,\n    feed::{FeedItem, Feed},\n    window::WindowMsg,\n};",
        ),
    ];
    assert_eq!(
        breaches(&files),
        vec![
            "dedup.rs (Stage `dedup`) uses `crate::window` (Stage)",
            "dedup/deduplicator.rs (Stage `dedup`) uses `crate::reducer` (Stage)",
            "window/minute_assigner.rs (Stage `window`) uses `crate::writer` (Stage)",
            "writer.rs (Stage `writer`) uses `crate::window` (Stage)",
        ]
    );
}

#[test]
fn the_check_finds_a_leaf_that_uses_a_stage_or_the_wiring() {
    let files = [
        file("batch.rs", "use crate::reducer::ReducerMsg;"),
        file("time/event_clock.rs", "use crate::partition::directory;"),
        file("click.rs", "use crate::dimension::ExtraCodes;"),
        file("partition.rs", "use crate::dedup::DedupActor;"),
    ];
    assert_eq!(
        breaches(&files),
        vec![
            "batch.rs (Leaf `batch`) uses `crate::reducer` (Stage)",
            "time/event_clock.rs (Leaf `time`) uses `crate::partition` (Wiring)",
        ]
    );
}
