//! tauc's integration tests, one binary: a real S3-compatible server
//! (`s3s-fs`) on 127.0.0.1, the real `tauc-job`, `tauc-scheduler` and
//! `tauc-executor` processes, a real Kafka-compatible broker (`tansu`),
//! the collection chain's `tauc-collector` and `tauc-uploader`, and a real
//! browser (Chromium driven by playwright-core).

mod chain;
mod cli;
mod cluster;
mod collection;
mod commit;
mod follow;
mod full_run;
mod harness;
mod incremental;
mod layering;
mod layers;
mod layout;
mod reports;
mod sample;
mod serve;
mod serve_auth;
mod writes;
