//! A layering run's counters as a Prometheus text file (`submit
//! --metrics-file PATH`): a batch run ends before any scraper comes, so it
//! leaves its numbers where node_exporter's textfile collector (or any
//! agent that reads the format) picks them up. The file is replaced
//! whole (written beside, then renamed), so a reader never sees half.

use std::path::Path;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::runtime::spill::Spilled;
use crate::error::Result;
use crate::jobs::layering::LayeringReport;
use crate::warehouse::commit::latency;

/// The `reason` label of quarantined rows.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

/// The `table` label of rows written.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

/// The run's counters, summed over its partitions, in the text format.
pub fn render(r: &LayeringReport, spilled: Option<Spilled>, finished_at: i64) -> String {
    let mut reg = Registry::with_prefix("tauc_layering_last_run");
    let mut put = |name: &str, help: &str, v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        reg.register(name, help, g);
    };
    let ods = || r.ods.values();
    put(
        "finished_timestamp_seconds",
        "When the run committed",
        finished_at,
    );
    put(
        "files_listed",
        "Raw message files read",
        ods().map(|s| s.stats.files).sum(),
    );
    put(
        "files_ignored",
        "Other objects in the day folders",
        ods().map(|s| s.stats.files_ignored).sum(),
    );
    put(
        "bytes_read",
        "Bytes of the raw files read",
        ods().map(|s| s.stats.bytes).sum(),
    );
    put(
        "lines_read",
        "Raw lines, blank ones included",
        ods().map(|s| s.stats.lines).sum(),
    );
    put(
        "blank_lines",
        "Blank raw lines",
        ods().map(|s| s.stats.blank_lines).sum(),
    );
    put(
        "valid_rows",
        "Rows written to ods_fe_event_di",
        ods().map(|s| s.valid_rows as i64).sum(),
    );
    let l = &r.listing;
    for (name, help, v) in [
        (
            "list_requests",
            "LIST requests of the incremental listings",
            l.list_requests,
        ),
        (
            "keys_listed",
            "Keys the incremental listings returned",
            l.keys_listed,
        ),
        (
            "full_listings",
            "Raw folders listed whole by an incremental run",
            l.full_listings,
        ),
        (
            "object_lists_read",
            "Object lists of earlier loads read",
            l.object_lists_read,
        ),
    ] {
        put(name, help, v as i64);
    }
    put(
        "ods_milliseconds",
        "Time of the ODS stage",
        (r.ods_secs * 1000.0) as i64,
    );
    put(
        "dwd_milliseconds",
        "Time of the DWD stage",
        (r.dwd_secs * 1000.0) as i64,
    );
    put(
        "dwd_duplicates",
        "ODS rows dropped as copies",
        r.dwd.values().map(|s| s.duplicates).sum(),
    );
    let commits = latency::so_far();
    put(
        "manifests_committed",
        "_SUCCESS manifests the run wrote (its commit points)",
        commits.count as i64,
    );
    put(
        "manifest_commit_milliseconds",
        "Time of those manifest PUTs, summed",
        commits.total.as_millis() as i64,
    );
    put(
        "manifest_commit_max_milliseconds",
        "The longest manifest PUT",
        commits.max.as_millis() as i64,
    );
    if let Some(s) = spilled {
        put(
            "spilled_bytes",
            "Bytes the in-process tasks spilled to disk",
            s.bytes as i64,
        );
    }
    let quarantined = Family::<Reason, Gauge>::default();
    for (reason, n) in ods().flat_map(|s| s.quarantined.iter()) {
        let label = Reason {
            reason: reason.clone(),
        };
        quarantined.get_or_create(&label).inc_by(*n as i64);
    }
    reg.register(
        "quarantined_rows",
        "Rows written to ods_fe_quarantine_di, by reason",
        quarantined,
    );
    let written = Family::<TableLabel, Gauge>::default();
    let trk = r.dwd.values().map(|s| s.trk_rows).sum();
    let cors = r.dwd.values().map(|s| s.cors_rows).sum();
    written
        .get_or_create(&TableLabel {
            table: "dwd_trk_event_di",
        })
        .set(trk);
    written
        .get_or_create(&TableLabel {
            table: "dwd_mon_cors_error_di",
        })
        .set(cors);
    reg.register(
        "dwd_rows_written",
        "Rows written to the DWD tables",
        written,
    );
    let mut out = String::new();
    // writing to a String cannot fail
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// Writes `text` to `path` through a temporary file beside it.
pub fn write(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
