use super::*;
use Criticality::*;

fn d(class: Criticality, want: u64) -> Demand {
    Demand { class, want }
}

fn sum(v: &[u64]) -> u64 {
    v.iter().sum()
}

#[test]
fn classes_are_ordered_and_spelled_like_the_flag() {
    assert!(CriticalPlus > Critical && Critical > SheddablePlus && SheddablePlus > Sheddable);
    assert_eq!(Criticality::default(), Critical);
    for c in Criticality::ALL {
        assert_eq!(c.as_str().parse::<Criticality>(), Ok(c));
        assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
        assert_eq!(
            serde_json::from_str::<Criticality>(&format!("\"{c}\"")).unwrap(),
            c
        );
    }
    let e = "critical_plus".parse::<Criticality>().unwrap_err();
    assert!(e.to_string().contains("critical-plus"), "{e}");
}

#[test]
fn everyone_is_satisfied_when_the_demand_fits() {
    let demands = [d(Sheddable, 30), d(Critical, 50), d(CriticalPlus, 10)];
    let g = allocate(&PriorityConfig::default(), 100, &demands);
    assert_eq!(g, vec![30, 50, 10]);
}

#[test]
fn sheddable_is_cut_first_then_sheddable_plus_then_critical() {
    let cfg = PriorityConfig { min_share: 0.0 };
    let demands = [
        d(Sheddable, 40),
        d(SheddablePlus, 40),
        d(Critical, 40),
        d(CriticalPlus, 40),
    ];
    assert_eq!(allocate(&cfg, 150, &demands), vec![30, 40, 40, 40]);
    assert_eq!(allocate(&cfg, 110, &demands), vec![0, 30, 40, 40]);
    assert_eq!(allocate(&cfg, 70, &demands), vec![0, 0, 30, 40]);
    assert_eq!(allocate(&cfg, 30, &demands), vec![0, 0, 0, 30]);
}

#[test]
fn no_class_is_starved_below_its_min_share() {
    // 5% of 200 = 10 each for the classes that ask; the critical flood takes the rest.
    let demands = [
        d(Sheddable, 100),
        d(SheddablePlus, 100),
        d(Critical, 1_000),
        d(CriticalPlus, 0),
    ];
    let g = allocate(&PriorityConfig::default(), 200, &demands);
    assert_eq!(g, vec![10, 10, 180, 0]);
    assert_eq!(sum(&g), 200);
}

#[test]
fn the_reserve_is_capped_at_the_demand_and_rounds_up() {
    // 5% of 30 = 1.5 -> 2 for sheddable; a class asking for 1 gets 1 and leaves the rest.
    let demands = [d(Sheddable, 100), d(SheddablePlus, 1), d(Critical, 100)];
    let g = allocate(&PriorityConfig::default(), 30, &demands);
    assert_eq!(g, vec![2, 1, 27]);
}

#[test]
fn reserves_follow_priority_when_capacity_is_tiny() {
    let demands = [d(Sheddable, 10), d(Critical, 10), d(CriticalPlus, 10)];
    assert_eq!(
        allocate(&PriorityConfig::default(), 2, &demands),
        vec![0, 1, 1]
    );
    assert_eq!(
        allocate(&PriorityConfig::default(), 0, &demands),
        vec![0, 0, 0]
    );
}

#[test]
fn max_min_fairness_within_a_class() {
    // 100 among 10, 20, 60, 80: 10 and 20 are met; 70 left split 35/35.
    assert_eq!(max_min_fair(100, &[60, 10, 80, 20]), vec![35, 10, 35, 20]);
    // Remainders: 10 among three large demands -> 4, 3, 3 in input order.
    assert_eq!(max_min_fair(10, &[50, 50, 50]), vec![4, 3, 3]);
    assert_eq!(max_min_fair(100, &[5, 6]), vec![5, 6]);
    assert_eq!(max_min_fair(0, &[5, 6]), vec![0, 0]);
    assert!(max_min_fair(7, &[]).is_empty());
}

#[test]
fn a_flooding_destination_does_not_take_its_neighbours_share() {
    let demands = [d(Critical, 10_000), d(Critical, 20), d(Critical, 30)];
    let g = allocate(&PriorityConfig::default(), 150, &demands);
    assert_eq!(g, vec![100, 20, 30]);
}

#[test]
fn grants_never_exceed_demand_or_capacity() {
    let demands: Vec<Demand> = (0..40u64)
        .map(|i| d(Criticality::ALL[(i % 4) as usize], (i * 37) % 101))
        .collect();
    for capacity in [0, 1, 3, 17, 100, 500, 1_000, 5_000] {
        for min_share in [0.0, 0.05, 0.25] {
            let g = allocate(&PriorityConfig { min_share }, capacity, &demands);
            let want: u64 = demands.iter().map(|x| x.want).sum();
            assert_eq!(
                sum(&g),
                capacity.min(want),
                "capacity {capacity}, share {min_share}"
            );
            for (x, g) in demands.iter().zip(&g) {
                assert!(*g <= x.want);
            }
        }
    }
}

#[test]
fn min_share_is_validated() {
    assert!(PriorityConfig::default().validate().is_ok());
    let e = PriorityConfig { min_share: 0.3 }.validate().unwrap_err();
    assert!(e.to_string().starts_with("priority.min_share = 0.3"), "{e}");
    assert!(
        PriorityConfig {
            min_share: f64::NAN
        }
        .validate()
        .is_err()
    );
}
