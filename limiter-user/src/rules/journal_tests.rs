use serde_json::json;

use super::*;
use crate::testutil::TempDir;

fn rule(dest: &str, max: u32) -> RuleSpec {
    serde_json::from_value(json!({"destination": dest, "max_connections": max})).unwrap()
}

fn dest(d: &str) -> Dest {
    d.parse().unwrap()
}

/// Sets `rule` in `runtime` and records it.
fn set(store: &mut Store, runtime: &mut RuntimeState, rule: RuleSpec) {
    let d = rule.destination.clone();
    runtime.deleted.remove(&d);
    runtime.rules.insert(d.clone(), rule);
    store.record(runtime, &BTreeSet::from([d]), false).unwrap();
}

fn journal_lines(state_file: &Path) -> usize {
    std::fs::read_to_string(path_of(state_file)).map_or(0, |t| t.lines().count())
}

#[test]
fn changes_are_lines_of_the_journal_and_come_back_on_open() {
    let dir = TempDir::new();
    let path = state::file_in(&dir.0);
    let (mut store, mut runtime) = Store::open(&path).unwrap();
    assert_eq!(runtime, RuntimeState::default());
    // The first change writes the state file: there is none for a journal to follow.
    set(&mut store, &mut runtime, rule("10.0.0.1:80", 1));
    assert!(path.exists());
    assert_eq!(journal_lines(&path), 0);
    // Then one line per change, an apply of two destinations included.
    set(&mut store, &mut runtime, rule("10.0.0.2:80", 2));
    runtime.rules.remove(&dest("10.0.0.1:80"));
    runtime.deleted.insert(dest("10.0.0.3:80"));
    runtime.system = Some(SystemRule {
        max_load1: Some(4.0),
        max_cpu: None,
    });
    let touched = BTreeSet::from([dest("10.0.0.1:80"), dest("10.0.0.3:80")]);
    store.record(&runtime, &touched, true).unwrap();
    assert_eq!(journal_lines(&path), 2);
    let state_text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !state_text.contains("10.0.0.2:80"),
        "the state file is not rewritten"
    );

    let (reopened, back) = Store::open(&path).unwrap();
    assert_eq!(back, runtime);
    assert!(reopened.has_journal());
    // Clearing the system rule is recorded too.
    let (mut store, mut runtime) = Store::open(&path).unwrap();
    runtime.system = None;
    store.record(&runtime, &BTreeSet::new(), true).unwrap();
    assert_eq!(Store::open(&path).unwrap().1, runtime);
    // Folding the journal in: one file again, the same state.
    store.save(&runtime).unwrap();
    assert!(!path_of(&path).exists());
    let (reopened, back) = Store::open(&path).unwrap();
    assert_eq!(back, runtime);
    assert!(!reopened.has_journal());
}

#[test]
fn a_torn_last_line_is_a_change_never_acknowledged_and_is_dropped_whole() {
    let dir = TempDir::new();
    let path = state::file_in(&dir.0);
    let (mut store, mut runtime) = Store::open(&path).unwrap();
    set(&mut store, &mut runtime, rule("10.0.0.1:80", 1));
    set(&mut store, &mut runtime, rule("10.0.0.2:80", 2));
    let acknowledged = runtime.clone();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path_of(&path))
        .unwrap();
    // What a crash halfway through writing an apply of two rules leaves.
    f.write_all(br#"{"follows":1,"rules":[{"destination":"10.0.0.3:80","max_conn"#)
        .unwrap();
    let (mut store, mut runtime) = Store::open(&path).unwrap();
    assert_eq!(runtime, acknowledged);
    // The next change is not appended after the torn line: it rewrites the state file.
    set(&mut store, &mut runtime, rule("10.0.0.4:80", 4));
    assert!(!path_of(&path).exists());
    assert_eq!(Store::open(&path).unwrap().1, runtime);
}

#[test]
fn a_journal_beside_a_state_file_replaced_by_hand_is_ignored() {
    let dir = TempDir::new();
    let path = state::file_in(&dir.0);
    let (mut store, mut runtime) = Store::open(&path).unwrap();
    set(&mut store, &mut runtime, rule("10.0.0.1:80", 1));
    set(&mut store, &mut runtime, rule("10.0.0.2:80", 2));
    // An operator puts back an older file (or edits it): the journal does not follow it.
    let mut older = RuntimeState::default();
    older
        .rules
        .insert(dest("10.0.0.9:80"), rule("10.0.0.9:80", 9));
    state::save(&path, &older).unwrap();
    let (mut store, mut runtime) = Store::open(&path).unwrap();
    assert_eq!(runtime, older);
    assert!(store.has_journal(), "the stale journal is still there");
    // The next change rewrites the file and drops the stale journal.
    set(&mut store, &mut runtime, rule("10.0.0.4:80", 4));
    assert!(!path_of(&path).exists());
    assert_eq!(Store::open(&path).unwrap().1, runtime);
    // A journal without its state file (deleted to start afresh) is ignored as well.
    set(&mut store, &mut runtime, rule("10.0.0.5:80", 5));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(Store::open(&path).unwrap().1, RuntimeState::default());
}

#[test]
fn the_state_file_is_rewritten_once_the_journal_is_as_large_as_the_state() {
    let dir = TempDir::new();
    let path = state::file_in(&dir.0);
    let (mut store, mut runtime) = Store::open(&path).unwrap();
    set(&mut store, &mut runtime, rule("10.0.0.1:80", 1));
    for i in 0..MIN_ENTRIES {
        set(&mut store, &mut runtime, rule("10.0.0.2:80", i as u32 + 1));
    }
    assert_eq!(journal_lines(&path), MIN_ENTRIES);
    set(&mut store, &mut runtime, rule("10.0.0.2:80", 1000));
    assert_eq!(journal_lines(&path), 0, "folded into the state file");
    assert_eq!(state::read(&path).unwrap().unwrap().0, runtime);
}

#[test]
fn a_bad_line_names_the_journal_and_the_line() {
    let dir = TempDir::new();
    let path = state::file_in(&dir.0);
    let (mut store, mut runtime) = Store::open(&path).unwrap();
    set(&mut store, &mut runtime, rule("10.0.0.1:80", 1));
    set(&mut store, &mut runtime, rule("10.0.0.2:80", 2));
    let journal = path_of(&path);
    let text = std::fs::read_to_string(&journal).unwrap();
    let follows: Line = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let bad = format!("{{\"follows\":{},\"rulez\":[]}}\n", follows.follows);
    std::fs::write(&journal, text + &bad).unwrap();
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("rules.journal") && err.contains("line 2"),
        "{err}"
    );
}
