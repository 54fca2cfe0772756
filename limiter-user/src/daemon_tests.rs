use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::api::Request;
use crate::control::tests::{MemoryDataplane, TempDir};

/// The in-memory dataplane, counting maintenance calls.
#[derive(Default)]
struct Counting {
    inner: MemoryDataplane,
    maintained: AtomicUsize,
}

impl Dataplane for Counting {
    fn apply_rule(&self, rule: &RuleSpec) -> anyhow::Result<()> {
        self.inner.apply_rule(rule)
    }
    fn delete_rule(&self, dest: &crate::dest::Dest) -> anyhow::Result<bool> {
        self.inner.delete_rule(dest)
    }
    fn status(&self) -> anyhow::Result<Vec<crate::model::DestinationStatus>> {
        self.inner.status()
    }
    fn rules(&self) -> Vec<RuleSpec> {
        self.inner.rules()
    }
}

impl Maintained for Counting {
    fn maintain(&self) -> anyhow::Result<()> {
        self.maintained.fetch_add(1, Ordering::SeqCst);
        anyhow::bail!("maintenance errors are logged, not fatal")
    }
    fn describe(&self) -> Value {
        json!({"kind": "memory"})
    }
}

fn rules(text: &str) -> Vec<RuleSpec> {
    Config::parse(std::path::Path::new("t.toml"), text)
        .unwrap()
        .rules
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_config_rules_maintains_and_shuts_down_in_order() {
    let dir = TempDir::new();
    let socket = dir.0.join("limiter.sock");
    let dp = Arc::new(Counting::default());
    let server = Server::bind(&socket).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config_rules = rules("[[rules]]\ndestination = \"10.0.0.2:80\"\nmax_connections = 3\n");
    let daemon = tokio::spawn(run_with(
        dp.clone(),
        config_rules,
        server,
        socket.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let s = socket.clone();
    let status = tokio::task::spawn_blocking(move || crate::control::request(&s, &Request::Status))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status["destinations"][0]["rule"]["max_connections"], 3);
    assert_eq!(status["daemon"]["dataplane"], json!({"kind": "memory"}));
    assert_eq!(status["daemon"]["socket"], json!(socket));
    assert_eq!(status["daemon"]["version"], env!("CARGO_PKG_VERSION"));

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        dp.maintained.load(Ordering::SeqCst) >= 2,
        "maintain runs every second despite errors"
    );

    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    assert!(!socket.exists(), "the socket is removed at shutdown");
    assert_eq!(
        Arc::strong_count(&dp),
        1,
        "the daemon released the dataplane"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_the_kernel_refuses_is_fatal_at_start() {
    let dir = TempDir::new();
    let socket = dir.0.join("limiter.sock");
    let dp = Arc::new(Counting::default());
    dp.inner.fail_apply.store(true, Ordering::SeqCst);
    let server = Server::bind(&socket).unwrap();
    let config_rules = rules("[[rules]]\ndestination = \"10.0.0.2:80\"\n");
    let err = run_with(
        dp,
        config_rules,
        server,
        socket.clone(),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "cannot apply the config's rule for 10.0.0.2:80: rules map is full"
    );
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_stops_the_start_before_anything_changes() {
    let dir = TempDir::new();
    let config = dir.0.join("limiter.toml");
    std::fs::write(
        &config,
        "[[rules]]\ndestination = \"10.0.0.2:80\"\nmax_conections = 3\n",
    )
    .unwrap();
    let socket = dir.0.join("run/limiter.sock");
    let opts = Options {
        config: Some(config.clone()),
        socket: Some(socket.clone()),
        ..Options::default()
    };
    let err = run(opts).await.unwrap_err();
    let want = format!("{}:3:1: unknown field `max_conections`", config.display());
    assert!(format!("{err:#}").starts_with(&want), "{err:#}");
    assert!(!socket.parent().unwrap().exists(), "nothing was created");
}
