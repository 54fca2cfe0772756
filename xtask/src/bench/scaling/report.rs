//! The tables, target and plot of the rule-scaling scenario.

use super::{LIMIT, Step};
use crate::bench::Plan;
use crate::bench::plot::{Kind, Plot};
use crate::bench::report::{Section, Table, Target};
use crate::bench::stats;
use crate::bench::world::Contender;

fn rules_label(n: usize) -> String {
    match n {
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

pub fn section(plan: &Plan, steps: &[Step], measured: &[Contender]) -> Section {
    let mut s = Section::new("");
    s.intro.push(format!(
        "N rules installed, N − 1 of them for destinations that never match, spread over \
         198.18.0.0/15 around the server's address 198.19.0.2 (so limiter's lookup of it walks \
         as deep into its rules trie as any); the last rule limits the server to {LIMIT} \
         (never reached). iptables and nftables get the same N rules in the node's FORWARD \
         path, the limiting one last, as the issue asks (iptables-restore and nft -f for speed). \
         The client connects {} times per contender and rule count, one after the other. \
         Order: none, limiter, iptables, nftables, iptables, limiter, none; the limiter's two \
         turns are one install and one daemon restart that adopts the installed rules.",
        plan.scaling_connects
    ));
    let p50 = |st: &Step, c: Contender| st.lat.get(&(c as usize)).and_then(|v| stats::median(v));
    let p99 = |st: &Step, c: Contender| st.lat.get(&(c as usize)).and_then(|v| stats::pct(v, 99.0));
    let mut header = vec!["rules".to_string()];
    header.extend(measured.iter().map(|c| format!("{}: p50 (p99)", c.short())));
    header.push("iptables p50 ÷ limiter server p50".into());
    let mut t = Table {
        header,
        rows: vec![],
    };
    for st in steps {
        let mut row = vec![rules_label(st.rules)];
        for &c in measured {
            let what = format!("{} at {} rules", c.short(), st.rules);
            let cell = if c.is_limiter() && st.skipped.is_some() {
                "skipped (see below)".to_string()
            } else {
                let m = s.value(p50(st, c), &what, stats::fmt_us);
                format!("{m} ({})", stats::fmt_us(p99(st, c)))
            };
            row.push(cell);
        }
        row.push(stats::ratio(
            p50(st, Contender::Iptables),
            p50(st, Contender::ServerReject),
        ));
        t.row(row);
    }
    s.tables.push(t);

    let mut t = Table::new(&[
        "rules",
        "limiter: install (`apply`, 5k rules per request)",
        "one more `limiter set` at this count",
        "requests answered ENOMEM (sent again)",
        "limiter: daemon restart adopting them",
        "iptables-restore",
        "nft -f",
        "limiter sk_lookup decision (kernel ns)",
    ]);
    let secs = |d: Option<&std::time::Duration>| {
        d.map_or("—".into(), |d| format!("{:.2} s", d.as_secs_f64()))
    };
    for st in steps {
        let inst = |c: Contender| st.install.get(&(c as usize));
        let lim = inst(Contender::Client).and_then(|v| v.first());
        let rate = lim.map_or(String::new(), |d| {
            format!(
                " ({:.0} rules/s)",
                st.rules as f64 / d.as_secs_f64().max(1e-9)
            )
        });
        t.row(vec![
            rules_label(st.rules),
            if st.skipped.is_some() {
                "over budget".into()
            } else {
                secs(lim) + &rate
            },
            st.set_one_ms.map_or("—".into(), |ms| format!("{ms:.1} ms")),
            st.enomem_retries.to_string(),
            secs(st.adopt.as_ref()),
            inst(Contender::Iptables).map_or("—".into(), |v| {
                v.iter()
                    .map(|d| secs(Some(d)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            secs(inst(Contender::Nftables).and_then(|v| v.first())),
            stats::num(st.lookup_ns, 0),
        ]);
        if let Some(why) = &st.skipped {
            s.notes
                .push(format!("{} rules: {why}.", rules_label(st.rules)));
        }
    }
    s.tables.push(t);
    if steps.iter().any(|st| st.enomem_retries > 0) {
        // Older daemons did not retry the kernel's transient ENOMEM themselves.
        s.notes.push(
            "**Rule creation fails under a burst**: the daemon answered some `set` requests \
             with \"create rule counters (RULE_STATS full?): Cannot allocate memory\" although \
             the maps are far from full. RULE_STATS is a per-CPU hash map without \
             preallocation; its elements come from per-CPU memory allocated without sleeping, \
             which runs out during a burst of creations until the kernel populates more. The \
             benchmark sends such a request again after 10 ms (counted above); a user's \
             `limiter set` would fail."
                .into(),
        );
    }
    s.notes.push(
        "Rules are installed with `apply` (the daemon's bulk request, one transaction per \
         request); *one more `limiter set`* is the median of 5 single-rule requests with the N \
         rules in, what adding a rule costs a user then. The benchmark's daemon keeps a state \
         file as a node daemon does (each change is a synced line of its journal, docs/config.md). \
         The restart is timed from the daemon's start until it answers a request (`limiter \
         system get`, which costs the same at any rule count)."
            .into(),
    );
    if let Some(st) = steps.iter().rev().find(|st| st.skipped.is_none()) {
        let at = rules_label(st.rules);
        s.targets.push(Target::new(
            "one `limiter set` at 100 000 rules under 5 ms",
            st.set_one_ms
                .map_or("—".into(), |ms| format!("{ms:.2} ms at {at} rules")),
            st.set_one_ms
                .filter(|_| st.rules >= 100_000)
                .map(|ms| ms < 5.0),
        ));
        s.targets.push(Target::new(
            "a restart adopting 100 000 rules answers within 2 s",
            st.adopt.map_or("—".into(), |d| {
                format!("{:.2} s at {at} rules", d.as_secs_f64())
            }),
            st.adopt
                .filter(|_| st.rules >= 100_000)
                .map(|d| d.as_secs_f64() < 2.0),
        ));
    }
    let (first, last) = (
        steps.first(),
        steps.iter().rev().find(|st| st.skipped.is_none()),
    );
    if let (Some(a), Some(b)) = (first, steps.last())
        && b.rules > a.rules
        && let (Some(x), Some(y)) = (p50(a, Contender::Iptables), p50(b, Contender::Iptables))
    {
        s.notes.push(format!(
            "iptables grows by {:.0} ns of connect() latency per rule from {} to {} rules; a \
             connect() crosses the FORWARD chain twice (SYN and SYN-ACK), so about {:.0} ns \
             per rule per packet.",
            (y - x) * 1000.0 / (b.rules - a.rules) as f64,
            a.rules,
            b.rules,
            (y - x) * 500.0 / (b.rules - a.rules) as f64
        ));
    }
    let mut parts = Vec::new();
    let mut met = None;
    if let (Some(a), Some(b)) = (first, last) {
        // Each p50 over no limiter's p50 at the same rule count: the machine's drift during
        // the scenario (no limiter's own p50 moves too) cancels out.
        let rel = |st: &Step, c| stats::ratio_value(p50(st, c), p50(st, Contender::None));
        let growth = |c| stats::ratio_value(rel(b, c), rel(a, c));
        let mut all = true;
        for c in [
            Contender::Client,
            Contender::ServerReject,
            Contender::Iptables,
        ] {
            if c.is_limiter() {
                all &= growth(c).is_some_and(|g| g <= 1.10);
            }
            let raw = stats::ratio(p50(b, c), p50(a, c));
            parts.push(format!(
                "{} {} (raw {raw})",
                c.short(),
                stats::ratio(growth(c), Some(1.0))
            ));
        }
        let full = b.rules >= 100_000;
        met = full.then_some(all);
        parts.insert(
            0,
            format!(
                "p50 at {} ÷ p50 at {} rules{}, each relative to no limiter at the same count:",
                rules_label(b.rules),
                rules_label(a.rules),
                if full { "" } else { " (100k not measured)" }
            ),
        );
    }
    s.targets.push(Target::new(
        "flat connect latency from 1 to 100k rules (limiter p50 within 10%, drift removed)",
        parts.join(" "),
        met,
    ));
    let series = measured
        .iter()
        .map(|&c| {
            let pts = steps
                .iter()
                .filter_map(|st| Some((st.rules as f64, p50(st, c)?)))
                .collect();
            (c.short().to_string(), pts)
        })
        .collect();
    s.plots.push(Plot {
        file: "scaling.png".into(),
        title: "connect() p50 to a limited destination vs rules installed".into(),
        y_label: "µs (log scale)".into(),
        log_y: true,
        kind: Kind::Lines {
            x_label: "rules installed (log scale)".into(),
            log_x: true,
            series,
        },
    });
    s
}
