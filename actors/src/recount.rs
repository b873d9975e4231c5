//! A batch recount of SPEC §1 payloads: every valid click counted once in
//! its event-time minute, with no lateness limit and no NATS, through the
//! live path's own pieces: the decoder ([`decode::decode_payload`], the
//! same two readers as ingest), the dedup set ([`SeenClicks`], keyed by the
//! same 128-bit click key), the reducer's ad numbering ([`AdSlots`]) and
//! counters ([`CounterTable`]) and its exact [`top_n`].
//!
//! What differs from the live path, on purpose: there is no watermark, so no
//! click is late, too late or in the future, and no id is ever forgotten
//! (dedup spans the whole input); and a payload read from a file has no
//! subject, so its `ad_id` is not compared with one. `adclick reconcile
//! --input` drives this (docs/RECONCILIATION.md).
//!
//! Wiring, not a stage: it puts the ingest, dedup and reducer pieces
//! together, as [`crate::core`] does.

use crate::click::{AdId, Click, Filter};
use crate::dedup::seen_clicks::SeenClicks;
use crate::fast_hash::FastMap;
use crate::ingest::decode;
pub use crate::ingest::decode::decode_message;
use crate::reducer::ad_slots::AdSlots;
use crate::reducer::counter_table::CounterTable;
use crate::reducer::top_n::top_n;
use crate::settings::DimensionSet;
use crate::time::minute_floor;
use std::collections::BTreeMap;

/// Clicks decoded before their dedup lookups: their ids' buckets are
/// prefetched together, so the cache misses of a run of clicks overlap
/// instead of queueing (the dedup set of ten million ids is far bigger than
/// the cache).
const RUN: usize = 32;

/// What a recount has read so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecountTally {
    /// Payloads offered (lines of a file).
    pub payloads: u64,
    /// Valid clicks, repeats included.
    pub valid: u64,
    /// Valid clicks whose (ad id, click id) came before: not counted again.
    pub repeats: u64,
    /// Payloads refused by SPEC §1's rules.
    pub invalid: u64,
}

/// The recount in progress: feed it payloads, then [`Recount::finish`].
pub struct Recount {
    seen: SeenClicks,
    ads: AdSlots,
    /// Each minute (epoch ms) and its counters, in first-seen order.
    minutes: Vec<(i64, CounterTable)>,
    /// Minute → its place in `minutes`.
    minute_index: FastMap<i64, usize>,
    /// The last minute looked up: clicks come mostly in time order.
    last_minute: Option<(i64, usize)>,
    /// Valid clicks not yet deduplicated (at most [`RUN`]).
    pending: Vec<Click>,
    tally: RecountTally,
}

impl Recount {
    /// An empty recount sized for about `clicks` distinct clicks (a guess
    /// from the input's size spares the dedup set its growths; any number
    /// is correct).
    pub fn with_capacity(clicks: usize) -> Recount {
        Recount {
            seen: SeenClicks::with_capacity(clicks),
            ads: AdSlots::default(),
            minutes: Vec::new(),
            minute_index: FastMap::default(),
            last_minute: None,
            pending: Vec::with_capacity(RUN),
            tally: RecountTally::default(),
        }
    }

    /// Reads one payload (`seq` numbers it, e.g. its line). A valid click is
    /// counted unless its id came before; an invalid payload is not counted
    /// and its reject reason (the live path's wording) is returned.
    #[inline]
    pub fn add(&mut self, seq: u64, payload: &[u8]) -> Result<(), String> {
        self.tally.payloads += 1;
        match decode::decode_payload(seq, payload) {
            Ok(click) => {
                self.tally.valid += 1;
                self.pending.push(click);
                if self.pending.len() == RUN {
                    self.count_pending();
                }
                Ok(())
            }
            Err(reason) => {
                self.tally.invalid += 1;
                Err(reason)
            }
        }
    }

    /// Counts a payload of `length` bytes that was too long to be read
    /// whole (a line longer than the reader's buffer) as invalid, and
    /// returns the reason the decoder gives such a payload.
    pub fn refuse_oversize(&mut self, length: usize) -> String {
        self.tally.payloads += 1;
        self.tally.invalid += 1;
        format!(
            "payload is {length} bytes, more than the {}-byte limit",
            decode::MAX_PAYLOAD
        )
    }

    /// What has been read so far (repeats only once their run is counted:
    /// exact after [`Recount::finish`]).
    pub fn tally(&self) -> RecountTally {
        self.tally
    }

    /// Dedups and counts the pending clicks, in passes over the run so
    /// that each table's cache misses overlap: first every dedup bucket and
    /// ad index bucket is asked for, then the ad ids those buckets name,
    /// then the lookups run, then the counters (asked for as their slots
    /// became known) are added to. The outcome is that of one click after
    /// the other.
    fn count_pending(&mut self) {
        let mut hashes = [0u64; RUN];
        for (click, hash) in self.pending.iter().zip(&mut hashes) {
            self.seen.prefetch(click.id);
            *hash = self.ads.hash(&click.ad);
            self.ads.prefetch_bucket(*hash);
        }
        for hash in &hashes[..self.pending.len()] {
            self.ads.prefetch_id(*hash);
        }
        // (minute's place, ad slot) of each new click.
        let mut counted = [(0usize, 0u32); RUN];
        let mut new = 0;
        for (i, hash) in hashes.iter().enumerate().take(self.pending.len()) {
            let (id, ad, minute) = {
                let click = &self.pending[i];
                (click.id, click.ad, minute_floor(click.ts))
            };
            if !self.seen.insert(id, minute) {
                self.tally.repeats += 1;
                continue;
            }
            let slot = self.ads.slot_hashed(&ad, *hash);
            let at = self.minute_at(minute);
            self.minutes[at].1.prefetch(slot);
            counted[new] = (at, slot);
            new += 1;
        }
        for (at, slot) in &counted[..new] {
            self.minutes[*at].1.add(*slot, 1);
        }
        self.pending.clear();
    }

    /// The place of `minute`'s counters, made if new.
    #[inline]
    fn minute_at(&mut self, minute: i64) -> usize {
        if let Some((last, at)) = self.last_minute {
            if last == minute {
                return at;
            }
        }
        let next = self.minutes.len();
        let at = *self.minute_index.entry(minute).or_insert(next);
        if at == next {
            self.minutes.push((minute, CounterTable::default()));
        }
        self.last_minute = Some((minute, at));
        at
    }

    /// Counts what is pending and hands over the result.
    pub fn finish(mut self) -> (Recounted, RecountTally) {
        self.count_pending();
        let mut minutes = self.minutes;
        minutes.sort_unstable_by_key(|(minute, _)| *minute);
        // Ads in id order once, so each minute sorts numbers, not texts.
        let mut by_id: Vec<u32> = (0..self.ads.len() as u32).collect();
        by_id.sort_unstable_by(|a, b| self.ads.id(*a).cmp(self.ads.id(*b)));
        let mut rank = vec![0u32; by_id.len()];
        for (r, slot) in by_id.iter().enumerate() {
            rank[*slot as usize] = r as u32;
        }
        let ads = by_id.iter().map(|slot| *self.ads.id(*slot)).collect();
        let recounted = Recounted { minutes, rank, ads };
        (recounted, self.tally)
    }
}

/// The counts of a finished recount, minute by minute.
pub struct Recounted {
    /// Each minute with clicks (epoch ms) and its counters by ad slot, in
    /// time order.
    minutes: Vec<(i64, CounterTable)>,
    /// Ad slot → its place in id order.
    rank: Vec<u32>,
    /// The ads in id order.
    ads: Vec<AdId>,
}

/// One minute's counts: `(ad, clicks)` for every ad with clicks in it.
pub struct MinuteCounts {
    /// The minute's start, epoch milliseconds.
    pub minute: i64,
    /// By ad id ascending.
    pub ads: Vec<(AdId, u64)>,
}

impl MinuteCounts {
    /// The first `n` ads by clicks, ties by ad id ascending (SPEC §3).
    pub fn top(&self, n: usize) -> Vec<(AdId, u64)> {
        top_n(self.ads.clone(), n)
    }
}

impl Recounted {
    /// Minutes with at least one click.
    pub fn minute_count(&self) -> usize {
        self.minutes.len()
    }

    /// Distinct ads with at least one click.
    pub fn ad_count(&self) -> usize {
        self.ads.len()
    }

    /// Counted clicks in all.
    pub fn total(&self) -> u64 {
        self.minutes
            .iter()
            .flat_map(|(_, table)| table.iter().map(|(_, n)| n))
            .sum()
    }

    /// Each minute's counts in time order, ads by id.
    pub fn minutes(&self) -> impl Iterator<Item = MinuteCounts> + '_ {
        self.minutes.iter().map(|(minute, table)| {
            let mut ranked: Vec<(u32, u64)> = table
                .iter()
                .map(|(slot, n)| (self.rank[slot as usize], n))
                .collect();
            ranked.sort_unstable_by_key(|(rank, _)| *rank);
            MinuteCounts {
                minute: *minute,
                ads: ranked
                    .into_iter()
                    .map(|(rank, n)| (self.ads[rank as usize], n))
                    .collect(),
            }
        })
    }
}

/// A click a [`FilteredRecount`] counted (the first of its id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountedClick {
    /// Its event-time minute (epoch ms).
    pub minute: i64,
    /// Its ad.
    pub ad: AdId,
    /// Its dedup key (ad id and click id hashed, as the live path keys it).
    pub id: u128,
}

/// A recount under every configured filter, for `adclick reconcile --from
/// --to`: what a repair writes must hold every counter a partition keeps,
/// not only the all-clicks ones. Slower than [`Recount`] (a map entry per
/// (minute, ad, filter)); it reads what a range's archive holds, not a
/// benchmark file. Messages keep their subject: a recount of the stream
/// applies the rule that `ad_id` equals the subject's last token.
pub struct FilteredRecount {
    seen: SeenClicks,
    sets: Vec<DimensionSet>,
    counts: FastMap<(i64, AdId, Filter), u64>,
    tally: RecountTally,
}

impl FilteredRecount {
    /// An empty recount under `sets` (sets naming an extra dimension are
    /// left out: extra-dimension values are admitted per partition, which a
    /// recount does not replay).
    pub fn new(sets: &[DimensionSet]) -> FilteredRecount {
        FilteredRecount {
            seen: SeenClicks::with_capacity(1 << 16),
            sets: sets.iter().copied().filter(|s| s.extra == 0).collect(),
            counts: FastMap::default(),
            tally: RecountTally::default(),
        }
    }

    /// Reads one message: `subject_ad` is its subject's last token (`None`
    /// for a payload without a subject). Returns the click if it was
    /// counted, `None` for a repeat of an id already counted, or the reject
    /// reason.
    pub fn add(
        &mut self,
        seq: u64,
        subject_ad: Option<&str>,
        payload: &[u8],
    ) -> Result<Option<CountedClick>, String> {
        self.tally.payloads += 1;
        let click = match decode::decode_message(subject_ad, seq, payload) {
            Ok(click) => click,
            Err(reason) => {
                self.tally.invalid += 1;
                return Err(reason);
            }
        };
        self.tally.valid += 1;
        let minute = minute_floor(click.ts);
        if !self.seen.insert(click.id, minute) {
            self.tally.repeats += 1;
            return Ok(None);
        }
        for set in &self.sets {
            *self
                .counts
                .entry((minute, click.ad, click.project(*set)))
                .or_insert(0) += 1;
        }
        Ok(Some(CountedClick {
            minute,
            ad: click.ad,
            id: click.id,
        }))
    }

    /// What has been read so far.
    pub fn tally(&self) -> RecountTally {
        self.tally
    }

    /// Every counter, ordered by (minute, ad, filter).
    pub fn finish(self) -> BTreeMap<(i64, AdId, Filter), u64> {
        self.counts.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashSet};

    fn payload(click: &str, ad: &str, ts: i64) -> Vec<u8> {
        format!(r#"{{"click_id":"{click}","ad_id":"{ad}","ts":{ts}}}"#).into_bytes()
    }

    fn table(recounted: &Recounted) -> Vec<(i64, String, u64)> {
        recounted
            .minutes()
            .flat_map(|m| {
                m.ads
                    .into_iter()
                    .map(move |(ad, n)| (m.minute, ad.to_string(), n))
            })
            .collect()
    }

    #[test]
    fn counts_each_click_once_in_its_minute_however_late() {
        let mut recount = Recount::with_capacity(0);
        let lines = [
            payload("c1", "ad-2", 125_000),
            payload("c2", "ad-10", 60_000),
            payload("c1", "ad-2", 125_000), // a repeat
            payload("c1", "ad-10", 61_000), // same click id, another ad: a click
            payload("c3", "ad-2", 5_000),   // an hour behind nothing: still counted
            b"{not json".to_vec(),
            br#"{"click_id":"c4","ad_id":"ad-1"}"#.to_vec(),
        ];
        let mut reasons = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if let Err(why) = recount.add(i as u64, line) {
                reasons.push(why);
            }
        }
        let (recounted, tally) = recount.finish();
        assert_eq!(
            tally,
            RecountTally {
                payloads: 7,
                valid: 5,
                repeats: 1,
                invalid: 2
            }
        );
        assert_eq!(reasons[1], "missing required field ts");
        assert_eq!(
            table(&recounted),
            vec![
                (0, "ad-2".to_string(), 1),
                (60_000, "ad-10".to_string(), 2),
                (120_000, "ad-2".to_string(), 1),
            ]
        );
        assert_eq!((recounted.minute_count(), recounted.ad_count()), (3, 2));
        assert_eq!(recounted.total(), 4);
    }

    #[test]
    fn top_breaks_ties_by_ad_id() {
        let mut recount = Recount::with_capacity(0);
        let clicks = [("ad-9", 3), ("ad-10", 3), ("ad-1", 1), ("ad-5", 4)];
        let mut n = 0;
        for (ad, times) in clicks {
            for _ in 0..times {
                n += 1;
                recount.add(n, &payload(&n.to_string(), ad, 0)).unwrap();
            }
        }
        let (recounted, _) = recount.finish();
        let minute = recounted.minutes().next().unwrap();
        let top: Vec<_> = minute
            .top(3)
            .into_iter()
            .map(|(ad, n)| (ad.to_string(), n))
            .collect();
        assert_eq!(
            top,
            vec![("ad-5".into(), 4), ("ad-10".into(), 3), ("ad-9".into(), 3)]
        );
    }

    proptest! {
        /// Equals a plain map over (minute, ad) of the first sighting of
        /// each (ad, click id), across runs and minutes out of order.
        #[test]
        fn equals_a_plain_map(
            clicks in prop::collection::vec((0u8..60, 0u8..12, 0i64..600_000), 0..400),
        ) {
            let mut recount = Recount::with_capacity(clicks.len() / 3);
            let mut seen = HashSet::new();
            let mut naive: BTreeMap<(i64, String), u64> = BTreeMap::new();
            for (i, (id, ad, ts)) in clicks.iter().enumerate() {
                let ad = format!("ad-{ad}");
                recount.add(i as u64, &payload(&id.to_string(), &ad, *ts)).unwrap();
                if seen.insert((ad.clone(), *id)) {
                    *naive.entry((ts - ts % 60_000, ad)).or_default() += 1;
                }
            }
            let (recounted, tally) = recount.finish();
            prop_assert_eq!(tally.repeats, (clicks.len() - seen.len()) as u64);
            let naive: Vec<_> = naive.into_iter().map(|((m, ad), n)| (m, ad, n)).collect();
            prop_assert_eq!(table(&recounted), naive);
        }
    }
}
