//! What `limiter list`, `apply` and `reload` print.

use serde::Deserialize;
use serde_json::Value;

use super::table::{NO_RULES, opt, render, table};
use crate::rules::spec::RuleSpec;

/// An entry of `list`: the rule's fields, its source, the config rule it overrides.
#[derive(Debug, Deserialize)]
struct ListedView {
    #[serde(flatten)]
    rule: RuleSpec,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    config_rule: Option<RuleSpec>,
    #[serde(default)]
    state: Option<String>,
}

/// `limiter list` as a table.
pub fn list_table(doc: &Value) -> anyhow::Result<String> {
    let rules = Vec::<ListedView>::deserialize(doc)?;
    if rules.is_empty() {
        return Ok(NO_RULES.into());
    }
    let header = [
        "DESTINATION",
        "MAX CONNECTIONS",
        "MODE",
        "SIDE",
        "SYN RATE",
        "SYN BURST",
        "PER SOURCE",
        "DRY RUN",
        "ADAPTIVE",
        "SOURCE",
    ];
    let mut t = table(&header, usize::MAX);
    for ListedView {
        rule: r,
        source,
        config_rule,
        state,
    } in &rules
    {
        let mut source = source.clone().unwrap_or_else(|| "-".into());
        if config_rule.is_some() {
            source += " (overrides config)";
        }
        // A `svc/` rule's resolution: `resolved`, or why it is pending.
        if let Some(state) = state {
            source += &format!(", {state}");
        }
        t.add_row(vec![
            r.destination.to_string(),
            opt(r.max_connections),
            r.mode.name().into(),
            r.side.name().into(),
            opt(r.syn_rate),
            opt(r.syn_burst.or(r.syn_rate)),
            opt(r.per_source),
            if r.dry_run { "yes" } else { "no" }.into(),
            adaptive_summary(r),
            source,
        ]);
    }
    Ok(render(&t))
}

/// The ADAPTIVE column: `-`, `yes`, or the settings that differ from the defaults.
fn adaptive_summary(r: &RuleSpec) -> String {
    let Some(a) = &r.adaptive else {
        return "-".into();
    };
    let mut parts = Vec::new();
    if let Some(t) = a.cpu_threshold {
        parts.push(format!("cpu>{t}"));
    }
    if let Some(w) = a.window {
        parts.push(format!("window {w}"));
    }
    if let Some(b) = a.buckets {
        parts.push(format!("{b} buckets"));
    }
    if let Some(c) = a.cooldown {
        parts.push(format!("cooldown {c}"));
    }
    if let Some(c) = &a.workload_cgroup {
        parts.push(format!("cgroup {c}"));
    }
    if let Some(p) = r.priority {
        parts.push(p.to_string());
    }
    if parts.is_empty() {
        "yes".into()
    } else {
        parts.join(", ")
    }
}

/// Lines under the `list` table naming the config rules deleted at runtime (`daemon.
/// runtime_deletions` of `status`), or nothing.
pub fn runtime_deletions_note(deletions: &Value) -> String {
    let rules = Vec::<RuleSpec>::deserialize(deletions).unwrap_or_default();
    let mut note = String::new();
    for r in rules {
        note += &format!(
            "\n{}: config rule ({}) deleted at runtime; `limiter revert {}` restores it",
            r.destination,
            r.summary(),
            r.destination
        );
    }
    note
}

/// What an answer of `apply` says: `2 changed, 1 unchanged`.
pub fn apply_summary(answer: &Value) -> anyhow::Result<String> {
    let applied = answer["applied"].as_array().map(Vec::len);
    let unchanged = answer["unchanged"].as_u64();
    match (applied, unchanged) {
        (Some(applied), Some(unchanged)) => Ok(format!("{applied} changed, {unchanged} unchanged")),
        _ => anyhow::bail!("no counts in {answer}"),
    }
}

/// What an answer of `reload` says, on one line, with a second one if the [daemon] settings
/// changed.
pub fn reload_summary(answer: &Value) -> anyhow::Result<String> {
    let config = answer["config"].as_str().unwrap_or("the config");
    let deleted = answer["deleted"].as_array().map_or(0, Vec::len);
    let mut s = format!(
        "reloaded {config}: {}, {deleted} deleted",
        apply_summary(answer)?
    );
    let overridden: Vec<&str> = answer["overridden"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !overridden.is_empty() {
        s += &format!(
            "; runtime changes keep precedence for {}",
            overridden.join(", ")
        );
    }
    if answer["daemon_settings_changed"].as_bool() == Some(true) {
        s += "\nnote: the [daemon] settings changed; they take effect at the next start";
    }
    Ok(s)
}
