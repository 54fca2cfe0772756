//! The Kubernetes API client for `svc/` destinations: from the pod's service account or a
//! kubeconfig, checked to answer before the daemon relies on it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig, KubeconfigError};

/// How long the API server may take to answer the reachability check.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Appended to every "no config" error: what the user can do about it.
const HINT: &str = "svc/ destinations need the in-cluster service account or --kubeconfig";

/// A client for the API server and its URL, without asking the server anything: the daemon
/// starts (and keeps enforcing its address rules) while the API server is down, the watchers
/// retry, and [`check_reachable`] tells the log whether it answers.
///
/// With `kubeconfig`, that file (its current context). Without, the in-cluster service account
/// first, since the DaemonSet is the normal deployment and its service account is what the
/// ClusterRole in deploy/kubernetes grants; else `KUBECONFIG` or `~/.kube/config`, for a daemon
/// run on a node by hand.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<(Client, String)> {
    let config = load_config(kubeconfig).await?;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config)
        .with_context(|| format!("cannot build a Kubernetes client for {url}"))?;
    Ok((client, url))
}

async fn load_config(kubeconfig: Option<&Path>) -> anyhow::Result<Config> {
    let options = KubeConfigOptions::default();
    if let Some(path) = kubeconfig {
        let file = Kubeconfig::read_from(path).map_err(|e| {
            let path = path.display();
            match e {
                // kube's own message quotes the path in Debug form; say it plainly.
                KubeconfigError::ReadConfig(io, _) => {
                    anyhow!("no Kubernetes API access: cannot read kubeconfig {path}: {io}; {HINT}")
                }
                e => {
                    anyhow!("no Kubernetes API access: kubeconfig {path} is unusable: {e}; {HINT}")
                }
            }
        })?;
        return Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| {
                anyhow!(
                    "no Kubernetes API access: kubeconfig {} is unusable: {e}; {HINT}",
                    path.display()
                )
            });
    }
    let in_cluster = match Config::incluster() {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    Config::from_kubeconfig(&options)
        .await
        .map_err(|kubeconfig| {
            let why =
                format!("not in a pod ({in_cluster}) and no usable kubeconfig ({kubeconfig})");
            anyhow!("no Kubernetes API access: {why}; {HINT}")
        })
}

/// Asks the API server for its version: cheap, readable by every identity, and proof that the
/// address and TLS work and the credentials are not rejected (a bad token gets 401 even here).
/// Whether they may watch Services is for the watcher to find out, and to report.
pub async fn check_reachable(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    match tokio::time::timeout(timeout, client.apiserver_version()).await {
        Ok(Ok(_version)) => Ok(()),
        Ok(Err(e)) => Err(anyhow!(e).context("GET /version failed")),
        Err(_elapsed) => Err(anyhow!(
            "no answer to GET /version within {}s",
            timeout.as_secs_f32()
        )),
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
