//! How a cluster's executors get their tasks: one setting the scheduler
//! and every executor must agree on, so it lives here, where both
//! processes' crates find it (`tauc-job`'s in-process pair always pushes).

use ballista_core::config::TaskSchedulingPolicy;

use crate::error::{Error, Result};

/// How executors get their tasks; the scheduler and every executor must
/// use the same (`TAUC_TASK_MODE` on every host).
///
/// In Ballista 55's push mode the scheduler loses the surviving executors'
/// slots when a lost executor makes it roll a stage back (it refunds a
/// task's vcores from the stage's task list, which a rolled-back stage no
/// longer has), and a DWD job that lost an executor then stands still in
/// about half the runs (`tauc-job` cancels it: exit 1, nothing
/// committed). In pull mode each executor asks for work when it has a free
/// slot and the same fault completes. (In either mode Ballista can hand
/// back two attempts' output of one re-run writer task; the commit keeps
/// one, see `warehouse::rerun`.) So pull is the default, and TLS needs it
/// (see `engine::runtime::tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskMode {
    /// Executors poll the scheduler when they have a free slot.
    Pull,
    /// The scheduler pushes tasks to executors' gRPC ports.
    Push,
}

impl TaskMode {
    /// Ballista's policy of this mode.
    pub fn policy(self) -> TaskSchedulingPolicy {
        match self {
            TaskMode::Pull => TaskSchedulingPolicy::PullStaged,
            TaskMode::Push => TaskSchedulingPolicy::PushStaged,
        }
    }

    /// The mode to run: the one asked for, checked against TLS (which needs
    /// pull); unset, pull.
    pub fn resolve(asked: Option<TaskMode>, tls: bool) -> Result<TaskMode> {
        match asked {
            Some(TaskMode::Push) if tls => Err(Error::config(
                "--task-mode push cannot be used with TLS (--cluster-ca …): Ballista 55's task-push \
                 port has no TLS; use --task-mode pull, or leave it unset (pull is the default with TLS)",
            )),
            Some(mode) => Ok(mode),
            None => Ok(TaskMode::Pull),
        }
    }
}
