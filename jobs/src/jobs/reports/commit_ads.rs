//! The commit of a reports run: which baseline dates have data, then each
//! partition's rows of the seven ADS tables committed, empty ones
//! included.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use super::batches::anomaly_batch;
use super::plans::Builder;
use super::{JOB, ReportsArgs, ReportsInputs, anomaly};
use crate::error::Result;
use crate::store::Location;
use crate::warehouse::commit::{self, Lineage, PartitionRef};
use crate::warehouse::tables::Table;

/// Which local dates have a committed cors partition, for baselines: the
/// reported dates (checked by `ReportsInputs::load`) and the two days
/// before them.
pub(super) async fn committed_baselines(
    store: &dyn ObjectStore,
    args: &ReportsArgs,
    first: NaiveDate,
) -> Result<BTreeSet<PartitionRef>> {
    let mut committed = BTreeSet::new();
    for region in &args.regions {
        for d in [first - Days::new(2), first - Days::new(1)] {
            let p = PartitionRef {
                dt: d,
                region: region.clone(),
            };
            let dir = p.location(&Table::DwdCorsError.location(&args.warehouse));
            if commit::read_manifest(store, &dir).await?.is_some() {
                committed.insert(p);
            }
        }
        committed.extend(args.dates.iter().map(|d| PartitionRef {
            dt: *d,
            region: region.clone(),
        }));
    }
    Ok(committed)
}

/// What the commit of each partition needs.
pub(super) struct Ads<'a> {
    /// The warehouse's store.
    pub store: &'a Arc<dyn ObjectStore>,
    /// The run's id.
    pub run_id: &'a str,
    /// The run.
    pub args: &'a ReportsArgs,
    /// The funnels and contracts.
    pub inputs: &'a ReportsInputs,
    /// What the queries gathered.
    pub results: &'a Builder,
    /// From [`committed_baselines`].
    pub committed: &'a BTreeSet<PartitionRef>,
}

impl Ads<'_> {
    /// Commits partition `p` (of a region in zone `tz`) of every ADS
    /// table; returns the rows committed per table and the alerts raised.
    pub(super) async fn commit_partition(
        &self,
        p: &PartitionRef,
        tz: chrono_tz::Tz,
    ) -> Result<(BTreeMap<&'static str, usize>, usize)> {
        let b = self.results;
        let funnel_list = self
            .inputs
            .funnels
            .as_ref()
            .map(|(_, f)| f.as_slice())
            .unwrap_or(&[]);
        let anomaly_rows = anomaly::partition_rows(
            p.dt,
            tz,
            b.classes.get(p).unwrap_or(&BTreeSet::new()),
            b.hour_counts.get(&p.region).unwrap_or(&HashMap::new()),
            |d| {
                self.committed.contains(&PartitionRef {
                    dt: d,
                    region: p.region.clone(),
                })
            },
        );
        let alerts = anomaly_rows.iter().filter(|r| r.is_alert).count();
        let batches = [
            (Table::AdsTargetClick, b.target_batch(p)?),
            (Table::AdsPage, b.page_batch(p)?),
            (Table::AdsFunnel, b.funnel_batch(p, funnel_list)?),
            (Table::AdsCorsSummary, b.summary_batch(p)?),
            (Table::AdsCorsTopN, b.topn_batch(p)?),
            (Table::AdsCorsAnomaly, anomaly_batch(&anomaly_rows)?),
            (
                Table::AdsSettlement,
                b.settlement_batch(p, &self.inputs.contracts)?,
            ),
        ];
        let rows = batches
            .iter()
            .map(|(table, batch)| (table.name(), batch.num_rows()))
            .collect();
        let lineage = Lineage {
            inputs: ads_inputs(self.store.as_ref(), &self.args.warehouse, p).await?,
            ..Default::default()
        };
        // the seven tables side by side: each manifest is its own commit
        // point, and a partition with any of them behind is stale
        let commits = batches.into_iter().map(|(table, batch)| {
            let (warehouse, lineage) = (&self.args.warehouse, lineage.clone());
            commit::commit_table_with(
                self.store,
                self.run_id,
                JOB,
                warehouse,
                table,
                p,
                vec![batch],
                lineage,
            )
        });
        futures::future::try_join_all(commits).await?;
        Ok((rows, alerts))
    }
}

/// The DWD versions an ADS partition is built from: its date's two DWD
/// tables and the CORS errors of the two days before (the anomaly
/// baseline).
async fn ads_inputs(
    store: &dyn ObjectStore,
    warehouse: &Location,
    p: &PartitionRef,
) -> Result<BTreeMap<String, String>> {
    let day = |back: u64| PartitionRef {
        dt: p.dt - Days::new(back),
        region: p.region.clone(),
    };
    let inputs = [
        (Table::DwdTrkEvent, day(0)),
        (Table::DwdCorsError, day(0)),
        (Table::DwdCorsError, day(1)),
        (Table::DwdCorsError, day(2)),
    ];
    commit::input_versions(store, warehouse, &inputs).await
}

/// The dates of `args` with an ADS partition (of any region) missing, or
/// built from DWD rows that have changed since.
pub async fn stale_dates(store: &dyn ObjectStore, args: &ReportsArgs) -> Result<Vec<NaiveDate>> {
    let checks = args.dates.iter().flat_map(|d| {
        args.regions.iter().map(move |region| async move {
            let p = PartitionRef {
                dt: *d,
                region: region.clone(),
            };
            let inputs = ads_inputs(store, &args.warehouse, &p).await?;
            let stale = commit::stale(store, &args.warehouse, &Table::REPORTS, &p, &inputs).await?;
            Ok::<_, crate::error::Error>(stale.then_some(*d))
        })
    });
    // a dozen manifest reads per partition: partitions side by side
    let stale: Vec<_> = futures::stream::iter(checks)
        .buffered(commit::PARTITIONS_AT_ONCE)
        .try_collect()
        .await?;
    let mut out: Vec<NaiveDate> = stale.into_iter().flatten().collect();
    out.dedup();
    Ok(out)
}
