//! procfs readers, the sampler, and one read-only look at this machine's real files.

use std::path::Path;

use super::fixture::{PRESSURE, Tree, v2_cpu_stat};
use super::*;

const MS: u64 = 1_000_000;

/// `/proc/stat` of a 2-CPU node: busy = user+nice+system+irq+softirq+steal.
fn proc_stat(user: u64, idle: u64) -> String {
    format!(
        "cpu  {user} 0 100 {idle} 50 0 10 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\ncpu1 1 0 0 1 0 0 0 0 0 0\n\
         intr 1 2 3\nctxt 42\nbtime 1700000000\nprocs_running 1\n"
    )
}

#[test]
fn reads_proc_stat() {
    let t = Tree::new();
    let p = t.file("stat", &proc_stat(1000, 5000));
    let s = read_proc_stat(&p).unwrap();
    assert_eq!(
        s,
        ProcStat {
            busy_ticks: 1110,
            total_ticks: 6160,
            cpus: 2
        }
    );
    // Old kernels' four counters are enough.
    let p = t.file("stat4", "cpu 1 2 3 4\ncpu0 1 2 3 4\n");
    assert_eq!(read_proc_stat(&p).unwrap().busy_ticks, 6);
}

#[test]
fn malformed_proc_files_name_the_file() {
    let t = Tree::new();
    for (name, text, needle) in [
        ("a", "", "empty"),
        ("b", "intr 1\n", "aggregate"),
        ("c", "cpu 1 2 x 4\ncpu0 1 2 3 4\n", "cpu system"),
        ("d", "cpu 1 2\ncpu0 1 2\n", "fewer than 4"),
        ("e", "cpu 1 2 3 4\n", "cpuN"),
    ] {
        let p = t.file(name, text);
        let msg = read_proc_stat(&p).unwrap_err().to_string();
        assert!(
            msg.contains(&p.display().to_string()) && msg.contains(needle),
            "{msg}"
        );
    }
    let e = read_proc_stat(&t.path("absent")).unwrap_err();
    assert!(matches!(e, SignalError::Read { .. }), "{e}");
}

#[test]
fn reads_loadavg() {
    let t = Tree::new();
    let p = t.file("loadavg", "0.23 0.36 1.10 1/91 15047\n");
    let l = read_loadavg(&p).unwrap();
    assert_eq!(
        (l.one, l.five, l.fifteen, l.runnable, l.tasks),
        (0.23, 0.36, 1.10, 1, 91)
    );
    assert_eq!(l.one_per_cpu(2), 0.115);
    for bad in ["0.1 0.2\n", "0.1 0.2 0.3 191 5\n", "x 0.2 0.3 1/9 5\n"] {
        let p = t.file("bad", bad);
        let msg = read_loadavg(&p).unwrap_err().to_string();
        assert!(msg.contains(&p.display().to_string()), "{bad:?}: {msg}");
    }
}

#[test]
fn pressure_is_optional() {
    let t = Tree::new();
    assert_eq!(read_pressure(&t.file("cpu", PRESSURE)), Some(12.5));
    assert_eq!(read_pressure(&t.path("absent")), None);
    assert_eq!(
        read_pressure(&t.file("full-only", "full avg10=1.00\n")),
        None
    );
    assert_eq!(
        read_pressure(&t.file("bad", "some avg10=-1 avg60=0\n")),
        None
    );
}

#[test]
fn node_utilisation_is_busy_over_total_ticks() {
    let t = Tree::new();
    let stat = t.file("stat", &proc_stat(1000, 5000));
    let src = CpuSource::node(&stat, &t.file("pressure", PRESSURE)).unwrap();
    let mut sampler = Sampler::new();
    assert_eq!(sampler.observe(0, src.read().unwrap()), None);
    // 50 ticks passed (2 CPUs x 250 ms at 100 Hz): 30 busy, 20 idle.
    t.file("stat", &proc_stat(1030, 5020));
    let s = sampler.observe(250 * MS, src.read().unwrap()).unwrap();
    assert!((s.utilisation - 0.6).abs() < 1e-12, "{}", s.utilisation);
    assert_eq!(s.pressure_some_avg10, Some(12.5));
    assert_eq!(s.throttled_ratio, None);
}

fn cgroup_reading(usage_ms: u64, quota: Option<f64>, periods: u64, throttled: u64) -> CpuReading {
    CpuReading {
        usage_ns: usage_ms * MS,
        capacity_ns: None,
        quota_cpus: quota,
        node_cpus: 8,
        throttling: Some(Throttling {
            nr_periods: periods,
            nr_throttled: throttled,
            throttled_ns: throttled * MS,
        }),
        pressure_some_avg10: None,
    }
}

#[test]
fn cgroup_utilisation_is_against_the_quota() {
    // Half a CPU of quota, 125 ms of CPU in 250 ms: saturated, although the node is 6% busy.
    let (a, b) = (
        cgroup_reading(1000, Some(0.5), 10, 0),
        cgroup_reading(1125, Some(0.5), 13, 3),
    );
    assert_eq!(utilisation(&a, &b, 250 * MS), Some(1.0));
    let mut s = Sampler::new();
    s.observe(0, a);
    let sample = s.observe(250 * MS, b).unwrap();
    assert_eq!(
        (sample.throttled_ratio, sample.throttled_ns),
        (Some(1.0), Some(3 * MS))
    );
    // Without a quota the same usage is 1/16 of the 8 CPUs.
    let (a, b) = (
        cgroup_reading(1000, None, 0, 0),
        cgroup_reading(1125, None, 0, 0),
    );
    assert_eq!(utilisation(&a, &b, 250 * MS), Some(0.0625));
}

#[test]
fn utilisation_is_clamped_and_needs_time() {
    let a = cgroup_reading(5000, Some(1.0), 0, 0);
    let reset = cgroup_reading(10, Some(1.0), 0, 0);
    assert_eq!(
        utilisation(&a, &reset, 250 * MS),
        Some(0.0),
        "counter went backwards"
    );
    let burst = cgroup_reading(50_000, Some(1.0), 0, 0);
    assert_eq!(
        utilisation(&a, &burst, 250 * MS),
        Some(8.0),
        "at most the whole node"
    );
    assert_eq!(utilisation(&a, &a, 0), None);
    let mut s = Sampler::new();
    s.observe(7, a);
    assert_eq!(s.observe(7, a), None, "no time passed");
    assert_eq!(s.observe(3, a), None, "clock went backwards");
}

#[test]
fn two_real_v2_fixture_readings_through_the_sampler() {
    let t = Tree::new();
    t.file("cgroup.controllers", "cpu\n");
    t.file("app/cpu.max", "200000 100000\n");
    t.file("app/cpu.stat", &v2_cpu_stat(1_000_000, 0, 0, 0));
    let src = CpuSource::cgroup(t.root(), Path::new("app"), 4).unwrap();
    let mut s = Sampler::new();
    s.observe(0, src.read().unwrap());
    // 300 ms of CPU in 250 ms against 2 CPUs: 60%.
    t.file("app/cpu.stat", &v2_cpu_stat(1_300_000, 2, 1, 40_000));
    let sample = s.observe(250 * MS, src.read().unwrap()).unwrap();
    assert!(
        (sample.utilisation - 0.6).abs() < 1e-12,
        "{}",
        sample.utilisation
    );
    assert_eq!(sample.throttled_ratio, Some(0.5));
}

/// Reads this machine's real files, read-only, and checks only that they parse and make sense.
#[test]
fn real_machine_files_parse() {
    let (stat, loadavg, root) = (
        Path::new(PROC_STAT),
        Path::new(PROC_LOADAVG),
        Path::new(CGROUP_ROOT),
    );
    for p in [stat, loadavg, root] {
        if !p.exists() {
            eprintln!(
                "SKIP real_machine_files_parse: {} is absent on this machine",
                p.display()
            );
            return;
        }
    }
    let cpus = read_proc_stat(stat).unwrap().cpus;
    assert!(cpus >= 1);
    let load = read_loadavg(loadavg).unwrap();
    assert!(load.one >= 0.0 && load.tasks >= 1, "{load:?}");
    println!(
        "real machine: {cpus} CPUs, load1 {}, PSI {:?}",
        load.one,
        read_pressure(Path::new(PROC_PRESSURE_CPU))
    );

    let layout = match CgroupLayout::detect(root) {
        Ok(layout) => layout,
        Err(e) => {
            eprintln!("SKIP the cgroup part of real_machine_files_parse: {e}");
            return;
        }
    };
    let sources = [
        (
            "node",
            CpuSource::node(stat, Path::new(PROC_PRESSURE_CPU)).unwrap(),
        ),
        (
            "root cgroup",
            CpuSource::cgroup(root, Path::new(""), cpus).unwrap(),
        ),
    ];
    for (name, src) in sources {
        let a = src.read().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(250));
        let b = src.read().unwrap();
        let Some(u) = utilisation(&a, &b, 250 * MS) else {
            panic!("{name}: no utilisation from {a:?} and {b:?} 250 ms apart");
        };
        println!(
            "real machine ({layout}): {name} utilisation {u:.3} of {} CPUs, {b:?}",
            b.limit_cpus()
        );
        assert!((0.0..=f64::from(cpus)).contains(&u), "{name}: {u}");
        assert!(b.limit_cpus() > 0.0 && b.limit_cpus() <= f64::from(cpus));
    }
}
