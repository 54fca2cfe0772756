//! The command line. Every argument says its format and gives an example.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::dest::Dest;
use crate::model::{Mode, RuleSpec, Side};
use crate::output::Format;
use crate::paths;

#[derive(Debug, Parser)]
#[command(
    name = "limiter",
    version,
    about = "Node-level TCP connection limits for Linux and Kubernetes, enforced in the kernel by eBPF.",
    long_about = "Node-level TCP connection limits for Linux and Kubernetes, enforced in the kernel \
by eBPF: Istio/Envoy's `maxConnections` without a sidecar.\n\n\
`limiter daemon` runs on each node (as root) and owns the rules; the other commands talk to it \
over its control socket.",
    after_help = "Examples:\n  \
limiter set 10.96.12.34:8080 --max-connections 100\n  \
limiter status\n  \
limiter get 10.96.12.34:8080 -o json"
)]
pub struct Cli {
    /// Control socket of the daemon: a file path, e.g. /run/limiter/limiter.sock.
    /// [default: /run/limiter/limiter.sock, or the daemon config's `socket`]
    #[arg(long, global = true, env = paths::SOCKET_ENV, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon: load the eBPF programs, apply the config's rules, serve the socket.
    #[command(
        long_about = "Run the node daemon (as root): check the config, load and attach the \
eBPF programs (reusing those pinned under <bpffs>/limiter by a previous run), apply the config's \
rules and answer the other commands on the control socket.\n\n\
On SIGTERM or SIGINT it stops answering, removes the socket and exits; the pinned programs keep \
enforcing the rules meanwhile, so a restart never lifts a limit."
    )]
    Daemon(DaemonArgs),

    /// Create or replace the rule of a destination.
    #[command(
        long_about = "Create or replace the rule of a destination. Replacing is atomic, and \
the destination's counters and established connections are kept; a new rule counts the \
connections already open to its destination.\n\n\
Example: limiter set 10.96.12.34:8080 --max-connections 100 --mode reject --side both"
    )]
    Set(SetArgs),

    /// Show the rule and counters of one destination.
    #[command(
        long_about = "Show the rule and counters of one destination that has a rule \
(exit 1 with `no rule for DEST` otherwise).\n\nExample: limiter get 10.96.12.34:8080 -o json"
    )]
    Get(GetArgs),

    /// List every rule.
    #[command(
        long_about = "List every rule, sorted by destination.\n\nExample: limiter list -o json"
    )]
    List(OutputArgs),

    /// Remove the rule of a destination; its established connections are not touched.
    #[command(
        long_about = "Remove the rule of a destination. Established connections are not \
touched; new ones are no longer limited.\n\nExample: limiter delete 10.96.12.34:8080"
    )]
    Delete(DeleteArgs),

    /// Show the counters of every destination that has a rule.
    #[command(
        long_about = "Show the counters of every destination that has a rule: active, \
opened and closed connections per side (IN: arriving at this node; OUT: opened by local \
processes), and OVERFLOW, the connections refused because the limit was reached (Envoy's \
`upstream_cx_overflow`).\n\nExample: limiter status -o json"
    )]
    Status(OutputArgs),

    /// Print a shell completion script.
    #[command(long_about = "Print a completion script for SHELL on stdout.\n\n\
Example: limiter completions bash > /etc/bash_completion.d/limiter")]
    Completions {
        /// Shell to complete for: bash, elvish, fish, powershell or zsh; e.g. bash.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// TOML config file, e.g. /etc/limiter/limiter.toml (see deploy/config/limiter.toml).
    /// [default: none: no rules at start, built-in settings]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

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

    /// Uninstall instead of running: remove everything limiter pinned under <bpffs>/limiter
    /// (its programs detach, every limit is lifted, open connections stay). Refused while a
    /// daemon answers on the socket. e.g. `limiter daemon --cleanup`.
    #[arg(long)]
    pub cleanup: bool,
}

/// A destination argument.
const DEST_HELP: &str = "Destination: ADDRESS:PORT, [IPV6]:PORT, CIDR:PORT or [IPV6-CIDR]:PORT, \
e.g. 10.96.12.34:8080, [fd00::2]:8080 or 10.0.0.0/24:8080";

#[derive(Debug, Args)]
pub struct SetArgs {
    #[arg(value_name = "DEST", help = DEST_HELP)]
    pub destination: Dest,

    /// Most established connections at any instant, per side (Istio's maxConnections):
    /// an integer >= 1, e.g. 100.
    #[arg(long, value_name = "N")]
    pub max_connections: u32,

    /// What happens to a connection over the limit: reject (refused at once) or drop (the SYN
    /// is discarded and the caller retries), e.g. --mode drop.
    #[arg(long, value_enum, default_value_t = Mode::Reject, value_name = "MODE")]
    pub mode: Mode,

    /// Where to enforce: server (connections arriving here), client (connections local
    /// processes open, refused in connect()) or both, e.g. --side server.
    #[arg(long, value_enum, default_value_t = Side::Both, value_name = "SIDE")]
    pub side: Side,

    /// New connections per second admitted (token bucket rate): an integer >= 1, e.g. 200.
    /// [default: no rate limit]
    #[arg(long, value_name = "R")]
    pub syn_rate: Option<u32>,

    /// Token bucket depth for --syn-rate: an integer >= 1, e.g. 400. [default: the rate]
    #[arg(long, value_name = "B", requires = "syn_rate")]
    pub syn_burst: Option<u32>,

    /// Most connections from one source address: an integer from 1 to --max-connections,
    /// e.g. 10. [default: no per-source limit]
    #[arg(long, value_name = "N")]
    pub per_source: Option<u32>,

    /// Enforce nothing: count the connections that would be refused (the `dry_run` counters)
    /// and let them through.
    #[arg(long)]
    pub dry_run: bool,
}

impl SetArgs {
    pub fn to_rule(&self) -> RuleSpec {
        RuleSpec {
            destination: self.destination.clone(),
            max_connections: Some(self.max_connections),
            mode: self.mode,
            side: self.side,
            syn_rate: self.syn_rate,
            syn_burst: self.syn_burst,
            per_source: self.per_source,
            dry_run: self.dry_run,
        }
    }
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format: table (for people) or json (stable fields, see docs/cli.md), e.g. -o json.
    #[arg(short, long, value_enum, default_value_t = Format::Table, value_name = "FORMAT")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(value_name = "DEST", help = DEST_HELP)]
    pub destination: Dest,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[arg(value_name = "DEST", help = DEST_HELP)]
    pub destination: Dest,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn set_builds_the_rule() {
        let cli = Cli::parse_from([
            "limiter",
            "set",
            "[::ffff:10.0.0.2]:80",
            "--max-connections",
            "5",
            "--mode",
            "drop",
            "--syn-rate",
            "10",
            "--syn-burst",
            "20",
        ]);
        let Command::Set(set) = cli.command else {
            panic!("{cli:?}")
        };
        let rule = set.to_rule();
        assert_eq!(rule.destination.to_string(), "10.0.0.2:80");
        assert_eq!(
            (rule.max_connections, rule.mode, rule.side),
            (Some(5), Mode::Drop, Side::Both)
        );
        assert_eq!((rule.syn_rate, rule.syn_burst), (Some(10), Some(20)));
    }

    #[test]
    fn a_bad_destination_is_a_clear_usage_error() {
        let err = Cli::try_parse_from(["limiter", "get", "10.0.0.1:99999"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("port 99999 is out of range 1-65535"),
            "{err}"
        );
    }
}
