//! The partition's durable pull consumer, read through a plain NATS
//! subscription.
//!
//! A pull consumer delivers to whatever inbox a pull request names:
//! ingest subscribes to an inbox of its own, asks for `batch` messages at a
//! time on `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`, and reads each
//! delivery's stream and consumer sequences off its `$JS.ACK…` reply
//! subject ([`AckSubject`]). This is what async-nats' pull `Stream` does
//! too, but that wraps every message in a `jetstream::Message` holding a
//! clone of the JetStream context (an owned prefix string, a boxed future
//! and a dozen reference counts), and parses the publish time of each; at
//! hundreds of thousands of messages a second that was a tenth of
//! adclick's CPU (docs/PERFORMANCE.md). Here a message costs what the core
//! client costs, and the acknowledgement is one reply subject kept per batch
//! ([`crate::ack::AckAll`]).
//!
//! What stays the same: the server's flow (requests of `batch` messages,
//! the next one sent once half a request or less is still owed, expiring
//! after 30 s with an idle heartbeat every 5 s), and the status messages' meaning (a request
//! that ended frees what it still owed; a deleted or missing consumer is an
//! error, and the supervisor rebuilds the partition from its checkpoint).

use crate::ack::AckAll;
use async_nats::{Client, Message, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long the server keeps a pull request waiting for messages.
const EXPIRES: Duration = Duration::from_secs(30);
/// How often the server says it is alive while a request waits with nothing
/// to deliver.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How many times [`PullSubscription::next`] lets the connection task run
/// to gather more of a batch before handing on what it has. Each turn costs
/// a microsecond or so; batches grow from ~110 deliveries to ~250 in a
/// drain, and every batch costs the actors a hand-off and the writer a
/// share of a commit. A turn also renews tokio's budget for this task: the
/// inbox answers "nothing ready" after ~128 messages in one turn, so a batch
/// holds at most about (turns + 1) x 128 deliveries.
const GATHER_YIELDS: usize = 2;

/// Why reading the consumer failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The inbox subscription could not be made.
    #[error("cannot subscribe to the pull inbox: {0}")]
    Subscribe(String),
    /// A pull request could not be sent.
    #[error("cannot send a pull request: {0}")]
    Request(String),
    /// The server ended the consumer, or refused the request for good.
    #[error("the consumer refused the pull: {status} {description}")]
    Refused {
        /// The status code.
        status: u16,
        /// The server's description.
        description: String,
    },
    /// A delivery without a JetStream reply subject.
    #[error("a delivery on `{subject}` has no JetStream ack subject ({reply:?})")]
    NotJetStream {
        /// The message's subject.
        subject: String,
        /// Its reply subject, if any.
        reply: Option<String>,
    },
    /// The subscription closed (the client shut down).
    #[error("the pull inbox subscription closed")]
    Closed,
}

/// The sequences a JetStream delivery carries in its reply subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckSubject {
    /// The message's sequence in the stream.
    pub stream_sequence: u64,
    /// The delivery's number in the consumer (1, 2, … for a fresh consumer).
    pub consumer_sequence: u64,
}

impl AckSubject {
    /// Reads `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`,
    /// or the longer form with a domain and account hash first
    /// (`$JS.ACK.<domain>.<hash>.<stream>.…`, and any tokens after), as
    /// JetStream's ADR-15 defines them. Nothing else.
    pub fn parse(reply: &str) -> Option<AckSubject> {
        let rest = reply.strip_prefix("$JS.ACK.")?.as_bytes();
        // Where each token starts (stream and consumer names hold no dots,
        // so tokens count exactly); read once, by hand: this runs per message.
        let mut starts = [0usize; 10];
        let mut n = 1;
        for (i, b) in rest.iter().enumerate() {
            if *b == b'.' {
                if n < starts.len() {
                    starts[n] = i + 1;
                }
                n += 1;
            }
        }
        let first = match n {
            7 => 2,   // stream, consumer, then the numbers
            9.. => 4, // domain, account hash, stream, consumer, then the numbers
            _ => return None,
        };
        let token = |k: usize| {
            let end = if k + 1 < n {
                starts[k + 1] - 1
            } else {
                rest.len()
            };
            &rest[starts[k]..end]
        };
        // delivered, stream sequence, consumer sequence, published, pending
        let mut numbers = [0u64; 5];
        for (slot, k) in numbers.iter_mut().zip(first..first + 5) {
            *slot = decimal(token(k))?;
        }
        Some(AckSubject {
            stream_sequence: numbers[1],
            consumer_sequence: numbers[2],
        })
    }
}

/// An unsigned decimal that fits 64 bits; nothing else (no sign, not empty).
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// How many messages the outstanding pull requests may still deliver: the
/// pure bookkeeping of [`PullSubscription`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owed {
    /// Messages requested and neither delivered nor released by the server.
    pub messages: usize,
    /// Messages one request asks for.
    pub batch: usize,
}

impl Owed {
    /// Whether another request should go out: half a request or less is
    /// owed, so the next one arrives before the server runs dry.
    pub fn wants_request(&self) -> bool {
        self.messages <= self.batch / 2
    }

    /// A request went out.
    pub fn requested(&mut self) {
        self.messages += self.batch;
    }

    /// A message arrived.
    pub fn delivered(&mut self) {
        self.messages = self.messages.saturating_sub(1);
    }

    /// A request ended (expired, or ended by the server) still owing
    /// `unsent` messages (`Nats-Pending-Messages`; a whole request when the
    /// server does not say).
    pub fn ended(&mut self, unsent: Option<usize>) {
        self.messages = self.messages.saturating_sub(unsent.unwrap_or(self.batch));
    }

    /// The server may have forgotten every request (a reconnect, or no
    /// heartbeat): ask afresh. Extra deliveries this may cause are bounded by
    /// the consumer's `max_ack_pending`.
    pub fn forget(&mut self) {
        self.messages = 0;
    }
}

/// A durable pull consumer read through a plain subscription.
pub struct PullSubscription {
    client: Client,
    inbox: Subject,
    subscriber: Subscriber,
    /// Deliveries taken off the inbox, not yet returned.
    gathered: Vec<Message>,
    request_subject: Subject,
    request: Bytes,
    owed: Owed,
    /// When the server was last heard from (a message or a status).
    last_heard: Instant,
    /// The client's connection count when requests were last made: a
    /// reconnect means the server may have dropped them.
    connects: u64,
}

/// One pull's deliveries, statuses already handled.
pub type Deliveries = Vec<Message>;

impl PullSubscription {
    /// Subscribes an inbox to `consumer` of `stream` (JetStream API prefix
    /// `api_prefix`, `$JS.API` by default), asking for `batch` messages a
    /// request. Nothing is requested until [`PullSubscription::next`].
    pub async fn open(
        client: Client,
        api_prefix: &str,
        stream: &str,
        consumer: &str,
        batch: usize,
    ) -> Result<PullSubscription, PullError> {
        let inbox = Subject::from(client.new_inbox());
        let subscriber = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| PullError::Subscribe(e.to_string()))?;
        let request = format!(
            "{{\"batch\":{batch},\"expires\":{},\"idle_heartbeat\":{}}}",
            EXPIRES.as_nanos(),
            HEARTBEAT.as_nanos()
        );
        Ok(PullSubscription {
            connects: client.statistics().connects.load(Ordering::Relaxed),
            client,
            inbox,
            subscriber,
            gathered: Vec::with_capacity(batch),
            request_subject: Subject::from(format!(
                "{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
            )),
            request: Bytes::from(request),
            owed: Owed { messages: 0, batch },
            last_heard: Instant::now(),
        })
    }

    /// An acknowledgement of the message at `stream_sequence`, delivered
    /// with `reply`, and of everything below it.
    pub fn ack_all(&self, reply: Subject, stream_sequence: u64) -> AckAll {
        AckAll::new(self.client.clone(), reply, stream_sequence)
    }

    /// Whether deliveries were gathered by a [`PullSubscription::next`] that
    /// did not finish (its wait was cancelled).
    pub fn has_gathered(&self) -> bool {
        !self.gathered.is_empty()
    }

    /// The deliveries a cancelled [`PullSubscription::next`] gathered.
    pub fn take_gathered(&mut self) -> Deliveries {
        std::mem::replace(&mut self.gathered, Vec::with_capacity(self.owed.batch))
    }

    /// Waits for the next deliveries: at least one, at most `batch`. Once one
    /// has arrived, it takes whatever else is ready, giving the connection
    /// task [`GATHER_YIELDS`] turns to route more. Status messages are
    /// handled here and never returned. Cancel-safe: what was gathered stays
    /// for the next call.
    pub async fn next(&mut self) -> Result<Deliveries, PullError> {
        loop {
            self.request_if_owed_little().await?;
            if self.gathered.is_empty() {
                let Some(message) = self.subscriber.next().await else {
                    return Err(PullError::Closed);
                };
                // Once a wait, not per message: the clock read showed in profiles.
                self.last_heard = Instant::now();
                self.take_in(message)?;
                continue;
            }
            let mut yields = 0;
            while self.gathered.len() < self.owed.batch {
                match self.subscriber.next().now_or_never() {
                    Some(Some(message)) => self.take_in(message)?,
                    Some(None) => return Err(PullError::Closed),
                    None if yields < GATHER_YIELDS => {
                        yields += 1;
                        self.request_if_owed_little().await?;
                        tokio::task::yield_now().await;
                    }
                    None => break,
                }
            }
            let next = Vec::with_capacity(self.owed.batch);
            return Ok(std::mem::replace(&mut self.gathered, next));
        }
    }

    /// One message off the inbox: a delivery is gathered, a status handled.
    fn take_in(&mut self, message: Message) -> Result<(), PullError> {
        match message.status {
            None | Some(StatusCode::OK) => {
                self.owed.delivered();
                self.gathered.push(message);
                Ok(())
            }
            Some(status) => self.status(status, &message),
        }
    }

    /// Called when nothing arrived for a while: if the server has not been
    /// heard from for two heartbeats while requests were owed, or the
    /// connection was re-established, the requests are assumed lost and
    /// asked for again.
    pub async fn check_alive(&mut self) -> Result<(), PullError> {
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        let silent = self.owed.messages > 0 && self.last_heard.elapsed() > 2 * HEARTBEAT;
        if connects != self.connects || silent {
            self.connects = connects;
            self.owed.forget();
            self.last_heard = Instant::now();
        }
        self.request_if_owed_little().await
    }

    async fn request_if_owed_little(&mut self) -> Result<(), PullError> {
        if !self.owed.wants_request() {
            return Ok(());
        }
        self.client
            .publish_with_reply(
                self.request_subject.clone(),
                self.inbox.clone(),
                self.request.clone(),
            )
            .await
            .map_err(|e| PullError::Request(e.to_string()))?;
        self.owed.requested();
        Ok(())
    }

    /// What a status message means for the outstanding requests.
    fn status(&mut self, status: StatusCode, message: &Message) -> Result<(), PullError> {
        let description = message.description.as_deref().unwrap_or("");
        let refused = || PullError::Refused {
            status: status.as_u16(),
            description: description.to_string(),
        };
        match status {
            StatusCode::IDLE_HEARTBEAT => Ok(()),
            // 404 comes only for no-wait requests, which this never sends;
            // read as a request ended, it is harmless.
            StatusCode::TIMEOUT | StatusCode::NOT_FOUND | StatusCode::REQUEST_TERMINATED => {
                // Ended for good: the consumer is gone, or no request of
                // ours can ever be served (limits, a push consumer).
                if description == "Consumer Deleted"
                    || description == "Consumer is push based"
                    || description.starts_with("Exceeded MaxRequest")
                {
                    return Err(refused());
                }
                let unsent = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse().ok());
                self.owed.ended(unsent);
                Ok(())
            }
            // 503 no responders (the consumer is missing, or JetStream is not
            // answering yet after a restart), 400 and anything unknown: the
            // partition rebuilds from its checkpoint, as it did with
            // async-nats' stream.
            _ => Err(refused()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_both_forms_of_the_ack_subject() {
        assert_eq!(
            AckSubject::parse("$JS.ACK.CLICKS.adclick-p3.1.4711.12.1733580000000000000.99"),
            Some(AckSubject {
                stream_sequence: 4711,
                consumer_sequence: 12
            })
        );
        assert_eq!(
            AckSubject::parse(
                "$JS.ACK._.ACCHASH.CLICKS.adclick-p3.2.4711.12.1733580000000000000.0.tok"
            ),
            Some(AckSubject {
                stream_sequence: 4711,
                consumer_sequence: 12
            })
        );
        assert_eq!(
            AckSubject::parse("$JS.ACK.hub.ACCHASH.CLICKS.c.1.5.6.7.8"),
            Some(AckSubject {
                stream_sequence: 5,
                consumer_sequence: 6
            })
        );
    }

    #[test]
    fn refuses_what_is_not_an_ack_subject() {
        for reply in [
            "",
            "_INBOX.abc",
            "$JS.ACK.CLICKS.c.1.2.3.4",                      // 6 tokens
            "$JS.ACK.CLICKS.c.1.2.3.4.5.6",                  // 8 tokens
            "$JS.ACK.CLICKS.c.1.x.3.4.5",                    // not a number
            "$JS.ACK.CLICKS.c.1..3.4.5",                     // empty
            "$JS.ACK.CLICKS.c.1.-2.3.4.5",                   // signed
            "$JS.ACK.CLICKS.c.1.99999999999999999999.3.4.5", // past u64
        ] {
            assert_eq!(AckSubject::parse(reply), None, "{reply}");
        }
    }

    proptest! {
        #[test]
        fn parse_gives_back_the_sequences(
            stream_seq in any::<u64>(),
            consumer_seq in any::<u64>(),
            delivered in 1u64..10,
            long_form in any::<bool>(),
        ) {
            let reply = if long_form {
                format!("$JS.ACK._.H.S.C.{delivered}.{stream_seq}.{consumer_seq}.1.0.t")
            } else {
                format!("$JS.ACK.S.C.{delivered}.{stream_seq}.{consumer_seq}.1.0")
            };
            prop_assert_eq!(
                AckSubject::parse(&reply),
                Some(AckSubject { stream_sequence: stream_seq, consumer_sequence: consumer_seq })
            );
        }
    }

    proptest! {
        #[test]
        fn parse_takes_any_text_without_panicking(tail in "[0-9a-zA-Z._-]{0,80}") {
            let reply = format!("$JS.ACK.{tail}");
            if let Some(read) = AckSubject::parse(&reply) {
                // Whatever it accepts has the sequences as its digits say.
                let tokens: Vec<&str> = tail.split('.').collect();
                let first = if tokens.len() == 7 { 2 } else { 4 };
                prop_assert_eq!(Some(read.stream_sequence), tokens[first + 1].parse::<u64>().ok());
                prop_assert_eq!(Some(read.consumer_sequence), tokens[first + 2].parse::<u64>().ok());
            }
        }
    }

    #[test]
    fn owed_asks_again_at_half_a_request() {
        let mut owed = Owed {
            messages: 0,
            batch: 1000,
        };
        assert!(owed.wants_request());
        owed.requested();
        assert!(!owed.wants_request());
        for _ in 0..499 {
            owed.delivered();
        }
        assert!(!owed.wants_request(), "501 owed");
        owed.delivered();
        assert!(owed.wants_request(), "500 owed");
        owed.requested();
        assert_eq!(owed.messages, 1500);
        // The older request expires with 500 unsent: 1000 still owed.
        owed.ended(Some(500));
        assert_eq!(owed.messages, 1000);
        // A request ends without saying: a whole one is freed.
        owed.ended(None);
        assert_eq!(owed.messages, 0);
        owed.ended(Some(7));
        assert_eq!(owed.messages, 0, "never below zero");
        owed.requested();
        owed.forget();
        assert_eq!(owed.messages, 0);
    }
}
