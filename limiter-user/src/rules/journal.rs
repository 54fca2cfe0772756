//! The state file's journal, `<state dir>/rules.journal`: a runtime change costs what it
//! changes, not a rewrite of every runtime rule.
//!
//! Rewriting `rules.json` after each `limiter set` cost 54 ms at 100 000 runtime rules. A
//! change is instead appended to the journal as one line and synced; the state file is
//! rewritten (and the journal removed) only once the journal holds as many entries as the
//! state, so the rewrites cost O(1) per changed destination on average, and at each start.
//!
//! - One line per change, however many destinations it touches: a crash while a line is being
//!   written leaves a torn last line, a change that was never acknowledged, dropped whole on
//!   load; so an `apply` is never half-recorded.
//! - Each line names the CRC-32 of the state file it follows: a journal left beside a state
//!   file that was replaced, edited or deleted by hand is ignored (with a warning), never
//!   replayed onto the wrong base.
//! - A line holds the resulting runtime entry of each destination it touches (a rule, a
//!   deletion, or neither), so replaying it twice gives the same state.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::rules::adaptive::SystemRule;
use crate::rules::dest::Dest;
use crate::rules::spec::RuleSpec;
use crate::rules::state::{self, RuntimeState, StateError};

/// Journal entries kept before the state file is rewritten, at the least (a small state is
/// rewritten every 64 changes rather than every change).
const MIN_ENTRIES: usize = 64;

/// One change of the runtime layer: what it now says of each destination touched.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    /// CRC-32 of the state file this change follows.
    follows: u32,
    /// Destinations whose runtime entry is now this rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rules: Vec<RuleSpec>,
    /// Destinations whose config rule is now deleted at runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deleted: Vec<Dest>,
    /// Destinations with no runtime entry now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cleared: Vec<Dest>,
    /// The runtime system rule, when the change set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    system: Option<SystemRule>,
    /// The change removed the runtime system rule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    system_cleared: bool,
}

impl Line {
    /// What the line counts for against the state's size: one per destination or system rule
    /// (at least one: an empty line still costs its write).
    fn entries(&self) -> usize {
        let system = usize::from(self.system.is_some() || self.system_cleared);
        (self.rules.len() + self.deleted.len() + self.cleared.len() + system).max(1)
    }
}

/// The journal of `state_file`: `rules.journal` beside it.
pub fn path_of(state_file: &Path) -> PathBuf {
    state_file.with_file_name(crate::paths::JOURNAL_FILE_NAME)
}

/// Where the runtime layer is kept: the state file and its journal.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    /// CRC-32 of the state file on disk; None before it was first written.
    follows: Option<u32>,
    /// Destinations (or system rules) the journal's lines name.
    entries: usize,
    /// An append failed and could not be cut back: the next change rewrites everything.
    torn: bool,
}

impl Store {
    /// Reads the state file and replays its journal; no file is an empty state.
    pub fn open(path: &Path) -> Result<(Store, RuntimeState), StateError> {
        let (mut runtime, follows) = match state::read(path)? {
            Some((runtime, crc)) => (runtime, Some(crc)),
            None => (RuntimeState::default(), None),
        };
        let mut store = Store {
            path: path.to_owned(),
            follows,
            entries: 0,
            torn: false,
        };
        let journal = path_of(path);
        let text = match std::fs::read_to_string(&journal) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((store, runtime)),
            Err(source) => {
                return Err(StateError::Read {
                    path: journal,
                    source,
                });
            }
        };
        let corrupt = |n: usize, message: String| StateError::Corrupt {
            path: journal.clone(),
            message: format!("line {n}: {message}"),
        };
        let mut complete: Vec<&str> = text.split_inclusive('\n').collect();
        if complete.last().is_some_and(|l| !l.ends_with('\n')) {
            complete.pop();
            // Nothing may be appended after it: the next change rewrites the state file.
            store.torn = true;
            warn!(journal = %journal.display(), "dropping the journal's torn last line: a change that was never acknowledged");
        }
        let mut lines = Vec::with_capacity(complete.len());
        for (i, text) in complete.into_iter().enumerate() {
            let line: Line =
                serde_json::from_str(text).map_err(|e| corrupt(i + 1, e.to_string()))?;
            lines.push(line);
        }
        if lines
            .first()
            .is_some_and(|l| Some(l.follows) != store.follows)
        {
            warn!(journal = %journal.display(), "the journal follows another state file (replaced, edited or deleted by hand): its changes are ignored");
            // The next change rewrites the state file, and the journal with it.
            store.torn = true;
            return Ok((store, runtime));
        }
        for (i, line) in lines.into_iter().enumerate() {
            if Some(line.follows) != store.follows {
                return Err(corrupt(
                    i + 1,
                    "it follows another state file than the lines before it".into(),
                ));
            }
            store.entries += line.entries();
            replay(&mut runtime, line).map_err(|m| corrupt(i + 1, m))?;
        }
        Ok((store, runtime))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the journal holds changes that a rewrite of the state file would fold in.
    pub fn has_journal(&self) -> bool {
        self.entries > 0 || self.torn
    }

    /// Writes the whole runtime layer to the state file and removes the journal.
    pub fn save(&mut self, runtime: &RuntimeState) -> Result<(), StateError> {
        let crc = state::save(&self.path, runtime)?;
        let journal = path_of(&self.path);
        match std::fs::remove_file(&journal) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A journal left behind follows the old file: it is ignored on load.
            Err(e) => warn!(journal = %journal.display(), error = %e, "cannot remove the journal"),
        }
        self.follows = Some(crc);
        self.entries = 0;
        self.torn = false;
        Ok(())
    }

    /// Records a change of the runtime layer (now `runtime`) that touched the destinations
    /// `touched` and, if `system`, the system rule: one journal line, or a rewrite of the state
    /// file when the journal has grown as large as the state.
    pub fn record(
        &mut self,
        runtime: &RuntimeState,
        touched: &BTreeSet<Dest>,
        system: bool,
    ) -> Result<(), StateError> {
        let entries = runtime.rules.len() + runtime.deleted.len();
        let (Some(follows), false) = (self.follows, self.torn) else {
            return self.save(runtime);
        };
        if self.entries >= entries.max(MIN_ENTRIES) {
            return self.save(runtime);
        }
        let mut line = Line {
            follows,
            ..Line::default()
        };
        for dest in touched {
            if let Some(rule) = runtime.rules.get(dest) {
                line.rules.push(rule.clone());
            } else if runtime.deleted.contains(dest) {
                line.deleted.push(dest.clone());
            } else {
                line.cleared.push(dest.clone());
            }
        }
        if system {
            line.system = runtime.system;
            line.system_cleared = runtime.system.is_none();
        }
        let mut text = serde_json::to_vec(&line).map_err(std::io::Error::other);
        if let Ok(text) = &mut text {
            text.push(b'\n');
        }
        let journal = path_of(&self.path);
        let write_error = |source| StateError::Write {
            path: journal.clone(),
            source,
        };
        self.append(&journal, &text.map_err(write_error)?)
            .map_err(write_error)?;
        self.entries += line.entries();
        Ok(())
    }

    /// Appends `text` and syncs it; on failure cuts the journal back to where it was, so a
    /// refused change leaves no line behind.
    fn append(&mut self, journal: &Path, text: &[u8]) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(journal)?;
        let before = f.metadata()?.len();
        let written = f.write_all(text).and_then(|()| f.sync_data());
        if written.is_err() && f.set_len(before).and_then(|()| f.sync_data()).is_err() {
            self.torn = true;
        }
        written?;
        if before == 0 {
            // A new journal: its name must survive a crash too.
            let dir = journal.parent().unwrap_or(Path::new("."));
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Applies one journal line; an error says what is wrong with it.
fn replay(runtime: &mut RuntimeState, line: Line) -> Result<(), String> {
    for rule in line.rules {
        crate::rules::validate::validate(&rule)
            .map_err(|e| format!("rule for {}: {e}", rule.destination))?;
        runtime.deleted.remove(&rule.destination);
        runtime.rules.insert(rule.destination.clone(), rule);
    }
    for dest in line.deleted {
        runtime.rules.remove(&dest);
        runtime.deleted.insert(dest);
    }
    for dest in line.cleared {
        runtime.rules.remove(&dest);
        runtime.deleted.remove(&dest);
    }
    if let Some(system) = line.system {
        system.validate().map_err(|e| format!("system rule: {e}"))?;
        runtime.system = Some(system);
    } else if line.system_cleared {
        runtime.system = None;
    }
    Ok(())
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
