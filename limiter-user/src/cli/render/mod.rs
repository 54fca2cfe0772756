//! What the client commands print: JSON documents (a stable interface, docs/cli.md) and aligned
//! tables for people.
//!
//! Tables are rendered from the daemon's JSON, not from in-process types, so what a person reads
//! is exactly what a script would get with `-o json`.

pub mod list;
pub mod overload;
mod table;

use table::{NO_RULES, render, table};

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::rules::spec::RuleSpec;

/// `-o json|table`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The daemon's JSON document, pretty-printed (stable field names, see docs/cli.md).
    Json,
}

/// The document of `limiter status -o json`.
#[cfg(test)]
pub fn status_document(
    destinations: &[crate::rules::status::DestinationStatus],
    daemon: Value,
) -> Value {
    serde_json::json!({ "destinations": destinations, "daemon": daemon })
}

/// A breaker as read back from JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BreakerView {
    endpoint: String,
    state: String,
    consecutive_failures: u64,
    ejections_total: u64,
    refused_total: u64,
}

/// The BREAKER column: `-` without breakers, the state of a single one, else how many of the
/// endpoints' breakers are not closed (`1/3 open`).
fn breaker_column(breakers: &[BreakerView]) -> String {
    match breakers {
        [] => "-".into(),
        [one] => one.state.clone(),
        many => {
            let open = many.iter().filter(|b| b.state != "closed").count();
            format!("{open}/{} open", many.len())
        }
    }
}

/// A side's counters as read back from JSON; absent fields read as 0 so that an older daemon's
/// answer still renders.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SideView {
    active: u64,
    pending: u64,
    opened_total: u64,
    closed_total: u64,
    lifetime_seconds_total: f64,
    accepted_total: u64,
    cx_overflow_total: u64,
    refused: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Deserialize)]
struct DestView {
    destination: String,
    #[serde(default)]
    inbound: SideView,
    #[serde(default)]
    outbound: SideView,
    #[serde(default)]
    rule: Option<RuleSpec>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    seeding: Option<String>,
    #[serde(default)]
    breakers: Vec<BreakerView>,
}

#[derive(Debug, Deserialize)]
struct StatusView {
    destinations: Vec<DestView>,
}

/// `limiter status` as a table, from the JSON text of the `status` document.
pub fn status_table(doc: &str) -> anyhow::Result<String> {
    let view: StatusView = serde_json::from_str(doc)?;
    if view.destinations.is_empty() {
        return Ok(NO_RULES.into());
    }
    let mut t = table(
        &[
            "DESTINATION",
            "RULE",
            "IN ACTIVE",
            "IN OPENED",
            "IN CLOSED",
            "OUT ACTIVE",
            "OUT OPENED",
            "OUT CLOSED",
            "OVERFLOW",
            "REFUSED",
            "BREAKER",
        ],
        2,
    );
    let mut on_next_packet = false;
    for d in &view.destinations {
        let (i, o) = (&d.inbound, &d.outbound);
        // Marked: the rule counted the connections open at its creation only as each next
        // carries a packet (a kernel without the seeding iterator), so an idle one may be
        // missing from its counts.
        let mark = if d.seeding.as_deref() == Some("next_packet") {
            on_next_packet = true;
            " *"
        } else {
            ""
        };
        t.add_row(vec![
            format!("{}{mark}", d.destination),
            d.rule
                .as_ref()
                .map_or_else(|| "-".into(), RuleSpec::summary),
            i.active.to_string(),
            i.opened_total.to_string(),
            i.closed_total.to_string(),
            o.active.to_string(),
            o.opened_total.to_string(),
            o.closed_total.to_string(),
            (i.cx_overflow_total + o.cx_overflow_total).to_string(),
            refused_summary(i, o),
            breaker_column(&d.breakers),
        ]);
    }
    let mut out = render(&t);
    if on_next_packet {
        out += "\n* this kernel cannot run the seeding iterator: connections open when the \
                rule was created are counted when each next carries a packet (an idle one is \
                not counted until then)";
    }
    out += &overload::overload_section(doc)?;
    Ok(out)
}

/// Refusals of both sides by reason, all actions together: `limit 4, rate 2`, or `-`.
fn refused_summary(i: &SideView, o: &SideView) -> String {
    let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    for side in [i, o] {
        for (reason, actions) in &side.refused {
            *by_reason.entry(reason.as_str()).or_default() += actions.values().sum::<u64>();
        }
    }
    let parts: Vec<String> = by_reason
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// `limiter get` as a vertical view: the rule, then each counter for both sides.
pub fn get_view(doc: &Value) -> anyhow::Result<String> {
    let d = DestView::deserialize(doc)?;
    let mut head = table(&["", ""], usize::MAX);
    head.add_row(vec!["Destination:".into(), d.destination.clone()]);
    head.add_row(vec![
        "Rule:".into(),
        d.rule
            .as_ref()
            .map_or_else(|| "-".into(), RuleSpec::summary),
    ]);
    if let Some(source) = &d.source {
        head.add_row(vec!["Source:".into(), source.clone()]);
    }

    let (i, o) = (&d.inbound, &d.outbound);
    let mut t = table(&["COUNTER", "INBOUND", "OUTBOUND"], 1);
    let mut row = |name: &str, a: String, b: String| {
        t.add_row(vec![name.to_string(), a, b]);
    };
    for (name, f) in [
        ("active", (|s: &SideView| s.active) as fn(&SideView) -> u64),
        ("pending", |s| s.pending),
        ("opened_total", |s| s.opened_total),
        ("closed_total", |s| s.closed_total),
        ("accepted_total", |s| s.accepted_total),
        ("cx_overflow_total", |s| s.cx_overflow_total),
    ] {
        row(name, f(i).to_string(), f(o).to_string());
    }
    let mean = |s: &SideView| match s.closed_total {
        0 => "-".to_string(),
        n => format!("{:.3}", s.lifetime_seconds_total / n as f64),
    };
    row("mean_lifetime_seconds", mean(i), mean(o));
    // Every refusal reason/action either side has a counter for, e.g. refused.rate.drop.
    let mut keys: Vec<(&String, &String)> = Vec::new();
    for side in [i, o] {
        for (reason, actions) in &side.refused {
            keys.extend(actions.keys().map(|action| (reason, action)));
        }
    }
    keys.sort();
    keys.dedup();
    let refused = |s: &SideView, r: &str, a: &str| {
        s.refused
            .get(r)
            .and_then(|m| m.get(a))
            .copied()
            .unwrap_or(0)
    };
    for (reason, action) in keys {
        let name = format!("refused.{reason}.{action}");
        row(
            &name,
            refused(i, reason, action).to_string(),
            refused(o, reason, action).to_string(),
        );
    }
    let mut out = format!("{}\n\n{}", render(&head), render(&t));
    if !d.breakers.is_empty() {
        let mut b = table(
            &[
                "BREAKER",
                "STATE",
                "CONSECUTIVE FAILURES",
                "EJECTIONS",
                "REFUSED",
            ],
            2,
        );
        for v in &d.breakers {
            b.add_row(vec![
                v.endpoint.clone(),
                v.state.clone(),
                v.consecutive_failures.to_string(),
                v.ejections_total.to_string(),
                v.refused_total.to_string(),
            ]);
        }
        out += &format!("\n\n{}", render(&b));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

/// One event: a JSON object per line, or an aligned line for people:
/// `TIME  SIDE  DESTINATION  from SOURCE  REASON/ACTION` for a refusal,
/// `TIME  breaker  DESTINATION  endpoint ENDPOINT  STATE (CAUSE)` for a breaker's transition.
pub fn event_line(event: &Value, format: Format) -> String {
    if format == Format::Json {
        return event.to_string();
    }
    let field = |k: &str| event[k].as_str().unwrap_or("?").to_string();
    if event["kind"] == "breaker" {
        return format!(
            "{}  {:<8}  {:<24}  endpoint {:<20}  {} ({})",
            field("time"),
            "breaker",
            field("destination"),
            field("endpoint"),
            field("state"),
            field("cause")
        );
    }
    format!(
        "{}  {:<8}  {:<24}  from {:<24}  {}/{}",
        field("time"),
        field("side"),
        field("destination"),
        field("source"),
        field("reason"),
        field("action")
    )
}
