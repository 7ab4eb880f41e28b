//! tauc's integration tests, one binary: a real S3-compatible server
//! (`s3s-fs`) on 127.0.0.1, the real `tauc-job`, `tauc-scheduler` and
//! `tauc-executor` processes.

mod cli;
mod cluster;
mod commit;
mod harness;
mod layering;
mod reports;
mod writes;
