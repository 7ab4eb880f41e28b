//! What a process runs plans on: the in-process scheduler and executor of
//! `tauc-job` (`local`), its memory limit and private scratch directory
//! (`scratch`), spill accounting (`spill`), TLS between the cluster's
//! processes (`tls`) and the task mode the scheduler and executors share
//! (`task_mode`).

pub mod local;
pub mod scratch;
pub mod spill;
pub mod task_mode;
pub mod tls;
