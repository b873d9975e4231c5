//! Messages that are not counted, and why. Every one is republished to the
//! rejected stream, so nothing is silently dropped.

use bytes::Bytes;

/// Why a message was not counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a valid click (not JSON, missing or bad field, ad id mismatch, too big).
    Invalid(String),
    /// Its minute was already final: too late to correct.
    TooLate,
    /// `ts` further ahead of the wall clock than `max_future_skew`.
    Future,
}

impl RejectReason {
    /// The last token of the subject it is republished on: `rejected.<kind>`.
    pub fn kind(&self) -> &'static str {
        match self {
            RejectReason::Invalid(_) => "invalid",
            RejectReason::TooLate => "too_late",
            RejectReason::Future => "future",
        }
    }

    /// Rebuilds a reason from its stored `kind` and `describe` text.
    pub fn from_stored(kind: &str, text: &str) -> RejectReason {
        match kind {
            "too_late" => RejectReason::TooLate,
            "future" => RejectReason::Future,
            _ => RejectReason::Invalid(text.to_string()),
        }
    }

    /// The human sentence for the `Adclick-Reject-Reason` header.
    pub fn describe(&self) -> String {
        match self {
            RejectReason::Invalid(why) => why.clone(),
            RejectReason::TooLate => {
                "too late: the click's minute is final (past allowed lateness)".into()
            }
            RejectReason::Future => "ts is further in the future than max_future_skew".into(),
        }
    }
}

/// A message on its way to the rejected stream.
#[derive(Clone, Debug)]
pub struct Rejected {
    /// Its sequence in the clicks stream.
    pub seq: u64,
    /// Its stored subject (`clicks.p.<p>.<ad>`).
    pub subject: String,
    /// The payload, byte for byte.
    pub payload: Bytes,
    /// Why.
    pub reason: RejectReason,
}
