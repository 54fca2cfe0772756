//! Scenario 4: connect latency to a limited destination with 1 to 100k rules installed, and
//! the time to install them.
//!
//! Installing 100k rules takes a while, so each contender installs once per rule count and the
//! contenders run in the order none, limiter, iptables, nftables, iptables, limiter, none: a
//! drift that is linear in time cancels. Between its two turns the limiter is *suspended*: its
//! daemon stopped and its links removed (nothing attached), its maps kept; the second turn is
//! a daemon restart that adopts the rules, which is timed too.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::net::{self, Pace};
use super::report::Section;
use super::world::{CLIENT, Contender, SERVER, World, deep, iptables_match, nft_rule};
use super::{Carry, Plan};
use limiter_integration_tests::bpf;

mod report;

/// The limited destination: limit never reached.
const LIMIT: u32 = 100_000;
/// Rules per `apply` request (the daemon reads requests of up to 1 MiB).
const BATCH: usize = 5000;
/// Longest a rule install may take before the rule count is skipped for that contender.
const INSTALL_BUDGET: Duration = Duration::from_secs(180);
const MEASURED: [Contender; 5] = [
    Contender::None,
    Contender::Client,
    Contender::ServerReject,
    Contender::Iptables,
    Contender::Nftables,
];

#[derive(Default)]
pub struct Step {
    pub rules: usize,
    /// connect() latencies in µs, per contender.
    pub lat: BTreeMap<usize, Vec<f64>>,
    /// Install time per contender (iptables: each of its two installs).
    pub install: BTreeMap<usize, Vec<Duration>>,
    /// Daemon restart adopting the rules, until it answered.
    pub adopt: Option<Duration>,
    /// Kernel time of one sk_lookup decision for the limited destination.
    pub lookup_ns: Option<f64>,
    /// Median time of one `limiter set` request with the rules installed, in ms.
    pub set_one_ms: Option<f64>,
    /// Rule requests the daemon answered with ENOMEM, sent again.
    pub enomem_retries: usize,
    /// Why the limiter was not measured at this rule count.
    pub skipped: Option<String>,
}

/// `n` rule destinations spread evenly over 198.18.0.0/15, never the server's own.
fn fillers(n: usize, dest: SocketAddr) -> Vec<SocketAddr> {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let step = (131_072 / (n + 1).max(1)).max(1) as u32;
    (0..131_072u32)
        .step_by(step as usize)
        .map(|i| SocketAddr::new(Ipv4Addr::from(base + i).into(), dest.port()))
        .filter(|a| *a != dest)
        .take(n)
        .collect()
}

pub fn run(w: &mut World, plan: &Plan, _: &mut Carry) -> Result<Section> {
    let dest = deep(9000);
    let _server = w.pod(SERVER).hold_server(dest);
    let mut steps = Vec::new();
    for &n in &plan.rule_counts {
        eprintln!("bench:   {n} rules");
        let step = measure(w, plan, n, dest);
        w.reset();
        steps.push(step?);
    }
    Ok(report::section(plan, &steps, &MEASURED))
}

fn measure(w: &mut World, plan: &Plan, n: usize, dest: SocketAddr) -> Result<Step> {
    let mut step = Step {
        rules: n,
        ..Step::default()
    };
    let fill = fillers(n - 1, dest);
    let half = plan.scaling_connects / 2;
    sample(w, &mut step, Contender::None, dest, half);
    let limiter_on = limiter_install(w, &mut step, &fill, dest)?;
    if limiter_on {
        limiter_sample(w, &mut step, dest, half)?;
        step.lookup_ns = lookup_ns(w, dest, plan.repeat / 10).ok();
        w.daemon_mut()?.suspend()?;
    }
    for (c, halves) in [
        (Contender::Iptables, 1),
        (Contender::Nftables, 2),
        (Contender::Iptables, 1),
    ] {
        let took = firewall(w, c, &fill, dest, true)?;
        step.install.entry(c as usize).or_default().push(took);
        for _ in 0..halves {
            sample(w, &mut step, c, dest, half);
        }
        firewall(w, c, &fill, dest, false)?;
    }
    if limiter_on {
        let d = w.daemon_mut()?;
        d.resume()?;
        step.adopt = Some(d.started_in);
        limiter_sample(w, &mut step, dest, half)?;
    }
    w.limiter(false)?;
    sample(w, &mut step, Contender::None, dest, half);
    Ok(step)
}

/// Starts the daemon and sets the filler rules and the limiting rule, timing it; false (with
/// the reason in `step.skipped`) when the install ran past its budget.
fn limiter_install(
    w: &mut World,
    step: &mut Step,
    fill: &[SocketAddr],
    dest: SocketAddr,
) -> Result<bool> {
    w.limiter(true)?;
    let mut rules: Vec<_> = fill
        .iter()
        .map(|a| json!({"destination": a.to_string(), "max_connections": 5, "side": "both"}))
        .collect();
    rules
        .push(json!({"destination": dest.to_string(), "max_connections": LIMIT, "side": "server"}));
    let done = w.daemon()?.apply_many(&rules, BATCH, INSTALL_BUDGET)?;
    let (set, took) = (done.set, done.took);
    step.enomem_retries = done.enomem_retries;
    if set == rules.len() {
        // What one more rule costs with N in: a `limiter set` of a destination not yet ruled.
        let mut ms = Vec::new();
        for i in 0..5u8 {
            let t = Instant::now();
            w.daemon()?
                .set(&format!("198.18.0.{i}:9001"), 5, "both", "reject")?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        step.set_one_ms = super::stats::median(&ms);
    }
    if set < rules.len() {
        step.skipped = Some(format!(
            "{set} of {} rules installed in {:.0} s (budget {} s): limiter not measured at this count",
            rules.len(),
            took.as_secs_f64(),
            INSTALL_BUDGET.as_secs()
        ));
        w.limiter(false)?;
        return Ok(false);
    }
    step.install
        .entry(Contender::Client as usize)
        .or_default()
        .push(took);
    Ok(true)
}

/// Client-side and server-side variants of the limiting rule, in alternating chunks.
fn limiter_sample(w: &mut World, step: &mut Step, dest: SocketAddr, n: usize) -> Result<()> {
    for chunk in 0..4 {
        let c = [Contender::Client, Contender::ServerReject][chunk % 2];
        let side = if c == Contender::Client {
            "client"
        } else {
            "server"
        };
        w.daemon()?.set(&dest.to_string(), LIMIT, side, "reject")?;
        sample(w, step, c, dest, n / 2);
    }
    Ok(())
}

fn sample(w: &World, step: &mut Step, c: Contender, dest: SocketAddr, n: usize) {
    let pace = |count| Pace {
        count,
        budget: Duration::from_secs(60),
        timeout: Duration::from_secs(2),
        gap: Duration::ZERO,
    };
    let client = w.pod(CLIENT).ns();
    net::probe(client, dest, pace(20)); // warm-up
    let p = net::probe(client, dest, pace(n));
    step.lat.entry(c as usize).or_default().extend(p.ok);
}

/// Installs (`on`) or removes iptables or nftables rules: `fill` that never match, then the
/// limiting rule. Returns how long the install took.
fn firewall(
    w: &World,
    c: Contender,
    fill: &[SocketAddr],
    dest: SocketAddr,
    on: bool,
) -> Result<Duration> {
    let start = Instant::now();
    match (c, on) {
        (Contender::Iptables, true) => {
            let mut text = String::from("*filter\n");
            for a in fill.iter().chain([&dest]) {
                let max = if *a == dest { LIMIT } else { 5 };
                text += &format!("-A FORWARD {}\n", iptables_match(*a, max));
            }
            text += "COMMIT\n";
            let file = w.work.join("iptables.rules");
            std::fs::write(&file, text)?;
            let path = file.display().to_string();
            w.node().run("iptables-restore", ["-w", "--noflush", &path]);
        }
        (Contender::Iptables, false) => {
            w.node().run("iptables", ["-w", "-F", "FORWARD"]);
        }
        (Contender::Nftables, true) => {
            let rules: Vec<String> = fill
                .iter()
                .map(|a| nft_rule(*a, 5))
                .chain([nft_rule(dest, LIMIT)])
                .collect();
            w.nft_table(&rules, true)?;
        }
        (Contender::Nftables, false) => w.nft_delete(),
        _ => bail!("{c:?} is not a firewall"),
    }
    Ok(start.elapsed())
}

/// ns per sk_lookup run for a SYN to `dest`: the rules trie lookup, then the pending table
/// (the first run admits the flow; the repeats find its reservation).
fn lookup_ns(w: &World, dest: SocketAddr, repeat: u32) -> Result<f64> {
    let dir = w.daemon()?.links_dir();
    let pin = std::fs::read_dir(&dir)?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("sk_lookup-"))
        .context("no sk_lookup link pinned")?;
    let prog = bpf::prog_of_pinned_link(&pin.path())?;
    let SocketAddr::V4(local) = dest else {
        bail!("IPv4 only")
    };
    let remote = "10.250.1.2:45000".parse()?;
    let ctx = bpf::sk_lookup_ctx(remote, local);
    bpf::test_run(&prog, &[], &ctx, 1)?;
    Ok(f64::from(
        bpf::test_run(&prog, &[], &ctx, repeat)?.ns_per_run,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fillers_are_distinct_and_skip_the_destination() {
        let dest = deep(9000);
        for n in [0, 1, 999, 99_999] {
            let f = fillers(n, dest);
            assert_eq!(f.len(), n);
            assert!(!f.contains(&dest));
            let set: std::collections::BTreeSet<_> = f.iter().collect();
            assert_eq!(set.len(), n);
        }
    }
}
