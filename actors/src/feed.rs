//! The output feed: what a partition publishes to the `ADCLICK_AGG` stream
//! so billing and bidders can subscribe instead of polling.
//!
//! For each minute with clicks, a partition publishes (see `docs/FEED.md`):
//! - `agg.counts.<partition>`, kind `close`: every counter of the minute when
//!   the watermark closes it; kind `correction`: the counters a late click
//!   changed, with their new totals; kind `final`: a marker once the minute
//!   can no longer change.
//! - `agg.top.<window>`, kinds `close` and `final`: the partition's top-N
//!   of the window that ends with that minute, over all clicks.
//!
//! Every message has a `version`, increasing per partition, and the message
//! id `adclick-agg-p<partition>-<version>`. Messages are decided by the
//! reducer, committed to the partition's outbox with the batch that caused
//! them, and published after the commit, so a replay republishes the same
//! ids and JetStream drops the repeats.
//!
//! A minute's `close` is every counter of the minute (~50,000 at 20,000
//! clicks/s per 16 partitions, ~3 MB of JSON), and every partition closes
//! the minute at the same moment. So counts publications are decided,
//! numbered and committed as [`CountsPublication`]s: the counters packed a
//! few bytes each, in whatever order memory holds them, with the number of
//! chunks already fixed (from the sizes the entries will have, which need
//! neither sorting nor rendering). Sorting and rendering the JSON
//! ([`CountsPublication::render`]) happen in the writer's publisher, after
//! the commit and off the path that closes the minute; rendering is a pure
//! function of what was committed, so a republication after a crash gives
//! the same messages.

use crate::click::{AdId, Filter};
use crate::fast_hash::FastMap;
use crate::store::packed_counts::{push_varint, read_varint, take};
use crate::time::{format_rfc3339, MINUTE_MS};
use bytes::Bytes;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// One message of the feed, ready to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedMessage {
    /// Its version: the partition's feed sequence number.
    pub version: u64,
    /// `agg.counts.<partition>` or `agg.top.<window>`.
    pub subject: String,
    /// JSON (see `docs/FEED.md`).
    pub payload: Bytes,
}

impl FeedMessage {
    /// The `Nats-Msg-Id`: the same for every publication of this message.
    pub fn msg_id(&self, partition: u32) -> String {
        format!("adclick-agg-p{partition}-{}", self.version)
    }
}

/// Why a minute is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publication {
    /// The watermark closed the minute.
    Close,
    /// Late clicks changed closed counters.
    Correction,
    /// The minute is past allowed lateness: these numbers are final.
    Final,
    /// `adclick reconcile --repair` recounted the minute from the raw clicks:
    /// every counter's total (0 for counters the recount did not find), final.
    Reconciled,
}

impl Publication {
    fn as_str(self) -> &'static str {
        match self {
            Publication::Close => "close",
            Publication::Correction => "correction",
            Publication::Final => "final",
            Publication::Reconciled => "reconciled",
        }
    }

    /// The byte that names it in the feed outbox.
    pub fn code(self) -> u8 {
        match self {
            Publication::Close => 1,
            Publication::Correction => 2,
            Publication::Final => 3,
            Publication::Reconciled => 4,
        }
    }

    /// The inverse of [`Publication::code`].
    pub fn from_code(code: u8) -> Option<Publication> {
        match code {
            1 => Some(Publication::Close),
            2 => Some(Publication::Correction),
            3 => Some(Publication::Final),
            4 => Some(Publication::Reconciled),
            _ => None,
        }
    }
}

/// What the feed decided and the writer publishes after the commit, in
/// version order.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedItem {
    /// A message rendered when decided (tops, `final` markers: small).
    Message(FeedMessage),
    /// An `agg.counts` publication, rendered by the publisher.
    Counts(CountsPublication),
}

impl FeedItem {
    /// Its first version: its key in the feed outbox.
    pub fn first_version(&self) -> u64 {
        match self {
            FeedItem::Message(m) => m.version,
            FeedItem::Counts(c) => c.first_version,
        }
    }

    /// Its last version (a counts publication has one per chunk).
    pub fn last_version(&self) -> u64 {
        match self {
            FeedItem::Message(m) => m.version,
            FeedItem::Counts(c) => c.first_version + u64::from(c.chunks) - 1,
        }
    }
}

/// A stored counts publication that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("feed outbox: counts publication {first_version} is unreadable")]
pub struct UnreadableCounts {
    /// Its first version.
    pub first_version: u64,
}

/// An `agg.counts` publication, decided and numbered but not rendered: the
/// counters packed, in no particular order, and how many chunks (so how
/// many versions, from `first_version` on) its messages take.
#[derive(Clone, Debug, PartialEq)]
pub struct CountsPublication {
    /// The minute (epoch ms).
    pub minute: i64,
    /// `close`, `correction` or `reconciled`.
    pub publication: Publication,
    /// The version of chunk 0; chunk `i` has `first_version + i`.
    pub first_version: u64,
    /// How many messages; at least 1.
    pub chunks: u32,
    /// The counters, packed by [`CountersPacker`].
    pub counters: Bytes,
}

impl CountsPublication {
    /// The messages: counters sorted by ad id then filter (extra dimensions
    /// by their text), rendered, and cut into `chunks` consecutive runs of
    /// about equal size (each under the payload limit the chunk count was
    /// chosen for, see [`chunk_count`]); chunk `i` has version
    /// `first_version + i`. The same bytes always give the same messages.
    pub fn render(&self, partition: u32) -> Result<Vec<FeedMessage>, UnreadableCounts> {
        let unreadable = || UnreadableCounts {
            first_version: self.first_version,
        };
        let mut counters = unpack_counters(&self.counters).ok_or_else(unreadable)?;
        sort_for_feed(&mut counters);
        let mut filters: FastMap<Filter, String> = FastMap::default();
        let mut entries = String::with_capacity(counters.len() * 64);
        // Where each entry starts in `entries`, and the offsets the chunks
        // are cut at (by the entries' start, as in `chunk_count`).
        let mut starts = Vec::with_capacity(counters.len() + 1);
        for (ad, filter, count) in &counters {
            let filter_text = filters
                .entry(*filter)
                .or_insert_with(|| filter_json(filter).to_string());
            starts.push(entries.len());
            // Writing to a String cannot fail.
            let _ = write!(
                entries,
                r#"{{"ad_id":"{ad}","filter":{filter_text},"count":{count}}}"#
            );
        }
        starts.push(entries.len());
        // Sizes count one separator per entry, as `chunk_count` does.
        let total = (entries.len() + counters.len()) as u128;
        let n = self.chunks.max(1) as usize;
        let chunk_of = |i: usize| -> usize {
            if total == 0 {
                return 0;
            }
            let at = (starts[i] + i) as u128;
            ((at * n as u128 / total) as usize).min(n - 1)
        };
        let subject = format!("agg.counts.{partition}");
        let minute = format_rfc3339(self.minute);
        let kind = self.publication.as_str();
        let is_final = matches!(
            self.publication,
            Publication::Final | Publication::Reconciled
        );
        let mut messages = Vec::with_capacity(n);
        let mut first = 0;
        for chunk in 0..n {
            let mut end = first;
            while end < counters.len() && chunk_of(end) == chunk {
                end += 1;
            }
            let version = self.first_version + chunk as u64;
            let body: usize = starts[end] - starts[first] + (end - first);
            let mut payload = String::with_capacity(body + 256);
            // The envelope's values need no escaping (numbers, RFC 3339,
            // fixed words); the filters were rendered by serde_json and ad
            // ids need none (`[A-Za-z0-9_-]`).
            let _ = write!(
                payload,
                r#"{{"partition":{partition},"minute":"{minute}","kind":"{kind}","final":{is_final},"version":{version},"chunk":{chunk},"chunks":{n},"counts":["#
            );
            for i in first..end {
                if i > first {
                    payload.push(',');
                }
                payload.push_str(&entries[starts[i]..starts[i + 1]]);
            }
            payload.push_str("]}");
            messages.push(FeedMessage {
                version,
                subject: subject.clone(),
                payload: Bytes::from(payload),
            });
            first = end;
        }
        Ok(messages)
    }
}

/// How many chunks a publication whose entries take `total` bytes (each
/// counted with one separator), the largest `largest`, needs so that each
/// chunk stays within `budget` bytes when cut at about equal offsets: a
/// chunk holds the entries that start in a `total / n` stretch, so at most
/// `total / n + largest` bytes.
pub fn chunk_count(total: usize, largest: usize, budget: usize) -> u32 {
    if total <= budget {
        return 1;
    }
    let room = budget.saturating_sub(largest).max(1);
    u32::try_from(total.div_ceil(room)).unwrap_or(u32::MAX)
}

/// The rendered length of one counts entry:
/// `{"ad_id":"<ad>","filter":<filter>,"count":<count>}`.
fn entry_len(ad: usize, filter_text: usize, count: u64) -> usize {
    const FIXED: usize = r#"{"ad_id":"","filter":,"count":}"#.len();
    let digits = if count == 0 {
        1
    } else {
        count.ilog10() as usize + 1
    };
    FIXED + ad + filter_text + digits
}

/// Counters in the feed's order: by ad id, then filter; filters with extra
/// dimensions by their text, since their codes are numbered in the order a
/// process first saw the values.
pub fn sort_for_feed(counters: &mut [(AdId, Filter, u64)]) {
    counters.sort_unstable_by_key(|(ad, filter, _)| (*ad, *filter));
    if counters
        .iter()
        .any(|(_, filter, _)| !filter.extras.is_empty())
    {
        counters.sort_by_cached_key(|(ad, filter, _)| {
            (*ad, filter.country, filter.ip_type, filter.entries())
        });
    }
}

/// Packs the counters of a counts publication, in any order, and adds up
/// the sizes their rendered entries will have.
///
/// Layout: runs of counters sharing a filter (the reducer lists a minute
/// filter by filter): `key length: u16 LE, the filter's key text
/// ([`Filter::key`]), counters: u32 LE`, then per counter `ad length: u8, ad
/// bytes, count: LEB128`. About 10 bytes a counter instead of ~60 of JSON.
#[derive(Default)]
pub struct CountersPacker {
    bytes: Vec<u8>,
    /// The open run: its filter, its rendered length, where its counter
    /// count is written, and that count.
    run: Option<(Filter, usize, usize, u32)>,
    total: usize,
    largest: usize,
}

impl CountersPacker {
    /// Adds a counter.
    pub fn push(&mut self, ad: &AdId, filter: &Filter, count: u64) {
        let run = match &mut self.run {
            Some(run) if run.0 == *filter && run.3 < u32::MAX => run,
            _ => {
                let key = filter.key();
                // A few dimensions of at most 64-byte values: far below 64 KiB.
                self.bytes
                    .extend_from_slice(&(key.len() as u16).to_le_bytes());
                self.bytes.extend_from_slice(key.as_bytes());
                let at = self.bytes.len();
                self.bytes.extend_from_slice(&0u32.to_le_bytes());
                let len = filter_json(filter).to_string().len();
                self.run.insert((*filter, len, at, 0))
            }
        };
        run.3 += 1;
        let (filter_len, at, counters) = (run.1, run.2, run.3);
        self.bytes[at..at + 4].copy_from_slice(&counters.to_le_bytes());
        let id = ad.as_str().as_bytes();
        // An AdId is at most 64 bytes: its length fits a byte.
        self.bytes.push(id.len() as u8);
        self.bytes.extend_from_slice(id);
        push_varint(&mut self.bytes, count);
        let len = entry_len(id.len(), filter_len, count) + 1;
        self.total += len;
        self.largest = self.largest.max(len);
    }
}

/// Reads packed counters back; `None` if the bytes are not packed counters.
fn unpack_counters(mut bytes: &[u8]) -> Option<Vec<(AdId, Filter, u64)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key_len = u16::from_le_bytes(take(&mut bytes, 2)?.try_into().ok()?) as usize;
        let filter = Filter::from_key(std::str::from_utf8(take(&mut bytes, key_len)?).ok()?)?;
        let counters = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        out.reserve(counters as usize);
        for _ in 0..counters {
            let ad_len = take(&mut bytes, 1)?[0] as usize;
            let ad = AdId::from_bytes(take(&mut bytes, ad_len)?)?;
            out.push((ad, filter, read_varint(&mut bytes)?));
        }
    }
    Some(out)
}

/// A partition's top-N of one window, stored when its last minute turns final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTop {
    /// Window length, minutes.
    pub window: i64,
    /// The window's last minute (epoch ms).
    pub minute: i64,
    /// Ranked ads with their clicks over the window.
    pub ads: Vec<(AdId, u64)>,
}

/// Numbers and shapes the feed messages of one partition.
pub struct AggregateFeed {
    partition: u32,
    next_version: u64,
    max_payload: usize,
}

impl AggregateFeed {
    /// Continues after the last committed version.
    pub fn new(partition: u32, last_version: u64, max_payload: usize) -> AggregateFeed {
        AggregateFeed {
            partition,
            next_version: last_version + 1,
            max_payload: max_payload.max(4096),
        }
    }

    fn take_version(&mut self) -> u64 {
        let version = self.next_version;
        self.next_version += 1;
        version
    }

    /// The counters of `minute` (packed by `packer`, in any order) as one
    /// publication, numbered: one version per chunk, each chunk under the
    /// payload limit. An empty list still gives one message.
    pub fn counts(
        &mut self,
        minute: i64,
        publication: Publication,
        packer: CountersPacker,
    ) -> CountsPublication {
        // Leave room for the envelope.
        let budget = self.max_payload - 512;
        let chunks = chunk_count(packer.total, packer.largest, budget);
        let first_version = self.next_version;
        self.next_version += u64::from(chunks);
        CountsPublication {
            minute,
            publication,
            first_version,
            chunks,
            counters: Bytes::from(packer.bytes),
        }
    }

    /// The marker that `minute` is final: no counters, only how many it has
    /// (their totals are those of the `close` and `correction` messages).
    pub fn final_marker(&mut self, minute: i64, counters: usize) -> FeedMessage {
        let version = self.take_version();
        let payload = format!(
            r#"{{"partition":{},"minute":"{}","kind":"final","final":true,"version":{version},"chunk":0,"chunks":1,"counters":{counters},"counts":[]}}"#,
            self.partition,
            format_rfc3339(minute),
        );
        FeedMessage {
            version,
            subject: format!("agg.counts.{}", self.partition),
            payload: Bytes::from(payload),
        }
    }

    /// The top-N of the `window` minutes ending with `minute`.
    pub fn top(
        &mut self,
        window: i64,
        minute: i64,
        publication: Publication,
        ads: &[(AdId, u64)],
    ) -> FeedMessage {
        let version = self.take_version();
        let payload = json!({
            "partition": self.partition,
            "window_minutes": window,
            "from": format_rfc3339(minute - (window - 1) * MINUTE_MS),
            "to": format_rfc3339(minute + MINUTE_MS),
            "filter": {},
            "kind": publication.as_str(),
            "final": publication == Publication::Final,
            "version": version,
            "ads": ads.iter().map(|(ad, n)| json!({"ad_id": ad.as_str(), "count": n})).collect::<Vec<_>>(),
        });
        FeedMessage {
            version,
            subject: format!("agg.top.{window}"),
            payload: Bytes::from(payload.to_string()),
        }
    }

    /// The last version handed out (what the checkpoint records).
    #[cfg(test)]
    pub fn last_version(&self) -> u64 {
        self.next_version - 1
    }
}

/// A filter as a JSON object of dimension → value (`{}` for all clicks).
/// Extra-dimension values are rendered as their text, resolved through the
/// process-wide value table ([`crate::dimension`]) by [`Filter::entries`], so
/// feed consumers see the same `filter` objects as the REST answers.
pub fn filter_json(filter: &Filter) -> Value {
    Value::Object(
        filter
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect(),
    )
}

/// Encodes a stored top-N for redb: `ad:count` pairs joined by `,`.
pub fn encode_top(ads: &[(AdId, u64)]) -> String {
    ads.iter()
        .map(|(ad, n)| format!("{ad}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`encode_top`]; `None` on a damaged value.
pub fn decode_top(text: &str) -> Option<Vec<(AdId, u64)>> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (ad, n) = pair.split_once(':')?;
            Some((AdId::parse(ad)?, n.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::click::Country;

    fn ad(i: u32) -> AdId {
        AdId::parse(&format!("ad-{i}")).unwrap()
    }

    /// Packs `counters` in the given order.
    fn packed(counters: &[(AdId, Filter, u64)]) -> CountersPacker {
        let mut packer = CountersPacker::default();
        for (ad, filter, n) in counters {
            packer.push(ad, filter, *n);
        }
        packer
    }

    /// Renders a publication and reads its counters back, checking each
    /// message's envelope and size on the way.
    fn rendered(
        p: &CountsPublication,
        partition: u32,
        max_payload: usize,
    ) -> Vec<(String, Value, u64)> {
        let messages = p.render(partition).unwrap();
        assert_eq!(messages.len(), p.chunks as usize);
        let mut seen = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            assert!(
                m.payload.len() <= max_payload,
                "chunk {i} is {} bytes",
                m.payload.len()
            );
            assert_eq!(m.subject, format!("agg.counts.{partition}"));
            assert_eq!(m.version, p.first_version + i as u64);
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(v["chunk"], i);
            assert_eq!(v["chunks"], messages.len());
            assert_eq!(v["version"], m.version);
            assert_eq!(v["kind"], p.publication.as_str());
            assert_eq!(v["final"], false);
            for c in v["counts"].as_array().unwrap() {
                seen.push((
                    c["ad_id"].as_str().unwrap().to_string(),
                    c["filter"].clone(),
                    c["count"].as_u64().unwrap(),
                ));
            }
        }
        seen
    }

    /// One filter of each shape, and an extra whose value JSON must escape.
    fn filters() -> Vec<Filter> {
        use crate::dimension::{intern, ExtraCodes};
        let mut filters = crate::store::packed_counts::tests::filters();
        filters.push(Filter {
            extras: ExtraCodes::from_codes([intern("f_device", "a&\"b")]).unwrap(),
            ..Filter::ALL
        });
        filters
    }

    #[test]
    fn counts_are_chunked_under_the_limit_and_lose_nothing() {
        let mut feed = AggregateFeed::new(3, 41, 4096);
        let us = Filter {
            country: Country::parse("US"),
            ..Filter::ALL
        };
        // Filter by filter, as memory lists a minute.
        let mut counters: Vec<(AdId, Filter, u64)> = Vec::new();
        for filter in [us, Filter::ALL] {
            counters.extend((0..250).map(|i| (ad(i), filter, u64::from(i) * 1000)));
        }
        let publication = feed.counts(60_000, Publication::Close, packed(&counters));
        assert!(
            publication.chunks > 1,
            "500 counters need several 4 KiB chunks"
        );
        assert_eq!(publication.first_version, 42);
        assert_eq!(
            feed.last_version(),
            41 + u64::from(publication.chunks),
            "the next publication is numbered after every chunk"
        );
        let seen = rendered(&publication, 3, 4096);
        // Sorted by ad id (as text), then filter (all clicks first).
        let mut want: Vec<(String, Value, u64)> = counters
            .iter()
            .map(|(a, f, n)| (a.to_string(), filter_json(f), *n))
            .collect();
        want.sort_by(|a, b| (&a.0, a.1 != json!({})).cmp(&(&b.0, b.1 != json!({}))));
        assert_eq!(seen, want);
        let messages = publication.render(3).unwrap();
        assert_eq!(messages[0].msg_id(3), "adclick-agg-p3-42");
        let v: Value = serde_json::from_slice(&messages[0].payload).unwrap();
        assert_eq!(v["minute"], "1970-01-01T00:01:00Z");
        // What the outbox holds renders to the same bytes every time.
        assert_eq!(publication.render(3).unwrap(), messages);
    }

    #[test]
    fn entry_sizes_are_those_rendered() {
        for filter in filters() {
            let text = filter_json(&filter).to_string();
            for count in [0, 9, 10, 99, 12_345, u64::MAX] {
                let rendered =
                    format!(r#"{{"ad_id":"{}","filter":{text},"count":{count}}}"#, ad(7));
                assert_eq!(entry_len(4, text.len(), count), rendered.len());
            }
        }
    }

    proptest::proptest! {
        /// Whatever the counters, their order and the payload limit: exactly
        /// the decided number of chunks, each under the limit, every counter
        /// once, sorted.
        #[test]
        fn any_publication_renders_in_its_chunks(
            counters in proptest::collection::vec((0u32..300, 0usize..5, proptest::num::u64::ANY), 0..400),
            max_payload in 4096usize..20_000,
            first in 1u64..1_000,
        ) {
            let filters = filters();
            let mut unique: FastMap<(AdId, Filter), u64> = FastMap::default();
            for (a, f, n) in counters {
                unique.insert((ad(a), filters[f]), n);
            }
            let counters: Vec<(AdId, Filter, u64)> =
                unique.into_iter().map(|((a, f), n)| (a, f, n)).collect();
            let mut feed = AggregateFeed::new(0, first - 1, max_payload);
            let publication = feed.counts(MINUTE_MS, Publication::Correction, packed(&counters));
            let seen = rendered(&publication, 0, max_payload);
            let mut want = counters.clone();
            sort_for_feed(&mut want);
            let want: Vec<(String, Value, u64)> =
                want.iter().map(|(a, f, n)| (a.to_string(), filter_json(f), *n)).collect();
            proptest::prop_assert_eq!(seen, want);
        }
    }

    #[test]
    fn damaged_counters_are_refused() {
        let mut feed = AggregateFeed::new(0, 0, 4096);
        let mut p = feed.counts(0, Publication::Close, packed(&[(ad(1), Filter::ALL, 300)]));
        let bytes = p.counters.to_vec();
        for cut in 1..bytes.len() {
            p.counters = Bytes::copy_from_slice(&bytes[..cut]);
            assert!(p.render(0).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn extra_dimension_values_are_rendered_as_text() {
        use crate::click::FilterQuery;
        use crate::dimension::{intern, ExtraCodes};
        let filter = Filter {
            country: Country::parse("DE"),
            extras: ExtraCodes::from_codes([
                intern("f_device", "ios"),
                intern("f_placement", "a&b"),
            ])
            .unwrap(),
            ..Filter::ALL
        };
        assert_eq!(
            filter_json(&filter),
            json!({"country": "DE", "f_device": "ios", "f_placement": "a&b"})
        );
        // The same object a REST answer echoes for the query that resolves to it.
        let asked = FilterQuery {
            country: Country::parse("de"),
            ip_type: None,
            extras: vec![
                ("f_placement".into(), "a&b".into()),
                ("f_device".into(), "ios".into()),
            ],
        };
        assert_eq!(asked.resolve(), Some(filter));
        let echoed: serde_json::Map<String, Value> = asked
            .entries()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        assert_eq!(filter_json(&filter), Value::Object(echoed));
    }

    #[test]
    fn an_empty_minute_is_one_message() {
        let mut feed = AggregateFeed::new(0, 0, 4096);
        let p = feed.counts(0, Publication::Close, CountersPacker::default());
        assert_eq!(p.chunks, 1);
        let m = p.render(0).unwrap();
        assert_eq!(m.len(), 1);
        let v: Value = serde_json::from_slice(&m[0].payload).unwrap();
        assert_eq!(v["counts"], json!([]));
        assert_eq!(v["final"], false);
    }

    #[test]
    fn top_messages_name_their_window() {
        let mut feed = AggregateFeed::new(1, 0, 4096);
        let m = feed.top(
            5,
            10 * MINUTE_MS,
            Publication::Final,
            &[(ad(7), 9), (ad(3), 4)],
        );
        assert_eq!(m.subject, "agg.top.5");
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["from"], "1970-01-01T00:06:00Z");
        assert_eq!(v["to"], "1970-01-01T00:11:00Z");
        assert_eq!(v["ads"][0], json!({"ad_id": "ad-7", "count": 9}));
    }

    #[test]
    fn stored_tops_round_trip() {
        let ads = vec![(ad(1), 10), (ad(22), 3)];
        assert_eq!(decode_top(&encode_top(&ads)), Some(ads));
        assert_eq!(decode_top(""), Some(vec![]));
        assert_eq!(decode_top("ad-1:x"), None);
    }
}
