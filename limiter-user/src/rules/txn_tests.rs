use serde_json::json;

use super::*;
use crate::testutil::MemoryDataplane;

fn rule(dest: &str, max: u32) -> RuleSpec {
    serde_json::from_value(json!({"destination": dest, "max_connections": max})).unwrap()
}

fn map(rules: &[RuleSpec]) -> BTreeMap<Dest, RuleSpec> {
    rules
        .iter()
        .map(|r| (r.destination.clone(), r.clone()))
        .collect()
}

#[test]
fn plans_deletions_first_and_skips_what_is_in_force() {
    let current = map(&[
        rule("10.0.0.1:80", 1),
        rule("10.0.0.2:80", 2),
        rule("10.0.0.3:80", 3),
    ]);
    let desired = map(&[
        rule("10.0.0.2:80", 2),
        rule("10.0.0.3:80", 30),
        rule("10.0.0.0/24:80", 4),
    ]);
    let plan: Vec<(String, Option<u32>)> = plan(&current, &desired)
        .into_iter()
        .map(|c| (c.dest.to_string(), c.after.and_then(|r| r.max_connections)))
        .collect();
    assert_eq!(
        plan,
        [
            ("10.0.0.1:80".to_string(), None),
            ("10.0.0.3:80".to_string(), Some(30)),
            ("10.0.0.0/24:80".to_string(), Some(4)),
        ]
    );
}

#[test]
fn a_failed_step_undoes_the_steps_before_it() {
    let dp = MemoryDataplane::with(&[rule("10.0.0.1:80", 1), rule("10.0.0.2:80", 2)]);
    let before = current(&dp);
    *dp.fail_dest.lock().unwrap() = Some("10.0.0.9:80".parse().unwrap());
    let desired = map(&[rule("10.0.0.2:80", 20), rule("10.0.0.9:80", 9)]);
    let err = execute(&dp, plan(&before, &desired)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot apply the rule for 10.0.0.9:80: rules map is full"
    );
    assert_eq!(
        current(&dp),
        before,
        "the deletion and the replacement were undone"
    );
}

#[test]
fn a_failed_undo_is_reported() {
    let dp = MemoryDataplane::with(&[rule("10.0.0.1:80", 1)]);
    let before = current(&dp);
    let done = execute(&dp, plan(&before, &BTreeMap::new())).unwrap();
    dp.fail_apply
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(rollback(&dp, &done), ["10.0.0.1:80: rules map is full"]);
    let err = CommitError {
        step: "apply the rule for 10.0.0.2:80".into(),
        cause: anyhow::anyhow!("rules map is full"),
        rollback_failures: vec!["10.0.0.1:80: rules map is full".into()],
    };
    assert_eq!(
        err.to_string(),
        "cannot apply the rule for 10.0.0.2:80: rules map is full; undoing the changes already \
         made also failed (10.0.0.1:80: rules map is full): check `limiter list`"
    );
}
