//! Resuming inside a producer's batch.
//!
//! The uploader commits at its objects' ends, which need not be where the
//! producer's record batches end: with batching on, a committed offset
//! often falls inside a batch. Kafka answers a fetch from such an offset
//! with the whole batch and the client drops the records before it; tansu
//! 0.6.0 answers with the batches whose *first* offset is at or after it
//! (`dynostore` `fetch`), so the rest of the batch in hand would never be
//! seen. Every resume (an assignment at the committed offset, a seek after
//! an object found already uploaded) therefore starts [`REWIND`] records
//! earlier and skips up to the offset it wants. If the first record that
//! comes is still past it (a batch longer than the rewind), the uploader
//! rewinds twice as far; if the records it wants are below the log's start
//! (deleted by retention before anyone uploaded them), it says so and goes
//! on from the oldest record there is.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

/// How many records before the wanted offset a resume starts: librdkafka's
/// default `batch.num.messages`, the longest batch its producers make
/// unless told otherwise.
pub const REWIND: i64 = 10_000;

/// Where a resume at `wanted` starts, `rewind` records earlier.
pub fn start(wanted: i64, rewind: i64) -> i64 {
    (wanted - rewind).max(0)
}

/// Moves each partition of an assignment `REWIND` records before its
/// committed offset; returns the committed offsets (the records each
/// partition must resume at). Partitions with nothing committed start at
/// the oldest record, as `auto.offset.reset` says, and are not returned.
pub fn assignment<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &mut TopicPartitionList,
) -> Vec<(i32, i64)> {
    let committed = match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => {
            // librdkafka then reads the committed offsets itself; a resume
            // inside a batch on tansu may then skip the rest of that batch
            tracing::error!(error = %e, "cannot read the committed offsets of the assignment; resuming at them without a rewind");
            return Vec::new();
        }
    };
    let mut wanted = Vec::new();
    for e in committed.elements() {
        if let Offset::Offset(c) = e.offset()
            && c > 0
        {
            let from = Offset::Offset(start(c, REWIND));
            if tpl
                .set_partition_offset(e.topic(), e.partition(), from)
                .is_ok()
            {
                wanted.push((e.partition(), c));
            }
        }
    }
    wanted
}

/// What to do when, resuming at `wanted` after a rewind of `rewind`
/// records, the first record that came is at `got` > `wanted`.
#[derive(Debug, PartialEq, Eq)]
pub enum Overshot {
    /// Seek to `from`, `rewind` records before `wanted`.
    Further { from: i64, rewind: i64 },
    /// The records from `wanted` to the log's start `low` are gone.
    Gone { low: i64 },
}

/// Decides an overshoot, given the partition's log start `low`.
pub fn overshot(wanted: i64, rewind: i64, low: i64) -> Overshot {
    if wanted < low {
        return Overshot::Gone { low };
    }
    let rewind = rewind.saturating_mul(2);
    Overshot::Further {
        from: start(wanted, rewind).max(low),
        rewind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_starts_a_rewind_earlier_never_below_zero() {
        assert_eq!(start(25_000, REWIND), 15_000);
        assert_eq!(start(7, REWIND), 0);
    }

    #[test]
    fn an_overshoot_rewinds_twice_as_far_or_gives_up_below_the_log_start() {
        assert_eq!(
            overshot(50_000, 10_000, 0),
            Overshot::Further {
                from: 30_000,
                rewind: 20_000
            }
        );
        assert_eq!(
            overshot(50_000, 10_000, 45_000),
            Overshot::Further {
                from: 45_000,
                rewind: 20_000
            }
        );
        assert_eq!(
            overshot(50_000, 10_000, 50_001),
            Overshot::Gone { low: 50_001 }
        );
    }
}
