//! Finding and running the `limiter` binary.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cmd;

/// Environment variable of the client commands' socket; removed from every command the harness
/// runs, so a developer's setting never points a test at a real daemon.
pub const SOCKET_ENV: &str = "LIMITER_SOCKET";

/// `$LIMITER_BIN` (set by `cargo xtask test`), else `<target dir>/debug/limiter` of this
/// workspace. Panics with a hint if the binary does not exist.
pub fn limiter_bin() -> PathBuf {
    let bin = match std::env::var_os("LIMITER_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("debug/limiter")
        }
    };
    assert!(
        bin.is_file(),
        "limiter binary not found at {}: build it (`cargo build -p limiter-user`) or set LIMITER_BIN \
         (`cargo xtask test` does both)",
        bin.display()
    );
    bin
}

/// A `limiter` command with a clean environment for the client socket.
pub fn limiter_command() -> Command {
    let mut c = Command::new(limiter_bin());
    c.env_remove(SOCKET_ENV);
    // A test that wants a capability off says so itself (Daemon::start_with_env).
    c.env_remove("LIMITER_DISABLE_CAPABILITIES");
    c
}

/// Runs `limiter <subcommand> --socket <socket> <rest of args>` and returns its output whatever
/// its exit status. `--socket` goes right after the subcommand, where every client command
/// accepts it.
pub fn limiter_cli<I, S>(socket: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut args = args.into_iter();
    let mut c = limiter_command();
    if let Some(subcommand) = args.next() {
        c.arg(subcommand);
    }
    c.arg("--socket").arg(socket).args(args);
    cmd::output(&mut c)
}

/// `limiter <args>` as one line for messages (empty arguments shown as '').
pub fn describe_args<S: AsRef<OsStr>>(args: &[S]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| match a.as_ref().to_string_lossy() {
            s if s.is_empty() || s.contains(' ') => format!("'{s}'"),
            s => s.into_owned(),
        })
        .collect();
    format!("limiter {}", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_empty_and_spaced_arguments_visibly() {
        assert_eq!(describe_args(&["set", "", "a b"]), "limiter set '' 'a b'");
    }
}
