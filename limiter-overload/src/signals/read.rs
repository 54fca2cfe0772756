//! Reading the kernel's files and their numbers, with errors that name the file and field.

use std::io;
use std::num::{ParseFloatError, ParseIntError};
use std::path::{Path, PathBuf};

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
        /// The layout's name ([`super::CgroupLayout::name`]): the error names it, and a
        /// type here would make the layout and its errors depend on each other.
        layout: &'static str,
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

pub(super) fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// A required file: any failure, "not found" included, is an error naming it.
pub(super) fn read_required(path: &Path) -> Result<String, SignalError> {
    std::fs::read_to_string(path).map_err(|source| SignalError::Read {
        path: path.to_owned(),
        source,
    })
}

/// An optional file: absent is `None`; present but unreadable is still an error, because that
/// means something other than "this kernel or layout does not have it".
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, SignalError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SignalError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(super) fn parse_u64(path: &Path, field: &str, value: &str) -> Result<u64, SignalError> {
    value
        .parse()
        .map_err(|e: ParseIntError| number(path, field, value, e.into()))
}

pub(super) fn parse_i64(path: &Path, field: &str, value: &str) -> Result<i64, SignalError> {
    value
        .parse()
        .map_err(|e: ParseIntError| number(path, field, value, e.into()))
}

pub(super) fn parse_f64(path: &Path, field: &str, value: &str) -> Result<f64, SignalError> {
    value
        .parse()
        .map_err(|e: ParseFloatError| number(path, field, value, e.into()))
}

pub(super) fn number(path: &Path, field: &str, value: &str, source: NumberError) -> SignalError {
    SignalError::Number {
        path: path.to_owned(),
        field: field.to_owned(),
        value: value.to_owned(),
        source,
    }
}

/// The value of `key` in a flat-keyed file (`cpu.stat`: one `key value` pair a line).
pub(super) fn keyed_u64(path: &Path, text: &str, key: &str) -> Result<Option<u64>, SignalError> {
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
