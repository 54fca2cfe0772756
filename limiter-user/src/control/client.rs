//! The CLI's end of the control socket: one connection per request, one line each way
//! ([`super::protocol`]), and the stream of `events --follow`.

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::protocol::{Request, Response};

/// How long the client waits for the daemon.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request to the daemon at `socket` and returns the `data` of its answer; the
/// daemon's refusal becomes the error.
pub fn request(socket: &Path, req: &Request) -> anyhow::Result<Value> {
    request_raw(socket, req)?
        .get()
        .parse::<Value>()
        .map_err(anyhow::Error::from)
}

/// The CLI's connection to the daemon's socket; the one place that says why it failed.
pub fn connect(socket: &Path) -> anyhow::Result<std::os::unix::net::UnixStream> {
    std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        let hint = if e.kind() == ErrorKind::PermissionDenied {
            "the socket is root only (mode 0600, or 0660 for the daemon's --socket-group): run as \
             root or as a member of that group"
        } else {
            "is `limiter daemon` running? set --socket or LIMITER_SOCKET"
        };
        anyhow::anyhow!(
            "cannot reach the limiter daemon at {}: {e} ({hint})",
            socket.display()
        )
    })
}

/// As [`request`], the answer's data left as the daemon's text.
pub fn request_raw(
    socket: &Path,
    req: &Request,
) -> anyhow::Result<Box<serde_json::value::RawValue>> {
    let shown = socket.display();
    let mut stream = connect(socket)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .with_context(|| format!("cannot send the request to the limiter daemon at {shown}"))?;
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        if timed_out(&e) {
            bail!(
                "the limiter daemon at {shown} did not answer within {} s",
                CLIENT_TIMEOUT.as_secs()
            );
        }
        return Err(e)
            .with_context(|| format!("cannot read the answer of the limiter daemon at {shown}"));
    }
    if answer.is_empty() {
        bail!(
            "the limiter daemon at {shown} closed the connection without answering (is it shutting down?)"
        );
    }
    let response: Response = serde_json::from_slice(&answer)
        .with_context(|| format!("the answer of the limiter daemon at {shown} is not valid"))?;
    response.into_raw()
}

/// Client side of `events --follow`: hands every line after the first to `on_line`, until
/// the daemon closes the connection. No read timeout: events may be minutes apart.
pub fn follow(
    socket: &Path,
    mut on_line: impl FnMut(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let shown = socket.display();
    let mut stream = connect(socket)?;
    let mut request = serde_json::to_vec(&Request::Events { follow: true })?;
    request.push(b'\n');
    stream.write_all(&request)?;
    let mut lines = BufReader::new(stream).lines();
    let first = lines
        .next()
        .with_context(|| format!("the limiter daemon at {shown} closed the connection"))??;
    let response: Response =
        serde_json::from_str(&first).context("unexpected answer from the daemon")?;
    response.into_result()?;
    for line in lines {
        let value: Value = serde_json::from_str(&line?).context("unexpected event line")?;
        on_line(&value)?;
    }
    Ok(())
}
