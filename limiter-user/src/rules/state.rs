//! The state file: the durable record of the rules changed at runtime (`limiter set`,
//! `delete`, `apply`), `<state dir>/rules.json`, with the changes since it was written in its
//! journal (`rules.journal`, [`crate::rules::journal`]).
//!
//! The kernel's pinned rules map is what enforces, and it survives a daemon restart; the state
//! file is what survives the pins (a reboot, `limiter daemon --cleanup`). It is rewritten at a
//! start and whenever the journal has grown as long as the state, atomically: a temporary file
//! in the same folder, fsync, rename, fsync of the folder, so a crash leaves either the old
//! file or the new one, never half of one. A file
//! that cannot be read back stops the daemon with its name: silently dropping runtime rules
//! would lift limits nobody asked to lift.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rules::adaptive::SystemRule;
use crate::rules::dest::Dest;
use crate::rules::spec::RuleSpec;

/// Version of the file's layout; a file from a newer limiter is refused, not misread.
const VERSION: u32 = 1;

/// The runtime layer, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeState {
    /// Rules set at runtime, by destination.
    pub rules: BTreeMap<Dest, RuleSpec>,
    /// Destinations whose config rule was deleted at runtime (kept off until `limiter revert`,
    /// `set` or `apply` of the destination, or until the config no longer names it).
    pub deleted: BTreeSet<Dest>,
    /// The node-wide system rule set at runtime (`limiter system set`), over the config's.
    pub system: Option<SystemRule>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    deleted: Vec<Dest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    system: Option<SystemRule>,
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state file {} is corrupt ({message}); it holds the rules set at runtime: repair it, \
         or move it aside to start with the config's rules only",
        path.display()
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write the state file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `<dir>/rules.json`.
pub fn file_in(dir: &Path) -> PathBuf {
    dir.join(crate::paths::STATE_FILE_NAME)
}

/// Reads the state file alone (its journal is [`crate::rules::journal`]'s), with the CRC-32 of its
/// bytes; None if there is none (the first start).
pub fn read(path: &Path) -> Result<Option<(RuntimeState, u32)>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| StateError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let crc = crc32fast::hash(text.as_bytes());
    Ok(Some((parse(path, &text)?, crc)))
}

/// Parses and checks the text of a state file; `path` only names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<RuntimeState, StateError> {
    let corrupt = |message: String| StateError::Corrupt {
        path: path.to_owned(),
        message,
    };
    let file: File = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != VERSION {
        return Err(corrupt(format!(
            "version {} is not {VERSION}, the version this limiter writes",
            file.version
        )));
    }
    let mut state = RuntimeState::default();
    if let Some(system) = file.system {
        system
            .validate()
            .map_err(|e| corrupt(format!("system rule: {e}")))?;
        state.system = Some(system);
    }
    for rule in file.rules {
        crate::rules::validate::validate(&rule)
            .map_err(|e| corrupt(format!("rule for {}: {e}", rule.destination)))?;
        let dest = rule.destination.clone();
        if state.rules.insert(dest.clone(), rule).is_some() {
            return Err(corrupt(format!("two rules for {dest}")));
        }
    }
    for dest in file.deleted {
        if state.rules.contains_key(&dest) {
            return Err(corrupt(format!("{dest} is both a rule and a deletion")));
        }
        state.deleted.insert(dest);
    }
    Ok(state)
}

/// Writes `state` to `path` atomically (temporary file, fsync, rename, fsync of the folder),
/// mode 0600, creating the folder if needed. Returns the CRC-32 of what it wrote.
pub fn save(path: &Path, state: &RuntimeState) -> Result<u32, StateError> {
    let write_error = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let file = File {
        version: VERSION,
        rules: state.rules.values().cloned().collect(),
        deleted: state.deleted.iter().cloned().collect(),
        system: state.system,
    };
    let mut text = serde_json::to_vec_pretty(&file)
        .map_err(std::io::Error::other)
        .map_err(write_error)?;
    text.push(b'\n');
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(write_error)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(write_error)?;
    Ok(crc32fast::hash(&text))
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
