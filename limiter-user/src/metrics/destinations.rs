//! The per-destination metric families, from the same counters as `limiter status`.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::encode::{Labels, family};
use crate::rules::status::{DestinationStatus, SideStatus};

/// Both sides of every destination, with their labels.
fn sides(statuses: &[DestinationStatus]) -> Vec<(Labels, &SideStatus)> {
    let mut out = Vec::with_capacity(statuses.len() * 2);
    for d in statuses {
        for (side, counters) in [("inbound", &d.inbound), ("outbound", &d.outbound)] {
            let labels = vec![
                ("destination", d.destination.clone()),
                ("side", side.into()),
            ];
            out.push((labels, counters));
        }
    }
    out
}

pub fn destinations(statuses: &[DestinationStatus], enc: &mut DescriptorEncoder) -> fmt::Result {
    let sides = sides(statuses);
    let per_side = |f: fn(&SideStatus) -> u64| sides.iter().map(move |(l, s)| (l.clone(), f(s)));
    let gauges = [
        (
            "limiter_destination_active_connections",
            "Established connections now.",
            per_side(|s| s.active),
        ),
        (
            "limiter_destination_pending_connections",
            "Handshakes holding a reserved slot now.",
            per_side(|s| s.pending),
        ),
    ];
    for (name, help, samples) in gauges {
        family(
            enc,
            name,
            help,
            None,
            samples.map(|(l, v)| (l, ConstGauge::new(v as i64))),
        )?;
    }
    let counters = [
        (
            "limiter_destination_opened",
            "Connections that became established.",
            per_side(|s| s.opened_total),
        ),
        (
            "limiter_destination_closed",
            "Counted connections that closed.",
            per_side(|s| s.closed_total),
        ),
        (
            "limiter_destination_accepted",
            "New connections admitted by a decision.",
            per_side(|s| s.accepted_total),
        ),
        (
            "limiter_destination_cx_overflow",
            "Connections refused because max_connections was reached (Envoy's upstream_cx_overflow).",
            per_side(|s| s.cx_overflow_total),
        ),
    ];
    for (name, help, samples) in counters {
        family(
            enc,
            name,
            help,
            None,
            samples.map(|(l, v)| (l, ConstCounter::new(v))),
        )?;
    }
    let lifetimes = sides
        .iter()
        .map(|(l, s)| (l.clone(), ConstCounter::new(s.lifetime_seconds_total)));
    family(
        enc,
        "limiter_destination_connection_lifetime",
        "Sum of the lifetimes of closed connections.",
        Some(&Unit::Seconds),
        lifetimes,
    )?;
    let refused = sides.iter().flat_map(|(labels, s)| {
        s.refused.iter().map(move |(reason, action, n)| {
            let mut labels = labels.clone();
            labels.push(("reason", reason.into()));
            labels.push(("action", action.into()));
            (labels, ConstCounter::new(n))
        })
    });
    family(
        enc,
        "limiter_destination_refused",
        "Refused connections by reason (limit, rate, per_source, shed, table_full, breaker) and action \
         (reject, drop, dry_run: would have been refused).",
        None,
        refused,
    )?;
    let limits = statuses.iter().filter_map(|d| {
        let max = d.rule.as_ref()?.max_connections?;
        Some((
            vec![("destination", d.destination.clone())],
            ConstGauge::new(i64::from(max)),
        ))
    });
    family(
        enc,
        "limiter_destination_max_connections",
        "The rule's max_connections, per side.",
        None,
        limits,
    )
}

/// The overload check's state of every `--adaptive` destination.
pub fn overload(statuses: &[DestinationStatus], enc: &mut DescriptorEncoder) -> fmt::Result {
    let adaptive: Vec<&DestinationStatus> = statuses
        .iter()
        .filter(|d| d.rule.as_ref().is_some_and(|r| r.adaptive.is_some()))
        .collect();
    let labels = |d: &DestinationStatus| vec![("destination", d.destination.clone())];
    family(
        enc,
        "limiter_destination_shedding",
        "1 while the overload check is armed for the destination (new connections over \
         limiter_destination_shed_limit are refused with reason shed), else 0.",
        None,
        adaptive
            .iter()
            .map(|d| (labels(d), ConstGauge::new(i64::from(d.overload.shedding)))),
    )?;
    let optional = [
        (
            "limiter_destination_max_inflight",
            "maxPass x minRt by Little's law: the connections the destination holds at its best.",
            (|d: &DestinationStatus| d.overload.max_inflight)
                as fn(&DestinationStatus) -> Option<u64>,
        ),
        (
            "limiter_destination_shed_limit",
            "The limit the kernel enforces while shedding.",
            |d| d.overload.shed_limit,
        ),
    ];
    for (name, help, value) in optional {
        let samples = adaptive
            .iter()
            .filter_map(|d| Some((labels(d), ConstGauge::new(value(d)? as i64))));
        family(enc, name, help, None, samples)?;
    }
    let cpu = adaptive
        .iter()
        .filter_map(|d| Some((labels(d), ConstGauge::new(d.overload.cpu?))));
    family(
        enc,
        // Named like limiter_node_cpu_usage_ratio (prometheus-client's Unit::Ratios would
        // spell the suffix `_ratios`).
        "limiter_destination_workload_cpu_usage_ratio",
        "Filtered CPU of the destination's workload, as a fraction of what it may use.",
        None,
        cpu,
    )
}

/// Every circuit breaker: its state and ejections, labelled by its rule's destination and the
/// endpoint it guards.
pub fn breakers(statuses: &[DestinationStatus], enc: &mut DescriptorEncoder) -> fmt::Result {
    let all = || {
        statuses.iter().flat_map(|d| {
            d.breakers.iter().map(move |b| {
                let labels = vec![
                    ("destination", d.destination.clone()),
                    ("endpoint", b.endpoint.clone()),
                ];
                (labels, b)
            })
        })
    };
    family(
        enc,
        "limiter_breaker_state",
        "State of a circuit breaker: 0 closed, 1 open (connects refused with reason breaker), \
         2 half-open (probes going out).",
        None,
        all().map(|(l, b)| {
            let state = limiter_common::breaker_state::NAMES
                .iter()
                .position(|n| *n == b.state)
                .unwrap_or(0);
            (l, ConstGauge::new(state as i64))
        }),
    )?;
    family(
        enc,
        "limiter_breaker_ejections",
        "Times a circuit breaker opened (Istio/Envoy ejections).",
        None,
        all().map(|(l, b)| (l, ConstCounter::new(b.ejections_total))),
    )
}
