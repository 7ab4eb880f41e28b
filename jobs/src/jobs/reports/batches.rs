//! The query results turned into each ADS table's rows of a partition
//! (ratios, ranks, money, hour buckets, zero rows).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};

use super::anomaly;
use super::funnels::Funnel;
use super::settlement::Contract;
use crate::error::Result;
use crate::warehouse::commit::PartitionRef;
use crate::warehouse::tables::Table;

use super::TOP_N;
use super::plans::Builder;

impl Builder {
    pub(super) fn target_batch(&self, p: &PartitionRef) -> Result<RecordBatch> {
        let mut rows = self.targets.get(p).cloned().unwrap_or_default();
        rows.sort_by(|a, b| (&a.target_type, &a.target_id).cmp(&(&b.target_type, &b.target_id)));
        let ratio = |n: i64, d: i64| (d > 0).then(|| n as f64 / d as f64);
        batch(
            Table::AdsTargetClick,
            vec![
                utf8(rows.iter().map(|r| r.target_type.clone())),
                utf8(rows.iter().map(|r| r.target_id.clone())),
                int64(rows.iter().map(|r| r.clicks)),
                int64(rows.iter().map(|r| r.impressions)),
                int64(rows.iter().map(|r| r.clickers)),
                float64(rows.iter().map(|r| ratio(r.clicks, r.clickers))),
                float64(rows.iter().map(|r| ratio(r.clicks, r.impressions))),
            ],
        )
    }

    pub(super) fn page_batch(&self, p: &PartitionRef) -> Result<RecordBatch> {
        let mut rows = self.pages.get(p).cloned().unwrap_or_default();
        rows.sort_by(|a, b| a.page_path.cmp(&b.page_path));
        batch(
            Table::AdsPage,
            vec![
                utf8(rows.iter().map(|r| r.page_path.clone())),
                int64(rows.iter().map(|r| r.pv)),
                int64(rows.iter().map(|r| r.uv)),
                int64(rows.iter().map(|r| r.clicks)),
                float64(rows.iter().map(|r| r.avg_duration_ms)),
            ],
        )
    }

    pub(super) fn funnel_batch(&self, p: &PartitionRef, funnels: &[Funnel]) -> Result<RecordBatch> {
        let (mut id, mut step, mut users, mut start, mut prev) =
            (vec![], vec![], vec![], vec![], vec![]);
        let ratio = |n: i64, d: i64| (d > 0).then(|| n as f64 / d as f64);
        for f in funnels {
            let hist = self.funnels.get(&(p.clone(), f.id.clone()));
            let reaching =
                |k: usize| -> i64 { hist.map_or(0, |h| h.range(k as i64..).map(|(_, n)| n).sum()) };
            let first = reaching(1);
            for k in 1..=f.steps.len() {
                let n = reaching(k);
                id.push(Some(f.id.clone()));
                step.push(k as i64);
                users.push(n);
                start.push(ratio(n, first));
                prev.push(if k == 1 {
                    ratio(n, first)
                } else {
                    ratio(n, reaching(k - 1))
                });
            }
        }
        batch(
            Table::AdsFunnel,
            vec![
                utf8(id),
                int64(step),
                int64(users),
                float64(start),
                float64(prev),
            ],
        )
    }

    pub(super) fn summary_batch(&self, p: &PartitionRef) -> Result<RecordBatch> {
        let s = self.summary.get(p).cloned().unwrap_or_default();
        let per_1k = (s.page_views > 0).then(|| s.errors as f64 * 1000.0 / s.page_views as f64);
        batch(
            Table::AdsCorsSummary,
            vec![
                int64([s.errors]),
                int64([s.affected_users]),
                int64([s.fingerprints]),
                int64([s.page_views]),
                float64([per_1k]),
            ],
        )
    }

    pub(super) fn topn_batch(&self, p: &PartitionRef) -> Result<RecordBatch> {
        let mut rows = self.top.get(p).cloned().unwrap_or_default();
        rows.sort_by(|a, b| {
            b.errors
                .cmp(&a.errors)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        rows.truncate(TOP_N);
        let mut cols = vec![
            int64(1..=rows.len() as i64),
            utf8(rows.iter().map(|r| Some(r.fingerprint.clone()))),
        ];
        for i in 0..5 {
            cols.push(utf8(rows.iter().map(|r| r.parts[i].clone())));
        }
        cols.push(int64(rows.iter().map(|r| r.errors)));
        cols.push(int64(rows.iter().map(|r| r.affected_users)));
        cols.push(timestamps(rows.iter().map(|r| r.first_seen), true));
        cols.push(timestamps(rows.iter().map(|r| r.last_seen), true));
        batch(Table::AdsCorsTopN, cols)
    }

    pub(super) fn settlement_batch(
        &self,
        p: &PartitionRef,
        contracts: &[Contract],
    ) -> Result<RecordBatch> {
        let mut active: Vec<&Contract> = contracts.iter().filter(|c| c.active_on(p.dt)).collect();
        active.sort_by(|a, b| a.contract_id.cmp(&b.contract_id));
        let mut counts = Vec::new();
        let mut bills = Vec::new();
        for c in &active {
            let n = self
                .billing
                .get(&(p.clone(), c.target_id.clone()))
                .copied()
                .unwrap_or_default();
            let valid_clicks = n.gross_clicks - n.bot_clicks - n.dup_clicks;
            let valid_impressions = n.gross_impressions - n.bot_impressions;
            bills.push(c.bill(valid_clicks, valid_impressions)?);
            counts.push((n, valid_clicks, valid_impressions));
        }
        let s = |f: fn(&Contract) -> String| utf8(active.iter().map(|c| Some(f(c))));
        batch(
            Table::AdsSettlement,
            vec![
                s(|c| c.contract_id.clone()),
                s(|c| c.partner_id.clone()),
                s(|c| c.target_id.clone()),
                s(|c| c.pricing.as_str().to_string()),
                s(|c| c.currency.clone()),
                money(active.iter().map(|c| c.unit_price))?,
                int64(counts.iter().map(|c| c.0.gross_clicks)),
                int64(counts.iter().map(|c| c.0.bot_clicks)),
                int64(counts.iter().map(|c| c.0.dup_clicks)),
                int64(counts.iter().map(|c| c.1)),
                int64(counts.iter().map(|c| c.0.gross_impressions)),
                int64(counts.iter().map(|c| c.0.bot_impressions)),
                int64(counts.iter().map(|c| c.2)),
                int64(bills.iter().map(|b| b.0)),
                money(bills.iter().map(|b| b.1))?,
            ],
        )
    }
}

pub(super) fn anomaly_batch(rows: &[anomaly::AnomalyRow]) -> Result<RecordBatch> {
    batch(
        Table::AdsCorsAnomaly,
        vec![
            utf8(rows.iter().map(|r| Some(r.series.clone()))),
            timestamps(rows.iter().map(|r| r.hour_start), true),
            timestamps(rows.iter().map(|r| r.hour_start_local), false),
            int64(rows.iter().map(|r| r.errors)),
            int64(rows.iter().map(|r| r.baseline_n)),
            float64(rows.iter().map(|r| r.baseline_median)),
            float64(rows.iter().map(|r| r.mad)),
            float64(rows.iter().map(|r| r.robust_z)),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| Some(r.is_alert)).collect::<Vec<_>>(),
            )),
        ],
    )
}

fn batch(table: Table, cols: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(table.schema(), cols)?)
}

fn utf8(v: impl IntoIterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<StringArray>())
}

fn int64(v: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}

fn float64(v: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<Float64Array>())
}

fn timestamps(v: impl IntoIterator<Item = i64>, utc: bool) -> ArrayRef {
    let a = TimestampMillisecondArray::from_iter_values(v);
    Arc::new(if utc { a.with_timezone("UTC") } else { a })
}

fn money(v: impl IntoIterator<Item = i128>) -> Result<ArrayRef> {
    Ok(Arc::new(
        Decimal128Array::from_iter_values(v).with_precision_and_scale(18, 6)?,
    ))
}
