//! `dim_user` checked before any work (layers.md: `user_id, gender
//! (M|F|other|empty), birth_date (yyyy-mm-dd or empty)`).
//!
//! A CSV row with fewer or more fields than its header cannot be read as
//! the spec's columns: that stops the run (exit 2, file and line) before
//! the first ODS partition is written. A gender or birth date outside the
//! spec's forms is mapped as the spec maps it (`unknown`, analyses.md) —
//! an independent implementation of the spec gives the same rows — but it
//! is counted and named (file, line, value) in a warning and in the run's
//! summary; `--strict-dims` makes it an error instead.

use std::fmt;

use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use datafusion::parquet::file::metadata::ParquetMetaDataReader;
use object_store::{ObjectMeta, ObjectStore};

use crate::error::{Error, Result};
use crate::store::{Location, StoreRegistry};

/// Genders the spec names; anything else counts as `unknown`.
const GENDERS: [&str; 4] = ["M", "F", "other", ""];

/// What the check found in the CSV files of `dim_user`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DimUserCheck {
    /// Rows read, over all CSV files.
    pub rows: u64,
    /// Rows whose gender is not `M`, `F`, `other` or empty.
    pub bad_gender: Flagged,
    /// Rows whose birth date is neither empty nor a `yyyy-mm-dd` date.
    pub bad_birth_date: Flagged,
}

/// A count of flagged rows and where the first one is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flagged {
    /// Rows flagged.
    pub count: u64,
    /// `file:line 'value'` of the first flagged row.
    pub first: Option<String>,
}

impl Flagged {
    fn flag(&mut self, url: &str, line: u64, value: &str) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(format!("{url}:{line} '{value}'"));
        }
    }
}

impl DimUserCheck {
    /// One sentence per kind of flagged row; empty when none.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (flagged, what) in [
            (&self.bad_gender, "a gender outside M|F|other|empty"),
            (&self.bad_birth_date, "a birth_date that is not yyyy-mm-dd"),
        ] {
            if let Some(first) = &flagged.first {
                out.push(format!(
                    "dim_user: {} row(s) with {what} (first: {first})",
                    flagged.count
                ));
            }
        }
        out
    }
}

impl fmt::Display for DimUserCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dim_user: rows={} bad_gender={} bad_birth_date={}",
            self.rows, self.bad_gender.count, self.bad_birth_date.count
        )
    }
}

/// The columns the layering job reads from `dim_user`.
pub const COLUMNS: [&str; 3] = ["user_id", "gender", "birth_date"];

/// Checks `{warehouse}/dim/dim_user/` before any work: the table exists,
/// every file has the spec's columns (a CSV header may start with a UTF-8
/// byte-order mark or quote its names), and every CSV row is as wide as
/// its header. Parquet files carry typed columns and no short rows; their
/// values are mapped as the spec says, unchecked here.
pub async fn check(stores: &StoreRegistry, warehouse: &Location) -> Result<DimUserCheck> {
    let dir = warehouse.join("dim/dim_user");
    let store = stores.for_location(&dir)?;
    let mut files: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
    files.sort_by(|a, b| a.location.cmp(&b.location));
    let key = |f: &object_store::ObjectMeta| f.location.as_ref().to_string();
    let parquet: Vec<_> = files
        .iter()
        .filter(|f| key(f).ends_with(".parquet"))
        .collect();
    let csv: Vec<_> = files.iter().filter(|f| key(f).ends_with(".csv")).collect();
    if parquet.is_empty() && csv.is_empty() {
        return Err(Error::MissingInput(format!(
            "dim table dim_user not found: no .csv or .parquet file under {dir}; the layering job needs it for gender and age_band (columns user_id,gender,birth_date; `tauc-job sample` writes one)"
        )));
    }
    let mut found = DimUserCheck::default();
    // the scan reads the Parquet files when there are any, else the CSV ones
    if !parquet.is_empty() {
        for f in parquet {
            let url = dir.object_url(f.location.as_ref());
            let names = parquet_columns(store.as_ref(), f)
                .await
                .map_err(|e| Error::BadInput(format!("{url}: not a readable Parquet file: {e}")))?;
            require_columns(&url, &names)?;
        }
        return Ok(found);
    }
    for f in csv {
        let url = dir.object_url(f.location.as_ref());
        let bytes = store.get(&f.location).await?.bytes().await?;
        check_csv(&url, &bytes, &mut found)?;
    }
    Ok(found)
}

/// The top-level column names of a Parquet file, from its footer alone
/// (the last 8 bytes say how long the metadata before them is).
async fn parquet_columns(store: &dyn ObjectStore, f: &ObjectMeta) -> Result<Vec<String>> {
    let bad = || Error::BadInput("too short for a Parquet footer".to_string());
    let tail_at = f.size.checked_sub(8).ok_or_else(bad)?;
    let tail = store.get_range(&f.location, tail_at..f.size).await?;
    let len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    let start = tail_at.checked_sub(len).ok_or_else(bad)?;
    let meta = store.get_range(&f.location, start..tail_at).await?;
    let meta = ParquetMetaDataReader::decode_metadata(&meta)?;
    let root = meta.file_metadata().schema_descr().root_schema();
    Ok(root
        .get_fields()
        .iter()
        .map(|c| c.name().to_string())
        .collect())
}

/// An error naming `url` when a column of [`COLUMNS`] is not in `names`.
fn require_columns(url: &str, names: &[String]) -> Result<()> {
    match COLUMNS.iter().find(|c| !names.iter().any(|n| n == *c)) {
        Some(c) => Err(Error::BadInput(format!(
            "{url}: dim_user has no column '{c}' (expected {}; found {})",
            COLUMNS.join(","),
            names.join(",")
        ))),
        None => Ok(()),
    }
}

/// Checks one CSV file's rows into `found`; a missing column or a row of
/// the wrong width is an error naming the file (and line).
pub fn check_csv(url: &str, bytes: &[u8], found: &mut DimUserCheck) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| Error::BadInput(format!("{url}: unreadable CSV header: {e}")))?
        .clone();
    let names: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    require_columns(url, &names)?;
    let column = |name: &str| names.iter().position(|h| h == name).unwrap_or_default();
    let (gender, birth) = (column("gender"), column("birth_date"));
    for record in reader.records() {
        let record = record.map_err(|e| Error::BadInput(format!("{url}: unreadable CSV: {e}")))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record[0].trim().is_empty() {
            continue;
        }
        if record.len() != header.len() {
            return Err(Error::BadInput(format!(
                "{url}:{line}: {} field(s) where the header has {} ({}); every dim_user row needs each column, empty ones as ,, — fix the row and run again",
                record.len(),
                header.len(),
                header.iter().collect::<Vec<_>>().join(",")
            )));
        }
        found.rows += 1;
        let g = record[gender].trim();
        if !GENDERS.contains(&g) {
            found.bad_gender.flag(url, line, g);
        }
        let b = record[birth].trim();
        if !b.is_empty() && NaiveDate::parse_from_str(b, "%Y-%m-%d").is_err() {
            found.bad_birth_date.flag(url, line, b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_values_outside_the_spec_and_stops_at_a_short_row() {
        let mut found = DimUserCheck::default();
        let csv = "user_id,gender,birth_date\nu1,M,1990-01-01\nu2,X,\nu3,,1990-02-30\nu4,other,\n\nu5,female,2000-1-1\n";
        check_csv("mem://u.csv", csv.as_bytes(), &mut found).unwrap();
        assert_eq!(found.rows, 5);
        assert_eq!(found.bad_gender.count, 2);
        assert_eq!(found.bad_gender.first.as_deref(), Some("mem://u.csv:3 'X'"));
        // 1990-02-30 does not exist; 2000-1-1 parses as a date (chrono
        // accepts unpadded fields), so one bad date
        assert_eq!(found.bad_birth_date.count, 1);
        assert_eq!(
            found.bad_birth_date.first.as_deref(),
            Some("mem://u.csv:4 '1990-02-30'")
        );
        // a byte-order mark and quoted names are the same header
        let mut bom = DimUserCheck::default();
        let csv = "\u{feff}\"user_id\",\"gender\",\"birth_date\"\nu1,X,\n";
        check_csv("mem://b.csv", csv.as_bytes(), &mut bom).unwrap();
        assert_eq!((bom.rows, bom.bad_gender.count), (1, 1));
        let err = check_csv("mem://n.csv", b"id,gender,birth_date\n", &mut bom).unwrap_err();
        assert!(
            err.to_string()
                .contains("mem://n.csv: dim_user has no column 'user_id'"),
            "{err}"
        );
        let short = "user_id,gender,birth_date\nu1,M,1990-01-01\nu2,F\n";
        let err = check_csv("mem://s.csv", short.as_bytes(), &mut found).unwrap_err();
        assert!(
            err.to_string()
                .contains("mem://s.csv:3: 2 field(s) where the header has 3"),
            "{err}"
        );
    }
}
