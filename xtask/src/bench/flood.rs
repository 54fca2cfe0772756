//! Scenario 6: a SYN flood (hping3 --flood) at a limited destination while a well-behaved
//! client keeps connecting to another server on the node.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::net::{self, Pace, Probe};
use super::plot::{Kind, Plot};
use super::report::{Section, Table};
use super::world::{ATTACKER, CLIENT, Contender, OTHER, SERVER, World, addr, addr4};
use super::{Carry, Plan, stats};

#[derive(Default)]
struct Runs {
    probe: Probe,
    syn_rate: Vec<f64>,
    softirq: Vec<f64>,
    daemon_cpu: Vec<f64>,
    daemon_rss: Vec<f64>,
}

/// hping3 in the attacker pod, bounded by `timeout`; interrupted and reaped on drop.
struct Flood(Option<Child>);

impl Flood {
    fn start(w: &World, target: std::net::SocketAddr, secs: u64) -> Result<Self> {
        let child = w
            .pod(ATTACKER)
            .ns()
            .command("timeout")
            .args([
                "-s",
                "INT",
                "-k",
                "3",
                &secs.to_string(),
                "hping3",
                "-S",
                "--flood",
            ])
            .args(["-p", &target.port().to_string(), "-I", "eth0", "-a"])
            .arg(addr4(ATTACKER, 0).ip().to_string())
            .arg(target.ip().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start hping3")?;
        Ok(Self(Some(child)))
    }

    /// Waits for the end of the flood; the number of SYNs hping3 says it sent.
    fn finish(mut self) -> Result<u64> {
        let out = self.0.take().expect("running").wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        text.lines()
            .find(|l| l.contains("packets transmitted"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no packet count in hping3's output: {text}"))
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // `timeout` leads its own process group, hping3 included.
            // SAFETY: signalling the process group of our own unreaped child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

/// `(softirq, total)` jiffies of all CPUs.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    (f.get(6).copied().unwrap_or(0), f.iter().take(8).sum())
}

pub fn run(w: &mut World, plan: &Plan, carry: &mut Carry) -> Result<Section> {
    let (target, other) = (addr(SERVER, 8600), addr(OTHER, 8610));
    let _servers = (
        w.pod(SERVER).hold_server(target),
        w.pod(OTHER).hold_server(other),
    );
    let pace = |budget| Pace {
        count: 100_000,
        budget,
        timeout: Duration::from_secs(1),
        gap: Duration::from_millis(10),
    };
    let calm = net::probe(w.pod(CLIENT).ns(), other, pace(Duration::from_secs(2)));
    let mut runs: BTreeMap<usize, Runs> = BTreeMap::new();
    for rep in 0..plan.flood_reps {
        for c in Contender::order(rep, &Contender::ALL) {
            let r = runs.entry(c as usize).or_default();
            w.with_limits(c, &[(target, 5)], |w| {
                let daemon = w.daemon().ok();
                let cpu0 = daemon.and_then(|d| d.cpu_time());
                let (soft0, total0) = cpu_jiffies();
                let start = Instant::now();
                let flood = Flood::start(w, target, plan.flood.as_secs())?;
                let p = net::probe(w.pod(CLIENT).ns(), other, pace(plan.flood));
                let (soft1, total1) = cpu_jiffies();
                let wall = start.elapsed();
                let cpu1 = daemon.and_then(|d| d.cpu_time());
                let sent = flood.finish()?;
                r.syn_rate.push(sent as f64 / plan.flood.as_secs_f64());
                r.softirq
                    .push(100.0 * (soft1 - soft0) as f64 / (total1 - total0).max(1) as f64);
                if let (Some(a), Some(b)) = (cpu0, cpu1) {
                    r.daemon_cpu
                        .push(100.0 * (b - a).as_secs_f64() / wall.as_secs_f64());
                }
                r.daemon_rss.extend(daemon.and_then(|d| d.rss_mib()));
                r.probe.merge(p);
                Ok(())
            })?;
            // Let the flood's half-open connections and conntrack entries go.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    for c in Contender::ALL.into_iter().filter(|c| c.is_limiter()) {
        let r = runs.get(&(c as usize));
        carry.flood_daemon.push((
            c,
            r.and_then(|r| stats::median(&r.daemon_cpu)),
            r.and_then(|r| stats::max(&r.daemon_rss)),
        ));
    }
    Ok(section(plan, &calm, &runs))
}

fn section(plan: &Plan, calm: &Probe, runs: &BTreeMap<usize, Runs>) -> Section {
    let mut s = Section::new("");
    s.intro.push(format!(
        "The attacker pod runs `hping3 -S --flood` (its own source address, a new source port \
         per SYN) at a server limited to 5 connections, for {} s per run ({} runs per \
         contender, alternating). Meanwhile the client pod connects to another pod's server \
         (no limit) every 10 ms with a 1 s connect timeout. Without a flood that client sees \
         p50 {} / p99 {} ({} of {} connected). softirq is the share of all the node's CPU time \
         (2 cores) spent in softirq during the flood, whatever namespace it served.",
        plan.flood.as_secs(),
        plan.flood_reps,
        stats::fmt_us(stats::median(&calm.ok)),
        stats::fmt_us(stats::pct(&calm.ok, 99.0)),
        calm.ok.len(),
        calm.attempts(),
    ));
    let mut t = Table::new(&[
        "contender",
        "SYNs/s sent",
        "well-behaved: connected",
        "p50",
        "p99",
        "node softirq",
        "daemon CPU (% of a core)",
    ]);
    let mut bars = vec![("p50".to_string(), vec![]), ("p99".to_string(), vec![])];
    for c in Contender::ALL {
        let r = runs.get(&(c as usize));
        let p = r.map(|r| &r.probe);
        let ok = p.map(|p| 100.0 * p.ok.len() as f64 / p.attempts().max(1) as f64);
        let soft = r.and_then(|r| stats::median(&r.softirq));
        let lat = p.map_or(&[][..], |p| &p.ok[..]);
        bars[0].1.push(stats::median(lat));
        bars[1].1.push(stats::pct(lat, 99.0));
        let name = c.short();
        t.row(vec![
            c.label().into(),
            s.value(
                r.and_then(|r| stats::median(&r.syn_rate)),
                &format!("{name} SYN rate"),
                |v| stats::num(v, 0),
            ),
            s.value(ok, &format!("{name} success"), |v| {
                format!("{}%", stats::num(v, 1))
            }),
            s.value(stats::median(lat), &format!("{name} p50"), stats::fmt_us),
            stats::fmt_us(stats::pct(lat, 99.0)),
            s.value(soft, &format!("{name} softirq"), |v| {
                format!("{}%", stats::num(v, 1))
            }),
            if c.is_limiter() {
                format!(
                    "{}%",
                    stats::num(r.and_then(|r| stats::median(&r.daemon_cpu)), 2)
                )
            } else {
                "—".into()
            },
        ]);
    }
    s.tables.push(t);
    s.notes.push(
        "The client-side limiter cannot stop a raw-socket flood (hping3 never calls connect()); \
         its row is the node with limiter attached and the server unprotected. Without a limit \
         the server answers every SYN with a SYN-ACK (SYN cookies once its backlog is full) and \
         the attacker's kernel answers those with RSTs; reject answers with a RST; drop sends \
         nothing back. hping3 shares the node's 2 cores with everything else, so how many \
         SYNs it manages to send depends on what each contender makes the node do per SYN. \
         The well-behaved client can be faster during a flood than without one: its CPUs never \
         go idle, so there is no wake-up from idle in its round trips."
            .into(),
    );
    s.plots.push(Plot {
        file: "flood.png".into(),
        title: "connect() of a well-behaved client to another pod during a SYN flood".into(),
        y_label: "µs (log scale)".into(),
        log_y: true,
        kind: Kind::Bars {
            categories: Contender::labels(&Contender::ALL),
            series: bars,
        },
    });
    s
}
