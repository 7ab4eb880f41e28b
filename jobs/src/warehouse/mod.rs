//! The warehouse: its tables and schemas, the `_SUCCESS` commit protocol,
//! the manifest-following table the SQL surface and the jobs read, the
//! executor-side writer that puts rows into data files, and the leases
//! that keep two runs on the same partitions apart.

pub mod commit;
pub mod lease;
pub mod query;
pub mod table;
pub mod tables;
pub mod writer;
