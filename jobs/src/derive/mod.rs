//! DWD's derived columns (analyses.md "Derived columns"): time zones of
//! regions, URL and error normalisation, geo lookup, User-Agent parsing,
//! and the per-group measures of the reports.
//! Plain functions; `engine::plan::udf` wraps them for plans.

pub mod columns;
pub mod geo;
pub mod measures;
pub mod regions;
pub mod user_agent;

pub use columns::*;
