//! The daemon's settings: each declared once as both a flag and a `[daemon]` field
//! ([`DaemonSettings`]), their value types, and how the command line, the config and the
//! defaults combine ([`Settings::resolve`]).
//!
//! A daemon whose pins are not in the default place (`--bpffs` other than /sys/fs/bpf: a test,
//! a benchmark, a second instance) is not the node's daemon: it gets no state file and no
//! metrics endpoint unless asked, so it never shares the node daemon's file or port.

use std::ffi::CString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;
use serde::Deserialize;

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

/// `limiter daemon`'s settings, declared once: each is a flag and a field of the config's
/// `[daemon]` table (the doc comments are the flags' help; docs/config.md lists the fields), and
/// a flag given overrides the table's value ([`DaemonSettings::over`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSettings {
    /// Control socket. On the command line it is the global `--socket` (every command's), so
    /// it is no flag of its own here.
    #[arg(skip)]
    pub socket: Option<PathBuf>,

    /// cgroup v2 directory whose processes are governed, e.g. /sys/fs/cgroup.
    /// [default: the config's `cgroup`, else the cgroup v2 mount]
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// bpffs mount point; pins go under <PATH>/limiter, e.g. /sys/fs/bpf.
    /// [default: the config's `bpffs`, else /sys/fs/bpf]
    #[arg(long, value_name = "PATH")]
    pub bpffs: Option<PathBuf>,

    /// Log level or tracing filter, e.g. debug or info,limiter=trace.
    /// [default: RUST_LOG, else the config's `log_level`, else info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Folder of the state file (rules.json and its journal rules.journal: the rules changed at
    /// runtime), or `none` to keep none, e.g. /var/lib/limiter. [default: the config's `state_dir`,
    /// else /var/lib/limiter with the default --bpffs, else none]
    #[arg(long, value_name = "DIR|none")]
    pub state_dir: Option<StateDir>,

    /// Address of the Prometheus endpoint (GET /metrics), or `none`, e.g. 127.0.0.1:9464,
    /// [::1]:9464 or none. [default: the config's `metrics_addr`, else 127.0.0.1:9464 with the
    /// default --bpffs, else none]
    #[arg(long, value_name = "ADDR:PORT|none")]
    pub metrics_addr: Option<MetricsAddr>,

    /// Group allowed to use the control socket (mode 0660, owner root:GROUP), a name or a
    /// number, e.g. limiter. [default: the config's `socket_group`, else none: mode 0600, root
    /// only]
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<SocketGroup>,

    /// Kubeconfig for `svc/` destinations, e.g. /etc/limiter/kubeconfig. [default: the pod's
    /// service account in a cluster, else KUBECONFIG or ~/.kube/config; without any, `svc/`
    /// rules are refused and address rules work as usual]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// This node's Kubernetes name: `svc/` rules limit server-side only the endpoints whose
    /// nodeName it is, e.g. worker-3. [default: the config's `node_name`, else the host name]
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
}

impl DaemonSettings {
    /// These settings (the flags), with `file`'s value for each one not given.
    pub fn over(&self, file: &DaemonSettings) -> DaemonSettings {
        fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<T> {
            flag.as_ref().or(file.as_ref()).cloned()
        }
        DaemonSettings {
            socket: pick(&self.socket, &file.socket),
            cgroup: pick(&self.cgroup, &file.cgroup),
            bpffs: pick(&self.bpffs, &file.bpffs),
            log_level: pick(&self.log_level, &file.log_level),
            state_dir: pick(&self.state_dir, &file.state_dir),
            metrics_addr: pick(&self.metrics_addr, &file.metrics_addr),
            socket_group: pick(&self.socket_group, &file.socket_group),
            kubeconfig: pick(&self.kubeconfig, &file.kubeconfig),
            node_name: pick(&self.node_name, &file.node_name),
        }
    }
}

/// `limiter daemon`'s command line: the config file, the settings, and `--cleanup`.
#[derive(Clone, Debug, Default, Args)]
pub struct DaemonArgs {
    /// TOML config file, e.g. /etc/limiter/limiter.toml (see deploy/config/limiter.toml).
    /// [default: none: no rules at start, built-in settings]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: DaemonSettings,

    /// Uninstall instead of running: remove everything limiter pinned under <bpffs>/limiter
    /// (its programs detach, every limit is lifted, open connections stay). Refused while a
    /// daemon answers on the socket. e.g. `limiter daemon --cleanup`.
    #[arg(long)]
    pub cleanup: bool,
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
    /// The settings in force: the flags over the config file's `[daemon]`, over the defaults.
    pub fn resolve(flags: &DaemonSettings, file: &DaemonSettings) -> Settings {
        let given = flags.over(file);
        let bpffs = given.bpffs.unwrap_or_else(|| paths::BPFFS.into());
        let node_daemon = bpffs == Path::new(paths::BPFFS);
        let state_file = match given.state_dir {
            Some(StateDir::At(dir)) => Some(crate::rules::state::file_in(&dir)),
            Some(StateDir::Off) => None,
            None if node_daemon => Some(crate::rules::state::file_in(Path::new(paths::STATE_DIR))),
            None => None,
        };
        let metrics_addr = match given.metrics_addr {
            Some(MetricsAddr::On(addr)) => Some(addr),
            Some(MetricsAddr::Off) => None,
            None if node_daemon => paths::METRICS_ADDR.parse().ok(),
            None => None,
        };
        Settings {
            socket: given.socket.unwrap_or_else(|| paths::SOCKET.into()),
            bpffs,
            cgroup: given.cgroup,
            state_file,
            metrics_addr,
            socket_group: given.socket_group,
            kubeconfig: given.kubeconfig,
            node_name: given.node_name.unwrap_or_else(host_name),
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
