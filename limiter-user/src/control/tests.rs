//! The control socket end to end: a real listener in a temporary folder, the real client, and
//! an in-memory dataplane standing in for the kernel.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::*;
use crate::dataplane::Dataplane;
use crate::rules::dest::Dest;
use crate::rules::spec::RuleSpec;
use crate::testutil::{MemoryDataplane, TempDir, book, call};

struct Running {
    socket: PathBuf,
    dataplane: Arc<MemoryDataplane>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

fn start() -> Running {
    let dir = TempDir::new();
    // A nested folder, to check that bind creates it.
    let socket = dir.0.join("run/limiter.sock");
    let dataplane = Arc::new(MemoryDataplane::default());
    let handler = Arc::new(Handler::new(
        book(dataplane.clone()),
        || json!({"version": "test"}),
    ));
    let server = Server::bind(&socket, None).expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(handler, async {
        let _ = stopped.await;
    }));
    Running {
        socket,
        dataplane,
        stop,
        served,
        _dir: dir,
    }
}

/// `limiter list -o json`'s request.
const LIST: Request = Request::List {
    with_deletions: false,
};

/// Sends raw bytes and returns the raw answer line.
async fn call_raw(socket: &Path, bytes: Vec<u8>) -> String {
    let mut s = UnixStream::connect(socket).await.unwrap();
    // The server may answer and close before reading everything; that is fine.
    let _ = s.write_all(&bytes).await;
    let _ = s.shutdown().await;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    answer
}

fn rule(json: Value) -> RuleSpec {
    serde_json::from_value(json).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn set_get_list_delete_status_round_trip() {
    let d = start();
    let set = Request::Set {
        rule: rule(json!({"destination": "[::ffff:10.0.0.2]:8080", "max_connections": 5})),
    };
    let stored = call(&d.socket, set).await.unwrap();
    assert_eq!(stored["destination"], "10.0.0.2:8080");

    let dest: Dest = "10.0.0.2:8080".parse().unwrap();
    let got = call(
        &d.socket,
        Request::Get {
            destination: dest.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(got["outbound"]["active"], 1);
    assert_eq!(got["rule"]["max_connections"], 5);

    call(
        &d.socket,
        Request::Set {
            rule: rule(json!({"destination": "10.0.0.1:80"})),
        },
    )
    .await
    .unwrap();
    let list = call(&d.socket, LIST).await.unwrap();
    let dests: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["destination"].as_str().unwrap())
        .collect();
    assert_eq!(dests, ["10.0.0.1:80", "10.0.0.2:8080"]);

    let status = call(&d.socket, Request::Status).await.unwrap();
    assert_eq!(status["daemon"]["version"], "test");
    assert_eq!(status["destinations"].as_array().unwrap().len(), 2);

    let deleted = call(
        &d.socket,
        Request::Delete {
            destination: dest.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(deleted, json!({"deleted": "10.0.0.2:8080"}));
    let err = call(
        &d.socket,
        Request::Get {
            destination: dest.clone(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(format!("{err:#}"), "no rule for 10.0.0.2:8080");
    let err = call(&d.socket, Request::Delete { destination: dest })
        .await
        .unwrap_err();
    assert_eq!(format!("{err:#}"), "no rule for 10.0.0.2:8080");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_requests_change_nothing() {
    let d = start();
    let base = json!({"destination": "10.0.0.2:8080", "max_connections": 5});
    call(
        &d.socket,
        Request::Set {
            rule: rule(base.clone()),
        },
    )
    .await
    .unwrap();
    let before = d.dataplane.rules();
    for (bad, want) in [
        (
            json!({"destination": "10.0.0.2:8080", "max_connections": 0}),
            "max-connections must be at least 1",
        ),
        (
            json!({"destination": "10.0.0.2:8080", "syn_burst": 3}),
            "syn-burst needs syn-rate",
        ),
        (
            json!({"destination": "10.0.0.2:8080", "max_connections": 2, "per_source": 3}),
            "per-source (3) cannot exceed max-connections (2)",
        ),
    ] {
        let err = call(&d.socket, Request::Set { rule: rule(bad) })
            .await
            .unwrap_err();
        assert!(format!("{err:#}").starts_with(want), "{err:#}");
    }
    d.dataplane.fail_apply.store(true, Ordering::SeqCst);
    let changed = json!({"destination": "10.0.0.2:8080", "max_connections": 6});
    let err = call(
        &d.socket,
        Request::Set {
            rule: rule(changed),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "cannot apply the rule for 10.0.0.2:8080: rules map is full"
    );
    assert_eq!(d.dataplane.rules(), before);
    // Setting the rule in force again changes nothing, so the kernel is not even asked.
    call(&d.socket, Request::Set { rule: rule(base) })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_requests_are_refused() {
    let d = start();
    let answer = call_raw(&d.socket, b"{\"op\":\"nope\"}\n".to_vec()).await;
    assert!(
        answer.starts_with(r#"{"ok":false,"error":"invalid request: unknown variant `nope`"#),
        "{answer}"
    );
    let answer = call_raw(&d.socket, b"\n".to_vec()).await;
    assert!(answer.contains("empty request"), "{answer}");
    let mut big = br#"{"op":"status","pad":""#.to_vec();
    big.resize(MAX_REQUEST_BYTES + 100, b' ');
    let answer = call_raw(&d.socket, big).await;
    assert_eq!(
        answer,
        "{\"ok\":false,\"error\":\"request refused: larger than 1048576 bytes\"}\n"
    );
    // Without a trailing newline, a request ends at end of input.
    let answer = call_raw(&d.socket, br#"{"op":"list"}"#.to_vec()).await;
    assert_eq!(answer, "{\"ok\":true,\"data\":[]}\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_is_private_and_removed_on_shutdown() {
    let d = start();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second daemon on the same socket is refused while the first answers.
    let err = Server::bind(&d.socket, None)
        .err()
        .expect("second bind must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "another limiter daemon is already listening on {}",
            d.socket.display()
        )
    );
    d.stop.send(()).unwrap();
    d.served.await.unwrap();
    assert!(!d.socket.exists());
    let err = call(&d.socket, Request::Status).await.unwrap_err();
    let want = format!(
        "cannot reach the limiter daemon at {}: ",
        d.socket.display()
    );
    assert!(format!("{err:#}").starts_with(&want), "{err:#}");
    assert!(
        format!("{err:#}")
            .ends_with("(is `limiter daemon` running? set --socket or LIMITER_SOCKET)"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_socket_is_replaced_and_other_files_are_not() {
    let dir = TempDir::new();
    let socket = dir.0.join("limiter.sock");
    // A socket file nobody listens on, as a crashed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let server = Server::bind(&socket, None).expect("stale socket replaced");
    drop(server);
    assert!(!socket.exists(), "dropping the server removes the socket");

    std::fs::write(&socket, "not a socket").unwrap();
    let err = Server::bind(&socket, None).err().unwrap();
    assert!(
        err.to_string()
            .ends_with("exists and is not a socket; remove it or set another --socket"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_list_revert_and_sources_over_the_socket() {
    let d = start();
    let rules = vec![
        rule(json!({"destination": "10.0.0.1:80", "max_connections": 3})),
        rule(json!({"destination": "10.0.0.2:80"})),
    ];
    let answer = call(&d.socket, Request::Apply { rules }).await.unwrap();
    assert_eq!(
        answer,
        json!({"applied": ["10.0.0.1:80", "10.0.0.2:80"], "deleted": [], "unchanged": 0})
    );
    let list = call(&d.socket, LIST).await.unwrap();
    assert_eq!(list[0]["source"], "runtime");
    assert_eq!(list[0]["max_connections"], 3);
    assert!(list[0].get("config_rule").is_none(), "{list}");
    let status = call(&d.socket, Request::Status).await.unwrap();
    assert_eq!(status["destinations"][1]["source"], "runtime");

    // One bad rule: refused with its place in the list, nothing changed.
    let before = d.dataplane.rules();
    let bad = vec![
        rule(json!({"destination": "10.0.0.3:80", "max_connections": 3})),
        rule(json!({"destination": "10.0.0.4:80", "max_connections": 0})),
    ];
    let err = call(&d.socket, Request::Apply { rules: bad })
        .await
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "rule 2 (10.0.0.4:80): max-connections must be at least 1"
    );
    assert_eq!(d.dataplane.rules(), before);

    let dest: Dest = "10.0.0.2:80".parse().unwrap();
    let answer = call(
        &d.socket,
        Request::Revert {
            destination: dest.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(answer, json!({"reverted": "10.0.0.2:80", "rule": null}));
    let err = call(&d.socket, Request::Revert { destination: dest })
        .await
        .unwrap_err();
    assert_eq!(format!("{err:#}"), "no rule for 10.0.0.2:80");
    let err = call(&d.socket, Request::Reload).await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "no config file to reload: the daemon was started without --config"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_group_gets_mode_0660() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = TempDir::new();
    let socket = dir.0.join("limiter.sock");
    let gid = std::fs::metadata(&dir.0).unwrap().gid();
    let group = SocketGroup {
        name: gid.to_string(),
        gid,
    };
    let server = Server::bind(&socket, Some(&group)).unwrap();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    drop(server);
}
