//! The daemon's end of the control socket: accepts connections and hands each request line
//! to the handler ([`super::handler`]); the protocol is [`super::protocol`].
//!
//! The socket is an input like the command line, so the server validates every rule itself;
//! a refused request changes nothing.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::handler::Handler;
use super::protocol::{MAX_REQUEST_BYTES, Request, Response};
use crate::daemon::settings::SocketGroup;

/// How long the server waits for a request line, and for its answer to be taken.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket file; removed when dropped, so every way out of the daemon cleans it up.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => info!(socket = %self.0.display(), "control socket removed"),
            Err(e) => warn!(socket = %self.0.display(), "cannot remove the control socket: {e}"),
        }
    }
}

/// A bound control socket, not yet answering.
pub struct Server {
    listener: UnixListener,
    socket: SocketFile,
}

impl Server {
    /// Binds `path` (mode 0600, or 0660 with group `group`), creating its folder. A stale
    /// socket file left by a daemon that died is replaced; a live daemon on it is an error.
    /// Must run inside a tokio runtime.
    pub fn bind(path: &Path, group: Option<&SocketGroup>) -> anyhow::Result<Server> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the socket folder {}", dir.display()))?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket; remove it or set another --socket",
                    path.display()
                );
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!(
                    "another limiter daemon is already listening on {}",
                    path.display()
                ),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    info!(socket = %path.display(), "removing the stale socket of a previous daemon");
                    std::fs::remove_file(path).with_context(|| {
                        format!("cannot remove the stale socket {}", path.display())
                    })?;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot check the existing socket {}", path.display())
                    });
                }
            }
        }
        let listener = std::os::unix::net::UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        let socket = SocketFile(path.to_owned());
        // Root only (or root and one group): whoever can write to this socket can lift any limit.
        let mode = match group {
            Some(group) => {
                std::os::unix::fs::chown(path, None, Some(group.gid))
                    .with_context(|| format!("cannot give {} to group {group}", path.display()))?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))?;
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        Ok(Server { listener, socket })
    }

    /// Answers connections until `shutdown` completes; then stops accepting, removes the socket
    /// file and waits (boundedly) for the requests under way.
    pub async fn serve(self, handler: Arc<Handler>, shutdown: impl Future<Output = ()>) {
        let Server { listener, socket } = self;
        info!(socket = %socket.0.display(), "control socket listening");
        let mut tasks = JoinSet::new();
        // Set when shutdown begins: `events --follow` streams end at once rather than holding
        // up the orderly stop (ordinary requests finish on their own, boundedly).
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tasks.spawn(serve_connection(stream, handler.clone(), closing_rx.clone()));
                    }
                    Err(e) => {
                        // EMFILE and the like pass; back off rather than spin.
                        warn!("accept on the control socket failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        let _ = closing.send(true);
        drop(listener);
        drop(socket);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SERVER_IO_TIMEOUT * 2, drain)
            .await
            .is_err()
        {
            warn!("abandoning control requests still under way at shutdown");
            tasks.shutdown().await;
        }
    }
}

async fn serve_connection(
    stream: UnixStream,
    handler: Arc<Handler>,
    closing: tokio::sync::watch::Receiver<bool>,
) {
    let (read, mut write) = stream.into_split();
    let response = match read_request(read).await {
        Ok(Request::Events { follow }) => {
            return super::events::serve(handler.events(), follow, write, closing).await;
        }
        Ok(request) => tokio::task::spawn_blocking(move || handler.handle(&request))
            .await
            .unwrap_or_else(|e| Response::error(format!("internal error: {e}"))),
        Err(message) => Response::error(message),
    };
    let line = response.into_line();
    let written = tokio::time::timeout(SERVER_IO_TIMEOUT, async {
        write.write_all(&line).await?;
        write.shutdown().await
    });
    if let Err(e) = written.await.map_err(std::io::Error::from).and_then(|r| r) {
        debug!("cannot answer a control client: {e}");
    }
    drop(line);
    // The answer may have been large (`status` of many destinations): give it back.
    crate::memory::release_to_os();
}

/// Reads one request line of at most [`MAX_REQUEST_BYTES`], or says why not.
async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> Result<Request, String> {
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64 + 1);
    let mut line = Vec::new();
    match tokio::time::timeout(SERVER_IO_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => {
            return Err(format!(
                "no complete request within {} s",
                SERVER_IO_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => return Err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) => {}
    }
    let body = line.strip_suffix(b"\n").unwrap_or(&line);
    if body.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "request refused: larger than {MAX_REQUEST_BYTES} bytes"
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(
            "empty request; send one JSON object per line, e.g. {\"op\":\"status\"}".into(),
        );
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid request: {e}"))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
