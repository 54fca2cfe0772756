//! The node daemon: config, state, dataplane, control socket, metrics, reload, orderly shutdown.
//! Its settings are `settings.rs` (each both a flag and a `[daemon]` field), its config file
//! `config.rs`; this file assembles the rest.
//!
//! Order matters. The config and the state file are read and checked before anything else, so
//! a bad file changes nothing. The socket and the metrics port are bound before the kernel is
//! touched, so a second daemon stops before it attaches a second set of programs. On shutdown
//! the daemon stops answering, removes its socket and releases the dataplane; the programs and
//! maps are pinned, so the limits keep being enforced until a daemon starts again.

pub mod config;
pub mod settings;

use std::future::Future;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::control::handler::Handler;
use crate::control::server::Server;
use crate::daemon::config::Config;
use crate::daemon::settings::DaemonArgs;
use crate::daemon::settings::Settings;
use crate::dataplane::Dataplane;
use crate::metrics::{Health, Metrics};
use crate::rules::rulebook::RuleBook;
use crate::rules::state::RuntimeState;

/// How often the dataplane's housekeeping runs (expired reservations, state sync).
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

/// What the daemon needs from a dataplane beyond the [`Dataplane`] contract.
pub(crate) trait Maintained: Dataplane {
    fn maintain(&self) -> anyhow::Result<()>;
    fn describe(&self) -> Value;
    /// The refusal events of this dataplane, if it has any (`limiter events`).
    fn event_hub(self: &Arc<Self>) -> Option<crate::control::events::EventHub> {
        None
    }
}

impl Maintained for crate::dataplane::EbpfDataplane {
    fn maintain(&self) -> anyhow::Result<()> {
        crate::dataplane::EbpfDataplane::maintain(self)
    }
    fn describe(&self) -> Value {
        crate::dataplane::EbpfDataplane::describe(self)
    }
    fn event_hub(self: &Arc<Self>) -> Option<crate::control::events::EventHub> {
        let (recent, subscribe, totals) = (self.clone(), self.clone(), self.clone());
        Some(crate::control::events::EventHub {
            recent: Box::new(move || recent.recent_events()),
            subscribe: Box::new(move || subscribe.subscribe_events()),
            totals: Box::new(move || totals.event_totals()),
        })
    }
}

/// Everything checked and bound before the dataplane starts.
pub(crate) struct Setup {
    pub config_file: Option<PathBuf>,
    pub config: Config,
    pub settings: Settings,
    /// The state file and its journal (None: `--state-dir none`), and the runtime layer they
    /// hold.
    pub store: Option<crate::rules::journal::Store>,
    pub saved: RuntimeState,
    pub server: Server,
    pub metrics: Option<TcpListener>,
    /// SIGHUP, when the daemon reloads on it.
    pub hangup: Option<Signal>,
    /// Access to the Kubernetes API for `svc/` rules, or why there is none.
    pub services: Result<crate::kubernetes::ApiAccess, String>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let settings = Settings::resolve(&args.settings, &config.daemon);
    let filter = match &args.settings.log_level {
        Some(level) => EnvFilter::try_new(level)
            .with_context(|| format!("--log-level {level:?} is not a level or filter"))?,
        None => EnvFilter::try_from_default_env().or_else(|_| {
            EnvFilter::try_new(config.daemon.log_level.as_deref().unwrap_or("info"))
        })?,
    };
    let (store, saved) = match &settings.state_file {
        Some(path) => {
            let (store, saved) = crate::rules::journal::Store::open(path)?;
            (Some(store), saved)
        }
        None => (None, RuntimeState::default()),
    };
    init_logging(filter);
    let shutdown = shutdown_signal()?;
    // Registered now: SIGHUP's default action would end the daemon while it starts.
    let hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = args.config.as_ref().map(|p| p.display().to_string()),
        rules = config.rules.len(),
        state_file = settings
            .state_file
            .as_ref()
            .map(|p| p.display().to_string()),
        runtime_rules = saved.rules.len(),
        "starting"
    );

    let server = Server::bind(&settings.socket, settings.socket_group.as_ref())?;
    let metrics = match settings.metrics_addr {
        Some(addr) => Some(crate::metrics::http::bind(addr).await?),
        None => None,
    };
    let options = crate::dataplane::Options {
        cgroup: settings.cgroup.clone(),
        bpffs: settings.bpffs.clone(),
    };
    let dataplane =
        tokio::task::spawn_blocking(move || crate::dataplane::EbpfDataplane::start(&options))
            .await?
            .context("cannot start the dataplane")?;
    let services = kube_access(&settings).await?;
    let setup = Setup {
        services,
        config_file: args.config,
        config,
        settings,
        store,
        saved,
        server,
        metrics,
        hangup: Some(hangup),
    };
    run_with(Arc::new(dataplane), setup, shutdown).await
}

/// Puts the start's rules in force, then serves until `shutdown`. Split from [`run`] so that it
/// can be tested with an in-memory dataplane.
pub(crate) async fn run_with<D: Maintained>(
    dataplane: Arc<D>,
    setup: Setup,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Setup {
        config_file,
        config,
        settings,
        store,
        saved,
        server,
        metrics,
        hangup,
        services,
    } = setup;
    let with_services = Arc::new(crate::kubernetes::ServiceDataplane::new(
        dataplane.clone(),
        services,
    ));
    let dp: Arc<dyn Dataplane> = with_services.clone();
    let overload = Arc::new(crate::overload::Overload::new(config.overload.clone()));
    // Rules were validated with the config and the state file; a failure here is the kernel's,
    // and fatal: a daemon that silently runs without a configured limit leaves a service
    // unprotected. Nothing was changed (all or nothing).
    let (book, outcome) =
        tokio::task::spawn_blocking(move || RuleBook::start(dp, config_file, config, store, saved))
            .await?
            .context("cannot put the rules in force at start")?;
    info!(applied = ?outcome.applied, deleted = ?outcome.deleted, unchanged = outcome.unchanged, "rules in force");
    with_services.started();
    let book = Arc::new(book);

    let metrics_url = match &metrics {
        Some(l) => Some(format!("http://{}/metrics", l.local_addr()?)),
        None => None,
    };
    let (described, daemon_book) = (dataplane.clone(), book.clone());
    let socket = settings.socket.clone();
    let daemon = move || {
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "socket": socket,
            "config": daemon_book.config_file(),
            "state_file": daemon_book.state_file(),
            "metrics": metrics_url,
            "runtime_deletions": daemon_book.runtime_deletions(),
            "dataplane": described.describe(),
        })
    };
    overload
        .spawn(&book)
        .context("cannot start the overload loop")?;
    let handler = Arc::new(
        Handler::new(book.clone(), daemon)
            .with_events(dataplane.event_hub())
            .with_overload(overload.clone()),
    );
    let failures = Arc::new(AtomicU64::new(0));
    let maintenance = tokio::spawn(maintain_forever(dataplane.clone(), failures.clone()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let served_metrics = metrics.map(|listener| {
        let described = dataplane.clone();
        let health = move || Health {
            namespaces: described.describe()["namespaces_with_sk_lookup"].as_u64(),
            maintenance_failures: failures.load(Ordering::Relaxed),
        };
        let metrics = Arc::new(Metrics::new(book.clone(), Some(overload.clone()), health));
        let mut stopped = stopped.clone();
        tokio::spawn(crate::metrics::http::serve(listener, metrics, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    });
    let reloads = hangup.map(|hup| tokio::spawn(reload_on_hangup(hup, book.clone())));
    drop(book);
    info!("ready");
    server
        .serve(handler, async {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await;
    for task in [Some(maintenance), reloads].into_iter().flatten() {
        task.abort();
        let _ = task.await;
    }
    if let Some(task) = served_metrics {
        let _ = task.await;
    }
    drop(dataplane);
    info!(
        "dataplane released; the pinned eBPF programs keep enforcing the rules until the next start"
    );
    Ok(())
}

/// The Kubernetes API for `svc/` rules. An explicit `--kubeconfig` that cannot be used stops
/// the start (the operator asked for it); finding no configuration at all only turns `svc/`
/// rules off, with the reason kept for their error. The API server need not answer yet: the
/// watchers retry, and address rules never wait for it.
async fn kube_access(
    settings: &Settings,
) -> anyhow::Result<Result<crate::kubernetes::ApiAccess, String>> {
    let explicit = settings.kubeconfig.is_some();
    match crate::kubernetes::client(settings.kubeconfig.as_deref()).await {
        Ok((client, url)) => {
            info!(api = %url, node = %settings.node_name, "Kubernetes API configured: svc/ destinations are resolved");
            let check = client.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    crate::kubernetes::check_reachable(&check, crate::kubernetes::API_TIMEOUT).await
                {
                    warn!(api = %url, error = %format!("{e:#}"), "Kubernetes API not answering yet; svc/ rules stay pending until it does");
                }
            });
            Ok(Ok(crate::kubernetes::ApiAccess {
                client,
                node: settings.node_name.clone(),
                runtime: tokio::runtime::Handle::current(),
            }))
        }
        Err(e) if explicit => Err(e),
        Err(e) => {
            info!(reason = %format!("{e:#}"), "no Kubernetes API: svc/ destinations are refused");
            Ok(Err(format!("{e:#}")))
        }
    }
}

/// Reloads the config on each SIGHUP; a refused reload is logged and changes nothing.
async fn reload_on_hangup(mut hangup: Signal, book: Arc<RuleBook>) {
    while hangup.recv().await.is_some() {
        info!("SIGHUP: reloading the config");
        let book = book.clone();
        match tokio::task::spawn_blocking(move || book.reload()).await {
            Ok(Ok(reloaded)) => info!(?reloaded, "config reloaded"),
            Ok(Err(e)) => error!("reload refused: {e:#}"),
            Err(e) => warn!("reload panicked: {e}"),
        }
    }
}

/// Calls `maintain()` every second; an error is logged, counted and retried on the next tick,
/// since a transient failure must not take the daemon (and its socket) down.
async fn maintain_forever<D: Maintained>(dataplane: Arc<D>, failures: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(MAINTAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dp = dataplane.clone();
        let failed = match tokio::task::spawn_blocking(move || dp.maintain()).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("dataplane maintenance failed: {e:#}"),
            Err(e) => format!("dataplane maintenance panicked: {e}"),
        };
        failures.fetch_add(1, Ordering::Relaxed);
        warn!("{failed}");
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
#[path = "tests.rs"]
mod tests;
