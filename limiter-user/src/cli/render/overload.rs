//! The overload part of `limiter status` (a second table, for `--adaptive` destinations, and
//! the node's signals) and `limiter system get`.

use serde::Deserialize;
use serde_json::Value;

use super::table::{render, table};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AdaptiveView {
    destination: String,
    rule: Option<Value>,
    cpu: Option<f64>,
    cpu_source: Option<String>,
    inflight: Option<u64>,
    max_pass: Option<f64>,
    min_rt_ms: Option<f64>,
    max_inflight: Option<u64>,
    shed_limit: Option<u64>,
    shedding: bool,
    shed_total: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NodeView {
    cpu: Option<f64>,
    load1: Option<f64>,
    overloaded: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StatusView {
    destinations: Vec<AdaptiveView>,
    node: Option<NodeView>,
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0))
}

fn num<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn node_line(n: &NodeView) -> String {
    let load = n.load1.map_or_else(|| "-".into(), |l| format!("{l:.2}"));
    let state = if n.overloaded {
        " (overloaded: the system rule sheds)"
    } else {
        ""
    };
    format!("node: cpu {}, load1 {load}{state}", percent(n.cpu))
}

/// The lines appended to the status table: the adaptive destinations' check, then the node.
pub fn overload_section(doc: &str) -> anyhow::Result<String> {
    let view: StatusView = serde_json::from_str(doc)?;
    let adaptive: Vec<&AdaptiveView> = view
        .destinations
        .iter()
        .filter(|d| d.rule.as_ref().is_some_and(|r| r.get("adaptive").is_some()))
        .collect();
    let mut out = String::new();
    if !adaptive.is_empty() {
        let mut t = table(
            &[
                "ADAPTIVE",
                "CPU",
                "INFLIGHT",
                "MAX PASS",
                "MIN RT MS",
                "MAX INFLIGHT",
                "SHEDDING",
                "SHED",
                "CPU SOURCE",
            ],
            1,
        );
        // Words, not numbers: SHEDDING and CPU SOURCE read left-aligned.
        for i in [6, 8] {
            if let Some(c) = t.column_mut(i) {
                c.set_cell_alignment(comfy_table::CellAlignment::Left);
            }
        }
        for d in adaptive {
            let shedding = match (d.shedding, d.shed_limit) {
                (true, Some(l)) => format!("yes (limit {l})"),
                (true, None) => "yes".into(),
                (false, _) => "no".into(),
            };
            t.add_row(vec![
                d.destination.clone(),
                percent(d.cpu),
                num(d.inflight),
                d.max_pass.map_or_else(|| "-".into(), |p| format!("{p:.1}")),
                d.min_rt_ms
                    .map_or_else(|| "-".into(), |r| format!("{r:.1}")),
                num(d.max_inflight),
                shedding,
                d.shed_total.to_string(),
                d.cpu_source.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        out += "\n\n";
        out += &render(&t);
    }
    if let Some(n) = &view.node {
        out += "\n\n";
        out += &node_line(n);
    }
    Ok(out)
}

/// `limiter system get|set|delete` as text.
pub fn system_view(doc: &Value) -> anyhow::Result<String> {
    let rule = match doc.get("system") {
        Some(Value::Object(r)) => {
            let mut parts = Vec::new();
            if let Some(l) = r.get("max_load1") {
                parts.push(format!("max-load1 {l}"));
            }
            if let Some(c) = r.get("max_cpu") {
                parts.push(format!("max-cpu {c}"));
            }
            let source = doc["source"].as_str().unwrap_or("?");
            format!("system rule: {} ({source})", parts.join(", "))
        }
        _ => "system rule: none (set one with `limiter system set --max-load1 N`)".into(),
    };
    let node =
        NodeView::deserialize(doc.get("node").cloned().unwrap_or_default()).unwrap_or_default();
    Ok(format!("{rule}\n{}", node_line(&node)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn adaptive_destinations_get_their_own_table_and_the_node_a_line() {
        let doc = json!({
            "destinations": [
                {"destination": "10.0.0.2:80", "rule": {"destination": "10.0.0.2:80", "adaptive": {}},
                 "cpu": 0.93, "inflight": 12, "max_pass": 2.5, "min_rt_ms": 410.0,
                 "max_inflight": 11, "shed_limit": 11, "shedding": true, "shed_total": 340,
                 "cpu_source": "cgroup /web"},
                {"destination": "10.0.0.3:80", "rule": {"destination": "10.0.0.3:80", "max_connections": 5}}
            ],
            "node": {"cpu": 0.5, "load1": 1.25, "overloaded": false}
        });
        let text = overload_section(&doc.to_string()).unwrap();
        assert!(text.contains("10.0.0.2:80"), "{text}");
        assert!(
            !text.contains("10.0.0.3:80"),
            "static rules are not in the table: {text}"
        );
        for want in [
            "93%",
            "yes (limit 11)",
            "340",
            "cgroup /web",
            "410.0",
            "node: cpu 50%, load1 1.25",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
    }

    #[test]
    fn system_view_names_the_source() {
        let doc = json!({"system": {"max_load1": 8.0}, "source": "runtime", "node": {"cpu": null, "load1": 0.5}});
        let text = system_view(&doc).unwrap();
        assert!(
            text.starts_with("system rule: max-load1 8.0 (runtime)"),
            "{text}"
        );
        let none = system_view(&json!({"system": null, "source": null, "node": {}})).unwrap();
        assert!(none.starts_with("system rule: none"), "{none}");
    }
}
