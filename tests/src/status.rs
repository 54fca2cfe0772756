//! Reading `limiter status -o json` (shape in docs/cli.md):
//! `{"destinations": [{"destination", "inbound": {..}, "outbound": {..}, "rule"}], "daemon": {..}}`.

use std::net::SocketAddr;

use serde_json::Value;

/// The entry of `dest` in a status document. Destinations are compared as socket addresses, so
/// `[fd77:0:0:1::2]:8080` matches however the daemon spells the IPv6 address.
pub fn find_destination(status: &Value, dest: SocketAddr) -> Option<&Value> {
    destinations(status).iter().find(|d| {
        d.get("destination")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<SocketAddr>().ok())
            == Some(dest)
    })
}

/// The entry whose `destination` is `dest` as the daemon prints it (normalised), for
/// destinations that are not socket addresses, such as `10.77.0.0/16:8080`.
pub fn find_destination_text<'a>(status: &'a Value, dest: &str) -> Option<&'a Value> {
    destinations(status)
        .iter()
        .find(|d| d.get("destination").and_then(Value::as_str) == Some(dest))
}

/// The `destinations` array; panics if the document has none.
pub fn destinations(status: &Value) -> &Vec<Value> {
    status
        .get("destinations")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("status has no `destinations` array: {status}"))
}

/// Counter `field` of `side` ("inbound" or "outbound") of one destination entry. Panics unless
/// it is a non-negative integer, so a negative count never reads as a small one.
#[track_caller]
pub fn counter(dest_status: &Value, side: &str, field: &str) -> u64 {
    let value = dest_status.get(side).and_then(|s| s.get(field));
    match value.and_then(Value::as_u64) {
        Some(n) => n,
        None => {
            panic!("`{side}.{field}` is {value:?}, not a non-negative integer, in {dest_status}")
        }
    }
}

/// Refusal counter `side.refused.reason.action` (`"inbound", "limit", "reject"`) of one
/// destination entry; an absent counter is 0 (the document may leave out what never happened).
/// Panics if present and not a non-negative integer.
#[track_caller]
pub fn refused(dest_status: &Value, side: &str, reason: &str, action: &str) -> u64 {
    let refused = dest_status.get(side).and_then(|s| s.get("refused"));
    let value = refused
        .and_then(|r| r.get(reason))
        .and_then(|r| r.get(action));
    match value {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().unwrap_or_else(|| {
            panic!("`{side}.refused.{reason}.{action}` is {v}, not a non-negative integer, in {dest_status}")
        }),
    }
}

/// Paths (`inbound.refused.limit.reject`) of every number under `value` that is not zero.
pub fn nonzero_numbers(value: &Value, path: &str) -> Vec<String> {
    match value {
        Value::Number(n) if n.as_f64() != Some(0.0) => vec![path.to_owned()],
        Value::Object(fields) => fields
            .iter()
            .flat_map(|(k, v)| nonzero_numbers(v, &format!("{path}.{k}")))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .flat_map(|(i, v)| nonzero_numbers(v, &format!("{path}[{i}]")))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn side(active: i64) -> Value {
        json!({"active": active, "pending": 0, "opened_total": 3, "closed_total": 0,
               "accepted_total": 0, "cx_overflow_total": 0,
               "refused": {"limit": {"reject": 0}}, "lifetime_seconds_total": 0.0})
    }

    fn status() -> Value {
        json!({"destinations": [
            {"destination": "10.77.2.2:8080", "inbound": side(2), "outbound": side(-1), "rule": null},
            {"destination": "[fd77:0:0:2::2]:8080", "inbound": side(0), "outbound": side(0), "rule": null},
        ], "daemon": {}})
    }

    #[test]
    fn finds_destinations_by_address_not_spelling() {
        let status = status();
        let v6: SocketAddr = "[fd77:0000:0:2:0::2]:8080".parse().unwrap();
        assert!(find_destination(&status, v6).is_some());
        assert!(find_destination(&status, "10.77.2.2:8080".parse().unwrap()).is_some());
        assert!(find_destination(&status, "10.77.2.2:9090".parse().unwrap()).is_none());
    }

    #[test]
    fn reads_counters() {
        let status = status();
        let d = find_destination(&status, "10.77.2.2:8080".parse().unwrap()).unwrap();
        assert_eq!(counter(d, "inbound", "active"), 2);
        assert_eq!(counter(d, "inbound", "opened_total"), 3);
    }

    #[test]
    #[should_panic(expected = "not a non-negative integer")]
    fn a_negative_counter_is_an_error() {
        let status = status();
        let d = find_destination(&status, "10.77.2.2:8080".parse().unwrap()).unwrap();
        counter(d, "outbound", "active");
    }

    #[test]
    fn reads_refusals_absent_as_zero() {
        let status = status();
        let d = find_destination(&status, "10.77.2.2:8080".parse().unwrap()).unwrap();
        assert_eq!(refused(d, "inbound", "limit", "reject"), 0);
        assert_eq!(refused(d, "inbound", "rate", "drop"), 0);
        let mut s = side(1);
        s["refused"]["per_source"] = json!({"reject": 3});
        let d = json!({"inbound": s});
        assert_eq!(refused(&d, "inbound", "per_source", "reject"), 3);
    }

    #[test]
    fn finds_destinations_by_text() {
        let status = json!({"destinations": [
            {"destination": "10.77.0.0/16:8080", "inbound": side(0), "outbound": side(0)}
        ]});
        assert!(find_destination_text(&status, "10.77.0.0/16:8080").is_some());
        assert!(find_destination_text(&status, "10.77.0.0/24:8080").is_none());
    }

    #[test]
    fn lists_nonzero_numbers_with_their_paths() {
        let mut s = side(0);
        s["refused"]["limit"]["reject"] = json!(4);
        s["lifetime_seconds_total"] = json!(0.5);
        let mut found = nonzero_numbers(&s, "inbound");
        found.sort();
        assert_eq!(
            found,
            [
                "inbound.lifetime_seconds_total",
                "inbound.opened_total",
                "inbound.refused.limit.reject"
            ]
        );
    }
}
