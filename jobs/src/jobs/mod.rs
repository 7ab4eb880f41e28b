//! The jobs: layering (raw → ODS → DWD), reports (DWD → ADS), and the
//! sample data set, each one plan per stage with its commit step.

pub mod layering;
pub mod progress;
pub mod reports;
pub mod run_metrics;
pub mod sample;
