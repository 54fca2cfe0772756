//! The overload signals, read from the kernel's files: CPU of the protected workload from its
//! cgroup (against its quota, because container CPU is not host CPU), the node's CPU from
//! `/proc/stat`, throttling, CPU pressure, and the load average.
//!
//! Every reader takes its paths as arguments, so tests run on fixture trees and production passes
//! the constants below. Errors follow one rule: a missing *optional* file (pressure, a v1
//! `cpu.stat`, a quota file) is `None`; a missing or malformed *required* file is a
//! [`SignalError`] naming the file and what was wrong with it.

mod cgroup;
mod layout;
mod node;
mod quota;
mod sampler;

use std::io;
use std::num::{ParseFloatError, ParseIntError};
use std::path::{Path, PathBuf};

pub use cgroup::{CpuReading, CpuSource, Throttling};
pub use layout::CgroupLayout;
pub use node::{LoadAvg, ProcStat, USER_HZ, read_loadavg, read_pressure, read_proc_stat};
pub use sampler::{CpuSample, Sampler, utilisation};

/// Where the cgroup filesystem is mounted on every layout (v2, hybrid and v1 all start here).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The node's cumulative CPU ticks and its online CPUs (one `cpuN` line each).
pub const PROC_STAT: &str = "/proc/stat";
/// The node's load averages, as Sentinel's `highestSystemLoad` reads them.
pub const PROC_LOADAVG: &str = "/proc/loadavg";
/// The node's CPU pressure; absent or unreadable when PSI is off (the default on some kernels).
pub const PROC_PRESSURE_CPU: &str = "/proc/pressure/cpu";

/// Why a signal could not be read. Every variant names the file (or directory) involved, so an
/// operator can look at it.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {field} is {value:?}, not a number", path.display())]
    Number {
        path: PathBuf,
        field: String,
        value: String,
        #[source]
        source: NumberError,
    },
    #[error("{}: {what}", path.display())]
    Format { path: PathBuf, what: String },
    #[error("cgroup path {} leaves the hierarchy; give it relative to the cgroup root, without `..`", path.display())]
    CgroupPath { path: PathBuf },
    #[error(
        "no cgroup filesystem under {}: found neither cgroup.controllers (v2), \
         unified/cgroup.controllers (hybrid) nor a cpu or cpuacct directory (v1)",
        root.display()
    )]
    NoCgroupFs { root: PathBuf },
    #[error("cgroup {} not found ({layout} layout): looked for {}", cgroup.display(), list(tried))]
    NoCgroup {
        cgroup: PathBuf,
        layout: CgroupLayout,
        tried: Vec<PathBuf>,
    },
}

/// The parse error under a [`SignalError::Number`].
#[derive(Debug, thiserror::Error)]
pub enum NumberError {
    #[error(transparent)]
    Int(#[from] ParseIntError),
    #[error(transparent)]
    Float(#[from] ParseFloatError),
}

fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// A required file: any failure, "not found" included, is an error naming it.
fn read_required(path: &Path) -> Result<String, SignalError> {
    std::fs::read_to_string(path).map_err(|source| SignalError::Read {
        path: path.to_owned(),
        source,
    })
}

/// An optional file: absent is `None`; present but unreadable is still an error, because that
/// means something other than "this kernel or layout does not have it".
fn read_optional(path: &Path) -> Result<Option<String>, SignalError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SignalError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_u64(path: &Path, field: &str, value: &str) -> Result<u64, SignalError> {
    value
        .parse()
        .map_err(|e: ParseIntError| number(path, field, value, e.into()))
}

fn parse_i64(path: &Path, field: &str, value: &str) -> Result<i64, SignalError> {
    value
        .parse()
        .map_err(|e: ParseIntError| number(path, field, value, e.into()))
}

fn parse_f64(path: &Path, field: &str, value: &str) -> Result<f64, SignalError> {
    value
        .parse()
        .map_err(|e: ParseFloatError| number(path, field, value, e.into()))
}

fn number(path: &Path, field: &str, value: &str, source: NumberError) -> SignalError {
    SignalError::Number {
        path: path.to_owned(),
        field: field.to_owned(),
        value: value.to_owned(),
        source,
    }
}

/// The value of `key` in a flat-keyed file (`cpu.stat`: one `key value` pair a line).
fn keyed_u64(path: &Path, text: &str, key: &str) -> Result<Option<u64>, SignalError> {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() == Some(key) {
            let value = fields.next().ok_or_else(|| SignalError::Format {
                path: path.to_owned(),
                what: format!("{key} has no value"),
            })?;
            return parse_u64(path, key, value).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod cgroup_tests;
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod node_tests;
