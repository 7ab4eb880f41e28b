//! The warehouse as SQL tables: each ODS, DWD and ADS table is a
//! [`WarehouseTable`] whose scan reads exactly the files the `_SUCCESS`
//! manifests list, with `dt` and `region` as partition columns; DIM tables
//! are their files as supplied.
//!
//! The manifests are read when the scan is planned (on the scheduler, for a
//! cluster), after pruning partitions with the query's filters on `dt` and
//! `region`, so `WHERE dt = DATE '2024-06-18'` lists one day's folder and
//! reads its manifests, not the table's history. The plan itself is a
//! stock Parquet scan, which every executor runs without knowing about
//! manifests.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray, Date32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl, PartitionedFile,
};
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column as PhysicalColumn};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Location;
use crate::store::StoreRegistry;
use crate::warehouse::commit::{self, Manifest, PartitionRef};
use crate::warehouse::tables::{Table, days_of, partition_fields};

/// The DIM tables the SQL surface registers when their folder has files.
pub const DIM_TABLES: [&str; 3] = ["dim_user", "dim_contract", "dim_region"];

/// What travels in a plan: which table, and where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseTableSpec {
    /// `layer/table`.
    pub table: String,
    /// The table's root (`{warehouse}/{layer}/{table}`).
    pub location: Location,
    /// Which of the listed files are read.
    #[serde(default)]
    pub files: FileSelect,
    /// Text read as views under the scan ([`WarehouseTable::for_lookups`]).
    #[serde(default)]
    pub views: bool,
}

/// Which of the files a manifest lists a scan reads: all of them, or
/// split by the run that wrote them (file names start `part-{run_id}-`),
/// for an incremental run that tells its own appended rows from those
/// committed before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileSelect {
    /// Every listed file.
    #[default]
    All,
    /// Only the files run `0` wrote.
    OfRun(String),
    /// Every listed file but those run `0` wrote.
    NotOfRun(String),
    /// Only the files named (a compaction's inputs).
    Named(std::collections::BTreeSet<String>),
}

impl FileSelect {
    fn keeps(&self, name: &str) -> bool {
        let of = |run: &str| {
            name.strip_prefix("part-")
                .and_then(|n| n.strip_prefix(run))
                .is_some_and(|n| n.starts_with('-'))
        };
        match self {
            FileSelect::All => true,
            FileSelect::OfRun(run) => of(run),
            FileSelect::NotOfRun(run) => !of(run),
            FileSelect::Named(names) => names.contains(name),
        }
    }
}

/// One partitioned warehouse table, read through its manifests.
#[derive(Debug, Clone)]
pub struct WarehouseTable {
    table: Table,
    location: Location,
    files: FileSelect,
    views: bool,
}

impl WarehouseTable {
    /// The table `table` of the warehouse at `warehouse`.
    pub fn new(table: Table, warehouse: &Location) -> WarehouseTable {
        WarehouseTable {
            table,
            location: table.location(warehouse),
            files: FileSelect::All,
            views: false,
        }
    }

    /// The same table, its text read as `Utf8View` under the scan
    /// ([`as_views`]): for the SQL surface's selective queries. The jobs'
    /// scans read every row they open, where views only add the cast (the
    /// layering 3.6 % slower with them, paired).
    pub fn for_lookups(self) -> WarehouseTable {
        WarehouseTable {
            views: true,
            ..self
        }
    }

    /// The same table, reading only the files `files` selects.
    pub fn with_files(self, files: FileSelect) -> WarehouseTable {
        WarehouseTable { files, ..self }
    }

    /// The plan form of this table.
    pub fn spec(&self) -> WarehouseTableSpec {
        WarehouseTableSpec {
            table: self.table.path().to_string(),
            location: self.location.clone(),
            files: self.files.clone(),
            views: self.views,
        }
    }

    /// The table a plan names.
    pub fn from_spec(spec: WarehouseTableSpec) -> DfResult<WarehouseTable> {
        let table = Table::from_name(&spec.table).ok_or_else(|| {
            datafusion::error::DataFusionError::Plan(format!(
                "unknown warehouse table '{}'",
                spec.table
            ))
        })?;
        Ok(WarehouseTable {
            table,
            location: spec.location,
            files: spec.files,
            views: spec.views,
        })
    }
}

/// A committed partition: its manifest and its files with their sizes.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Which partition.
    pub partition: PartitionRef,
    /// Its manifest.
    pub manifest: Manifest,
    /// `(object key, size)` of every listed file.
    pub files: Vec<(String, u64)>,
}

/// Parses `dt=YYYY-MM-DD/region=R/_SUCCESS` below a table root.
fn partition_of_manifest(rel: &str) -> Option<PartitionRef> {
    let mut parts = rel.split('/');
    let dt = parts.next()?.strip_prefix("dt=")?;
    let region = parts.next()?.strip_prefix("region=")?;
    (parts.next()? == commit::MANIFEST && parts.next().is_none()).then_some(())?;
    Some(PartitionRef {
        dt: NaiveDate::parse_from_str(dt, "%Y-%m-%d").ok()?,
        region: region.to_string(),
    })
}

/// The dates a table has folders for (`{table}/dt=YYYY-MM-DD/`), with
/// each folder's path, ordered: one listing of the table's top level.
async fn date_folders(
    store: &Arc<dyn ObjectStore>,
    table: &Location,
) -> Result<Vec<(NaiveDate, object_store::path::Path)>> {
    let top = match store.list_with_delimiter(Some(&table.path())).await {
        Ok(top) => top,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut dates: Vec<_> = top
        .common_prefixes
        .into_iter()
        .filter_map(|dir| {
            let name = dir.filename()?.strip_prefix("dt=")?;
            let dt = NaiveDate::parse_from_str(name, "%Y-%m-%d").ok()?;
            Some((dt, dir))
        })
        .collect();
    dates.sort();
    Ok(dates)
}

/// Every object below the kept date folders. Per folder when a few dates
/// are kept (a query's week reads a week's keys, not the table's history
/// — a year of a table is ~13 000 keys, 13 LIST pages one after the
/// other on S3); one listing of the whole table when most are kept, which
/// needs fewer requests than one per date.
async fn objects_of(
    store: &Arc<dyn ObjectStore>,
    table: &Location,
    folders: Vec<object_store::path::Path>,
    of_dates: usize,
) -> Result<Vec<ObjectMeta>> {
    if folders.len() > 16 && folders.len() * 2 > of_dates {
        return Ok(store.list(Some(&table.path())).try_collect().await?);
    }
    let per_date: Vec<Vec<ObjectMeta>> = futures::stream::iter(folders)
        .map(|dir| store.list(Some(&dir)).try_collect::<Vec<_>>())
        .buffer_unordered(16)
        .try_collect()
        .await?;
    Ok(per_date.into_iter().flatten().collect())
}

/// Every committed partition of the table at `table` whose date `dates`
/// accepts and which `keep` accepts, ordered by partition. The dates are
/// chosen from the table's top-level listing before any date's folder is
/// listed; then the kept folders' objects, then the kept manifests.
pub async fn committed_partitions(
    store: &Arc<dyn ObjectStore>,
    table: &Location,
    dates: impl Fn(&[NaiveDate]) -> Result<Vec<bool>>,
    keep: impl Fn(&[PartitionRef]) -> Result<Vec<bool>>,
) -> Result<Vec<Committed>> {
    let all = date_folders(store, table).await?;
    let days: Vec<NaiveDate> = all.iter().map(|(dt, _)| *dt).collect();
    let mask = dates(&days)?;
    let kept_days: std::collections::HashSet<NaiveDate> = days
        .iter()
        .zip(&mask)
        .filter_map(|(dt, k)| k.then_some(*dt))
        .collect();
    let folders = all
        .into_iter()
        .filter(|(dt, _)| kept_days.contains(dt))
        .map(|(_, dir)| dir)
        .collect();
    let listed = objects_of(store, table, folders, days.len()).await?;
    let prefix = format!("{}/", table.prefix);
    let sizes: HashMap<String, u64> = listed
        .iter()
        .map(|m| (m.location.to_string(), m.size))
        .collect();
    let mut found: Vec<PartitionRef> = listed
        .iter()
        .filter_map(|m| {
            let key = m.location.as_ref();
            partition_of_manifest(key.strip_prefix(prefix.as_str()).unwrap_or(key))
        })
        .filter(|p| kept_days.contains(&p.dt))
        .collect();
    found.sort();
    let mask = keep(&found)?;
    let kept: Vec<PartitionRef> = found
        .into_iter()
        .zip(mask)
        .filter_map(|(p, k)| k.then_some(p))
        .collect();
    let mut out: Vec<Committed> = futures::stream::iter(kept)
        .map(|p| read_committed(store, table, p, &sizes))
        .buffer_unordered(16)
        .try_filter_map(|c| async move { Ok(c) })
        .try_collect()
        .await?;
    out.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok(out)
}

/// A partition's manifest and its files' sizes (from the listing, or a
/// HEAD for a file listed after it); `None` when the manifest was
/// replaced between the listing and the read.
async fn read_committed(
    store: &Arc<dyn ObjectStore>,
    table: &Location,
    p: PartitionRef,
    sizes: &HashMap<String, u64>,
) -> Result<Option<Committed>> {
    let dir = p.location(table);
    let Some(manifest) = commit::read_manifest(store.as_ref(), &dir).await? else {
        return Ok(None);
    };
    let mut files = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let key = format!("{}/{f}", dir.prefix);
        let size = match sizes.get(&key) {
            Some(s) => *s,
            None => store
                .head(&key.as_str().into())
                .await
                .map(|m| m.size)
                .map_err(|e| {
                    Error::Invariant(format!(
                        "partition {dir} lists {f} but it cannot be read ({e}); re-run the job that built it"
                    ))
                })?,
        };
        files.push((key, size));
    }
    Ok(Some(Committed {
        partition: p,
        manifest,
        files,
    }))
}

/// The filters of `filters` that name only `cols`, evaluated on `batch`
/// (whose columns are `cols`): `true` where every such filter holds.
fn mask_of(
    state: &dyn Session,
    filters: &[Expr],
    cols: &[&str],
    batch: &RecordBatch,
) -> DfResult<Vec<bool>> {
    let df_schema = DFSchema::try_from(batch.schema().as_ref().clone())?;
    let mut keep = vec![true; batch.num_rows()];
    for f in filters.iter().filter(|f| expr_applicable_for_cols(cols, f)) {
        let unqualified = f
            .clone()
            .transform(|e| {
                Ok(match e {
                    Expr::Column(c) => {
                        Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                    }
                    e => Transformed::no(e),
                })
            })?
            .data;
        let phys = state.create_physical_expr(unqualified, &df_schema)?;
        let value = phys.evaluate(batch)?.into_array(batch.num_rows())?;
        let mask = value.as_boolean();
        for (i, k) in keep.iter_mut().enumerate() {
            *k &= mask.is_valid(i) && mask.value(i);
        }
    }
    Ok(keep)
}

/// The dates the filters that only name `dt` accept.
fn prune_dates(state: &dyn Session, filters: &[Expr], dates: &[NaiveDate]) -> DfResult<Vec<bool>> {
    let dt = partition_fields().swap_remove(0);
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![dt])),
        vec![Arc::new(Date32Array::from_iter_values(
            dates.iter().map(|d| days_of(*d)),
        ))],
    )?;
    mask_of(state, filters, &["dt"], &batch)
}

/// The partitions the filters that only name `dt` and `region` accept.
fn prune(state: &dyn Session, filters: &[Expr], parts: &[PartitionRef]) -> DfResult<Vec<bool>> {
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(partition_fields())),
        vec![
            Arc::new(Date32Array::from_iter_values(
                parts.iter().map(|p| days_of(p.dt)),
            )),
            Arc::new(StringArray::from_iter_values(
                parts.iter().map(|p| p.region.as_str()),
            )),
        ],
    )?;
    mask_of(state, filters, &["dt", "region"], &batch)
}

impl WarehouseTable {
    /// The files of `parts` this table reads, with their partition values,
    /// and an estimate of their rows: the manifest counts a partition's
    /// rows, not each file's, so a file holds its share by size.
    fn files_read(&self, parts: Vec<Committed>) -> (Vec<PartitionedFile>, f64) {
        let mut files: Vec<PartitionedFile> = Vec::new();
        let mut rows = 0.0;
        for c in parts {
            let values = vec![
                ScalarValue::Date32(Some(days_of(c.partition.dt))),
                ScalarValue::Utf8(Some(c.partition.region.clone())),
            ];
            let bytes: u64 = c.files.iter().map(|(_, size)| size).sum();
            for (key, size) in c.files {
                let name = key.rsplit('/').next().unwrap_or(&key);
                if !self.files.keeps(name) {
                    continue;
                }
                rows += c.manifest.rows as f64 * size as f64 / bytes.max(1) as f64;
                files.push(PartitionedFile::new(key, size).with_partition_values(values.clone()));
            }
        }
        (files, rows)
    }
}

#[async_trait]
impl TableProvider for WarehouseTable {
    fn schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .table
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(partition_fields());
        Arc::new(Schema::new(fields))
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if expr_applicable_for_cols(&["dt", "region"], f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let url = ObjectStoreUrl::parse(&self.location.store_url)?;
        let store = state.runtime_env().object_store(&url)?;
        let parts = committed_partitions(
            &store,
            &self.location,
            |dates| prune_dates(state, filters, dates).map_err(Error::from),
            |parts| prune(state, filters, parts).map_err(Error::from),
        )
        .await
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let (files, rows) = self.files_read(parts);
        let bytes: u64 = files.iter().map(|f| f.object_meta.size).sum();
        let groups_n = state
            .config_options()
            .execution
            .target_partitions
            .clamp(1, files.len().max(1));
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups_n];
        for (i, f) in files.into_iter().enumerate() {
            groups[i % groups_n].push(f);
        }
        let file_schema = match self.views {
            true => as_views(&self.table.schema()),
            false => self.table.schema(),
        };
        let table_schema = TableSchema::builder(file_schema)
            .with_table_partition_cols(partition_fields())
            .build();
        // planner statistics from the manifests (join sides, broadcasts):
        // estimates, since filters and pruning read fewer rows
        let statistics = Statistics::new_unknown(table_schema.table_schema())
            .with_num_rows(Precision::Inexact(rows.round() as usize))
            .with_total_byte_size(Precision::Inexact(bytes as usize));
        // the session's Parquet options (filters pushed into the decoder,
        // page index and Bloom filters read), and footers from the planning
        // runtime's metadata cache: a file name is never reused for other
        // bytes (every commit writes new names), so a cached footer stays
        // true. A plan sent to Ballista executors is rebuilt there with
        // DataFusion's caching reader over the executor's runtime cache,
        // which all its tasks share
        let footers = state.runtime_env().cache_manager.get_file_metadata_cache();
        let source = Arc::new(
            ParquetSource::new(table_schema)
                .with_table_parquet_options(parquet_options(state))
                .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
                    store.clone(),
                    footers,
                ))),
        );
        let config = FileScanConfigBuilder::new(url, source)
            .with_statistics(statistics)
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        strings_from_views(DataSourceExec::from_data_source(config))
    }
}

/// `schema` with its `Utf8` columns read as `Utf8View`.
///
/// Why: the files' strings are dictionary-encoded, and decoding them into
/// `Utf8` copies every value of every row a filter looks at; as views they
/// stay pointers into the page's dictionary, the decoder's filters compare
/// them in place, and only the rows that pass are copied (by the cast in
/// [`strings_from_views`]). The table stays `Utf8` to its users: some
/// clients (`flightsql-dbapi` 0.2.2) cannot read `Utf8View`.
fn as_views(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `scan` with its `Utf8View` columns cast back to the table's `Utf8`. A
/// filter above pushed into the scan reaches it as `CAST(c AS Utf8) = 'v'`,
/// which the Parquet opener turns into `c = 'v'` on the views (so Bloom
/// filters, statistics and the page index still prune).
fn strings_from_views(scan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = scan.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &DataType::Utf8View)
    {
        return Ok(scan);
    }
    let exprs = schema.fields().iter().enumerate().map(|(i, f)| {
        let column: Arc<dyn PhysicalExpr> = Arc::new(PhysicalColumn::new(f.name(), i));
        let expr: Arc<dyn PhysicalExpr> = match f.data_type() {
            DataType::Utf8View => Arc::new(CastExpr::new(column, DataType::Utf8, None)),
            _ => column,
        };
        ProjectionExpr::new(expr, f.name().clone())
    });
    Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
}

/// The session's Parquet options as they stand (a `SET
/// datafusion.execution.parquet.…` included).
fn parquet_options(state: &dyn Session) -> TableParquetOptions {
    let options = state.table_options();
    options
        .combine_with_session_config(state.config_options())
        .parquet
}

/// Registers every warehouse table by name (`ods_*`, `dwd_*`, `ads_*`),
/// and every DIM table whose folder has files (`dim_*`).
pub async fn register_all(
    ctx: &SessionContext,
    stores: &StoreRegistry,
    warehouse: &Location,
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for t in Table::all() {
        let table = WarehouseTable::new(t, warehouse).for_lookups();
        ctx.register_table(t.name(), Arc::new(table))?;
        names.push(t.name().to_string());
    }
    for dim in DIM_TABLES {
        if let Some(table) = dim_table(ctx, stores, warehouse, dim).await? {
            ctx.register_table(dim, table)?;
            names.push(dim.to_string());
        }
    }
    Ok(names)
}

/// A DIM table as supplied: its Parquet files, else its CSV files (every
/// column text, as written); `None` when its folder has neither.
pub async fn dim_table(
    ctx: &SessionContext,
    stores: &StoreRegistry,
    warehouse: &Location,
    name: &str,
) -> Result<Option<Arc<dyn TableProvider>>> {
    let dir = warehouse.join(&format!("dim/{name}"));
    let store = stores.for_location(&dir)?;
    let files: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
    let pick = |ext: &str| -> Vec<&object_store::ObjectMeta> {
        let mut v: Vec<_> = files
            .iter()
            .filter(|f| f.location.as_ref().ends_with(ext))
            .collect();
        v.sort_by(|a, b| a.location.cmp(&b.location));
        v
    };
    let (parquet, csv) = (pick(".parquet"), pick(".csv"));
    let (chosen, options, schema) = if !parquet.is_empty() {
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        (parquet, options, None)
    } else if let Some(first) = csv.first() {
        // the header only: a dim_user of millions of rows is read by the scan
        let head = object_store::ObjectStoreExt::get_range(
            store.as_ref(),
            &first.location,
            0..first.size.min(64 * 1024),
        )
        .await?;
        let url = dir.object_url(first.location.as_ref());
        let fields: Vec<Field> = csv_header(&url, &head)?
            .iter()
            .map(|c| Field::new(c, DataType::Utf8, true))
            .collect();
        let options = ListingOptions::new(Arc::new(CsvFormat::default().with_has_header(true)))
            .with_file_extension(".csv");
        (csv, options, Some(Arc::new(Schema::new(fields))))
    } else {
        return Ok(None);
    };
    let paths = chosen
        .iter()
        .map(|f| ListingTableUrl::parse(dir.object_url(f.location.as_ref())))
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    let mut config = ListingTableConfig::new_with_multi_paths(paths).with_listing_options(options);
    config = match schema {
        Some(s) => config.with_schema(s),
        None => config.infer_schema(&ctx.state()).await?,
    };
    Ok(Some(Arc::new(ListingTable::try_new(config)?)))
}

/// The column names of a DIM CSV file's header, read as a CSV record (so
/// a UTF-8 byte-order mark is dropped and quoted names are unquoted), each
/// trimmed; an error naming `url` when there is no header.
pub fn csv_header(url: &str, bytes: &[u8]) -> Result<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::StringRecord::new();
    let read = reader
        .read_record(&mut record)
        .map_err(|e| Error::config(format!("{url}: unreadable CSV header: {e}")))?;
    let names: Vec<String> = record.iter().map(|c| c.trim().to_string()).collect();
    if !read || names.iter().all(String::is_empty) {
        return Err(Error::config(format!(
            "{url}: empty header line; a DIM CSV file starts with its column names"
        )));
    }
    Ok(names)
}

/// The `event_id` column of the Parquet files or folders `paths` (other
/// columns are not read): the DWD check's written files, the DWD stage's
/// copied ids.
pub fn event_id_table(paths: Vec<ListingTableUrl>) -> Result<Arc<ListingTable>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "event_id",
        DataType::Utf8,
        true,
    )]));
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(paths)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn part(dt: &str, region: &str) -> PartitionRef {
        PartitionRef {
            dt: NaiveDate::parse_from_str(dt, "%Y-%m-%d").unwrap(),
            region: region.into(),
        }
    }

    #[test]
    fn a_file_selection_tells_one_runs_files_by_name() {
        let run = "20260607T101010Z-abcd1234";
        let mine = format!("part-{run}-0-000.zstd.parquet");
        let other = "part-20260607T101010Z-abcd12345-0-000.zstd.parquet";
        let of = FileSelect::OfRun(run.into());
        let not = FileSelect::NotOfRun(run.into());
        assert!(of.keeps(&mine) && !not.keeps(&mine));
        assert!(!of.keeps(other) && not.keeps(other));
        assert!(FileSelect::All.keeps(other));
    }

    #[test]
    fn a_csv_header_drops_a_bom_and_quotes() {
        let names = |b: &str| csv_header("mem://d.csv", b.as_bytes()).unwrap();
        assert_eq!(names("a, b ,c\n1,2,3\n"), ["a", "b", "c"]);
        assert_eq!(names("\u{feff}\"a\",\"b,c\"\r\n"), ["a", "b,c"]);
        let err = csv_header("mem://e.csv", b"\n").unwrap_err().to_string();
        assert!(err.contains("mem://e.csv: empty header line"), "{err}");
    }

    #[test]
    fn filters_prune_partitions() {
        let ctx = SessionContext::new();
        let state = ctx.state();
        let parts = [
            part("2024-06-17", "aps1"),
            part("2024-06-18", "aps1"),
            part("2024-06-18", "use1"),
            part("2024-06-19", "aps1"),
        ];
        let day = |s: &str| {
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
            lit(ScalarValue::Date32(Some(
                (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32,
            )))
        };
        let keep = |filters: &[Expr]| prune(&state, filters, &parts).unwrap();
        assert_eq!(keep(&[]), [true; 4]);
        assert_eq!(
            keep(&[col("dt").eq(day("2024-06-18"))]),
            [false, true, true, false]
        );
        assert_eq!(
            keep(&[
                col("dt").between(day("2024-06-18"), day("2024-06-19")),
                col("region").eq(lit("aps1")),
            ]),
            [false, true, false, true]
        );
        // a filter naming another column does not prune
        assert_eq!(keep(&[col("event_type").eq(lit("click"))]), [true; 4]);
        // qualified columns, as the planner passes them
        assert_eq!(
            keep(&[Expr::Column(Column::new(Some("t"), "region")).eq(lit("use1"))]),
            [false, false, true, false]
        );
        // dates first: only the filters that name `dt` alone decide them
        let dates: Vec<NaiveDate> = parts.iter().map(|p| p.dt).collect();
        let keep_dates = |filters: &[Expr]| prune_dates(&state, filters, &dates).unwrap();
        assert_eq!(
            keep_dates(&[
                col("dt").gt_eq(day("2024-06-18")),
                col("region").eq(lit("use1")),
            ]),
            [false, true, true, true]
        );
        let either = col("dt")
            .eq(day("2024-06-17"))
            .or(col("region").eq(lit("use1")));
        assert_eq!(keep_dates(&[either]), [true; 4]);
    }

    /// A local store that records the prefixes it is asked to list.
    #[derive(Debug)]
    struct Recording {
        inner: object_store::local::LocalFileSystem,
        listed: std::sync::Mutex<Vec<String>>,
    }

    impl std::fmt::Display for Recording {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Recording({})", self.inner)
        }
    }

    impl Recording {
        fn record(&self, prefix: Option<&object_store::path::Path>) {
            let p = prefix.map(|p| p.to_string()).unwrap_or_default();
            self.listed.lock().unwrap().push(p);
        }
    }

    #[async_trait]
    impl ObjectStore for Recording {
        async fn put_opts(
            &self,
            location: &object_store::path::Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<
                'static,
                object_store::Result<object_store::path::Path>,
            >,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
        {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.record(prefix);
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.record(prefix);
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// Commits `dt`/`aps1` of table `t` by hand: one data file of `size`
    /// bytes and its manifest.
    fn commit_by_hand(root: &std::path::Path, dt: &str, size: usize) {
        let dir = root.join(format!("t/dt={dt}/region=aps1"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("part-r-0.parquet"), vec![b'x'; size]).unwrap();
        let manifest = format!(
            r#"{{"run_id":"r","job":"layering","table":"dwd/t","dt":"{dt}","region":"aps1","files":["part-r-0.parquet"],"rows":1,"committed_at":"2024-06-30T00:00:00Z"}}"#
        );
        std::fs::write(dir.join(commit::MANIFEST), manifest).unwrap();
    }

    #[tokio::test]
    async fn a_dated_read_lists_only_its_dates_folders() {
        let tmp = tempfile::tempdir().unwrap();
        for (i, dt) in ["2024-06-17", "2024-06-18", "2024-06-19"]
            .iter()
            .enumerate()
        {
            commit_by_hand(tmp.path(), dt, 10 + i);
        }
        // a folder that is not a date, and one without a manifest
        std::fs::create_dir_all(tmp.path().join("t/_tmp")).unwrap();
        std::fs::create_dir_all(tmp.path().join("t/dt=2024-06-20/region=aps1")).unwrap();
        let recording = Arc::new(Recording {
            inner: object_store::local::LocalFileSystem::new_with_prefix(tmp.path()).unwrap(),
            listed: Default::default(),
        });
        let store: Arc<dyn ObjectStore> = recording.clone();
        let table = Location {
            store_url: "file:///".into(),
            prefix: "t".into(),
        };
        let d18 = NaiveDate::from_ymd_opt(2024, 6, 18).unwrap();
        let one_day = committed_partitions(
            &store,
            &table,
            |dates| Ok(dates.iter().map(|d| *d == d18).collect()),
            |parts| Ok(vec![true; parts.len()]),
        )
        .await
        .unwrap();
        assert_eq!(one_day.len(), 1);
        assert_eq!(one_day[0].partition, part("2024-06-18", "aps1"));
        let key = "t/dt=2024-06-18/region=aps1/part-r-0.parquet".to_string();
        assert_eq!(one_day[0].files, [(key, 11)]);
        // the table's top level, then that date's folder: no other date's
        assert_eq!(*recording.listed.lock().unwrap(), ["t", "t/dt=2024-06-18"]);
        let every = committed_partitions(
            &store,
            &table,
            |dates| Ok(vec![true; dates.len()]),
            |parts| Ok(vec![true; parts.len()]),
        )
        .await
        .unwrap();
        let dates: Vec<String> = every.iter().map(|c| c.partition.dt.to_string()).collect();
        assert_eq!(dates, ["2024-06-17", "2024-06-18", "2024-06-19"]);
        let sizes: Vec<u64> = every.iter().map(|c| c.files[0].1).collect();
        assert_eq!(sizes, [10, 11, 12]);
    }

    #[test]
    fn manifest_paths() {
        let p = partition_of_manifest("dt=2024-06-18/region=aps1/_SUCCESS").unwrap();
        assert_eq!(p.dt, NaiveDate::from_ymd_opt(2024, 6, 18).unwrap());
        assert_eq!(p.region, "aps1");
        assert!(partition_of_manifest("dt=2024-06-18/region=aps1/part-x.parquet").is_none());
        assert!(partition_of_manifest("dt=2024-6-18x/region=aps1/_SUCCESS").is_none());
        assert!(partition_of_manifest("dt=2024-06-18/_SUCCESS").is_none());
    }
}
