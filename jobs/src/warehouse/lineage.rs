//! What a committed version records about where it came from (the
//! manifest's lineage fields): plain data, read by the commit protocol and
//! written by the jobs ([`crate::warehouse::loads`] reads and writes the
//! object lists these name).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a committed version came from, for the runs that follow it: the
/// loads of raw objects behind an ODS partition (incremental runs append
/// one each), and the versions of the inputs a derived partition was
/// built from (a later run rebuilds it when one of them moved on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// `ods_fe_event_di` only: the loads, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loads: Vec<Load>,
    /// Input partition (`layer/table/dt=…/region=…`) → the run id of the
    /// version read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// The run id of the version whose files this one lists unchanged, when
    /// a run committed the partition again without changing its rows (an
    /// incremental DWD patch that added nothing to a date): what the
    /// partitions built from it compare, so they are not rebuilt for
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `ods_fe_event_di` only: what the incremental listings of the
    /// partition's raw folder know, for the next one to start after the
    /// keys already loaded (design.md, "Offset listings").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<Listing>,
    /// Rows of files carried over from the previous version (an appended
    /// partition lists them again without their counts).
    #[serde(skip)]
    pub carried_rows: u64,
}

/// One raw object an incremental run reads, as it was listed: read only
/// if it still has this size and entity tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RawObject {
    /// The object key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its entity tag, when the store gives one.
    pub e_tag: Option<String>,
}

/// One load of raw objects into an ODS partition, with its counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// The run that loaded them.
    pub run_id: String,
    /// The list of the objects read (under the partition's loads folder);
    /// `None` for a full run, whose executors listed the folder themselves
    /// (an incremental run after it reloads the folder once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects_file: Option<String>,
    /// The `ods_fe_quarantine_di` files it wrote.
    #[serde(default)]
    pub quarantine_files: Vec<String>,
    /// Rows in them.
    pub quarantined_rows: i64,
    /// `messages-*.txt` objects read.
    pub files: i64,
    /// Bytes of the objects read.
    pub bytes: i64,
    /// Lines read, blank ones included.
    pub lines: i64,
    /// Blank lines read.
    pub blank_lines: i64,
    /// Valid rows written.
    pub valid_rows: i64,
    /// Other objects in the folder when this load listed it.
    pub files_ignored: i64,
    /// The smallest key it read (`None` when it read none, or was
    /// recorded before key ranges were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_key: Option<String>,
    /// The largest key it read: a listing that starts after this key
    /// cannot meet its objects, so it need not read their list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<String>,
    /// Loads folded into this one by a compaction (1 for a plain load;
    /// 0 when recorded before compactions existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub folded: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the incremental listings of a raw folder know (design.md,
/// "Offset listings"): enough to start the next listing after the keys
/// already loaded, and to count the ignored objects a partial listing
/// does not see.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    /// Per Kafka partition of the uploader-named keys loaded
    /// (`messages-{first_ts}-{partition}-{offset}.txt`, `first_ts` in the
    /// folder's day): the newest `first_ts` loaded, epoch ms. (The
    /// partition as decimal text: the manifest's flattened lineage reads
    /// map keys as strings only.)
    #[serde(default)]
    pub newest: BTreeMap<String, i64>,
    /// The objects of the folder that are not batches (their names under
    /// the folder), as the listings so far saw them: `files_ignored` is
    /// their number.
    #[serde(default)]
    pub ignored: Vec<String>,
}
