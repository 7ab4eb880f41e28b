//! Partitions nobody uploads: the uploader's watchdog.
//!
//! tansu 0.6.0's group coordinator never reassigns the partitions of a
//! member that died for good beside a live one (docs/collection.md): they
//! keep a backlog while their committed offset stands still. A member that
//! sees such a partition outside its own assignment for longer than a
//! session timeout plus two `--max-wait`s (what a live owner needs to
//! write and commit) leaves the group and joins again, which makes the
//! coordinator assign every partition afresh. On Kafka it never fires: the
//! coordinator reassigns a dead member's partitions itself.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

/// One look at a partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (`None`: nothing committed yet).
    pub committed: Option<i64>,
    /// The next offset the partition will write.
    pub high: i64,
    /// Is it in this member's assignment?
    pub ours: bool,
}

/// What the watchdog remembers: since when each partition's committed
/// offset has stood where it is.
#[derive(Default)]
pub struct Orphans {
    since: HashMap<i32, (Option<i64>, Instant)>,
}

impl Orphans {
    /// Takes `looks` (at `now`); the partitions outside our assignment
    /// whose backlog has not moved for `stall`.
    pub fn stalled(&mut self, looks: &[Look], now: Instant, stall: Duration) -> Vec<i32> {
        let mut out = Vec::new();
        for l in looks {
            let entry = self.since.entry(l.partition).or_insert((l.committed, now));
            if entry.0 != l.committed {
                *entry = (l.committed, now);
            }
            let backlog = l.high > l.committed.unwrap_or(0);
            if !l.ours && backlog && now.duration_since(entry.1) >= stall {
                out.push(l.partition);
            }
        }
        out
    }

    /// Forgets everything (after a rejoin).
    pub fn reset(&mut self) {
        self.since.clear();
    }
}

/// Looks at every partition of `topic` (blocking: Kafka requests).
pub fn look<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
) -> rdkafka::error::KafkaResult<Vec<Look>> {
    let timeout = Duration::from_secs(5);
    let meta = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let ours: BTreeSet<i32> = consumer
        .assignment()?
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut looks = Vec::with_capacity(partitions.len());
    for p in partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let committed = committed
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        looks.push(Look {
            partition: p,
            committed,
            high,
            ours: ours.contains(&p),
        });
    }
    Ok(looks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(partition: i32, committed: Option<i64>, high: i64, ours: bool) -> Look {
        Look {
            partition,
            committed,
            high,
            ours,
        }
    }

    #[test]
    fn only_others_stalled_backlogs_count() {
        let mut o = Orphans::default();
        let t0 = Instant::now();
        let stall = Duration::from_secs(20);
        let looks = [
            look(0, Some(5), 9, false), // another member's, stalled
            look(1, Some(5), 9, true),  // ours
            look(2, Some(9), 9, false), // no backlog
            look(3, None, 4, false),    // never committed, stalled
        ];
        assert!(o.stalled(&looks, t0, stall).is_empty());
        let later = t0 + Duration::from_secs(21);
        assert_eq!(o.stalled(&looks, later, stall), vec![0, 3]);
        // a commit moves partition 0: its clock starts again
        let moved = [look(0, Some(7), 9, false)];
        assert!(o.stalled(&moved, later, stall).is_empty());
        assert_eq!(
            o.stalled(&moved, later + Duration::from_secs(20), stall),
            vec![0]
        );
    }
}
