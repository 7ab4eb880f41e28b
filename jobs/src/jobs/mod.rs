//! The jobs: layering (raw → ODS → DWD), reports (DWD → ADS), `daily`
//! (the two in turn), each one plan per stage with its commit step, and
//! the sample data set. Each job is a [`job::Job`]; [`registry::JOBS`]
//! lists them for the command line.

pub mod daily;
pub mod follow;
pub mod job;
pub mod layering;
pub mod progress;
pub mod registry;
pub mod reports;
pub mod sample;
