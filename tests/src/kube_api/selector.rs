//! What a request selects: the collection its path names ([`Route`]) and the objects that its
//! query's field and label selectors match ([`Selector`]).

use std::collections::BTreeMap;

use serde_json::Value;

use super::store::Kind;

/// `/api/v1[/namespaces/NS]/services[/NAME]` or
/// `/apis/discovery.k8s.io/v1[/namespaces/NS]/endpointslices[/NAME]`.
pub(super) struct Route {
    pub(super) kind: Kind,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
}

impl Route {
    pub(super) fn parse(path: &str) -> Option<Route> {
        let rest = path
            .strip_prefix("/api/v1/")
            .map(|r| (r, Kind::Service))
            .or_else(|| {
                path.strip_prefix("/apis/discovery.k8s.io/v1/")
                    .map(|r| (r, Kind::EndpointSlice))
            })?;
        let (rest, kind) = rest;
        let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let (namespace, resource, name) = match parts[..] {
            ["namespaces", ns, resource] => (Some(ns), resource, None),
            ["namespaces", ns, resource, name] => (Some(ns), resource, Some(name)),
            [resource] => (None, resource, None),
            _ => return None,
        };
        if resource != kind.plural() {
            return None;
        }
        Some(Route {
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }

    pub(super) fn in_namespace(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// A field selector and a label selector, both required to match.
#[derive(Debug, Default)]
pub(super) struct Selector {
    fields: Vec<Requirement>,
    labels: Vec<Requirement>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, values: &BTreeMap<String, String>) -> bool {
        let get = |k: &String| values.get(k);
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v),
            Requirement::NotEquals(k, v) => get(k) != Some(v),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

impl Selector {
    pub(super) fn from_query(query: &BTreeMap<String, String>) -> Result<Selector, String> {
        let mut selector = Selector::default();
        if let Some(fields) = query.get("fieldSelector") {
            selector.fields = parse_selector(fields)?;
            for requirement in &selector.fields {
                let key = match requirement {
                    Requirement::Equals(k, _) | Requirement::NotEquals(k, _) => k,
                    _ => {
                        return Err(format!(
                            "invalid field selector {fields:?}: only =, == and != are supported"
                        ));
                    }
                };
                if key != "metadata.name" && key != "metadata.namespace" {
                    return Err(format!("field label not supported: {key}"));
                }
            }
        }
        if let Some(labels) = query.get("labelSelector") {
            selector.labels = parse_selector(labels)?;
        }
        Ok(selector)
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        let metadata = &object["metadata"];
        let fields: BTreeMap<String, String> = ["name", "namespace"]
            .iter()
            .filter_map(|f| Some((format!("metadata.{f}"), metadata[f].as_str()?.to_owned())))
            .collect();
        let labels: BTreeMap<String, String> = metadata["labels"]
            .as_object()
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        self.fields.iter().all(|r| r.matches(&fields))
            && self.labels.iter().all(|r| r.matches(&labels))
    }
}

/// Parses a selector: comma-separated requirements (commas inside `(...)` belong to a set).
pub(super) fn parse_selector(text: &str) -> Result<Vec<Requirement>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    let invalid = |why: &str| format!("invalid selector {text:?}: {why}");
    let mut requirements = Vec::new();
    for term in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| invalid("a set is (a,b,...)"))?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        let requirement = if let Some((k, v)) = term.split_once("!=") {
            Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = term.split_once("==") {
            Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = term.split_once('=') {
            Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            Requirement::NotIn(k.trim().to_owned(), set(rest)?)
        } else if let Some((k, rest)) = term.split_once(" in ") {
            Requirement::In(k.trim().to_owned(), set(rest)?)
        } else if let Some(k) = term.strip_prefix('!') {
            Requirement::NotExists(k.trim().to_owned())
        } else {
            Requirement::Exists(term.to_owned())
        };
        let key = match &requirement {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::Exists(k)
            | Requirement::NotExists(k)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _) => k,
        };
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || "()!=,".contains(c)) {
            return Err(invalid(&format!("bad key {key:?}")));
        }
        requirements.push(requirement);
    }
    Ok(requirements)
}

/// `a=1&b=x%3Dy` into {a: 1, b: x=y} (`+` is a space; empty pairs, as kube's leading `?&`, are
/// skipped).
pub(super) fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
