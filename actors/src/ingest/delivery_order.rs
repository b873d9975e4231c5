//! Which deliveries of the partition's consumer are new, redelivered, or
//! proof that one was lost.
//!
//! The consumer is created afresh at every start, so it numbers its
//! deliveries 1, 2, 3…. A hole in those numbers means a message was
//! delivered but never reached ingest (lost in transit): AckAll up to a
//! later message would acknowledge it without its click ever being counted,
//! so the partition must rebuild from its checkpoint instead. A stream
//! sequence at or below the last one passed on is a redelivery of something
//! already in the chain, and is skipped.

/// Where the partition's deliveries stand.
#[derive(Clone, Copy, Debug)]
pub struct DeliveryOrder {
    /// The consumer sequence the next delivery must carry.
    next_delivery: u64,
    /// The last stream sequence passed on (the checkpoint's, at start).
    last_seq: u64,
}

/// What a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A message not passed on before: decode it.
    New,
    /// A message already passed on (or committed): skip it.
    Redelivered,
}

/// A delivery arrived with a consumer sequence past the expected one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "delivery {got} arrived where {expected} was expected: a delivery was lost in transit; \
     rebuilding from the checkpoint"
)]
pub struct LostDelivery {
    /// The consumer sequence that arrived.
    pub got: u64,
    /// The one that should have.
    pub expected: u64,
}

impl DeliveryOrder {
    /// A fresh consumer, after the checkpoint's last sequence `last_seq`.
    pub fn resume(last_seq: u64) -> DeliveryOrder {
        DeliveryOrder {
            next_delivery: 1,
            last_seq,
        }
    }

    /// Takes the delivery numbered `consumer_seq` of the message at
    /// `stream_seq`.
    pub fn take(&mut self, consumer_seq: u64, stream_seq: u64) -> Result<Delivery, LostDelivery> {
        if consumer_seq != self.next_delivery {
            return Err(LostDelivery {
                got: consumer_seq,
                expected: self.next_delivery,
            });
        }
        self.next_delivery += 1;
        if stream_seq <= self.last_seq {
            return Ok(Delivery::Redelivered);
        }
        self.last_seq = stream_seq;
        Ok(Delivery::New)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_in_order_pass_on_each_new_message_once() {
        let mut order = DeliveryOrder::resume(10);
        // The checkpoint had 10: a consumer starting at 9 redelivers 9 and 10.
        assert_eq!(order.take(1, 9), Ok(Delivery::Redelivered));
        assert_eq!(order.take(2, 10), Ok(Delivery::Redelivered));
        assert_eq!(order.take(3, 11), Ok(Delivery::New));
        // Stream sequences may skip (other partitions' messages), deliveries not.
        assert_eq!(order.take(4, 17), Ok(Delivery::New));
        assert_eq!(order.take(5, 12), Ok(Delivery::Redelivered));
    }

    #[test]
    fn a_hole_in_the_deliveries_is_a_lost_message() {
        let mut order = DeliveryOrder::resume(0);
        assert_eq!(order.take(1, 1), Ok(Delivery::New));
        assert_eq!(
            order.take(3, 3),
            Err(LostDelivery {
                got: 3,
                expected: 2
            })
        );
        // Nothing moved: the expected delivery is still 2.
        assert_eq!(order.take(2, 2), Ok(Delivery::New));
    }
}
