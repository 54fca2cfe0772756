//! Scenario 7: the daemon's memory and CPU at idle, with many rules, and under a SYN flood.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use super::daemon::BenchDaemon;
use super::report::{Section, Table, Target};
use super::world::World;
use super::{Carry, Plan, stats};

/// RSS (MiB) and CPU (% of one core) of the daemon over `window`.
fn sample(d: &BenchDaemon, window: Duration) -> (Option<f64>, Option<f64>) {
    let start = Instant::now();
    let cpu0 = d.cpu_time();
    std::thread::sleep(window);
    let cpu1 = d.cpu_time();
    let cpu = cpu0
        .zip(cpu1)
        .map(|(a, b)| 100.0 * (b - a).as_secs_f64() / start.elapsed().as_secs_f64());
    (d.rss_mib(), cpu)
}

pub fn run(w: &mut World, plan: &Plan, carry: &mut Carry) -> Result<Section> {
    w.limiter(true)?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = sample(w.daemon()?, plan.idle);
    let n = plan.footprint_rules;
    let rules: Vec<_> = (0..n as u32)
        .map(|i| {
            let a = SocketAddr::new(Ipv4Addr::from(0xc612_0000 + i).into(), 9100);
            json!({"destination": a.to_string(), "max_connections": 5})
        })
        .collect();
    let done = w
        .daemon()?
        .apply_many(&rules, 5000, Duration::from_secs(180))?;
    let (set, took) = (done.set, done.took);
    anyhow::ensure!(set == n, "only {set} of {n} rules installed in {took:?}");
    std::thread::sleep(Duration::from_secs(1));
    let loaded = sample(w.daemon()?, plan.idle);
    // The daemon's answer, to its last byte; then what a user waits for: the CLI's table.
    let t = Instant::now();
    let answer = w.daemon()?.request_text(&json!({"op": "status"}))?;
    let status_took = t.elapsed();
    let status: serde_json::Value = serde_json::from_str(&answer)?;
    let listed = status["data"]["destinations"]
        .as_array()
        .map_or(0, Vec::len);
    let after_status = w.daemon()?.rss_mib();
    let t = Instant::now();
    let table = w.daemon()?.cli(&["status"])?;
    let table_took = t.elapsed();
    anyhow::ensure!(
        table.lines().count() > n,
        "`limiter status` printed {} lines for {n} rules",
        table.lines().count()
    );
    w.limiter(false)?;

    let mut s = Section::new("");
    s.intro.push(format!(
        "The daemon's resident memory (VmRSS) and CPU time (user + system, from /proc), over \
         {} s windows: idle with no rule, then idle with {n} rules, and during the SYN flood of \
         scenario 6 (median over its runs). The daemon rescans network namespaces every second \
         to attach sk_lookup to new pods.",
        plan.idle.as_secs()
    ));
    let mut t = Table::new(&["situation", "RSS", "CPU (% of one core)"]);
    let mib = |v: Option<f64>| format!("{} MiB", stats::num(v, 1));
    let pct = |v: Option<f64>| format!("{}%", stats::num(v, 2));
    // (situation, RSS, CPU); CPU is not sampled after `status`.
    let mut rows = vec![
        ("idle, no rule".to_string(), idle.0, Some(idle.1)),
        (format!("idle, {n} rules"), loaded.0, Some(loaded.1)),
        (
            format!("after one `limiter status` of {n} rules"),
            after_status,
            None,
        ),
    ];
    for (c, cpu, rss) in &carry.flood_daemon {
        rows.push((format!("SYN flood, {}", c.label()), *rss, Some(*cpu)));
    }
    for (what, rss, cpu) in &rows {
        let cpu = cpu.map_or("—".into(), |c| s.value(c, what, pct));
        t.row(vec![what.clone(), s.value(*rss, what, mib), cpu]);
    }
    if carry.flood_daemon.is_empty() {
        s.notes
            .push("The SYN flood scenario did not run: no figures under flood.".into());
    }
    s.tables.push(t);
    s.notes.push(format!(
        "Installing the {n} rules took {:.2} s (`apply` requests of 5000 rules); `status` with {n} \
         rules answered in {} to its last byte ({listed} destinations, {:.1} MB of JSON) and left \
         the RSS at {}; `limiter status` (the CLI: request, parse, table) took {}.",
        took.as_secs_f64(),
        stats::fmt_us(Some(stats::us(status_took))),
        answer.len() as f64 / 1e6,
        mib(after_status),
        stats::fmt_us(Some(stats::us(table_took))),
    ));
    s.targets.push(Target::new(
        "`status` of 10 000 rules under 100 ms (the daemon's answer)",
        format!(
            "{n} rules: {}; the CLI's table {}",
            stats::fmt_us(Some(stats::us(status_took))),
            stats::fmt_us(Some(stats::us(table_took)))
        ),
        (n >= 10_000).then_some(status_took < Duration::from_millis(100)),
    ));
    s.notes.push(
        "For comparison, from the issue: a sidecar costs about 60 MB and 0.2 vCPU at 1000 rps, \
         per pod; the daemon is one per node, and the kernel maps it fills are accounted to the \
         kernel, not to its RSS."
            .into(),
    );
    let rss_of = |i: usize| rows.get(i).and_then(|r| r.1);
    let flood_rss = stats::max(&rows[3..].iter().filter_map(|r| r.1).collect::<Vec<_>>());
    let all = stats::max(&rows.iter().filter_map(|r| r.1).collect::<Vec<_>>());
    s.targets.push(Target::new(
        "daemon RSS under 30 MB",
        format!(
            "idle {}, with {n} rules {}, under flood {}; after one `status` of {n} rules {}",
            mib(rss_of(0)),
            mib(rss_of(1)),
            mib(flood_rss),
            mib(rss_of(2))
        ),
        all.map(|r| r * 1.048_576 < 30.0),
    ));
    s.targets.push(Target::new(
        "daemon idle CPU under 1% of a core",
        format!(
            "{} with no rule, {} with {n} rules",
            pct(idle.1),
            pct(loaded.1)
        ),
        idle.1.zip(loaded.1).map(|(a, b)| a < 1.0 && b < 1.0),
    ));
    Ok(s)
}
