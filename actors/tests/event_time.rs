//! The event-time reference model (SPEC §2), and property tests that drive
//! the real partition core (dedup → window → counts, no NATS) and the model
//! with the same random streams (clicks, repeats, disorder, idle ticks,
//! wall-clock jumps) and compare every answer. Restarts from a real redb
//! checkpoint at random points must not change any answer either.
//!
//! More cases on demand: `PROPTEST_CASES=50000 cargo test -p adclick-actors --test event_time`.

use adclick_actors::click::{AdId, Click, Country, Filter, FilterKinds, IpType};
use adclick_actors::settings::PipelineSettings;
use adclick_actors::store::checkpoint::Checkpoint;
use adclick_actors::store::PartitionStore;
use adclick_actors::testing::top_n;
use adclick_actors::testing::Batch;
use adclick_actors::testing::PartitionCore;
use adclick_actors::time::event_clock::{closed_until, final_until, NO_WATERMARK};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

const MINUTE: i64 = 60_000;
const DELAY: i64 = 5_000;
const LATENESS: i64 = 2 * MINUTE;
const COUNTRIES: [&str; 3] = ["US", "DE", "ZZ"];
const IP_TYPES: [&str; 3] = ["v4", "v6", "unknown"];

/// One input of a partition, in consumption order.
#[derive(Clone, Debug)]
enum Event {
    Click {
        id: u16,
        ad: u8,
        ts: i64,
        country: u8,
        ip: u8,
    },
    Tick {
        now: i64,
    },
}

/// Obviously correct and slow: SPEC §2 read literally, one event at a time,
/// with lists and linear scans.
#[derive(Default)]
struct Model {
    watermark: Option<i64>,
    seen: Vec<(u16, i64)>,
    /// (ad, minute, country filter, ip filter) → clicks.
    counts: BTreeMap<(u8, i64, Option<u8>, Option<u8>), u64>,
    too_late: Vec<u16>,
    duplicates: u64,
    /// Counters the events since the last `take_touched` added to.
    touched: BTreeSet<(u8, i64, Option<u8>, Option<u8>)>,
}

impl Model {
    fn closed(&self, minute: i64) -> bool {
        self.watermark.is_some_and(|w| w >= minute + MINUTE)
    }
    fn is_final(&self, minute: i64) -> bool {
        self.watermark
            .is_some_and(|w| w >= minute + MINUTE + LATENESS)
    }
    fn event(&mut self, event: &Event) {
        match *event {
            Event::Tick { now } => {
                self.watermark = Some(self.watermark.map_or(now - DELAY, |w| w.max(now - DELAY)));
            }
            Event::Click {
                id,
                ad,
                ts,
                country,
                ip,
            } => {
                let minute = ts.div_euclid(MINUTE) * MINUTE;
                if self.is_final(minute) {
                    self.too_late.push(id);
                    return;
                }
                // Ids of final minutes are forgotten; a repeat of one is too late anyway.
                let forget: Vec<bool> = self.seen.iter().map(|(_, m)| self.is_final(*m)).collect();
                let mut i = 0;
                self.seen.retain(|_| {
                    i += 1;
                    !forget[i - 1]
                });
                if self.seen.iter().any(|(seen, _)| *seen == id) {
                    self.duplicates += 1;
                    return;
                }
                // Kept until the minute is final — for a correction, until the
                // minute open when it counted is final.
                let open_now = self
                    .watermark
                    .map_or(minute, |w| w.div_euclid(MINUTE) * MINUTE);
                self.seen.push((id, minute.max(open_now)));
                for (c, t) in [
                    (None, None),
                    (Some(country), None),
                    (None, Some(ip)),
                    (Some(country), Some(ip)),
                ] {
                    *self.counts.entry((ad, minute, c, t)).or_insert(0) += 1;
                    self.touched.insert((ad, minute, c, t));
                }
                self.watermark = Some(self.watermark.map_or(ts - DELAY, |w| w.max(ts - DELAY)));
            }
        }
    }
    fn count(&self, ad: u8, c: Option<u8>, t: Option<u8>, from: i64, to: i64) -> u64 {
        self.counts
            .range((ad, from, None, None)..(ad, to, None, None))
            .filter(|((_, _, cc, tt), _)| *cc == c && *tt == t)
            .map(|(_, n)| n)
            .sum()
    }
    fn top(&self, c: Option<u8>, from: i64, to: i64, n: usize) -> Vec<(String, u64)> {
        let mut sums: HashMap<u8, u64> = HashMap::new();
        for ((a, m, cc, tt), k) in &self.counts {
            if *cc == c && tt.is_none() && *m >= from && *m < to {
                *sums.entry(*a).or_insert(0) += k;
            }
        }
        let mut all: Vec<(String, u64)> = sums.into_iter().map(|(a, k)| (ad_name(a), k)).collect();
        all.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        all.truncate(n);
        all
    }
}

fn ad_name(ad: u8) -> String {
    format!("ad-{ad}")
}

/// One message of the output feed, as a subscriber reads it (versions
/// aside): what the model expects and what the core's feed renders to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Published {
    /// `agg.counts`, kind `close` or `correction`: counters with totals.
    Counts {
        minute: i64,
        kind: String,
        counters: BTreeMap<(u8, Option<u8>, Option<u8>), u64>,
    },
    /// `agg.counts`, kind `final`: the marker, with how many counters.
    Final { minute: i64, counters: u64 },
    /// `agg.top.<window>`.
    Top {
        window: i64,
        minute: i64,
        kind: String,
        ads: Vec<(String, u64)>,
    },
}

/// The configured top windows and N (the defaults).
const TOP_WINDOWS: [i64; 3] = [1, 5, 60];
const TOP_N: usize = 100;

impl Model {
    fn minutes(&self) -> BTreeSet<i64> {
        self.counts.keys().map(|(_, m, _, _)| *m).collect()
    }

    fn counters_of(&self, minute: i64) -> BTreeMap<(u8, Option<u8>, Option<u8>), u64> {
        self.counts
            .iter()
            .filter(|((_, m, _, _), _)| *m == minute)
            .map(|((a, _, c, t), n)| ((*a, *c, *t), *n))
            .collect()
    }

    fn tops(&self, minute: i64, kind: &str) -> Vec<Published> {
        TOP_WINDOWS
            .iter()
            .map(|&window| Published::Top {
                window,
                minute,
                kind: kind.to_string(),
                ads: self.top(None, minute - (window - 1) * MINUTE, minute + MINUTE, TOP_N),
            })
            .collect()
    }

    /// What docs/FEED.md says a partition publishes for the events since
    /// the last call, given the watermark before them: corrections of
    /// minutes closed before (changed counters, new totals), then each
    /// minute closed now (every counter, then its tops), then each minute
    /// final now (the marker, then its final tops).
    fn feed_since(&mut self, watermark_before: Option<i64>) -> Vec<Published> {
        let was_closed = |m: i64| watermark_before.is_some_and(|w| w >= m + MINUTE);
        let was_final = |m: i64| watermark_before.is_some_and(|w| w >= m + MINUTE + LATENESS);
        let touched = std::mem::take(&mut self.touched);
        let mut out = Vec::new();
        let mut corrected: BTreeMap<i64, BTreeMap<_, u64>> = BTreeMap::new();
        for (a, m, c, t) in touched {
            if was_closed(m) {
                corrected
                    .entry(m)
                    .or_default()
                    .insert((a, c, t), self.counts[&(a, m, c, t)]);
            }
        }
        for (minute, counters) in corrected {
            out.push(Published::Counts {
                minute,
                kind: "correction".into(),
                counters,
            });
        }
        let minutes = self.minutes();
        for &minute in minutes
            .iter()
            .filter(|m| !was_closed(**m) && self.closed(**m))
        {
            out.push(Published::Counts {
                minute,
                kind: "close".into(),
                counters: self.counters_of(minute),
            });
            out.extend(self.tops(minute, "close"));
        }
        for &minute in minutes
            .iter()
            .filter(|m| !was_final(**m) && self.is_final(**m))
        {
            out.push(Published::Final {
                minute,
                counters: self.counters_of(minute).len() as u64,
            });
            out.extend(self.tops(minute, "final"));
        }
        out
    }
}

/// The core's feed items of one batch, rendered as a subscriber gets them,
/// read back; checks that versions follow on from `last_version`.
fn published(
    items: &[adclick_actors::testing::FeedItem],
    last_version: &mut u64,
) -> Result<Vec<Published>, TestCaseError> {
    use adclick_actors::testing::FeedItem;
    let mut out = Vec::new();
    for item in items {
        let messages = match item {
            FeedItem::Message(m) => vec![m.clone()],
            FeedItem::Counts(c) => c.render(0).unwrap(),
        };
        for m in messages {
            prop_assert_eq!(m.version, *last_version + 1, "versions follow on");
            *last_version = m.version;
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let kind = v["kind"].as_str().unwrap().to_string();
            if m.subject.starts_with("agg.top.") {
                let to = adclick_actors::time::parse_rfc3339(v["to"].as_str().unwrap()).unwrap();
                let ads = v["ads"].as_array().unwrap().iter();
                out.push(Published::Top {
                    window: v["window_minutes"].as_i64().unwrap(),
                    minute: to - MINUTE,
                    kind,
                    ads: ads
                        .map(|a| {
                            (
                                a["ad_id"].as_str().unwrap().to_string(),
                                a["count"].as_u64().unwrap(),
                            )
                        })
                        .collect(),
                });
                continue;
            }
            let minute =
                adclick_actors::time::parse_rfc3339(v["minute"].as_str().unwrap()).unwrap();
            if kind == "final" {
                out.push(Published::Final {
                    minute,
                    counters: v["counters"].as_u64().unwrap(),
                });
                continue;
            }
            let mut counters = BTreeMap::new();
            for c in v["counts"].as_array().unwrap() {
                let ad: u8 = c["ad_id"].as_str().unwrap()["ad-".len()..].parse().unwrap();
                let index = |key: &str, names: &[&str]| {
                    c["filter"][key]
                        .as_str()
                        .map(|text| names.iter().position(|n| *n == text).unwrap() as u8)
                };
                let key = (
                    ad,
                    index("country", &COUNTRIES),
                    index("ip_type", &IP_TYPES),
                );
                counters.insert(key, c["count"].as_u64().unwrap());
            }
            out.push(Published::Counts {
                minute,
                kind,
                counters,
            });
        }
    }
    Ok(out)
}

fn settings() -> PipelineSettings {
    let mut s = PipelineSettings::with_defaults(1);
    s.watermark_delay_ms = DELAY;
    s.allowed_lateness_ms = LATENESS;
    s.memory_minutes = 60;
    // Snapshot often, so restarts meet every mix of snapshots and log records.
    s.snapshot_log_floor = 16;
    s
}

fn filter(c: Option<u8>, t: Option<u8>) -> Filter {
    Filter {
        country: c.and_then(|c| Country::parse(COUNTRIES[c as usize])),
        ip_type: t.and_then(|t| IpType::parse(IP_TYPES[t as usize])),
        ..Filter::ALL
    }
}

/// The batches the pipeline would see: clicks cut where `cuts` says, ticks alone.
fn batches(events: &[Event], cuts: &[bool]) -> Vec<Vec<(u64, Event)>> {
    let mut out: Vec<Vec<(u64, Event)>> = Vec::new();
    let mut current = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        match e {
            Event::Tick { .. } => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                out.push(vec![(seq, e.clone())]);
            }
            Event::Click { .. } => {
                current.push((seq, e.clone()));
                if cuts.get(i).copied().unwrap_or(false) {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn to_batch(events: &[(u64, Event)]) -> Batch {
    let mut batch = Batch::default();
    for (seq, e) in events {
        batch.delta.last_seq = *seq;
        match *e {
            Event::Tick { now } => batch.control.idle_tick = Some(now),
            Event::Click {
                id,
                ad,
                ts,
                country,
                ip,
            } => batch.clicks.push(Click {
                // Real ids are 128-bit hashes; an odd multiplier spreads the
                // model's small ids the same way, one to one.
                id: u128::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                ad: AdId::parse(&ad_name(ad)).unwrap(),
                ts,
                country: Country::parse(COUNTRIES[country as usize]).unwrap(),
                ip_type: IpType::parse(IP_TYPES[ip as usize]).unwrap(),
                extras: [0; 4],
                seq: *seq,
                repeat: false,
            }),
        }
    }
    batch
}

/// Raw generator output → events. `step` advances processing time; a click's
/// ts lags it (usually a little, sometimes by many minutes); a tick reads the
/// wall clock, which sometimes jumps back.
fn events_from(raw: &[(u8, u64, u64, u16, u8, u8, u8)]) -> Vec<Event> {
    let mut now: i64 = 1_000 * MINUTE;
    raw.iter()
        .map(|&(kind, step, lag, id, ad, country, ip)| {
            now += step as i64;
            match kind {
                0 => Event::Tick { now },
                1 => Event::Tick {
                    now: now - 10 * MINUTE,
                }, // the wall clock jumped back
                2 => Event::Click {
                    id,
                    ad,
                    ts: now - (lag as i64) * 6_000,
                    country,
                    ip,
                }, // up to 10 min late
                _ => Event::Click {
                    id,
                    ad,
                    ts: now - (lag as i64 % 10) * 1_000,
                    country,
                    ip,
                }, // within the delay
            }
        })
        .collect()
}

fn raw_events() -> impl Strategy<Value = Vec<(u8, u64, u64, u16, u8, u8, u8)>> {
    prop::collection::vec(
        (
            0u8..12,
            0u64..15_000,
            0u64..100,
            0u16..120,
            0u8..6,
            0u8..3,
            0u8..3,
        ),
        0..250,
    )
}

/// Compares every answer of the core with the model's.
fn compare(core: &PartitionCore, model: &Model, events: &[Event]) -> Result<(), TestCaseError> {
    let wm = core.watermark();
    prop_assert_eq!(
        if wm == NO_WATERMARK { None } else { Some(wm) },
        model.watermark,
        "watermark"
    );
    let (lo, hi) = events
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), e| match e {
            Event::Click { ts, .. } => (lo.min(*ts), hi.max(*ts)),
            Event::Tick { .. } => (lo, hi),
        });
    if lo > hi {
        return Ok(());
    }
    let (first, last) = (
        lo.div_euclid(MINUTE) * MINUTE,
        hi.div_euclid(MINUTE) * MINUTE,
    );
    let mut minute = first;
    while minute <= last {
        for ad in 0..6u8 {
            for c in [None, Some(0), Some(1), Some(2)] {
                for t in [None, Some(0), Some(1), Some(2)] {
                    let got = core.counts().count(
                        &AdId::parse(&ad_name(ad)).unwrap(),
                        &filter(c, t),
                        minute,
                        minute + MINUTE,
                    );
                    prop_assert_eq!(
                        got,
                        model.count(ad, c, t, minute, minute + MINUTE),
                        "ad {} minute {} filter {:?}/{:?}",
                        ad,
                        minute,
                        c,
                        t
                    );
                }
            }
        }
        prop_assert_eq!(
            minute < closed_until(wm),
            model.closed(minute),
            "closed {}",
            minute
        );
        prop_assert_eq!(
            minute < final_until(wm, LATENESS),
            model.is_final(minute),
            "final {}",
            minute
        );
        for window in [1, 3, 10] {
            for c in [None, Some(0)] {
                let mut sums = HashMap::new();
                core.counts().add_sums(
                    &filter(c, None),
                    minute,
                    minute + window * MINUTE,
                    &mut sums,
                );
                let got: Vec<(String, u64)> = top_n(sums.into_iter().collect(), 3)
                    .into_iter()
                    .map(|(a, k)| (a.to_string(), k))
                    .collect();
                prop_assert_eq!(
                    got,
                    model.top(c, minute, minute + window * MINUTE, 3),
                    "top window {} at {}",
                    window,
                    minute
                );
            }
        }
        minute += MINUTE;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Same stream, same answers: counts per ad, minute and filter; the
    /// watermark; which minutes are closed and final; top-N over sliding
    /// windows; repeats dropped and clicks rejected as too late; and, batch
    /// by batch, the output feed (close, correction and final of every
    /// minute, with their tops).
    #[test]
    fn the_core_answers_like_the_model(raw in raw_events(), cuts in prop::collection::vec(any::<bool>(), 250)) {
        let events = events_from(&raw);
        let mut model = Model::default();
        for e in &events {
            model.event(e);
        }
        let mut core = PartitionCore::new(0, &settings());
        let (mut duplicates, mut too_late) = (0u64, Vec::new());
        let (mut feed_model, mut last_version) = (Model::default(), 0);
        for group in batches(&events, &cuts) {
            let mut batch = to_batch(&group);
            core.process(&mut batch);
            // The feed, batch by batch: what the model says this batch
            // publishes, against what the core decided.
            let before = feed_model.watermark;
            for (_, e) in &group {
                feed_model.event(e);
            }
            prop_assert_eq!(
                published(&batch.delta.feed, &mut last_version)?,
                feed_model.feed_since(before),
                "feed of the batch ending at seq {}",
                batch.delta.last_seq
            );
            duplicates += batch.control.duplicates as u64;
            for r in &batch.delta.rejects {
                let Event::Click { id, .. } = events[r.seq as usize - 1] else { unreachable!() };
                too_late.push(id);
            }
        }
        prop_assert_eq!(duplicates, model.duplicates);
        prop_assert_eq!(&too_late, &model.too_late);
        compare(&core, &model, &events)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Commits to a real redb file at random batch boundaries and crashes at
    /// others (dropping everything not committed, then replaying it from the
    /// checkpoint's sequence on): answers stay the model's.
    #[test]
    fn restarts_from_the_checkpoint_change_nothing(
        raw in raw_events(),
        cuts in prop::collection::vec(any::<bool>(), 250),
        fate in prop::collection::vec(0u8..4, 250),
    ) {
        let events = events_from(&raw);
        let mut model = Model::default();
        for e in &events {
            model.event(e);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        let recovered = store.recover(60).unwrap();
        let mut generation = recovered.generation;
        let mut core = PartitionCore::resume(0, &settings(), recovered);
        // The count log alternates between its layouts at each restart:
        // finest counters only (layout 3, the default filters' way), then
        // every counter (layout 2), so recovery meets both and their mix.
        let finest = FilterKinds::of(&settings().dimension_sets);
        assert!(finest.is_some(), "the default filters have a finest one");
        let mut logs_finest = true;
        let mut pending = Checkpoint::resume(0, NO_WATERMARK).logging_finest_only(finest);
        let all = batches(&events, &cuts);
        let mut committed_upto = 0; // batches before this index are committed
        let mut i = 0;
        let mut fates = fate.iter().cycle();
        while i < all.len() {
            let mut batch = to_batch(&all[i]);
            core.process(&mut batch);
            pending.absorb(&mut batch);
            i += 1;
            match fates.next().copied().unwrap_or(0) {
                0 => {
                    let cp = pending.take();
                    store.commit(generation, &cp, final_until(cp.watermark, LATENESS)).unwrap();
                    committed_upto = i;
                }
                1 => {
                    // Crash: everything since the last commit is lost and replayed.
                    let recovered = store.recover(60).unwrap();
                    generation = recovered.generation;
                    logs_finest = !logs_finest;
                    pending = Checkpoint::resume(recovered.last_seq, recovered.watermark)
                        .logging_finest_only(finest.filter(|_| logs_finest));
                    core = PartitionCore::resume(0, &settings(), recovered);
                    i = committed_upto;
                }
                _ => {}
            }
        }
        compare(&core, &model, &events)?;
    }
}
