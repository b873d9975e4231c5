//! Acknowledging what a commit made durable.
//!
//! Every partition consumer acknowledges with `AckPolicy::All`: one
//! acknowledgement, sent to the reply subject of the last delivery of what
//! was committed, acknowledges every delivery before it too. Ingest keeps
//! that reply subject per batch; the writer sends it after the commit.

use async_nats::{Client, Subject};
use bytes::Bytes;

/// Acknowledges every delivery of a consumer up to and including one.
#[derive(Debug)]
pub struct AckAll {
    client: Client,
    reply: Subject,
}

/// The acknowledgement could not be handed to the client.
#[derive(Debug, thiserror::Error)]
#[error("cannot send the acknowledgement: {0}")]
pub struct AckError(String);

impl AckAll {
    /// The acknowledgement of the delivery whose reply subject is `reply`.
    pub fn new(client: Client, reply: Subject) -> AckAll {
        AckAll { client, reply }
    }

    /// Sends it (an empty message on the reply subject, as JetStream asks).
    pub async fn send(self) -> Result<(), AckError> {
        self.client
            .publish(self.reply, Bytes::new())
            .await
            .map_err(|e| AckError(e.to_string()))
    }
}
