//! The control protocol between the CLI and the daemon, over the daemon's Unix socket.
//!
//! One request per connection: the client writes one line of JSON, the daemon answers with one
//! line of JSON and closes. Plain JSON lines keep the protocol scriptable (`socat`, `nc -U`)
//! and need no framing beyond the newline.
//!
//! ```text
//! -> {"op":"set","rule":{"destination":"10.0.0.2:8080","max_connections":5}}
//! <- {"ok":true,"data":{"destination":"10.0.0.2:8080","max_connections":5,"mode":"reject","side":"both"}}
//! -> {"op":"get","destination":"10.0.0.9:80"}
//! <- {"ok":false,"error":"no rule for 10.0.0.9:80"}
//! ```

use serde::{Deserialize, Serialize};

use crate::rules::adaptive::SystemRule;
use crate::rules::dest::Dest;
use crate::rules::spec::RuleSpec;

/// Largest request line the daemon reads: room for an `apply` of several thousand rules (a rule
/// is under 200 bytes); anything bigger is a mistake or an attack and is refused without
/// buffering it.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// One request to the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Creates or replaces the rule of `rule.destination`. Answers with the rule as stored.
    Set { rule: RuleSpec },
    /// Answers with the `DestinationStatus` of one destination that has a rule.
    Get { destination: Dest },
    /// Answers with every rule, as an array of `RuleSpec`, sorted by destination; with
    /// `with_deletions`, `{"rules": [...], "runtime_deletions": [RULE...]}` (the config rules
    /// deleted at runtime, which the table mentions), so `limiter list` takes one request.
    List {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        with_deletions: bool,
    },
    /// Removes a rule. Answers with `{"deleted": DEST}`.
    Delete { destination: Dest },
    /// Answers with `{"destinations": [DestinationStatus...], "daemon": {...}}`.
    Status,
    /// Sets every rule as a runtime rule, all or none. Answers with
    /// `{"applied": [DEST...], "deleted": [], "unchanged": N}`.
    Apply { rules: Vec<RuleSpec> },
    /// Re-reads the daemon's config file and applies its rules, all or none. Answers with
    /// `{"config": FILE, "applied": [..], "deleted": [..], "unchanged": N, "overridden": [..],
    /// "daemon_settings_changed": bool}`.
    Reload,
    /// Forgets the runtime change (rule or deletion) of a destination; the config's rule, if
    /// any, is in force again. Answers with `{"reverted": DEST, "rule": RULE|null}`.
    Revert { destination: Dest },
    /// Refusal events. Without `follow`: `{"events": [EVENT...], "totals": {...}}`. With
    /// `follow`: a first answer `{"following": true, "totals": {...}}`, then the connection
    /// stays open with one line per event (see event_stream.rs).
    Events {
        #[serde(default)]
        follow: bool,
    },
    /// The node-wide system rule. `rule` set: makes it the runtime system rule (persisted, over
    /// the config's `[system]`); `clear`: removes the runtime one. Answers with
    /// `{"system": RULE|null, "source": "config"|"runtime"|null, "node": {...}}`.
    System {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<SystemRule>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        clear: bool,
    },
}

/// The daemon's answer: `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Pre-serialized: a large answer (`status` of many destinations) is written straight from
    /// its structs, never built as a `Value` tree.
    pub data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PartialEq for Response {
    fn eq(&self, other: &Self) -> bool {
        let raw = |r: &Self| r.data.as_ref().map(|d| d.get().to_string());
        self.ok == other.ok && self.error == other.error && raw(self) == raw(other)
    }
}

impl Response {
    /// The answer as one line of JSON, ending in `\n`. A successful answer is written around
    /// its pre-serialized data in place (the data's buffer grows by a few bytes, which for a
    /// large answer is a remap, not a copy), so `status` of many destinations holds its text
    /// once, not twice.
    pub fn into_line(self) -> Vec<u8> {
        match self {
            Response {
                ok: true,
                data: Some(data),
                error: None,
            } => {
                const HEAD: &str = "{\"ok\":true,\"data\":";
                let mut text = String::from(Box::<str>::from(data));
                text.reserve(HEAD.len() + 2);
                text.insert_str(0, HEAD);
                text.push_str("}\n");
                text.into_bytes()
            }
            other => {
                let mut line = serde_json::to_vec(&other).unwrap_or_else(|e| {
                    serde_json::to_vec(&Response::error(format!("cannot encode the answer: {e}")))
                        .unwrap_or_default()
                });
                line.push(b'\n');
                line
            }
        }
    }

    pub fn ok(data: impl Serialize) -> Self {
        match serde_json::value::to_raw_value(&data) {
            Ok(raw) => Self {
                ok: true,
                data: Some(raw),
                error: None,
            },
            Err(e) => Self::error(format!("cannot encode the answer: {e}")),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            data: None,
            error: Some(message.into()),
        }
    }

    /// The data of a successful answer, or the daemon's error message as an error.
    pub fn into_result(self) -> anyhow::Result<serde_json::Value> {
        let raw = self.into_raw()?;
        Ok(serde_json::from_str(raw.get())?)
    }

    /// The answer's data as the daemon wrote it, for a caller that reads it into its own types
    /// (the `status` table of many destinations, without a `Value` tree in between).
    pub fn into_raw(self) -> anyhow::Result<Box<serde_json::value::RawValue>> {
        match (self.ok, self.error) {
            (true, _) => Ok(self
                .data
                .unwrap_or_else(|| serde_json::value::to_raw_value(&()).unwrap_or_default())),
            (false, Some(error)) => Err(anyhow::anyhow!(error)),
            (false, None) => Err(anyhow::anyhow!(
                "the daemon refused the request without a reason"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_have_the_documented_shape() {
        let rule: RuleSpec = serde_json::from_value(json!({
            "destination": "10.0.0.2:8080", "max_connections": 5
        }))
        .unwrap();
        let cases = [
            (
                Request::Set { rule },
                json!({"op": "set", "rule": {
                    "destination": "10.0.0.2:8080", "max_connections": 5,
                    "mode": "reject", "side": "both"}}),
            ),
            (
                Request::Get {
                    destination: "[fd00::2]:80".parse().unwrap(),
                },
                json!({"op": "get", "destination": "[fd00::2]:80"}),
            ),
            (
                Request::List {
                    with_deletions: false,
                },
                json!({"op": "list"}),
            ),
            (
                Request::List {
                    with_deletions: true,
                },
                json!({"op": "list", "with_deletions": true}),
            ),
            (
                Request::Delete {
                    destination: "10.0.0.0/24:80".parse().unwrap(),
                },
                json!({"op": "delete", "destination": "10.0.0.0/24:80"}),
            ),
            (Request::Status, json!({"op": "status"})),
            (Request::Reload, json!({"op": "reload"})),
            (
                Request::Revert {
                    destination: "10.0.0.2:80".parse().unwrap(),
                },
                json!({"op": "revert", "destination": "10.0.0.2:80"}),
            ),
            (
                Request::Apply {
                    rules: vec![
                        serde_json::from_value(json!({"destination": "10.0.0.3:80"})).unwrap(),
                    ],
                },
                json!({"op": "apply", "rules": [
                    {"destination": "10.0.0.3:80", "mode": "reject", "side": "both"}]}),
            ),
        ];
        for (request, want) in cases {
            assert_eq!(serde_json::to_value(&request).unwrap(), want);
            assert_eq!(serde_json::from_value::<Request>(want).unwrap(), request);
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        for (line, want) in [
            (r#"{"op":"explode"}"#, "unknown variant `explode`"),
            (
                r#"{"op":"get","destination":"10.0.0.1:80","x":1}"#,
                "unknown field `x`",
            ),
            (
                r#"{"op":"get","destination":"10.0.0.1"}"#,
                "10.0.0.1 has no port",
            ),
            (
                r#"{"op":"set","rule":{"destination":"10.0.0.1:80","max_conections":5}}"#,
                "unknown field `max_conections`",
            ),
        ] {
            let err = serde_json::from_str::<Request>(line)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn responses_have_the_documented_shape() {
        let ok = Response::ok(json!([1]));
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            json!({"ok": true, "data": [1]})
        );
        let err = Response::error("no rule for 10.0.0.9:80");
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"ok": false, "error": "no rule for 10.0.0.9:80"})
        );
        // The line on the wire is the same document, one line, newline-terminated.
        for r in [ok.clone(), err.clone(), Response::ok(json!({"a": "b\nc"}))] {
            let line = r.clone().into_line();
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            let back: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(back, serde_json::to_value(&r).unwrap());
        }
        assert_eq!(ok.into_result().unwrap(), json!([1]));
        assert_eq!(
            err.into_result().unwrap_err().to_string(),
            "no rule for 10.0.0.9:80"
        );
    }
}
