//! The daemon's settings: the values of `--state-dir`, `--metrics-addr` and `--socket-group`
//! (and of their config fields), and how the command line, the config and the defaults combine.
//!
//! A daemon whose pins are not in the default place (`--bpffs` other than /sys/fs/bpf: a test,
//! a benchmark, a second instance) is not the node's daemon: it gets no state file and no
//! metrics endpoint unless asked, so it never shares the node daemon's file or port.

use std::ffi::CString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::config::DaemonSection;
use crate::paths;

/// `--metrics-addr ADDR:PORT|none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    Off,
    On(SocketAddr),
}

impl FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(MetricsAddr::Off);
        }
        s.parse().map(MetricsAddr::On).map_err(|_| {
            format!(
                "`{s}` is not ADDRESS:PORT or none; e.g. 127.0.0.1:9464, [::1]:9464, 0.0.0.0:9464 or none"
            )
        })
    }
}

/// `--state-dir DIR|none`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateDir {
    Off,
    At(PathBuf),
}

impl FromStr for StateDir {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(StateDir::Off),
            "" => Err(
                "the state folder is empty; give a folder such as /var/lib/limiter, or none".into(),
            ),
            dir => Ok(StateDir::At(dir.into())),
        }
    }
}

/// `--socket-group GROUP`: a group name or number, resolved when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketGroup {
    pub name: String,
    pub gid: u32,
}

impl fmt::Display for SocketGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (gid {})", self.name, self.gid)
    }
}

impl FromStr for SocketGroup {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(gid) = s.parse::<u32>() {
            return Ok(SocketGroup {
                name: s.into(),
                gid,
            });
        }
        let unknown = || {
            format!(
                "no group named `{s}` on this node (see /etc/group); give a group name or number"
            )
        };
        let name = CString::new(s).map_err(|_| unknown())?;
        // SAFETY: group is a C struct of pointers and integers; all zeros (null pointers) is a
        // valid value, which getgrnam_r fills in.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` outlives the reads of `group`.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut group,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc != 0 || found.is_null() {
            return Err(unknown());
        }
        Ok(SocketGroup {
            name: s.into(),
            gid: group.gr_gid,
        })
    }
}

/// Deserializes any of the above from a TOML string, with the type's own message.
macro_rules! deserialize_from_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
deserialize_from_str!(MetricsAddr);
deserialize_from_str!(StateDir);
deserialize_from_str!(SocketGroup);

/// Command-line settings of `limiter daemon`; each overrides the config's `[daemon]` value.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub cgroup: Option<PathBuf>,
    pub bpffs: Option<PathBuf>,
    pub log_level: Option<String>,
    pub state_dir: Option<StateDir>,
    pub metrics_addr: Option<MetricsAddr>,
    pub socket_group: Option<SocketGroup>,
    pub kubeconfig: Option<PathBuf>,
    pub node_name: Option<String>,
}

/// The daemon's settings once the command line, the config and the defaults are combined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub cgroup: Option<PathBuf>,
    /// The state file, or None when none is kept.
    pub state_file: Option<PathBuf>,
    pub metrics_addr: Option<SocketAddr>,
    pub socket_group: Option<SocketGroup>,
    pub kubeconfig: Option<PathBuf>,
    /// This node's name for `svc/` rules: the command line (or NODE_NAME), the config, the
    /// host name.
    pub node_name: String,
}

impl Settings {
    pub fn resolve(opts: &Options, d: &DaemonSection) -> Settings {
        let pick = |cli: &Option<PathBuf>, file: &Option<PathBuf>, default: &str| {
            cli.clone()
                .or_else(|| file.clone())
                .unwrap_or_else(|| default.into())
        };
        let bpffs = pick(&opts.bpffs, &d.bpffs, paths::BPFFS);
        let node_daemon = bpffs == Path::new(paths::BPFFS);
        let state_dir = opts.state_dir.clone().or_else(|| d.state_dir.clone());
        let state_file = match state_dir {
            Some(StateDir::At(dir)) => Some(crate::state::file_in(&dir)),
            Some(StateDir::Off) => None,
            None if node_daemon => Some(crate::state::file_in(Path::new(paths::STATE_DIR))),
            None => None,
        };
        let metrics_addr = match opts.metrics_addr.or(d.metrics_addr) {
            Some(MetricsAddr::On(addr)) => Some(addr),
            Some(MetricsAddr::Off) => None,
            None if node_daemon => paths::METRICS_ADDR.parse().ok(),
            None => None,
        };
        Settings {
            socket: pick(&opts.socket, &d.socket, paths::SOCKET),
            bpffs,
            cgroup: opts.cgroup.clone().or_else(|| d.cgroup.clone()),
            state_file,
            metrics_addr,
            socket_group: opts.socket_group.clone().or_else(|| d.socket_group.clone()),
            kubeconfig: opts.kubeconfig.clone().or_else(|| d.kubeconfig.clone()),
            node_name: opts
                .node_name
                .clone()
                .or_else(|| d.node_name.clone())
                .unwrap_or_else(host_name),
        }
    }
}

/// The kernel's host name, as the kubelet registers the node by default.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
