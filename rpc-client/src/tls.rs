//! TLS on every connection a client dials, and mutual TLS (feature `tls`).
//!
//! The settings live in [`ClientConfig::tls`](crate::ClientConfig::tls), so every dial
//! applies them: the first one, each redial after a broken connection or a go-away, and each
//! endpoint of a balanced client. A handshake failure is an
//! [`Error::Tls`] whose message says what to fix.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rpc_core::tls::pem;
use rpc_core::{Error, TlsError, Transport};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::config::ClientConfig as RpcClientConfig;
use crate::connection::Connection;
use crate::endpoint::Endpoint;

/// A client's TLS settings: the roots it trusts, optionally its own certificate (mutual
/// TLS), and the name it checks the server's certificate against (by default the host of
/// the endpoint dialled). Give it to [`ClientBuilder::tls`](crate::ClientBuilder::tls).
///
/// ```no_run
/// # fn demo(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<(), rpc::TlsError> {
/// // Trust the CA that signed the server's certificate.
/// let tls = rpc::tls::ClientTls::from_pem(ca_pem)?;
/// // Mutual TLS: present this client's certificate too.
/// let mtls = rpc::tls::ClientTls::from_pem(ca_pem)?.identity_pem(cert_pem, key_pem)?;
/// // Trust what the operating system trusts.
/// let public = rpc::tls::ClientTls::platform_roots()?;
/// # let _ = (tls, mtls, public); Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    /// Checked instead of the endpoint's host.
    server_name: Option<ServerName<'static>>,
    /// Kept to rebuild the config when an identity is added.
    roots: Option<Arc<RootCertStore>>,
    has_identity: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("identity", &self.has_identity)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in `ca_pem` (and nothing else).
    pub fn from_pem(ca_pem: &[u8]) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in pem::certs(ca_pem, "the trusted CA")? {
            roots
                .add(cert)
                .map_err(|err| pem::config(format!("the trusted CA: {err}")))?;
        }
        ClientTls::with_roots(Arc::new(roots))
    }

    /// Like [`from_pem`](Self::from_pem), reading the PEM file at `path`.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<ClientTls, TlsError> {
        ClientTls::from_pem(&pem::read(path.as_ref())?)
    }

    /// Trusts the operating system's root certificates (read once, here), for servers whose
    /// certificates a public CA signed.
    ///
    /// # Errors
    /// If no root certificate could be loaded.
    pub fn platform_roots() -> Result<ClientTls, TlsError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
            return Err(pem::config(format!(
                "no platform root certificate could be loaded ({}); trust a CA with ClientTls::from_pem instead",
                errors.join("; ")
            )));
        }
        ClientTls::with_roots(Arc::new(roots))
    }

    /// A ready rustls config (its own roots, verifier, client certificate, ALPN).
    pub fn from_config(config: Arc<ClientConfig>) -> ClientTls {
        let has_identity = config.client_auth_cert_resolver.has_certs();
        ClientTls {
            connector: TlsConnector::from(config),
            server_name: None,
            roots: None,
            has_identity,
        }
    }

    /// Mutual TLS: presents this certificate chain (PEM, the client's own first) and key
    /// (PEM) when the server asks for one.
    ///
    /// # Errors
    /// If the PEM holds no certificate or no usable key, or this `ClientTls` came from
    /// [`from_config`](Self::from_config) (put the certificate in that config instead).
    pub fn identity_pem(self, cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let Some(roots) = self.roots.clone() else {
            return Err(pem::config(
                "identity_pem needs a ClientTls made from roots; with from_config, set the client certificate in the rustls config",
            ));
        };
        let chain = pem::certs(cert_chain_pem, "the client's certificate chain")?;
        let key = pem::key(key_pem, "the client's private key")?;
        let config = builder()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|err| pem::config(format!("the client's certificate and key: {err}")))?;
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            has_identity: true,
            ..self
        })
    }

    /// Checks the server's certificate against `name` instead of the endpoint's host: for
    /// an endpoint given as an IP address or a Unix socket, or a server known by another
    /// name.
    pub fn server_name(self, name: &str) -> Result<Self, TlsError> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|err| pem::config(format!("server name `{name}`: {err}")))?;
        Ok(ClientTls {
            server_name: Some(name),
            ..self
        })
    }

    fn with_roots(roots: Arc<RootCertStore>) -> Result<ClientTls, TlsError> {
        let config = builder()?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: None,
            roots: Some(roots),
            has_identity: false,
        })
    }

    /// The name to check for `endpoint`.
    fn name_for(&self, endpoint: &Endpoint) -> Result<ServerName<'static>, TlsError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = match endpoint {
            Endpoint::Addr(addr) => return Ok(ServerName::IpAddress(addr.ip().into())),
            Endpoint::Host(host) => host_of(host),
            Endpoint::Unix(_) => {
                return Err(pem::config(
                    "a Unix socket endpoint has no host name to check the server's certificate against; set one with ClientTls::server_name",
                ))
            }
        };
        ServerName::try_from(host.to_string())
            .map_err(|err| pem::config(format!("server name `{host}`: {err}")))
    }

    /// Runs the TLS handshake and then the connection's own over `stream`, mapping TLS
    /// failures (including the alerts a server sends right after a TLS 1.3 handshake, as
    /// when it wants a client certificate) to [`Error::Tls`].
    pub(crate) async fn start<T: Transport>(
        &self,
        stream: T,
        endpoint: &Endpoint,
        config: &RpcClientConfig,
    ) -> Result<Connection, Error> {
        let tls_error = |source| Error::Tls {
            endpoint: endpoint.to_string(),
            source,
        };
        let name = self.name_for(endpoint).map_err(tls_error)?;
        let checked = name.to_str().into_owned();
        let stream = match self.connector.connect(name, stream).await {
            Ok(stream) => stream,
            Err(err) => {
                let source = self
                    .classify(&err, &checked)
                    .unwrap_or_else(|| match err.kind() {
                        // The peer hung up on the hello without a TLS answer.
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                            TlsError::NotTls
                        }
                        _ => TlsError::Handshake {
                            detail: err.to_string(),
                        },
                    });
                return Err(tls_error(source));
            }
        };
        match Connection::start(stream, config).await {
            Err(Error::Io(err)) => Err(match self.classify(&err, &checked) {
                Some(source) => tls_error(source),
                None => Error::Io(err),
            }),
            other => other,
        }
    }

    /// What a rustls failure inside `err` means for the person fixing it.
    fn classify(&self, err: &io::Error, name: &str) -> Option<TlsError> {
        let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
        let detail = tls.to_string();
        Some(match tls {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    TlsError::UntrustedCertificate { detail }
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsError::WrongName {
                    name: name.to_string(),
                    detail,
                },
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => TlsError::Expired { detail },
                _ => TlsError::Handshake { detail },
            },
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                TlsError::ClientCertificateRequired
            }
            rustls::Error::AlertReceived(AlertDescription::HandshakeFailure)
                if !self.has_identity =>
            {
                TlsError::ClientCertificateRequired
            }
            rustls::Error::AlertReceived(
                AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied,
            ) => TlsError::ClientCertificateRejected { detail },
            _ => TlsError::Handshake { detail },
        })
    }
}

/// `host` of `host:port` (`[::1]:7000` gives `::1`).
fn host_of(host_port: &str) -> &str {
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _port)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsError> {
    ClientConfig::builder_with_provider(pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| pem::config(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_checked_without_its_port() {
        assert_eq!(host_of("calc.internal:7000"), "calc.internal");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
