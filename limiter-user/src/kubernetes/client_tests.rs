use std::path::PathBuf;

use super::*;
use crate::kubernetes::testing::MockApi;
use crate::testutil::TempDir;

/// The whole anyhow chain of building a client for `path` and checking it answers, as the
/// daemon logs it.
async fn connect_error(path: &Path) -> String {
    let connected = async {
        let (client, url) = client(Some(path)).await?;
        check_reachable(&client, API_TIMEOUT)
            .await
            .with_context(|| format!("Kubernetes API server {url}"))
    };
    match connected.await {
        Ok(()) => panic!("connecting with {} should fail", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_missing_kubeconfig_says_what_is_needed() {
    let dir = TempDir::new();
    let path = dir.0.join("no-such-kubeconfig");
    let io = "No such file or directory (os error 2)";
    let expected = format!(
        "no Kubernetes API access: cannot read kubeconfig {}: {io}; {HINT}",
        path.display()
    );
    assert_eq!(connect_error(&path).await, expected);
}

#[tokio::test]
async fn an_unusable_kubeconfig_says_so() {
    let dir = TempDir::new();
    let path = dir.0.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n",
    )
    .unwrap();
    let message = connect_error(&path).await;
    assert!(
        message.starts_with("no Kubernetes API access: kubeconfig"),
        "{message}"
    );
    assert!(message.contains("is unusable"), "{message}");
    assert!(message.ends_with(HINT), "{message}");
}

/// A kubeconfig for `server`, with a bearer token, as `kubectl config view --raw` prints one.
fn kubeconfig(dir: &TempDir, server: &str) -> PathBuf {
    let path = dir.0.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    \
         insecure-skip-tls-verify: true\nusers:\n- name: limiter\n  user:\n    token: abc123\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: limiter\n\
         current-context: test\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn an_api_server_that_refuses_is_named_in_the_error() {
    // A port that was just free: nothing listens, so the connection is refused at once (and the
    // rustls client with its ring provider is built on the way).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new();
    let server = format!("https://127.0.0.1:{port}");
    let message = connect_error(&kubeconfig(&dir, &server)).await;
    assert!(
        message.starts_with(&format!(
            "Kubernetes API server {server}/: GET /version failed"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn reachable_means_the_version_answers() {
    let api = MockApi::default();
    let client = api.client();
    check_reachable(&client, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(api.requests(), ["/version"]);
}

#[tokio::test]
async fn a_silent_api_server_times_out() {
    // The handle is kept and never answers: the request stays in flight.
    type Body = kube::client::Body;
    let (service, _handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let silent = Client::new(service, "default");
    let error = check_reachable(&silent, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "no answer to GET /version within 0.1s");
}
