//! Scenario 2: how long a refused connect() takes to fail, and whether a packet left the
//! client for it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};

use super::net::{self, Pace, Probe};
use super::plot::{Kind, Plot};
use super::report::{Section, Table, Target};
use super::world::{CLIENT, Contender, SERVER, World, addr};
use super::{Carry, Plan, stats};

const DROP_TIMEOUT: Duration = Duration::from_millis(1500);

pub fn run(w: &mut World, plan: &Plan, _: &mut Carry) -> Result<Section> {
    let dest = addr(SERVER, 8200);
    let closed = addr(SERVER, 8299); // nothing listens there
    let server = w.pod(SERVER).hold_server(dest);
    let mut probes: BTreeMap<usize, Probe> = BTreeMap::new();
    for rep in 0..plan.refusal_reps {
        for c in Contender::order(rep, &Contender::ALL) {
            let p = w.with_limits(c, &[(dest, 1)], |w| {
                let client = w.pod(CLIENT).ns();
                if c == Contender::None {
                    return Ok(probe(client, closed, plan.refusals));
                }
                // The one connection the limit allows, held while the others are refused.
                let held = w
                    .pod(CLIENT)
                    .connect_many_timed(dest, 1, Duration::from_secs(2));
                ensure!(
                    held[0].result.is_ok(),
                    "{}: the first connection failed after {:?}: {:?}",
                    c.short(),
                    held[0].elapsed,
                    held[0].result.as_ref().err()
                );
                let p = if c == Contender::ServerDrop {
                    let pace = Pace {
                        count: 1,
                        budget: DROP_TIMEOUT,
                        timeout: DROP_TIMEOUT,
                        gap: Duration::ZERO,
                    };
                    net::probe(client, dest, pace)
                } else {
                    probe(client, dest, 10); // warm-up
                    probe(client, dest, plan.refusals)
                };
                // Closed on both ends before the rule goes: the next contender's new rule
                // would count a server socket still open (as `limiter set` documents).
                drop(held);
                net::drained(&server, Duration::from_millis(20));
                Ok(p)
            })?;
            probes.entry(c as usize).or_default().merge(p);
        }
    }
    Ok(section(plan, &probes))
}

fn probe(ns: &limiter_integration_tests::NetNs, dest: std::net::SocketAddr, n: usize) -> Probe {
    let pace = Pace {
        count: n,
        budget: Duration::from_secs(20),
        timeout: Duration::from_secs(1),
        gap: Duration::ZERO,
    };
    net::probe(ns, dest, pace)
}

fn how(c: Contender) -> &'static str {
    match c {
        Contender::None => "no listener on the port: the server's kernel answers RST (for scale)",
        Contender::Client => "connect4 program: ECONNREFUSED inside connect(), nothing sent",
        Contender::ServerReject => "sk_lookup in the server pod finds no socket: kernel RST",
        Contender::ServerDrop => "SYN discarded: connect() does not fail, the SYN is retried",
        Contender::Iptables => "REJECT in the node's FORWARD chain: RST from the node",
        Contender::Nftables => "reject in the node's forward hook: RST from the node",
        Contender::Unruled | Contender::Elsewhere => "nothing: no rule",
    }
}

fn section(plan: &Plan, probes: &BTreeMap<usize, Probe>) -> Section {
    let mut s = Section::new("");
    s.intro.push(format!(
        "A destination limited to 1 with its one connection held; then the client pod connects \
         {} times in a row ({} repetitions, alternating contenders, after 10 warm-up connects), \
         each refused. Latency is the connect() call alone. *Packets sent* counts what the \
         client pod's eth0 transmitted per refused attempt.",
        plan.refusals, plan.refusal_reps
    ));
    let get = |c: Contender| probes.get(&(c as usize));
    let p50 = |c| get(c).and_then(|p| stats::median(&p.refused));
    let ipt = p50(Contender::Iptables);
    let mut t = Table::new(&[
        "contender",
        "how it refuses",
        "refused / attempts",
        "p50",
        "p99",
        "iptables p50 ÷ this p50",
        "packets sent per refusal",
    ]);
    let mut series = vec![("p50".to_string(), vec![]), ("p99".to_string(), vec![])];
    for c in Contender::ALL {
        let p = get(c);
        let refused = p.map_or(&[][..], |p| &p.refused[..]);
        let (m, p99) = (stats::median(refused), stats::pct(refused, 99.0));
        let drop = c == Contender::ServerDrop;
        let shown = if drop {
            let timed_out = p.map_or(0, |p| p.timed_out);
            if timed_out > 0 {
                s.values += 1;
            } else {
                s.gaps.push("drop mode: no attempt left pending".into());
            }
            format!(
                "never fails: {timed_out} still pending after {} s",
                DROP_TIMEOUT.as_secs_f64()
            )
        } else {
            s.value(m, c.short(), stats::fmt_us)
        };
        let packets = p.map(|p| p.tx_packets as f64 / p.attempts().max(1) as f64);
        series[0].1.push(m);
        series[1].1.push(p99);
        t.row(vec![
            c.label().into(),
            how(c).into(),
            format!("{} / {}", refused.len(), p.map_or(0, Probe::attempts)),
            shown,
            if drop {
                "—".into()
            } else {
                stats::fmt_us(p99)
            },
            if drop {
                "—".into()
            } else {
                stats::ratio(ipt, m)
            },
            stats::num(packets, 2),
        ]);
        if let Some(p) = p.filter(|p| !p.ok.is_empty() && c != Contender::None) {
            s.notes.push(format!(
                "**{}: {} of {} connects over the limit succeeded.**",
                c.label(),
                p.ok.len(),
                p.attempts()
            ));
        }
    }
    s.tables.push(t);
    s.notes.push(
        "iptables and nftables cannot refuse inside connect(): their refusal is a RST that \
         crosses the node, so the caller waits a round trip; their SYN leaves the client pod."
            .into(),
    );
    let client = get(Contender::Client);
    let ratio = stats::ratio_value(ipt, p50(Contender::Client));
    s.targets.push(Target::new(
        "client-side refusal at least 10× faster than iptables' RST path (p50)",
        format!(
            "{} vs {}: {}",
            stats::fmt_us(p50(Contender::Client)),
            stats::fmt_us(ipt),
            stats::ratio(ipt, p50(Contender::Client))
        ),
        ratio.map(|r| r >= 10.0),
    ));
    s.targets.push(Target::new(
        "client-side refusal sends no packet at all",
        client.map_or("—".into(), |p| {
            format!("{} packets for {} refusals", p.tx_packets, p.attempts())
        }),
        client.map(|p| p.tx_packets * 100 < p.attempts().max(1) as u64),
    ));
    s.plots.push(Plot {
        file: "refusal.png".into(),
        title: "Time for a refused connect() to fail (drop mode never fails)".into(),
        y_label: "µs (log scale)".into(),
        log_y: true,
        kind: Kind::Bars {
            categories: Contender::labels(&Contender::ALL),
            series,
        },
    });
    s
}
