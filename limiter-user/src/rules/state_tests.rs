use std::os::unix::fs::PermissionsExt as _;

use serde_json::json;

use super::*;
use crate::testutil::TempDir;

/// The state file alone, as the daemon's start reads it before its journal.
fn load(path: &Path) -> Result<RuntimeState, StateError> {
    Ok(read(path)?.map(|(state, _)| state).unwrap_or_default())
}

fn rule(dest: &str, max: u32) -> RuleSpec {
    serde_json::from_value(json!({"destination": dest, "max_connections": max})).unwrap()
}

#[test]
fn round_trips_atomically_and_privately() {
    let dir = TempDir::new();
    let path = file_in(&dir.0.join("nested/state"));
    assert_eq!(
        load(&path).unwrap(),
        RuntimeState::default(),
        "no file: empty"
    );
    let state = RuntimeState {
        rules: [("10.0.0.2:80".parse().unwrap(), rule("10.0.0.2:80", 5))].into(),
        deleted: ["10.0.0.3:80".parse().unwrap()].into(),
        system: Some(crate::rules::adaptive::SystemRule {
            max_load1: Some(8.0),
            max_cpu: Some("0.9".parse().unwrap()),
        }),
    };
    save(&path, &state).unwrap();
    assert_eq!(load(&path).unwrap(), state);
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc,
        json!({"version": 1, "deleted": ["10.0.0.3:80"], "rules": [
            {"destination": "10.0.0.2:80", "max_connections": 5, "mode": "reject", "side": "both"}],
            "system": {"max_load1": 8.0, "max_cpu": 0.9}})
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["rules.json"], "no temporary file left");
}

#[test]
fn a_corrupt_file_is_refused_with_its_name_and_why() {
    let path = Path::new("/var/lib/limiter/rules.json");
    let cases = [
        (
            "{\"version\": 1, \"rules\": [",
            "EOF while parsing a list at line 1 column 25",
        ),
        ("{\"version\": 2}", "version 2 is not 1"),
        ("{\"version\": 1, \"extra\": 1}", "unknown field `extra`"),
        (
            r#"{"version": 1, "rules": [{"destination": "10.0.0.1:80", "max_connections": 0}]}"#,
            "rule for 10.0.0.1:80: max-connections must be at least 1",
        ),
        (
            r#"{"version": 1, "rules": [{"destination": "10.0.0.1:80"}, {"destination": "10.0.0.1:80"}]}"#,
            "two rules for 10.0.0.1:80",
        ),
        (
            r#"{"version": 1, "rules": [{"destination": "10.0.0.1:80"}], "deleted": ["10.0.0.1:80"]}"#,
            "10.0.0.1:80 is both a rule and a deletion",
        ),
        (
            r#"{"version": 1, "deleted": ["10.0.0.1"]}"#,
            "10.0.0.1 has no port",
        ),
    ];
    for (text, want) in cases {
        let err = parse(path, text).unwrap_err().to_string();
        assert!(
            err.starts_with("the state file /var/lib/limiter/rules.json is corrupt ("),
            "{err}"
        );
        assert!(err.contains(want), "{text}: {err}");
        assert!(
            err.ends_with("move it aside to start with the config's rules only"),
            "{err}"
        );
    }
}
