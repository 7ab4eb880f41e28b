//! `tauc-job` as a client of a cluster: the scheduler's job view as it
//! reads it (`job_view`), the scheduler client for status and cancel
//! (`remote`), and the one path every job's queries run through, which
//! names, watches and cancels their Ballista jobs (`submitted`).

pub mod job_view;
pub mod remote;
pub mod submitted;
