//! The ODS stage of an incremental run (layers.md, "Incremental loads"):
//! only the objects of each folder that no committed load of its partition
//! has read are scanned, and their rows are appended as one more load.
//!
//! `tauc-job` lists each folder (one LIST per 1 000 keys) and compares it
//! with the partition's loaded objects ([`crate::warehouse::loads`]); the
//! new ones travel to the executors as work items, each read only if it
//! still has the listed entity tag and size. An object already loaded
//! whose size or tag changed fails the run, naming it, before anything is
//! committed. A partition last written by a full run (its objects are not
//! recorded) is loaded again whole, replacing that version: the result is
//! the same, and the loads after it are incremental.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use object_store::ObjectStore;

use crate::engine::client::submitted;
use crate::error::{Error, Result};
use crate::ingest::listing::list_folder;
use crate::ingest::raw_scan::{Folder, RawEventsTable, RawSource};
use crate::jobs::progress::Progress;
use crate::warehouse::commit::{
    self, Lineage, Manifest, PartitionRef, WriteOutcome, carried, input_name,
};
use crate::warehouse::loads::{self, Load, RawObject};
use crate::warehouse::tables::Table;

use super::ods::{load_stats_batch, ods_summary, scan_into_ods};
use super::written::only_into;
use super::{JOB, LayeringArgs, OdsSummary};

/// One folder of an incremental run: what is committed, what is new.
struct FolderLoad {
    p: PartitionRef,
    folder: Folder,
    /// The current event manifest, when its loads are recorded (appended
    /// to); `None` when the partition is (re)loaded whole.
    previous: Option<Manifest>,
    /// Objects to read.
    new: Vec<RawObject>,
    /// Other objects in the folder.
    ignored: i64,
    /// No version of the partition was committed before.
    fresh: bool,
}

/// The incremental ODS stage; returns the summaries of the loads it
/// committed (what each added) and the result rows received.
pub(super) async fn load_ods_incremental(
    ctx: &SessionContext,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    run_id: &str,
    progress: &mut Progress,
) -> Result<(BTreeMap<PartitionRef, OdsSummary>, (u64, u64))> {
    let started_at = Utc::now().timestamp_millis();
    let mut folders = Vec::new();
    for region in &args.regions {
        for date in &args.dates {
            let f = plan_folder(ctx, store, args, region, *date).await?;
            if let Some(f) = f {
                folders.push(f);
            }
        }
    }
    let outcome = scan_new(ctx, args, run_id, started_at, &folders).await?;
    let mut summaries = BTreeMap::new();
    for f in &folders {
        let mut s = ods_summary(&outcome, &f.p)?;
        s.stats.files_ignored = f.ignored;
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
    for f in &folders {
        let event = commit_load(store, args, run_id, &outcome, f, &summaries[&f.p]).await?;
        write_settled(store, args, run_id, &f.p, &event, started_at).await?;
    }
    // partitions a killed run left half-settled
    for region in &args.regions {
        for date in &args.dates {
            let p = PartitionRef {
                dt: *date,
                region: region.clone(),
            };
            if !summaries.contains_key(&p) {
                settle_if_needed(store, args, run_id, &p, started_at).await?;
            }
        }
    }
    Ok((summaries, outcome.received()))
}

/// Lists one folder and sorts its objects into loaded and new; `None`
/// when nothing changed there since the last load.
async fn plan_folder(
    ctx: &SessionContext,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    region: &str,
    date: chrono::NaiveDate,
) -> Result<Option<FolderLoad>> {
    let p = PartitionRef {
        dt: date,
        region: region.to_string(),
    };
    let rel = format!("{}/{region}/{}", args.env, date.format("%Y/%m/%d"));
    let location = args.raw_root.join(&rel);
    let raw = ctx
        .runtime_env()
        .object_store(ObjectStoreUrl::parse(&location.store_url)?)?;
    let (listed, ignored) = list_folder(&raw, &location).await?;
    let dir = p.location(&Table::OdsEvent.location(&args.warehouse));
    let manifest = commit::read_manifest(store.as_ref(), &dir).await?;
    let loaded = match &manifest {
        Some(m) if !m.lineage.loads.is_empty() => {
            loads::loaded_objects(store, &args.warehouse, &p, &m.lineage.loads).await?
        }
        _ => None,
    };
    let Some(loaded) = loaded else {
        // never loaded, or by a full run: (re)load it whole
        let folder = Folder {
            region: region.to_string(),
            date,
            location,
        };
        let fresh = manifest.is_none();
        return Ok(Some(FolderLoad {
            p,
            folder,
            previous: None,
            new: listed,
            ignored,
            fresh,
        }));
    };
    let mut new = Vec::new();
    for object in listed {
        match loaded.get(&object.key) {
            None => new.push(object),
            Some(before) => unchanged(before, &object)?,
        }
    }
    let previous = manifest.expect("loads come from a manifest");
    let last_ignored = loads::total(&previous.lineage.loads).files_ignored;
    if new.is_empty() && ignored == last_ignored {
        return Ok(None);
    }
    let folder = Folder {
        region: region.to_string(),
        date,
        location,
    };
    Ok(Some(FolderLoad {
        p,
        folder,
        previous: Some(previous),
        new,
        ignored,
        fresh: false,
    }))
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
        files_ignored: f.ignored,
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
    lineage.loads.push(load.clone());
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
    if f.previous.is_none() {
        // the loads of a version this one replaced are nobody's now
        loads::remove_unlisted(store, &args.warehouse, &f.p, &lineage_files(&load)).await?;
    }
    Ok(event)
}

fn lineage_files(load: &Load) -> Vec<String> {
    load.objects_file.iter().cloned().collect()
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
