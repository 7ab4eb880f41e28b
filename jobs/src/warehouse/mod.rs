//! The warehouse: its tables and schemas, the `_SUCCESS` commit protocol,
//! the manifest-following table the SQL surface and the jobs read, the
//! executor-side writer that puts rows into data files (laid out for
//! lookups: sorted, with Bloom filters and page indexes), the leases
//! that keep two runs on the same partitions apart, and the check of the
//! business's `dim_user` rows.

pub mod commit;
pub mod dim_user;
pub mod doubled;
pub mod filter_order;
pub mod layout;
pub mod lease;
pub mod lineage;
pub mod loads;
pub mod query;
pub mod redact;
pub mod rerun;
pub mod table;
pub mod tables;
pub mod writer;
