//! The daemon's rules: two layers (see [`crate::rules::layers`]: the config's and the runtime's, kept
//! in the state file, [`crate::rules::state`]), and every change made through them all or nothing.
//!
//! Every operation computes the new layers, the rules they put in force, the difference with
//! the kernel's, and makes it through [`crate::rules::txn`]; then it writes the state file. If any step
//! fails, the kernel and the layers are left as they were. A mutex serialises the operations,
//! so `set`, `apply` and a reload never interleave.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

pub use crate::rules::layers::{Listed, Source};

use crate::daemon::config::{Config, ConfigError};
use crate::daemon::settings::DaemonSettings;
use crate::dataplane::Dataplane;
use crate::rules::adaptive::SystemRule;
use crate::rules::dest::Dest;
use crate::rules::journal::Store;
use crate::rules::layers::{Layers, by_dest};
use crate::rules::spec::RuleSpec;
use crate::rules::state::RuntimeState;
use crate::rules::txn::{self, CommitError};
use crate::rules::validate::RuleError;

/// What an operation changed in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Destinations whose rule was created or replaced.
    pub applied: Vec<Dest>,
    /// Destinations whose rule was removed.
    pub deleted: Vec<Dest>,
    /// Rules already in force as wanted.
    pub unchanged: usize,
}

/// Why an operation was refused; in every case nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error(transparent)]
    InvalidRule(#[from] RuleError),
    #[error("{what}")]
    InvalidInList {
        what: String,
        #[source]
        source: RuleError,
    },
    #[error("two rules for {0}; keep one rule per destination")]
    Duplicate(Dest),
    #[error("no rule for {0}")]
    NoRule(Dest),
    #[error(
        "{0} has no runtime change to revert: its rule comes from the config (change it there and run `limiter reload`)"
    )]
    RevertConfigRule(Dest),
    #[error("no config file to reload: the daemon was started without --config")]
    NoConfig,
    #[error("{}; the running rules are unchanged", chain(.0))]
    Config(ConfigError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("{message}; the change was undone")]
    Persist { message: String },
}

/// The result of a reload.
#[derive(Clone, Debug, Serialize)]
pub struct Reloaded {
    pub config: PathBuf,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Config destinations where a runtime rule or deletion keeps precedence.
    pub overridden: Vec<Dest>,
    /// `[daemon]` or `[overload]` settings differ from those the daemon started with (they
    /// apply at restart).
    pub daemon_settings_changed: bool,
}

/// Reload counts, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadStats {
    pub succeeded: u64,
    pub failed: u64,
    pub last_failed: bool,
}

struct Inner {
    layers: Layers,
    config_daemon: DaemonSettings,
    config_system: Option<SystemRule>,
    /// `[overload]` as the daemon started with it (a reload reports a change; it applies at
    /// restart).
    config_overload: limiter_overload::OverloadConfig,
    reloads: ReloadStats,
    /// The state file and its journal (None: `--state-dir none`).
    store: Option<Store>,
    /// How many rules the layers put in force (kept, so that a `set` need not count them).
    in_force: usize,
}

pub struct RuleBook {
    dp: Arc<dyn Dataplane>,
    inner: Mutex<Inner>,
    config_file: Option<PathBuf>,
    state_file: Option<PathBuf>,
}

impl RuleBook {
    /// Puts the start's rules in force: the config's, then the state file's runtime layer on
    /// top. Rules found in the kernel that neither names were set at runtime by a previous
    /// daemon: they are kept, as runtime rules, and written to the state file.
    pub fn start(
        dp: Arc<dyn Dataplane>,
        config_file: Option<PathBuf>,
        config: Config,
        store: Option<Store>,
        saved: RuntimeState,
    ) -> Result<(RuleBook, Outcome), BookError> {
        let state_file = store.as_ref().map(|s| s.path().to_owned());
        let book = RuleBook {
            dp,
            inner: Mutex::new(Inner {
                layers: Layers {
                    config: BTreeMap::new(),
                    runtime: saved.clone(),
                },
                config_daemon: config.daemon,
                config_system: config.system,
                config_overload: config.overload.clone(),
                reloads: ReloadStats::default(),
                store,
                in_force: 0,
            }),
            config_file,
            state_file,
        };
        let mut new = Layers {
            config: by_dest(config.rules),
            runtime: saved,
        };
        new.adopt(txn::current(&*book.dp));
        new.prune();
        let outcome = book.commit(&mut book.lock(), new)?;
        {
            // Fold the journal into the state file once per start.
            let inner = &mut *book.lock();
            if let Some(store) = &mut inner.store
                && store.has_journal()
                && let Err(e) = store.save(&inner.layers.runtime)
            {
                // The journal still holds the changes: nothing is lost.
                let e = anyhow::Error::from(e);
                tracing::warn!("cannot fold the journal into the state file: {e:#}");
            }
        }
        Ok((book, outcome))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dataplane(&self) -> &Arc<dyn Dataplane> {
        &self.dp
    }

    pub fn config_file(&self) -> Option<&PathBuf> {
        self.config_file.as_ref()
    }

    pub fn state_file(&self) -> Option<&PathBuf> {
        self.state_file.as_ref()
    }

    /// `limiter set`: a runtime rule for the destination.
    pub fn set(&self, rule: RuleSpec) -> Result<Outcome, BookError> {
        self.apply(vec![rule])
    }

    /// `limiter apply`: every rule valid and distinct, then all become runtime rules, or none.
    pub fn apply(&self, rules: Vec<RuleSpec>) -> Result<Outcome, BookError> {
        check(&rules)?;
        let mut inner = self.lock();
        let touched = rules.iter().map(|r| r.destination.clone()).collect();
        self.commit_at(&mut inner, touched, |runtime| {
            for rule in rules {
                runtime.deleted.remove(&rule.destination);
                runtime.rules.insert(rule.destination.clone(), rule);
            }
        })
    }

    /// `limiter delete`: no rule for the destination, persistently (a config rule is recorded
    /// as deleted at runtime). Returns whether a config rule is now kept off.
    pub fn delete(&self, dest: &Dest) -> Result<bool, BookError> {
        let mut inner = self.lock();
        if inner.layers.effective_of(dest).is_none() {
            return Err(BookError::NoRule(dest.clone()));
        }
        let config_kept_off = inner.layers.config.contains_key(dest);
        self.commit_at(&mut inner, BTreeSet::from([dest.clone()]), |runtime| {
            runtime.rules.remove(dest);
            if config_kept_off {
                runtime.deleted.insert(dest.clone());
            }
        })?;
        Ok(config_kept_off)
    }

    /// `limiter revert`: forgets the runtime change of the destination; the config's rule (or
    /// none) is in force again. Returns that rule.
    pub fn revert(&self, dest: &Dest) -> Result<Option<RuleSpec>, BookError> {
        let mut inner = self.lock();
        let layers = &inner.layers;
        if !layers.runtime.rules.contains_key(dest) && !layers.runtime.deleted.contains(dest) {
            return Err(match layers.config.contains_key(dest) {
                true => BookError::RevertConfigRule(dest.clone()),
                false => BookError::NoRule(dest.clone()),
            });
        }
        let now = layers.config.get(dest).cloned();
        self.commit_at(&mut inner, BTreeSet::from([dest.clone()]), |runtime| {
            runtime.rules.remove(dest);
            runtime.deleted.remove(dest);
        })?;
        Ok(now)
    }

    /// `limiter reload` and SIGHUP: reads the config file again; an invalid file changes
    /// nothing. Config rules are applied except where the runtime layer holds the destination;
    /// config rules gone from the file are deleted (unless the runtime layer holds them).
    pub fn reload(&self) -> Result<Reloaded, BookError> {
        let path = self.config_file.clone().ok_or(BookError::NoConfig)?;
        let mut inner = self.lock();
        let result = Config::load(&path)
            .map_err(BookError::Config)
            .and_then(|config| {
                let mut new = inner.layers.clone();
                new.config = by_dest(config.rules);
                new.prune();
                let overridden = new.overridden();
                let outcome = self.commit(&mut inner, new)?;
                inner.config_system = config.system;
                Ok(Reloaded {
                    config: path.clone(),
                    outcome,
                    overridden,
                    daemon_settings_changed: config.daemon != inner.config_daemon
                        || config.overload != inner.config_overload,
                })
            });
        let stats = &mut inner.reloads;
        stats.last_failed = result.is_err();
        match result {
            Ok(_) => stats.succeeded += 1,
            Err(_) => stats.failed += 1,
        }
        result
    }

    /// The node-wide system rule in force and where it comes from: the runtime one (`limiter
    /// system set`) over the config's `[system]`; None when neither is set.
    pub fn system(&self) -> Option<(SystemRule, Source)> {
        let inner = self.lock();
        match (inner.layers.runtime.system, inner.config_system) {
            (Some(r), _) => Some((r, Source::Runtime)),
            (None, Some(c)) => Some((c, Source::Config)),
            (None, None) => None,
        }
    }

    /// `limiter system set` (Some) and `limiter system delete` (None): the runtime system rule,
    /// persisted in the state file like runtime rules. Returns whether a runtime rule existed.
    pub fn set_system(&self, rule: Option<SystemRule>) -> Result<bool, BookError> {
        let mut inner = self.lock();
        let had = inner.layers.runtime.system.is_some();
        // No destination's rule changes: only the state file.
        self.commit_at(&mut inner, BTreeSet::new(), |runtime| runtime.system = rule)?;
        Ok(had)
    }

    /// The rules in force with their source, sorted by destination.
    pub fn list(&self) -> Vec<Listed> {
        self.lock().layers.annotate(self.dp.rules())
    }

    /// Where the rule in force for `dest` comes from; None when no layer puts one in force
    /// (no rule, or an address a Service rule derived).
    pub fn source_of(&self, dest: &Dest) -> Option<Source> {
        self.lock().layers.source_of(dest)
    }

    /// Fills in the source of each entry of `status` (one lock for all of them).
    pub fn annotate_sources(&self, entries: &mut [crate::rules::status::DestinationStatus]) {
        let inner = self.lock();
        for entry in entries {
            entry.source = entry
                .rule
                .as_ref()
                .and_then(|r| inner.layers.source_of(&r.destination))
                .map(Source::as_str);
        }
    }

    /// How many rules in force come from the config and from the runtime layer (metrics).
    pub fn count_by_source(&self) -> (usize, usize) {
        self.lock().layers.count_by_source()
    }

    /// Config rules deleted at runtime, with the config's rule each keeps off.
    pub fn runtime_deletions(&self) -> Vec<RuleSpec> {
        self.lock().layers.deletions()
    }

    pub fn reload_stats(&self) -> ReloadStats {
        self.lock().reloads
    }

    /// Puts `new` in force, writes its runtime layer if it changed, and adopts it; on any
    /// failure the kernel and the layers are as before.
    fn commit(&self, inner: &mut Inner, new: Layers) -> Result<Outcome, BookError> {
        let current = txn::current(&*self.dp);
        let desired = new.effective();
        let changes = txn::plan(&current, &desired);
        let unchanged = desired.len() - changes.iter().filter(|c| c.after.is_some()).count();
        let in_force = desired.len();
        let done = txn::execute(&*self.dp, changes)?;
        if new.runtime != inner.layers.runtime
            && let Some(store) = &mut inner.store
            && let Err(e) = store.save(&new.runtime)
        {
            let failures = txn::rollback(&*self.dp, &done);
            let mut message = format!("{:#}", anyhow::Error::from(e));
            if !failures.is_empty() {
                message += &format!(" (and undoing failed: {})", failures.join("; "));
            }
            return Err(BookError::Persist { message });
        }
        inner.layers = new;
        inner.in_force = in_force;
        let (applied, deleted) = done
            .into_iter()
            .partition::<Vec<_>, _>(|c| c.after.is_some());
        Ok(Outcome {
            applied: applied.into_iter().map(|c| c.dest).collect(),
            deleted: deleted.into_iter().map(|c| c.dest).collect(),
            unchanged,
        })
    }

    /// Puts in force what `edit` does to the runtime layer, which may change the destinations
    /// `touched` and no other. It looks at those alone, so a `set` costs what the change costs,
    /// not a pass over every rule (100 000 rules took 85 ms a `set` that way). As [`commit`]:
    /// on any failure the kernel and the layers are as before.
    ///
    /// [`commit`]: RuleBook::commit
    fn commit_at(
        &self,
        inner: &mut Inner,
        touched: BTreeSet<Dest>,
        edit: impl FnOnce(&mut RuntimeState),
    ) -> Result<Outcome, BookError> {
        let before: Vec<Before> = touched
            .iter()
            .map(|d| Before::of(&inner.layers, d))
            .collect();
        let system_before = inner.layers.runtime.system;
        edit(&mut inner.layers.runtime);
        let restore = |runtime: &mut RuntimeState, before: Vec<Before>| {
            runtime.system = system_before;
            for b in before {
                b.restore(runtime);
            }
        };
        let (mut deletions, mut upserts) = (Vec::new(), Vec::new());
        for dest in &touched {
            let (now, after) = (self.dp.rule_of(dest), inner.layers.effective_of(dest));
            if now.as_ref() == after {
                continue;
            }
            let change = txn::Change {
                dest: dest.clone(),
                before: now,
                after: after.cloned(),
            };
            match change.after {
                Some(_) => upserts.push(change),
                // Deletions first: they free room in the kernel's map.
                None => deletions.push(change),
            }
        }
        deletions.extend(upserts);
        let done = match txn::execute(&*self.dp, deletions) {
            Ok(done) => done,
            Err(e) => {
                restore(&mut inner.layers.runtime, before);
                return Err(e.into());
            }
        };
        let runtime = &inner.layers.runtime;
        let system_changed = runtime.system != system_before;
        let changed = system_changed || before.iter().any(|b| b.changed(runtime));
        if changed
            && let Some(store) = &mut inner.store
            && let Err(e) = store.record(runtime, &touched, system_changed)
        {
            let failures = txn::rollback(&*self.dp, &done);
            restore(&mut inner.layers.runtime, before);
            let mut message = format!("{:#}", anyhow::Error::from(e));
            if !failures.is_empty() {
                message += &format!(" (and undoing failed: {})", failures.join("; "));
            }
            return Err(BookError::Persist { message });
        }
        let was = before.iter().filter(|b| b.in_force).count();
        let is = before
            .iter()
            .filter(|b| inner.layers.effective_of(&b.dest).is_some())
            .count();
        inner.in_force = (inner.in_force + is).saturating_sub(was);
        let (applied, deleted) = done
            .into_iter()
            .partition::<Vec<_>, _>(|c| c.after.is_some());
        Ok(Outcome {
            unchanged: inner.in_force.saturating_sub(applied.len()),
            applied: applied.into_iter().map(|c| c.dest).collect(),
            deleted: deleted.into_iter().map(|c| c.dest).collect(),
        })
    }
}

/// What the runtime layer said of a destination before an edit, to put it back.
struct Before {
    dest: Dest,
    rule: Option<RuleSpec>,
    deleted: bool,
    in_force: bool,
}

impl Before {
    fn of(layers: &Layers, dest: &Dest) -> Before {
        Before {
            dest: dest.clone(),
            rule: layers.runtime.rules.get(dest).cloned(),
            deleted: layers.runtime.deleted.contains(dest),
            in_force: layers.effective_of(dest).is_some(),
        }
    }

    fn changed(&self, runtime: &RuntimeState) -> bool {
        self.rule.as_ref() != runtime.rules.get(&self.dest)
            || self.deleted != runtime.deleted.contains(&self.dest)
    }

    fn restore(self, runtime: &mut RuntimeState) {
        match self.rule {
            Some(rule) => runtime.rules.insert(self.dest.clone(), rule),
            None => runtime.rules.remove(&self.dest),
        };
        if self.deleted {
            runtime.deleted.insert(self.dest);
        } else {
            runtime.deleted.remove(&self.dest);
        }
    }
}

/// An error and its sources on one line, as `{:#}` of anyhow shows them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

/// Every rule valid, no destination twice.
fn check(rules: &[RuleSpec]) -> Result<(), BookError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, rule) in rules.iter().enumerate() {
        crate::rules::validate::validate(rule).map_err(|source| match rules.len() {
            1 => BookError::InvalidRule(source),
            _ => BookError::InvalidInList {
                what: format!("rule {} ({})", i + 1, rule.destination),
                source,
            },
        })?;
        if !seen.insert(&rule.destination) {
            return Err(BookError::Duplicate(rule.destination.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "rulebook_tests.rs"]
mod tests;
