//! Fixture trees for the reader tests: a temporary directory laid out like `/sys/fs/cgroup` or
//! `/proc` on the layout under test.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

pub(super) struct Tree {
    dir: TempDir,
}

impl Tree {
    pub(super) fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().expect("create a temporary directory"),
        }
    }

    pub(super) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Writes `rel` (creating its parents) and returns its path.
    pub(super) fn file(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("a file has a parent"))
            .unwrap_or_else(|e| panic!("create the parent of {}: {e}", path.display()));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    pub(super) fn dir(&self, rel: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        path
    }
}

/// A v2 `cpu.stat` of a group with the cpu controller.
pub(super) fn v2_cpu_stat(
    usage_usec: u64,
    nr_periods: u64,
    nr_throttled: u64,
    throttled_usec: u64,
) -> String {
    format!(
        "usage_usec {usage_usec}\nuser_usec {}\nsystem_usec {}\nnr_periods {nr_periods}\n\
         nr_throttled {nr_throttled}\nthrottled_usec {throttled_usec}\nnr_bursts 0\nburst_usec 0\n",
        usage_usec / 2,
        usage_usec - usage_usec / 2
    )
}

/// A v1 `cpu.stat` (times in ns).
pub(super) fn v1_cpu_stat(nr_periods: u64, nr_throttled: u64, throttled_time: u64) -> String {
    format!(
        "nr_periods {nr_periods}\nnr_throttled {nr_throttled}\nthrottled_time {throttled_time}\n\
         nr_bursts 0\nburst_time 0\n"
    )
}

pub(super) const PRESSURE: &str = "some avg10=12.50 avg60=3.00 avg300=1.00 total=123456\n\
                                   full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
