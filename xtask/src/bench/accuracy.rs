//! Scenario 1: a burst of simultaneous connects against a limit; how many connections the
//! server holds at once, run after run.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::time::Duration;

use anyhow::Result;
use limiter_integration_tests::HoldServer;

use super::plot::{Kind, Plot};
use super::report::{Section, Table, Target};
use super::world::{CLIENT, Contender, SERVER, World, addr};
use super::{Carry, Plan, net, stats};

const LIMITS: [u32; 2] = [5, 50];
/// Long enough for any admitted handshake in the burst, short of the 1 s SYN retry.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Runs {
    /// Connections the server held at once after the burst, per run.
    held: Vec<f64>,
    refused: Vec<f64>,
    timed_out: Vec<f64>,
}

pub fn run(w: &mut World, plan: &Plan, _: &mut Carry) -> Result<Section> {
    let dests = LIMITS.map(|l| addr(SERVER, 8100 + l as u16));
    let servers: Vec<HoldServer> = dests
        .iter()
        .map(|d| w.pod(SERVER).hold_server(*d))
        .collect();
    let limits: Vec<_> = dests.iter().copied().zip(LIMITS).collect();
    let mut runs: BTreeMap<(usize, usize), Runs> = BTreeMap::new();
    for rep in 0..plan.accuracy_reps {
        for c in Contender::order(rep, &Contender::ALL) {
            w.with_limits(c, &limits, |w| {
                for (i, dest) in dests.iter().enumerate() {
                    let attempts =
                        w.pod(CLIENT)
                            .connect_many_timed(*dest, plan.wave, CONNECT_TIMEOUT);
                    let held = net::settled(&servers[i]);
                    let ok = attempts.iter().filter(|a| a.result.is_ok()).count() as f64;
                    let refused = attempts
                        .iter()
                        .filter(|a| {
                            matches!(&a.result, Err(e) if e.kind() == ErrorKind::ConnectionRefused)
                        })
                        .count() as f64;
                    drop(attempts);
                    let r = runs.entry((c as usize, i)).or_default();
                    r.held.push(held as f64);
                    r.refused.push(refused);
                    r.timed_out.push(plan.wave as f64 - ok - refused);
                    if !net::drained(&servers[i], Duration::from_millis(100)) {
                        anyhow::bail!(
                            "{dest}: connections still open 5 s after the clients closed"
                        );
                    }
                }
                Ok(())
            })?;
        }
    }
    Ok(section(plan, &runs))
}

fn section(plan: &Plan, runs: &BTreeMap<(usize, usize), Runs>) -> Section {
    let mut s = Section::new("");
    s.intro.push(format!(
        "{} connects at once from one client pod (one thread each, {} ms connect timeout) to a \
         destination limited to 5, and to one limited to 50; the server counts the connections \
         it holds once the burst is over (every client keeps its connection open until then). \
         Repeated {} times per contender and limit, alternating. **Overshoot** is held − limit \
         when positive.",
        plan.wave,
        CONNECT_TIMEOUT.as_millis(),
        plan.accuracy_reps
    ));
    let mut t = Table::new(&[
        "contender",
        "limit",
        "held at once: median",
        "max",
        "overshoot: max",
        "runs with overshoot",
        "client saw refused (median)",
        "timed out or failed (median)",
    ]);
    let mut worst: BTreeMap<usize, f64> = BTreeMap::new();
    let mut bars: Vec<(String, Vec<Option<f64>>)> = LIMITS
        .iter()
        .map(|l| (format!("limit {l}: most held at once"), vec![]))
        .collect();
    for c in Contender::ALL {
        for (i, limit) in LIMITS.iter().enumerate() {
            let r = runs.get(&(c as usize, i));
            let held = r.map_or(&[][..], |r| &r.held[..]);
            let what = format!("{} limit {limit}", c.short());
            let max = stats::max(held);
            let over: Vec<f64> = held
                .iter()
                .map(|h| (h - f64::from(*limit)).max(0.0))
                .collect();
            let max_over = stats::max(&over);
            *worst.entry(c as usize).or_default() = worst
                .get(&(c as usize))
                .copied()
                .unwrap_or(0.0)
                .max(max_over.unwrap_or(0.0));
            bars[i].1.push(max);
            t.row(vec![
                c.label().into(),
                limit.to_string(),
                s.value(stats::median(held), &what, |v| stats::num(v, 0)),
                stats::num(max, 0),
                stats::num(max_over, 0),
                format!(
                    "{} of {}",
                    over.iter().filter(|o| **o > 0.0).count(),
                    held.len()
                ),
                stats::num(r.and_then(|r| stats::median(&r.refused)), 0),
                stats::num(r.and_then(|r| stats::median(&r.timed_out)), 0),
            ]);
        }
    }
    s.tables.push(t);
    s.notes.push(
        "No limiter: nothing limits, every connect succeeds (the row shows the burst size). \
         Drop mode refuses by discarding the SYN: refused callers time out instead of seeing \
         ECONNREFUSED (their kernel would retry the SYN after 1 s)."
            .into(),
    );
    let lim: Vec<String> = Contender::ALL
        .iter()
        .filter(|c| **c != Contender::None)
        .map(|c| {
            format!(
                "{} {}",
                c.short(),
                stats::num(worst.get(&(*c as usize)).copied(), 0)
            )
        })
        .collect();
    let limiter_ok = Contender::ALL
        .iter()
        .filter(|c| c.is_limiter())
        .all(|c| worst.get(&(*c as usize)) == Some(&0.0));
    s.targets.push(Target::new(
        "zero overshoot for established connections in every run (limit 5 and 50)",
        format!(
            "largest overshoot over {} runs each: {}",
            plan.accuracy_reps * LIMITS.len(),
            lim.join(", ")
        ),
        Some(limiter_ok),
    ));
    s.plots.push(Plot {
        file: "accuracy.png".into(),
        title: format!(
            "Most connections held at once, {} simultaneous connects",
            plan.wave
        ),
        y_label: "connections (log scale)".into(),
        log_y: true,
        kind: Kind::Bars {
            categories: Contender::labels(&Contender::ALL),
            series: bars,
        },
    });
    s
}
