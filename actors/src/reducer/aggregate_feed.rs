//! The output feed: what a partition publishes to the `ADCLICK_AGG` stream
//! so billing and bidders can subscribe instead of polling.
//!
//! For each minute with clicks, a partition publishes (see `docs/FEED.md`):
//! - `agg.counts.<partition>`, kind `close`: every counter of the minute when
//!   the watermark closes it; kind `correction`: the counters a late click
//!   changed, with their new totals; kind `final`: every counter again once
//!   the minute can no longer change.
//! - `agg.top.<window>`, kinds `close` and `final`: the partition's top-N
//!   of the window that ends with that minute, over all clicks.
//!
//! Every message has a `version`, increasing per partition, and the message
//! id `adclick-agg-p<partition>-<version>`. Messages are decided by the
//! reducer, committed to the partition's outbox with the batch that caused
//! them, and published after the commit, so a replay republishes the same
//! ids and JetStream drops the repeats.

use crate::click::{AdId, Filter};
use crate::fast_hash::FastMap;
use crate::time::{format_rfc3339, MINUTE_MS};
use bytes::Bytes;
use serde_json::{json, Value};

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
}

impl Publication {
    fn as_str(self) -> &'static str {
        match self {
            Publication::Close => "close",
            Publication::Correction => "correction",
            Publication::Final => "final",
        }
    }
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

    /// The counters of `minute` as one or more messages, each under the
    /// payload limit (chunk `i` of `n`). An empty list still gives one message.
    pub fn counts(
        &mut self,
        minute: i64,
        publication: Publication,
        counters: &[(AdId, Filter, u64)],
    ) -> Vec<FeedMessage> {
        // Each distinct filter is rendered once (a minute has tens of
        // thousands of counters but few filters); ad ids need no escaping
        // (`[A-Za-z0-9_-]`). This runs on the reducer's thread, between queries.
        let mut filters: FastMap<Filter, String> = FastMap::default();
        let entries: Vec<String> = counters
            .iter()
            .map(|(ad, filter, count)| {
                let filter_text = filters
                    .entry(*filter)
                    .or_insert_with(|| filter_json(filter).to_string());
                format!(r#"{{"ad_id":"{ad}","filter":{filter_text},"count":{count}}}"#)
            })
            .collect();
        // Cut the entries into chunks whose JSON stays under the limit,
        // leaving room for the envelope.
        let budget = self.max_payload - 512;
        let mut chunks: Vec<&[String]> = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, entry) in entries.iter().enumerate() {
            if size + entry.len() + 1 > budget && i > start {
                chunks.push(&entries[start..i]);
                (start, size) = (i, 0);
            }
            size += entry.len() + 1;
        }
        chunks.push(&entries[start..]);
        let n = chunks.len();
        let subject = format!("agg.counts.{}", self.partition);
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let version = self.take_version();
                // The envelope's values need no escaping (numbers, RFC 3339,
                // fixed words); the entries were rendered by serde_json.
                let payload = format!(
                    r#"{{"partition":{},"minute":"{}","kind":"{}","final":{},"version":{version},"chunk":{i},"chunks":{n},"counts":[{}]}}"#,
                    self.partition,
                    format_rfc3339(minute),
                    publication.as_str(),
                    publication == Publication::Final,
                    chunk.join(","),
                );
                FeedMessage {
                    version,
                    subject: subject.clone(),
                    payload: Bytes::from(payload),
                }
            })
            .collect()
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

    #[test]
    fn counts_are_chunked_under_the_limit_and_lose_nothing() {
        let mut feed = AggregateFeed::new(3, 41, 4096);
        let us = Filter {
            country: Country::parse("US"),
            ..Filter::ALL
        };
        let counters: Vec<(AdId, Filter, u64)> = (0..500)
            .map(|i| {
                (
                    ad(i),
                    if i % 2 == 0 { Filter::ALL } else { us },
                    u64::from(i),
                )
            })
            .collect();
        let messages = feed.counts(60_000, Publication::Close, &counters);
        assert!(messages.len() > 1, "500 counters need several 4 KiB chunks");
        let mut seen = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            assert!(
                m.payload.len() <= 4096,
                "chunk {i} is {} bytes",
                m.payload.len()
            );
            assert_eq!(m.subject, "agg.counts.3");
            assert_eq!(m.version, 42 + i as u64);
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(v["chunk"], i);
            assert_eq!(v["chunks"], messages.len());
            assert_eq!(v["kind"], "close");
            assert_eq!(v["minute"], "1970-01-01T00:01:00Z");
            for c in v["counts"].as_array().unwrap() {
                seen.push((
                    c["ad_id"].as_str().unwrap().to_string(),
                    c["filter"].clone(),
                    c["count"].as_u64().unwrap(),
                ));
            }
        }
        let want: Vec<(String, Value, u64)> = counters
            .iter()
            .map(|(a, f, n)| (a.to_string(), filter_json(f), *n))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(feed.last_version(), 41 + messages.len() as u64);
        assert_eq!(messages[0].msg_id(3), "adclick-agg-p3-42");
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
        let m = feed.counts(0, Publication::Final, &[]);
        assert_eq!(m.len(), 1);
        let v: Value = serde_json::from_slice(&m[0].payload).unwrap();
        assert_eq!(v["counts"], json!([]));
        assert_eq!(v["final"], true);
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
