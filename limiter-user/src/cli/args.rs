//! The command line. Every argument says its format and gives an example.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cli::render::Format;
use crate::daemon::settings::DaemonArgs;
use crate::paths;
use crate::rules::adaptive::{Adaptive, Fraction, SystemRule};
use crate::rules::breaker::Breaker;
use crate::rules::dest::Dest;
use crate::rules::spec::{DEST_HELP, RuleSpec};

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
The rule is a runtime rule: it overrides the config file's rule for the destination (until \
`limiter revert DEST`) and is kept in the daemon's state file across restarts.\n\n\
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
        long_about = "List every rule, sorted by destination, with its SOURCE: config (the \
daemon's --config file) or runtime (set, apply), and `runtime (overrides config)` where a \
runtime rule hides the config's. Config rules deleted at runtime are named under the table.\n\n\
Example: limiter list -o json"
    )]
    List(OutputArgs),

    /// Remove the rule of a destination; its established connections are not touched.
    #[command(
        long_about = "Remove the rule of a destination. Established connections are not \
touched; new ones are no longer limited. If the config file names DEST, its rule stays off \
(a runtime deletion, kept across reloads and restarts) until `limiter revert DEST`.\n\n\
Example: limiter delete 10.96.12.34:8080"
    )]
    Delete(DeleteArgs),

    /// Apply a file of rules in one step: all of them, or none.
    #[command(
        long_about = "Apply a file of rules in one step, like `kubectl apply`: every rule is \
checked first (a bad one is named with FILE:LINE:COLUMN and nothing changes), then all are put \
in force, or none: if the kernel refuses one, those already changed are put back.\n\n\
The rules become runtime rules: they override the config file's rule for the same destination, \
are kept in the state file and survive restarts and reloads. Rules not in the file are left \
alone. The file holds [[rules]] tables with the fields of the config's (docs/config.md).\n\n\
Example: limiter apply -f rules.toml"
    )]
    Apply(ApplyArgs),

    /// Re-read the daemon's config file and apply its rules (as SIGHUP does).
    #[command(
        long_about = "Make the daemon re-read its --config file (as SIGHUP does). A file with \
an error is refused with FILE:LINE:COLUMN and the rules in force stay as they were. Otherwise \
the file's rules are applied all or nothing, except for destinations that a runtime change \
(`set`, `delete`, `apply`) holds; config rules removed from the file are deleted. [daemon] \
settings take effect at the next start.\n\nExample: limiter reload"
    )]
    Reload,

    /// Drop the runtime change of a destination: its config rule (or none) applies again.
    #[command(
        long_about = "Forget what `set`, `apply` or `delete` did to a destination: the config \
file's rule for it is in force again, or no rule if the config has none.\n\n\
Example: limiter revert 10.96.12.34:8080"
    )]
    Revert(DeleteArgs),

    /// Show or change the node-wide system rule (overload protection of the whole node).
    #[command(
        subcommand,
        long_about = "The node-wide system rule, after Sentinel's: when the node's 1-minute load \
or its CPU is above the rule's bound, the check of every --adaptive destination is armed and \
the node's connections (the sum of their maxInflight, cut by how far the node is over) are \
shared by --priority: sheddable destinations lose first, critical-plus last, each class keeps a \
minimum share. A rule set here overrides the config file's [system] and is kept in the state \
file across restarts until `limiter system delete`.\n\n\
Example: limiter system set --max-load1 8 --max-cpu 0.9"
    )]
    System(SystemCommand),

    /// Show refusal events (destination, source, reason, action, time) and circuit breaker
    /// transitions (destination, endpoint, state, cause, time) reported by the kernel.
    ///
    /// Without --follow: the latest events the daemon kept (up to 1024). With --follow: stream
    /// new events until interrupted. Each CPU reports at most 1000 refusals per second; the
    /// rest are counted as suppressed (and events the daemon could not keep up with as lost),
    /// see the `events` totals in `limiter status -o json`.
    /// e.g. `limiter events --follow -o json`.
    Events(EventsArgs),

    /// Show the counters of every destination that has a rule.
    #[command(
        long_about = "Show the counters of every destination that has a rule: active, \
opened and closed connections per side (IN: arriving at this node; OUT: opened by local \
processes), and OVERFLOW, the connections refused because the limit was reached (Envoy's \
`upstream_cx_overflow`).\n\nExample: limiter status -o json"
    )]
    Status(OutputArgs),

    /// Will limiter work on this node? Probe the kernel and the node, without a daemon.
    #[command(
        long_about = "Report whether this node can run the limiter daemon, without one running: \
the kernel, the cgroup layout, bpffs, BTF, every kernel capability limiter uses (probed by \
loading minimal programs, not read from the version) with what a missing one disables, and every \
other agent's program on the hooks limiter attaches to, in the order they run.\n\n\
Needs root (the probes load programs). Exits 0 when the daemon can run here (perhaps degraded), \
1 when it cannot, naming each problem.\n\nExample: limiter doctor -o json"
    )]
    Doctor(DoctorArgs),

    /// Print a shell completion script.
    #[command(long_about = "Print a completion script for SHELL on stdout.\n\n\
Example: limiter completions bash > /etc/bash_completion.d/limiter")]
    Completions {
        /// Shell to complete for: bash, elvish, fish, powershell or zsh; e.g. bash.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// `limiter set`: the rule's own fields, then `--adaptive` with its parameters and the
/// `--breaker-*` policy, which the rule holds as optional parts.
#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub rule: RuleSpec,

    /// Shed new connections while the workload is saturated (BBR-style overload check: its
    /// CPU above --cpu-threshold and more connections established than maxPass x minRt).
    /// Existing connections are never touched. See docs/overload.md.
    #[arg(long, help_heading = "Overload protection")]
    pub adaptive: bool,

    #[command(flatten)]
    pub adaptive_settings: Adaptive,

    #[command(flatten)]
    pub breaker: Breaker,
}

impl SetArgs {
    /// The rule these flags describe. Breaker timing flags without a policy still make a
    /// breaker, which validation then refuses with the policies to pick.
    pub fn to_rule(&self) -> RuleSpec {
        RuleSpec {
            adaptive: self
                .adaptive
                .then(|| Box::new(self.adaptive_settings.clone())),
            breaker: (self.breaker != Breaker::default()).then(|| Box::new(self.breaker.clone())),
            ..self.rule.clone()
        }
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// TOML file of [[rules]] tables, or - for standard input, e.g. rules.toml.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// cgroup v2 directory the daemon would govern, e.g. /sys/fs/cgroup. [default: the cgroup
    /// v2 mount, as the daemon finds it]
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// bpffs mount point the daemon would pin under, e.g. /sys/fs/bpf. [default: /sys/fs/bpf]
    #[arg(long, value_name = "PATH")]
    pub bpffs: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
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
pub struct EventsArgs {
    /// Keep the connection open and print new events as they happen.
    #[arg(long, short = 'f')]
    pub follow: bool,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Set the runtime system rule (at least one bound).
    Set(SystemSetArgs),
    /// Show the system rule in force, its source and the node's signals.
    Get(OutputArgs),
    /// Remove the runtime system rule; the config's [system], if any, applies again.
    Delete,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct SystemSetArgs {
    /// 1-minute load average above which the node is overloaded, e.g. 8 (Sentinel's
    /// highestSystemLoad; about the number of CPUs is a common choice).
    #[arg(long = "max-load1", value_name = "LOAD")]
    pub max_load1: Option<f64>,

    /// Node CPU, as a fraction of all CPUs (filtered), above which the node is overloaded,
    /// e.g. 0.9.
    #[arg(long = "max-cpu", value_name = "FRACTION")]
    pub max_cpu: Option<Fraction>,
}

impl SystemSetArgs {
    pub fn to_rule(&self) -> SystemRule {
        SystemRule {
            max_load1: self.max_load1,
            max_cpu: self.max_cpu,
        }
    }
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[arg(value_name = "DEST", help = DEST_HELP)]
    pub destination: Dest,
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
