//! Where a client connects.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A server address: a TCP socket address, a `host:port` name resolved at each connect, or
/// a Unix domain socket path.
///
/// ```
/// use rpc::Endpoint;
/// let by_name: Endpoint = "localhost:7000".into();
/// let by_addr: Endpoint = std::net::SocketAddr::from(([127, 0, 0, 1], 7000)).into();
/// let by_path = Endpoint::unix("/tmp/calc.sock");
/// assert_eq!(by_path, Endpoint::from("unix:/tmp/calc.sock"));
/// assert_eq!(by_name.to_string(), "localhost:7000");
/// # let _ = by_addr;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// A resolved TCP address.
    Addr(SocketAddr),
    /// `host:port`, resolved by DNS at each connect.
    Host(String),
    /// A Unix domain socket.
    Unix(PathBuf),
}

impl Endpoint {
    /// A Unix domain socket endpoint.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Endpoint::Unix(path.into())
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::Addr(addr)
    }
}

/// `"unix:/path"` is a Unix socket; anything else is `host:port`.
impl From<&str> for Endpoint {
    fn from(text: &str) -> Self {
        match text.strip_prefix("unix:") {
            Some(path) => Endpoint::Unix(PathBuf::from(path)),
            None => match text.parse::<SocketAddr>() {
                Ok(addr) => Endpoint::Addr(addr),
                Err(_) => Endpoint::Host(text.to_string()),
            },
        }
    }
}

impl From<String> for Endpoint {
    fn from(text: String) -> Self {
        Endpoint::from(text.as_str())
    }
}

impl From<&String> for Endpoint {
    fn from(text: &String) -> Self {
        Endpoint::from(text.as_str())
    }
}

impl From<&Endpoint> for Endpoint {
    fn from(endpoint: &Endpoint) -> Self {
        endpoint.clone()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(addr) => write!(f, "{addr}"),
            Endpoint::Host(host) => f.write_str(host),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}
