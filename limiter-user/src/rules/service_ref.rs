//! `svc/NAMESPACE/NAME[:PORT]`: a rule destination that names a Kubernetes Service.
//!
//! Parsing is strict and follows the API server's own validation, so that a reference that parses
//! can exist in a cluster, and one that cannot is refused when the rule is written rather than
//! left pending forever: a namespace is a DNS-1123 label, a Service name a DNS-1035 label (it
//! must start with a letter), a port a number 1-65535 or an IANA_SVC_NAME.

use std::fmt;
use std::str::FromStr;

/// The form every parse error shows.
const EXPECTED: &str =
    "expected svc/NAMESPACE/NAME[:PORT], e.g. svc/default/web:http or svc/default/web:80";

/// A Service by namespace and name, and optionally one of its ports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    /// `None`: every TCP port of the Service.
    pub port: Option<PortRef>,
}

/// A Service port, as the Service spells it: `spec.ports[].port` or `spec.ports[].name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// Why a string is not a `svc/` destination. Every message shows the expected form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceRefError {
    #[error("`{input}` does not start with svc/; {EXPECTED}")]
    NoPrefix { input: String },
    #[error("`{input}` has {parts} part(s) after svc/, not NAMESPACE/NAME; {EXPECTED}")]
    Parts { input: String, parts: usize },
    #[error("`{input}`: namespace `{namespace}` is not a DNS-1123 label ({why}); {EXPECTED}")]
    BadNamespace {
        input: String,
        namespace: String,
        why: &'static str,
    },
    #[error("`{input}`: Service name `{name}` is not a DNS-1035 label ({why}); {EXPECTED}")]
    BadName {
        input: String,
        name: String,
        why: &'static str,
    },
    #[error("`{input}`: port `{port}` is not 1-65535; {EXPECTED}")]
    PortOutOfRange { input: String, port: String },
    #[error("`{input}`: port name `{port}` is not an IANA service name ({why}); {EXPECTED}")]
    BadPortName {
        input: String,
        port: String,
        why: &'static str,
    },
}

impl FromStr for ServiceRef {
    type Err = ServiceRefError;

    fn from_str(s: &str) -> Result<Self, ServiceRefError> {
        let input = s.trim();
        let rest = input
            .strip_prefix("svc/")
            .ok_or_else(|| ServiceRefError::NoPrefix {
                input: input.to_owned(),
            })?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [namespace, name_port] = parts[..] else {
            return Err(ServiceRefError::Parts {
                input: input.to_owned(),
                parts: parts.len(),
            });
        };
        let (name, port) = match name_port.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (name_port, None),
        };
        if let Err(why) = check_label(namespace, false) {
            let namespace = namespace.to_owned();
            let input = input.to_owned();
            return Err(ServiceRefError::BadNamespace {
                input,
                namespace,
                why,
            });
        }
        if let Err(why) = check_label(name, true) {
            let name = name.to_owned();
            let input = input.to_owned();
            return Err(ServiceRefError::BadName { input, name, why });
        }
        let port = port.map(|p| parse_port(input, p)).transpose()?;
        Ok(ServiceRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port,
        })
    }
}

/// A DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63), or with `letter_first` a
/// DNS-1035 label (the same, starting with a letter), which is what Service names must be.
fn check_label(s: &str, letter_first: bool) -> Result<(), &'static str> {
    let first = s.chars().next().ok_or("it is empty")?;
    if s.len() > 63 {
        return Err("longer than 63 characters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("only lowercase letters, digits and '-' are allowed");
    }
    if letter_first && !first.is_ascii_lowercase() {
        return Err("it must start with a letter");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("it must start and end with a letter or digit");
    }
    Ok(())
}

/// Digits are a port number; anything else must be an IANA_SVC_NAME, which always has a letter,
/// so the two never overlap (the API server validates `spec.ports[].name` the same way).
fn parse_port(input: &str, port: &str) -> Result<PortRef, ServiceRefError> {
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        return match port.parse::<u16>() {
            Ok(n) if n > 0 => Ok(PortRef::Number(n)),
            _ => Err(ServiceRefError::PortOutOfRange {
                input: input.to_owned(),
                port: port.to_owned(),
            }),
        };
    }
    let why = if port.is_empty() {
        Some("it is empty")
    } else if port.len() > 15 {
        Some("longer than 15 characters")
    } else if !port
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("only lowercase letters, digits and '-' are allowed")
    } else if port.starts_with('-') || port.ends_with('-') || port.contains("--") {
        Some("'-' may not start or end it, nor be doubled")
    } else if !port.chars().any(|c| c.is_ascii_lowercase()) {
        Some("it needs at least one letter")
    } else {
        None
    };
    match why {
        None => Ok(PortRef::Name(port.to_owned())),
        Some(why) => Err(ServiceRefError::BadPortName {
            input: input.to_owned(),
            port: port.to_owned(),
            why,
        }),
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "svc/{}/{}", self.namespace, self.name)?;
        match &self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
#[path = "service_ref_tests.rs"]
mod tests;
