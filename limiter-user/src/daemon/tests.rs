use std::path::Path;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::control::protocol::Request;
use crate::daemon::settings::{DaemonArgs, DaemonSettings, StateDir};
use crate::rules::spec::RuleSpec;
use crate::testutil::{MemoryDataplane, TempDir, call};

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
    fn delete_rule(&self, dest: &crate::rules::dest::Dest) -> anyhow::Result<bool> {
        self.inner.delete_rule(dest)
    }
    fn status(&self) -> anyhow::Result<Vec<crate::rules::status::DestinationStatus>> {
        self.inner.status()
    }
    fn rules(&self) -> Vec<RuleSpec> {
        self.inner.rules()
    }
    fn counters(
        &self,
        dest: &crate::rules::dest::Dest,
    ) -> anyhow::Result<Option<crate::rules::status::DestinationStatus>> {
        self.inner.counters(dest)
    }
    fn set_shed(
        &self,
        dest: &crate::rules::dest::Dest,
        shed: Option<(u8, u32)>,
    ) -> anyhow::Result<()> {
        self.inner.set_shed(dest, shed)
    }
}

impl Maintained for Counting {
    fn maintain(&self) -> anyhow::Result<()> {
        self.maintained.fetch_add(1, Ordering::SeqCst);
        anyhow::bail!("maintenance errors are logged, not fatal")
    }
    fn describe(&self) -> Value {
        json!({"kind": "memory", "namespaces_with_sk_lookup": 7})
    }
}

/// What `run` would hand `run_with`, for a config file `config` (if any) in `dir`.
async fn setup(dir: &Path, config: Option<&str>, metrics: bool) -> Setup {
    let config_file = config.map(|text| {
        let path = dir.join("limiter.toml");
        std::fs::write(&path, text).unwrap();
        path
    });
    let flags = DaemonSettings {
        socket: Some(dir.join("limiter.sock")),
        bpffs: Some(dir.join("bpffs")),
        state_dir: Some(StateDir::At(dir.join("state"))),
        ..DaemonSettings::default()
    };
    let config = match &config_file {
        Some(path) => Config::load(path).unwrap(),
        None => Config::default(),
    };
    let settings = Settings::resolve(&flags, &config.daemon);
    let (store, saved) =
        crate::rules::journal::Store::open(settings.state_file.as_ref().unwrap()).unwrap();
    let metrics = match metrics {
        true => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        false => None,
    };
    Setup {
        services: Err("no Kubernetes API in unit tests".into()),
        config_file,
        config,
        server: Server::bind(&settings.socket, None).unwrap(),
        settings,
        store: Some(store),
        saved,
        metrics,
        hangup: None,
    }
}

/// `GET path` over plain TCP; the whole answer.
async fn http_get(addr: &str, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    answer
}

const CONFIG: &str = "[[rules]]\ndestination = \"10.0.0.2:80\"\nmax_connections = 3\n";

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_config_rules_metrics_maintains_and_shuts_down_in_order() {
    let dir = TempDir::new();
    let setup = setup(&dir.0, Some(CONFIG), true).await;
    let socket = setup.settings.socket.clone();
    let dp = Arc::new(Counting::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(run_with(dp.clone(), setup, async {
        let _ = stopped.await;
    }));

    let status = call(&socket, Request::Status).await.unwrap();
    let d = &status["daemon"];
    assert_eq!(status["destinations"][0]["rule"]["max_connections"], 3);
    assert_eq!(status["destinations"][0]["source"], "config");
    assert_eq!(d["dataplane"]["kind"], "memory");
    assert_eq!(d["socket"], json!(socket));
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(d["config"], json!(dir.0.join("limiter.toml")));
    assert_eq!(d["state_file"], json!(dir.0.join("state/rules.json")));
    assert_eq!(d["runtime_deletions"], json!([]));

    let url = d["metrics"].as_str().unwrap();
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .unwrap();
    let scrape = http_get(addr, "GET", "/metrics").await;
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    assert!(
        scrape.contains("content-type: application/openmetrics-text"),
        "{scrape}"
    );
    assert!(
        scrape.contains(
            "limiter_destination_active_connections{destination=\"10.0.0.2:80\",side=\"outbound\"} 1"
        ),
        "{scrape}"
    );
    assert!(scrape.contains("limiter_namespaces 7"), "{scrape}");
    let not_found = http_get(addr, "GET", "/").await;
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
    let not_allowed = http_get(addr, "POST", "/metrics").await;
    assert!(not_allowed.starts_with("HTTP/1.1 405"), "{not_allowed}");
    assert!(not_allowed.contains("allow: GET, HEAD"), "{not_allowed}");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        dp.maintained.load(Ordering::SeqCst) >= 2,
        "maintain runs every second despite errors"
    );
    let scrape = http_get(addr, "GET", "/metrics").await;
    assert!(
        scrape.contains("limiter_maintenance_failures_total "),
        "{scrape}"
    );
    assert!(
        !scrape.contains("limiter_maintenance_failures_total 0"),
        "{scrape}"
    );

    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    assert!(!socket.exists(), "the socket is removed at shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the metrics endpoint is closed at shutdown"
    );
    assert_eq!(
        Arc::strong_count(&dp),
        1,
        "the daemon released the dataplane"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_the_kernel_refuses_is_fatal_at_start() {
    let dir = TempDir::new();
    let setup = setup(&dir.0, Some(CONFIG), false).await;
    let socket = setup.settings.socket.clone();
    let dp = Arc::new(Counting::default());
    dp.inner.fail_apply.store(true, Ordering::SeqCst);
    let err = run_with(dp, setup, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "cannot put the rules in force at start: cannot apply the rule for 10.0.0.2:80: rules map is full"
    );
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_rules_come_back_from_the_state_file_and_reload_keeps_them() {
    let dir = TempDir::new();
    let socket = dir.0.join("limiter.sock");
    {
        // A first daemon: a runtime rule over the config's, and one of its own.
        let setup = setup(&dir.0, Some(CONFIG), false).await;
        let dp = Arc::new(Counting::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run_with(dp, setup, async {
            let _ = stopped.await;
        }));
        for r in [
            json!({"destination": "10.0.0.2:80", "max_connections": 9}),
            json!({"destination": "10.0.0.5:80", "max_connections": 1}),
        ] {
            let rule = serde_json::from_value(r).unwrap();
            call(&socket, Request::Set { rule }).await.unwrap();
        }
        stop.send(()).unwrap();
        daemon.await.unwrap().unwrap();
    }
    // A second daemon on an empty dataplane (the pins are gone, as after a reboot).
    let setup = setup(&dir.0, Some(CONFIG), false).await;
    let dp = Arc::new(Counting::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(run_with(dp.clone(), setup, async {
        let _ = stopped.await;
    }));
    let list = call(
        &socket,
        Request::List {
            with_deletions: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        list[0]["max_connections"], 9,
        "runtime wins over config: {list}"
    );
    assert_eq!(list[0]["source"], "runtime");
    assert_eq!(list[0]["config_rule"]["max_connections"], 3);
    assert_eq!(list[1]["destination"], "10.0.0.5:80");

    // A new config: its rule for 10.0.0.2:80 stays overridden; a new rule is applied.
    let config = format!("{CONFIG}\n[[rules]]\ndestination = \"10.0.0.6:80\"\n");
    std::fs::write(dir.0.join("limiter.toml"), config).unwrap();
    let answer = call(&socket, Request::Reload).await.unwrap();
    assert_eq!(answer["applied"], json!(["10.0.0.6:80"]));
    assert_eq!(answer["overridden"], json!(["10.0.0.2:80"]));
    // A broken one: refused with its place, nothing changes.
    let before = dp.rules();
    std::fs::write(dir.0.join("limiter.toml"), "[[rules]]\ndestination = 5\n").unwrap();
    let err = call(&socket, Request::Reload).await.unwrap_err();
    let want = format!("{}:2:15: ", dir.0.join("limiter.toml").display());
    assert!(format!("{err:#}").starts_with(&want), "{err:#}");
    assert!(
        format!("{err:#}").ends_with("; the running rules are unchanged"),
        "{err:#}"
    );
    assert_eq!(dp.rules(), before);
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
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
    let args = DaemonArgs {
        config: Some(config.clone()),
        settings: DaemonSettings {
            socket: Some(socket.clone()),
            ..DaemonSettings::default()
        },
        ..DaemonArgs::default()
    };
    let err = run(args).await.unwrap_err();
    let want = format!("{}:3:1: unknown field `max_conections`", config.display());
    assert!(format!("{err:#}").starts_with(&want), "{err:#}");
    assert!(!socket.parent().unwrap().exists(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_state_file_stops_the_start_and_names_the_file() {
    let dir = TempDir::new();
    let state = dir.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("rules.json"), "{\"version\": 1, \"rules\": [").unwrap();
    let socket = dir.0.join("run/limiter.sock");
    let args = DaemonArgs {
        settings: DaemonSettings {
            socket: Some(socket.clone()),
            state_dir: Some(StateDir::At(state.clone())),
            ..DaemonSettings::default()
        },
        ..DaemonArgs::default()
    };
    let err = format!("{:#}", run(args).await.unwrap_err());
    let want = format!(
        "the state file {}/rules.json is corrupt (EOF while parsing",
        state.display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert!(!socket.parent().unwrap().exists(), "nothing was created");
}
