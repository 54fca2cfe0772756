//! All-or-nothing changes of many rules through the [`Dataplane`], which changes one rule at a
//! time: plan the difference between the rules in force and the rules wanted, apply it step by
//! step, and if a step fails undo the steps already done, each rule back to its previous value.

use std::collections::BTreeMap;
use std::fmt;

use tracing::{error, warn};

use crate::dataplane::Dataplane;
use crate::rules::dest::Dest;
use crate::rules::spec::RuleSpec;

/// One rule's change: `None` is "no rule".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub dest: Dest,
    pub before: Option<RuleSpec>,
    pub after: Option<RuleSpec>,
}

impl Change {
    fn describe(&self) -> String {
        match &self.after {
            Some(_) => format!("apply the rule for {}", self.dest),
            None => format!("delete the rule for {}", self.dest),
        }
    }
}

/// A step failed; the steps before it were undone (or, if undoing failed too, say which).
#[derive(Debug)]
pub struct CommitError {
    pub step: String,
    pub cause: anyhow::Error,
    pub rollback_failures: Vec<String>,
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {}: {:#}", self.step, self.cause)?;
        if self.rollback_failures.is_empty() {
            Ok(())
        } else {
            write!(
                f,
                "; undoing the changes already made also failed ({}): check `limiter list`",
                self.rollback_failures.join("; ")
            )
        }
    }
}

impl std::error::Error for CommitError {}

/// The rules in force, by destination.
pub fn current(dp: &dyn Dataplane) -> BTreeMap<Dest, RuleSpec> {
    dp.rules()
        .into_iter()
        .map(|r| (r.destination.clone(), r))
        .collect()
}

/// The changes that turn `current` into `desired`: deletions first (they free room in the
/// kernel's map), then creations and replacements, each group in destination order.
pub fn plan(current: &BTreeMap<Dest, RuleSpec>, desired: &BTreeMap<Dest, RuleSpec>) -> Vec<Change> {
    let deletions = current
        .iter()
        .filter(|(dest, _)| !desired.contains_key(dest))
        .map(|(dest, before)| Change {
            dest: dest.clone(),
            before: Some(before.clone()),
            after: None,
        });
    let upserts = desired
        .iter()
        .filter(|(dest, rule)| current.get(dest) != Some(rule))
        .map(|(dest, after)| Change {
            dest: dest.clone(),
            before: current.get(dest).cloned(),
            after: Some(after.clone()),
        });
    deletions.chain(upserts).collect()
}

/// Makes `changes` one by one. On the first failure the changes already made are undone and
/// the error says which step failed. On success returns the changes (to undo them later if a
/// following step of the caller fails, see [`rollback`]).
pub fn execute(dp: &dyn Dataplane, changes: Vec<Change>) -> Result<Vec<Change>, CommitError> {
    let mut done = Vec::with_capacity(changes.len());
    for change in changes {
        if let Err(cause) = step(dp, &change.dest, change.after.as_ref()) {
            let step = change.describe();
            warn!(
                error = format!("{cause:#}"),
                "cannot {step}; undoing {} change(s)",
                done.len()
            );
            let rollback_failures = rollback(dp, &done);
            return Err(CommitError {
                step,
                cause,
                rollback_failures,
            });
        }
        done.push(change);
    }
    Ok(done)
}

/// Undoes `done` (in reverse order), putting each rule back as it was. Returns the failures,
/// which are also logged. A deleted rule comes back with fresh counters.
pub fn rollback(dp: &dyn Dataplane, done: &[Change]) -> Vec<String> {
    let mut failures = Vec::new();
    for change in done.iter().rev() {
        if let Err(e) = step(dp, &change.dest, change.before.as_ref()) {
            let message = format!("{}: {e:#}", change.dest);
            error!(message, "cannot undo a rule change");
            failures.push(message);
        }
    }
    failures
}

/// Makes the rule of `dest` be `rule` (`None`: no rule).
fn step(dp: &dyn Dataplane, dest: &Dest, rule: Option<&RuleSpec>) -> anyhow::Result<()> {
    match rule {
        Some(rule) => dp.apply_rule(rule),
        None => dp.delete_rule(dest).map(|_| ()),
    }
}

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;
