//! The Prometheus metrics, in the OpenMetrics text format (prometheus-client).
//!
//! Everything is gathered at scrape time from the same sources as `limiter status` (the
//! dataplane's counters, the rule book) and /proc: a collector, no background copies. Names
//! follow Prometheus conventions, with Envoy's where they mean the same (`cx_overflow`).
//! docs/config.md lists every metric.
//!
//! `http.rs` serves `GET /metrics`; a scrape runs the collector here, which writes the
//! per-destination families (`destinations.rs`) and the node's (`node.rs`, from /proc) with
//! the helpers of `encode.rs`.

pub mod destinations;
mod encode;
pub mod http;
pub mod node;

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::rules::rulebook::{RuleBook, Source};
use encode::{family, gauge, single};
use node::CpuUsage;

/// The daemon's own health, beyond the rule book.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Network namespaces with the server-side program attached, if known.
    pub namespaces: Option<u64>,
    /// Failed runs of the periodic dataplane maintenance.
    pub maintenance_failures: u64,
}

type HealthFn = Box<dyn Fn() -> Health + Send + Sync>;

/// The `/metrics` document's producer.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(
        book: Arc<RuleBook>,
        overload: Option<Arc<crate::overload::Overload>>,
        health: impl Fn() -> Health + Send + Sync + 'static,
    ) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collected {
            book,
            overload,
            health: Box::new(health),
            cpu: CpuUsage::default(),
            started,
        }));
        Self { registry }
    }

    /// The text of one scrape. Blocking: reads the kernel's maps.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

struct Collected {
    overload: Option<Arc<crate::overload::Overload>>,
    book: Arc<RuleBook>,
    health: HealthFn,
    cpu: CpuUsage,
    started: f64,
}

impl fmt::Debug for Collected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("limiter collector")
    }
}

impl Collector for Collected {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let statuses = self.book.dataplane().status();
        let up = statuses.is_ok();
        if let Err(e) = &statuses {
            tracing::warn!(
                error = format!("{e:#}"),
                "metrics: cannot read the counters"
            );
        }
        let mut statuses = statuses.unwrap_or_default();
        // A `svc/` entry sums its address rules' counters, which are exported themselves.
        statuses.retain(|s| s.service.service_state.is_none());
        if let Some(o) = &self.overload {
            o.annotate(&mut statuses);
            let overloaded = i64::from(o.node().overloaded);
            gauge(
                "limiter_node_overloaded",
                "1 while the system rule finds the node overloaded (every adaptive destination's check is armed), else 0.",
                overloaded,
                &mut enc,
            )?;
        }
        crate::metrics::destinations::destinations(&statuses, &mut enc)?;
        crate::metrics::destinations::overload(&statuses, &mut enc)?;
        crate::metrics::destinations::breakers(&statuses, &mut enc)?;

        if let Some([one, five, fifteen]) = crate::metrics::node::load() {
            gauge(
                "limiter_node_load1",
                "The node's 1-minute load average.",
                one,
                &mut enc,
            )?;
            gauge(
                "limiter_node_load5",
                "The node's 5-minute load average.",
                five,
                &mut enc,
            )?;
            gauge(
                "limiter_node_load15",
                "The node's 15-minute load average.",
                fifteen,
                &mut enc,
            )?;
        }
        if let Some(ratio) = self.cpu.sample() {
            let help = "Fraction of the node's CPU time spent busy (all CPUs) since the previous \
                        scrape (at least 1 s; since boot at the first).";
            gauge("limiter_node_cpu_usage_ratio", help, ratio, &mut enc)?;
        }

        let up_help = "1 if the daemon reads the kernel's counters, else 0.";
        gauge("limiter_up", up_help, i64::from(up), &mut enc)?;
        let (config, runtime) = self.book.count_by_source();
        let by_source = [(Source::Config, config), (Source::Runtime, runtime)];
        let rules = by_source.into_iter().map(|(source, n)| {
            (
                vec![("source", source.as_str().to_string())],
                ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)),
            )
        });
        family(
            &mut enc,
            "limiter_rules",
            "Rules in force, by source (config or runtime).",
            None,
            rules,
        )?;
        let health = (self.health)();
        if let Some(n) = health.namespaces {
            let help = "Network namespaces with the server-side (sk_lookup) program attached.";
            gauge("limiter_namespaces", help, n as i64, &mut enc)?;
        }
        let info = [(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            ConstGauge::new(1),
        )];
        family(
            &mut enc,
            "limiter_build_info",
            "The daemon's version; always 1.",
            None,
            info,
        )?;
        gauge(
            "limiter_start_time_seconds",
            "When the daemon started, in seconds since the Unix epoch.",
            self.started,
            &mut enc,
        )?;
        let failures = ConstCounter::new(health.maintenance_failures);
        single(
            &mut enc,
            "limiter_maintenance_failures",
            "Failed runs of the periodic dataplane maintenance.",
            failures,
        )?;

        let reloads = self.book.reload_stats();
        let results = [("success", reloads.succeeded), ("failure", reloads.failed)]
            .map(|(result, n)| (vec![("result", result.to_string())], ConstCounter::new(n)));
        family(
            &mut enc,
            "limiter_config_reloads",
            "Config reloads (SIGHUP, limiter reload) by result.",
            None,
            results,
        )?;
        let last_ok = i64::from(!reloads.last_failed);
        gauge(
            "limiter_config_last_reload_successful",
            "0 if the last reload was refused, else 1.",
            last_ok,
            &mut enc,
        )
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
