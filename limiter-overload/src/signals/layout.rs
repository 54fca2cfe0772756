//! Which cgroup layout a node has. The CPU files live in different places on each, so this is
//! decided once, from the mount root, before any file is read.

use std::fmt;
use std::path::{Path, PathBuf};

use super::read::SignalError;

/// Names the v1 CPU controllers are mounted under: separate (`cpu`, `cpuacct`, as on this
/// project's build machines) or co-mounted (`cpu,cpuacct`, as systemd does on most distributions;
/// `cpu` and `cpuacct` are then symlinks to it).
pub(crate) const V1_USAGE_DIRS: [&str; 3] = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"];
pub(crate) const V1_QUOTA_DIRS: [&str; 3] = ["cpu", "cpu,cpuacct", "cpuacct,cpu"];
/// Where systemd's hybrid mode mounts the cgroup2 hierarchy beside the v1 controllers.
pub(crate) const HYBRID_UNIFIED_DIR: &str = "unified";

/// The cgroup layout of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CgroupLayout {
    /// cgroup2 only, mounted at the root: `<root>/cgroup.controllers` exists. Most production
    /// Kubernetes nodes (systemd >= 247 and containerd default to it).
    V2,
    /// v1 controllers under `<root>/<controller>` plus a cgroup2 hierarchy at `<root>/unified`
    /// that carries no cpu controller but does carry `cpu.stat` and `cpu.pressure`.
    Hybrid,
    /// v1 controllers only.
    V1,
}

impl CgroupLayout {
    /// Detects the layout under `root` (production: [`super::CGROUP_ROOT`]).
    ///
    /// v2 is checked first because on a v2 root there is nothing else; hybrid before v1 because a
    /// hybrid node is also a v1 node, and the unified part adds pressure.
    pub fn detect(root: &Path) -> Result<CgroupLayout, SignalError> {
        if root.join("cgroup.controllers").is_file() {
            Ok(CgroupLayout::V2)
        } else if root
            .join(HYBRID_UNIFIED_DIR)
            .join("cgroup.controllers")
            .is_file()
        {
            Ok(CgroupLayout::Hybrid)
        } else if V1_USAGE_DIRS
            .iter()
            .chain(V1_QUOTA_DIRS.iter())
            .any(|d| root.join(d).is_dir())
        {
            Ok(CgroupLayout::V1)
        } else {
            Err(SignalError::NoCgroupFs {
                root: root.to_owned(),
            })
        }
    }

    /// The directory of the cgroup2 hierarchy, where v2 files (`cpu.stat`, `cpu.max`,
    /// `cpu.pressure`) are; `None` on pure v1.
    pub fn unified_root(self, root: &Path) -> Option<PathBuf> {
        match self {
            CgroupLayout::V2 => Some(root.to_owned()),
            CgroupLayout::Hybrid => Some(root.join(HYBRID_UNIFIED_DIR)),
            CgroupLayout::V1 => None,
        }
    }
}

impl CgroupLayout {
    /// How people call the layout (the Display form).
    pub fn name(self) -> &'static str {
        match self {
            CgroupLayout::V2 => "cgroup v2",
            CgroupLayout::Hybrid => "hybrid (cgroup v1 + unified v2)",
            CgroupLayout::V1 => "cgroup v1",
        }
    }
}

impl fmt::Display for CgroupLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
