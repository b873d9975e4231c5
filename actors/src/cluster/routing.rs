//! Questions to partitions owned by another member, over NATS request/reply.
//!
//! The member running a partition answers on `adclick.query.p<N>` (queue
//! group `adclick`) for as long as it runs it; any member asks there for a
//! partition it does not run. Nobody answering means the partition is moving
//! (503), never an empty answer. The messages are small JSON documents:
//!
//! ```text
//! ask:    {"kind":"count","ad":"ad-7","filter":{…},"from":…,"to":…}
//!         {"kind":"top","filter":{…},"from":…,"to":…,"n":10}
//! answer: {"ok":{"value":12,"watermark":…}}   {"ok":{"value":[["ad-7",12],…],"watermark":…}}
//!         {"error":{"kind":"not_ready"|"restarting"|"timeout"|"storage","message":"…"}}
//! ```

use crate::click::{AdId, Country, FilterQuery, IpType};
use crate::partition::directory::PartitionEntry;
use crate::partitions::{ask_reducer, QueryError};
use crate::reducer::{Answer, CountQuery, ReducerMsg, TopQuery};
use crate::time::event_clock::NO_WATERMARK;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The subject a partition's owner answers on.
pub fn query_subject(partition: u32) -> String {
    format!("adclick.query.p{partition}")
}

/// A question for one partition.
#[derive(Clone, Debug)]
pub enum Question {
    /// Clicks of one ad in a range.
    Count(CountQuery),
    /// The partition's top-N of a range.
    Top(TopQuery),
}

/// A partition's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// To a count.
    Count(Answer<u64>),
    /// To a top-N.
    Top(Answer<Vec<(AdId, u64)>>),
}

/// The cluster side of [`crate::partitions::Partitions`]: asking other
/// members, answering them, and what the leases say of partitions run
/// elsewhere.
pub struct Remote {
    client: async_nats::Client,
    /// Each partition's watermark as its owner last reported it.
    watermarks: Vec<AtomicI64>,
    /// The partitions this member should own now.
    assigned: Mutex<Vec<u32>>,
    /// Each partition's lease holder as last read (`None`: no lease).
    owners: Mutex<Vec<Option<String>>>,
}

impl Remote {
    /// Asking and answering over `client`.
    pub fn new(client: async_nats::Client, partitions: u32) -> Remote {
        Remote {
            client,
            watermarks: (0..partitions)
                .map(|_| AtomicI64::new(NO_WATERMARK))
                .collect(),
            assigned: Mutex::default(),
            owners: Mutex::new(vec![None; partitions as usize]),
        }
    }

    /// Notes a watermark an owner reported.
    pub fn set_watermark(&self, partition: u32, watermark: i64) {
        if let Some(w) = self.watermarks.get(partition as usize) {
            w.fetch_max(watermark, Ordering::AcqRel);
        }
    }

    /// The watermark its owner last reported.
    pub fn watermark(&self, partition: u32) -> i64 {
        self.watermarks
            .get(partition as usize)
            .map_or(NO_WATERMARK, |w| w.load(Ordering::Acquire))
    }

    /// Notes who holds `partition`'s lease (`None`: nobody).
    pub fn set_owner(&self, partition: u32, member: Option<String>) {
        if let Ok(mut owners) = self.owners.lock() {
            if let Some(owner) = owners.get_mut(partition as usize) {
                *owner = member;
            }
        }
    }

    /// Who held `partition`'s lease when the leases were last read.
    pub fn owner(&self, partition: u32) -> Option<String> {
        self.owners
            .lock()
            .ok()
            .and_then(|owners| owners.get(partition as usize).cloned().flatten())
    }

    /// The partitions this member should own now.
    pub fn assigned(&self) -> Vec<u32> {
        self.assigned.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Sets them.
    pub fn set_assigned(&self, partitions: Vec<u32>) {
        if let Ok(mut assigned) = self.assigned.lock() {
            *assigned = partitions;
        }
    }

    /// Asks `partition`'s owner, waiting at most `timeout`.
    pub async fn ask(
        &self,
        partition: u32,
        question: Question,
        timeout: Duration,
    ) -> Result<Reply, QueryError> {
        let request = async_nats::Request::new()
            .payload(encode_question(&question).into())
            .timeout(Some(timeout));
        let answer = self
            .client
            .send_request(query_subject(partition), request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::client::RequestErrorKind::TimedOut => QueryError::Timeout {
                    partition,
                    after: timeout,
                },
                // Nobody runs it right now: it is moving.
                _ => QueryError::NotReady {
                    partitions: vec![partition],
                },
            })?;
        decode_reply(partition, &question, &answer.payload, timeout)
    }

    /// Answers other members' questions for `partition` from this process's
    /// reducer, until the task is aborted (when the partition stops here).
    pub fn answer(
        &self,
        partition: u32,
        entry: Arc<PartitionEntry>,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        tokio::spawn(async move {
            let subject = query_subject(partition);
            // Answered side by side, a few at a time: one slow question
            // (a long range read from the file) does not hold up the others.
            let turns = Arc::new(tokio::sync::Semaphore::new(ANSWERS_AT_ONCE));
            let mut backoff = Duration::from_millis(100);
            loop {
                let mut asks = match client
                    .queue_subscribe(subject.clone(), "adclick".into())
                    .await
                {
                    Ok(asks) => asks,
                    Err(e) => {
                        tracing::warn!(partition, "cannot answer for the partition yet: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                while let Some(message) = asks.next().await {
                    let Some(reply_to) = message.reply else {
                        continue;
                    };
                    let Ok(turn) = turns.clone().acquire_owned().await else {
                        return;
                    };
                    let (client, entry) = (client.clone(), entry.clone());
                    tokio::spawn(async move {
                        let answer = match decode_question(&message.payload) {
                            Some(q) => answer_one(partition, &entry, q, timeout).await,
                            None => error_json("bad_request", "unreadable question"),
                        };
                        let _ = client.publish(reply_to, answer.to_string().into()).await;
                        drop(turn);
                    });
                }
            }
        })
    }
}

/// Questions one member answers for one partition at the same time.
const ANSWERS_AT_ONCE: usize = 16;

async fn answer_one(
    partition: u32,
    entry: &PartitionEntry,
    question: Question,
    timeout: Duration,
) -> Value {
    let Some(reducer) = entry.reducer() else {
        return error_json("not_ready", "the partition is still recovering");
    };
    let result = match question {
        Question::Count(q) => ask_reducer(&reducer, partition, timeout, |r| {
            ReducerMsg::Count(q, r)
        })
        .await
        .map(|a| json!({"value": a.value, "watermark": a.watermark, "reconciled": a.reconciled})),
        Question::Top(q) => ask_reducer(&reducer, partition, timeout, |r| ReducerMsg::Top(q, r))
            .await
            .map(|a| {
                let ads: Vec<Value> = a
                    .value
                    .iter()
                    .map(|(ad, n)| json!([ad.as_str(), n]))
                    .collect();
                json!({"value": ads, "watermark": a.watermark, "reconciled": a.reconciled})
            }),
    };
    match result {
        Ok(ok) => json!({ "ok": ok }),
        Err(e) => {
            let kind = match &e {
                QueryError::Timeout { .. } => "timeout",
                QueryError::Storage { .. } | QueryError::StorageElsewhere { .. } => "storage",
                QueryError::Restarting { .. } => "restarting",
                QueryError::NotServed { .. } | QueryError::NotReady { .. } => "not_ready",
            };
            error_json(kind, &e.to_string())
        }
    }
}

fn error_json(kind: &str, message: &str) -> Value {
    json!({"error": {"kind": kind, "message": message}})
}

fn filter_json(filter: &FilterQuery) -> Value {
    json!({
        "country": filter.country.map(|c| c.as_str().to_string()),
        "ip_type": filter.ip_type.map(|t| t.as_str()),
        "extras": filter.extras,
    })
}

fn filter_from(v: &Value) -> Option<FilterQuery> {
    let text = |key: &str| v.get(key).and_then(Value::as_str);
    let country = match text("country") {
        Some(c) => Some(Country::parse(c)?),
        None => None,
    };
    let ip_type = match text("ip_type") {
        Some(t) => Some(IpType::parse(t)?),
        None => None,
    };
    let extras = v
        .get("extras")?
        .as_array()?
        .iter()
        .map(|pair| {
            let pair = pair.as_array()?;
            Some((
                pair.first()?.as_str()?.to_string(),
                pair.get(1)?.as_str()?.to_string(),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(FilterQuery {
        country,
        ip_type,
        extras,
    })
}

/// The wire form of a question.
pub fn encode_question(question: &Question) -> String {
    match question {
        Question::Count(q) => json!({
            "kind": "count", "ad": q.ad.as_str(), "filter": filter_json(&q.filter),
            "from": q.from, "to": q.to,
        }),
        Question::Top(q) => json!({
            "kind": "top", "filter": filter_json(&q.filter),
            "from": q.from, "to": q.to, "n": q.n,
        }),
    }
    .to_string()
}

/// A question from its wire form; `None` if unreadable.
pub fn decode_question(bytes: &[u8]) -> Option<Question> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let filter = filter_from(v.get("filter")?)?;
    let (from, to) = (v.get("from")?.as_i64()?, v.get("to")?.as_i64()?);
    match v.get("kind")?.as_str()? {
        "count" => Some(Question::Count(CountQuery {
            ad: AdId::parse(v.get("ad")?.as_str()?)?,
            filter,
            from,
            to,
        })),
        "top" => Some(Question::Top(TopQuery {
            filter,
            from,
            to,
            n: usize::try_from(v.get("n")?.as_u64()?).ok()?,
        })),
        _ => None,
    }
}

/// A reply from its wire form, as the answer to `question` (asked with
/// `timeout`, which a remote timeout reports).
pub fn decode_reply(
    partition: u32,
    question: &Question,
    bytes: &[u8],
    timeout: Duration,
) -> Result<Reply, QueryError> {
    let unreadable = || QueryError::StorageElsewhere {
        partition,
        message: "an unreadable answer from the partition's owner".into(),
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|_| unreadable())?;
    if let Some(error) = v.get("error") {
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        return Err(match error.get("kind").and_then(Value::as_str) {
            Some("timeout") => QueryError::Timeout {
                partition,
                after: timeout,
            },
            Some("restarting") => QueryError::Restarting { partition },
            Some("storage") => QueryError::StorageElsewhere {
                partition,
                message: message.to_string(),
            },
            _ => QueryError::NotReady {
                partitions: vec![partition],
            },
        });
    }
    let ok = v.get("ok").ok_or_else(unreadable)?;
    let watermark = ok
        .get("watermark")
        .and_then(Value::as_i64)
        .ok_or_else(unreadable)?;
    let value = ok.get("value").ok_or_else(unreadable)?;
    // Absent from members that predate repairs: nothing reconciled.
    let reconciled = ok
        .get("reconciled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match question {
        Question::Count(_) => Ok(Reply::Count(Answer {
            value: value.as_u64().ok_or_else(unreadable)?,
            watermark,
            reconciled,
        })),
        Question::Top(_) => {
            let ads = value
                .as_array()
                .ok_or_else(unreadable)?
                .iter()
                .map(|pair| {
                    let pair = pair.as_array()?;
                    Some((
                        AdId::parse(pair.first()?.as_str()?)?,
                        pair.get(1)?.as_u64()?,
                    ))
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(unreadable)?;
            Ok(Reply::Top(Answer {
                value: ads,
                watermark,
                reconciled,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_travel_unchanged() {
        let filter = FilterQuery {
            country: Country::parse("US"),
            ip_type: Some(IpType::V6),
            extras: vec![("device".into(), "ios".into())],
        };
        let count = Question::Count(CountQuery {
            ad: AdId::parse("ad-7").unwrap(),
            filter: filter.clone(),
            from: 60_000,
            to: 180_000,
        });
        let top = Question::Top(TopQuery {
            filter: FilterQuery::default(),
            from: 0,
            to: 60_000,
            n: 10,
        });
        for q in [count, top] {
            let back = decode_question(encode_question(&q).as_bytes()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{q:?}"));
        }
        assert!(decode_question(b"{\"kind\":\"count\"}").is_none());
        assert!(decode_question(b"not json").is_none());
    }

    #[test]
    fn replies_and_errors_read_back() {
        let q = Question::Top(TopQuery {
            filter: FilterQuery::default(),
            from: 0,
            to: 60_000,
            n: 2,
        });
        let ok = br#"{"ok":{"value":[["a",3],["b",2]],"watermark":59000}}"#;
        assert_eq!(
            decode_reply(4, &q, ok, Duration::ZERO).unwrap(),
            Reply::Top(Answer {
                value: vec![
                    (AdId::parse("a").unwrap(), 3),
                    (AdId::parse("b").unwrap(), 2)
                ],
                watermark: 59_000,
                reconciled: false,
            })
        );
        let storage = br#"{"error":{"kind":"storage","message":"disk"}}"#;
        assert!(matches!(
            decode_reply(4, &q, storage, Duration::ZERO),
            Err(QueryError::StorageElsewhere { partition: 4, .. })
        ));
        let moving = br#"{"error":{"kind":"not_ready","message":"x"}}"#;
        assert!(matches!(
            decode_reply(4, &q, moving, Duration::ZERO),
            Err(QueryError::NotReady { .. })
        ));
        assert!(matches!(
            decode_reply(4, &q, b"{}", Duration::ZERO),
            Err(QueryError::StorageElsewhere { .. })
        ));
    }
}
