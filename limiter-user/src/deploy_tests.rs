//! The Kubernetes manifests of deploy/kubernetes checked against the daemon itself, so the two
//! cannot drift apart: the ConfigMap carries the shipped config byte for byte and the daemon's
//! own parser accepts it; the DaemonSet's command line is one the CLI accepts, and every path
//! the daemon will use with it (config, socket, pins, state file, cgroup root, metrics) is
//! mounted where the daemon looks. Schemas are checked by scripts/validate-manifests.sh.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser as _;
use serde_norway::Value;

use crate::cli::args::{Cli, Command};
use crate::daemon::config::Config;
use crate::daemon::settings::Settings;

const SHIPPED_CONFIG: &str = include_str!("../../deploy/config/limiter.toml");
const KUSTOMIZATION: &str = include_str!("../../deploy/kubernetes/kustomization.yaml");
const CONFIGMAP: &str = include_str!("../../deploy/kubernetes/configmap.yaml");
const DAEMONSET: &str = include_str!("../../deploy/kubernetes/daemonset.yaml");

/// The key of the config in the ConfigMap's data.
const CONFIG_KEY: &str = "limiter.toml";

fn yaml(file: &str, text: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// `v` at a dotted path of mapping keys, e.g. `spec.template.spec` (Null if absent).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| &v[key])
}

fn string<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {v:?}"))
}

fn list<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: expected a list, found {v:?}"))
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    list(v, what)
        .iter()
        .map(|s| string(s, what).to_owned())
        .collect()
}

fn configmap_config() -> &'static str {
    static CONFIG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| {
        let cm = yaml("configmap.yaml", CONFIGMAP);
        assert_eq!(at(&cm, "kind").as_str(), Some("ConfigMap"));
        string(&cm["data"][CONFIG_KEY], "configmap.yaml data.limiter.toml").to_owned()
    })
}

fn pod_spec() -> Value {
    let ds = yaml("daemonset.yaml", DAEMONSET);
    assert_eq!(at(&ds, "kind").as_str(), Some("DaemonSet"));
    at(&ds, "spec.template.spec").clone()
}

fn daemon_container(pod: &Value) -> &Value {
    list(&pod["containers"], "containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("limiter"))
        .expect("daemonset.yaml: no container named `limiter`")
}

/// A volume mount of the daemon's container, with its volume.
struct Mount {
    path: PathBuf,
    read_only: bool,
    propagation: Option<String>,
    volume: Value,
}

fn mounts(pod: &Value, container: &Value) -> Vec<Mount> {
    let volumes = list(&pod["volumes"], "volumes");
    list(&container["volumeMounts"], "volumeMounts")
        .iter()
        .map(|m| {
            let name = string(&m["name"], "volumeMounts[].name");
            let volume = volumes
                .iter()
                .find(|v| v["name"].as_str() == Some(name))
                .unwrap_or_else(|| panic!("volumeMount {name} names no volume"))
                .clone();
            Mount {
                path: PathBuf::from(string(&m["mountPath"], "volumeMounts[].mountPath")),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
                propagation: m["mountPropagation"].as_str().map(str::to_owned),
                volume,
            }
        })
        .collect()
}

/// The mount under which `path` lies (the deepest one), if any.
fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.path))
        .max_by_key(|m| m.path.components().count())
}

/// `path` lies on a hostPath volume mounted at the node's same path, writable: what the daemon
/// writes there outlives the pod, and node tools find it where docs/operations.md says.
fn assert_on_writable_host_path(mounts: &[Mount], path: &Path, what: &str) {
    let m = mount_of(mounts, path)
        .unwrap_or_else(|| panic!("{what} {} is on no volume mount", path.display()));
    let host = m.volume["hostPath"]["path"].as_str().unwrap_or_else(|| {
        panic!(
            "{what} {}: mount {} is not a hostPath volume",
            path.display(),
            m.path.display()
        )
    });
    assert_eq!(
        Path::new(host),
        m.path,
        "{what}: hostPath {host} must be mounted at the same path"
    );
    assert!(
        !m.read_only,
        "{what}: mount {} is read-only",
        m.path.display()
    );
}

/// The daemon's command line in the DaemonSet, parsed by the daemon's own CLI, and the settings
/// it resolves to with the ConfigMap's config.
fn daemon_settings(container: &Value) -> (PathBuf, Settings) {
    let mut argv = strings(&container["command"], "command");
    argv.extend(strings(&container["args"], "args"));
    assert_eq!(argv[0], "limiter", "the container runs {argv:?}");
    let cli = Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("daemonset.yaml runs {argv:?}, which the CLI refuses: {e}"));
    let Command::Daemon(args) = cli.command else {
        panic!("daemonset.yaml runs {argv:?}, not `limiter daemon`");
    };
    assert!(
        !args.cleanup,
        "daemonset.yaml runs `limiter daemon --cleanup`"
    );
    let config_path = args
        .config
        .clone()
        .expect("daemonset.yaml runs the daemon without --config");
    let config = Config::parse(&config_path, configmap_config())
        .unwrap_or_else(|e| panic!("the ConfigMap's config: {e}"));
    let mut flags = args.settings;
    flags.socket = cli.socket;
    (config_path, Settings::resolve(&flags, &config.daemon))
}

#[test]
fn deploy_configmap_holds_the_shipped_config_byte_for_byte() {
    let embedded = configmap_config();
    if embedded != SHIPPED_CONFIG {
        let line = embedded
            .lines()
            .zip(SHIPPED_CONFIG.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "one is a prefix of the other".to_owned(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!(
            "deploy/kubernetes/configmap.yaml's {CONFIG_KEY} differs from deploy/config/limiter.toml \
             ({line}); regenerate it: {{ sed -n '1,/^  limiter.toml: |$/p' deploy/kubernetes/configmap.yaml; \
             sed 's/^./    &/' deploy/config/limiter.toml; }} > /tmp/cm && mv /tmp/cm deploy/kubernetes/configmap.yaml"
        );
    }
    Config::parse(Path::new("deploy/kubernetes/configmap.yaml"), embedded)
        .unwrap_or_else(|e| panic!("the daemon refuses the ConfigMap's config: {e}"));
}

#[test]
fn deploy_daemon_reads_its_config_from_the_configmap_mount() {
    let pod = pod_spec();
    let container = daemon_container(&pod);
    let (config_path, _) = daemon_settings(container);
    let mounts = mounts(&pod, container);
    let dir = config_path.parent().expect("--config is a file path");
    let m = mounts.iter().find(|m| m.path == dir).unwrap_or_else(|| {
        panic!(
            "--config {}: {} is not mounted",
            config_path.display(),
            dir.display()
        )
    });
    let cm = yaml("configmap.yaml", CONFIGMAP);
    assert_eq!(
        m.volume["configMap"]["name"].as_str(),
        at(&cm, "metadata.name").as_str(),
        "the volume at {} is not the ConfigMap of configmap.yaml",
        dir.display()
    );
    assert_eq!(
        config_path.file_name().and_then(|n| n.to_str()),
        Some(CONFIG_KEY),
        "--config names a file the ConfigMap does not have"
    );
    assert!(m.read_only, "the config mount should be read-only");
}

#[test]
fn deploy_daemon_paths_are_mounted_from_the_node() {
    let pod = pod_spec();
    let container = daemon_container(&pod);
    let (_, settings) = daemon_settings(container);
    let mounts = mounts(&pod, container);

    let socket_dir = settings.socket.parent().expect("socket path has a folder");
    assert_on_writable_host_path(&mounts, socket_dir, "control socket folder");
    assert_on_writable_host_path(&mounts, &settings.bpffs, "bpffs");
    let bpffs = mount_of(&mounts, &settings.bpffs).unwrap();
    assert_eq!(
        bpffs.path, settings.bpffs,
        "bpffs must be the mount itself (the node's bpffs), not a folder inside another volume"
    );
    // Bidirectional needs a privileged container; the node's bpffs is mounted before the pod
    // starts, so HostToContainer is enough (docs/kubernetes.md).
    assert_eq!(bpffs.propagation.as_deref(), Some("HostToContainer"));
    let state_file = settings
        .state_file
        .as_ref()
        .expect("the node daemon keeps a state file");
    assert_on_writable_host_path(
        &mounts,
        state_file.parent().expect("state file has a folder"),
        "state folder",
    );

    // The programs attach to the node's cgroup v2 root: the daemon looks for it where the
    // node has it, so the node's cgroup tree must be mounted at the same path.
    let cgroup = settings
        .cgroup
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::paths::CGROUP2_CANDIDATES[0]));
    let m = mount_of(&mounts, &cgroup)
        .unwrap_or_else(|| panic!("cgroup {} is not mounted", cgroup.display()));
    assert_eq!(m.volume["hostPath"]["path"].as_str(), m.path.to_str());
    for candidate in crate::paths::CGROUP2_CANDIDATES {
        assert!(
            Path::new(candidate).starts_with(&m.path),
            "cgroup candidate {candidate} is outside the node's cgroup mount"
        );
    }

    // The readiness probe asks the metrics endpoint the daemon serves.
    let probe = &container["readinessProbe"]["httpGet"];
    let probed = format!(
        "{}:{}",
        string(&probe["host"], "readinessProbe.httpGet.host"),
        probe["port"].as_u64().expect("readinessProbe.httpGet.port")
    );
    assert_eq!(
        settings.metrics_addr.map(|a| a.to_string()),
        Some(probed),
        "the readiness probe does not ask the daemon's metrics address"
    );
    assert_eq!(probe["path"].as_str(), Some("/metrics"));
}

#[test]
fn deploy_daemon_runs_in_the_node_namespaces_with_exactly_its_capabilities() {
    let pod = pod_spec();
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(
        pod["hostPID"].as_bool(),
        Some(true),
        "netns discovery scans /proc"
    );
    let sc = &daemon_container(&pod)["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    assert_eq!(sc["runAsUser"].as_u64(), Some(0));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&sc["capabilities"]["drop"], "drop"), ["ALL"]);
    // Each measured necessary (docs/kubernetes.md). SYS_ADMIN, in particular, must stay out:
    // with it the daemon would mount a bpffs private to the pod when the node has none, and
    // every pin (so every limit) would vanish with the pod.
    let added: BTreeSet<String> = strings(&sc["capabilities"]["add"], "add")
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = ["BPF", "NET_ADMIN", "PERFMON", "SYS_PTRACE"]
        .map(String::from)
        .into();
    assert_eq!(added, expected);
}

#[test]
fn deploy_probes_ask_the_daemon_and_images_are_this_version() {
    let pod = pod_spec();
    let container = daemon_container(&pod);
    for probe in ["startupProbe", "livenessProbe"] {
        let command = strings(&container[probe]["exec"]["command"], probe).join(" ");
        assert!(
            command.contains("limiter status"),
            "{probe} runs `{command}`, which does not ask the daemon"
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    let containers = list(&pod["containers"], "containers")
        .iter()
        .chain(list(&pod["initContainers"], "initContainers"));
    for c in containers {
        let image = string(&c["image"], "image");
        assert!(
            image.ends_with(&format!(":{version}")),
            "container {:?} runs {image}, not limiter {version}",
            c["name"]
        );
    }
}

#[test]
fn deploy_kustomization_lists_every_manifest() {
    let kustomization = yaml("kustomization.yaml", KUSTOMIZATION);
    let listed: BTreeSet<String> = strings(&kustomization["resources"], "resources")
        .into_iter()
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml resources vs the files of deploy/kubernetes"
    );
}
