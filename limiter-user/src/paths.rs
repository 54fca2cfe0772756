//! Every runtime path of limiter, in one place (operators grep for them; docs/operations.md lists
//! them). Pins live in a project folder of their own, never loose in /sys/fs/bpf.

/// Control socket of the daemon (mode 0600, root only; 0660 with `--socket-group`).
pub const SOCKET: &str = "/run/limiter/limiter.sock";
/// Environment variable that overrides [`SOCKET`] for both the daemon and the client commands.
pub const SOCKET_ENV: &str = "LIMITER_SOCKET";
/// bpffs mount point; mounted by the daemon when absent.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Folder under the bpffs mount that holds limiter's pinned maps, programs and links.
pub const PIN_DIR_NAME: &str = "limiter";
/// Where the cgroup v2 hierarchy may be mounted, in the order they are tried: pure v2
/// (most Kubernetes nodes) first, then the hybrid layout's unified hierarchy.
pub const CGROUP2_CANDIDATES: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
/// Folder of the daemon's durable state (the daemon with the default `--bpffs` only; see
/// docs/config.md).
pub const STATE_DIR: &str = "/var/lib/limiter";
/// Name of the state file in the state folder: the rules changed at runtime, as JSON.
pub const STATE_FILE_NAME: &str = "rules.json";
/// Beside the state file: the runtime changes made since it was written (journal.rs).
pub const JOURNAL_FILE_NAME: &str = "rules.journal";
/// Default address of the Prometheus endpoint (`GET /metrics`), loopback only. 9464 is the
/// port the OpenTelemetry Prometheus exporter made customary for an agent's own metrics.
pub const METRICS_ADDR: &str = "127.0.0.1:9464";
