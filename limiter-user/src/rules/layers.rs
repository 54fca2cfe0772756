//! The two layers of rules and the precedence between them (docs/config.md, "Precedence").
//!
//! The **config** layer is the `--config` file's `[[rules]]`. The **runtime** layer is what
//! `limiter set`, `delete` and `apply` did: rules, and deletions of config rules. For each
//! destination the runtime layer wins when it says anything about it.

use std::collections::BTreeMap;

use serde::Serialize;
use tracing::{debug, info};

use crate::rules::dest::Dest;
use crate::rules::spec::RuleSpec;
use crate::rules::state::RuntimeState;

/// Where a rule in force comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Config,
    Runtime,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Runtime => "runtime",
        }
    }
}

/// An entry of `limiter list -o json`: the rule's fields, its source, and the config's rule
/// for the destination when a runtime rule overrides it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub rule: RuleSpec,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_rule: Option<RuleSpec>,
    /// For a `svc/` rule: how its Service resolves now (filled in by the daemon).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Layers {
    pub config: BTreeMap<Dest, RuleSpec>,
    pub runtime: RuntimeState,
}

impl Layers {
    /// The rules these layers put in force.
    pub fn effective(&self) -> BTreeMap<Dest, RuleSpec> {
        let mut rules: BTreeMap<Dest, RuleSpec> = self
            .config
            .iter()
            .filter(|(dest, _)| !self.runtime.deleted.contains(dest))
            .map(|(d, r)| (d.clone(), r.clone()))
            .collect();
        rules.extend(
            self.runtime
                .rules
                .iter()
                .map(|(d, r)| (d.clone(), r.clone())),
        );
        rules
    }

    /// The rule these layers put in force for `dest`: the runtime layer's, else the config's
    /// unless the runtime layer deleted it.
    pub fn effective_of(&self, dest: &Dest) -> Option<&RuleSpec> {
        if let Some(rule) = self.runtime.rules.get(dest) {
            return Some(rule);
        }
        if self.runtime.deleted.contains(dest) {
            return None;
        }
        self.config.get(dest)
    }

    /// Where the rule in force for `dest` comes from; None when these layers put none in force
    /// there (no rule, or an address a Service rule derived).
    pub fn source_of(&self, dest: &Dest) -> Option<Source> {
        self.effective_of(dest)?;
        let from_config = !self.runtime.rules.contains_key(dest) && self.config.contains_key(dest);
        Some(if from_config {
            Source::Config
        } else {
            Source::Runtime
        })
    }

    /// How many rules in force come from the config and from the runtime layer.
    pub fn count_by_source(&self) -> (usize, usize) {
        let runtime = &self.runtime;
        let from_config = self
            .config
            .keys()
            .filter(|d| !runtime.rules.contains_key(*d) && !runtime.deleted.contains(*d));
        (from_config.count(), runtime.rules.len())
    }

    /// Deletions of config rules that the config no longer has are moot: forget them.
    pub fn prune(&mut self) {
        let config = &self.config;
        self.runtime.deleted.retain(|d| config.contains_key(d));
    }

    /// Rules found in the kernel at start that no layer names were set at runtime by a
    /// previous daemon: they become runtime rules.
    pub fn adopt(&mut self, in_kernel: BTreeMap<Dest, RuleSpec>) {
        let mut kept = 0usize;
        for (dest, rule) in in_kernel {
            let known = self.config.contains_key(&dest)
                || self.runtime.rules.contains_key(&dest)
                || self.runtime.deleted.contains(&dest);
            if !known {
                debug!(%dest, "keeping a rule found in the kernel as a runtime rule");
                self.runtime.rules.insert(dest, rule);
                kept += 1;
            }
        }
        // One line, not one per rule: a restart of a daemon without a state file adopts every
        // rule it finds, 100 000 of them in the benchmarks.
        if kept > 0 {
            info!(
                rules = kept,
                "keeping rules found in the kernel that neither the config nor the state file names, as runtime rules (`limiter list` shows them; --log-level debug names each)"
            );
        }
    }

    /// Config destinations where the runtime layer (a rule or a deletion) takes precedence.
    pub fn overridden(&self) -> Vec<Dest> {
        let runtime = &self.runtime;
        let held = |d: &&Dest| runtime.rules.contains_key(d) || runtime.deleted.contains(d);
        self.config.keys().filter(held).cloned().collect()
    }

    /// `rules` (those in force) sorted by destination, each with its source.
    pub fn annotate(&self, mut rules: Vec<RuleSpec>) -> Vec<Listed> {
        rules.sort_by(|a, b| a.destination.cmp(&b.destination));
        let listed = |rule: RuleSpec| {
            let config_rule = self.config.get(&rule.destination).cloned();
            if self.runtime.rules.contains_key(&rule.destination) || config_rule.is_none() {
                let source = Source::Runtime;
                Listed {
                    rule,
                    source,
                    config_rule,
                    state: None,
                }
            } else {
                let source = Source::Config;
                Listed {
                    rule,
                    source,
                    config_rule: None,
                    state: None,
                }
            }
        };
        rules.into_iter().map(listed).collect()
    }

    /// The config rules deleted at runtime.
    pub fn deletions(&self) -> Vec<RuleSpec> {
        let deleted = self.runtime.deleted.iter();
        deleted
            .filter_map(|d| self.config.get(d).cloned())
            .collect()
    }
}

/// Rules by destination.
pub fn by_dest(rules: Vec<RuleSpec>) -> BTreeMap<Dest, RuleSpec> {
    rules
        .into_iter()
        .map(|r| (r.destination.clone(), r))
        .collect()
}
