//! The ODS stage of an incremental run (layers.md, "Incremental loads"):
//! only the objects of each folder that no committed load of its partition
//! has read are scanned, and their rows are appended as one more load.
//!
//! `tauc-job` lists each folder (one LIST per 1 000 keys) — from after
//! the keys already loaded ([`crate::ingest::offsets`]), or whole once per
//! `--full-listing-every` — and compares it with the objects the
//! partition's loads read there ([`crate::warehouse::loads`]); the new
//! ones travel to the executors as work items, each read only if it still
//! has the listed entity tag and size. An object already loaded
//! whose size or tag changed fails the run, naming it, before anything is
//! committed. A partition last written by a full run (its objects are not
//! recorded) is loaded again whole, replacing that version: the result is
//! the same, and the loads after it are incremental.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use crate::engine::client::submitted;
use crate::error::{Error, Result};
use crate::ingest::listing::{FolderListing, list_folder};
use crate::ingest::offsets::{listing_start, next_listing};
use crate::ingest::raw_scan::{Folder, RawEventsTable, RawSource};
use crate::jobs::progress::Progress;
use crate::warehouse::commit::{
    self, Lineage, Manifest, PartitionRef, WriteOutcome, carried, input_name,
};
use crate::warehouse::lineage::Listing;
use crate::warehouse::loads::{self, Load, RawObject};
use crate::warehouse::tables::Table;

use super::ods::{load_stats_batch, ods_summary, scan_into_ods};
use super::written::only_into;
use super::{JOB, LayeringArgs, ListingCounts, OdsSummary};

/// One folder of an incremental run: what is committed, what is new.
struct FolderLoad {
    p: PartitionRef,
    folder: Folder,
    /// The current event manifest, when its loads are recorded (appended
    /// to); `None` when the partition is (re)loaded whole.
    previous: Option<Manifest>,
    /// Objects to read.
    new: Vec<RawObject>,
    /// The listing state committed with the load (its `ignored` are the
    /// other objects in the folder).
    listing: Listing,
    /// When this run's listing began, if it listed the folder whole.
    full_at: Option<i64>,
    /// No version of the partition was committed before.
    fresh: bool,
}

/// What the incremental ODS stage did: the summaries of the loads it
/// committed (what each added), the result rows received, and what its
/// listings cost.
pub(super) struct IncrementalOds {
    pub(super) summaries: BTreeMap<PartitionRef, OdsSummary>,
    pub(super) received: (u64, u64),
    pub(super) listing: ListingCounts,
}

/// The incremental ODS stage.
pub(super) async fn load_ods_incremental(
    ctx: &SessionContext,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    run_id: &str,
    progress: &mut Progress,
) -> Result<IncrementalOds> {
    let started_at = Utc::now().timestamp_millis();
    let mut folders = Vec::new();
    let mut counts = ListingCounts::default();
    // the folders are listed side by side
    let plans = args.regions.iter().flat_map(|region| {
        (args.dates.iter()).map(move |date| plan_folder(ctx, store, args, region, *date))
    });
    let planned: Vec<_> = futures::stream::iter(plans)
        .buffered(commit::PARTITIONS_AT_ONCE)
        .try_collect()
        .await?;
    for (f, c) in planned {
        counts.add(&c);
        folders.extend(f);
    }
    let outcome = scan_new(ctx, args, run_id, started_at, &folders).await?;
    let mut summaries = BTreeMap::new();
    for f in &folders {
        let mut s = ods_summary(&outcome, &f.p)?;
        s.stats.files_ignored = f.listing.ignored.len() as i64;
        s.appended_to = match (&f.previous, f.fresh) {
            (Some(m), _) => Some(Some(m.content_version().to_string())),
            (None, true) => Some(None),
            (None, false) => None,
        };
        progress.advance(s.stats.files as u64, s.valid_rows + s.quarantined_rows());
        summaries.insert(f.p.clone(), s);
    }
    only_into(&outcome, &summaries, "the scan")?;
    submitted::check()?;
    progress.stage("ods: committing");
    let (outcome_ref, summaries_ref) = (&outcome, &summaries);
    commit::each_partition(&folders, |f| async move {
        let event = commit_load(store, args, run_id, outcome_ref, f, &summaries_ref[&f.p]).await?;
        write_settled(store, args, run_id, &f.p, &event, started_at).await?;
        if let Some(at) = f.full_at {
            loads::record_full_listing(store, &args.warehouse, &f.p, at).await?;
        }
        Ok(())
    })
    .await?;
    // partitions a killed run left half-settled
    let others = args.regions.iter().flat_map(|region| {
        (args.dates.iter()).map(move |date| PartitionRef {
            dt: *date,
            region: region.clone(),
        })
    });
    let others: Vec<_> = others.filter(|p| !summaries.contains_key(p)).collect();
    commit::each_partition(&others, |p| {
        settle_if_needed(store, args, run_id, p, started_at)
    })
    .await?;
    Ok(IncrementalOds {
        summaries,
        received: outcome.received(),
        listing: counts,
    })
}

/// Lists one folder and sorts its objects into loaded and new; `None`
/// when nothing changed there since the last load. Also returns what the
/// listing cost (logged, one line per folder).
async fn plan_folder(
    ctx: &SessionContext,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    region: &str,
    date: chrono::NaiveDate,
) -> Result<(Option<FolderLoad>, ListingCounts)> {
    let p = PartitionRef {
        dt: date,
        region: region.to_string(),
    };
    let rel = format!("{}/{region}/{}", args.env, date.format("%Y/%m/%d"));
    let location = args.raw_root.join(&rel);
    let raw = ctx
        .runtime_env()
        .object_store(ObjectStoreUrl::parse(&location.store_url)?)?;
    let dir = p.location(&Table::OdsEvent.location(&args.warehouse));
    let manifest = commit::read_manifest(store.as_ref(), &dir).await?;
    let (start, began_at) = start_of(store, args, &p, manifest.as_ref()).await?;
    let listing = list_folder(&raw, &location, start.as_deref()).await?;
    let after = start.as_ref().map(|s| format!("{}/{s}", location.prefix));
    let loaded = match &manifest {
        Some(m) if !m.lineage.loads.is_empty() => {
            let l = &m.lineage.loads;
            loads::loaded_objects(store, &args.warehouse, &p, l, after.as_deref()).await?
        }
        _ => None,
    };
    let mut counts = ListingCounts {
        folders: 1,
        full_listings: u64::from(start.is_none()),
        list_requests: listing.pages,
        keys_listed: listing.keys,
        object_lists_read: loaded.as_ref().map_or(0, |l| l.lists_read),
        new_objects: 0,
    };
    let folder = Folder {
        region: region.to_string(),
        date,
        location,
    };
    let full_at = start.is_none().then_some(began_at);
    let planned = match (loaded, manifest) {
        (Some(loaded), Some(previous)) => {
            let state = Planned {
                start: start.as_deref(),
                full_at,
                previous,
            };
            sort_new(p.clone(), folder, listing, &loaded.objects, state)?
        }
        // never loaded, or by a full run: (re)load it whole
        (_, manifest) => {
            let fresh = manifest.is_none();
            Some(whole(p.clone(), folder, listing, began_at, fresh))
        }
    };
    counts.new_objects = planned.as_ref().map_or(0, |f| f.new.len() as u64);
    log_listing(&counts, date, region, start.as_deref());
    if planned.is_none()
        && let Some(at) = full_at
    {
        // everything the whole listing saw is loaded already
        loads::record_full_listing(store, &args.warehouse, &p, at).await?;
    }
    Ok((planned, counts))
}

/// Where this run lists a partition's folder from (`None`: whole), and
/// when the listing begins (epoch ms).
async fn start_of(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    p: &PartitionRef,
    manifest: Option<&Manifest>,
) -> Result<(Option<String>, i64)> {
    let state = manifest
        // a full run's load (objects not recorded) is replaced whole
        .filter(|m| m.lineage.loads.iter().all(|l| l.objects_file.is_some()))
        .and_then(|m| m.lineage.listing.as_ref());
    let last_full = match state {
        Some(_) => loads::last_full_listing(store, &args.warehouse, p).await?,
        None => None,
    };
    let now = Utc::now().timestamp_millis();
    Ok((listing_start(state, last_full, now, &args.listing), now))
}

/// A partition whose loads are recorded, with what this run's listing
/// started from.
struct Planned<'a> {
    start: Option<&'a str>,
    full_at: Option<i64>,
    previous: Manifest,
}

/// The listed objects no load has read; an object loaded before must be
/// unchanged. `None` when neither new objects nor the listing state moved.
fn sort_new(
    p: PartitionRef,
    folder: Folder,
    listing: FolderListing,
    loaded: &BTreeMap<String, RawObject>,
    planned: Planned<'_>,
) -> Result<Option<FolderLoad>> {
    let mut new = Vec::new();
    for object in &listing.objects {
        match loaded.get(&object.key) {
            None => new.push(object.clone()),
            Some(before) => unchanged(before, object)?,
        }
    }
    let previous = planned.previous;
    let state = previous.lineage.listing.as_ref();
    let names = names(&folder, &listing.objects);
    let next = next_listing(
        state,
        planned.start,
        folder.date,
        names.iter().map(String::as_str),
        &listing.ignored,
    );
    if new.is_empty() && state == Some(&next) {
        return Ok(None);
    }
    Ok(Some(FolderLoad {
        p,
        folder,
        previous: Some(previous),
        new,
        listing: next,
        full_at: planned.full_at,
        fresh: false,
    }))
}

/// A folder loaded whole (by a full listing).
fn whole(
    p: PartitionRef,
    folder: Folder,
    listing: FolderListing,
    began_at: i64,
    fresh: bool,
) -> FolderLoad {
    let names = names(&folder, &listing.objects);
    let state = next_listing(
        None,
        None,
        folder.date,
        names.iter().map(String::as_str),
        &listing.ignored,
    );
    FolderLoad {
        p,
        folder,
        previous: None,
        new: listing.objects,
        listing: state,
        full_at: Some(began_at),
        fresh,
    }
}

/// The objects' names under the folder.
fn names(folder: &Folder, objects: &[RawObject]) -> Vec<String> {
    let prefix = format!("{}/", folder.location.prefix);
    objects
        .iter()
        .map(|o| o.key.strip_prefix(&prefix).unwrap_or(&o.key).to_string())
        .collect()
}

/// One line per folder: what its listing cost (the benchmark reads these).
fn log_listing(c: &ListingCounts, date: chrono::NaiveDate, region: &str, start: Option<&str>) {
    tracing::info!(
        dt = %date,
        region,
        listing = if start.is_some() { "partial" } else { "full" },
        start_after = start.unwrap_or(""),
        list_requests = c.list_requests,
        keys_listed = c.keys_listed,
        object_lists_read = c.object_lists_read,
        new_objects = c.new_objects,
        "raw folder listed"
    );
}

/// Fails when an object loaded before has another size or entity tag now.
fn unchanged(before: &RawObject, now: &RawObject) -> Result<()> {
    let tag_moved = matches!((&before.e_tag, &now.e_tag), (Some(a), Some(b)) if a != b);
    if before.size == now.size && !tag_moved {
        return Ok(());
    }
    Err(Error::BadInput(format!(
        "raw object {} changed after it was loaded (size {} → {}, entity tag {:?} → {:?}); raw objects are immutable: restore the original, or put the new content under a new messages-*.txt key; nothing was committed",
        now.key, before.size, now.size, before.e_tag, now.e_tag
    )))
}

/// Scans the new objects of `folders` and writes their rows (no job when
/// there are none).
async fn scan_new(
    ctx: &SessionContext,
    args: &LayeringArgs,
    run_id: &str,
    started_at: i64,
    folders: &[FolderLoad],
) -> Result<WriteOutcome> {
    if folders.iter().all(|f| f.new.is_empty()) {
        return Ok(WriteOutcome::default());
    }
    let table = RawEventsTable {
        source: RawSource {
            folders: folders.iter().map(|f| f.folder.clone()).collect(),
            ranges: args.ranges_per_folder.max(1),
            fetch_concurrency: args.fetch_concurrency.max(1),
            lateness_days: args.lateness_days,
        },
        objects: Some(folders.iter().map(|f| f.new.clone()).collect()),
    };
    let name = "tauc layering: ods (incremental)";
    scan_into_ods(ctx, table, args, run_id, started_at, name).await
}

/// Commits one folder's load: its object list, then the event manifest
/// listing the partition's files and loads so far (the commit point);
/// returns that manifest.
async fn commit_load(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    run_id: &str,
    outcome: &WriteOutcome,
    f: &FolderLoad,
    s: &OdsSummary,
) -> Result<Manifest> {
    let objects_file = loads::write_objects(store, &args.warehouse, &f.p, run_id, &f.new).await?;
    let load = Load {
        run_id: run_id.to_string(),
        objects_file: Some(objects_file),
        quarantine_files: outcome
            .files_of(Table::OdsQuarantine, &f.p)
            .into_iter()
            .map(|d| d.name)
            .collect(),
        quarantined_rows: s.quarantined_rows() as i64,
        files: s.stats.files,
        bytes: s.stats.bytes,
        lines: s.stats.lines,
        blank_lines: s.stats.blank_lines,
        valid_rows: s.valid_rows as i64,
        files_ignored: f.listing.ignored.len() as i64,
        first_key: f.new.first().map(|o| o.key.clone()),
        last_key: f.new.last().map(|o| o.key.clone()),
        folded: 1,
    };
    let new_files = outcome.files_of(Table::OdsEvent, &f.p);
    let (mut files, mut lineage) = match &f.previous {
        Some(m) => (carried(&m.files), m.lineage.clone()),
        None => (Vec::new(), Lineage::default()),
    };
    lineage.carried_rows = f.previous.as_ref().map_or(0, |m| m.rows);
    // new rows: this version is content of its own (a compacted previous
    // version named another's)
    lineage.content = None;
    lineage.loads.push(load);
    lineage.listing = Some(f.listing.clone());
    let folded = lineage.loads.len() > args.compact_above.max(1);
    if folded {
        // one summary load in place of many: a manifest of bounded size,
        // one object list in place of many
        let all = std::mem::take(&mut lineage.loads);
        lineage.loads = vec![loads::fold(store, &args.warehouse, &f.p, run_id, &all).await?];
    }
    let keep = lineage_files(&lineage.loads);
    files.extend(new_files);
    let dir = f.p.location(&Table::OdsEvent.location(&args.warehouse));
    let event = commit::commit_files_with(
        store.as_ref(),
        run_id,
        JOB,
        Table::OdsEvent,
        &dir,
        &f.p,
        &files,
        lineage,
    )
    .await?;
    if f.previous.is_none() || folded {
        // the lists of loads this version replaced or folded are nobody's now
        loads::remove_unlisted(store, &args.warehouse, &f.p, &keep).await?;
    }
    Ok(event)
}

fn lineage_files(loads: &[Load]) -> Vec<String> {
    loads
        .iter()
        .filter_map(|l| l.objects_file.clone())
        .collect()
}

/// [`write_settled`] for a partition this run did not load, when a killed
/// run committed its event manifest but not the two tables that follow it.
async fn settle_if_needed(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    run_id: &str,
    p: &PartitionRef,
    started_at: i64,
) -> Result<()> {
    let dir = p.location(&Table::OdsEvent.location(&args.warehouse));
    let Some(event) = commit::read_manifest(store.as_ref(), &dir).await? else {
        return Ok(());
    };
    if event.lineage.loads.is_empty() {
        return Ok(());
    }
    let inputs = settled_inputs(p, &event);
    let tables = [Table::OdsQuarantine, Table::OdsLoadStats];
    if commit::stale(store.as_ref(), &args.warehouse, &tables, p, &inputs).await? {
        tracing::info!(dt = %p.dt, region = %p.region, "settling an ODS partition a killed run left behind");
        write_settled(store, args, run_id, p, &event, started_at).await?;
    }
    Ok(())
}

/// What the quarantine and statistics of `p` follow: its event version.
fn settled_inputs(p: &PartitionRef, event: &Manifest) -> BTreeMap<String, String> {
    let version = event.content_version().to_string();
    BTreeMap::from([(input_name(Table::OdsEvent, p), version)])
}

/// Brings partition `p`'s quarantine and load statistics to what the
/// loads of its event version `event` add up to.
async fn write_settled(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    run_id: &str,
    p: &PartitionRef,
    event: &Manifest,
    started_at: i64,
) -> Result<()> {
    let total = loads::total(&event.lineage.loads);
    let inputs = settled_inputs(p, event);
    let lineage = Lineage {
        inputs: inputs.clone(),
        carried_rows: total.quarantined_rows as u64,
        ..Default::default()
    };
    let dir = p.location(&Table::OdsQuarantine.location(&args.warehouse));
    let files = carried(&total.quarantine_files);
    commit::commit_files_with(
        store.as_ref(),
        run_id,
        JOB,
        Table::OdsQuarantine,
        &dir,
        p,
        &files,
        lineage,
    )
    .await?;
    let summary = OdsSummary {
        stats: crate::ingest::raw_scan::RangeStats {
            files: total.files,
            files_ignored: total.files_ignored,
            bytes: total.bytes,
            lines: total.lines,
            blank_lines: total.blank_lines,
        },
        valid_rows: total.valid_rows as u64,
        quarantined: BTreeMap::from([(String::new(), total.quarantined_rows as u64)]),
        appended_to: None,
    };
    let finished_at = Utc::now().timestamp_millis();
    let stats = load_stats_batch(&summary, run_id, started_at, finished_at)?;
    let lineage = Lineage {
        inputs,
        ..Default::default()
    };
    commit::commit_table_with(
        store,
        run_id,
        JOB,
        &args.warehouse,
        Table::OdsLoadStats,
        p,
        vec![stats],
        lineage,
    )
    .await?;
    Ok(())
}
