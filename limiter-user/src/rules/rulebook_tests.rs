use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::testutil::{MemoryDataplane, TempDir};

fn rule(dest: &str, max: u32) -> RuleSpec {
    serde_json::from_value(json!({"destination": dest, "max_connections": max})).unwrap()
}

fn dest(d: &str) -> Dest {
    d.parse().unwrap()
}

fn config(rules: &[RuleSpec]) -> Config {
    Config {
        rules: rules.to_vec(),
        ..Config::default()
    }
}

/// What the kernel holds, as `(destination, max)` pairs.
fn kernel(dp: &MemoryDataplane) -> Vec<(String, u32)> {
    let rules = dp.rules.lock().unwrap();
    rules
        .values()
        .map(|r| (r.destination.to_string(), r.max_connections.unwrap_or(0)))
        .collect()
}

fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
    list.iter().map(|(d, m)| (d.to_string(), *m)).collect()
}

struct Book {
    dp: Arc<MemoryDataplane>,
    book: RuleBook,
    dir: TempDir,
}

impl Book {
    fn state_file(&self) -> PathBuf {
        self.dir.0.join("state/rules.json")
    }
    fn saved(&self) -> RuntimeState {
        crate::rules::journal::Store::open(&self.state_file())
            .unwrap()
            .1
    }
}

/// A book started on a dataplane holding `pinned`, with `config` and `saved` state.
fn start(pinned: &[RuleSpec], cfg: &[RuleSpec], saved: RuntimeState) -> Book {
    let dir = TempDir::new();
    let dp = Arc::new(MemoryDataplane::with(pinned));
    let state_file = dir.0.join("state/rules.json");
    let config_file = dir.0.join("limiter.toml");
    let (book, _) = RuleBook::start(
        dp.clone(),
        Some(config_file),
        config(cfg),
        Some(crate::rules::journal::Store::open(&state_file).unwrap().0),
        saved,
    )
    .unwrap();
    Book { dp, book, dir }
}

#[test]
fn start_layers_config_then_state_and_keeps_unknown_pinned_rules_as_runtime() {
    let saved = RuntimeState {
        rules: [(dest("10.0.0.2:80"), rule("10.0.0.2:80", 9))].into(),
        deleted: BTreeSet::from([dest("10.0.0.3:80"), dest("10.0.0.99:80")]),
        system: None,
    };
    let pinned = [
        rule("10.0.0.1:80", 1), // the config's destination, another value: the config wins
        rule("10.0.0.3:80", 3), // deleted at runtime: goes
        rule("10.0.0.7:80", 7), // set by a previous daemon, in no file: kept, as runtime
    ];
    let cfg = [
        rule("10.0.0.1:80", 5),
        rule("10.0.0.2:80", 2),
        rule("10.0.0.3:80", 3),
    ];
    let b = start(&pinned, &cfg, saved);
    assert_eq!(
        kernel(&b.dp),
        pairs(&[("10.0.0.1:80", 5), ("10.0.0.2:80", 9), ("10.0.0.7:80", 7)])
    );
    let sources: Vec<(String, Source, bool)> = b
        .book
        .list()
        .into_iter()
        .map(|l| {
            (
                l.rule.destination.to_string(),
                l.source,
                l.config_rule.is_some(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("10.0.0.1:80".into(), Source::Config, false),
            ("10.0.0.2:80".into(), Source::Runtime, true),
            ("10.0.0.7:80".into(), Source::Runtime, false),
        ]
    );
    // The adopted rule was written; the moot deletion (not in the config) forgotten.
    let saved = b.saved();
    assert_eq!(
        saved
            .rules
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.0.2:80", "10.0.0.7:80"]
    );
    assert_eq!(saved.deleted, BTreeSet::from([dest("10.0.0.3:80")]));
    assert_eq!(b.book.runtime_deletions(), [rule("10.0.0.3:80", 3)]);
}

#[test]
fn set_delete_revert_follow_the_precedence_and_persist() {
    let b = start(&[], &[rule("10.0.0.1:80", 5)], RuntimeState::default());
    assert!(!b.state_file().exists(), "nothing to record yet");

    b.book.set(rule("10.0.0.1:80", 8)).unwrap();
    assert_eq!(kernel(&b.dp), pairs(&[("10.0.0.1:80", 8)]));
    assert_eq!(b.saved().rules.len(), 1);

    // Deleting a destination the config names keeps its config rule off, persistently.
    assert!(b.book.delete(&dest("10.0.0.1:80")).unwrap());
    assert_eq!(kernel(&b.dp), []);
    assert_eq!(b.saved().deleted, BTreeSet::from([dest("10.0.0.1:80")]));
    let err = b.book.delete(&dest("10.0.0.1:80")).unwrap_err();
    assert_eq!(err.to_string(), "no rule for 10.0.0.1:80");

    // Revert gives the destination back to the config.
    assert_eq!(
        b.book.revert(&dest("10.0.0.1:80")).unwrap(),
        Some(rule("10.0.0.1:80", 5))
    );
    assert_eq!(kernel(&b.dp), pairs(&[("10.0.0.1:80", 5)]));
    assert_eq!(b.saved(), RuntimeState::default());
    let err = b.book.revert(&dest("10.0.0.1:80")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("10.0.0.1:80 has no runtime change to revert"),
        "{err}"
    );

    // A runtime rule of a destination the config does not name: delete forgets it.
    b.book.set(rule("10.0.0.2:80", 2)).unwrap();
    assert!(!b.book.delete(&dest("10.0.0.2:80")).unwrap());
    assert_eq!(b.saved(), RuntimeState::default());
}

#[test]
fn apply_is_all_or_nothing() {
    let b = start(&[], &[], RuntimeState::default());
    b.book
        .apply(vec![rule("10.0.0.1:80", 1), rule("10.0.0.2:80", 2)])
        .unwrap();
    let before = kernel(&b.dp);
    let saved = b.saved();

    // The kernel refuses the third change: the two before it are undone.
    *b.dp.fail_dest.lock().unwrap() = Some(dest("10.0.0.3:80"));
    let err = b
        .book
        .apply(vec![
            rule("10.0.0.1:80", 10),
            rule("10.0.0.2:80", 20),
            rule("10.0.0.3:80", 30),
        ])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot apply the rule for 10.0.0.3:80: rules map is full"
    );
    assert_eq!(kernel(&b.dp), before);
    assert_eq!(b.saved(), saved);

    // Invalid or duplicate rules are refused before anything is tried.
    *b.dp.fail_dest.lock().unwrap() = None;
    let err = b
        .book
        .apply(vec![rule("10.0.0.4:80", 1), rule("10.0.0.4:80", 2)])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "two rules for 10.0.0.4:80; keep one rule per destination"
    );
    assert_eq!(kernel(&b.dp), before);
}

#[test]
fn set_apply_delete_and_revert_look_only_at_their_destinations() {
    let cfg = [rule("10.0.0.1:80", 1), rule("10.0.0.2:80", 2)];
    let b = start(&[], &cfg, RuntimeState::default());
    let listed = || b.dp.listed.load(std::sync::atomic::Ordering::SeqCst);
    let at_start = listed();

    let outcome = b.book.set(rule("10.0.0.3:80", 3)).unwrap();
    assert_eq!(outcome.applied, [dest("10.0.0.3:80")]);
    assert_eq!(outcome.unchanged, 2, "the two config rules");
    // The same rule again changes nothing in the kernel.
    let outcome = b.book.set(rule("10.0.0.3:80", 3)).unwrap();
    assert!(outcome.applied.is_empty());
    assert_eq!(outcome.unchanged, 3);
    let outcome = b
        .book
        .apply(vec![rule("10.0.0.1:80", 10), rule("10.0.0.4:80", 4)])
        .unwrap();
    assert_eq!(outcome.applied, [dest("10.0.0.1:80"), dest("10.0.0.4:80")]);
    assert_eq!(outcome.unchanged, 2);
    assert!(b.book.delete(&dest("10.0.0.2:80")).unwrap());
    b.book.revert(&dest("10.0.0.1:80")).unwrap();
    assert_eq!(
        kernel(&b.dp),
        pairs(&[("10.0.0.1:80", 1), ("10.0.0.3:80", 3), ("10.0.0.4:80", 4)])
    );
    assert_eq!(listed(), at_start, "no change listed every rule");
    // The count of rules in force stayed right through all of it.
    let outcome = b.book.set(rule("10.0.0.5:80", 5)).unwrap();
    assert_eq!(outcome.unchanged, 3);
}

#[test]
fn a_refused_change_leaves_the_layers_as_they_were() {
    let b = start(&[], &[rule("10.0.0.1:80", 1)], RuntimeState::default());
    b.book.set(rule("10.0.0.2:80", 2)).unwrap();
    let (before, saved) = (b.book.list(), b.saved());
    *b.dp.fail_dest.lock().unwrap() = Some(dest("10.0.0.3:80"));
    b.book
        .apply(vec![rule("10.0.0.1:80", 10), rule("10.0.0.3:80", 3)])
        .unwrap_err();
    assert_eq!(b.book.list(), before);
    assert_eq!(b.saved(), saved);
    // The layers were put back too: reverting 10.0.0.1:80 has nothing to revert, and the next
    // change counts right.
    let err = b.book.revert(&dest("10.0.0.1:80")).unwrap_err();
    assert!(err.to_string().contains("no runtime change"), "{err}");
    *b.dp.fail_dest.lock().unwrap() = None;
    let outcome = b.book.set(rule("10.0.0.3:80", 3)).unwrap();
    assert_eq!(outcome.unchanged, 2);
}

#[test]
fn a_state_file_that_cannot_be_written_undoes_the_change() {
    let b = start(&[], &[], RuntimeState::default());
    b.book.set(rule("10.0.0.1:80", 1)).unwrap();
    // Make the state folder a file: the next write fails.
    std::fs::remove_dir_all(b.dir.0.join("state")).unwrap();
    std::fs::write(b.dir.0.join("state"), "").unwrap();
    let err = b.book.set(rule("10.0.0.1:80", 2)).unwrap_err().to_string();
    assert!(err.starts_with("cannot write the state file "), "{err}");
    assert!(err.ends_with("; the change was undone"), "{err}");
    assert_eq!(kernel(&b.dp), pairs(&[("10.0.0.1:80", 1)]));
    assert_eq!(b.book.list()[0].rule, rule("10.0.0.1:80", 1));
}

#[test]
fn reload_applies_the_file_except_where_runtime_holds_and_refuses_bad_files() {
    let b = start(
        &[],
        &[rule("10.0.0.1:80", 1), rule("10.0.0.2:80", 2)],
        RuntimeState::default(),
    );
    b.book.set(rule("10.0.0.2:80", 20)).unwrap();
    let file = b.dir.0.join("limiter.toml");
    std::fs::write(
        &file,
        "[[rules]]\ndestination = \"10.0.0.2:80\"\nmax_connections = 4\n\n\
         [[rules]]\ndestination = \"10.0.0.3:80\"\nmax_connections = 3\n\n\
         [daemon]\nlog_level = \"debug\"\n",
    )
    .unwrap();
    let r = b.book.reload().unwrap();
    assert_eq!(r.outcome.applied, [dest("10.0.0.3:80")]);
    assert_eq!(
        r.outcome.deleted,
        [dest("10.0.0.1:80")],
        "gone from the file"
    );
    assert_eq!(r.overridden, [dest("10.0.0.2:80")]);
    assert!(r.daemon_settings_changed);
    assert_eq!(
        kernel(&b.dp),
        pairs(&[("10.0.0.2:80", 20), ("10.0.0.3:80", 3)])
    );

    std::fs::write(
        &file,
        "[[rules]]\ndestination = \"10.0.0.3:80\"\nmax_connections = 0\n",
    )
    .unwrap();
    let err = b.book.reload().unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:3:1: rule for 10.0.0.3:80, field `max_connections`: max-connections must be at least 1; the running rules are unchanged",
            file.display()
        )
    );
    assert_eq!(
        kernel(&b.dp),
        pairs(&[("10.0.0.2:80", 20), ("10.0.0.3:80", 3)])
    );
    assert_eq!(
        b.book.reload_stats(),
        ReloadStats {
            succeeded: 1,
            failed: 1,
            last_failed: true
        }
    );
}
