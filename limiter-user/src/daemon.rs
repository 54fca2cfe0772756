//! The node daemon: config, dataplane, control socket, maintenance, orderly shutdown.
//!
//! Order matters. The config is read and validated before anything else, so a bad file changes
//! nothing. The socket is bound before the kernel is touched, so a second daemon on the same
//! socket stops before it attaches a second set of programs. On shutdown the daemon stops
//! answering, removes its socket and releases the dataplane; the programs and maps are pinned,
//! so the limits keep being enforced until a daemon starts again.

use std::future::Future;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::control::{Handler, Server};
use crate::model::{Dataplane, RuleSpec};
use crate::paths;

/// Command-line settings of `limiter daemon`; each overrides the config's `[daemon]` value.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub cgroup: Option<PathBuf>,
    pub bpffs: Option<PathBuf>,
    pub log_level: Option<String>,
}

/// How often the dataplane's housekeeping runs (expired reservations, state sync).
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

/// What the daemon needs from a dataplane beyond the [`Dataplane`] contract.
pub(crate) trait Maintained: Dataplane {
    fn maintain(&self) -> anyhow::Result<()>;
    fn describe(&self) -> Value;
}

impl Maintained for crate::dataplane::EbpfDataplane {
    fn maintain(&self) -> anyhow::Result<()> {
        crate::dataplane::EbpfDataplane::maintain(self)
    }
    fn describe(&self) -> Value {
        crate::dataplane::EbpfDataplane::describe(self)
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let config = match &opts.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let d = &config.daemon;
    let socket = opts
        .socket
        .or_else(|| d.socket.clone())
        .unwrap_or_else(|| paths::SOCKET.into());
    let bpffs = opts
        .bpffs
        .or_else(|| d.bpffs.clone())
        .unwrap_or_else(|| paths::BPFFS.into());
    let cgroup = opts.cgroup.or_else(|| d.cgroup.clone());
    let filter = match opts.log_level {
        Some(level) => EnvFilter::try_new(&level)
            .with_context(|| format!("--log-level {level:?} is not a level or filter"))?,
        None => EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(d.log_level.as_deref().unwrap_or("info")))?,
    };
    init_logging(filter);
    let shutdown = shutdown_signal()?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = opts.config.as_ref().map(|p| p.display().to_string()),
        rules = config.rules.len(),
        "starting"
    );

    let server = Server::bind(&socket)?;
    let options = crate::dataplane::Options { cgroup, bpffs };
    let dataplane =
        tokio::task::spawn_blocking(move || crate::dataplane::EbpfDataplane::start(&options))
            .await?
            .context("cannot start the dataplane")?;
    run_with(Arc::new(dataplane), config.rules, server, socket, shutdown).await
}

/// Applies the config's rules, then serves until `shutdown`. Split from [`run`] so that it can
/// be tested with an in-memory dataplane.
pub(crate) async fn run_with<D: Maintained>(
    dataplane: Arc<D>,
    rules: Vec<RuleSpec>,
    server: Server,
    socket: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let dp = dataplane.clone();
    // Rules were validated with the config; a failure here is the kernel's, and fatal: a daemon
    // that silently runs without a configured limit would leave a service unprotected.
    tokio::task::spawn_blocking(move || {
        for rule in &rules {
            dp.apply_rule(rule).with_context(|| format!("cannot apply the config's rule for {}", rule.destination))?;
            info!(destination = %rule.destination, rule = crate::output::rule_summary(rule), "rule applied from config");
        }
        anyhow::Ok(())
    })
    .await??;

    let described = dataplane.clone();
    let daemon = move || {
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "socket": socket,
            "dataplane": described.describe(),
        })
    };
    let handler = Arc::new(Handler::new(dataplane.clone(), daemon));
    let maintenance = tokio::spawn(maintain_forever(dataplane.clone()));
    info!("ready");
    server.serve(handler, shutdown).await;
    maintenance.abort();
    let _ = maintenance.await;
    drop(dataplane);
    info!(
        "dataplane released; the pinned eBPF programs keep enforcing the rules until the next start"
    );
    Ok(())
}

/// Calls `maintain()` every second; an error is logged and retried on the next tick, since a
/// transient failure must not take the daemon (and its socket) down.
async fn maintain_forever<D: Maintained>(dataplane: Arc<D>) {
    let mut tick = tokio::time::interval(MAINTAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dp = dataplane.clone();
        match tokio::task::spawn_blocking(move || dp.maintain()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("dataplane maintenance failed: {e:#}"),
            Err(e) => warn!("dataplane maintenance panicked: {e}"),
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT. Registered early, so a signal during start is not
/// lost: the daemon then finishes starting and shuts down in order.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down");
    })
}

/// Logs to stdout (where container runtimes collect them); also receives `log` records, such
/// as aya-log's, through tracing-subscriber's log bridge.
fn init_logging(filter: EnvFilter) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
