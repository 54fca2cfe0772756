use super::*;
use limiter_overload::signals::CpuReading;

const MS: u64 = 1_000_000;
const TICK: u64 = 250 * MS;

/// A destination served by a workload with a 1-CPU quota whose usage we script.
struct Scripted {
    dest: Dest,
    adaptive: Adaptive,
    priority: Criticality,
    usage_ns: u64,
    counters: SideCounters,
}

impl Scripted {
    fn new(dest: &str, priority: Criticality) -> Self {
        Scripted {
            dest: dest.parse().unwrap(),
            adaptive: Adaptive::default(),
            priority,
            usage_ns: 0,
            counters: SideCounters::default(),
        }
    }

    /// One tick of a workload at `cpu` of its quota completing `per_s` connections per second of
    /// `life_ms` each, with `active` established.
    fn step(&mut self, cpu: f64, per_s: u64, life_ms: u64, active: u64) {
        self.usage_ns += (cpu * TICK as f64) as u64;
        let n = per_s / 4;
        self.counters.closed += n;
        self.counters.lifetime_ns += n * life_ms * MS;
        self.counters.active = active;
    }

    fn input(&self) -> DestInput<'_> {
        DestInput {
            dest: &self.dest,
            adaptive: &self.adaptive,
            priority: self.priority,
            reading: Some(CpuReading {
                usage_ns: self.usage_ns,
                capacity_ns: None,
                quota_cpus: Some(1.0),
                node_cpus: 2,
                throttling: None,
                pressure_some_avg10: None,
            }),
            counters: self.counters,
        }
    }
}

struct Clock(u64);

impl Clock {
    fn tick(&mut self) -> u64 {
        self.0 += TICK;
        self.0
    }
}

fn run(
    c: &mut Controller,
    now: u64,
    dests: &[&Scripted],
    system: &SystemRule,
    load1: f64,
) -> Vec<Option<u64>> {
    let inputs: Vec<DestInput<'_>> = dests.iter().map(|d| d.input()).collect();
    let node = NodeInput {
        reading: None,
        load1: Some(load1),
    };
    c.tick(now, node, system, &inputs)
}

/// 200 connections/s of 100 ms each: maxInflight = 20 by Little's law.
fn warmed(c: &mut Controller, clock: &mut Clock, d: &mut Scripted) {
    for _ in 0..20 {
        d.step(0.3, 200, 100, 20);
        assert_eq!(
            run(c, clock.tick(), &[d], &SystemRule::default(), 0.1),
            [None]
        );
    }
    assert_eq!(c.report(&d.dest).unwrap().max_inflight, Some(20));
}

#[test]
fn a_cold_service_is_never_shed() {
    let mut c = Controller::new(OverloadConfig::default());
    let mut clock = Clock(1_000 * 1_000 * MS);
    let mut d = Scripted::new("10.0.0.2:80", Criticality::Critical);
    for _ in 0..20 {
        d.step(1.0, 0, 0, 500);
        assert_eq!(
            run(&mut c, clock.tick(), &[&d], &SystemRule::default(), 0.1),
            [None]
        );
    }
    let r = c.report(&d.dest).unwrap();
    assert!(r.cpu.unwrap() > 0.99, "{r:?}");
    assert_eq!(r.max_inflight, None);
}

#[test]
fn cpu_step_arms_the_limit_within_a_second_and_recovery_within_two() {
    let mut c = Controller::new(OverloadConfig::default());
    let mut clock = Clock(1_000 * 1_000 * MS);
    let mut d = Scripted::new("10.0.0.2:80", Criticality::Critical);
    warmed(&mut c, &mut clock, &mut d);

    let mut armed_after = None;
    for tick in 1..=8 {
        d.step(1.0, 200, 100, 60);
        let limit = run(&mut c, clock.tick(), &[&d], &SystemRule::default(), 0.1)[0];
        if limit.is_some() && armed_after.is_none() {
            armed_after = Some(tick);
            assert_eq!(limit, Some(20), "the limit is maxInflight");
        }
    }
    let armed_after = armed_after.expect("a CPU step to 100% arms the check");
    assert!(
        armed_after * 250 <= 1_000,
        "armed after {armed_after} ticks"
    );

    let mut clear_after = None;
    for tick in 1..=12 {
        d.step(0.2, 200, 100, 10);
        if run(&mut c, clock.tick(), &[&d], &SystemRule::default(), 0.1)[0].is_none() {
            clear_after = Some(tick);
            break;
        }
    }
    let clear_after = clear_after.expect("shedding stops after the overload");
    assert!(
        clear_after * 250 <= 2_000,
        "cleared after {clear_after} ticks"
    );
    assert!(clear_after * 250 > 1_000, "the cool-down holds for 1 s");
}

#[test]
fn an_unreadable_cgroup_keeps_the_last_cpu() {
    let mut c = Controller::new(OverloadConfig::default());
    let mut clock = Clock(1_000 * 1_000 * MS);
    let mut d = Scripted::new("10.0.0.2:80", Criticality::Critical);
    warmed(&mut c, &mut clock, &mut d);
    for _ in 0..8 {
        d.step(1.0, 200, 100, 60);
        run(&mut c, clock.tick(), &[&d], &SystemRule::default(), 0.1);
    }
    let before = c.report(&d.dest).unwrap().cpu;
    let mut gone = d.input();
    gone.reading = None;
    let out = c.tick(
        clock.tick(),
        NodeInput::default(),
        &SystemRule::default(),
        &[gone],
    );
    assert_eq!(out, [Some(20)]);
    assert_eq!(c.report(&d.dest).unwrap().cpu, before);
}

#[test]
fn new_parameters_start_a_new_window() {
    let mut c = Controller::new(OverloadConfig::default());
    let mut clock = Clock(1_000 * 1_000 * MS);
    let mut d = Scripted::new("10.0.0.2:80", Criticality::Critical);
    warmed(&mut c, &mut clock, &mut d);
    d.adaptive.cooldown = Some("2s".parse().unwrap());
    d.step(1.0, 0, 0, 60);
    run(&mut c, clock.tick(), &[&d], &SystemRule::default(), 0.1);
    assert_eq!(c.report(&d.dest).unwrap().max_inflight, None);
}

#[test]
fn node_overload_sheds_sheddable_before_critical() {
    let mut c = Controller::new(OverloadConfig::default());
    let mut clock = Clock(1_000 * 1_000 * MS);
    let mut crit = Scripted::new("10.0.0.2:80", Criticality::Critical);
    let mut shed = Scripted::new("10.0.0.3:80", Criticality::Sheddable);
    let system = SystemRule {
        max_load1: Some(2.0),
        max_cpu: None,
    };
    for _ in 0..20 {
        crit.step(0.3, 200, 100, 20);
        shed.step(0.3, 200, 100, 20);
        let out = run(&mut c, clock.tick(), &[&crit, &shed], &system, 1.0);
        assert_eq!(out, [None, None], "load below the system rule");
    }
    // Load 4 against a bound of 2: the node's 40 connections must become 20.
    crit.step(0.3, 200, 100, 20);
    shed.step(0.3, 200, 100, 20);
    let out = run(&mut c, clock.tick(), &[&crit, &shed], &system, 4.0);
    assert!(c.node().overloaded);
    let (crit_limit, shed_limit) = (out[0].unwrap(), out[1].unwrap());
    assert!(crit_limit + shed_limit <= 20, "{out:?}");
    assert_eq!(
        crit_limit, 19,
        "critical keeps all but the sheddable class's reserve"
    );
    assert_eq!(
        shed_limit, 1,
        "sheddable keeps its minimum share (5% of 20)"
    );
}

#[test]
fn forgotten_destinations_are_dropped() {
    let mut c = Controller::new(OverloadConfig::default());
    let mut clock = Clock(1_000 * 1_000 * MS);
    let mut d = Scripted::new("10.0.0.2:80", Criticality::Critical);
    warmed(&mut c, &mut clock, &mut d);
    c.tick(
        clock.tick(),
        NodeInput::default(),
        &SystemRule::default(),
        &[],
    );
    assert!(c.report(&d.dest).is_none());
}
