//! TLS on a server's connections, and mutual TLS (feature `tls`).
//!
//! The handshake runs in the connection's own task, never in the accept loop, under the
//! server's `preamble_timeout`: a peer that opens a connection and says nothing (or speaks
//! plaintext) costs its own task for at most that long, with a log line naming it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::tls::pem;
use rpc_core::{PeerAddr, TlsError, Transport};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A server's TLS settings: its certificate chain and key, and, for mutual TLS, the CA
/// whose client certificates it requires. Give it to
/// [`ServerBuilder::tls`](crate::ServerBuilder::tls).
///
/// ```no_run
/// # fn demo(cert_pem: &[u8], key_pem: &[u8], clients_ca_pem: &[u8]) -> Result<(), rpc::TlsError> {
/// // TLS: clients check the server's certificate.
/// let tls = rpc::tls::ServerTls::from_pem(cert_pem, key_pem)?;
/// // Mutual TLS: every client must present a certificate signed by `clients_ca_pem`; its
/// // subject and names reach handlers through `rpc::Context::peer_identity`.
/// let mtls = rpc::tls::ServerTls::from_pem(cert_pem, key_pem)?.require_client_certs(clients_ca_pem)?;
/// # let _ = (tls, mtls); Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    /// Kept to rebuild the config when client certificates are required.
    identity: Option<Arc<Identity>>,
}

struct Identity {
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The server's certificate chain (PEM, its own certificate first) and private key (PEM:
    /// PKCS#8, PKCS#1 or SEC1). Clients are not asked for a certificate.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<ServerTls, TlsError> {
        let identity = Identity {
            chain: pem::certs(cert_chain_pem, "the server's certificate chain")?,
            key: pem::key(key_pem, "the server's private key")?,
        };
        let config = builder()?
            .with_no_client_auth()
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|err| pem::config(format!("the server's certificate and key: {err}")))?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            identity: Some(Arc::new(identity)),
        })
    }

    /// Like [`from_pem`](Self::from_pem), reading the two PEM files.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ServerTls, TlsError> {
        ServerTls::from_pem(&pem::read(cert_chain.as_ref())?, &pem::read(key.as_ref())?)
    }

    /// A ready rustls config, for anything the other constructors do not cover (ALPN,
    /// session tickets, another certificate resolver or client verifier).
    pub fn from_config(config: Arc<ServerConfig>) -> ServerTls {
        ServerTls {
            acceptor: TlsAcceptor::from(config),
            identity: None,
        }
    }

    /// Mutual TLS: every client must present a certificate signed by a CA in `ca_pem`, or
    /// its handshake fails (and the server logs why). The certificate's subject and names
    /// reach handlers through `rpc::Context::peer_identity`.
    ///
    /// # Errors
    /// If `ca_pem` holds no usable CA certificate, or this `ServerTls` came from
    /// [`from_config`](Self::from_config) (set a client verifier in that config instead).
    pub fn require_client_certs(self, ca_pem: &[u8]) -> Result<ServerTls, TlsError> {
        let Some(identity) = self.identity else {
            return Err(pem::config(
                "require_client_certs needs a ServerTls made from PEM; with from_config, set a client verifier in the rustls config",
            ));
        };
        let mut roots = RootCertStore::empty();
        for cert in pem::certs(ca_pem, "the client CA")? {
            roots
                .add(cert)
                .map_err(|err| pem::config(format!("the client CA: {err}")))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), pem::provider())
                .build()
                .map_err(|err| pem::config(format!("the client CA: {err}")))?;
        let config = builder()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|err| pem::config(format!("the server's certificate and key: {err}")))?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            identity: Some(identity),
        })
    }

    /// Runs the handshake on an accepted stream within `limit`; logs and returns `None` if
    /// it fails or takes too long.
    pub(crate) async fn accept<T: Transport>(
        &self,
        stream: T,
        peer: &PeerAddr,
        limit: Duration,
    ) -> Option<TlsStream<T>> {
        match tokio::time::timeout(limit, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(err)) => {
                tracing::warn!(%peer, error = %err, "dropping connection: TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::warn!(%peer, limit_ms = limit.as_millis(), "dropping connection: no TLS handshake within the preamble timeout (a plaintext client, or a peer that sent nothing)");
                None
            }
        }
    }
}

fn builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, TlsError> {
    ServerConfig::builder_with_provider(pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| pem::config(err.to_string()))
}
