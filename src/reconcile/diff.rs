//! The comparison of a recount with what the partitions stored, and the
//! report it makes: a table for a person, JSON for a machine. Pure: no
//! files, no NATS (`range` reads both sides).

use adclick_actors::time::format_rfc3339;
use adclick_actors::{AdId, Filter};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

/// Counters by (minute, ad, filter).
pub type Counters = BTreeMap<(i64, AdId, Filter), u64>;

/// Clicks of a (minute, ad) that the live path refused, by why: the reason
/// a recount may count more than the partitions stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Explained {
    /// Refused as too late (`rejected.too_late`): the minute was final.
    pub too_late: u64,
    /// Refused as in the future (`rejected.future`).
    pub future: u64,
}

/// One counter whose stored total is not the recount's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The ad's partition.
    pub partition: u32,
    /// Start of the minute, epoch ms.
    pub minute: i64,
    /// The ad.
    pub ad: AdId,
    /// The filter (`Filter::ALL`: every click).
    pub filter: Filter,
    /// What the partition's file holds.
    pub stored: u64,
    /// What the recount found.
    pub recounted: u64,
    /// Of the clicks the recount found more (all-clicks counters only), how
    /// many the live path refused, and why.
    pub explained: Explained,
}

impl Difference {
    /// Recounted minus stored.
    pub fn delta(&self) -> i64 {
        self.recounted as i64 - self.stored as i64
    }

    /// The part of the difference no known refusal explains.
    pub fn unexplained(&self) -> i64 {
        self.delta() - (self.explained.too_late + self.explained.future) as i64
    }
}

/// A recount compared with the stored counts.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Counters that differ, by (partition, minute, ad, filter).
    pub differences: Vec<Difference>,
    /// All-clicks totals over the compared minutes: recounted, stored.
    pub totals: (u64, u64),
    /// (partition, minute) pairs compared (with clicks on either side).
    pub compared: usize,
    /// (partition, minute) pairs with a difference.
    pub differing: BTreeSet<(u32, i64)>,
}

impl Comparison {
    /// Whether the recount and the stored counts agree.
    pub fn agree(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares `recounted` with `stored` over the (partition, minute) pairs
/// `compared` accepts; `partition_of` places an ad, `explained` says why
/// clicks of a (minute, ad) were refused live.
pub fn compare(
    recounted: &Counters,
    stored: &Counters,
    partition_of: impl Fn(&AdId) -> u32,
    compared: impl Fn(u32, i64) -> bool,
    explained: &HashMap<(i64, AdId), Explained>,
) -> Comparison {
    let mut out = Comparison::default();
    let mut pairs = BTreeSet::new();
    let keys: BTreeSet<&(i64, AdId, Filter)> = recounted.keys().chain(stored.keys()).collect();
    for key @ (minute, ad, filter) in keys {
        let partition = partition_of(ad);
        if !compared(partition, *minute) {
            continue;
        }
        pairs.insert((partition, *minute));
        let r = recounted.get(key).copied().unwrap_or(0);
        let s = stored.get(key).copied().unwrap_or(0);
        if *filter == Filter::ALL {
            out.totals.0 += r;
            out.totals.1 += s;
        }
        if r != s {
            out.differing.insert((partition, *minute));
            out.differences.push(Difference {
                partition,
                minute: *minute,
                ad: *ad,
                filter: *filter,
                stored: s,
                recounted: r,
                explained: if *filter == Filter::ALL {
                    explained.get(&(*minute, *ad)).copied().unwrap_or_default()
                } else {
                    Explained::default()
                },
            });
        }
    }
    out.differences
        .sort_by_key(|d| (d.partition, d.minute, d.ad, d.filter));
    out.compared = pairs.len();
    out
}

/// What else the report says: the range, what was read, what was left out.
#[derive(Clone, Debug, Default)]
pub struct ReportContext {
    /// The range, epoch ms, half-open.
    pub from: i64,
    /// End of the range.
    pub to: i64,
    /// Where the clicks came from, as JSON (files, messages, sequences).
    pub sources: Value,
    /// Messages read, valid, repeats, invalid.
    pub read: (u64, u64, u64, u64),
    /// Invalid messages by reason (counted by neither side).
    pub invalid_by_reason: BTreeMap<String, u64>,
    /// Partitions whose file is missing (their stored counts read as 0).
    pub missing_partitions: Vec<u32>,
    /// Per partition, the first minute not final yet (minutes from it on
    /// are not compared), where it is inside the range.
    pub not_final_from: BTreeMap<u32, i64>,
    /// What `--repair` wrote, as JSON (absent without it).
    pub repair: Option<Value>,
    /// What the recount could not read (empty: every click of the range).
    pub gaps: Vec<String>,
}

/// A filter as a JSON object of dimension → value (`{}`: every click).
fn filter_json(filter: &Filter) -> Value {
    Value::Object(
        filter
            .entries()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// The report as JSON (`--json`): every difference, every filter.
pub fn report_json(cmp: &Comparison, ctx: &ReportContext) -> Value {
    let differences: Vec<Value> = cmp
        .differences
        .iter()
        .map(|d| {
            let mut v = json!({
                "partition": d.partition,
                "minute": format_rfc3339(d.minute),
                "ad_id": d.ad.as_str(),
                "filter": filter_json(&d.filter),
                "stored": d.stored,
                "recounted": d.recounted,
                "difference": d.delta(),
            });
            if d.filter == Filter::ALL {
                v["too_late"] = json!(d.explained.too_late);
                v["future"] = json!(d.explained.future);
                v["unexplained"] = json!(d.unexplained());
            }
            v
        })
        .collect();
    let mut report = json!({
        "from": format_rfc3339(ctx.from),
        "to": format_rfc3339(ctx.to),
        "agree": cmp.agree(),
        "complete": ctx.gaps.is_empty(),
        "gaps": ctx.gaps,
        "sources": ctx.sources,
        "read": {
            "messages": ctx.read.0,
            "valid": ctx.read.1,
            "repeats": ctx.read.2,
            "invalid": ctx.read.3,
            "invalid_by_reason": ctx.invalid_by_reason,
        },
        "totals": {
            "recounted": cmp.totals.0,
            "stored": cmp.totals.1,
            "difference": cmp.totals.0 as i64 - cmp.totals.1 as i64,
        },
        "minutes": {
            "compared": cmp.compared,
            "differing": cmp.differing.len(),
        },
        "missing_partitions": ctx.missing_partitions,
        "not_final_from": ctx.not_final_from.iter()
            .map(|(p, m)| (p.to_string(), json!(format_rfc3339(*m))))
            .collect::<serde_json::Map<_, _>>(),
        "differences": differences,
    });
    if let Some(repair) = &ctx.repair {
        report["repair"] = repair.clone();
    }
    report
}

/// Most difference rows the table shows (`--json` has them all).
pub const TABLE_ROWS: usize = 30;

/// The report as a table a person reads.
pub fn report_table(cmp: &Comparison, ctx: &ReportContext) -> String {
    let mut out = String::new();
    let (r, s) = cmp.totals;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "range        {} .. {}",
        format_rfc3339(ctx.from),
        format_rfc3339(ctx.to)
    );
    let _ = writeln!(
        out,
        "read         {} messages: {} valid ({} repeats), {} invalid",
        ctx.read.0, ctx.read.1, ctx.read.2, ctx.read.3
    );
    for (reason, n) in &ctx.invalid_by_reason {
        let _ = writeln!(out, "  {n:>10}  {reason}");
    }
    let _ = writeln!(
        out,
        "clicks       recounted {r}, stored {s}, difference {:+}",
        r as i64 - s as i64
    );
    let _ = writeln!(
        out,
        "minutes      {} compared (partition × minute), {} differ",
        cmp.compared,
        cmp.differing.len()
    );
    for p in &ctx.missing_partitions {
        let _ = writeln!(
            out,
            "partition {p}: its file is missing; its stored counts read as 0"
        );
    }
    for (p, m) in &ctx.not_final_from {
        let _ = writeln!(
            out,
            "partition {p}: minutes from {} are not final yet, not compared",
            format_rfc3339(*m)
        );
    }
    let all: Vec<&Difference> = cmp
        .differences
        .iter()
        .filter(|d| d.filter == Filter::ALL)
        .collect();
    if !all.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<21} {:>4} {:<24} {:>9} {:>9} {:>7} {:>8} {:>6} {:>11}",
            "minute",
            "part",
            "ad",
            "stored",
            "recount",
            "diff",
            "too late",
            "future",
            "unexplained"
        );
        let mut shown = all.clone();
        shown.sort_by_key(|d| std::cmp::Reverse(d.delta().unsigned_abs()));
        for d in shown.iter().take(TABLE_ROWS) {
            let _ = writeln!(
                out,
                "{:<21} {:>4} {:<24} {:>9} {:>9} {:>+7} {:>8} {:>6} {:>11}",
                format_rfc3339(d.minute),
                d.partition,
                d.ad.as_str(),
                d.stored,
                d.recounted,
                d.delta(),
                d.explained.too_late,
                d.explained.future,
                d.unexplained()
            );
        }
        if all.len() > TABLE_ROWS {
            let _ = writeln!(
                out,
                "… {} more all-clicks rows (--json lists every row)",
                all.len() - TABLE_ROWS
            );
        }
    }
    let filtered = cmp.differences.len() - all.len();
    if filtered > 0 {
        let _ = writeln!(
            out,
            "{filtered} filtered counters (country, ip_type) differ too (--json lists them)"
        );
    }
    for gap in &ctx.gaps {
        let _ = writeln!(out, "INCOMPLETE: {gap}");
    }
    if let Some(repair) = &ctx.repair {
        let _ = writeln!(out, "\nrepair       {repair}");
    }
    let _ = write!(
        out,
        "\n{}",
        if cmp.agree() {
            "AGREE: the stored counts equal the recount"
        } else {
            "DIFFER: the stored counts are not the recount's"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use adclick_actors::Country;

    fn ad(s: &str) -> AdId {
        AdId::parse(s).unwrap()
    }

    const M: i64 = 60_000;

    #[test]
    fn only_differing_counters_of_compared_minutes_are_reported() {
        let us = Filter {
            country: Country::parse("US"),
            ..Filter::ALL
        };
        let mut recounted = Counters::new();
        recounted.insert((M, ad("a"), Filter::ALL), 3);
        recounted.insert((M, ad("a"), us), 2);
        recounted.insert((M, ad("b"), Filter::ALL), 1);
        recounted.insert((2 * M, ad("a"), Filter::ALL), 9);
        let mut stored = Counters::new();
        stored.insert((M, ad("a"), Filter::ALL), 2);
        stored.insert((M, ad("a"), us), 2);
        stored.insert((M, ad("c"), Filter::ALL), 4);
        stored.insert((2 * M, ad("a"), Filter::ALL), 1);
        let mut explained = HashMap::new();
        explained.insert(
            (M, ad("a")),
            Explained {
                too_late: 1,
                future: 0,
            },
        );
        // Minute 2 is not final: left out.
        let cmp = compare(&recounted, &stored, |_| 0, |_, m| m < 2 * M, &explained);
        let rows: Vec<(&str, u64, u64, i64)> = cmp
            .differences
            .iter()
            .map(|d| (d.ad.as_str(), d.stored, d.recounted, d.unexplained()))
            .collect();
        assert_eq!(rows, vec![("a", 2, 3, 0), ("b", 0, 1, 1), ("c", 4, 0, -4)]);
        assert_eq!(cmp.totals, (4, 6));
        assert_eq!(cmp.compared, 1);
        assert!(!cmp.agree());
        let json = report_json(&cmp, &ReportContext::default());
        assert_eq!(json["differences"][0]["too_late"], 1);
        assert_eq!(json["totals"]["difference"], -2);
        assert!(report_table(&cmp, &ReportContext::default()).contains("DIFFER"));

        let same = compare(&recounted, &recounted, |_| 0, |_, _| true, &explained);
        assert!(same.agree());
        assert_eq!(same.totals, (13, 13));
        assert!(report_table(&same, &ReportContext::default()).ends_with("recount"));
    }
}
