//! Where a client connects.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// A server address: a TCP socket address, a `host:port` name resolved at each connect, or
/// a Unix domain socket path. Every `connect` takes anything that converts into one:
///
/// ```
/// use std::net::SocketAddr;
/// use std::path::Path;
/// use rpc::Endpoint;
///
/// let by_name: Endpoint = "localhost:7000".into();
/// assert_eq!(by_name, Endpoint::from(("localhost", 7000)));
///
/// let by_addr: Endpoint = SocketAddr::from(([127, 0, 0, 1], 7000)).into();
/// assert_eq!(by_addr, Endpoint::from("127.0.0.1:7000"));
/// assert_eq!(by_addr, Endpoint::from(("127.0.0.1", 7000)));
/// assert_eq!(Endpoint::from(("::1", 7000)).to_string(), "[::1]:7000");
///
/// let by_path = Endpoint::unix("/tmp/calc.sock");
/// assert_eq!(by_path, Endpoint::from("unix:/tmp/calc.sock"));
/// assert_eq!(by_path, Endpoint::from(Path::new("/tmp/calc.sock")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// `(host, port)`: an IP address becomes [`Endpoint::Addr`], anything else a name resolved
/// at each connect.
impl From<(&str, u16)> for Endpoint {
    fn from((host, port): (&str, u16)) -> Self {
        match host.parse::<IpAddr>() {
            Ok(ip) => Endpoint::Addr(SocketAddr::new(ip, port)),
            Err(_) => Endpoint::Host(format!("{host}:{port}")),
        }
    }
}

impl From<(String, u16)> for Endpoint {
    fn from((host, port): (String, u16)) -> Self {
        Endpoint::from((host.as_str(), port))
    }
}

impl From<(IpAddr, u16)> for Endpoint {
    fn from(addr: (IpAddr, u16)) -> Self {
        Endpoint::Addr(addr.into())
    }
}

/// A path is a Unix domain socket.
impl From<&Path> for Endpoint {
    fn from(path: &Path) -> Self {
        Endpoint::Unix(path.to_path_buf())
    }
}

/// A path is a Unix domain socket.
impl From<PathBuf> for Endpoint {
    fn from(path: PathBuf) -> Self {
        Endpoint::Unix(path)
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
