//! Memory and scratch space of a process.
//!
//! Shuffle files (intermediate event data) and spill files live in one
//! private directory per process, `tauc-XXXXXX` (mode 0700) under
//! `--work-dir` (`TAUC_WORK_DIR`, default the system temporary directory),
//! removed when the process ends: `shuffle/` for Ballista's stage outputs,
//! `spill/` for operators that outgrow the memory pool. The name carries
//! the process id (`tauc-{pid}-XXXXXX`), so the next process to start in
//! the same place removes the directories of killed ones.

use std::path::{Path, PathBuf};

pub use tauc_common::config::parse_size;

use crate::error::{Error, Result};

/// What a process may use: memory for queries, and where its scratch
/// directory goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Bytes the query memory pool hands out before operators spill;
    /// `None`: [`default_memory_limit`].
    pub memory_limit: Option<usize>,
    /// Parent of the scratch directory; `None`: the system temporary
    /// directory.
    pub work_dir: Option<PathBuf>,
}

impl Resources {
    /// The memory limit in force.
    pub fn memory_limit(&self) -> usize {
        self.memory_limit.unwrap_or_else(default_memory_limit)
    }
}

/// A quarter of the machine's memory (1 GiB when it cannot be read): room
/// for the process itself, the page cache and, on a worker, the other
/// slots' buffers.
pub fn default_memory_limit() -> usize {
    total_memory().map_or(1 << 30, |m| m / 4)
}

fn total_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Removes the scratch directories of processes that died without
/// cleaning up (SIGKILL, a crash): `tauc-{pid}-*` whose pid no longer
/// runs on this host. Best effort; errors are ignored.
fn remove_orphans(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("tauc-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if !alive && e.file_type().is_ok_and(|t| t.is_dir()) {
            tracing::info!(dir = %e.path().display(), "removing the scratch directory of a process that is gone");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A private scratch directory, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates `tauc-XXXXXX` (mode 0700) under `parent` or the system
    /// temporary directory, with `shuffle/` and `spill/` inside.
    pub fn new(parent: Option<&Path>) -> Result<Scratch> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        std::fs::create_dir_all(&parent).map_err(|e| {
            Error::config(format!(
                "cannot create the work directory {} ({e}); set --work-dir / TAUC_WORK_DIR to a writable directory",
                parent.display()
            ))
        })?;
        remove_orphans(&parent);
        let dir = tempfile::Builder::new()
            .prefix(&format!("tauc-{}-", std::process::id()))
            .tempdir_in(&parent)
            .map_err(|e| {
                Error::config(format!(
                    "cannot create a scratch directory in {} ({e}); set --work-dir / TAUC_WORK_DIR to a writable directory",
                    parent.display()
                ))
            })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        }
        for sub in ["shuffle", "spill"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        Ok(Scratch { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where shuffle files go.
    pub fn shuffle(&self) -> PathBuf {
        self.dir.path().join("shuffle")
    }

    /// Where spill files go.
    pub fn spill(&self) -> PathBuf {
        self.dir.path().join("spill")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_private_and_removed() {
        let parent = tempfile::tempdir().unwrap();
        let s = Scratch::new(Some(parent.path())).unwrap();
        let path = s.path().to_path_buf();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        assert!(s.shuffle().is_dir() && s.spill().is_dir());
        std::fs::write(s.shuffle().join("x"), "data").unwrap();
        drop(s);
        assert!(!path.exists());
    }

    #[test]
    fn orphans_of_dead_processes_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        // pid 4194304 is above Linux's pid_max: never a running process
        let dead = parent.path().join("tauc-4194304-abc");
        let mine = parent
            .path()
            .join(format!("tauc-{}-keep", std::process::id()));
        let other = parent.path().join("unrelated");
        for d in [&dead, &mine, &other] {
            std::fs::create_dir_all(d.join("shuffle")).unwrap();
        }
        let s = Scratch::new(Some(parent.path())).unwrap();
        assert!(!dead.exists());
        assert!(mine.exists() && other.exists() && s.path().exists());
    }
}
