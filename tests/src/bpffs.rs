//! A private bpffs instance, so a test's pins never meet the machine's or another test's.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// bpffs mounted at a test's own folder; unmounted on drop (which releases every pin in it).
pub struct BpffsMount {
    path: PathBuf,
}

impl BpffsMount {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        nix::mount::mount(
            Some("bpf"),
            &path,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("mount -t bpf bpf {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        // Lazy: succeeds even if something still has a file open in it.
        if let Err(e) = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH) {
            eprintln!("warning: umount {}: {e}", self.path.display());
        }
    }
}
