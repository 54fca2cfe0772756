//! Destinations of rules: one address and port (`10.0.0.2:8080`, `[fd00::2]:8080`) or a CIDR and
//! port (`10.0.0.0/24:8080`, `[fd00::/64]:8080`).
//!
//! A `Dest` is always normalised, so that two spellings of one destination are one rule: an
//! IPv4-mapped IPv6 address is IPv4 (the kernel keys both the same way), and a /32 or /128 CIDR
//! is the address itself. Its string form is what `limiter status` prints and what the JSON
//! interface carries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use limiter_common::{DestAddr, EXACT_PREFIX_BITS, PORT_BITS, V4_MAPPED_PREFIX_BITS};

use crate::rules::service_ref::{ServiceRef, ServiceRefError};

/// A rule's destination. Build it with [`str::parse`] or [`Dest::from_lpm_key`] to get the
/// normalised form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dest {
    Addr(SocketAddr),
    Cidr {
        net: IpNet,
        port: u16,
    },
    /// `svc/NAMESPACE/NAME[:PORT]`: a Kubernetes Service, resolved by the daemon into address
    /// rules (crate::kubernetes). Never reaches the kernel itself. Boxed: the daemon keeps tens of
    /// thousands of address destinations, which must not pay for two strings each.
    Service(Box<ServiceRef>),
}

/// Why a string is not a destination. Every message says what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestError {
    #[error("empty destination; expected ADDRESS:PORT such as 10.0.0.2:8080 or [fd00::2]:8080")]
    Empty,
    #[error("{input} has no port; expected ADDRESS:PORT such as {example}")]
    MissingPort { input: String, example: String },
    #[error("port {port} is out of range 1-65535")]
    PortOutOfRange { port: String },
    #[error("port 0 is not a destination port; use a port in 1-65535")]
    PortZero,
    #[error("`{port}` is not a port number; expected 1-65535")]
    BadPort { port: String },
    #[error(
        "`{input}` is not an IP address or CIDR (host names are not resolved); \
         expected ADDRESS:PORT such as 10.0.0.2:8080, [fd00::2]:8080 or 10.0.0.0/24:8080"
    )]
    NotAnAddress { input: String },
    #[error("IPv6 destinations need brackets: [{host}]:{port}")]
    NeedsBrackets { host: String, port: String },
    #[error("/{prefix} is not a prefix length of {family} (0-{max})")]
    BadPrefix {
        prefix: String,
        family: &'static str,
        max: u8,
    },
    #[error("{given} has host bits set; did you mean {suggested}?")]
    HostBitsSet { given: String, suggested: String },
    #[error("{input}: IPv6 scope ids (%zone) are not supported in destinations")]
    ScopeId { input: String },
    #[error(transparent)]
    Service(#[from] ServiceRefError),
}

impl FromStr for Dest {
    type Err = DestError;

    fn from_str(s: &str) -> Result<Self, DestError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DestError::Empty);
        }
        if s.starts_with("svc/") {
            return Ok(Dest::Service(Box::new(s.parse()?)));
        }
        if s.contains('%') {
            return Err(DestError::ScopeId { input: s.into() });
        }
        let (host, port) = split_host_port(s)?;
        if host.is_empty() {
            return Err(DestError::NotAnAddress { input: s.into() });
        }
        let port = parse_port(port)?;
        parse_host(host, port)
    }
}

/// Splits `HOST:PORT` or `[HOST]:PORT`, recognising the common mistakes (no port, an IPv6 host
/// without brackets) so that the error can name them.
fn split_host_port(s: &str) -> Result<(&str, &str), DestError> {
    let missing_port = |host: &str| {
        let example = if host.contains(':') {
            format!("[{host}]:8080")
        } else {
            format!("{host}:8080")
        };
        DestError::MissingPort {
            input: s.into(),
            example,
        }
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| DestError::NotAnAddress { input: s.into() })?;
        return match after.strip_prefix(':') {
            Some("") => Err(missing_port(host)),
            Some(port) => Ok((host, port)),
            None if after.is_empty() => Err(missing_port(host)),
            None => Err(DestError::NotAnAddress { input: s.into() }),
        };
    }
    // A bare address or CIDR (`10.0.0.1`, `fd00::2:8080`, which is one IPv6 address) has no port.
    if s.parse::<IpAddr>().is_ok() || s.parse::<IpNet>().is_ok() {
        return Err(missing_port(s));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if host.contains(':') => Err(DestError::NeedsBrackets {
            host: host.into(),
            port: port.into(),
        }),
        Some((host, "")) => Err(missing_port(host)),
        Some((host, port)) => Ok((host, port)),
        None => Err(DestError::NotAnAddress { input: s.into() }),
    }
}

fn parse_port(port: &str) -> Result<u16, DestError> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DestError::BadPort { port: port.into() });
    }
    // Digits only, so a parse failure can only be an overflow.
    match port.parse::<u32>() {
        Ok(0) => Err(DestError::PortZero),
        Ok(p) => u16::try_from(p).map_err(|_| DestError::PortOutOfRange { port: port.into() }),
        Err(_) => Err(DestError::PortOutOfRange { port: port.into() }),
    }
}

fn parse_host(host: &str, port: u16) -> Result<Dest, DestError> {
    let not_an_address = || DestError::NotAnAddress { input: host.into() };
    let Some((addr, prefix)) = host.split_once('/') else {
        let ip: IpAddr = host.parse().map_err(|_| not_an_address())?;
        return Ok(Dest::Addr(SocketAddr::new(ip.to_canonical(), port)));
    };
    let ip: IpAddr = addr.parse().map_err(|_| not_an_address())?;
    let (family, max) = if ip.is_ipv4() {
        ("IPv4", 32)
    } else {
        ("IPv6", 128)
    };
    let bad_prefix = || DestError::BadPrefix {
        prefix: prefix.into(),
        family,
        max,
    };
    let len: u8 = prefix.parse().map_err(|_| bad_prefix())?;
    let net = IpNet::new(ip, len).map_err(|_| bad_prefix())?;
    if net.network() != ip {
        return Err(DestError::HostBitsSet {
            given: host.into(),
            suggested: net.trunc().to_string(),
        });
    }
    Ok(normalise_net(net, port))
}

/// Turns an IPv4-mapped IPv6 CIDR into IPv4 and a single-address CIDR into an address.
fn normalise_net(net: IpNet, port: u16) -> Dest {
    let net = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new_assert(v4, v6.prefix_len() - 96)),
            None => net,
        },
        other => other,
    };
    if net.prefix_len() == net.max_prefix_len() {
        Dest::Addr(SocketAddr::new(net.addr(), port))
    } else {
        Dest::Cidr { net, port }
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Addr(addr) => write!(f, "{addr}"),
            Dest::Cidr {
                net: IpNet::V4(net),
                port,
            } => write!(f, "{net}:{port}"),
            Dest::Cidr {
                net: IpNet::V6(net),
                port,
            } => write!(f, "[{net}]:{port}"),
            Dest::Service(svc) => write!(f, "{svc}"),
        }
    }
}

impl serde::Serialize for Dest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Dest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Dest {
    /// Key of this destination in the kernel's LPM trie: (prefix length in bits, key). The prefix
    /// always covers the port, which comes first; address bits past the prefix are zero.
    /// None for a Service, which the daemon resolves into address rules first.
    pub fn lpm_key(&self) -> Option<(u32, DestAddr)> {
        match self {
            Dest::Addr(addr) => Some((EXACT_PREFIX_BITS, dest_addr(addr.ip(), addr.port()))),
            Dest::Cidr { net, port } => {
                let bits = match net {
                    IpNet::V4(n) => V4_MAPPED_PREFIX_BITS + u32::from(n.prefix_len()),
                    IpNet::V6(n) => PORT_BITS + u32::from(n.prefix_len()),
                };
                Some((bits, dest_addr(net.network(), *port)))
            }
            Dest::Service(_) => None,
        }
    }

    /// The Service of a `svc/` destination.
    pub fn service(&self) -> Option<&ServiceRef> {
        match self {
            Dest::Service(svc) => Some(svc),
            _ => None,
        }
    }

    /// The destination of an LPM trie entry; the inverse of [`Dest::lpm_key`]. Address bits past
    /// the prefix are ignored.
    pub fn from_lpm_key(prefix_len: u32, key: &DestAddr) -> Dest {
        let port = key.port();
        let addr_bits = prefix_len.saturating_sub(PORT_BITS).min(128);
        let net = if key.is_v4() && prefix_len >= V4_MAPPED_PREFIX_BITS {
            let a = &key.addr;
            let v4 = Ipv4Addr::new(a[12], a[13], a[14], a[15]);
            IpNet::V4(Ipv4Net::new_assert(v4, (addr_bits - 96) as u8).trunc())
        } else {
            let v6 = Ipv6Addr::from(key.addr);
            IpNet::V6(Ipv6Net::new_assert(v6, addr_bits as u8).trunc())
        };
        normalise_net(net, port)
    }
}

fn dest_addr(ip: IpAddr, port: u16) -> DestAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => DestAddr::v4(u32::from(v4), port),
        IpAddr::V6(v6) => DestAddr::v6(v6.octets(), port),
    }
}

#[cfg(test)]
#[path = "dest_tests.rs"]
mod tests;
