//! Endpoint strings: `udp://HOST:PORT` and `tcp://HOST:PORT`.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::error::{Error, Result};

/// A transport and an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Reliable UDP.
    Udp(SocketAddr),
    /// TCP.
    Tcp(SocketAddr),
}

impl Endpoint {
    /// Parses `udp://HOST:PORT` or `tcp://HOST:PORT` (HOST may be a name, an IPv4 address or a
    /// bracketed IPv6 address); names are resolved, the first address wins.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::Endpoint(s.to_string());
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let addr = rest
            .to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        match scheme.to_ascii_lowercase().as_str() {
            "udp" => Ok(Endpoint::Udp(addr)),
            "tcp" => Ok(Endpoint::Tcp(addr)),
            _ => Err(bad()),
        }
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Endpoint::Udp(a) | Endpoint::Tcp(a) => *a,
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
}
