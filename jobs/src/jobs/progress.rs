//! What a running job shows: a spinner with the stage, files and rows on a
//! terminal; plain log lines (at most one every few seconds) otherwise, so
//! journald and CI logs stay readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of one job run.
pub struct Progress {
    bar: Option<ProgressBar>,
    log: bool,
    stage: String,
    files: u64,
    rows: u64,
    last_log: Instant,
}

impl Progress {
    /// A spinner when stderr is a terminal, else log lines.
    pub fn auto() -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg} {prefix}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            Progress::with(Some(bar), false)
        } else {
            Progress::with(None, true)
        }
    }

    /// The terminal's spinner, if any (a cluster job's progress from the
    /// scheduler is drawn on it too).
    pub fn bar(&self) -> Option<ProgressBar> {
        self.bar.clone()
    }

    /// Shows nothing (library callers, tests).
    pub fn hidden() -> Progress {
        Progress::with(None, false)
    }

    fn with(bar: Option<ProgressBar>, log: bool) -> Progress {
        Progress {
            bar,
            log,
            stage: String::new(),
            files: 0,
            rows: 0,
            last_log: Instant::now(),
        }
    }

    /// A new stage starts.
    pub fn stage(&mut self, stage: impl Into<String>) {
        self.stage = stage.into();
        self.files = 0;
        self.rows = 0;
        if self.log {
            tracing::info!(stage = %self.stage, "stage started");
        }
        self.render();
    }

    /// More files read and rows received in the current stage.
    pub fn advance(&mut self, files: u64, rows: u64) {
        self.files += files;
        self.rows += rows;
        if self.log && self.last_log.elapsed() > Duration::from_secs(5) {
            self.last_log = Instant::now();
            tracing::info!(stage = %self.stage, files = self.files, rows = self.rows, "progress");
        }
        self.render();
    }

    fn render(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{}: {} files read, {} rows",
                self.stage, self.files, self.rows
            ));
        }
    }

    /// Clears the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
