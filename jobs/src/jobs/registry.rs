//! The registered jobs, in the order `tauc-job jobs` lists them: what the
//! command line lists, offers to `submit` and dispatches to.

use crate::error::{Error, Result};
use crate::jobs::daily::Daily;
use crate::jobs::job::Job;
use crate::jobs::layering::Layering;
use crate::jobs::reports::Reports;

/// Every job.
pub static JOBS: &[&dyn Job] = &[&Layering, &Reports, &Daily];

/// The job named `name`.
pub fn find(name: &str) -> Result<&'static dyn Job> {
    JOBS.iter()
        .copied()
        .find(|j| j.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = JOBS.iter().map(|j| j.name()).collect();
            Error::config(format!(
                "unknown job '{name}' (expected one of {}; `tauc-job jobs` lists them)",
                names.join(", ")
            ))
        })
}
