//! Endpoint strings: `udp://HOST:PORT`, `tcp://HOST:PORT`, and multicast
//! `udp://GROUP:PORT?interface=ADDR&ttl=N&loop=0|1&min-receivers=N`.

use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};

use crate::error::{Error, Result};
use crate::udp::{multicast_group, MulticastOptions};

/// A UDP multicast group and how to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multicast {
    /// IPv4 group address (224.0.0.0/4) and port.
    pub group: SocketAddrV4,
    /// Interface, TTL and loopback (`interface=`, `ttl=`, `loop=`).
    pub options: MulticastOptions,
    /// Sender: receivers that must answer before sending starts (`min-receivers=`, default 1).
    pub min_receivers: usize,
}

/// A transport and an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Reliable UDP to one receiver.
    Udp(SocketAddr),
    /// Reliable UDP to a multicast group.
    Multicast(Multicast),
    /// TCP.
    Tcp(SocketAddr),
}

impl Endpoint {
    /// Parses `udp://HOST:PORT` or `tcp://HOST:PORT` (HOST may be a name, an IPv4 address or a
    /// bracketed IPv6 address; names are resolved, the first address wins), or
    /// `udp://GROUP:PORT[?OPTIONS]` with an IPv4 multicast GROUP and `&`-separated options
    /// `interface=ADDR` (IPv4 address of the local interface), `ttl=N` (1..=255, default 1),
    /// `loop=0|1` (default 1) and `min-receivers=N` (default 1). Options are refused on other
    /// endpoints.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::Endpoint(s.to_string());
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let addr = rest
            .to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        match scheme.to_ascii_lowercase().as_str() {
            "udp" => match multicast_group(addr) {
                Some(group) => Ok(Endpoint::Multicast(Self::options(group, query, s)?)),
                None if query.is_none() => Ok(Endpoint::Udp(addr)),
                None => Err(bad()),
            },
            "tcp" if query.is_none() => Ok(Endpoint::Tcp(addr)),
            _ => Err(bad()),
        }
    }

    fn options(group: SocketAddrV4, query: Option<&str>, s: &str) -> Result<Multicast> {
        let bad = || Error::Endpoint(s.to_string());
        let mut m = Multicast {
            group,
            options: MulticastOptions::default(),
            min_receivers: 1,
        };
        for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            match k {
                "interface" => m.options.interface = Some(v.parse().map_err(|_| bad())?),
                "ttl" => {
                    m.options.ttl = v.parse().map_err(|_| bad())?;
                    if !(1..=255).contains(&m.options.ttl) {
                        return Err(bad());
                    }
                }
                "loop" => {
                    m.options.loopback = match v {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad()),
                    }
                }
                "min-receivers" => {
                    m.min_receivers = v.parse().map_err(|_| bad())?;
                    if m.min_receivers == 0 {
                        return Err(bad());
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(m)
    }

    /// The socket address (the group's for multicast).
    pub fn addr(&self) -> SocketAddr {
        match self {
            Endpoint::Udp(a) | Endpoint::Tcp(a) => *a,
            Endpoint::Multicast(m) => SocketAddr::V4(m.group),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            Endpoint::parse("udp://127.0.0.1:9000").unwrap(),
            Endpoint::Udp("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            Endpoint::parse("TCP://[::1]:80").unwrap(),
            Endpoint::Tcp("[::1]:80".parse().unwrap())
        );
        assert!(Endpoint::parse("localhost:9000").is_err());
        assert!(Endpoint::parse("http://127.0.0.1:80").is_err());
        assert!(Endpoint::parse("udp://127.0.0.1").is_err());
        assert!(Endpoint::parse("udp://127.0.0.1:99999").is_err());
    }

    #[test]
    fn parses_multicast_options() {
        let e =
            Endpoint::parse("udp://239.1.2.3:7000?interface=10.0.0.2&ttl=4&loop=0&min-receivers=2")
                .unwrap();
        assert_eq!(
            e,
            Endpoint::Multicast(Multicast {
                group: "239.1.2.3:7000".parse().unwrap(),
                options: MulticastOptions {
                    interface: Some("10.0.0.2".parse().unwrap()),
                    ttl: 4,
                    loopback: false,
                },
                min_receivers: 2,
            })
        );
        assert_eq!(
            Endpoint::parse("udp://239.1.2.3:7000").unwrap(),
            Endpoint::Multicast(Multicast {
                group: "239.1.2.3:7000".parse().unwrap(),
                options: MulticastOptions::default(),
                min_receivers: 1,
            })
        );
        for bad in [
            "udp://239.1.2.3:7000?ttl=0",
            "udp://239.1.2.3:7000?ttl=300",
            "udp://239.1.2.3:7000?loop=yes",
            "udp://239.1.2.3:7000?interface=eth0",
            "udp://239.1.2.3:7000?min-receivers=0",
            "udp://239.1.2.3:7000?colour=blue",
            "udp://239.1.2.3:7000?ttl",
            "udp://127.0.0.1:7000?ttl=2",
            "tcp://239.1.2.3:7000?ttl=2",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
