//! What a reports run reads besides the DWD rows — the funnels and
//! `dim_contract` — loaded and checked before any work, and the check that
//! the DWD partitions it needs are committed.

use std::collections::BTreeSet;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use super::funnels::{self, Funnel};
use super::settlement::{self, CONTRACT_COLUMNS, Contract};
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::store::Location;
use crate::warehouse::commit::{self, PartitionRef};
use crate::warehouse::tables::Table;

use super::ReportsArgs;

/// Reads the funnels: the flag's file or URL (which must exist), else the
/// warehouse's `conf/funnels.toml` when present.
pub async fn load_funnels(
    engine: &Engine,
    warehouse: &Location,
    flag: Option<&str>,
) -> Result<Option<(String, Vec<Funnel>)>> {
    let loc = match flag {
        Some(f) => Location::parse(f)?,
        None => warehouse.join("conf/funnels.toml"),
    };
    let store = engine.registry.for_location(&loc)?;
    let name = loc.to_string();
    let bytes = match store.get(&loc.path()).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) if flag.is_none() => return Ok(None),
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::config(format!(
                "funnels file {name} not found (--funnels); give an existing TOML file or URL"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::config(format!("funnels file {name}: not UTF-8 text")))?;
    Ok(Some((name.clone(), funnels::parse(&name, &text)?)))
}

/// Reads `dim_contract` (CSV or Parquet files under
/// `{warehouse}/dim/dim_contract/`), checking every row.
pub async fn load_contracts(engine: &Engine, warehouse: &Location) -> Result<Vec<Contract>> {
    let dir = warehouse.join("dim/dim_contract");
    let store = engine.registry.for_location(&dir)?;
    let mut files: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
    files.sort_by(|a, b| a.location.cmp(&b.location));
    let mut out = Vec::new();
    let mut seen = false;
    for f in &files {
        let key = f.location.as_ref();
        let url = dir.object_url(key);
        let (csv, parquet) = (key.ends_with(".csv"), key.ends_with(".parquet"));
        if !csv && !parquet {
            continue;
        }
        seen = true;
        let bytes = store.get(&f.location).await?.bytes().await?;
        if csv {
            out.extend(settlement::parse_contracts_csv(&url, &bytes)?);
            continue;
        }
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes,
            )?
            .build()?;
        let mut row = 0;
        for batch in reader {
            let batch = batch?;
            let cols = CONTRACT_COLUMNS
                .iter()
                .map(|c| {
                    let col = batch.column_by_name(c).ok_or_else(|| {
                        Error::BadInput(format!("{url}: dim_contract has no column '{c}'"))
                    })?;
                    Ok(cast(col, &DataType::Utf8)?)
                })
                .collect::<Result<Vec<_>>>()?;
            for i in 0..batch.num_rows() {
                row += 1;
                let values: Vec<Option<String>> = cols
                    .iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        s.is_valid(i).then(|| s.value(i).to_string())
                    })
                    .collect();
                out.push(settlement::contract_from_record(
                    &format!("{url} row {row}"),
                    &values,
                )?);
            }
        }
    }
    if !seen {
        return Err(Error::MissingInput(format!(
            "dim table dim_contract not found: no .csv or .parquet file under {dir}; the reports job needs it for ads_bill_settlement_1d (columns {}; `tauc-job sample` writes one)",
            CONTRACT_COLUMNS.join(",")
        )));
    }
    let mut ids = BTreeSet::new();
    for c in &out {
        if !ids.insert(c.contract_id.as_str()) {
            return Err(Error::BadInput(format!(
                "dim_contract under {dir}: contract_id '{}' appears twice; each contract needs one row",
                c.contract_id
            )));
        }
    }
    Ok(out)
}

/// What a reports run reads besides DWD, loaded and checked once before
/// any work: the funnels and the contracts.
#[derive(Debug, Clone, Default)]
pub struct ReportsInputs {
    /// Where the funnels came from, and the funnels; `None` when no file.
    pub funnels: Option<(String, Vec<Funnel>)>,
    /// Every row of `dim_contract`.
    pub contracts: Vec<Contract>,
}

impl ReportsInputs {
    /// Checks that the DWD partitions of `args.dates` are committed (an
    /// empty date list checks none: `daily` loads its inputs before the
    /// layering that commits them), then loads the funnels and contracts —
    /// in that order, so the first error is the one to fix first.
    pub async fn load(engine: &Engine, args: &ReportsArgs) -> Result<ReportsInputs> {
        let store = engine.registry.for_location(&args.warehouse)?;
        check_inputs(store.as_ref(), args).await?;
        Ok(ReportsInputs {
            funnels: load_funnels(engine, &args.warehouse, args.funnels.as_deref()).await?,
            contracts: load_contracts(engine, &args.warehouse).await?,
        })
    }
}

/// Fails, naming the job to run, when a DWD partition a report needs is
/// not committed.
async fn check_inputs(store: &dyn ObjectStore, args: &ReportsArgs) -> Result<()> {
    let mut missing = Vec::new();
    for region in &args.regions {
        for dt in &args.dates {
            let p = PartitionRef {
                dt: *dt,
                region: region.clone(),
            };
            for t in [Table::DwdTrkEvent, Table::DwdCorsError] {
                let dir = p.location(&t.location(&args.warehouse));
                if commit::read_manifest(store, &dir).await?.is_none() {
                    missing.push((t, p.clone()));
                }
            }
        }
    }
    let Some((table, p)) = missing.first() else {
        return Ok(());
    };
    let more = if missing.len() > 1 {
        format!(" (and {} more missing partitions)", missing.len() - 1)
    } else {
        String::new()
    };
    let (dt, region) = (p.dt, &p.region);
    Err(Error::MissingInput(format!(
        "the reports need DWD partition {} dt={dt} region={region}, which is not committed{more}; run `tauc-job submit layering --date {dt} --region {region}` first (loading collection date {dt} builds DWD date {dt}), or `tauc-job submit daily`",
        table.name()
    )))
}
