//! Acknowledging what a commit made durable.
//!
//! Every partition consumer acknowledges with `AckPolicy::All`: one
//! acknowledgement, sent to the reply subject of the last delivery of what
//! was committed, acknowledges every message at or below its stream
//! sequence. Ingest keeps, per batch, the reply subject of the delivery with
//! the highest stream sequence (a redelivery may come after newer messages);
//! the writer sends the highest it holds after the commit.

use async_nats::{Client, Subject};
use bytes::Bytes;

/// Acknowledges every delivery of a consumer up to and including one.
#[derive(Debug)]
pub struct AckAll {
    client: Client,
    reply: Subject,
    stream_sequence: u64,
}

/// The acknowledgement could not be handed to the client.
#[derive(Debug, thiserror::Error)]
#[error("cannot send the acknowledgement: {0}")]
pub struct AckError(String);

impl AckAll {
    /// The acknowledgement of the delivery of the message at
    /// `stream_sequence`, whose reply subject is `reply`.
    pub fn new(client: Client, reply: Subject, stream_sequence: u64) -> AckAll {
        AckAll {
            client,
            reply,
            stream_sequence,
        }
    }

    /// The stream sequence it acknowledges up to: of two, the writer sends
    /// the higher (the server's AckAll covers only messages at or below it).
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    /// Sends it (an empty message on the reply subject, as JetStream asks).
    pub async fn send(self) -> Result<(), AckError> {
        self.client
            .publish(self.reply, Bytes::new())
            .await
            .map_err(|e| AckError(e.to_string()))
    }
}
